"""Phone and web photos (HEIC, AVIF, WebP, PNG, TIFF) go through the same preview stage as
raws and JPEGs; videos and other files are named for what their bytes are (issue #19).

The photos are made here from a real phone photograph (../shared/eval/blur), stored turned
with an EXIF orientation as phones store portrait frames. Real files from public test
corpora (tests/data/formats) are checked at the end.
"""

from __future__ import annotations

import csv
import hashlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, copy_file, phone_photo, quicktime_movie, real_photo, shared_path
from PIL import Image

from postselectd.preview import PreviewError, load_preview

FORMATS = ["IMG_0001.HEIC", "IMG_0002.avif", "IMG_0003.webp", "IMG_0004.png", "IMG_0005.tif"]


def _difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two same-size pictures, 0-255."""
    assert a.size == b.size, (a.size, b.size)
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


@pytest.mark.parametrize("name", FORMATS)
def test_a_portrait_stored_turned_is_analysed_upright(name: str, tmp_path: Path):
    # HEIC and AVIF keep the turn in the container (irot), the others in the EXIF tag; an
    # iPhone writes both, and a turn applied twice is as wrong as none.
    upright = real_photo().transpose(Image.Transpose.ROTATE_90)  # a portrait frame
    path = phone_photo(tmp_path / name, upright, orientation=6)
    preview = load_preview(path)
    assert (preview.width, preview.height) == upright.size == (768, 1024)
    assert _difference(preview.picture, upright) < 6
    assert _difference(preview.picture, upright.transpose(Image.Transpose.ROTATE_180)) > 20


@pytest.mark.parametrize("name", FORMATS)
def test_phone_and_web_photos_give_camera_and_capture_time(name: str, tmp_path: Path):
    preview = load_preview(phone_photo(tmp_path / name, real_photo(long_side=700)))
    assert preview.picture.mode == "RGB" and preview.image.max() > 100
    assert preview.source == f"{preview.format_name} file"
    if name.endswith(".tif"):
        return  # Pillow writes a TIFF's EXIF tags into IFD0 without the EXIF IFD
    assert preview.camera == "Apple iPhone XS"
    assert preview.capture_time == datetime(2026, 5, 1, 14, 3, 22)


def test_a_webp_saved_as_jpg_is_rated_as_the_webp_it_is(tmp_path: Path):
    # It failed with "LibRaw does not support this file": the bytes say WebP.
    path = phone_photo(tmp_path / "client_0042.jpg", real_photo(), quality=85)
    preview = load_preview(path)
    assert preview.format_name == "WebP"
    assert "file is a WebP named .jpg" in preview.notes
    assert (preview.width, preview.height) == (1024, 768)


@pytest.mark.parametrize("name", ["big.webp", "big.avif", "big.png"])
def test_a_large_photo_is_reduced_to_the_smallest_adequate_size(name: str, tmp_path: Path):
    path = phone_photo(tmp_path / name, real_photo(long_side=None))  # 2048x1536
    preview = load_preview(path, min_size=1024)
    assert (preview.width, preview.height) == (1024, 768)
    small = load_preview(path, min_size=640)
    assert (small.width, small.height) == (683, 512)  # 1/3: the smallest at or above 640
    assert load_preview(path, min_size=1500).width == 2048  # 1/2 would be too small


def test_a_heic_thumbnail_large_enough_is_decoded_instead_of_the_image(tmp_path: Path):
    pillow_heif = pytest.importorskip("pillow_heif")
    if "draft" not in vars(pillow_heif.as_plugin._LibHeifImageFile):
        pytest.skip(f"pillow-heif {pillow_heif.__version__} cannot decode a thumbnail alone")
    path = phone_photo(tmp_path / "IMG_0006.HEIC", real_photo(long_side=None), thumbnails=[1100])
    preview = load_preview(path, min_size=1024)
    assert (preview.width, preview.height) == (1100, 824)  # not 1024x768 from the 2048x1536
    assert _difference(preview.picture.resize((1024, 768)), real_photo()) < 8


def test_a_half_copied_heic_is_not_rated_from_its_green_gap(tmp_path: Path):
    # libheif fills the tiles a cut file lacks with flat green and reports nothing.
    data = phone_photo(tmp_path / "IMG_0009.HEIC", real_photo()).read_bytes()
    (tmp_path / "IMG_0010.HEIC").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(PreviewError) as failure:
        load_preview(tmp_path / "IMG_0010.HEIC")
    assert str(failure.value) == "HEIC image data runs past the end of the file (file truncated?)"


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path):
    # A 16-bit scan or export: Pillow's plain conversion clips it to white.
    grey = np.asarray(real_photo().convert("L"), np.uint16) * 257
    for name in ("scan.png", "scan.tif"):
        Image.fromarray(grey).save(tmp_path / name)
        preview = load_preview(tmp_path / name)
        assert _difference(preview.picture.convert("L"), real_photo().convert("L")) < 2


def test_a_video_is_named_as_not_a_photo(tmp_path: Path):
    movie = tmp_path / "IMG_0007.MOV"
    movie.write_bytes(quicktime_movie())
    with pytest.raises(PreviewError, match=r"^a video file \(QuickTime MOV\), not a photo$"):
        load_preview(movie)
    mp4 = tmp_path / "clip.jpg"  # the name does not matter
    mp4.write_bytes(b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00isomiso2mp41" + bytes(64))
    with pytest.raises(PreviewError, match=r"^a video file \(MP4\), not a photo$"):
        load_preview(mp4)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("invoice.jpg", b"%PDF-1.7\n" + bytes(200), "a PDF document, not a photo"),
        ("DSC_0001.NEF", b"Shot list: ceremony 14:00\n" * 20, "a text file, not a photo"),
        ("DSC_0002.NEF", b"\x17\x3b" * 300, "not a photo format postselectd or LibRaw can read"),
    ],
)
def test_a_file_that_is_no_photo_says_what_its_bytes_are(
    name: str, data: bytes, reason: str, tmp_path: Path
):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(PreviewError) as failure:
        load_preview(tmp_path / name)
    assert str(failure.value) == reason


def test_a_gif_is_a_picture_postselectd_does_not_rate(tmp_path: Path):
    real_photo().save(tmp_path / "IMG_0008.jpg", "GIF")
    with pytest.raises(PreviewError, match=r"^a GIF image, which postselectd does not rate$"):
        load_preview(tmp_path / "IMG_0008.jpg")


def test_a_raw_libraw_refuses_is_named_by_its_real_type(tmp_path: Path):
    # A 9 KB metadata-only CR2: LibRaw cannot open it ("does not support this file" before).
    name = "TRIM_canon-350d_exiftool_CanonRaw.cr2"
    path = copy_file(shared_path("samples", "raw", "broken", name), tmp_path)
    with pytest.raises(PreviewError, match=r"^a Canon CR2 that LibRaw cannot open$"):
        load_preview(path)
    gpr = "UNSUPPORTED_gopro-hero8_Hero8.GPR"
    path = copy_file(shared_path("samples", "raw", "broken", gpr), tmp_path)
    with pytest.raises(PreviewError, match=r"a GoPro DNG whose raw data LibRaw cannot decode"):
        load_preview(path)


# --- real files from public test corpora (tests/data/formats) ---------------------------
# Files as phones, browsers and encoders wrote them; MANIFEST.tsv there gives each one's
# source@commit, path, sha256 and licence.

FORMATS_DIR = Path(__file__).parent / "data" / "formats"


def formats_sample(name: str) -> Path:
    return FORMATS_DIR / name


def test_the_real_files_are_the_ones_the_manifest_names():
    with open(FORMATS_DIR / "MANIFEST.tsv", newline="") as manifest:
        listed = {row["file"]: row for row in csv.DictReader(manifest, delimiter="\t")}
    present = {p.name for p in FORMATS_DIR.iterdir()} - {"MANIFEST.tsv", "README.md"}
    assert present == set(listed)
    for name, row in listed.items():
        digest = hashlib.sha256((FORMATS_DIR / name).read_bytes()).hexdigest()
        assert digest == row["sha256"], name
        assert "@" in row["source"] and row["licence"], name
    reserved = SHARED / "eval" / "RESERVED.sha256"
    if reserved.exists():
        assert not {row["sha256"] for row in listed.values()} & set(reserved.read_text().split())


def test_a_real_iphone_heic_is_upright_with_its_camera_and_time():
    # iPhone 12 Pro, portrait: stored 4032x3024 with irot 90 and EXIF Orientation 8.
    preview = load_preview(formats_sample("iphone-12-pro_greyhounds.heic"))
    assert (preview.format_name, preview.camera) == ("HEIC", "Apple iPhone 12 Pro")
    assert (preview.width, preview.height) == (1008, 1344)  # portrait, 1/3 of 3024x4032
    assert preview.capture_time == datetime(2023, 9, 28, 9, 44, 3, 886000)
    top, bottom = _rows_brightness(preview.picture)
    assert top > bottom + 10  # the lit ceiling at the top, the darker floor below


def test_a_real_iphone_heic_keeps_its_full_size_for_the_eyes_of_small_faces():
    """Decoded whole and reduced to 1/3, a HEIC is its own larger image (issue #14): read
    again at the size the analysis asks for, upright as the preview is."""
    from postselectd.preview import WholeImage, load_detail

    preview = load_preview(formats_sample("iphone-12-pro_greyhounds.heic"))
    assert preview.detail == WholeImage("heif", "HEIC", 3024, 4032)  # libheif turned it
    larger = load_detail(preview, 1.8 * max(preview.picture.size))
    assert larger is not None and larger.size == (3024, 4032)  # whole: 4032 // 2420 is 1
    assert load_detail(preview, 1500).size == (1512, 2016)  # halved: the smallest >= 1500
    back = np.asarray(larger.resize(preview.picture.size, Image.Resampling.BOX), np.float32)
    assert np.abs(back - np.asarray(preview.picture, np.float32)).mean() < 3  # same frame
    # A photo stored no larger than its preview has none.
    assert load_preview(formats_sample("webp-gallery_3.webp")).detail is None


def test_a_real_avif_and_webp_are_rated():
    avif = load_preview(formats_sample("link-u_fox.avif"))
    assert (avif.format_name, avif.width, avif.height) == ("AVIF", 1204, 800)
    webp = load_preview(formats_sample("webp-gallery_3.webp"))
    assert (webp.format_name, webp.width, webp.height) == ("WebP", 1280, 720)


def test_a_real_iphone_movie_is_named_as_a_video():
    with pytest.raises(PreviewError, match=r"^a video file \(QuickTime MOV\), not a photo$"):
        load_preview(formats_sample("nom-exif_auth.mov"))


def _rows_brightness(picture: Image.Image) -> tuple[float, float]:
    grey = np.asarray(picture.convert("L"), dtype=np.float32)
    fifth = grey.shape[0] // 5
    return float(grey[:fifth].mean()), float(grey[-fifth:].mean())
