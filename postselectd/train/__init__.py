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
  between two selects), the selects counted as scenes (``count_scenes``: frames of one
  burst or view are kept or lost together); a margin spent only while at least
  ``PRECISION_FLOOR`` of what it keeps out of fold are selects. The reported recall (with
  its interval) / precision / AUC are on held-out shoots the whole procedure never saw;
  the saved model is then fitted the same way on every shoot.
- **Reasons**: the shipped reasons (blur, closed eyes, exposure) the photographer's own
  ratings show, with evidence, they keep are written into the model as overruled
  (train.respect_reasons, overruled_reasons): for those, the model's verdict decides
  (analysis/personal.py).
- **People never kept**: where the photographer kept none of the frames with a person in
  them, in enough scenes and shoots (``never_kept_people``), the model caps those frames
  below its threshold: a rule the ratings show, which a weighted sum could outweigh.
- **Output**: ``<state_dir>/personal/personal-YYYYMMDD-HHMMSS.onnx`` (written without the
  `onnx` package, by onnx_export.py) with the model card in its metadata, as
  ``.json`` and as a readable ``.txt`` beside it.

Where each part is: ``features.py`` (a rated photo -> its features: the worker body, the
cache), ``dataset.py`` (the frames, shoots, whether there are enough ratings),
``fit.py`` (the head, folds, Platt, threshold, recall bounds, reasons overruled),
``evaluate.py`` (the held-out numbers), ``model.py`` (the ONNX head, the card, the frames
kept beside it); this file is the command (``train``, ``find_rated``), and every name
above can be imported from ``postselectd.train``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from postselectd.config import Config
from postselectd.ratings_sources import (
    SELECT,
    CatalogIndex,
    RatingsSourceError,
    Verdict,
    collect_verdicts,
    read_darktable_library,
    read_lightroom_catalog,
)
from postselectd.train.dataset import (
    BLOCK,
    CORRECTION_WEIGHT,
    MIN_PER_CLASS,
    MIN_SHOOTS,
    Dataset,
    Frame,
    Readiness,
    TrainError,
    build_dataset,
    check_classes,
    readiness,
)
from postselectd.train.evaluate import (
    HELD_OUT,
    default_keeps,
    evaluate,
    roc_auc,
    split_held_out,
)
from postselectd.train.features import (
    CACHE_VERSION,
    FeatureCache,
    cache_version,
    extract_all,
)
from postselectd.train.fit import (
    FOLDS,
    KEEPER,
    L2_CHOICES,
    NEVER_KEPT_CAP,
    NEVER_KEPT_PERSON,
    NEVER_KEPT_SCENES,
    PCA_DIMS,
    PRECISION_FLOOR,
    REASONS,
    RECALL_CONFIDENCE,
    SCENE_SIMILARITY,
    SEED,
    Head,
    _folds,
    count_scenes,
    fit,
    fit_head,
    kept_as_rated,
    never_kept_people,
    overruled_reasons,
    principal_axes,
    reason_evidence,
    recall_interval,
    recall_interval_in_scenes,
    recall_lower_bound,
    recall_precision,
    recall_with_margin,
    threshold_for_recall,
    threshold_with_margin,
    unit,
    why_not_overruled,
)
from postselectd.train.model import (
    describe,
    evidence_warnings,
    format_card,
    frames_path,
    head_graph,
    load_frames,
    make_model,
    save_frames,
    write_card,
    write_model,
)

# Every name cli.py, learn.py, bench/ and the tests import from postselectd.train.
__all__ = [
    "BLOCK",
    "build_dataset",
    "CACHE_VERSION",
    "cache_version",
    "check_classes",
    "CORRECTION_WEIGHT",
    "Dataset",
    "default_keeps",
    "describe",
    "evaluate",
    "evidence_warnings",
    "extract_all",
    "FeatureCache",
    "find_rated",
    "fit",
    "fit_head",
    "FOLDS",
    "_folds",
    "format_card",
    "Frame",
    "frames_path",
    "Head",
    "head_graph",
    "HELD_OUT",
    "KEEPER",
    "NEVER_KEPT_CAP",
    "NEVER_KEPT_PERSON",
    "NEVER_KEPT_SCENES",
    "count_scenes",
    "kept_as_rated",
    "never_kept_people",
    "L2_CHOICES",
    "load_frames",
    "make_model",
    "MIN_PER_CLASS",
    "MIN_SHOOTS",
    "overruled_reasons",
    "PCA_DIMS",
    "PRECISION_FLOOR",
    "principal_axes",
    "Readiness",
    "readiness",
    "reason_evidence",
    "REASONS",
    "RECALL_CONFIDENCE",
    "recall_interval",
    "recall_interval_in_scenes",
    "recall_lower_bound",
    "recall_precision",
    "recall_with_margin",
    "roc_auc",
    "save_frames",
    "SCENE_SIMILARITY",
    "SEED",
    "split_held_out",
    "threshold_for_recall",
    "threshold_with_margin",
    "train",
    "TrainError",
    "TrainResult",
    "unit",
    "why_not_overruled",
    "write_card",
    "write_model",
]

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
    metrics = evaluate(data, test, config.train, config.rating)
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
            data,
            frames,
            card,
            metrics,
            config.train,
            out_dir or config.personal_models_dir(),
            config.rating,
        )
    card["seconds"]["total"] = round(time.perf_counter() - started, 1)
    if model_path is not None:
        write_card(card, model_path)
    return TrainResult(card=card, model_path=model_path, frames=frames)
