"""One frame of the page: its sidecar's verdict and its thumbnails, made in worker
processes.

Thumbnails come from the raws' embedded previews (``preview.load_preview``). A worker makes
one frame at a time on the pool ``score`` uses (``workers.WorkerPool``), so a decoder that
crashes or hangs on a photo costs that photo's card its thumbnail, not the page.
"""

from __future__ import annotations

import io
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from PIL import Image

from postselectd.dialects import REJECT, SELECT
from postselectd.preview import PreviewError, load_preview
from postselectd.report.verdicts import NOT_RATED, Verdict, verdict_from_sidecar
from postselectd.sidecar import read_sidecar
from postselectd.workers import Lost, WorkerBody, WorkerPool

THUMB_SIZE = 320  # long side; shown at ~200 CSS px, so sharp on 1.5x screens
# The larger view: the cheapest embedded preview decode of at least LARGE_MIN (a D7100's
# 1620x1080 decoded at half size in the DCT: 810x540), at most LARGE_MAX. Decoding the
# 1620 one in full and shrinking it to 1024 costs 2.4x the CPU per frame (29 vs 12 ms,
# bench/report_speed.py), which would miss a minute for 3,000 frames on 2 cores.
LARGE_MIN = 768
LARGE_MAX = 1024
THUMB_QUALITY = 72
LARGE_QUALITY = 78


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


def make_frames(
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
