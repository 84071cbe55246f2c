"""The personal model: learn a photographer's own taste from the ratings they already made.

    ratings (ratings_sources) -> features (the Analyzer, cached per file) -> split by shoot
    -> head + calibration + threshold (numpy) -> held-out numbers -> ONNX head + model card

- **Features** are exactly what the Analyzer computes for a frame when it rates it
  (analysis/personal.py TASTE_FEATURES: measurements, the default head's view, faces; plus
  the EfficientNet-Lite0 embedding), made by the same code from the same preview, in
  worker processes. They are cached per file fingerprint (size + sha256 of the first and
  last 64 KB; a file whose size and mtime are unchanged is not even opened again), so a
  second training run reads no photo.
- **Selects are mirrored**: each select also trains with the embedding of its horizontally
  flipped preview (a second backbone run, cached too); a flipped frame is the same choice.
- **Split by shoot** (the folder, select/ and reject/ taken off, and the capture day): no
  shoot is on both sides, or near-identical frames of one burst would flatter the numbers.
- **Head**: L2-regularized logistic regression over the standardized features and the
  unit-length embedding reduced by (randomized) PCA to 256 dimensions, not whitened (a
  ridge on the embedding itself), with class weights (selects and rejects weigh the same
  in total; a person's correction of postselectd's rating weighs CORRECTION_WEIGHT times).
  Fitted by Newton's method: a few hundred frames, a few hundred dimensions, a second.
- **Calibration and threshold**: out-of-fold predictions over the training shoots (grouped
  by shoot) fit a Platt scaling and give the threshold, set with the uncertainty of a few
  dozen selects in mind: at the recall where the one-sided lower bound (Clopper-Pearson,
  ``RECALL_CONFIDENCE``) of the selects' recall reaches ``target_recall`` (interpolated
  between two selects). The reported recall (with its interval) / precision / AUC are on
  held-out shoots the whole procedure never saw; the saved model is then fitted the same
  way on every shoot.
- **Reasons**: the shipped reasons (blur, closed eyes, exposure) the photographer's own
  ratings show, with evidence, they keep are written into the model as overruled
  (train.respect_reasons, overruled_reasons): for those, the model's verdict decides
  (analysis/personal.py).
- **Output**: ``<state_dir>/personal/personal-YYYYMMDD-HHMMSS.onnx`` (written without the
  `onnx` package, by onnx_export.py) with the model card in its metadata, as
  ``.json`` and as a readable ``.txt`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from postselectd import workers as worker_pool
from postselectd.analysis.personal import REASON_NAMES, TASTE_FEATURES
from postselectd.config import AnalysisConfig, Config, TrainConfig
from postselectd.onnx_export import Graph, model_bytes
from postselectd.photos import fingerprint
from postselectd.ratings_sources import (
    CORRECTION,
    SELECT,
    CatalogIndex,
    RatingsSourceError,
    Verdict,
    collect_verdicts,
    read_darktable_library,
    read_lightroom_catalog,
    shoot_folder,
)

log = logging.getLogger(__name__)

MIN_PER_CLASS = 8  # fewer selects or rejects than this teach nothing reliable
MIN_SHOOTS = 4  # fewer: consecutive blocks of frames stand in for shoots
BLOCK = 20  # frames per stand-in shoot
HELD_OUT = 0.3  # share of shoots held out for the numbers on the model card
FOLDS = 5
CORRECTION_WEIGHT = 3.0
# The threshold keeps the selects' recall at target_recall with this confidence (one-sided
# Clopper-Pearson bound on the out-of-fold recall); the card's recall interval is two-sided
# at this level. bench/eval_personal.py --draws 20: see the README's table.
RECALL_CONFIDENCE = 0.90
# The card warns that its held-out numbers say little with fewer held-out selects than this,
# or a recall interval wider than THIN_INTERVAL.
THIN_SELECTS = 30
THIN_INTERVAL = 0.15
EVIDENCE_SHOOTS = 10  # shoots rated for 30% of them to hold out enough scenes
PCA_DIMS = 256
L2_CHOICES = (3.0, 10.0, 30.0, 100.0, 300.0)
SEED = 20261201
CACHE_VERSION = "2"  # 2: the backbone reads a halved preview (OnnxModel.prepare)
KEEPER = TASTE_FEATURES.index("keeper_probability")
REASONS = [i for i, name in enumerate(TASTE_FEATURES) if name.startswith("reason_")]
# train.respect_reasons: auto: a shipped reason stops making a reject of what the personal
# model keeps only on evidence: this many of the photographer's selects, and this share of
# them, carry it, in this many shoots; and on shoots the models did not see (out of fold),
# the frames with that reason the personal model keeps are at least this share selects.
KEPT_WITH_REASON = 5
KEPT_WITH_REASON_SHARE = 0.02
REASON_SHOOTS = 3
RESCUED_SELECTS_SHARE = 0.8


class TrainError(Exception):
    """Training cannot give a useful model; str() says why and what to do."""


# --- features, cached per file ------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One rated photo with its features."""

    path: Path
    verdict: Verdict
    taste: np.ndarray  # TASTE_FEATURES
    embedding: np.ndarray  # 1280
    mirrored: np.ndarray  # embedding of the horizontally flipped preview
    capture_day: str  # YYYY-MM-DD, "" when unknown


class FeatureCache:
    """``<state_dir>/train-cache``: one .npz per file fingerprint, and an index from
    (path, size, mtime) to fingerprint so an unchanged file is not read at all."""

    def __init__(self, folder: Path, version: str):
        self.folder = folder
        self.version = version
        self.index_path = folder / "index.json"
        try:
            self.index: dict[str, list] = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            self.index = {}

    def key(self, path: Path) -> str:
        st = path.stat()
        known = self.index.get(str(path.absolute()))
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        fp = fingerprint(path)[:32]  # the cache files are named with 32 hex digits
        self.index[str(path.absolute())] = [st.st_size, st.st_mtime_ns, fp]
        return fp

    def get(self, fp: str) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self.folder / f"{fp}.npz") as data:
                if str(data["version"]) != self.version:
                    return None
                return {k: data[k] for k in data.files}
        except (OSError, KeyError, ValueError):
            return None

    def put(self, fp: str, values: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{fp}.{os.getpid()}.npz"
        np.savez(tmp, version=np.array(self.version), **values)
        os.replace(tmp, self.folder / f"{fp}.npz")

    def save_index(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.index))
        os.replace(tmp, self.index_path)


