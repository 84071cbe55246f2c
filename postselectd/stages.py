"""The per-file stage: one photo's preview + analysis (in a worker process), then its
rating and sidecar (in the caller), and the values passed between them.

``Scored`` is what a worker sends back for one file; ``finish`` rates it and writes its
sidecars into a ``FileResult``. ``worker_body`` is what a worker process of
workers.WorkerPool runs: the one worker-global ``Analyzer`` is set up by ``init_worker``
and used by ``analyze_file``. pipeline.py wires these for ``score``; the daemon calls
them one file at a time.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from postselectd import rawmeta
from postselectd.analysis import KEEPER, Analysis, Analyzer
from postselectd.analysis.faces import Face
from postselectd.analysis.measure import Exposure, Sharpness
from postselectd.bursts import BurstInfo, Frame
from postselectd.config import AnalysisConfig, Config, RatingPolicy
from postselectd.photos import left_alone_reason, name_key, same_stem_names, sidecar_profiles_for
from postselectd.preview import Preview, PreviewError, load_detail, load_preview
from postselectd.rating import PREVIEW_TOO_SMALL, SMALLEST_JUDGED_PREVIEW, Rating, rate, weigh
from postselectd.reasons import EYES_CLOSED, Finding
from postselectd.sidecar import (
    SidecarContent,
    SidecarError,
    sidecar_path,
    withdraw,
    write_sidecars,
)
from postselectd.workers import WorkerBody

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """What a worker sends back for one file: the analysis, or why there is none."""

    path: Path
    analysis: Analysis | None
    preview_source: str | None = None
    format_name: str | None = None
    camera: str | None = None
    capture_time: datetime | None = None
    preview_size: tuple[int, int] = (0, 0)
    notes: tuple[str, ...] = ()
    error: str | None = None
    elapsed_ms: float = 0.0
    timings_ms: tuple[tuple[str, float], ...] = ()
    # Previews the file declares whose bytes run past its end (preview.Preview.previews_cut):
    # the daemon does not rate it while it may still be being written.
    previews_cut: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileResult:
    path: Path
    sidecars: tuple[Path, ...] = ()
    rating: Rating | None = None
    keeper_probability: float | None = None
    reasons: tuple[str, ...] = ()  # the reasons that reject
    checks: tuple[str, ...] = ()  # families a doubtful reason asks to look at
    findings: tuple = ()  # every reason with its confidence (analysis.Finding)
    # What a person set (or removed) and the sidecars kept: (("rating", "2"), ("label", ""))
    kept_by_person: tuple[tuple[str, str], ...] = ()
    # A person's verdict stands: postselectd's label and verdict keywords were withdrawn.
    overruled: bool = False
    unchanged: bool = False  # every sidecar already said this and was left untouched
    burst: int | None = None
    best_of_burst: bool = False
    faces: int = 0
    preview_source: str | None = None
    preview_size: tuple[int, int] | None = None  # the analysed preview's width, height
    notes: tuple[str, ...] = ()
    error: str | None = None
    # The error is the folder's, not the photo's: it waits for "space" or "write access".
    waits_for: str | None = None
    elapsed_ms: float = 0.0
    timings_ms: tuple[tuple[str, float], ...] = field(default=(), repr=False)
    # The folder's names sharing this photo's stem, as listed for its sidecar write (None:
    # not listed), so the daemon finds its JPEG without listing a card folder again.
    same_stem: tuple[str, ...] | None = field(default=None, repr=False)

    def as_json(self) -> dict:
        return {
            "path": str(self.path),
            "sidecar": [str(p) for p in self.sidecars],
            "rating": self.rating.stars if self.rating else None,
            "label": self.rating.label if self.rating else None,
            "verdict": self.rating.verdict if self.rating else None,
            "keywords": list(self.rating.keywords) if self.rating else [],
            "keeper_probability": self.keeper_probability,
            "reasons": list(self.reasons),
            "checks": list(self.checks),
            "findings": [
                {"reason": f.reason, "confidence": f.confidence, "detail": f.detail}
                for f in self.findings
            ],
            "faces": self.faces,
            "burst": self.burst,
            "best_of_burst": self.best_of_burst,
            "preview_size": list(self.preview_size) if self.preview_size else None,
            # No verdict: the preview is below rating.SMALLEST_JUDGED_PREVIEW.
            "preview_too_small": self.preview_too_small,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "error": self.error,
            # What the sidecar keeps of a person's instead of the above; null: removed.
            "kept_by_person": {what: value or None for what, value in self.kept_by_person},
            "overruled": self.overruled,
            "unchanged": self.unchanged,
        }

    @property
    def preview_too_small(self) -> bool:
        return PREVIEW_TOO_SMALL in self.checks

    @property
    def kept_human_rating(self) -> bool:
        return any(what == "rating" for what, _ in self.kept_by_person)


# --- a RAW+JPEG pair's second file ---------------------------------------------------


# A JPEG or TIFF written beside a raw of the same name (RAW+JPEG shooting).
_SECOND_FILES = frozenset({".jpg", ".jpeg", ".tif", ".tiff"})


def withdraw_second_truths(
    raw: Path, config: Config, siblings: Iterable[str] | None = None
) -> list[Path]:
    """DSC_0001.JPG rated before its raw DSC_0001.NEF arrived: once the raw is rated, the
    JPEG's verdict is not left behind as a second truth. The sidecars only the JPEG names
    (DSC_0001.JPG.xmp for darktable and digiKam) lose postselectd's verdict (a person's
    marks and every foreign property stay); a shared DSC_0001.xmp is the raw's already.
    Returns the siblings there are (whose journal rows the caller settles). ``siblings``:
    the names sharing the raw's stem, when the caller listed the folder already."""
    if raw.suffix.lower() not in rawmeta.RAW_SUFFIXES:
        return []
    profiles = list(config.sidecar.profiles)
    # By the photos.name_key rule, not byte for byte: on a card or a Mac that ignores case,
    # dsc_0001.xmp (the JPEG's name for it) is the DSC_0001.xmp the raw just wrote (an
    # exFAT card under FUSE even gives the two spellings two inode numbers).
    raw_sidecars = {name_key(sidecar_path(raw, p).name) for p in profiles}
    found: dict[tuple[int, int], Path] = {}  # one file, however a card spells its case
    # Named as the folder lists them: dsc_0001.jpg and a Mac's decomposed Cafe\u0301.JPG
    # pair with DSC_0001.NEF and Café.NEF (photos.name_key), and the JPEG's row is under that name.
    for name in same_stem_names(raw) if siblings is None else siblings:
        sibling = raw.parent / name
        if sibling.suffix.lower() not in _SECOND_FILES:
            continue
        try:
            st = sibling.stat()
        except OSError:
            continue
        found.setdefault((st.st_dev, st.st_ino), sibling)
    for sibling in found.values():
        for profile in profiles:
            own = sidecar_path(sibling, profile)
            # os.path.isfile: a sidecar that cannot be looked at (EIO, ESTALE) is left as
            # it is; Path.is_file would raise, after the raw's rating, and stop the daemon.
            if name_key(own.name) in raw_sidecars or not os.path.isfile(own):
                continue
            try:
                if withdraw(own, [profile], config.rating.keyword_parent):
                    log.info("%s: verdict withdrawn, %s is rated instead", own.name, raw.name)
            except SidecarError as exc:
                log.warning("%s: its verdict stays: %s", own.name, exc)
    return list(found.values())


