"""``postselectd report``: the contact sheet of a shoot, as one static HTML page.

Photographers judge with their eyes. The page shows what postselectd left behind — the
sidecars (stars, label, keywords and the ``postselect:`` numbers) and, when the daemon ran,
its journal (failures, time per frame) — as a grid of thumbnails a photographer reads at a
glance, before opening the editor or to show a client why a frame went.

Nothing is analysed again: the sidecar is the truth, as the editor will see it (a rating
a person changed shows as theirs). Thumbnails come from the raws' embedded previews
(``preview.load_preview``), made in worker processes; they go into a folder beside the
page (the default: a 3,000-frame shoot stays light, thumbnails load lazily) or into the
page itself as data: URIs (``embed``: one file to send).

The page needs no server, no network and no script to be read: without JavaScript it is
a plain grid whose frames open (CSS ``:target``) into a larger view with the numbers;
with it, filters and keyboard navigation come on. Styles and script are package files
(``report.css``, ``report.js``), inlined and pinned by hash in the page's CSP, so the
page cannot load anything from anywhere even if a file name tried to inject markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import os
import queue
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from PIL import Image

from postselectd.dialects import (
    COLORS,
    DIALECTS,
    DIGIKAM_COLORS,
    NS_PREFIX,
    OVERRULED,
    PHOTOMECHANIC_CLASSES,
    REJECT,
    SELECT,
    color_of,
    set_by_person,
    sidecar_names,
)
from postselectd.photos import name_key, stem_key
from postselectd.preview import PreviewError, load_preview
from postselectd.rating import BEST_OF_BURST, CHECK
from postselectd.sidecar import read_sidecar
from postselectd.workers import Lost, WorkerBody, WorkerPool

log = logging.getLogger(__name__)

THUMB_SIZE = 320  # long side; shown at ~200 CSS px, so sharp on 1.5x screens
# The larger view: the cheapest embedded preview decode of at least LARGE_MIN (a D7100's
# 1620x1080 decoded at half size in the DCT: 810x540), at most LARGE_MAX. Decoding the
# 1620 one in full and shrinking it to 1024 costs 2.4x the CPU per frame (29 vs 12 ms,
# bench/report_speed.py), which would miss a minute for 3,000 frames on 2 cores.
LARGE_MIN = 768
LARGE_MAX = 1024
THUMB_QUALITY = 72
LARGE_QUALITY = 78
# Beyond this many frames an embedded page gets heavy (~110 KB per frame); say so.
EMBED_WARN_FRAMES = 500

_NS = f"Xmp.{NS_PREFIX}."
_IMAGE_NAME = re.compile(r"^\d{5}\.jpg$")


# --- what a sidecar says -------------------------------------------------------------


@dataclass(frozen=True)
class FaceNumbers:
    box: tuple[float, float, float, float] | None  # x, y, w, h in the preview's pixels
    eye_openness: str  # "0.30/0.31" (left/right) or "-" (eyes not measured)
    sharpness: str


@dataclass(frozen=True)
class Verdict:
    """What the sidecar of one photo says, as the editor will show it."""

    rated: bool  # postselectd's numbers or keywords are there
    stars: int | None  # xmp:Rating (-1: rejected in Lightroom), None: no rating
    label: str | None
    color: str | None  # red, yellow, green, blue, purple (for the dot), None
    verdict: str  # "select", "reject" or "" (kept, undecided)
    keeper_probability: float | None = None
    reasons: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()  # what a doubtful reason asks to look at: "exposure"
    burst_id: str | None = None
    burst_size: int | None = None
    best_of_burst: bool = False
    rating_by_person: bool = False  # xmp:Rating is not what postselectd wrote (or removed)
    # A person set the rating, label or pick: theirs is the verdict, postselectd's (and its
    # reasons) only numbers, whether or not it has rated the frame again since.
    overruled: bool = False
    faces: tuple[FaceNumbers, ...] = ()
    preview_size: tuple[int, int] | None = None
    numbers: tuple[tuple[str, str], ...] = ()  # (what, value) rows for the larger view
    rated_at: str | None = None


NOT_RATED = Verdict(rated=False, stars=None, label=None, color=None, verdict="")


def verdict_from_sidecar(xmp: Mapping[str, object], keyword_parent: str = "PostSelect") -> Verdict:
    """Read stars, label, verdict and the numbers behind it from a sidecar's properties.

    The verdict is postselectd's keyword (``PostSelect|reject``); a rating of -1
    (Lightroom's "rejected", whoever set it) also counts as a reject. Where a person set
    the rating, label or pick (``set_by_person``, the rule the sidecar writer keeps),
    their verdict wins: postselectd's keywords and reasons no longer count.
    """
    ours = {
        k.split("|", 1)[1]
        for k in _strings(xmp.get("Xmp.lr.hierarchicalSubject"))
        if k.startswith(keyword_parent + "|")
    } | {
        k.split("/", 1)[1]
        for k in _strings(xmp.get("Xmp.digiKam.TagsList"))
        if k.startswith(keyword_parent + "/")
    }
    stars = _int(xmp.get("Xmp.xmp.Rating"))
    label = _text(xmp.get("Xmp.xmp.Label"))
    color = color_of(label) or _color_from_numbers(xmp)
    if label is None and color:
        label = color.capitalize()
    keeper = _float(xmp.get(_NS + "KeeperProbability"))
    reasons = tuple(_strings(xmp.get(_NS + "Reasons")))
    rated = keeper is not None or bool(ours)
    person = set_by_person(xmp)
    overruled = rated and (person.any or OVERRULED in ours)
    judged = reasons  # postselectd's, shown among the numbers either way
    if overruled:
        ours, reasons = ours & {BEST_OF_BURST}, ()
    checks = tuple(sorted(k.split("|", 1)[1] for k in ours if k.startswith(CHECK + "|")))
    if REJECT in ours or stars == -1:
        verdict = REJECT
    elif SELECT in ours:
        verdict = SELECT
    else:
        verdict = ""
    preview_size = _size(xmp.get(_NS + "PreviewSize"))
    faces = _faces(xmp)
    return Verdict(
        rated=rated,
        stars=stars,
        label=label,
        color=color,
        verdict=verdict,
        keeper_probability=keeper,
        reasons=reasons,
        checks=checks,
        burst_id=_text(xmp.get(_NS + "BurstId")),
        burst_size=_int(xmp.get(_NS + "BurstSize")),
        best_of_burst=BEST_OF_BURST in ours,
        rating_by_person=rated and person.rating is not None,
        overruled=overruled,
        faces=faces,
        preview_size=preview_size,
        numbers=_numbers(xmp, keeper, judged, overruled),
        rated_at=_text(xmp.get(_NS + "RatedAt")),
    )


def _color_from_numbers(xmp: Mapping[str, object]) -> str | None:
    """The color of a sidecar with no xmp:Label (the digiKam profile writes numbers only;
    Photo Mechanic may write only its color class)."""
    found = _numbered(xmp.get("Xmp.digiKam.ColorLabel"), DIGIKAM_COLORS)
    if found:
        return found
    for value in _strings(xmp.get("Xmp.darktable.colorlabels")):
        if value.isdigit() and int(value) < len(COLORS):
            return COLORS[int(value)]
    return _numbered(xmp.get("Xmp.photomechanic.ColorClass"), PHOTOMECHANIC_CLASSES)


def _numbered(value: object, colors: Mapping[int, str]) -> str | None:
    text = _text(value) or ""
    return colors.get(int(text)) if text.isdigit() else None


def _numbers(
    xmp: Mapping[str, object], keeper: float | None, reasons: tuple[str, ...], overruled: bool
) -> tuple[tuple[str, str], ...]:
    def get(name: str) -> str | None:
        return _text(xmp.get(_NS + name))

    rows: list[tuple[str, str]] = []
    if keeper is not None:
        rows.append(("Keeper probability", f"{keeper:.2f}"))
    rows.append(("Reasons", (", ".join(reasons) or "none") + (" (overruled)" if overruled else "")))
    # The keeper probability is the row above, whatever the verdict; a sidecar written
    # before #20 also has the head's keeper class here, which is not shown beside it.
    parts = re.findall(r"([^=]+?)=([0-9.]+)\s*", get("Probabilities") or "")
    parts = [(k.strip(), v) for k, v in parts if k.strip() != "keeper"]
    if parts:
        rows.append(("Class probabilities", "\n".join(f"{k} {v}" for k, v in parts)))
    if get("SubjectSharpness"):
        text = get("SubjectSharpness") or ""
        if get("OverallSharpness"):
            text += f" (whole frame {get('OverallSharpness')})"
        rows.append(("Subject sharpness", text))
    if get("BlurDirectionality"):
        rows.append(("Blur direction", f"{get('BlurDirectionality')} (1 = all one way: motion)"))
    if get("MeanLuminance"):
        rows.append(("Mean luminance", f"{get('MeanLuminance')} of 255"))
    for name, what in (
        ("ClippedHighlights", "Clipped highlights"),
        ("CrushedShadows", "Crushed shadows"),
    ):
        value = _float(xmp.get(_NS + name))
        if value is not None:
            rows.append((what, f"{value * 100:.2f} % of pixels"))
    if get("Faces") is not None:
        rows.append(("Faces", get("Faces") or "0"))
    if get("PreviewSource"):
        rows.append(("Judged on", get("PreviewSource") or ""))
    if get("ModelVersion"):
        rows.append(("Model", get("ModelVersion") or ""))
    rated_at = _parse_time(get("RatedAt"))
    if rated_at:
        rows.append(("Rated at", rated_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()))
    return tuple(rows)


def _faces(xmp: Mapping[str, object]) -> tuple[FaceNumbers, ...]:
    boxes = _split(xmp.get(_NS + "FaceBoxes"))
    eyes = _split(xmp.get(_NS + "EyeOpenness"))
    sharpness = _split(xmp.get(_NS + "FaceSharpness"))
    count = max(len(boxes), len(eyes), len(sharpness))
    faces = []
    for i in range(count):
        box = None
        if i < len(boxes):
            try:
                x, y, w, h = (float(v) for v in boxes[i].split(","))
                box = (x, y, w, h)
            except ValueError:
                box = None
        faces.append(
            FaceNumbers(
                box=box,
                eye_openness=eyes[i] if i < len(eyes) else "-",
                sharpness=sharpness[i] if i < len(sharpness) else "-",
            )
        )
    return tuple(faces)


def _split(value: object) -> list[str]:
    text = _text(value)
    return [part.strip() for part in text.split(";")] if text else []


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # a lang-alt: {'lang="x-default"': text}
        value = next(iter(value.values()), None)
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if str(v)]
    return [str(value)] if str(value) else []


def _int(value: object) -> int | None:
    text = _text(value)
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def _float(value: object) -> float | None:
    text = _text(value)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _size(value: object) -> tuple[int, int] | None:
    text = _text(value) or ""
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


# --- one frame: sidecar + thumbnails (in a worker process) ------------------------------


@dataclass(frozen=True)
class Picture:
    """One image of a frame on the page: a file beside the page or embedded bytes."""

    width: int
    height: int
    src: str = ""  # relative URL, or "" while the bytes still need embedding
    data: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Frame:
    """Everything the page shows about one photo."""

    index: int
    path: Path
    verdict: Verdict
    capture_time: datetime | None = None
    camera: str | None = None
    sidecar: Path | None = None
    thumb: Picture | None = None
    large: Picture | None = None
    problem: str | None = None  # why there is no verdict or no picture
    journal_status: str | None = None  # the daemon's: rated, failed, pending, skipped
    elapsed_ms: float | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_reject(self) -> bool:
        return self.verdict.verdict == REJECT

    @property
    def is_select(self) -> bool:
        return self.verdict.verdict == SELECT


@dataclass(frozen=True)
class FrameJob:
    index: int
    path: Path
    sidecars: tuple[Path, ...]  # where its sidecar may be, in the order to try
    keyword_parent: str
    images_dir: Path | None  # None: return the JPEG bytes to embed


def frame_of(job: FrameJob) -> Frame:
    """Sidecar and thumbnails of one photo; never raises for a bad file."""
    frame = _sidecar_frame(job)
    try:
        preview = load_preview(job.path, min_size=LARGE_MIN)
    except PreviewError as exc:
        return replace(frame, problem=frame.problem or f"no preview: {exc}")
    large = _fit(preview.picture, LARGE_MAX)
    thumb = _fit(large, THUMB_SIZE)  # the same pixels as the larger view, face boxes and all
    pictures = []
    for kind, picture, quality in (
        ("thumb", thumb, THUMB_QUALITY),
        ("large", large, LARGE_QUALITY),
    ):
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality)
        data = buffer.getvalue()
        if job.images_dir is None:
            pictures.append(Picture(picture.width, picture.height, data=data))
            continue
        name = f"{job.index:05d}.jpg"
        (job.images_dir / kind / name).write_bytes(data)
        src = f"{job.images_dir.name}/{kind}/{name}"
        pictures.append(Picture(picture.width, picture.height, src=src))
    return replace(
        frame,
        thumb=pictures[0],
        large=pictures[1],
        capture_time=preview.capture_time,
        camera=preview.camera,
    )


def _sidecar_frame(job: FrameJob) -> Frame:
    """The frame with what its sidecar says, no pictures yet."""
    verdict, sidecar, problem = NOT_RATED, None, None
    for candidate in job.sidecars:
        try:
            xmp = read_sidecar(candidate)
        except Exception as exc:  # SidecarError, or pyexiv2's plain RuntimeError
            problem = f"{candidate.name}: {exc}"
            continue
        if xmp:
            verdict, sidecar, problem = (
                verdict_from_sidecar(xmp, job.keyword_parent),
                candidate,
                None,
            )
            break
    return Frame(index=job.index, path=job.path, verdict=verdict, sidecar=sidecar, problem=problem)


# The worker body (workers.WorkerBody) of the report's pool: a worker process makes one
# frame at a time, so a decoder that crashes or hangs on a photo costs that photo's card
# its thumbnail, not the whole page.


def init_worker(args: object) -> None:
    """Nothing to load: a frame needs no model, and the pool's worker already reuses
    freed memory (workers.reuse_freed_memory), which matters for the thumbnail buffers."""


def work(job: FrameJob) -> Frame:
    return frame_of(job)


def failed(job: FrameJob, error: str) -> Frame:
    """A photo ``frame_of`` raised on (a bug, or more memory than a worker may have): its
    card keeps what the sidecar says, if it can be read, with the reason for no picture."""
    try:
        frame = _sidecar_frame(job)
    except Exception:  # what raised may have been the sidecar's reading itself
        frame = Frame(index=job.index, path=job.path, verdict=NOT_RATED)
    return replace(frame, problem=error)


def lost_frame(job: FrameJob, lost: Lost) -> Frame:
    """A photo whose worker died on it. Its sidecar is not read again here, in the
    report's own process: the crash may have been exiv2's on that very sidecar."""
    return Frame(index=job.index, path=job.path, verdict=NOT_RATED, problem=lost.reason)


def _fit(image: Image.Image, size: int) -> Image.Image:
    """Downscale so the long side is ``size``. BOX (area average) is the right filter for a
    shrink, and 3x faster than bicubic."""
    width, height = image.size
    scale = size / max(width, height)
    if scale >= 1:
        return image
    return image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX
    )


# --- the whole shoot -------------------------------------------------------------------


def photos_to_show(paths: Iterable[Path], profiles: Sequence[str]) -> list[Path]:
    """The photos ``score`` rates under ``paths``, in name order.

    ``find_photos(paths, profiles)`` lists the folder again for every file to find
    same-name siblings (43 s for a 3,000-frame folder); only files that share a name
    (DSC_0001.NEF + DSC_0001.DNG) need that check, so only they get it.
    """
    # Here, not at the top: the pipeline loads onnxruntime, which workers do not need.
    from postselectd.photos import find_photos, sidecar_profiles_for

    photos = list(find_photos(paths))
    stems = Counter((p.parent, stem_key(p.name)) for p in photos)
    return [
        p
        for p in photos
        if stems[(p.parent, stem_key(p.name))] == 1 or sidecar_profiles_for(p, profiles)
    ]


@dataclass(frozen=True)
class JournalEntry:
    """What the daemon's journal says about a file (``state.Row``, the parts shown)."""

    status: str
    reason: str | None
    elapsed_ms: float | None


@dataclass(frozen=True)
class Report:
    output: Path
    frames: tuple[Frame, ...]
    images_dir: Path | None
    seconds: float
    bytes_written: int


def images_dir_for(output: Path, inside: Iterable[Path]) -> Path:
    """The folder beside the page for its thumbnails: ``NAME_files``, or ``.NAME_files``
    inside a shoot or watched folder, so that neither ``score``, the daemon nor the next
    report takes the thumbnails for photos (they skip hidden folders)."""
    name = output.stem + "_files"
    parent = output.parent.resolve()
    for folder in inside:
        try:
            parent.relative_to(Path(folder).expanduser().resolve())
        except (ValueError, OSError):
            continue
        return parent / ("." + name)
    return parent / name


def build_report(
    paths: Sequence[Path],
    output: Path,
    *,
    photos: Sequence[Path],
    profiles: Sequence[str] = ("lightroom",),
    keyword_parent: str = "PostSelect",
    journal: Mapping[Path, JournalEntry] | None = None,
    embed: bool = False,
    workers: int = 1,
    keep_out_of: Iterable[Path] = (),
    title: str | None = None,
    on_frame: Callable[[Frame], None] | None = None,
    worker_target: Callable | None = None,
) -> Report:
    """Write the page for ``photos`` (found under ``paths``) to ``output``.

    ``keep_out_of``: folders whose contents are photos to someone (watched folders);
    thumbnails never go there under a visible name. ``worker_target``: for tests that
    inject a crashing worker.
    """
    started = time.perf_counter()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    images_dir = None
    if not embed:
        images_dir = images_dir_for(output, [*paths, *keep_out_of])
        for kind in ("thumb", "large"):
            (images_dir / kind).mkdir(parents=True, exist_ok=True)
            for old in (images_dir / kind).iterdir():  # only our own numbered images
                if _IMAGE_NAME.match(old.name):
                    old.unlink()
    elif len(photos) > EMBED_WARN_FRAMES:
        log.warning(
            "embedding %d frames makes a page of ~%d MB; without --embed the thumbnails go "
            "into a folder beside it and load as you scroll",
            len(photos),
            len(photos) * 110 // 1000,
        )
    skip = images_dir.resolve() if images_dir else None
    photos = [p for p in photos if skip is None or skip not in Path(p).resolve().parents]
    listings: dict[Path, dict[str, str]] = {}
    for photo in photos:
        folder = Path(photo).parent
        if folder not in listings:
            listings[folder] = _folder_listing(folder)
    jobs = [
        FrameJob(
            index=i,
            path=Path(photo),
            sidecars=tuple(
                _sidecar_candidates(Path(photo), profiles, listings[Path(photo).parent])
            ),
            keyword_parent=keyword_parent,
            images_dir=images_dir,
        )
        for i, photo in enumerate(photos, 1)
    ]
    frames = []
    for frame in _run(jobs, workers, worker_target):
        frames.append(_with_journal(frame, journal))
        if on_frame:
            on_frame(frame)
    # The workers finish in any order; the photos' own order first, as before, so that
    # frames sort_frames cannot tell apart keep it.
    frames = sort_frames(sorted(frames, key=lambda f: f.index))
    if embed:
        frames = [_embedded(f) for f in frames]
    page = render_page(
        frames,
        title=title or _title(paths),
        roots=[Path(p) for p in paths],
        seconds=time.perf_counter() - started,
    )
    # A file name that is not valid UTF-8 (b'DSC_\xff01.NEF') shows as DSC_\udcff01.NEF.
    data = page.encode("utf-8", "backslashreplace")
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, output)
    return Report(
        output=output,
        frames=tuple(frames),
        images_dir=images_dir,
        seconds=time.perf_counter() - started,
        bytes_written=len(data),
    )


