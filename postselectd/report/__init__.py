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

The parts, in the order a report is made: this module finds the photos and each one's
sidecar, and writes the page; ``verdicts.py`` reads what a sidecar says; ``frames.py``
makes one frame (verdict and thumbnails) in a worker process; ``page.py`` renders the
HTML, which needs no server, no network and no script to be read.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from postselectd.dialects import DIALECTS, sidecar_names
from postselectd.photos import name_key, stem_key
from postselectd.report.frames import Frame, FrameJob, Picture, frame_of, make_frames
from postselectd.report.page import _csp_hash, alt_text, render_page, stars_text, verdict_text
from postselectd.report.verdicts import NOT_RATED, FaceNumbers, Verdict, verdict_from_sidecar

__all__ = [
    "_csp_hash",
    "_folder_listing",
    "_sidecar_candidates",
    "alt_text",
    "build_report",
    "FaceNumbers",
    "Frame",
    "frame_of",
    "FrameJob",
    "images_dir_for",
    "journal_entries",
    "JournalEntry",
    "NOT_RATED",
    "Picture",
    "photos_to_show",
    "render_page",
    "Report",
    "sort_frames",
    "stars_text",
    "Verdict",
    "verdict_from_sidecar",
    "verdict_text",
]

log = logging.getLogger(__name__)

# Beyond this many frames an embedded page gets heavy (~110 KB per frame); say so.
EMBED_WARN_FRAMES = 500
_IMAGE_NAME = re.compile(r"^\d{5}\.jpg$")


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
    for frame in make_frames(jobs, workers, worker_target):
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