# --- the worker side ----------------------------------------------------------------

_ANALYZER: Analyzer | None = None
_ANALYSIS_CONFIG: AnalysisConfig | None = None


def init_worker(config: AnalysisConfig) -> None:
    """Set up a worker process: its ONNX sessions (the pool quiets its stderr after)."""
    global _ANALYZER, _ANALYSIS_CONFIG
    _ANALYSIS_CONFIG = config
    _ANALYZER = Analyzer(config)


def worker_analyzer() -> tuple[Analyzer, AnalysisConfig]:
    """This process's one Analyzer and the config it was made with (``init_worker``'s, or
    the defaults), whichever worker body runs here: score's, or train's."""
    global _ANALYZER, _ANALYSIS_CONFIG
    if _ANALYSIS_CONFIG is None:
        _ANALYSIS_CONFIG = AnalysisConfig()
    if _ANALYZER is None:
        _ANALYZER = Analyzer(_ANALYSIS_CONFIG)
    return _ANALYZER, _ANALYSIS_CONFIG


def detail_of(preview: Preview) -> Callable[[float], Image.Image | None] | None:
    """``Analyzer.analyze``'s ``detail`` for a preview: its file's larger image, if any."""
    return None if preview.detail is None else functools.partial(load_detail, preview)


def analyze_file(
    path: Path, analyzer: Analyzer | None = None, config: AnalysisConfig | None = None
) -> Scored:
    """Preview + analysis of one file; never raises for a bad file."""
    if analyzer is None:
        analyzer, worker_config = worker_analyzer()
        config = config or worker_config
    config = config or _ANALYSIS_CONFIG or AnalysisConfig()
    start = time.perf_counter()
    try:
        preview = load_preview(path, min_size=config.preview_min_size)
    except PreviewError as exc:
        return Scored(
            path=path,
            analysis=None,
            error=str(exc),
            elapsed_ms=_ms(start),
            previews_cut=exc.previews_cut,
        )
    decoded = _ms(start)
    analysis = analyzer.analyze(preview.picture, detail_of(preview))
    return Scored(
        path=path,
        analysis=analysis,
        preview_source=preview.source,
        format_name=preview.format_name,
        camera=preview.camera,
        capture_time=preview.capture_time,
        preview_size=(preview.width, preview.height),
        notes=preview.notes,
        elapsed_ms=_ms(start),
        previews_cut=preview.previews_cut,
        timings_ms=(("preview", decoded),) + analysis.timings_ms,
    )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def work(path: Path) -> Scored:
    """One file in a worker process (the ``work`` of ``worker_body``)."""
    return analyze_file(Path(path))