def _sidecar_candidates(
    photo: Path, profiles: Sequence[str], listing: Mapping[str, str]
) -> list[Path]:
    """The configured profiles' sidecars first, then the other naming (a shoot rated with
    another profile still shows its verdicts); an extension in any case (DSC_0001.XMP).

    ``listing``: the folder's names, by themselves and by ``name_key`` (case and Unicode
    form aside: DSC_0001.xmp for dsc_0001.nef, as on a Mac), listed once per folder
    (``sidecar.sidecar_path`` lists the folder for every photo without a sidecar).
    """
    wanted = sidecar_names(photo, [*profiles, *DIALECTS])
    found = [listing.get(name) or listing.get(name_key(name)) for name in wanted]
    return [photo.with_name(name) for name in found if name]


def _folder_listing(folder: Path) -> dict[str, str]:
    try:
        names = sorted(os.listdir(folder), reverse=True)
    except OSError:
        return {}
    # By key, the first name in order; a name itself (its exact sidecar) comes first.
    return {name_key(name): name for name in names} | {name: name for name in names}


def _run(
    jobs: list[FrameJob], workers: int, worker_target: Callable | None = None
) -> Iterator[Frame]:
    """Every job's frame, in completion order (``build_report`` puts them in page order).

    A few frames are made here: starting worker processes would cost more than it saves.
    ``worker_target``: for tests that inject a crashing worker (workers.WorkerPool).
    """
    if workers <= 1 or len(jobs) < 8:
        yield from map(frame_of, jobs)
        return
    inbox: queue.Queue = queue.Queue()
    pool = WorkerPool(
        min(workers, len(jobs)), WorkerBody(__name__), inbox.put, target=worker_target
    )
    try:
        for job, frame in pool.run(jobs, inbox):
            yield lost_frame(job, frame) if isinstance(frame, Lost) else frame
    finally:
        pool.close()


