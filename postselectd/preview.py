"""File -> upright RGB preview + capture metadata.

The only module that calls rawpy (and the image decoders). A raw file carries its own JPEG
previews; decoding the smallest one that is large enough is ~10x cheaper than the full-size
one LibRaw picks, and it still works on files whose sensor data LibRaw cannot read
(truncated or pruned raws). Sensor data is decoded only when a raw has no usable preview at
all.

Phone and web photos (HEIC/HEIF, AVIF, WebP, PNG, TIFF) and JPEGs are whole images: Pillow
decodes them (pillow-heif for HEIF, Pillow's own AVIF plugin), as small as the format lets
it (a JPEG's DCT scaling, a HEIF thumbnail that is large enough), then reduced to the
smallest size at or above ``min_size``. The bytes decide which decoder, never the name: a
WebP saved as ``.jpg`` is read as the WebP it is, a video is named as one.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import rawpy
from PIL import Image, UnidentifiedImageError, features

from postselectd import rawmeta
from postselectd.rating import SMALLEST_JUDGED_PREVIEW

log = logging.getLogger(__name__)

# Below this long side a thumbnail says too little to rate a frame (rating.py says why):
# decode the raw instead, and keep the thumbnail only as the last resort.
TINY_PREVIEW = SMALLEST_JUDGED_PREVIEW
# A thumbnail this small is useless even as a last resort (an 8x8 "thumbnail" exists).
USELESS_PREVIEW = 120
# A larger embedded JPEG is kept as the preview's ``detail`` from this many times its size.
DETAIL_FROM = 1.6
# Raw data does not compress below ~1 bit per pixel (a 1995 Kodak DC50 KDC: 1.9 bits);
# less means the file lost its sensor data (metadata-only or truncated raws: < 0.05 bits).
MIN_RAW_BYTES_PER_PIXEL = 0.1


@dataclass(frozen=True)
class WholeImage:
    """A phone or web photo (HEIC, AVIF, WebP, PNG, TIFF) decoded smaller than it is stored:
    the file itself, decoded again, is the preview's ``detail``."""

    kind: str  # rawmeta kind: "heif", "avif", "webp", "png", "tiff-image"
    format_name: str
    width: int  # whole, as its decoder gives it (a HEIF already turned by its irot)
    height: int


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
    # A larger image than the one decoded (at least DETAIL_FROM times its long side): a raw's
    # full-size preview, or the file itself when it was decoded at a fraction of its size (a
    # JPEG; a HEIC, AVIF, WebP, PNG or TIFF: WholeImage). The analysis reads eyes too small
    # to tell in ``picture`` there (``load_detail``); None when the file has none.
    detail: rawmeta.EmbeddedJpeg | WholeImage | None = None

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
        notes.append(f"file is {_a(info.format_name)} named {path.suffix}")

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

    def done(
        picture: Image.Image,
        source: str,
        orientation: int,
        detail: rawmeta.EmbeddedJpeg | WholeImage | None = None,
    ) -> Preview:
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
            detail=detail,
        )

    orientation = info.orientation if info else 1

    if kind == "video":
        raise PreviewError(f"a video file ({info.format_name}), not a photo")
    if kind == "other":
        raise PreviewError(_not_a_photo(info.format_name))
    if kind in WHOLE_IMAGE_KINDS:
        picture, orientation, stored = _decode_image_file(path, kind, info.format_name, min_size)
        # A camera's JPEG is decoded at a fraction of its size (JPEG scaling), a phone's HEIC
        # whole and then reduced: the file itself is then the larger image the eyes of small
        # faces are read in.
        if kind == "jpeg":
            detail = _larger(info.previews, picture)
        elif max(stored) >= DETAIL_FROM * max(picture.size):
            detail = WholeImage(kind, info.format_name, *stored)
        else:
            detail = None
        return done(
            upright_picture(picture, orientation),
            f"{info.format_name} file",
            orientation,
            detail,
        )

    failures: list[str] = []
    if container_problem:
        if _sniffed(path) in WHOLE_IMAGE_KINDS - {"jpeg", "tiff-image"}:
            # A cut or broken HEIC, AVIF, WebP or PNG: LibRaw has nothing to add.
            raise PreviewError(container_problem)
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
                raw = _try_raw(path, failures, min_size, info)
                if raw is not None:
                    return done(*raw)
                # Too small to judge: the rating says so (rating.SMALLEST_JUDGED_PREVIEW).
                return done(upright_picture(fallback[0], orientation), fallback[1], orientation)
            source = f"{candidate.where} JPEG {candidate.width}x{candidate.height}"
            detail = _larger(info.previews, picture)
            return done(upright_picture(picture, orientation), source, orientation, detail)

    # 2. and 3. LibRaw: its thumbnail, then a half-size decode of the sensor data.
    result = _try_raw(path, failures, min_size, info)
    if result is not None:
        return done(*result)
    reason = "; ".join(dict.fromkeys(failures)) or "no preview and no decodable raw data"
    if previews_cut:
        reason += f"; {cut_previews_text(previews_cut)}"
    raise PreviewError(reason, previews_cut)