def failed(path: Path, error: str) -> Scored:
    """A file the worker process could not analyse (the ``failed`` of ``worker_body``)."""
    return Scored(path=Path(path), analysis=None, error=error)


def worker_body(config: AnalysisConfig) -> WorkerBody:
    """What each process of a workers.WorkerPool runs: this module's ``init_worker`` with
    ``config``, then ``work`` for each file."""
    return WorkerBody(__name__, config)


# --- a worker's result as plain data (the journal's analysis cache) ------------------
# The journal keeps the analyses of content it has seen (a re-copy, a rename) as JSON of
# plain fields, never as pickles: reading a record builds only these classes, with
# numbers, strings and arrays of numbers, so whoever can write to the journal cannot make
# the daemon run code.
_RECORD_TYPES = {
    cls.__name__: cls for cls in (Scored, Analysis, Sharpness, Exposure, Face, Finding)
}


class RecordError(ValueError):
    """A cache record that is not one this version reads (it is analysed again)."""


def scored_record(scored: Scored) -> dict:
    """``scored`` as JSON-ready data; ``scored_from_record`` gives it back."""
    return _plain(scored)


def scored_from_record(record: object) -> Scored:
    try:
        scored = _unplain(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"not an analysis record ({exc})") from None
    if not isinstance(scored, Scored):
        raise RecordError("not an analysis record")
    return scored


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if _RECORD_TYPES.get(name) is not type(value):
            raise TypeError(f"a {name} is not kept in the analysis cache")
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__type__": name, **fields}
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {
            "__ndarray__": array.dtype.str,
            "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode("ascii"),
        }
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"a {type(value).__name__} is not kept in the analysis cache")


def _unplain(value: object) -> object:
    if isinstance(value, list):
        return tuple(_unplain(item) for item in value)
    if not isinstance(value, dict):
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise TypeError(type(value).__name__)
    if "__type__" in value:
        cls = _RECORD_TYPES[value["__type__"]]
        return cls(**{k: _unplain(v) for k, v in value.items() if k != "__type__"})
    if "__ndarray__" in value:
        dtype = np.dtype(value["__ndarray__"])
        if dtype.kind not in "biuf":  # numbers only: never objects
            raise ValueError(f"array of {dtype}")
        data = base64.b64decode(value["data"], validate=True)
        return np.frombuffer(data, dtype=dtype).reshape(value["shape"]).copy()
    if "__path__" in value:
        return Path(value["__path__"])
    if "__datetime__" in value:
        return datetime.fromisoformat(value["__datetime__"])
    raise ValueError(f"unknown record {sorted(value)[:3]}")