# A worker process's Analyzer and preview size (init_worker), for every file it is given.
_ANALYZER = None
_MIN_SIZE = 1024


def init_worker(config: AnalysisConfig) -> None:
    """Set up a worker process of extract_all's pool: the Analyzer with the default model."""
    global _ANALYZER, _MIN_SIZE
    from postselectd.analysis import Analyzer

    _ANALYZER = Analyzer(config)
    _MIN_SIZE = config.preview_min_size


def work(path: Path) -> dict[str, np.ndarray] | str:
    """One rated photo in a worker process (the ``work`` of extract_all's pool)."""
    return extract(Path(path))


def failed(path: Path, error: str) -> str:
    """Why a photo ``work`` raised on is left out (the ``failed`` of extract_all's pool)."""
    return error


def extract(path: Path) -> dict[str, np.ndarray] | str:
    """A frame's features through the Analyzer (the default model), or why not."""
    from PIL import Image

    from postselectd.analysis.personal import taste_features
    from postselectd.preview import PreviewError, load_preview

    assert _ANALYZER is not None
    try:
        preview = load_preview(path, min_size=_MIN_SIZE)
    except PreviewError as exc:
        return str(exc)
    picture = preview.picture
    analysis = _ANALYZER.analyze(picture)
    backbone = _ANALYZER.backbone
    mirrored = backbone.run(
        backbone.prepare(picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT))[None]
    )
    taste = taste_features(
        analysis.measurements,
        dict(analysis.class_probabilities),
        analysis.keeper_probability,
        analysis.reasons,
        analysis.faces,
        max(picture.size),
    )
    day = preview.capture_time.strftime("%Y-%m-%d") if preview.capture_time else ""
    return {
        "taste": taste,
        "embedding": np.asarray(analysis.embedding, np.float32),
        "mirrored": np.asarray(mirrored["embedding"][0], np.float32),
        "capture_day": np.array(day),
    }


