"""File -> upright RGB preview + capture metadata.

The only module that calls rawpy. A raw file carries its own JPEG previews; decoding the
smallest one that is large enough is ~10x cheaper than the full-size one LibRaw picks,
and it still works on files whose sensor data LibRaw cannot read (truncated or pruned
raws). Sensor data is decoded only when a raw has no usable preview at all.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import rawpy
from PIL import Image, UnidentifiedImageError

from postselectd import rawmeta
from postselectd.rating import SMALLEST_JUDGED_PREVIEW

log = logging.getLogger(__name__)

# Below this long side a thumbnail says too little to rate a frame (rating.py says why):
# decode the raw instead, and keep the thumbnail only as the last resort.
TINY_PREVIEW = SMALLEST_JUDGED_PREVIEW
# A thumbnail this small is useless even as a last resort (an 8x8 "thumbnail" exists).
USELESS_PREVIEW = 120
# Raw data does not compress below ~1 bit per pixel (a 1995 Kodak DC50 KDC: 1.9 bits);
# less means the file lost its sensor data (metadata-only or truncated raws: < 0.05 bits).
MIN_RAW_BYTES_PER_PIXEL = 0.1


class PreviewError(Exception):
    """No usable image in the file; str() is the reason, for the log line.

    ``previews_cut``: the previews the file declares whose bytes run past its end (it may
    be still being written), as :attr:`Preview.previews_cut`."""

    def __init__(self, reason: str, previews_cut: tuple[str, ...] = ()):
        super().__init__(reason)
        self.previews_cut = previews_cut


@dataclass(frozen=True)
class Preview:
    path: Path
    # Upright RGB, as decoded: the analysis resamples from this Pillow image directly, so a
    # preview is not copied into numpy and back for every stage (each copy ~1 ms).
    picture: Image.Image = field(repr=False)
    source: str  # which image we used: "SubIFD JPEG 1620x1080", "half-size raw decode", ...
    format_name: str  # what the file's bytes say it is
    camera: str | None
    capture_time: datetime | None
    orientation: int
    notes: tuple[str, ...] = ()  # things worth a log line: "file is a JPEG named .NEF"
    # Previews the file declares whose bytes run past its end ("SubIFD0"): a file still
    # being written, or one cut short (rawmeta.ContainerInfo.previews_cut).
    previews_cut: tuple[str, ...] = ()

    @functools.cached_property
    def image(self) -> np.ndarray:
        """``picture`` as an H x W x 3 uint8 array (read-only), made on first use only."""
        return np.asarray(self.picture)

    @property
    def width(self) -> int:
        return self.picture.width

    @property
    def height(self) -> int:
        return self.picture.height


def load_preview(path: str | os.PathLike, min_size: int = 1024) -> Preview:
    """Decode the smallest embedded image whose long side is at least ``min_size``."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        raise PreviewError("file is gone (moved or deleted before it was rated)") from None
    except OSError as exc:
        raise PreviewError(f"cannot read file ({exc.strerror or exc})") from None
    try:
        info = rawmeta.read_container(path)
    except rawmeta.ContainerError as exc:
        info = None
        container_problem = str(exc)
    except OSError as exc:
        raise PreviewError(f"cannot read file ({exc.strerror or exc})") from None
    else:
        container_problem = None

    notes: list[str] = []
    expected = rawmeta.expected_kind(path.suffix)
    kind = info.kind if info else None
    if info and expected and kind not in (expected, "unknown") and not _same_family(expected, kind):
        notes.append(f"file is a {info.format_name} named {path.suffix}")

    previews_cut = info.previews_cut if info else ()
    if previews_cut:
        notes.append(f"rated from a file that looks truncated: {cut_previews_text(previews_cut)}")

    camera = None
    if info and (info.make or info.model):
        make, model = (info.make or "").strip(), (info.model or "").strip()
        camera = (
            model
            if make and model.upper().startswith(make.split()[0].upper())
            else (f"{make} {model}".strip())
        )

    def done(picture: Image.Image, source: str, orientation: int) -> Preview:
        return Preview(
            path=path,
            picture=picture,
            source=source,
            format_name=info.format_name if info else "unknown",
            camera=camera,
            capture_time=info.capture_time if info else None,
            orientation=orientation,
            notes=tuple(notes),
            previews_cut=previews_cut,
        )

    orientation = info.orientation if info else 1

    if kind in ("jpeg", "png", "tiff-image"):
        picture = _decode_pillow(path, min_size)
        if kind == "jpeg":
            picture = upright_picture(picture, orientation)
        return done(picture, f"{info.format_name} file", orientation)

    failures: list[str] = []
    if container_problem:
        failures.append(container_problem)

    # 1. The raw's own embedded JPEGs, smallest sufficient first, larger ones if it is torn.
    if info and info.previews:
        for candidate in _preview_order(info.previews, min_size):
            try:
                data = _pread(path, candidate.offset, candidate.length)
                picture = _decode_jpeg_bytes(data, min_size)
            except PreviewError as exc:
                failures.append(f"{candidate.where} JPEG: {exc}")
                continue
            if max(picture.size) < USELESS_PREVIEW:
                continue
            if max(candidate.width, candidate.height) < TINY_PREVIEW:
                # Rather decode the sensor data, but keep this as the last resort.
                fallback = (picture, f"{candidate.where} JPEG {candidate.width}x{candidate.height}")
                raw = _try_raw(path, failures, min_size)
                if raw is not None:
                    return done(*raw)
                # Too small to judge: the rating says so (rating.SMALLEST_JUDGED_PREVIEW).
                return done(upright_picture(fallback[0], orientation), fallback[1], orientation)
            source = f"{candidate.where} JPEG {candidate.width}x{candidate.height}"
            return done(upright_picture(picture, orientation), source, orientation)

    # 2. and 3. LibRaw: its thumbnail, then a half-size decode of the sensor data.
    result = _try_raw(path, failures, min_size)
    if result is not None:
        return done(*result)
    reason = "; ".join(dict.fromkeys(failures)) or "no preview and no decodable raw data"
    if kind == "unknown" and not failures:
        reason = "not a photo format postselectd can read"
    if previews_cut:
        reason += f"; {cut_previews_text(previews_cut)}"
    raise PreviewError(reason, previews_cut)


