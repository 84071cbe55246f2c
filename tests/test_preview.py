"""Preview: real raws -> upright RGB + capture metadata, or one clear reason."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_file, shared_path
from PIL import Image

from postselectd.preview import PreviewError, load_preview, upright_picture


def test_nef_uses_the_smallest_sufficient_embedded_preview():
    preview = load_preview(shared_path("samples", "nef", "DSC_0102.NEF"), min_size=1024)
    assert preview.source == "SubIFD2 JPEG 1620x1080" or "1620x1080" in preview.source
    assert (preview.width, preview.height) == (1620, 1080)
    assert preview.camera == "NIKON D7100"
    assert preview.capture_time == datetime(2026, 5, 1, 14, 3, 22, 400000)
    assert preview.image.dtype == np.uint8 and preview.image.shape == (1080, 1620, 3)


def test_portrait_frame_is_turned_upright():
    preview = load_preview(shared_path("samples", "nef", "DSC_0108.NEF"))
    assert preview.orientation == 6
    assert preview.height > preview.width


def test_small_min_size_picks_the_small_preview():
    preview = load_preview(shared_path("samples", "nef", "DSC_0102.NEF"), min_size=500)
    assert (preview.width, preview.height) == (640, 424)


def test_jpeg_named_nef_is_read_as_a_jpeg_and_says_so(tmp_path: Path):
    photo = Image.fromarray(
        np.random.default_rng(1).integers(0, 255, (600, 900, 3), dtype=np.uint8)
    )
    fake = tmp_path / "DSC_0001.NEF"
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    fake.write_bytes(buffer.getvalue())
    preview = load_preview(fake)
    assert preview.format_name == "JPEG"
    assert any("JPEG named .NEF" in note for note in preview.notes)
    assert (preview.width, preview.height) == (900, 600)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path):
    image = Image.new("RGB", (300, 200), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    preview = load_preview(path)
    assert (preview.width, preview.height) == (200, 300)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation: int):
    from PIL import ImageOps

    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    assert np.array_equal(np.asarray(upright_picture(image, orientation)), expected)


def test_preview_array_is_its_upright_picture():
    preview = load_preview(shared_path("samples", "nef", "DSC_0108.NEF"))
    assert preview.picture.mode == "RGB"
    assert preview.image.shape == (preview.height, preview.width, 3)
    assert np.array_equal(preview.image, np.asarray(preview.picture))


def test_every_good_raw_gives_a_preview():
    folder = shared_path("samples", "raw", "good")
    for raw in sorted(folder.iterdir()):
        preview = load_preview(raw)
        assert min(preview.width, preview.height) >= 64, raw.name
        assert preview.image.max() > 10, f"{raw.name}: black preview"


def test_raw_with_only_a_tiny_bitmap_falls_back_to_a_sensor_decode():
    preview = load_preview(shared_path("samples", "raw", "good", "nikon-d1_RAW_NIKON_D1.NEF"))
    assert preview.source == "half-size raw decode"
    assert max(preview.width, preview.height) > 900


def test_cr2_that_libraw_refuses_still_gives_its_embedded_jpeg():
    preview = load_preview(
        shared_path("samples", "raw", "broken", "TRUNC_canon-1ds-mk3_CR2-head.CR2")
    )
    assert max(preview.width, preview.height) >= 1024


def test_every_broken_raw_gives_a_preview_or_one_clear_reason():
    folder = shared_path("samples", "raw", "broken")
    outcomes = {}
    for raw in sorted(folder.iterdir()):
        try:
            preview = load_preview(raw)
        except PreviewError as exc:
            reason = str(exc)
            assert reason and "\n" not in reason and "Traceback" not in reason
            outcomes[raw.name] = reason
        else:
            assert preview.image.max() > 2, f"{raw.name}: black preview accepted"
            outcomes[raw.name] = preview.source
    # Files whose sensor data is gone must not be "rated" from a black or garbage decode.
    for name in ("PRUNED_iphone12pro_IMG_1361.dng", "TRIM_canon-350d_exiftool_DNG.dng"):
        assert "raw data missing" in outcomes[name], outcomes[name]


def test_truncated_nef_preview_is_an_error_or_a_smaller_intact_preview(tmp_path: Path):
    source = shared_path("samples", "nef", "DSC_0102.NEF")
    data = source.read_bytes()
    for cut in (200, 5000, 60_000, 400_000):
        path = tmp_path / f"cut{cut}.NEF"
        path.write_bytes(data[:cut])
        try:
            preview = load_preview(path)
        except PreviewError as exc:
            assert str(exc)
        else:
            assert preview.image.size > 0


def test_a_preview_still_past_the_end_of_the_file_is_said_with_the_preview(tmp_path: Path):
    # Issue #20: the first 1.3 MB of DSC_0113 hold a whole 1620x1080 preview, which is
    # usable, but its 6000x4000 JpgFromRaw is not there yet: the file may still be written.
    data = shared_path("samples", "nef", "DSC_0113.NEF").read_bytes()
    path = tmp_path / "DSC_0113.NEF"
    path.write_bytes(data[:1_310_720])
    preview = load_preview(path)
    assert preview.source == "SubIFD2 JPEG 1620x1080"
    assert preview.previews_cut == ("SubIFD0",)
    assert preview.notes == (
        "rated from a file that looks truncated: its SubIFD0 preview runs past the end of the file",
    )
    path.write_bytes(data)
    whole = load_preview(path)
    assert (whole.previews_cut, whole.notes) == ((), ())


def test_a_file_with_no_usable_preview_says_which_previews_are_cut():
    raw = shared_path("samples", "raw", "broken", "PRUNED_iphone12pro_IMG_1361.dng")
    with pytest.raises(PreviewError) as error:
        load_preview(raw)
    assert error.value.previews_cut == ("IFD0",)
    assert str(error.value).endswith("; its IFD0 preview runs past the end of the file")


def test_missing_file_is_a_preview_error(tmp_path: Path):
    with pytest.raises(PreviewError, match="file is gone"):
        load_preview(tmp_path / "gone.NEF")


def test_unsupported_file_names_the_reason(tmp_path: Path):
    path = copy_file(
        shared_path("samples", "raw", "broken", "FUZZ_exiv2_issue_857_poc.raf"), tmp_path
    )
    with pytest.raises(PreviewError) as info:
        load_preview(path)
    assert str(info.value)