def load_detail(preview: Preview, long_side: float) -> Image.Image | None:
    """The file's larger image (``preview.detail``), upright, decoded at the smallest size
    whose long side is at least ``long_side``: a JPEG at a JPEG scale (1/8 to 1), ~32 ms for
    a 6000x4000 preview at 1/2, ~100 ms whole; a WholeImage decoded whole again and reduced
    by a whole factor (a 12 MP HEIC: ~0.3 s). None when there is none or it cannot be read
    (the analysis then keeps what it read in the preview)."""
    detail = preview.detail
    if detail is None:
        return None
    if isinstance(detail, WholeImage):
        try:
            picture, orientation, _ = _decode_image_file(
                preview.path, detail.kind, detail.format_name, math.ceil(long_side)
            )
        except PreviewError:
            return None
        return upright_picture(picture, orientation)
    try:
        data = _pread(preview.path, detail.offset, detail.length)
        picture = _decode_jpeg_bytes(data, math.ceil(long_side))
    except (PreviewError, OSError):
        return None
    return upright_picture(picture, preview.orientation)


def _larger(
    previews: tuple[rawmeta.EmbeddedJpeg, ...], picture: Image.Image
) -> rawmeta.EmbeddedJpeg | None:
    """The largest of ``previews`` (sorted by size) when it is at least DETAIL_FROM times
    ``picture``, the one decoded: the preview's ``detail``; else None."""
    largest = previews[-1] if previews else None
    if largest is None or max(largest.width, largest.height) < DETAIL_FROM * max(picture.size):
        return None
    return largest


def cut_previews_text(previews_cut: tuple[str, ...]) -> str:
    """The cut previews in words, for a log line: "its SubIFD0 preview runs past the end of
    the file"."""
    if len(previews_cut) == 1:
        return f"its {previews_cut[0]} preview runs past the end of the file"
    names = ", ".join(previews_cut[:-1]) + " and " + previews_cut[-1]
    return f"its {names} previews run past the end of the file"


# Whole images Pillow decodes (rawmeta kinds). How to turn one upright is what its decoder
# reports: the EXIF tag, or for HEIF and AVIF the container's own irot/imir.
WHOLE_IMAGE_KINDS = frozenset({"jpeg", "png", "tiff-image", "webp", "heif", "avif"})


def _not_a_photo(what: str) -> str:
    if what.endswith(" image"):  # a GIF or BMP: a picture, but no camera's original
        return f"{_a(what)}, which postselectd does not rate"
    return f"{_a(what)}, not a photo"


def _libraw_cannot_open(info: rawmeta.ContainerInfo | None) -> str:
    """How a file LibRaw cannot open is named: "a Canon CR2 that LibRaw cannot open"."""
    if info is None:  # its container is broken: the reason for that comes first
        return "LibRaw cannot open it either"
    if info.format_name == "unknown":
        return "not a photo format postselectd or LibRaw can read"
    if info.format_name.startswith("ISO BMFF"):
        return f"{_a(info.format_name)} file, not a photo format postselectd can read"
    return f"{_a(_camera_format(info))} that LibRaw cannot open"


def _camera_format(info: rawmeta.ContainerInfo) -> str:
    """ "Canon CR2", "GoPro DNG", or the format alone when the make is unknown."""
    make = _maker(info.make)
    return f"{make} {info.format_name}" if make else info.format_name


def _maker(make: str | None) -> str | None:
    """ "NIKON CORPORATION" -> "Nikon", "Canon" -> "Canon"; None when unknown."""
    words = (make or "").split()
    if not words:
        return None
    first = words[0]
    return first.capitalize() if first.isupper() and len(first) > 3 else first


def _a(phrase: str) -> str:
    """The phrase with its article: "a CR2", "an NEF", "an XMP sidecar", "a Canon CR2"."""
    first = phrase.split(maxsplit=1)[0] if phrase.strip() else "x"
    if first.isupper() and len(first) > 1:  # an acronym, said letter by letter
        vowel_sound = first[0] in "AEFILMNORSX"
    else:
        vowel_sound = first[0].lower() in "aeiou"
    return f"{'an' if vowel_sound else 'a'} {phrase}"


def _sniffed(path: Path) -> str:
    """The kind the first bytes say, for a file whose container could not be read."""
    try:
        with open(path, "rb") as file:
            return rawmeta.sniff(file.read(rawmeta.HEAD_BYTES))
    except OSError:
        return "unknown"


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


def _try_raw(path: Path, failures: list[str], min_size: int, info: rawmeta.ContainerInfo | None):
    """LibRaw's thumbnail, else a half-size sensor decode; None (and a reason) on failure.

    ``info``: what the bytes say the file is, to name its real type when LibRaw refuses it.
    """
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
            sensor = _half_size_decode(path, raw, failures, info)
            if sensor is not None:
                return *sensor, orientation
    except rawpy.LibRawFileUnsupportedError:
        failures.append(_libraw_cannot_open(info))
    except (rawpy.LibRawError, MemoryError) as exc:
        failures.append(f"LibRaw: {_libraw_reason(exc)}")
    if thumb_fallback is not None:
        return thumb_fallback
    return None