def cut_previews_text(previews_cut: tuple[str, ...]) -> str:
    """The cut previews in words, for a log line: "its SubIFD0 preview runs past the end of
    the file"."""
    if len(previews_cut) == 1:
        return f"its {previews_cut[0]} preview runs past the end of the file"
    names = ", ".join(previews_cut[:-1]) + " and " + previews_cut[-1]
    return f"its {names} previews run past the end of the file"


def _same_family(expected: str, kind: str | None) -> bool:
    # A .TIF that is a raw or a plain TIFF is the same thing to us.
    return {expected, kind} <= {"tiff", "tiff-image"}


def _preview_order(previews, min_size: int) -> list:
    """Smallest preview that is large enough, then larger ones, then smaller ones."""
    large = [p for p in previews if max(p.width, p.height) >= min_size]
    small = [p for p in previews if max(p.width, p.height) < min_size]
    return sorted(large, key=lambda p: p.width * p.height) + sorted(
        small, key=lambda p: -p.width * p.height
    )


def _try_raw(path: Path, failures: list[str], min_size: int):
    """LibRaw's thumbnail, else a half-size sensor decode; None (and a reason) on failure."""
    thumb_fallback = None
    try:
        with rawpy.imread(str(path)) as raw:  # always a path: a file object reads the whole raw
            flip = raw.sizes.flip
            orientation = _FLIP_TO_ORIENTATION.get(flip, 1)
            # extract_thumb must come before anything that unpacks sensor data.
            try:
                thumb = raw.extract_thumb()
            except (rawpy.LibRawError, MemoryError) as exc:
                failures.append(f"no embedded preview ({_libraw_reason(exc)})")
            else:
                picture, size = _thumb_image(thumb, min_size, failures)
                if picture is not None:
                    picture = upright_picture(picture, orientation)
                    if max(size) >= TINY_PREVIEW:
                        return picture, f"LibRaw thumbnail {size[0]}x{size[1]}", orientation
                    if max(size) >= USELESS_PREVIEW:
                        thumb_fallback = (
                            picture,
                            f"LibRaw thumbnail {size[0]}x{size[1]}",
                            orientation,
                        )
            sensor = _half_size_decode(path, raw, failures)
            if sensor is not None:
                return *sensor, orientation
    except rawpy.LibRawFileUnsupportedError:
        failures.append("LibRaw does not support this file")
    except (rawpy.LibRawError, MemoryError) as exc:
        failures.append(f"LibRaw: {_libraw_reason(exc)}")
    if thumb_fallback is not None:
        return thumb_fallback
    return None