# --- the caller side -----------------------------------------------------------------


def sidecar_content(scored: Scored, rating: Rating, config: Config) -> SidecarContent:
    a = scored.analysis
    assert a is not None
    details = (
        ("SubjectSharpness", f"{a.sharpness.subject:.1f}"),
        ("OverallSharpness", f"{a.sharpness.overall:.1f}"),
        ("BlurDirectionality", f"{a.sharpness.anisotropy:.3f}"),
        ("MeanLuminance", f"{a.exposure.mean_luminance:.1f}"),
        ("ClippedHighlights", f"{a.exposure.clipped_highlights:.4f}"),
        ("CrushedShadows", f"{a.exposure.crushed_shadows:.4f}"),
        ("PreviewSource", scored.preview_source or ""),
        # In the upright preview's pixels (also what FaceBoxes are in).
        ("PreviewSize", f"{scored.preview_size[0]}x{scored.preview_size[1]}"),
        # The other classes as read with the faces: the keeper class is KeeperProbability,
        # and only there, so a sidecar never shows two keeper numbers.
        ("Probabilities", _other_classes(a)),
        ("Faces", str(len(a.faces))),
        # Every reason with its confidence, also those that only ask for a check or neither:
        # "eyes closed 2 of 24 (0.70); out of focus (0.12)".
        ("Findings", "; ".join(str(f) for f in a.findings) or "none"),
    )
    # None removes what an earlier rating wrote: a check answered, the faces of a frame
    # analysed anew, a burst the frame has left (BurstId, BurstSize: set by finish).
    details += (("Check", " ".join(rating.checks) or None),)
    details += (
        # Boxes in the upright preview's pixels (PreviewSize), for the report.
        ("FaceBoxes", "; ".join(",".join(str(round(v)) for v in f.box) for f in a.faces) or None),
        ("EyeOpenness", "; ".join(_openness(f) for f in a.faces) or None),
        ("FaceSharpness", "; ".join(f"{f.face_sharpness:.2f}" for f in a.faces) or None),
        ("BurstId", None),
        ("BurstSize", None),
    )
    return SidecarContent(
        stars=rating.stars,
        label=rating.label,
        keywords=rating.keywords,
        keyword_parent=config.rating.keyword_parent,
        keeper_probability=a.keeper_probability,
        reasons=rating.reasons,
        model_version=a.model_version,
        details=details,
        verdict=rating.verdict,
        facts=rating.burst_keywords,
    )


def _other_classes(a: Analysis) -> str:
    classes = a.judged_probabilities or a.class_probabilities  # or a record cached before
    return " ".join(f"{k}={v:.3f}" for k, v in classes if k != KEEPER)


def _openness(face) -> str:
    if face.left_eye_openness is None or face.right_eye_openness is None:
        return "-"
    return f"{face.left_eye_openness:.2f}/{face.right_eye_openness:.2f}"


def frame_of(scored: Scored, policy: RatingPolicy) -> Frame:
    """What burst grouping needs to know about an analysed file: a reason counts against
    it where the photographer's policy makes it a reject."""
    a = scored.analysis
    assert a is not None
    rejecting, _ = weigh(a.findings or a.reasons, policy)
    return Frame(
        key=scored.path,
        folder=str(scored.path.parent),
        capture_time=scored.capture_time,
        embedding=a.embedding,
        keeper_probability=a.keeper_probability,
        has_reason=bool(rejecting),
        name=scored.path.name,
        blinks=sum(f.count for f in a.findings if f.reason == EYES_CLOSED),
    )


