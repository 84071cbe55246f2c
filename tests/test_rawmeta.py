"""Tests for postselectd.rawmeta: container sniffing, capture metadata and embedded previews.

Real camera files come from ../shared (skipped when absent); everything else is built here:
JPEGs with Pillow and little-endian TIFFs by hand, so the parser is checked against bytes we
control as well as against what cameras really write.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import quicktime_movie
from PIL import Image

from postselectd import rawmeta
from postselectd.rawmeta import (
    PHOTO_SUFFIXES,
    RAW_SUFFIXES,
    UNRATED_IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    ContainerError,
    ContainerInfo,
    EmbeddedJpeg,
    expected_kind,
    read_container,
    sniff,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip("../shared not found: real camera samples are needed")
    return path


def read_or_error(path: Path) -> ContainerInfo | ContainerError:
    """The contract: a result or a ContainerError, never another exception.  The parser's last
    resort ("parser error") also counts as a failure here: it means a bug was hit."""
    try:
        return read_container(path)
    except ContainerError as exc:
        assert "parser error" not in str(exc), f"parser bug reached the safety net: {exc!r}"
        return exc


def jpeg_bytes(width: int, height: int, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", (width, height), (120, 60, 30))
    if exif is None:
        img.save(buf, "JPEG", quality=80)
    else:
        img.save(buf, "JPEG", quality=80, exif=exif.tobytes())
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# A hand-built little-endian TIFF: IFD0 (Make/Model/Orientation/DateTime/SubIFDs/ExifIFD),
# one SubIFD holding a JPEG via 0x201/0x202, an EXIF IFD with DateTimeOriginal + SubSec.
# --------------------------------------------------------------------------------------------

IFD0_AT, SUB_AT, EXIF_AT, JPEG_AT = 8, 512, 1024, 2048


def _ifd(at: int, entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """Entries are (tag, type, count, value bytes); values over 4 bytes go right after the IFD."""
    entries = sorted(entries)
    data_at = at + 2 + 12 * len(entries) + 4
    head = struct.pack("<H", len(entries))
    data = b""
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            head += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\x00")
        else:
            head += struct.pack("<HHII", tag, typ, count, data_at + len(data))
            data += value + (b"\x00" if len(value) % 2 else b"")
    return head + struct.pack("<I", next_ifd) + data


def _ascii(tag: int, text: str) -> tuple[int, int, int, bytes]:
    raw = text.encode() + b"\x00"
    return (tag, 2, len(raw), raw)


def _long(tag: int, value: int) -> tuple[int, int, int, bytes]:
    return (tag, 4, 1, struct.pack("<I", value))


def _short(tag: int, value: int) -> tuple[int, int, int, bytes]:
    return (tag, 3, 1, struct.pack("<H", value))


def build_tiff(
    jpeg: bytes,
    *,
    make: str = "NIKON CORPORATION",
    orientation: int = 8,
    ifd0_next: int = 0,
    sub_at: int = SUB_AT,
) -> bytes:
    ifd0 = _ifd(
        IFD0_AT,
        [
            _ascii(0x010F, make),
            _ascii(0x0110, "NIKON TEST"),
            _short(0x0112, orientation),
            _ascii(0x0132, "2024:03:04 05:06:59"),  # DateTime: must lose to DateTimeOriginal
            _long(0x014A, sub_at),
            _long(0x8769, EXIF_AT),
        ],
        ifd0_next,
    )
    sub = _ifd(SUB_AT, [_short(0x0103, 6), _long(0x0201, JPEG_AT), _long(0x0202, len(jpeg))])
    exif = _ifd(
        EXIF_AT,
        [
            _ascii(0x9003, "2024:03:04 05:06:07"),
            _ascii(0x9291, "25"),
            _ascii(0x9290, "99"),  # SubSecTime pairs with DateTime, not with DateTimeOriginal
        ],
    )
    out = bytearray(b"II*\x00" + struct.pack("<I", IFD0_AT))
    for at, block in ((IFD0_AT, ifd0), (SUB_AT, sub), (EXIF_AT, exif), (JPEG_AT, jpeg)):
        assert len(out) <= at, "test layout overlaps"
        out += b"\x00" * (at - len(out)) + block
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Sniffing and suffixes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe1\x00\x10Exif", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
        (b"II*\x00\x10\x00\x00\x00CR\x02\x00", "tiff"),  # CR2
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"IIRO\x08\x00\x00\x00", "tiff"),  # ORF
        (b"IIU\x00\x08\x00\x00\x00", "tiff"),  # RW2
        (b"FUJIFILMCCD-RAW 0201FF383501", "raf"),
        (b"II\x1a\x00\x00\x00HEAPCCDR\x01\x00", "crw"),
        (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01", "cr3"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heif"),  # iPhone
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heicmiaf", "heif"),  # Samsung
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "avif"),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", "avif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ", "video"),  # iPhone .MOV
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", "video"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "video"),  # QuickTime, no ftyp
        (b"RIFF\x24\x00\x00\x00AVI LIST", "video"),
        (b"\x1a\x45\xdf\xa3\x01\x00\x00\x00", "video"),  # Matroska / WebM
        (b"\x00\x00\x00\x18ftypzzzz\x00\x00\x00\x00zzzz", "unknown"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", "other"),
        (b"GIF89a\x10\x00\x10\x00", "other"),
        (b"FUJIFILM</tiff:M", "unknown"),  # the exiv2 fuzz "RAF": not a RAF header
        (b"", "unknown"),
    ],
)
def test_sniff(head: bytes, kind: str) -> None:
    assert sniff(head.ljust(32, b"\x00") if head else head) == kind


def test_expected_kind_and_suffix_sets() -> None:
    assert expected_kind(".NEF") == expected_kind(".nef") == "tiff"
    assert expected_kind("cr2") == "tiff"
    assert expected_kind(".CR3") == "cr3"
    assert expected_kind(".jpg") == expected_kind(".JPEG") == "jpeg"
    assert expected_kind(".raf") == "raf"
    assert expected_kind(".crw") == "crw"
    assert expected_kind(".png") == "png"
    assert expected_kind(".tif") == expected_kind(".TIFF") == "tiff-image"
    assert expected_kind(".HEIC") == expected_kind(".heif") == expected_kind(".HIF") == "heif"
    assert expected_kind(".webp") == "webp"
    assert expected_kind(".AVIF") == "avif"
    assert expected_kind(".raw") is None  # several unrelated formats use .raw
    assert expected_kind(".txt") is None
    assert expected_kind("") is None
    for s in (".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".dng", ".raf",
              ".orf", ".rw2", ".rwl", ".pef", ".srw", ".3fr", ".erf", ".kdc", ".dcr", ".mrw",
              ".x3f", ".iiq", ".raw"):  # fmt: skip
        assert s in RAW_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in PHOTO_SUFFIXES)
    assert PHOTO_SUFFIXES - RAW_SUFFIXES == {
        ".jpg", ".jpeg", ".tif", ".tiff", ".png", ".heic", ".heif", ".hif", ".webp", ".avif",
    }  # fmt: skip
    assert not PHOTO_SUFFIXES & (UNRATED_IMAGE_SUFFIXES | VIDEO_SUFFIXES)


# --------------------------------------------------------------------------------------------
# Synthetic files
# --------------------------------------------------------------------------------------------


def test_jpeg_named_nef_is_a_jpeg_with_its_exif(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0x9003] = "2025:12:31 23:59:58"
    exif.get_ifd(0x8769)[0x9291] = "045"
    data = jpeg_bytes(300, 200, exif)
    path = tmp_path / "DSC_0001.NEF"
    path.write_bytes(data)
    assert sniff(data[:32]) == "jpeg"
    info = read_container(path)
    assert (info.kind, info.format_name) == ("jpeg", "JPEG")
    assert (info.make, info.model, info.orientation) == ("Canon", "Canon EOS R5", 6)
    assert info.capture_time == datetime(2025, 12, 31, 23, 59, 58, 45000)
    assert info.previews == (EmbeddedJpeg(0, len(data), 300, 200, "JPEG"),)
    assert expected_kind(path.suffix) != info.kind  # what the caller checks


def test_jpeg_without_exif(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes(64, 48))
    info = read_container(path)
    assert (info.make, info.model, info.orientation, info.capture_time) == (None, None, 1, None)
    assert [(p.width, p.height) for p in info.previews] == [(64, 48)]


def test_jpeg_cut_before_its_frame_header_is_an_error(tmp_path: Path) -> None:
    data = jpeg_bytes(64, 48)
    sof = data.index(b"\xff\xc0")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: sof + 3])
    with pytest.raises(ContainerError, match="frame header"):
        read_container(path)


def test_synthetic_tiff_subifd_exif_and_sub_second_time(tmp_path: Path) -> None:
    jpeg = jpeg_bytes(320, 240)
    path = tmp_path / "x.nef"
    path.write_bytes(build_tiff(jpeg))
    info = read_container(path)
    assert (info.kind, info.format_name) == ("tiff", "NEF")
    assert (info.make, info.model, info.orientation) == ("NIKON CORPORATION", "NIKON TEST", 8)
    # DateTimeOriginal + SubSecTimeOriginal "25" = .25 s; DateTime/SubSecTime are ignored.
    assert info.capture_time == datetime(2024, 3, 4, 5, 6, 7, 250000)
    assert info.previews == (EmbeddedJpeg(JPEG_AT, len(jpeg), 320, 240, "SubIFD0"),)


def test_preview_running_past_eof_is_dropped_metadata_kept(tmp_path: Path) -> None:
    jpeg = jpeg_bytes(320, 240)
    path = tmp_path / "cut.nef"
    path.write_bytes(build_tiff(jpeg)[: JPEG_AT + len(jpeg) - 1])
    info = read_container(path)
    assert info.previews == ()
    assert info.previews_cut == ("SubIFD0",)  # the file says a preview is there, not whole
    assert info.model == "NIKON TEST"
    assert info.capture_time == datetime(2024, 3, 4, 5, 6, 7, 250000)


def test_preview_that_is_not_a_jpeg_is_dropped(tmp_path: Path) -> None:
    data = bytearray(build_tiff(jpeg_bytes(32, 32)))
    data[JPEG_AT : JPEG_AT + 2] = b"\x00\x00"
    path = tmp_path / "nojpeg.nef"
    path.write_bytes(bytes(data))
    assert read_container(path).previews == ()


def test_out_of_range_orientation_reads_as_1(tmp_path: Path) -> None:
    path = tmp_path / "o.nef"
    path.write_bytes(build_tiff(jpeg_bytes(16, 16), orientation=9))
    assert read_container(path).orientation == 1


def test_ifd_loops_terminate(tmp_path: Path) -> None:
    # IFD0's next pointer and its SubIFD both point back at IFD0.
    path = tmp_path / "loop.nef"
    path.write_bytes(build_tiff(jpeg_bytes(16, 16), ifd0_next=IFD0_AT, sub_at=IFD0_AT))
    t0 = time.monotonic()
    info = read_container(path)
    assert time.monotonic() - t0 < 1.0
    assert info.make == "NIKON CORPORATION"


def test_ifd0_past_eof_is_a_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.nef"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 10_000_000) + b"\x00" * 100)
    with pytest.raises(ContainerError, match="past end of file"):
        read_container(path)


def test_ifd0_with_absurd_entry_count_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.nef"
    path.write_bytes(b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 60000) + b"\x00" * 100)
    with pytest.raises(ContainerError, match="entries"):
        read_container(path)


def test_plain_tiff_is_tiff_image(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    Image.new("RGB", (40, 30)).save(path, "TIFF")
    info = read_container(path)
    assert (info.kind, info.format_name, info.previews) == ("tiff-image", "TIFF", ())
    assert sniff(path.read_bytes()[:32]) == "tiff"  # 32 bytes cannot tell a raw from a TIFF


def test_png_and_unknown(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert read_container(png).kind == "png"
    junk = tmp_path / "junk.nef"
    rng = random.Random(1)  # one generator: a new Random(1) per byte wrote 4096 "D"s (text)
    junk.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    info = read_container(junk)
    assert (info.kind, info.format_name, info.previews) == ("unknown", "unknown", ())


# --------------------------------------------------------------------------------------------
# Phone and web formats, videos and other files
# --------------------------------------------------------------------------------------------


def phone_exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone XS"
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2026:05:01 14:03:22"
    exif.get_ifd(0x8769)[0x9291] = "40"
    return exif


def image_file(path: Path, exif: Image.Exif | None = None, size=(96, 64), **options) -> Path:
    """A small real file of the format its suffix names, written by Pillow (and pillow-heif for
    HEIC, which registers itself only where a test asks for it)."""
    if path.suffix.lower() in (".heic", ".heif", ".hif"):
        pillow_heif = pytest.importorskip("pillow_heif")
        pillow_heif.register_heif_opener()
    picture = Image.new("RGB", size, (200, 120, 40))
    fmt = {".heic": "HEIF", ".jpg": "WEBP"}.get(path.suffix.lower())  # .jpg: a WebP so named
    if exif is not None:
        options["exif"] = exif.tobytes()
    picture.save(path, fmt, **options)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "format_name", "orientation"),
    [
        ("IMG_0001.HEIC", "heif", "HEIC", 1),  # the container's irot turns it, not the EXIF tag
        ("IMG_0002.avif", "avif", "AVIF", 1),
        ("IMG_0003.webp", "webp", "WebP", 6),
        ("IMG_0004.png", "png", "PNG", 6),
    ],
)
def test_phone_and_web_formats_give_camera_and_capture_time(
    name: str, kind: str, format_name: str, orientation: int, tmp_path: Path
) -> None:
    path = image_file(tmp_path / name, phone_exif())
    info = read_container(path)
    assert (info.kind, info.format_name, info.previews) == (kind, format_name, ())
    assert (info.make, info.model, info.orientation) == ("Apple", "iPhone XS", orientation)
    assert info.capture_time == datetime(2026, 5, 1, 14, 3, 22, 400000)  # bursts need it


def test_phone_formats_without_exif_are_still_recognised(tmp_path: Path) -> None:
    for name in ("a.HEIC", "b.avif", "c.webp", "d.png"):
        info = read_container(image_file(tmp_path / name))
        assert info.kind == expected_kind(Path(name).suffix)
        assert (info.make, info.capture_time, info.orientation) == (None, None, 1)


def test_webp_named_jpg_is_a_webp(tmp_path: Path) -> None:
    # Saved from a web page: the bytes decide, not the name.
    path = image_file(tmp_path / "client_photo.jpg", quality=80)
    info = read_container(path)
    assert (info.kind, info.format_name) == ("webp", "WebP")
    assert expected_kind(path.suffix) != info.kind


@pytest.mark.parametrize(
    ("data", "kind", "format_name"),
    [
        (quicktime_movie(), "video", "QuickTime MOV"),
        (b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00isomiso2mp41" + bytes(64), "video", "MP4"),
        (b"\x00\x00\x00\x18ftyp3gp4\x00\x00\x00\x00isom3gp4" + bytes(64), "video", "3GP"),
        (b"%PDF-1.7\n" + bytes(64), "other", "PDF document"),
        (b"PK\x03\x04\x14\x00" + bytes(64), "other", "ZIP archive"),
        (b"GIF89a\x10\x00\x10\x00" + bytes(64), "other", "GIF image"),
        (
            b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>\n<x:xmpmeta>',
            "other",
            "XMP sidecar",
        ),
        (
            b"Shot list for Saturday: ceremony 14:00, portraits 15:30\n",
            "other",
            "text file",
        ),
        (b"\x00MRM\x00\x00\x00\x20" + bytes(64), "unknown", "MRW"),  # LibRaw may know it
    ],
)
def test_videos_and_other_files_say_what_they_are(
    data: bytes, kind: str, format_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "IMG_0005.JPG"
    path.write_bytes(data)
    info = read_container(path)
    assert (info.kind, info.format_name, info.previews) == (kind, format_name, ())


def test_heif_exif_in_the_idat_box_is_read(tmp_path: Path) -> None:
    # Some writers keep the Exif item inside the meta box (construction method 1).
    exif = b"\x00\x00\x00\x00" + phone_exif().tobytes()  # 4-byte offset to the TIFF header
    infe = b"\x02\x00\x00\x00" + struct.pack(">HH", 7, 0) + b"Exif" + b"\x00"
    iinf = b"\x00\x00\x00\x00" + struct.pack(">H", 1) + _box(b"infe", infe)
    # iloc version 1: 4-byte offsets and lengths; item 7, construction method 1 (idat)
    iloc = b"\x01\x00\x00\x00" + bytes([0x44, 0x00]) + struct.pack(">HHHH", 1, 7, 1, 0)
    iloc += struct.pack(">HII", 1, 0, len(exif))
    meta = b"\x00\x00\x00\x00" + _box(b"iinf", iinf) + _box(b"iloc", iloc) + _box(b"idat", exif)
    ftyp = _box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic")
    path = tmp_path / "IMG_0006.HEIC"
    path.write_bytes(ftyp + _box(b"meta", meta) + _box(b"mdat", bytes(64)))
    info = read_container(path)
    assert (info.kind, info.make, info.model) == ("heif", "Apple", "iPhone XS")
    assert info.capture_time == datetime(2026, 5, 1, 14, 3, 22, 400000)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def test_heif_without_a_meta_box_is_a_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.HEIC"
    path.write_bytes(_box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic") + _box(b"mdat", bytes(64)))
    with pytest.raises(ContainerError, match="HEIC has no meta box"):
        read_container(path)


@pytest.mark.parametrize("name", ["IMG_0010.HEIC", "IMG_0011.avif"])
def test_a_heif_cut_short_is_an_error_not_an_image(name: str, tmp_path: Path) -> None:
    # libheif decodes missing tiles as flat green without a word: a half-copied HEIC must
    # not reach it.
    data = image_file(tmp_path / name, phone_exif(), size=(256, 192)).read_bytes()
    kind = "HEIC" if name.endswith("HEIC") else "AVIF"
    for cut in (len(data) - 1, len(data) - 10):  # inside the image data, after the meta box
        (tmp_path / "cut").write_bytes(data[:cut])
        with pytest.raises(ContainerError, match=f"^{kind} image data runs past the end"):
            read_container(tmp_path / "cut")
    (tmp_path / "cut").write_bytes(data[:40])
    with pytest.raises(ContainerError, match=f"^{kind} (meta box runs past|has no meta box)"):
        read_container(tmp_path / "cut")


@pytest.mark.parametrize("name", ["IMG_0007.HEIC", "IMG_0008.avif", "IMG_0009.webp", "IMG.png"])
def test_phone_formats_survive_truncation_and_byte_flips(name: str, tmp_path: Path) -> None:
    data = image_file(tmp_path / name, phone_exif(), size=(64, 48)).read_bytes()
    path = tmp_path / ("damaged" + Path(name).suffix)
    rng = random.Random(99)
    for cut in sorted({rng.randrange(1, len(data)) for _ in range(60)}):
        path.write_bytes(data[:cut])
        _check_result(read_or_error(path), cut)
    hot = min(len(data), 4096)  # the boxes and chunks with the metadata come first
    for _ in range(300):
        damaged = bytearray(data)
        damaged[rng.randrange(hot)] ^= rng.randrange(1, 256)
        path.write_bytes(damaged)
        _check_result(read_or_error(path), len(data))


def test_empty_short_missing_and_special_files(tmp_path: Path) -> None:
    (tmp_path / "empty.nef").write_bytes(b"")
    with pytest.raises(ContainerError, match="file is empty"):
        read_container(tmp_path / "empty.nef")
    (tmp_path / "short.nef").write_bytes(b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00")
    with pytest.raises(ContainerError, match="file is 12 bytes: too short to be a photo"):
        read_container(tmp_path / "short.nef")
    with pytest.raises(ContainerError, match="cannot open"):
        read_container(tmp_path / "missing.nef")
    with pytest.raises(ContainerError, match="not a regular file"):
        read_container(tmp_path)
    fifo = tmp_path / "fifo.nef"
    os.mkfifo(fifo)  # opening a FIFO for reading must not block forever
    with pytest.raises(ContainerError, match="not a regular file"):
        read_container(fifo)


# --------------------------------------------------------------------------------------------
# Real NEFs (samples/nef: D7100 structure, real photographs in every preview slot)
# --------------------------------------------------------------------------------------------


def _nef_table() -> dict[str, datetime]:
    """Capture times from samples/nef/README.md's table ('2026:05:01 14:03:22.10')."""
    times: dict[str, datetime] = {}
    for line in shared("samples", "nef", "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].endswith(".NEF"):
            times[cells[0]] = datetime.strptime(cells[1], "%Y:%m:%d %H:%M:%S.%f")
    return times


NEF_NAMES = [f"DSC_{n:04d}.NEF" for n in range(101, 114)]


@pytest.mark.parametrize("name", NEF_NAMES)
def test_nef_samples(name: str) -> None:
    path = shared("samples", "nef", name)
    info = read_container(path)
    assert (info.kind, info.format_name) == ("tiff", "NEF")
    assert (info.make, info.model) == ("NIKON CORPORATION", "NIKON D7100")
    assert info.orientation == (6 if name == "DSC_0108.NEF" else 1)
    # The 160x120 RGB bitmap in IFD0 is not a JPEG and is not listed: three JPEGs.
    assert [(p.width, p.height, p.where) for p in info.previews] == [
        (640, 424, "MakerNote PreviewIFD"),
        (1620, 1080, "SubIFD2"),
        (6000, 4000, "SubIFD0"),
    ]
    # Its sensor strip is cut off (a D7100 head), its previews are whole: nothing is cut.
    assert info.previews_cut == ()
    expected = _nef_table()[name]
    assert info.capture_time is not None
    assert abs((info.capture_time - expected).total_seconds()) < 0.010
    size = path.stat().st_size
    with open(path, "rb") as f:
        for p in info.previews:
            assert p.offset + p.length <= size
            f.seek(p.offset)
            assert f.read(2) == b"\xff\xd8"


def test_nef_sub_seconds_pair_with_their_own_date() -> None:
    # DSC_0108: SubSecTime (with DateTime) is 40, SubSecTimeOriginal is 00 -> .00, not .40.
    info = read_container(shared("samples", "nef", "DSC_0108.NEF"))
    assert info.capture_time == datetime(2026, 5, 1, 14, 21, 30, 0)


def test_nef_previews_decode_with_pillow_at_the_stated_size() -> None:
    path = shared("samples", "nef", "DSC_0113.NEF")
    info = read_container(path)
    with open(path, "rb") as f:
        for p in info.previews:
            f.seek(p.offset)
            img = Image.open(io.BytesIO(f.read(p.length)))
            assert img.format == "JPEG" and img.size == (p.width, p.height)
        small = info.previews[0]
        f.seek(small.offset)
        Image.open(io.BytesIO(f.read(small.length))).load()  # the cheap one decodes fully


def test_nef_reads_only_a_few_kilobytes(monkeypatch: pytest.MonkeyPatch) -> None:
    path = shared("samples", "nef", "DSC_0113.NEF")
    real_pread = os.pread
    total = 0

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        nonlocal total
        data = real_pread(fd, n, offset)
        total += len(data)
        return data

    monkeypatch.setattr(rawmeta.os, "pread", counting_pread)
    read_container(path)
    assert 0 < total < 64 * 1024


def test_rawpy_extract_thumb_is_our_largest_preview() -> None:
    rawpy = pytest.importorskip("rawpy")
    path = shared("samples", "nef", "DSC_0113.NEF")
    largest = read_container(path).previews[-1]
    with rawpy.imread(str(path)) as raw:
        thumb = raw.extract_thumb()
    assert thumb.format == rawpy.ThumbFormat.JPEG
    with open(path, "rb") as f:
        f.seek(largest.offset)
        ours = f.read(largest.length)
    # LibRaw does not hand out the file's bytes verbatim: when the embedded JPEG has no Exif
    # APP1 (this one starts FF D8 FF E0 JFIF) it writes FF D8, an APP1 Exif block of its own
    # (1386 bytes here) and then the rest of the embedded JPEG.  So: same JPEG, same offset and
    # length, behind LibRaw's inserted header.
    data = thumb.data
    assert data[:4] == b"\xff\xd8\xff\xe1" and data[6:12] == b"Exif\x00\x00"
    inserted = 2 + struct.unpack(">H", data[4:6])[0]
    assert data[2 + inserted :] == ours[2:]
    assert len(data) - inserted == largest.length


# --------------------------------------------------------------------------------------------
# Every sample in samples/raw: a result or a ContainerError.  What each gives (kind, format,
# make, model, orientation, capture time, preview sizes smallest first) -- checked by exiftool
# 12.57 by hand where it reads the file:
# --------------------------------------------------------------------------------------------

T = datetime
RAW_SAMPLES: dict[str, tuple[object, ...]] = {
    # complete D7100 head: MakerNote preview is the camera's own 570x375
    "nikon-d7100-head.NEF": (
        "tiff", "NEF", "NIKON CORPORATION", "NIKON D7100",
        1, T(2013, 9, 3, 9, 45, 16, 400000), [(570, 375), (1620, 1080), (6000, 4000)],
    ),
    # only 160x120 / 320x218 RGB bitmaps, no JPEG (D1); the scanner NEF has an 869x593 JPEG
    "good/nikon-d1_RAW_NIKON_D1.NEF": (
        "tiff", "NEF", "NIKON CORPORATION", "NIKON D1",
        1, T(2000, 11, 19, 13, 1, 50, 240000), [],
    ),
    "good/nikon-coolscan-iv_Nikon_uncompressed.nef": (
        "tiff", "NEF", "Nikon", "Nikon COOLSCAN IV ED",
        1, T(2021, 1, 11, 11, 18, 19), [(869, 593)],
    ),
    "good/canon-eos-d30_RAW_CANON_D30_SRGB.CRW": (
        "crw", "CRW", "Canon", "Canon EOS D30",
        1, T(2002, 11, 24, 15, 11, 22), [(1440, 960)],
    ),
    "good/canon-eos-d30_imagemeta_CRW.CRW": (
        "crw", "CRW", "Canon", "Canon EOS D30",
        1, T(2018, 1, 1, 13, 3, 32), [(1440, 960)],
    ),
    "good/kodak-dc50_RAW_KODAK_DC50.KDC": (
        "tiff", "KDC", "Eastman Kodak Company", "Kodak Digital Science DC50 Zoom Camera",
        1, T(1997, 4, 23, 8, 0, 47), [],
    ),
    # headerless sensor dump: only LibRaw knows it
    "good/kodak-c330_RAW_KODAK_C330.raw": (
        "unknown", "unknown", None, None,
        1, None, [],
    ),
    # no Make/Model in IFD0: model falls back to UniqueCameraModel
    "good/blackmagic-pocket4k_Blackmagic.dng": (
        "tiff", "DNG", None, "Blackmagic Pocket Cinema Camera 4K",
        1, None, [],
    ),
    "broken/TRUNC_sony-slt-a55v_ARW-head.ARW": (
        "tiff", "ARW", "SONY", "SLT-A55V",
        1, T(2017, 10, 22, 11, 54, 20), [(160, 120), (1616, 1080)],
    ),
    # LibRaw: unsupported; its IFD0 strip is a complete 2784x1856 JPEG
    "broken/TRUNC_canon-1ds-mk3_CR2-head.CR2": (
        "tiff", "CR2", "Canon", "Canon EOS-1Ds Mark III",
        1, T(2007, 10, 18, 13, 44, 32), [(160, 120), (2784, 1856)],
    ),
    "broken/UNSUPPORTED_gopro-hero8_Hero8.GPR": (
        "tiff", "DNG", "GoPro", "HERO8 Black",
        2, T(2020, 5, 28, 4, 47, 27), [],
    ),
    # LibRaw finds no thumbnail in these two; THMB 160x120 + PRVW 1620x1080
    "broken/TRUNC_canon-r6_nom-exif.cr3": (
        "cr3", "CR3", "Canon", "Canon EOS R6",
        1, T(2025, 9, 6, 20, 24, 47, 720000), [(160, 120), (1620, 1080)],
    ),
    "broken/PRUNED_canon-r6_exiv2.CR3": (
        "cr3", "CR3", "Canon", "Canon EOS R6",
        1, T(2021, 5, 12, 12, 21, 21, 920000), [(160, 120), (1620, 1080)],
    ),
    # preview offsets point past EOF (image data stripped): dropped
    "broken/PRUNED_iphone12pro_IMG_1361.dng": (
        "tiff", "DNG", "Apple", "iPhone 12 Pro",
        6, T(2020, 12, 29, 14, 24, 45, 700000), [],
    ),
    "broken/TRIM_canon-powershot-s40_exiv2.crw": (
        "crw", "CRW", "Canon", "Canon PowerShot S40",
        1, T(2005, 4, 23, 17, 54, 36), [(160, 120)],
    ),
    # fuzzer PoCs: recognised magic, nothing readable inside -> empty partial results
    "broken/FUZZ_exiv2_issue_1097_poc.crw": (
        "crw", "CRW", None, None,
        1, None, [],
    ),
    "broken/FUZZ_exiv2_issue_839_poc.rw2": (
        "tiff", "RW2", None, None,
        1, None, [],
    ),
    # "FUJIFILM" + XMP garbage: not a RAF header at all
    "broken/FUZZ_exiv2_issue_857_poc.raf": (
        "unknown", "unknown", None, None,
        1, None, [],
    ),
    # ExifTool's metadata-only test files: previews are 26-29 byte dummies -> dropped
    "broken/TRIM_nikon-d70_exiftool_Nikon.nef": (
        "tiff", "NEF", "NIKON CORPORATION", "NIKON D70",
        1, T(2004, 6, 9, 16, 2, 35), [],
    ),
    "broken/TRIM_canon-350d_exiftool_CanonRaw.cr2": (
        "tiff", "CR2", "Canon", "Canon EOS 350D DIGITAL",
        1, T(2005, 8, 3, 18, 59, 18), [],
    ),
    "broken/TRIM_canon-350d_exiftool_DNG.dng": (
        "tiff", "DNG", "Canon", "Canon EOS 350D DIGITAL",
        1, T(2005, 8, 3, 18, 59, 18), [],
    ),
    "broken/TRIM_canon-m50_exiftool_CanonRaw.cr3": (
        "cr3", "CR3", "Canon", "Canon EOS M50",
        1, T(2018, 2, 21, 12, 8, 56, 210000), [],
    ),
    "broken/TRIM_canon-300d_exiftool_CanonRaw.crw": (
        "crw", "CRW", "Canon", "Canon EOS DIGITAL REBEL",
        1, T(2003, 11, 10, 17, 39, 26), [],
    ),
    # main JPEG is an 8x8 dummy; its EXIF IFD1 160x120 is what LibRaw extracts
    "broken/TRIM_fuji-s5pro_exiftool_FujiFilm.raf": (
        "raf", "RAF", "FUJIFILM", "FinePix S5Pro",
        1, T(2007, 5, 22, 13, 58, 30), [(8, 8), (160, 120)],
    ),
    "broken/TRIM_panasonic-lx3_exiftool_Panasonic.rw2": (
        "tiff", "RW2", "Panasonic", "DMC-LX3",
        1, T(2008, 8, 6, 15, 21, 56), [(8, 8)],
    ),
}  # fmt: skip


def test_raw_sample_table_covers_every_file() -> None:
    root = shared("samples", "raw")
    on_disk = {
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".tsv"
    }
    assert on_disk == set(RAW_SAMPLES)


@pytest.mark.parametrize("rel", sorted(RAW_SAMPLES))
def test_raw_samples(rel: str) -> None:
    path = shared("samples", "raw", rel)
    got = read_or_error(path)
    assert isinstance(got, ContainerInfo), got
    kind, fmt, make, model, orientation, when, sizes = RAW_SAMPLES[rel]
    assert (got.kind, got.format_name, got.make, got.model) == (kind, fmt, make, model)
    assert (got.orientation, got.capture_time) == (orientation, when)
    assert [(p.width, p.height) for p in got.previews] == sizes
    pixels = [p.width * p.height for p in got.previews]
    assert pixels == sorted(pixels)


def test_cr2_head_that_libraw_refuses_still_gives_its_jpeg() -> None:
    path = shared("samples", "raw", "broken", "TRUNC_canon-1ds-mk3_CR2-head.CR2")
    big = read_container(path).previews[-1]
    assert (big.width, big.height, big.where) == (2784, 1856, "IFD0")
    with open(path, "rb") as f:
        f.seek(big.offset)
        assert Image.open(io.BytesIO(f.read(big.length))).size == (2784, 1856)


@pytest.mark.parametrize("name", ["TRUNC_canon-r6_nom-exif.cr3", "PRUNED_canon-r6_exiv2.CR3"])
def test_cr3_prvw(name: str) -> None:
    path = shared("samples", "raw", "broken", name)
    prvw = [p for p in read_container(path).previews if p.where == "CR3 PRVW"]
    assert [(p.width, p.height) for p in prvw] == [(1620, 1080)]
    with open(path, "rb") as f:
        f.seek(prvw[0].offset)
        assert Image.open(io.BytesIO(f.read(prvw[0].length))).size == (1620, 1080)


# --------------------------------------------------------------------------------------------
# Hostile input: truncations and byte flips (seeded).  Hang guard, not a benchmark.
# --------------------------------------------------------------------------------------------

FUZZ_FILES = [
    ("nef", "DSC_0113.NEF"),
    ("raw", "broken", "TRUNC_canon-r6_nom-exif.cr3"),
    ("raw", "broken", "TRUNC_canon-1ds-mk3_CR2-head.CR2"),
    ("raw", "good", "canon-eos-d30_RAW_CANON_D30_SRGB.CRW"),
    ("raw", "broken", "TRIM_fuji-s5pro_exiftool_FujiFilm.raf"),
]


def _check_result(got: ContainerInfo | ContainerError, size: int) -> None:
    if isinstance(got, ContainerInfo):
        for p in got.previews:
            assert p.offset >= 0 and p.length > 0 and p.offset + p.length <= size
            assert p.width > 0 and p.height > 0


@pytest.mark.parametrize("parts", FUZZ_FILES, ids=lambda parts: parts[-1])
def test_truncations(parts: tuple[str, ...], tmp_path: Path) -> None:
    src = shared("samples", *parts)
    path = tmp_path / src.name
    shutil.copyfile(src, path)
    size = path.stat().st_size
    rng = random.Random(1234)
    cuts = sorted((rng.randrange(1, size) for _ in range(50)), reverse=True)
    t0 = time.monotonic()
    kept_metadata = 0
    for cut in cuts:  # shrink one copy step by step
        os.truncate(path, cut)
        got = read_or_error(path)
        _check_result(got, cut)
        kept_metadata += isinstance(got, ContainerInfo) and got.make is not None
    assert time.monotonic() - t0 < 5.0
    if src.suffix != ".CRW":  # CIFF keeps its directory at the very end: any cut loses it
        assert kept_metadata > 0


def test_truncated_nef_drops_only_the_cut_preview(tmp_path: Path) -> None:
    src = shared("samples", "nef", "DSC_0113.NEF")
    path = tmp_path / "cut.NEF"
    path.write_bytes(src.read_bytes()[:2_000_000])  # inside the 6000x4000 JpgFromRaw
    info = read_container(path)
    assert [(p.width, p.height) for p in info.previews] == [(640, 424), (1620, 1080)]
    assert info.previews_cut == ("SubIFD0",)
    assert info.capture_time == datetime(2026, 5, 1, 15, 10)


def test_a_nef_written_in_pieces_names_its_previews_past_the_end_until_it_is_whole(
    tmp_path: Path,
) -> None:
    # Issue #20: a file written in chunks was rated from its first 10 %. The raw's own
    # offsets say which previews cannot be complete yet.
    data = shared("samples", "nef", "DSC_0113.NEF").read_bytes()
    path = tmp_path / "DSC_0113.NEF"
    seen = []
    for end in range(640 * 1024, len(data) + 640 * 1024, 640 * 1024):
        path.write_bytes(data[:end])
        info = read_container(path)
        seen.append((info.previews_cut, [p.where for p in info.previews]))
    assert seen == [
        (("SubIFD0", "SubIFD2"), ["MakerNote PreviewIFD"]),
        (("SubIFD0",), ["MakerNote PreviewIFD", "SubIFD2"]),
        (("SubIFD0",), ["MakerNote PreviewIFD", "SubIFD2"]),
        (("SubIFD0",), ["MakerNote PreviewIFD", "SubIFD2"]),
        (("SubIFD0",), ["MakerNote PreviewIFD", "SubIFD2"]),
        ((), ["MakerNote PreviewIFD", "SubIFD2", "SubIFD0"]),
    ]


@pytest.mark.parametrize(
    "rel, cut",
    [
        # Image data stripped: its IFD0 preview (a 4032x3024 JPEG) points past the end.
        ("broken/PRUNED_iphone12pro_IMG_1361.dng", ("IFD0",)),
        # Only the sensor data (IFD3, lossless JPEG slices) lies past the end: not a preview.
        ("broken/TRUNC_canon-1ds-mk3_CR2-head.CR2", ()),
        ("broken/TRUNC_sony-slt-a55v_ARW-head.ARW", ()),
        ("nikon-d7100-head.NEF", ()),
    ],
)
def test_previews_cut_are_previews_never_sensor_data(rel: str, cut: tuple[str, ...]) -> None:
    assert read_container(shared("samples", "raw", *rel.split("/"))).previews_cut == cut


@pytest.mark.parametrize("parts", FUZZ_FILES, ids=lambda parts: parts[-1])
def test_byte_flips(parts: tuple[str, ...], tmp_path: Path) -> None:
    src = shared("samples", *parts)
    path = tmp_path / src.name
    shutil.copyfile(src, path)
    size = path.stat().st_size
    rng = random.Random(4321)
    # Structures (IFDs, MakerNote, boxes, JPEG headers) sit in the first ~200 KB; a flip in
    # entropy-coded JPEG data tests nothing, so most flips land there.
    hot = min(size, 200_000)
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(200):
            pos = rng.randrange(hot) if i % 4 else rng.randrange(size)
            (orig,) = os.pread(fd, 1, pos)
            os.pwrite(fd, bytes([orig ^ rng.randrange(1, 256)]), pos)
            _check_result(read_or_error(path), size)
            os.pwrite(fd, bytes([orig]), pos)
    finally:
        os.close(fd)
    assert time.monotonic() - t0 < 5.0
