"""The stages wired together: preview -> analysis -> rating -> sidecar.

Decoding and inference run in worker processes (each with its own onnxruntime session,
one thread each: faster than one process with two threads, and a decoder crash takes
down only a worker). Rating and sidecar writing are cheap and run in the caller (in
``score``, one writer thread while the workers go on), so sidecar writes are serialized.
``postselectd score`` and the daemon drive this module.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import itertools
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from postselectd import rawmeta
from postselectd.analysis import KEEPER, Analysis, Analyzer
from postselectd.analysis.faces import Face
from postselectd.analysis.measure import Exposure, Sharpness
from postselectd.bursts import MAX_GAP_SECONDS, BurstInfo, Frame, group_bursts
from postselectd.config import AnalysisConfig, Config, RatingPolicy
from postselectd.dialects import names_shared_sidecar
from postselectd.photos import (
    has_raw_sibling,
    is_candidate,
    name_key,
    same_stem_names,
    shared_sidecar_owner,
    skip_linked_folder,
    stem_key,
)
from postselectd.preview import PreviewError, load_preview
from postselectd.rating import PREVIEW_TOO_SMALL, SMALLEST_JUDGED_PREVIEW, Rating, rate, weigh
from postselectd.reasons import EYES_CLOSED, Finding

if TYPE_CHECKING:
    from postselectd.workers import WorkerPool
from postselectd.sidecar import (
    SidecarContent,
    SidecarError,
    rated_with,
    sidecar_path,
    withdraw,
    write_sidecars,
)

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


# --- finding photos -------------------------------------------------------------------


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


def sidecar_profiles_for(
    path: Path, profiles: Iterable[str], siblings: list[str] | None = None
) -> list[str]:
    """The profiles this file writes: none whose DSC_0001.xmp belongs to a sibling."""
    profiles = list(profiles)
    if (
        any(names_shared_sidecar(p) for p in profiles)
        and shared_sidecar_owner(path, siblings) != path
    ):
        return [p for p in profiles if not names_shared_sidecar(p)]
    return profiles


def left_alone_reason(
    path: Path, profiles: Iterable[str], siblings: list[str] | None = None
) -> str | None:
    """Why this file writes no sidecar at all (every one it would write is a sibling's:
    DSC_0001.DNG beside DSC_0001.NEF under the lightroom profile), or None."""
    if sidecar_profiles_for(path, profiles, siblings):
        return None
    owner = shared_sidecar_owner(path, siblings)
    return (
        f"{path.name}: shares {owner.with_suffix('.xmp').name} with {owner.name}, "
        "which is rated instead; left alone"
    )


def find_photos(
    paths: Iterable[Path],
    profiles: Iterable[str] | None = None,
    passed_over: Counter[str] | None = None,
    videos: bool = False,
) -> Iterator[Path]:
    """Photos under the given files and folders, in name order.

    Symlinked folders are not followed (``skip_linked_folder``); a symlinked photo is,
    and its sidecar goes beside the link. With ``profiles``, a file whose every sidecar
    would be a sibling's (DSC_0001.DNG next to DSC_0001.NEF with the lightroom profile)
    is not listed. ``passed_over`` counts, by suffix (".gif"), the pictures and videos
    found in the folders that are not a type postselectd rates
    (rawmeta.UNRATED_IMAGE_SUFFIXES, rawmeta.VIDEO_SUFFIXES).

    ``videos``: list video files too, so that ``score`` can name each as not a photo
    (the preview stage says so from its bytes), except a Live Photo's motion half
    (IMG_0001.MOV beside IMG_0001.HEIC), which goes with its photo.
    """
    profiles = list(profiles) if profiles is not None else None
    paths = [Path(p) for p in paths]
    seen: set[tuple[int, int]] = set()  # a folder given twice (A and A/sub) is listed once
    for root in paths:
        if root.is_file():
            yield root
            continue
        for folder, dirs, files in os.walk(root):
            try:
                st = os.stat(folder)
            except OSError:
                dirs[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
            for name in linked:
                if not name.startswith("."):
                    skip_linked_folder(Path(folder) / name, paths)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
            by_stem: dict[str, list[str]] = {}
            for name in files:
                by_stem.setdefault(stem_key(name), []).append(name)
            for name in sorted(files):
                path = Path(folder) / name
                siblings = by_stem[stem_key(name)]
                if not is_candidate(path):
                    suffix = path.suffix.lower()
                    if name.startswith("."):
                        continue
                    if suffix in rawmeta.VIDEO_SUFFIXES and not _motion_of_a_photo(path, siblings):
                        if videos:
                            yield path
                        elif passed_over is not None:
                            passed_over[suffix] += 1
                    elif passed_over is not None and suffix in rawmeta.UNRATED_IMAGE_SUFFIXES:
                        passed_over[suffix] += 1
                    continue
                if has_raw_sibling(path, siblings):
                    continue
                if profiles is not None and not sidecar_profiles_for(path, profiles, siblings):
                    continue
                yield path


def _motion_of_a_photo(video: Path, siblings: list[str]) -> bool:
    """IMG_0001.MOV beside IMG_0001.HEIC (or .JPG): the moving half of a Live Photo."""
    return any(n != video.name and is_candidate(video.parent / n) for n in siblings)


# --- the worker side ----------------------------------------------------------------

_ANALYZER: Analyzer | None = None
_ANALYSIS_CONFIG: AnalysisConfig | None = None


def _init_worker(config: AnalysisConfig) -> None:
    """Set up a worker process: its ONNX sessions, and silence for the C decoders.

    LibRaw and libjpeg print their complaints about damaged files ("Premature end of
    JPEG file") straight to file descriptor 2, which would put stray lines between the
    daemon's one-line-per-file log. A worker reports everything it has to say through its
    results, so its stderr goes to /dev/null once the models have loaded.
    """
    global _ANALYZER, _ANALYSIS_CONFIG
    _ANALYSIS_CONFIG = config
    _ANALYZER = Analyzer(config)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def analyze_file(
    path: Path, analyzer: Analyzer | None = None, config: AnalysisConfig | None = None
) -> Scored:
    """Preview + analysis of one file; never raises for a bad file."""
    global _ANALYZER
    config = config or _ANALYSIS_CONFIG or AnalysisConfig()
    if analyzer is None:
        if _ANALYZER is None:
            _ANALYZER = Analyzer(config)
        analyzer = _ANALYZER
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
    analysis = analyzer.analyze(preview.picture)
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
        return FileResult(
            path=scored.path,
            rating=rating,
            keeper_probability=a.keeper_probability,
            reasons=rating.reasons,
            checks=rating.checks,
            findings=a.findings,
            preview_source=scored.preview_source,
            preview_size=_known_size(scored),
            notes=scored.notes,
            error=_file_error(exc, scored.path),
            waits_for=_waits_for(exc),
            elapsed_ms=scored.elapsed_ms,
        )
    kept = tuple(dict.fromkeys(item for r in results for item in r.kept_by_person))
    return FileResult(
        path=scored.path,
        sidecars=tuple(r.path for r in results),
        rating=rating,
        keeper_probability=a.keeper_probability,
        reasons=rating.reasons,
        checks=rating.checks,
        findings=a.findings,
        kept_by_person=kept,
        overruled=any(r.overruled for r in results),
        unchanged=not any(r.changed for r in results),
        faces=len(a.faces),
        burst=burst.burst_id if burst else None,
        best_of_burst=bool(burst and burst.best_of_burst),
        preview_source=scored.preview_source,
        preview_size=_known_size(scored),
        notes=scored.notes,
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


def _order_key(path: Path, capture_time: datetime | None) -> tuple:
    """Folder, then capture time (unknown first), then name: the order files are rated in."""
    return (str(path.parent), capture_time or datetime.min, path.name)


def _capture_order(scored: Scored) -> tuple:
    return _order_key(scored.path, scored.capture_time)


def capture_time_of(path: Path) -> datetime | None:
    """The capture time from the file's own EXIF (~0.2-0.4 ms), or None; a hint for the
    order of files, and for the daemon, which files on their way may join a burst."""
    try:
        return rawmeta.read_container(path).capture_time
    except Exception:  # noqa: BLE001 - the worker reports what is wrong with the file
        return None


class _Runs:
    """The files of a ``score`` call in capture order, cut into runs that bursts cannot
    cross: consecutive frames of a folder more than MAX_GAP_SECONDS apart (or without a
    capture time) are never in one burst, so each run can be judged on its own."""

    def __init__(self, paths: list[Path]) -> None:
        times = {path: capture_time_of(path) for path in paths}
        self.order = sorted(paths, key=lambda p: _order_key(p, times[p]))
        self._run_of: dict[Path, int] = {}
        self._left: dict[int, int] = {}
        self._members: dict[int, list[Scored]] = {}
        previous: Path | None = None
        run = -1
        for path in self.order:
            when = times[path]
            joins = (
                previous is not None
                and when is not None
                and times[previous] is not None
                and previous.parent == path.parent
                and (when - times[previous]).total_seconds() <= MAX_GAP_SECONDS
            )
            if not joins:
                run += 1
            self._run_of[path] = run
            self._left[run] = self._left.get(run, 0) + 1
            previous = path

    def run_of(self, path: Path) -> int:
        return self._run_of[path]

    def add(self, scored: Scored) -> list[Scored] | None:
        """Record one analysed file; returns its run once the run is complete."""
        run = self._run_of.get(scored.path)
        if run is None:
            return [scored]
        self._members.setdefault(run, []).append(scored)
        self._left[run] -= 1
        if self._left[run] > 0:
            return None
        del self._left[run]
        return self._members.pop(run)

    def rest(self) -> list[list[Scored]]:
        """Runs that never completed (only if a file was never reported back)."""
        rest = list(self._members.values())
        self._members.clear()
        return rest


def leave_rated(
    paths: Iterable[Path], config: Config, model_version: str
) -> tuple[list[Path], list[Path]]:
    """(to rate, already rated): the photos whose every sidecar holds a verdict by
    ``model_version`` are left alone, so a run that was stopped (Ctrl-C, a lost machine,
    a killed process) finishes when it is run again. Whole runs of ``_Runs`` at a time: a
    burst that was only partly written when it stopped is analysed again whole, so its
    frames are judged together, and the frames written already are left untouched (their
    sidecars say it all already: ``write_sidecar`` does not rewrite them)."""
    paths = list(paths)
    runs = _Runs(paths)
    members: dict[int, list[Path]] = {}
    for path in runs.order:
        members.setdefault(runs.run_of(path), []).append(path)
    to_rate: list[Path] = []
    rated: list[Path] = []
    for run in members.values():
        done = all(
            rated_with(path, sidecar_profiles_for(path, config.sidecar.profiles), model_version)
            for path in run
        )
        (rated if done else to_rate).extend(run)
    return to_rate, rated


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class PipelineError(Exception):
    """The run cannot go on (the workers cannot load the models); str() says why."""


class Pipeline:
    """Scores files with a pool of worker processes; rating and sidecars in this process."""

    def __init__(
        self,
        config: Config,
        *,
        workers: int | None = None,
        force: bool = False,
        dry_run: bool = False,
        task_timeout: float | None = None,
        worker_target: Callable | None = None,
        analyze_on: AnalyzeFiles | None = None,
    ):
        self.config = config
        self.workers = workers or default_workers()
        self.force = force
        self.dry_run = dry_run
        self.task_timeout = task_timeout
        self.worker_target = worker_target  # tests inject crashing/hanging workers
        # Where the files are analysed: this machine's worker processes (``analyze``), or
        # a Dask cluster's (cluster.ClusterAnalysis). Everything else is the same.
        self.analyze_on = analyze_on

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def score(
        self,
        paths: Iterable[Path],
        on_result: Callable[[FileResult], None] | None = None,
        on_analyzed: Callable[[Scored], None] | None = None,
    ) -> list[FileResult]:
        """Analyse every path, group bursts, rate and write sidecars; results in capture order.

        Sidecars are written while the workers go on with later files: a burst never has
        more than MAX_GAP_SECONDS between consecutive frames of a folder, so the capture
        times (read from each file's own EXIF, ~0.2-0.4 ms a file, before the workers are
        started) split the files into runs that are judged independently. A run is rated and
        written by a writer thread as soon as its last frame is analysed, and the files are
        analysed in capture order, so runs complete one after another.
        """
        paths = list(paths)
        runs = _Runs(paths)
        callbacks = threading.Lock()  # progress and per-file output: one at a time
        results: list[tuple[tuple, FileResult]] = []
        ready: queue.Queue = queue.Queue()
        failure: list[BaseException] = []
        used_ids: dict[str, set[int]] = {}  # burst numbers given, per folder

        def write() -> None:
            while (run := ready.get()) is not None:
                if failure:
                    continue  # drain after an error; the caller re-raises it
                try:
                    bursts = group_bursts(
                        (frame_of(s, self.config.rating) for s in run if judged(s)),
                        used_ids=used_ids,
                    )
                    for item in sorted(run, key=_capture_order):
                        result = finish(
                            item,
                            self.config,
                            burst=bursts.get(item.path),
                            force=self.force,
                            dry_run=self.dry_run,
                        )
                        results.append((_capture_order(item), result))
                        if on_result:
                            with callbacks:
                                on_result(result)
                except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                    failure.append(exc)

        def analysed(scored: Scored) -> None:
            if failure:
                # Writing failed (stdout closed under `score --json | head`): no point in
                # analysing the rest; the caller gets the writer's exception.
                raise failure[0]
            if on_analyzed:
                with callbacks:
                    on_analyzed(scored)
            run = runs.add(scored)
            if run is not None:
                ready.put(run)

        writer = threading.Thread(target=write, name="sidecars", daemon=True)
        writer.start()
        try:
            (self.analyze_on or self.analyze)(runs.order, analysed)
            for run in runs.rest():
                ready.put(run)
        finally:
            ready.put(None)
            writer.join()
        if failure:
            raise failure[0]
        results.sort(key=lambda pair: pair[0])
        return [result for _, result in results]

    def analyze(
        self, paths: Iterable[Path], on_analyzed: Callable[[Scored], None] | None = None
    ) -> list[Scored]:
        """Preview + analysis of every path in this machine's worker processes, in
        completion order (``PoolAnalysis``; its processes are stopped at the end)."""
        with PoolAnalysis(
            self.config.analysis,
            self.workers,
            task_timeout=self.task_timeout,
            worker_target=self.worker_target,
        ) as pool:
            return pool.analyze(paths, on_analyzed)


# Where ``Pipeline.score`` has its files analysed: (paths in capture order, a callback for
# each analysed file) -> every file's Scored. ``Pipeline.analyze`` or a ClusterAnalysis.
AnalyzeFiles = Callable[[Iterable[Path], Callable[[Scored], None] | None], list[Scored]]


class PoolAnalysis:
    """Preview + analysis in worker processes (workers.WorkerPool): what ``score`` runs on
    this machine, and what each Dask worker of ``score --cluster`` runs for its tasks.

    Each worker process holds one file, so a decoder that crashes, hangs past
    TASK_TIMEOUT_SECONDS or balloons in memory costs only that file. The processes start
    with the first ``analyze`` (no more than it has files) and live until ``close``, so
    the models load once however many calls follow.
    """

    def __init__(
        self,
        config: AnalysisConfig,
        workers: int,
        *,
        task_timeout: float | None = None,
        worker_target: Callable | None = None,
        started: tuple[WorkerPool, queue.Queue] | None = None,
    ):
        self.config = config
        self.workers = workers
        self.task_timeout = task_timeout
        self.worker_target = worker_target
        # ``started``: a pool of one the caller started before it had this module and the
        # files (``score`` does: the worker loads the models meanwhile), with its inbox;
        # the first ``start`` grows it to as many workers as the files need.
        self._pool, self._inbox = started or (None, queue.Queue())
        self._grow = started is not None
        self._jobs = itertools.count()

    def __enter__(self) -> PoolAnalysis:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, files: int | None = None) -> None:
        """Start the worker processes (they load the models meanwhile), if not yet."""
        from postselectd import workers

        size = self.workers if files is None else max(1, min(self.workers, files))
        if self._pool is None:
            self._pool = workers.WorkerPool(
                size, self.config, self._inbox.put, target=self.worker_target
            )
        elif self._grow:
            self._pool.grow(size)
        self._grow = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def analyze(
        self, paths: Iterable[Path], on_analyzed: Callable[[Scored], None] | None = None
    ) -> list[Scored]:
        """Preview + analysis of every path, in completion order; never raises for a bad
        file. PipelineError: the worker processes cannot load the models."""
        from postselectd import workers

        pending = [(next(self._jobs), path) for path in paths]
        pending.reverse()
        if not pending:
            return []
        self.start(len(pending))
        pool = self._pool
        inbox = self._inbox
        timeout = self.task_timeout or workers.TASK_TIMEOUT_SECONDS
        jobs: dict[int, Path] = {}
        stopped: dict[int, str] = {}
        analysed: list[Scored] = []

        def done(scored: Scored) -> None:
            analysed.append(scored)
            if on_analyzed:
                on_analyzed(scored)

        try:
            while pending or jobs:
                while pending and pool.submit(pending[-1][0], pending[-1][1]):
                    job, path = pending.pop()
                    jobs[job] = path
                try:
                    message = inbox.get(timeout=1.0)
                except queue.Empty:
                    message = None
                for job in pool.kill_stuck(timeout):
                    stopped[job] = f"analysis took longer than {timeout:.0f} s; stopped"
                for job in pool.kill_bloated():
                    if job is not None:
                        stopped[job] = "decoding it needed too much memory; stopped"
                if isinstance(message, workers.Analysed) and message.job in jobs:
                    del jobs[message.job]
                    done(message.scored)
                elif isinstance(message, workers.WorkerDied) and message.job in jobs:
                    path = jobs.pop(message.job)
                    reason = stopped.pop(
                        message.job,
                        f"the decoder crashed on this file (worker exit status {message.exitcode})",
                    )
                    done(Scored(path=path, analysis=None, error=reason))
                elif isinstance(message, workers.WorkerReady) and message.error:
                    raise PipelineError(f"worker cannot start: {message.error}")
        except BaseException:
            # Whatever stops a call midway (models that do not load, an interrupt), the
            # files it left in the workers' hands must not answer the next call.
            self.close()
            raise
        return analysed