def _with_journal(frame: Frame, journal: Mapping[Path, JournalEntry] | None) -> Frame:
    if not journal:
        return frame
    entry = journal.get(frame.path.resolve()) or journal.get(frame.path)
    if entry is None:
        return frame
    problem = frame.problem
    if not frame.verdict.rated and entry.status == "failed":
        problem = f"could not be rated: {entry.reason}"
    elif not frame.verdict.rated and entry.status == "pending":
        problem = "waiting to be rated" + (f" (last try: {entry.reason})" if entry.reason else "")
    return replace(frame, journal_status=entry.status, elapsed_ms=entry.elapsed_ms, problem=problem)


def _embedded(frame: Frame) -> Frame:
    def uri(picture: Picture | None) -> Picture | None:
        if picture is None:
            return None
        src = "data:image/jpeg;base64," + base64.b64encode(picture.data).decode("ascii")
        return Picture(picture.width, picture.height, src=src)

    return replace(frame, thumb=uri(frame.thumb), large=uri(frame.large))


def sort_frames(frames: Iterable[Frame]) -> list[Frame]:
    """Folder by folder; capture order inside a folder (frames with no time after)."""

    def key(frame: Frame):
        when = frame.capture_time
        stamp = when.replace(tzinfo=None) if when else datetime.max
        return (str(frame.path.parent), when is None, stamp, frame.name)

    return sorted(frames, key=key)