def finish(
    scored: Scored,
    config: Config,
    *,
    burst: BurstInfo | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> FileResult:
    """Rating and sidecar for one analysed file (with its burst, once that is known)."""
    if scored.analysis is None:
        return FileResult(path=scored.path, error=scored.error, elapsed_ms=scored.elapsed_ms)
    a = scored.analysis
    rating = rate(
        a.keeper_probability,
        a.findings or a.reasons,
        config.rating,
        best_of_burst=bool(burst and burst.best_of_burst),
        burst_id=burst.burst_id if burst else None,
        preview_size=_known_size(scored),
    )
    content = sidecar_content(scored, rating, config)
    if burst:
        content = replace(
            content,
            details=tuple(d for d in content.details if d[0] not in ("BurstId", "BurstSize"))
            + (("BurstId", f"{burst.burst_id:04d}"), ("BurstSize", str(burst.size))),
        )
    # What the photo's result says whether or not its sidecar can be written.
    verdict = FileResult(
        path=scored.path,
        rating=rating,
        keeper_probability=a.keeper_probability,
        reasons=rating.reasons,
        checks=rating.checks,
        findings=a.findings,
        preview_source=scored.preview_source,
        preview_size=_known_size(scored),
        notes=scored.notes,
        elapsed_ms=scored.elapsed_ms,
    )
    start = time.perf_counter()
    # One listing of the folder for the whole write (a card folder: 2,000-6,000 names).
    try:
        listing: list[str] | None = os.listdir(scored.path.parent)
    except OSError:
        listing = None
    siblings = same_stem_names(scored.path, listing) if listing is not None else None
    profiles = sidecar_profiles_for(scored.path, config.sidecar.profiles, siblings)
    try:
        if not profiles:
            raise SidecarError(left_alone_reason(scored.path, config.sidecar.profiles, siblings))
        results = write_sidecars(
            scored.path,
            content,
            profiles,
            force=force,
            dry_run=dry_run,
            listing=listing,
        )
    except (SidecarError, OSError) as exc:
        # An OS error the sidecar module did not put in words is still this file's failure
        # (the next file's sidecar is written all the same), never the run's.
        return replace(verdict, error=_file_error(exc, scored.path), waits_for=_waits_for(exc))
    kept = tuple(dict.fromkeys(item for r in results for item in r.kept_by_person))
    return replace(
        verdict,
        sidecars=tuple(r.path for r in results),
        kept_by_person=kept,
        overruled=any(r.overruled for r in results),
        unchanged=not any(r.changed for r in results),
        faces=len(a.faces),
        burst=burst.burst_id if burst else None,
        best_of_burst=bool(burst and burst.best_of_burst),
        elapsed_ms=scored.elapsed_ms + _ms(start),
        timings_ms=scored.timings_ms + (("sidecar", _ms(start)),),
        same_stem=tuple(siblings) if siblings is not None else None,
    )


def _known_size(scored: Scored) -> tuple[int, int] | None:
    """The analysed preview's size; None for an analysis cached before it was recorded."""
    return scored.preview_size if any(scored.preview_size) else None


def judged(scored: Scored) -> bool:
    """Analysed from a preview large enough to judge (rating.SMALLEST_JUDGED_PREVIEW): only
    such frames take part in bursts, where a thumbnail's score would pick the wrong best."""
    size = _known_size(scored)
    return scored.analysis is not None and (size is None or max(size) >= SMALLEST_JUDGED_PREVIEW)


def _waits_for(exc: Exception) -> str | None:
    """What the photo's folder lacks, when a sidecar could not be written for its sake."""
    if isinstance(exc, SidecarError):
        return exc.waits_for
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "space"
    return None


def _file_error(exc: Exception, path: Path) -> str:
    if isinstance(exc, OSError):
        named = isinstance(exc.filename, str | bytes) and exc.filename
        where = Path(os.fsdecode(exc.filename)).name if named else path.name
        return f"{where}: {exc.strerror or exc}"
    return str(exc)


def capture_time_of(path: Path) -> datetime | None:
    """The capture time from the file's own EXIF (~0.2-0.4 ms), or None; a hint for the
    order of files, and for the daemon, which files on their way may join a burst."""
    try:
        return rawmeta.read_container(path).capture_time
    except Exception:  # noqa: BLE001 - the worker reports what is wrong with the file
        return None
