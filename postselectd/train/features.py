"""A rated photo's features: exactly what the Analyzer computes for a frame when it rates
it, made in worker processes (workers.WorkerPool, the pool ``score`` runs on) and cached per
file fingerprint, so a second training run reads no photo."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from postselectd import workers as worker_pool
from postselectd.analysis.personal import TASTE_FEATURES
from postselectd.config import AnalysisConfig, Config
from postselectd.photos import fingerprint
from postselectd.ratings_sources import Verdict
from postselectd.train.dataset import Frame, TrainError
from postselectd.versions import analysis_code, files_digest, models_dir

log = logging.getLogger(__name__)

CACHE_VERSION = "3"  # 2: the backbone reads a halved preview; 3: reasons as confidences


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


def init_worker(config: AnalysisConfig) -> None:
    """Set up a worker process of extract_all's pool: the Analyzer with the default model,
    the same one a worker of ``score`` holds (``stages.worker_analyzer``)."""
    from postselectd import stages

    stages.init_worker(config)


def work(path: Path) -> dict[str, np.ndarray] | str:
    """One rated photo in a worker process (the ``work`` of extract_all's pool)."""
    return extract(Path(path))


def failed(path: Path, error: str) -> str:
    """Why a photo ``work`` raised on is left out (the ``failed`` of extract_all's pool)."""
    return error


def extract(path: Path) -> dict[str, np.ndarray] | str:
    """A frame's features through the Analyzer (the default model), or why not."""
    from PIL import Image

    from postselectd.preview import PreviewError, load_preview
    from postselectd.stages import detail_of, worker_analyzer

    analyzer, config = worker_analyzer()
    try:
        preview = load_preview(path, min_size=config.preview_min_size)
    except PreviewError as exc:
        return str(exc)
    picture = preview.picture
    analysis = analyzer.analyze(picture, detail_of(preview))
    backbone = analyzer.backbone
    mirrored = backbone.run(
        backbone.prepare(picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT))[None]
    )
    day = preview.capture_time.strftime("%Y-%m-%d") if preview.capture_time else ""
    return {
        "taste": np.asarray(analysis.taste, np.float32),  # the features it rates with
        "embedding": np.asarray(analysis.embedding, np.float32),
        "mirrored": np.asarray(mirrored["embedding"][0], np.float32),
        "capture_day": np.array(day),
    }


def feature_code() -> list[Path]:
    """The code a frame's features come from: the analysis's (versions.analysis_code) and
    this module's ``extract``."""
    return [*analysis_code(), Path(__file__).resolve()]


def cache_version(config: AnalysisConfig) -> str:
    """Changes whenever the features would: the models, the code that measures with them,
    the feature list, the preview size.

    Every model's bytes count, the face models too: the taste features hold the faces'
    measurements (hashing the ~28 MB takes ~40 ms, once a run). So does the code: a rule
    or constant of the analysis (the eyes read from 8 px instead of 10) changes features
    as surely as a new model, and a head fitted on the old ones would be served the new.
    """
    code = files_digest([*sorted(models_dir().glob("*.onnx")), *feature_code()])
    parts = [CACHE_VERSION, json.dumps(TASTE_FEATURES), str(config.preview_min_size), code]
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
        tasks = list(todo)  # a photo rated twice is read once
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
                if isinstance(result, worker_pool.Lost):
                    result = result.reason
                for verdict, fp in todo[path]:
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