def cache_version(config: AnalysisConfig) -> str:
    """Changes whenever the features would: the models, the feature list, the preview size.

    Every model's bytes count, the face models too: the taste features hold the faces'
    measurements (hashing the ~28 MB takes ~40 ms, once a run).
    """
    from postselectd.analysis.runtime import models_dir

    parts = [CACHE_VERSION, json.dumps(TASTE_FEATURES), str(config.preview_min_size)]
    for path in sorted(models_dir().glob("*.onnx")):
        parts.append(f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def extract_all(
    verdicts: list[Verdict],
    config: Config,
    *,
    workers: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    worker_target: Callable | None = None,
) -> tuple[list[Frame], dict[str, int]]:
    """Features for every rated photo: from the cache, else from worker processes.

    The workers are the pool ``score`` runs on (workers.WorkerPool), each holding one
    photo: a file whose decoder crashes, hangs or balloons is left out like an unreadable
    one, and the run goes on with the rest (a ProcessPoolExecutor lost the whole run to
    it). ``worker_target`` is for tests that inject such faults."""
    analysis = config.analysis.model_copy(update={"personal_model": None})  # learn from default
    cache = FeatureCache(config.resolved_state_dir() / "train-cache", cache_version(analysis))
    frames: list[Frame] = []
    counts = Counter()
    todo: dict[Path, list[tuple[Verdict, str]]] = {}
    for verdict in verdicts:
        try:
            fp = cache.key(verdict.path)
        except OSError as exc:
            log.warning("%s: cannot read (%s); left out", verdict.path.name, exc.strerror or exc)
            counts["unreadable"] += 1
            continue
        values = cache.get(fp)
        if values is None:
            todo.setdefault(verdict.path, []).append((verdict, fp))
        else:
            counts["cached"] += 1
            frames.append(_frame(verdict, values))
    total, done = len(verdicts), len(frames)
    if on_progress:
        on_progress(done, total)
    if not todo:
        cache.save_index()
    else:
        tasks = [path for path, items in todo.items() for _ in items]
        inbox: queue.Queue = queue.Queue()
        pool = None
        try:
            pool = worker_pool.WorkerPool(
                max(1, min(workers, len(tasks))),
                worker_pool.WorkerBody(__name__, analysis),
                inbox.put,
                target=worker_target,
            )
            for path, result in pool.run(tasks, inbox):
                verdict, fp = todo[path].pop(0)
                if isinstance(result, worker_pool.Lost):
                    result = result.reason
                if isinstance(result, str):
                    log.warning("%s: %s; left out", verdict.path.name, result)
                    counts["unreadable"] += 1
                else:
                    cache.put(fp, result)
                    frames.append(_frame(verdict, result))
                    counts["analysed"] += 1
                done += 1
                if on_progress:
                    on_progress(done, total)
        except worker_pool.WorkerCannotStart as exc:
            raise TrainError(f"the worker processes cannot load the models: {exc}") from None
        finally:
            if pool is not None:
                pool.close()
            cache.save_index()
    frames.sort(key=lambda f: str(f.path))
    return frames, dict(counts)


def _frame(verdict: Verdict, values: dict[str, np.ndarray]) -> Frame:
    return Frame(
        path=verdict.path,
        verdict=verdict,
        taste=np.asarray(values["taste"], np.float32),
        embedding=np.asarray(values["embedding"], np.float32),
        mirrored=np.asarray(values["mirrored"], np.float32),
        capture_day=str(values["capture_day"]),
    )


# --- the data set --------------------------------------------------------------------------


@dataclass
class Dataset:
    X: np.ndarray  # taste features
    E: np.ndarray  # embeddings
    M: np.ndarray  # embeddings of the mirrored previews
    y: np.ndarray  # 1 select, 0 reject
    weight: np.ndarray  # 1, or CORRECTION_WEIGHT for a person's correction of our rating
    shoot: np.ndarray  # shoot index per frame
    shoot_names: list[str]  # the groups the split keeps whole: shoots, or blocks of frames
    stand_in_shoots: bool = False  # too few real shoots: blocks of consecutive frames
    real_shoots: int = 0  # folders and capture days, whether or not blocks stood in

    def __len__(self) -> int:
        return len(self.y)


def build_dataset(frames: list[Frame]) -> Dataset:
    keys = [(str(shoot_folder(f.path)), f.capture_day) for f in frames]
    names = sorted(set(keys))
    real_shoots = len(names)
    stand_in = False
    if len(names) < MIN_SHOOTS:
        # One or two shoots: consecutive frames (a burst stays together) stand in.
        stand_in = True
        order = sorted(range(len(frames)), key=lambda i: (keys[i], frames[i].path.name))
        keys = [("", "")] * len(frames)
        for rank, i in enumerate(order):
            keys[i] = (f"frames {rank // BLOCK * BLOCK + 1}-", "")
        names = sorted(set(keys))
    index = {k: i for i, k in enumerate(names)}
    return Dataset(
        X=np.stack([f.taste for f in frames]),
        E=np.stack([f.embedding for f in frames]),
        M=np.stack([f.mirrored for f in frames]),
        y=np.array([f.verdict.verdict == SELECT for f in frames], dtype=np.int64),
        weight=np.array(
            [CORRECTION_WEIGHT if f.verdict.source == CORRECTION else 1.0 for f in frames]
        ),
        shoot=np.array([index[k] for k in keys]),
        shoot_names=[" ".join(p for p in k if p) for k in names],
        stand_in_shoots=stand_in,
        real_shoots=real_shoots,
    )


@dataclass(frozen=True)
class Readiness:
    """Whether there are enough ratings to train a personal model, and what is missing
    (cold start: `train` and, later, the daemon's `status` and `learn` say it)."""

    selects: int
    rejects: int

    @property
    def more_selects(self) -> int:
        return max(0, MIN_PER_CLASS - self.selects)

    @property
    def more_rejects(self) -> int:
        return max(0, MIN_PER_CLASS - self.rejects)

    @property
    def ready(self) -> bool:
        return not (self.more_selects or self.more_rejects)

    def todo(self) -> str:
        """What to rate before a model can be made ("" when ready)."""
        more = [
            f"{n} more {kind}{'s' if n != 1 else ''}"
            for n, kind in ((self.more_selects, "select"), (self.more_rejects, "reject"))
            if n
        ]
        if not more:
            return ""
        return (
            f"rate {' and '.join(more)} (at least {MIN_PER_CLASS} of each: the model learns "
            "what you keep from what you leave out)"
        )


def readiness(verdicts: Iterable[Verdict]) -> Readiness:
    """The selects and rejects among ``verdicts`` against the minimum to train."""
    selects = rejects = 0
    for verdict in verdicts:
        if verdict.verdict == SELECT:
            selects += 1
        else:
            rejects += 1
    return Readiness(selects, rejects)


def check_classes(selects: int, rejects: int, where: str) -> None:
    if selects == 0 and rejects == 0:
        raise TrainError(f"no rated photos {where}")
    ready = Readiness(selects, rejects)
    if ready.ready:
        return
    if selects == 0 or rejects == 0:
        have = "selects" if rejects == 0 else "rejects"
        raise TrainError(f"all {selects + rejects} rated photos {where} are {have}: {ready.todo()}")
    raise TrainError(f"only {selects} selects and {rejects} rejects {where}: {ready.todo()}")


# --- the head --------------------------------------------------------------------------------


@dataclass
class Head:
    """standardize(features) | PCA(unit embedding), one common scale -> logistic -> Platt."""

    x_mean: np.ndarray
    x_std: np.ndarray
    e_mean: np.ndarray
    pca: np.ndarray  # 1280 x k
    p_mean: np.ndarray
    p_std: np.ndarray  # one value for every axis: the embedding is not whitened
    w: np.ndarray
    b: float
    l2: float
    scale: float = 1.0  # Platt: p = sigmoid(scale * logit + shift)
    shift: float = 0.0
    threshold: float = 0.5
    # Shipped reasons that no longer make a reject of a frame this model keeps.
    overruled_reasons: tuple[str, ...] = ()

    def design(self, X: np.ndarray, E: np.ndarray) -> np.ndarray:
        xs = (X - self.x_mean) / self.x_std
        ps = ((unit(E) - self.e_mean) @ self.pca - self.p_mean) / self.p_std
        return np.hstack([xs, ps])

    def logit(self, X: np.ndarray, E: np.ndarray) -> np.ndarray:
        return self.design(X, E) @ self.w + self.b

    def proba(self, X: np.ndarray, E: np.ndarray) -> np.ndarray:
        return _sigmoid(self.scale * self.logit(X, E) + self.shift)


def unit(E: np.ndarray) -> np.ndarray:
    """Embeddings scaled to length 1: what they show, not how much texture the frame has
    (on the two-photographer evaluation, precision at the target recall rose from 0.75
    to 0.92 for the people photographer)."""
    return E / np.maximum(np.linalg.norm(E, axis=-1, keepdims=True), 1e-6)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def principal_axes(E: np.ndarray, k: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(mean, 1280 x k axes) of the embeddings: a randomized SVD (Halko et al.), since a
    full SVD of 1,000 x 1280 takes seconds on a laptop core and only k axes are kept."""
    mean = E.mean(0)
    centered = (E - mean).astype(np.float64)
    k = int(min(k, *centered.shape))
    rng = np.random.default_rng(seed)
    Y = centered @ rng.standard_normal((centered.shape[1], min(k + 10, centered.shape[1])))
    for _ in range(2):  # power iterations sharpen the leading axes
        Y, _ = np.linalg.qr(Y)
        Y = centered @ (centered.T @ Y)
    Q, _ = np.linalg.qr(Y)
    _, _, vt = np.linalg.svd(Q.T @ centered, full_matrices=False)
    return mean, vt[:k].T


def fit_head(
    X: np.ndarray,
    E: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    l2: float,
    axes: tuple[np.ndarray, np.ndarray] | None = None,
) -> Head:
    """Weighted L2 logistic regression by Newton's method (class-balanced weights)."""
    x_mean, x_std = X.mean(0), X.std(0) + 1e-6
    e_mean, pca = axes if axes is not None else principal_axes(unit(E), PCA_DIMS)
    projected = (unit(E) - e_mean) @ pca
    head = Head(
        x_mean,
        x_std,
        e_mean,
        pca,
        projected.mean(0),
        # One scale for all axes (their root mean square spread), so the penalty shrinks the
        # weak axes more than the strong ones: a ridge on the embedding itself. Whitened,
        # each of the 128 axes weighed the same, and the noise of the weak ones swamped
        # the few that tell a person from a landscape. bench/eval_personal.py, both
        # groupings, recall / precision: landscapes 0.96 / 0.80, 0.93 / 0.72 -> 0.95 / 0.84,
        # 0.95 / 0.81; people 0.92 / 0.88, 0.94 / 0.91 -> 0.96 / 0.85, 0.96 / 0.88 (with
        # 256 axes; 128 unwhitened gave landscapes a recall of 0.94).
        np.full(projected.shape[1], np.sqrt(np.mean(projected.var(0))) + 1e-6),
        np.zeros(X.shape[1] + pca.shape[1]),
        0.0,
        l2,
    )
    Z = np.hstack([head.design(X, E), np.ones((len(y), 1))])
    pos = weight[y == 1].sum()
    neg = weight[y == 0].sum()
    sample = weight * np.where(y == 1, 0.5 / pos, 0.5 / neg)  # sums to 1
    beta = np.zeros(Z.shape[1])
    ridge = np.full(Z.shape[1], l2 / len(y))
    ridge[-1] = 0.0  # the intercept is not shrunk
    for _ in range(50):
        p = _sigmoid(Z @ beta)
        gradient = Z.T @ (sample * (p - y)) + ridge * beta
        hessian = (Z * (sample * p * (1 - p))[:, None]).T @ Z + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-7:
            break
    head.w, head.b = beta[:-1], float(beta[-1])
    return head


def _augment(X, E, M, y, weight):
    """Selects once more, with the embedding of their mirrored preview."""
    selects = y == 1
    return (
        np.vstack([X, X[selects]]),
        np.vstack([E, M[selects]]),
        np.concatenate([y, y[selects]]),
        np.concatenate([weight, weight[selects]]),
    )


def _folds(shoots: np.ndarray, y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Groups of shoots (as even in selects as a greedy fill makes them) for out-of-fold
    predictions; each fold is a boolean mask over the frames."""
    rng = np.random.default_rng(seed)
    unique = rng.permutation(np.unique(shoots))
    k = max(2, min(k, len(unique)))
    load = np.zeros((k, 2))
    assignment = {}
    # Largest shoots first, each into the fold with the fewest frames of its majority class.
    sizes = {
        s: (int((y[shoots == s] == 1).sum()), int((y[shoots == s] == 0).sum())) for s in unique
    }
    for s in sorted(unique, key=lambda s: -sum(sizes[s])):
        cls = 0 if sizes[s][0] >= sizes[s][1] else 1
        fold = int(np.argmin(load[:, cls] + 1e-3 * load.sum(1)))
        assignment[s] = fold
        load[fold] += sizes[s]
    fold_of = np.array([assignment[s] for s in shoots])
    return [fold_of == f for f in range(k)]


def _out_of_fold(data: Dataset, rows: np.ndarray, l2: float, seed: int, axes) -> np.ndarray:
    """Logits for ``rows``, each from a head that never saw its shoot (the embedding axes,
    which know no labels, are shared)."""
    logits = np.full(len(rows), np.nan)
    for test in _folds(data.shoot[rows], data.y[rows], FOLDS, seed):
        train = rows[~test]
        if len(np.unique(data.y[train])) < 2:
            continue
        head = fit_head(
            *_augment(
                data.X[train], data.E[train], data.M[train], data.y[train], data.weight[train]
            ),
            l2,
            axes,
        )
        logits[test] = head.logit(data.X[rows[test]], data.E[rows[test]])
    return logits


def _platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(scale, shift) minimizing the log loss of sigmoid(scale * logit + shift)."""
    # Platt's targets keep a perfectly separated set from pushing the scale to infinity.
    n1, n0 = y.sum(), (1 - y).sum()
    target = np.where(y == 1, (n1 + 1) / (n1 + 2), 1 / (n0 + 2))
    a, b = 1.0, 0.0
    for _ in range(100):
        p = _sigmoid(a * logits + b)
        g = np.array([((p - target) * logits).sum(), (p - target).sum()])
        s = p * (1 - p)
        H = np.array([[(s * logits**2).sum(), (s * logits).sum()], [(s * logits).sum(), s.sum()]])
        step = np.linalg.solve(H + 1e-9 * np.eye(2), g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(a), float(b)


def threshold_for_recall(p: np.ndarray, y: np.ndarray, target: float) -> float:
    """The threshold (p >= threshold keeps a frame) at which the selects' recall crosses
    ``target``, interpolated between the two selects on either side of it.

    The empirical recall is a step function, and the frames of one scene come in groups
    (three frames of one lake): taking the step conservatively let one such group of
    out-of-fold misses drag the threshold down to their scores. On the two-photographer
    evaluation one fold's threshold for the landscape taste fell to 0.025 (the dark misty
    lake; the next select scored 0.38), keeping some 15 more rejects, mostly blurred;
    interpolated, the pooled precision rose from 0.69 to 0.80 at the same recall 0.96
    (bench/eval_personal.py, the head as it was then).
    """
    selects = np.sort(p[y == 1])
    position = round((1.0 - target) * len(selects), 9)  # selects allowed below
    below = int(math.floor(position + 1e-9))
    if below + 1 >= len(selects):
        return float(selects[min(below, len(selects) - 1)])
    fraction = position - below
    return float(selects[below] + fraction * (selects[below + 1] - selects[below]))


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (n of a few thousand)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    logs = [
        math.lgamma(n + 1)
        - math.lgamma(j + 1)
        - math.lgamma(n - j + 1)
        + j * math.log(p)
        + (n - j) * math.log1p(-p)
        for j in range(k, n + 1)
    ]
    top = max(logs)
    return math.exp(top) * sum(math.exp(v - top) for v in logs)


def recall_lower_bound(kept: int, selects: int, confidence: float = RECALL_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson lower bound of a recall of ``kept`` of ``selects``: the
    true recall is below it with probability at most 1 - ``confidence``."""
    if selects <= 0 or kept <= 0:
        return 0.0
    low, high = 0.0, kept / selects
    for _ in range(50):  # bisection: the tail grows with p
        middle = (low + high) / 2
        if _binomial_tail(kept, selects, middle) < 1 - confidence:
            low = middle
        else:
            high = middle
    return low


def recall_interval(
    kept: int, selects: int, confidence: float = RECALL_CONFIDENCE
) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a recall of ``kept`` of ``selects``."""
    if selects <= 0:
        return (float("nan"), float("nan"))
    tail = (1 + confidence) / 2
    low = recall_lower_bound(kept, selects, tail)
    high = 1.0 - recall_lower_bound(selects - kept, selects, tail) if kept < selects else 1.0
    return (low, high)


def recall_with_margin(selects: int, target: float, confidence: float = RECALL_CONFIDENCE) -> float:
    """The out-of-fold recall to aim at so that its lower bound reaches ``target``: with a
    few dozen selects one scene more or less moves the recall by several points, and the
    threshold set at ``target`` itself landed at 0.93-0.94 on shoots the model had not
    seen. 1.0 (every select) when even that bound stays below the target."""
    for kept in range(math.ceil(target * selects), selects + 1):
        if recall_lower_bound(kept, selects, confidence) >= target:
            return kept / selects
    return 1.0


def threshold_with_margin(
    p: np.ndarray, y: np.ndarray, target: float, confidence: float = RECALL_CONFIDENCE
) -> tuple[float, float]:
    """(threshold, the out-of-fold recall it aims at) for ``target`` with ``confidence``."""
    aim = recall_with_margin(int((y == 1).sum()), target, confidence)
    return threshold_for_recall(p, y, aim), aim


def reason_evidence(
    X: np.ndarray,
    y: np.ndarray,
    shoots: np.ndarray | None,
    p: np.ndarray,
    threshold: float,
) -> dict[str, dict[str, int]]:
    """For each shipped reason some selects carry: how many selects carry it, in how many
    shoots (0: ``shoots`` None, blocks of frames stood in for them), and of the frames with
    it, how many selects and rejects the personal model keeps out of fold (``p``: each
    from a model that never saw the frame's shoot), i.e. what overruling it would rescue."""
    evidence = {}
    for name, i in zip(REASON_NAMES, REASONS, strict=True):
        has = X[:, i] > 0
        selects = has & (y == 1)
        if not selects.any():
            continue
        rescued = has & (p >= threshold)
        evidence[name] = {
            "selects": int(selects.sum()),
            "shoots": 0 if shoots is None else len(np.unique(shoots[selects])),
            "rescued_selects": int((rescued & (y == 1)).sum()),
            "rescued_rejects": int((rescued & (y == 0)).sum()),
        }
    return evidence


def overruled_reasons(
    evidence: dict[str, dict[str, int]], selects: int, respect: bool | str = "auto"
) -> tuple[str, ...]:
    """The shipped reasons the photographer's own ratings show they do not reject for.

    The reasons are among the head's inputs, so where a photographer keeps such frames
    (a squint the eye model takes for closed eyes, ripples it takes for motion blur) the
    head has learnt how much the reason weighs for them; a hard reject would throw away
    frames they keep. But a few selects the shipped analysis flagged wrongly teach the
    head nothing (issue #15: 40 rated JPEGs in 3 folders, 3 flagged selects, and a frame
    with closed eyes became 4 stars Green): a reason is handed to the model only when
    enough selects carry it (``KEPT_WITH_REASON``, ``KEPT_WITH_REASON_SHARE``), across
    ``REASON_SHOOTS`` shoots, and, out of fold, the frames with it the model keeps are
    mostly selects (``RESCUED_SELECTS_SHARE``): it keeps more selects without keeping
    that fault's rejects.
    """
    if respect is True:
        return ()
    if respect is False:
        return tuple(REASON_NAMES)
    return tuple(
        name
        for name in REASON_NAMES
        if name in evidence and not why_not_overruled(evidence[name], selects)
    )


def why_not_overruled(evidence: dict[str, int], selects: int) -> str:
    """Why ``train.respect_reasons: auto`` keeps this reason a reject ("" when it does not)."""
    if evidence["selects"] < max(KEPT_WITH_REASON, KEPT_WITH_REASON_SHARE * selects):
        n = evidence["selects"]
        return f"only {n} of your selects {'carries' if n == 1 else 'carry'} it"
    if evidence["shoots"] < REASON_SHOOTS:
        return (
            f"they come from {evidence['shoots']} shoot{'s' if evidence['shoots'] != 1 else ''}"
            if evidence["shoots"]
            else "too few shoots to tell"
        )
    rescued = evidence["rescued_selects"] + evidence["rescued_rejects"]
    if evidence["rescued_selects"] < KEPT_WITH_REASON:
        return (
            f"on shoots it did not see, your model kept only {evidence['rescued_selects']} of them"
        )
    if evidence["rescued_selects"] < RESCUED_SELECTS_SHARE * rescued:
        return (
            f"on shoots it did not see, your model kept {evidence['rescued_rejects']} of "
            "your rejects with it too"
        )
    return ""


def kept_as_rated(head: Head, X: np.ndarray, p: np.ndarray) -> np.ndarray:
    """What the rating keeps with this head (``p`` its probabilities for ``X``): at or
    above the threshold, and no shipped reason the head does not overrule."""
    reasons = [
        i
        for i, name in zip(REASONS, REASON_NAMES, strict=True)
        if name not in head.overruled_reasons
    ]
    return (p >= head.threshold) & (X[:, reasons].sum(1) == 0)


def fit(
    data: Dataset, rows: np.ndarray, target_recall: float, respect_reasons: bool | str = "auto"
) -> tuple[Head, dict]:
    """The whole procedure on ``rows``: choose L2, calibrate and set the threshold out of
    fold (by shoot), then fit on all of ``rows``."""
    y = data.y[rows]
    axes = principal_axes(unit(np.vstack([data.E[rows], data.M[rows][y == 1]])), PCA_DIMS)
    best = None
    for l2 in L2_CHOICES:
        logits = _out_of_fold(data, rows, l2, SEED, axes)
        known = ~np.isnan(logits)
        if not (y[known] == 1).any() or not (y[known] == 0).any():
            # Too few shoots (or stand-in blocks) to predict selects and rejects for ones
            # the model did not see, so the threshold cannot be set out of fold.
            raise TrainError(
                f"{len(rows)} rated photos are too few to set the threshold on shoots the "
                "model did not see: rate photos in more folders (shoots), or more of each kind"
            )
        a, b = _platt(logits[known], y[known])
        p = _sigmoid(a * logits[known] + b)
        loss = -np.mean(y[known] * np.log(p + 1e-12) + (1 - y[known]) * np.log(1 - p + 1e-12))
        if best is None or loss < best[0]:
            best = (loss, l2, a, b, p, rows[known])
    loss, l2, a, b, p, known_rows = best
    y_known = data.y[known_rows]
    head = fit_head(
        *_augment(data.X[rows], data.E[rows], data.M[rows], y, data.weight[rows]), l2, axes
    )
    head.scale, head.shift = a, b
    head.threshold, aim = threshold_with_margin(p, y_known, target_recall)
    evidence = reason_evidence(
        data.X[known_rows],
        y_known,
        None if data.stand_in_shoots else data.shoot[known_rows],
        p,
        head.threshold,
    )
    head.overruled_reasons = overruled_reasons(evidence, int(y.sum()), respect_reasons)
    return head, {
        "l2": l2,
        "out_of_fold_log_loss": round(float(loss), 4),
        "aimed_recall": round(aim, 4),
        "overruled_reasons": list(head.overruled_reasons),
        "reason_evidence": evidence,
    }


# --- numbers -------------------------------------------------------------------------------


def roc_auc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    # Mann-Whitney U with average ranks for ties.
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def recall_precision(kept: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    selects = y == 1
    recall = float(kept[selects].mean()) if selects.any() else float("nan")
    precision = float(selects[kept].mean()) if kept.any() else float("nan")
    return recall, precision


def default_keeps(X: np.ndarray, two_stars_from: float) -> np.ndarray:
    """What the shipped model keeps (not a reject): no reason and p >= the 2-star line."""
    return (X[:, KEEPER] >= two_stars_from) & (X[:, REASONS].sum(1) == 0)


def split_held_out(data: Dataset, seed: int = SEED) -> np.ndarray:
    """A boolean mask of held-out frames: ~HELD_OUT of the shoots, with both classes on
    both sides (another draw when a side would miss one)."""
    shoots = np.unique(data.shoot)
    n_test = max(1, round(len(shoots) * HELD_OUT))
    for attempt in range(50):
        rng = np.random.default_rng(seed + attempt)
        test_shoots = rng.permutation(shoots)[:n_test]
        test = np.isin(data.shoot, test_shoots)
        ys, yt = data.y[~test], data.y[test]
        if ys.sum() >= 2 and (1 - ys).sum() >= 2 and yt.sum() >= 1 and (1 - yt).sum() >= 1:
            return test
    raise TrainError(
        "cannot hold out shoots with both selects and rejects in them: rate photos in more "
        "folders (shoots), or more of each kind"
    )


def evaluate(data: Dataset, test: np.ndarray, rules: TrainConfig, two_stars_from: float) -> dict:
    """Fit on the other shoots, report on ``test``, beside the shipped model."""
    rows = np.flatnonzero(~test)
    head, info = fit(data, rows, rules.target_recall, rules.respect_reasons)
    p = head.proba(data.X[test], data.E[test])
    y = data.y[test]
    kept = p >= head.threshold
    recall, precision = recall_precision(kept, y)
    low, high = recall_interval(int(kept[y == 1].sum()), int(y.sum()))
    # The same Clopper-Pearson interval, over the frames it keeps (selects of them).
    p_low, p_high = recall_interval(int(kept[y == 1].sum()), int(kept.sum()))
    rated_recall, rated_precision = recall_precision(kept_as_rated(head, data.X[test], p), y)
    d_recall, d_precision = recall_precision(default_keeps(data.X[test], two_stars_from), y)
    return {
        "recall": round(recall, 4),
        "recall_interval": [round(low, 4), round(high, 4)],
        "precision": round(precision, 4),
        "precision_interval": [round(p_low, 4), round(p_high, 4)],
        "auc": round(roc_auc(p, y), 4),
        "threshold": round(head.threshold, 4),
        "rated_recall": round(rated_recall, 4),
        "rated_precision": round(rated_precision, 4),
        "default_recall": round(d_recall, 4),
        "default_precision": round(d_precision, 4),
        "default_auc": round(roc_auc(data.X[test, KEEPER], y), 4),
        "held_out": {
            # Blocks of consecutive frames when they stood in for shoots (data.shoot_names).
            ("blocks" if data.stand_in_shoots else "shoots"): int(len(np.unique(data.shoot[test]))),
            "images": int(test.sum()),
            "selects": int(y.sum()),
            "rejects": int((1 - y).sum()),
        },
        **info,
    }


# --- the whole command -----------------------------------------------------------------------


@dataclass
class TrainResult:
    card: dict
    model_path: Path | None = None
    frames: list[Frame] = field(default_factory=list, repr=False)


def find_rated(
    paths: Iterable[Path],
    config: Config,
    lrcat: Path | None = None,
    darktable_db: Path | None = None,
) -> tuple[list[Verdict], dict]:
    """Every photo under ``paths`` with the photographer's verdict on it."""
    from postselectd.photos import find_photos, passed_over_text

    photos: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    passed_over: Counter[str] = Counter()
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise TrainError(f"{root}: no such file or folder")
        for photo in find_photos([root], passed_over=passed_over):
            if photo not in seen:
                seen.add(photo)
                photos.append((photo, root if root.is_dir() else root.parent))
    if not photos:
        raise TrainError(
            "no photos under "
            + ", ".join(str(p) for p in paths)
            + (f" (passed over {passed_over_text(passed_over)})" if passed_over else "")
        )
    try:
        lightroom = CatalogIndex(read_lightroom_catalog(lrcat)) if lrcat else None
        darktable = CatalogIndex(read_darktable_library(darktable_db)) if darktable_db else None
    except RatingsSourceError as exc:
        raise TrainError(str(exc)) from None
    verdicts, skipped = collect_verdicts(
        photos, config.train, lightroom=lightroom, darktable=darktable
    )
    for suffix, count in sorted(passed_over.items()):
        skipped[f"{suffix} files (a type postselectd does not rate)"] = count
    info = {"photos_found": len(photos), "not_used": skipped}
    return verdicts, info


def train(
    paths: Iterable[Path],
    config: Config,
    *,
    lrcat: Path | None = None,
    darktable_db: Path | None = None,
    evaluate_only: bool = False,
    workers: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    out_dir: Path | None = None,
) -> TrainResult:
    started = time.perf_counter()
    paths = list(paths)
    verdicts, info = find_rated(paths, config, lrcat, darktable_db)
    selects = sum(v.verdict == SELECT for v in verdicts)
    where = "under " + ", ".join(str(p) for p in paths)
    if not verdicts:
        raise TrainError(
            f"none of the {info['photos_found']} photos {where} carries a rating read as a "
            "select or a reject (see `train:` in the config for what counts)"
        )
    check_classes(selects, len(verdicts) - selects, where)
    frames, counts = extract_all(verdicts, config, workers=workers, on_progress=on_progress)
    selects = sum(f.verdict.verdict == SELECT for f in frames)
    check_classes(selects, len(frames) - selects, "that could be read")
    data = build_dataset(frames)
    extracted = time.perf_counter()

    test = split_held_out(data)
    metrics = evaluate(data, test, config.train, config.rating.two_stars_from)
    card = describe(data, frames, metrics, config.train)
    card["photos_found"] = info["photos_found"]
    card["not_used"] = {
        **info["not_used"],
        **({"unreadable": counts["unreadable"]} if counts.get("unreadable") else {}),
    }
    card["features"] = {"cached": counts.get("cached", 0), "analysed": counts.get("analysed", 0)}
    card["seconds"] = {"features": round(extracted - started, 1)}
    model_path = None
    if evaluate_only:
        card["warnings"] = evidence_warnings(card)
    else:
        model_path = make_model(
            data, frames, card, metrics, config.train, out_dir or config.personal_models_dir()
        )
    card["seconds"]["total"] = round(time.perf_counter() - started, 1)
    if model_path is not None:
        write_card(card, model_path)
    return TrainResult(card=card, model_path=model_path, frames=frames)


def describe(data: Dataset, frames: list[Frame], metrics: dict, rules: TrainConfig) -> dict:
    """The model card's account of the data and of the held-out numbers (``metrics``)."""
    return {
        "images": len(data),
        "shoots": data.real_shoots,
        **({"blocks": len(data.shoot_names)} if data.stand_in_shoots else {}),
        "selects": int(data.y.sum()),
        "rejects": int((1 - data.y).sum()),
        **{
            k: metrics[k]
            for k in (
                "recall",
                "recall_interval",
                "precision",
                "precision_interval",
                "auc",
                "threshold",
            )
        },
        "recall_confidence": RECALL_CONFIDENCE,
        "aimed_recall": metrics["aimed_recall"],
        "rated_recall": metrics["rated_recall"],
        "rated_precision": metrics["rated_precision"],
        "default_recall": metrics["default_recall"],
        "default_precision": metrics["default_precision"],
        "default_auc": metrics["default_auc"],
        "target_recall": rules.target_recall,
        # What the model evaluated here overrules, and why; the written model's replace it.
        "overruled_reasons": metrics["overruled_reasons"],
        "reason_evidence": metrics["reason_evidence"],
        "held_out": metrics["held_out"],
        "stand_in_shoots": data.stand_in_shoots,
        "sources": dict(Counter(f.verdict.source for f in frames)),
        "corrections": int(sum(f.verdict.source == CORRECTION for f in frames)),
        "mirrored_selects": int(data.y.sum()),
        "photos_found": len(frames),
        "not_used": {},
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": None,
    }


def make_model(
    data: Dataset,
    frames: list[Frame],
    card: dict,
    metrics: dict,
    rules: TrainConfig,
    folder: Path,
) -> Path:
    """Fit on every shoot, write the model with ``card`` (completed here) and the frames
    it learnt from (so the daemon can learn on from them without reading a photo)."""
    head, fitted = fit(data, np.arange(len(data)), rules.target_recall, rules.respect_reasons)
    card["threshold"] = round(head.threshold, 4)
    card["aimed_recall"] = fitted["aimed_recall"]
    card["overruled_reasons"] = fitted["overruled_reasons"]
    card["reason_evidence"] = fitted["reason_evidence"]
    card["held_out"]["threshold"] = metrics["threshold"]
    card["l2"] = fitted["l2"]
    card["warnings"] = evidence_warnings(card)
    model_path = write_model(head, card, folder)
    card["model"] = str(model_path)
    save_frames(frames, model_path)
    return model_path


def frames_path(model_path: Path) -> Path:
    return model_path.with_suffix(".frames.npz")


def save_frames(frames: list[Frame], model_path: Path) -> None:
    """``<model>.frames.npz``: the rated frames a model learnt from, with their features."""
    path = frames_path(model_path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        paths=np.array([str(f.path) for f in frames]),
        verdicts=np.array([f.verdict.verdict for f in frames]),
        sources=np.array([f.verdict.source for f in frames]),
        whys=np.array([f.verdict.why for f in frames]),
        capture_days=np.array([f.capture_day for f in frames]),
        taste=np.stack([f.taste for f in frames]),
        embedding=np.stack([f.embedding for f in frames]),
        mirrored=np.stack([f.mirrored for f in frames]),
    )
    os.replace(tmp, path)


def load_frames(model_path: Path) -> list[Frame]:
    """The frames ``save_frames`` kept beside a model; OSError / ValueError when absent
    or unreadable (a model from before they were kept)."""
    with np.load(frames_path(model_path)) as data:
        return [
            Frame(
                path=Path(str(path)),
                verdict=Verdict(Path(str(path)), str(verdict), str(source), str(why)),
                taste=np.asarray(data["taste"][i], np.float32),
                embedding=np.asarray(data["embedding"][i], np.float32),
                mirrored=np.asarray(data["mirrored"][i], np.float32),
                capture_day=str(day),
            )
            for i, (path, verdict, source, why, day) in enumerate(
                zip(
                    data["paths"],
                    data["verdicts"],
                    data["sources"],
                    data["whys"],
                    data["capture_days"],
                    strict=True,
                )
            )
        ]


# --- writing the model ------------------------------------------------------------------------


def head_graph(head: Head) -> Graph:
    """P(select) as an ONNX graph; standardization, PCA and Platt scaling folded in."""
    nf, nk = len(TASTE_FEATURES), head.pca.shape[1]
    g = Graph(
        "personal_head",
        inputs=[("features", ("batch", nf)), ("embedding", ("batch", 1280))],
        outputs=[("select_probability", ("batch", 1))],
    )
    xs = g.node(
        "Div",
        [
            g.node("Sub", ["features", g.const("x_mean", head.x_mean)], "xc"),
            g.const("x_std", head.x_std),
        ],
        "xs",
    )
    ep = g.node(
        "MatMul",
        [
            g.node(
                "Sub",
                [
                    g.node("LpNormalization", ["embedding"], "eu", axis=1, p=2),
                    g.const("e_mean", head.e_mean),
                ],
                "ec",
            ),
            g.const("pca", head.pca),
        ],
        "ep",
    )
    ps = g.node(
        "Div",
        [g.node("Sub", [ep, g.const("p_mean", head.p_mean)], "pc"), g.const("p_std", head.p_std)],
        "ps",
    )
    z = g.node("Concat", [xs, ps], "z", axis=1)
    w = (head.scale * head.w).reshape(nf + nk, 1)
    b = np.array([head.scale * head.b + head.shift])
    logit = g.node("Add", [g.node("MatMul", [z, g.const("w", w)], "zw"), g.const("b", b)], "logit")
    g.node("Sigmoid", [logit], "select_probability")
    return g


def write_model(head: Head, card: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"personal-{stamp}.onnx"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"personal-{stamp}-{n}.onnx"
    card = {**card, "model": str(path)}
    metadata = {
        "postselectd.name": path.stem,
        "postselectd.version": "1",
        "postselectd.task": "select-probability",
        "postselectd.features": json.dumps(TASTE_FEATURES),
        "postselectd.embedding": "efficientnet_lite0",
        "postselectd.threshold": repr(float(head.threshold)),
        "postselectd.overruled_reasons": json.dumps(list(head.overruled_reasons)),
        "postselectd.outputs": json.dumps(
            {
                "select_probability": {
                    "shape": ["batch", 1],
                    "meaning": "calibrated P(the photographer selects it)",
                }
            }
        ),
        "postselectd.card": json.dumps(card),
        "postselectd.description": "personal taste head made by `postselectd train`",
    }
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(model_bytes(head_graph(head), metadata))
    os.replace(tmp, path)
    return path


def write_card(card: dict, model_path: Path) -> None:
    model_path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    model_path.with_suffix(".txt").write_text(format_card(card) + "\n")


def evidence_warnings(card: dict) -> list[str]:
    """What the card's held-out numbers cannot show, and what more to rate so they can."""
    held = card["held_out"]
    low, high = card.get("recall_interval") or (float("nan"), float("nan"))
    thin = held["selects"] < THIN_SELECTS or not (high - low <= THIN_INTERVAL)
    if not thin:
        return []
    wanted_selects = math.ceil(THIN_SELECTS / HELD_OUT)
    more = []
    if card["selects"] < wanted_selects:
        more.append(f"about {wanted_selects - card['selects']} more selects")
    if card["rejects"] < wanted_selects:
        more.append(f"{wanted_selects - card['rejects']} more rejects")
    shoots = f"from at least {EVIDENCE_SHOOTS - card['shoots']} more shoots (folders or days)"
    if card["shoots"] >= EVIDENCE_SHOOTS:
        shoots = "from other shoots"
    todo = " and ".join(more) if more else "more selects and rejects"
    return [
        f"the held-out evidence is thin: {held['selects']} selects held out, so the recall "
        f"of {_pct(card['recall'])} could be anywhere from {_pct(low)} to {_pct(high)}; "
        f"rate {todo} {shoots} and train again"
    ]


def _pct(value) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{100 * value:.0f}%")
    )


def format_card(card: dict) -> str:
    """The model card as a photographer reads it."""
    pct = _pct
    held = card["held_out"]
    held_in = (
        f"{held['shoots']} shoots"
        if "shoots" in held
        else f"{held['blocks']} blocks of consecutive frames"
    )
    lines = [
        f"personal model, {card['created']}"
        + (f": {card['model']}" if card["model"] else " (evaluation only, nothing written)"),
        f"learnt from      {card['images']} photos in {card['shoots']} shoots: "
        f"{card['selects']} selects, {card['rejects']} rejects",
        "ratings from     " + ", ".join(f"{k} {v}" for k, v in card["sources"].items()),
        *(
            [
                f"learnt           by the daemon from {learnt['corrections']} corrections of its "
                f"ratings ({learnt['reason']}); it replaced {learnt['previous_model']} by keeping "
                "at least as large a share of your selects on held-out shoots"
            ]
            if (learnt := card.get("learnt"))
            else []
        ),
        f"held out         {held['images']} photos in {held_in} never trained on "
        f"({held['selects']} selects, {held['rejects']} rejects)",
        "                 personal model   shipped model",
        f"  selects kept   {pct(card['recall']):>14}   {pct(card['default_recall']):>13}"
        + (
            f"   ({pct(card['recall_interval'][0])}-{pct(card['recall_interval'][1])}: "
            f"{100 * card.get('recall_confidence', RECALL_CONFIDENCE):.0f}% interval)"
            if card.get("recall_interval")
            else ""
        ),
        f"  kept that are  {pct(card['precision']):>14}   {pct(card['default_precision']):>13}"
        + (
            f"   (precision; {pct(card['precision_interval'][0])}-"
            f"{pct(card['precision_interval'][1])})"
            if card.get("precision_interval")
            else "   (precision)"
        ),
        f"  ROC AUC        {card['auc']:>14}   {card['default_auc']:>13}",
        f"  as rated       {pct(card['rated_recall']):>14}   {'':>13}   (kept, and no reason "
        f"made it a reject: {pct(card['rated_precision'])} of them selects)",
        f"threshold        P(select) >= {card['threshold']} keeps a frame "
        f"(target: {pct(card['target_recall'])} of your selects"
        + (
            f"; set to keep {pct(card['aimed_recall'])} of them on shoots each model did "
            "not see, a margin for the few selects it was set on)"
            if card.get("aimed_recall")
            else ")"
        ),
    ]
    overruled = card.get("overruled_reasons")
    lines.append(
        "reasons          "
        + (
            f"{', '.join(overruled)}: you keep such frames, so your model decides; "
            "other reasons still make a reject"
            if overruled
            else "blur, closed eyes, bad exposure still make a reject"
        )
    )
    kept_anyway = [
        f"                 {name}: still a reject, {why}"
        for name, evidence in card.get("reason_evidence", {}).items()
        if (why := why_not_overruled(evidence, card["selects"])) and name not in (overruled or ())
    ]
    if kept_anyway:
        lines += kept_anyway
        lines.append(
            f"                 (your model decides a reason only when {KEPT_WITH_REASON} of your "
            f"selects from {REASON_SHOOTS} shoots carry it, and on shoots it did not see it "
            "keeps them without your rejects that carry it)"
        )
    if card.get("stand_in_shoots"):
        lines.append(
            f"note             fewer than {MIN_SHOOTS} shoots: {card.get('blocks', 'some')} "
            f"blocks of up to {BLOCK} consecutive frames stood in for shoots, so the "
            "held-out numbers are optimistic"
        )
    for warning in card.get("warnings", ()):
        lines.append(f"warning          {warning}")
    if card["not_used"]:
        lines.append(
            "not used         " + ", ".join(f"{k} {v}" for k, v in card["not_used"].items())
        )
    return "\n".join(lines)