def _title(paths: Sequence[Path]) -> str:
    names = [Path(p).resolve().name or str(p) for p in paths]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# --- the page -------------------------------------------------------------------------

_STAR_WORDS = {-1: "rejected", 0: "no stars", 1: "1 star"}


def stars_text(stars: int | None) -> str:
    if stars is None:
        return "no rating"
    return _STAR_WORDS.get(stars, f"{stars} stars")


def verdict_text(frame: Frame) -> str:
    """Short words for the verdict, as in alt text: 'reject (motion blur)'."""
    v = frame.verdict
    if not v.rated:
        return frame.problem or "not rated"
    if v.overruled:
        return "set by a person" + (" (reject)" if v.verdict == REJECT else "")
    words = {SELECT: "select", REJECT: "reject"}.get(v.verdict, "check" if v.checks else "keep")
    if v.reasons or v.checks:
        # Why the stars say less than the keeper probability would.
        words += f" ({', '.join(v.reasons or v.checks)})"
    return words


def alt_text(frame: Frame) -> str:
    v = frame.verdict
    parts = [f"{frame.name}: {verdict_text(frame)}"]
    if v.rated:
        parts.append(stars_text(v.stars))
        if v.label:
            parts.append(f"label {v.label}")
        if v.keeper_probability is not None:
            parts.append(f"keeper probability {v.keeper_probability:.2f}")
        if v.best_of_burst:
            parts.append("best of burst")
    return ", ".join(parts)