def _half_size_decode(
    path: Path, raw, failures: list[str], info: rawmeta.ContainerInfo | None = None
) -> tuple[Image.Image, str] | None:
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
    except rawpy.LibRawFileUnsupportedError as exc:
        if info is None or info.format_name == "unknown":
            failures.append(f"raw decode failed ({_libraw_reason(exc)})")
        else:  # a GoPro GPR: a DNG whose VC-5 sensor data this LibRaw has no decoder for
            failures.append(f"{_a(_camera_format(info))} whose raw data LibRaw cannot decode")
        return None
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


def _decode_image_file(
    path: Path, kind: str, format_name: str, min_size: int
) -> tuple[Image.Image, int, tuple[int, int]]:
    """A whole-image file decoded, the orientation left to apply, as its decoder reports
    it (the EXIF tag; for HEIF 1: libheif applies irot/imir itself; for AVIF its irot/imir,
    which Pillow reports as the EXIF tag and does not apply), and its whole size."""
    if kind == "heif":
        _register_heif()
    elif kind == "avif" and not features.check("avif"):
        raise PreviewError(
            "an AVIF photo, and this Pillow has no AVIF decoder (Pillow 11.3 or newer has one)"
        )
    reported: list = []
    try:
        picture = _decode_pillow(path, min_size, reported)
    except PreviewError as exc:
        if kind == "jpeg":
            raise
        raise PreviewError(f"{_a(format_name)} file that cannot be decoded ({exc})") from None
    stored, orientation = reported
    return picture, orientation if orientation in range(1, 9) else 1, stored


def decoders() -> dict[str, str | None]:
    """The whole-image formats and the library that decodes each here (None: none does), for
    ``postselectd doctor``: HEIC needs pillow-heif, AVIF a Pillow built with libavif."""
    found: dict[str, str | None] = {"JPEG": None}
    if features.check("jpg"):
        turbo = features.version("libjpeg_turbo")
        found["JPEG"] = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}"
    for name, feature, library in (("WebP", "webp", "libwebp"), ("AVIF", "avif", "libavif")):
        version = features.version(feature) if features.check(feature) else None
        found[name] = f"{library} {version}" if version else None
    try:
        _register_heif()
        import pillow_heif

        found["HEIC"] = f"libheif {pillow_heif.libheif_version()}"
    except (PreviewError, AttributeError):
        found["HEIC"] = None
    found["PNG"] = found["TIFF"] = "Pillow"
    return found


@functools.cache
def _register_heif() -> None:
    """pillow-heif's HEIF/HEIC decoder (libheif), registered with Pillow once per process."""
    try:
        import pillow_heif
    except ImportError:
        raise PreviewError(
            "a HEIC/HEIF photo, and pillow-heif, which reads them, is not installed"
        ) from None
    pillow_heif.register_heif_opener()


def _decode_jpeg_bytes(data: bytes, min_size: int) -> Image.Image:
    if not data.startswith(b"\xff\xd8"):
        raise PreviewError("not JPEG data")
    return _decode_pillow(io.BytesIO(data), min_size)


def _decode_pillow(
    source: Path | io.BytesIO, min_size: int, reported: list | None = None
) -> Image.Image:
    """Pillow's decode of a file or an embedded JPEG; any failure is a PreviewError.

    ``reported``: a list to append the image's whole size (before any reduction), then the
    EXIF orientation the decoder reports, to.
    """
    try:
        # A damaged TIFF makes Pillow warn per tag; the error (if any) is what we report.
        with warnings.catch_warnings(), Image.open(source) as img:
            warnings.simplefilter("ignore")
            stored = img.size  # before draft picks a smaller scale or thumbnail
            picture = _pillow_to_rgb(img, min_size)
            if reported is not None:
                # Asked after decoding: a decoder that turned the image itself (libheif;
                # Pillow 13's TIFF) no longer reports the turn, one that did not still does.
                reported += [stored, img.getexif().get(0x0112, 1)]
            return picture
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
    if max(width, height) > min_size:
        # A JPEG downscales in the DCT domain (1/2, 1/4, 1/8) and a HEIF decodes an embedded
        # thumbnail instead, when either stays at or above min_size; other formats ignore it.
        scale = min_size / max(width, height)
        img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    img.load()
    # Loaded, an RGB image stays usable after its file closes (Pillow's context manager
    # closes only the file): no copy of the 1620x1080 frame (~1 ms a photo).
    picture = img if img.mode == "RGB" else _to_rgb(img)
    factor = max(picture.size) // min_size
    if factor >= 2:
        # What draft could not do (WebP, AVIF, PNG, TIFF, a HEIF without a large enough
        # thumbnail): the smallest whole-pixel reduction still at or above min_size.
        picture = picture.reduce(factor)
    return picture


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode; 16-bit greyscale (a scan, a PNG export) scaled, not clipped."""
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        if img.mode != "I" or img.getextrema()[1] > 255:
            img = img.point(lambda v: v / 257)
        img = img.convert("L")
    return img.convert("RGB")


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