def _half_size_decode(path: Path, raw, failures: list[str]) -> tuple[Image.Image, str] | None:
    """The sensor data as (picture, what it is), at half size unless that is too small."""
    sizes = raw.sizes
    pixels = int(sizes.raw_width) * int(sizes.raw_height)
    size = path.stat().st_size
    if pixels and size < pixels * MIN_RAW_BYTES_PER_PIXEL:
        failures.append(
            f"raw data missing ({_kb(size)} for a {pixels / 1e6:.1f} MP sensor: "
            "truncated or metadata-only file)"
        )
        return None
    # A small sensor (a 0.4 MP Kodak DC50: 768x512) is decoded whole where half of it
    # would be too small to judge; it costs little at that size.
    half = max(int(sizes.width), int(sizes.height)) // 2 >= TINY_PREVIEW
    try:
        image = raw.postprocess(
            half_size=half, use_camera_wb=True, output_bps=8, no_auto_bright=False
        )
    except (rawpy.LibRawError, MemoryError) as exc:
        failures.append(f"raw decode failed ({_libraw_reason(exc)})")
        return None
    if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        failures.append("raw decode gave no RGB image")
        return None
    if int(image.max()) <= 2:
        failures.append("raw data decodes to a black frame (file truncated?)")
        return None
    return Image.fromarray(image), "half-size raw decode" if half else "raw decode"


def _thumb_image(thumb, min_size: int, failures: list[str]):
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            picture = _decode_jpeg_bytes(bytes(thumb.data), min_size)
        except PreviewError as exc:
            failures.append(f"LibRaw thumbnail: {exc}")
            return None, (0, 0)
        with Image.open(io.BytesIO(thumb.data)) as probe:
            return picture, probe.size
    data = np.asarray(thumb.data)
    if data.ndim == 3 and data.shape[2] >= 3:
        image = np.ascontiguousarray(data[:, :, :3]).astype(np.uint8, copy=False)
        return Image.fromarray(image), (image.shape[1], image.shape[0])
    if data.ndim == 2:
        image = np.repeat(data[:, :, None], 3, axis=2).astype(np.uint8, copy=False)
        return Image.fromarray(image), (image.shape[1], image.shape[0])
    failures.append("LibRaw thumbnail has an unknown pixel layout")
    return None, (0, 0)


def _decode_jpeg_bytes(data: bytes, min_size: int) -> Image.Image:
    if not data.startswith(b"\xff\xd8"):
        raise PreviewError("not JPEG data")
    return _decode_pillow(io.BytesIO(data), min_size)


def _decode_pillow(source: Path | io.BytesIO, min_size: int) -> Image.Image:
    """Pillow's decode of a file or an embedded JPEG; any failure is a PreviewError."""
    try:
        # A damaged TIFF makes Pillow warn per tag; the error (if any) is what we report.
        with warnings.catch_warnings(), Image.open(source) as img:
            warnings.simplefilter("ignore")
            return _pillow_to_rgb(img, min_size)
    except (
        OSError,
        SyntaxError,
        ValueError,
        UnidentifiedImageError,
        Image.DecompressionBombError,
    ) as exc:
        raise PreviewError(_pillow_reason(exc)) from None


def _pillow_to_rgb(img: Image.Image, min_size: int) -> Image.Image:
    width, height = img.size
    if img.format == "JPEG" and max(width, height) > min_size:
        # DCT-domain downscale: 1/2, 1/4, 1/8 while staying at or above min_size.
        scale = min_size / max(width, height)
        img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    img.load()
    # Loaded, an RGB image stays usable after its file closes (Pillow's context manager
    # closes only the file): no copy of the 1620x1080 frame (~1 ms a photo).
    return img if img.mode == "RGB" else img.convert("RGB")


def _pillow_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "truncated" in text:
        return "JPEG data is truncated"
    if "cannot identify image file" in text:
        return "not an image Pillow can read"
    return text.split("\n")[0][:200]


def _pread(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise PreviewError("preview runs past the end of the file (truncated?)")
    return data


def _libraw_reason(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__


def _kb(size: int) -> str:
    return f"{size / 1024:.0f} KB" if size < 1024 * 1024 else f"{size / 1048576:.1f} MB"


# LibRaw's sizes.flip -> EXIF orientation.
_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}


# EXIF orientation -> the Pillow transpose that turns a stored image upright (the same
# pixels as Pillow's ImageOps.exif_transpose; tests/test_preview.py compares the two).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright_picture(picture: Image.Image, orientation: int) -> Image.Image:
    """Turn a stored Pillow image upright according to its EXIF orientation (1-8)."""
    method = _UPRIGHT.get(orientation)
    return picture if method is None else picture.transpose(method)