def _asset(name: str) -> str:
    return resources.files("postselectd").joinpath(name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_page(
    frames: Sequence[Frame], *, title: str, roots: Sequence[Path] = (), seconds: float = 0.0
) -> str:
    """The whole page as text: pure, so tests can read it without a browser."""
    css, js = _asset("report.css"), _asset("report.js")
    e = html.escape
    csp = (
        "default-src 'none'; img-src 'self' data:; "
        f"style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
        "base-uri 'none'; form-action 'none'"
    )
    folders: dict[Path, list[Frame]] = {}
    for frame in frames:
        folders.setdefault(frame.path.parent, []).append(frame)
    body = [_summary(frames, seconds), _filters(frames)]
    body.append('<div id="sheet" class="sheets">')
    for folder, items in folders.items():
        body.append(_folder_section(folder, items, roots, several=len(folders) > 1))
    body.append('</div><div class="details">')
    # Previous / next follow the page order, across folders.
    for i, frame in enumerate(frames):
        before = frames[i - 1] if i > 0 else None
        after = frames[i + 1] if i + 1 < len(frames) else None
        body.append(_detail(frame, before, after))
    body.append("</div>")
    generated = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(csp, quote=False)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="generator" content="postselectd report">
<title>{e(title)} — postselectd contact sheet</title>
<style>{css}</style>
</head>
<body>
<a class="skip" href="#sheet">Skip to the photos</a>
<header class="top">
<h1>{e(title)} <span class="sub">contact sheet</span></h1>
<p class="made">Made by postselectd on {e(generated)} from the sidecars{_journal_note(frames)}.
Select a photo for the numbers behind its verdict.</p>
</header>
<main id="main">
{"".join(body)}
</main>
<script>{js}</script>
</body>
</html>
"""


def _journal_note(frames: Sequence[Frame]) -> str:
    return " and the daemon's journal" if any(f.journal_status for f in frames) else ""


def _summary(frames: Sequence[Frame], seconds: float) -> str:
    e = html.escape
    rated = [f for f in frames if f.verdict.rated]
    selects = sum(f.is_select for f in frames)
    rejects = [f for f in frames if f.is_reject]
    bursts = {(f.path.parent, f.verdict.burst_id) for f in frames if f.verdict.burst_id}
    in_bursts = sum(1 for f in frames if f.verdict.burst_id)
    reasons = Counter(r for f in rejects for r in f.verdict.reasons)
    stars = Counter(f.verdict.stars for f in rated)
    figures = [
        ("Frames", str(len(frames))),
        ("Selects", str(selects)),
        ("Rejects", str(len(rejects))),
        ("Bursts", f"{len(bursts)} ({in_bursts} frames)" if bursts else "0"),
    ]
    unrated = len(frames) - len(rated)
    if unrated:
        figures.append(("Not rated", str(unrated)))
    stamps = sorted(t for f in rated if (t := _parse_time(f.verdict.rated_at)))
    if stamps:
        # RatedAt is when each sidecar was written (to the second): the span of a shoot's
        # rating, not its cost. The cost per frame is in the daemon's journal only.
        first, last = stamps[0], stamps[-1]
        when = first.strftime("%Y-%m-%d %H:%M")
        span = (last - first).total_seconds()
        if span >= 60:
            when += (
                f" to {last.strftime('%H:%M' if last.date() == first.date() else '%Y-%m-%d %H:%M')}"
            )
        figures.append(("Rated", when))
    timed = [f.elapsed_ms for f in frames if f.elapsed_ms]
    if timed:
        figures.append(
            (
                "Time taken",
                f"{_duration(sum(timed) / 1000)} of analysis, "
                f"{sum(timed) / len(timed):.0f} ms a frame (daemon's journal)",
            )
        )
    figures.append(("This page", f"made in {_duration(seconds)}"))
    out = [
        '<section class="summary" aria-labelledby="summary-h"><h2 id="summary-h">Summary</h2>',
        '<dl class="figures">',
    ]
    out += [f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in figures]
    out.append("</dl>")
    if stars:
        out.append('<div class="breakdown"><h3>Stars</h3><ul class="counts">')
        for value in sorted(stars, key=lambda s: -99 if s is None else s, reverse=True):
            out.append(f"<li><span>{e(stars_text(value))}</span> <b>{stars[value]}</b></li>")
        out.append("</ul></div>")
    if reasons:
        out.append('<div class="breakdown"><h3>Rejects by reason</h3><ul class="counts">')
        for reason, count in reasons.most_common():
            out.append(f"<li><span>{e(reason)}</span> <b>{count}</b></li>")
        out.append("</ul></div>")
    problems = [f for f in frames if f.problem and not f.verdict.rated]
    if problems:
        out.append('<div class="breakdown problems"><h3>Not rated</h3><ul>')
        out += [f"<li>{e(f.name)}: {e(f.problem or '')}</li>" for f in problems[:50]]
        if len(problems) > 50:
            out.append(f"<li>and {len(problems) - 50} more</li>")
        out.append("</ul></div>")
    out.append("</section>")
    return "".join(out)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.astimezone() if when.tzinfo else when


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _filters(frames: Sequence[Frame]) -> str:
    """Filter controls; hidden until the script shows them (they need it)."""
    e = html.escape
    stars = Counter(_stars_key(f) for f in frames)
    labels = Counter(f.verdict.label or "none" for f in frames)
    reasons = Counter(r for f in frames for r in f.verdict.reasons)
    no_reason = sum(1 for f in frames if not f.verdict.reasons)

    def box(group: str, value: str, text: str, count: int) -> str:
        ident = f"{group}-{re.sub(r'[^a-z0-9-]+', '-', value.lower())}"
        return (
            f'<label for="{e(ident)}"><input type="checkbox" id="{e(ident)}" name="{group}" '
            f'value="{e(value)}" checked> {e(text)} <span class="n">{count}</span></label>'
        )

    star_values = sorted(stars, key=lambda s: -99 if s == "none" else int(s), reverse=True)
    parts = [
        '<form class="filters" id="filters" hidden aria-label="Filter the photos">',
        '<fieldset class="show"><legend>Show</legend>',
        '<label for="show-all"><input type="radio" name="show" id="show-all" value="all" checked>'
        " All</label>",
        '<label for="show-select"><input type="radio" name="show" id="show-select" '
        'value="select"> Selects only</label>',
        '<label for="show-reject"><input type="radio" name="show" id="show-reject" '
        'value="reject"> Rejects only</label></fieldset>',
        "<fieldset><legend>Stars</legend>",
        *(
            box("stars", s, stars_text(None if s == "none" else int(s)), stars[s])
            for s in star_values
        ),
        "</fieldset>",
        "<fieldset><legend>Label</legend>",
        *(box("label", k, "no label" if k == "none" else k, labels[k]) for k in sorted(labels)),
        "</fieldset>",
        "<fieldset><legend>Reason</legend>",
        *(box("reason", r, r, n) for r, n in reasons.most_common()),
        box("reason", "none", "no reason", no_reason) if no_reason else "",
        "</fieldset>",
        '<div class="filter-end"><button type="reset">Show all</button>',
        f'<p id="shown" role="status" aria-live="polite">Showing {len(frames)} of {len(frames)}'
        " photos</p></div></form>",
    ]
    return "".join(parts)


def _stars_key(frame: Frame) -> str:
    stars = frame.verdict.stars
    return "none" if stars is None else str(stars)


def _folder_section(folder: Path, frames: list[Frame], roots: Sequence[Path], several: bool) -> str:
    e = html.escape
    out = ['<section class="folder" aria-label="' + e(_folder_name(folder, roots)) + '">']
    if several:
        rejects = sum(f.is_reject for f in frames)
        selects = sum(f.is_select for f in frames)
        out.append(
            f'<h2>{e(_folder_name(folder, roots))} <span class="sub">{len(frames)} frames, '
            f"{selects} selects, {rejects} rejects</span></h2>"
        )
    out.append('<ol class="sheet">')
    i = 0
    while i < len(frames):
        frame = frames[i]
        burst = frame.verdict.burst_id
        j = i + 1
        if burst:
            while j < len(frames) and frames[j].verdict.burst_id == burst:
                j += 1
        if burst and j - i > 1:
            group = frames[i:j]
            best = next((f for f in group if f.verdict.best_of_burst), None)
            best_text = f", best: {best.name}" if best else ", no frame without a fault"
            out.append(
                f'<li class="burst" data-burst="{e(burst)}"><h3 class="burst-h">Burst {e(burst)}'
                f' <span class="sub">{len(group)} frames{e(best_text)}</span></h3><ol>'
            )
            out += [_card(f) for f in group]
            out.append("</ol></li>")
        else:
            out += [_card(f) for f in frames[i:j]]
        i = j
    out.append("</ol></section>")
    return "".join(out)


def _folder_name(folder: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        try:
            relative = folder.resolve().relative_to(Path(root).resolve())
        except (ValueError, OSError):
            continue
        return (
            str(Path(Path(root).resolve().name) / relative)
            if str(relative) != "."
            else (Path(root).resolve().name)
        )
    return str(folder)


def _img(picture: Picture, alt: str) -> str:
    """Lazy: a 3,000-frame page loads the thumbnails in view, and a larger view on opening."""
    e = html.escape
    return (
        f'<img src="{e(picture.src)}" width="{picture.width}" height="{picture.height}" '
        f'loading="lazy" decoding="async" alt="{e(alt)}">'
    )


def _stars_html(stars: int | None) -> str:
    if stars is None:
        return '<span class="stars none">no rating</span>'
    if stars < 0:
        return '<span class="stars rejected">rejected</span>'
    shown = "★" * stars + "☆" * (5 - stars)
    return (
        f'<span class="stars"><span aria-hidden="true">{shown}</span>'
        f'<span class="vh">{stars_text(stars)}</span></span>'
    )


def _card(frame: Frame) -> str:
    e = html.escape
    v = frame.verdict
    classes = ["card", f"v-{v.verdict or ('keep' if v.rated else 'unrated')}"]
    if v.best_of_burst:
        classes.append("best")
    data = {
        "stars": _stars_key(frame),
        "label": v.label or "none",
        "verdict": v.verdict or ("keep" if v.rated else "unrated"),
        "reasons": "|".join(v.reasons) or "none",
    }
    attrs = " ".join(f'data-{k}="{e(val)}"' for k, val in data.items())
    if frame.thumb:
        picture = _img(frame.thumb, alt_text(frame))
    else:
        picture = (
            f'<span class="noimg" role="img" aria-label="{e(alt_text(frame))}">no preview</span>'
        )
    meta = [f'<span class="name">{e(frame.name)}</span>']
    if v.rated:
        line = [_stars_html(v.stars)]
        if v.label:
            line.append(f'<span class="label c-{e(v.color or "none")}">{e(v.label)}</span>')
        if v.keeper_probability is not None:
            line.append(
                f'<span class="p" title="keeper probability">p {v.keeper_probability:.2f}</span>'
            )
        meta.append('<span class="line">' + "".join(line) + "</span>")
        badges = []
        if v.verdict:
            badges.append(f'<span class="badge {v.verdict}">{v.verdict}</span>')
        if v.best_of_burst:
            badges.append('<span class="badge bestmark">★ best of burst</span>')
        badges += [f'<span class="reason">{e(r)}</span>' for r in v.reasons]
        badges += [f'<span class="reason check">check {e(c)}</span>' for c in v.checks]
        if v.overruled:
            badges.append('<span class="reason person">verdict set by a person</span>')
        if badges:
            meta.append('<span class="badges">' + "".join(badges) + "</span>")
    else:
        meta.append(f'<span class="problem">{e(frame.problem or "not rated")}</span>')
    return (
        f'<li class="{" ".join(classes)}" id="c{frame.index}" {attrs}>'
        f'<a class="thumb" href="#f{frame.index}">{picture}</a>'
        f'<div class="meta">{"".join(meta)}</div></li>'
    )


def _detail(frame: Frame, before: Frame | None, after: Frame | None) -> str:
    """The larger view: a section shown by CSS :target, so it needs no script."""
    e = html.escape
    v = frame.verdict
    heading = f"{frame.name}: {verdict_text(frame)}"
    out = [
        f'<section class="detail" id="f{frame.index}" role="dialog" '
        f'aria-labelledby="h{frame.index}" data-card="c{frame.index}">',
        '<nav class="detail-nav" aria-label="Photos">',
        f'<a class="prev" href="#f{before.index}" rel="prev">← Previous</a>' if before else "",
        f'<a class="next" href="#f{after.index}" rel="next">Next →</a>' if after else "",
        f'<a class="close" href="#c{frame.index}">Close <span aria-hidden="true">✕</span></a>',
        "</nav>",
        '<figure class="view">',
    ]
    if frame.large:
        out.append('<div class="frame-image">')
        out.append(_img(frame.large, alt_text(frame)))
        out.append(_face_boxes(v, frame.large))
        out.append("</div>")
    else:
        out.append(f'<p class="noimg">{e(frame.problem or "no preview")}</p>')
    out.append(f"<figcaption>{e(str(frame.path))}</figcaption></figure>")
    out.append(f'<div class="numbers"><h2 id="h{frame.index}" tabindex="-1">{e(heading)}</h2>')
    rows: list[tuple[str, str]] = []
    if v.rated:
        stars = stars_text(v.stars) + (" (set by a person)" if v.rating_by_person else "")
        rows.append(("Rating", stars))
        rows.append(("Label", v.label or "none"))
        if v.burst_id:
            size = f" of {v.burst_size} frames" if v.burst_size else ""
            rows.append(
                ("Burst", f"{v.burst_id}{size}" + (", best frame" if v.best_of_burst else ""))
            )
        rows += list(v.numbers)
    elif frame.problem:
        rows.append(("Problem", frame.problem))
    if frame.capture_time:
        rows.append(("Captured", frame.capture_time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-4]))
    if frame.camera:
        rows.append(("Camera", frame.camera))
    if frame.elapsed_ms:
        rows.append(("Time to rate", f"{frame.elapsed_ms:.0f} ms"))
    if frame.sidecar:
        rows.append(("Sidecar", frame.sidecar.name))
    out.append('<dl class="nums">')
    out += [f"<div><dt>{e(k)}</dt><dd>{e(val)}</dd></div>" for k, val in rows]
    out.append("</dl>")
    if v.faces:
        out.append(
            '<table class="faces"><caption>Faces (boxes drawn on the photo)</caption>'
            '<thead><tr><th scope="col">Face</th><th scope="col">Eye openness (left/right)</th>'
            '<th scope="col">Sharpness</th></tr></thead><tbody>'
        )
        for n, face in enumerate(v.faces, 1):
            out.append(
                f'<tr><th scope="row">{n}</th><td>{e(face.eye_openness)}</td>'
                f"<td>{e(face.sharpness)}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append("</div></section>")
    return "".join(out)


def _face_boxes(v: Verdict, large: Picture) -> str:
    """Face boxes in the preview's pixels, drawn over the larger view (same picture, scaled)."""
    boxes = [(n, f.box) for n, f in enumerate(v.faces, 1) if f.box]
    if not boxes:
        return ""
    width, height = v.preview_size or (large.width, large.height)
    text_size = max(12, round(max(width, height) / 45))
    out = [
        f'<svg class="boxes" viewBox="0 0 {width} {height}" preserveAspectRatio="xMidYMid meet" '
        'aria-hidden="true" focusable="false">'
    ]
    for n, (x, y, w, h) in boxes:
        out.append(
            f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" '
            'vector-effect="non-scaling-stroke"/>'
            f'<text x="{x:g}" y="{max(text_size, y - 4):g}" font-size="{text_size}">{n}</text>'
        )
    out.append("</svg>")
    return "".join(out)


# --- the daemon's journal --------------------------------------------------------------


def journal_entries(state_dir: Path) -> dict[Path, JournalEntry]:
    """What the daemon's journal knows, by path; empty when the daemon never ran here."""
    from postselectd.state import Journal, JournalError

    try:
        journal = Journal(state_dir, readonly=True)
    except JournalError as exc:
        log.debug("no journal: %s", exc)
        return {}
    with journal:
        return {
            row.path: JournalEntry(row.status, row.reason, row.elapsed_ms) for row in journal.rows()
        }
