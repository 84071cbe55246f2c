"""Files that share a name (DSC_0001.NEF + .JPG / .DNG) never write one sidecar twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import test_daemon
from conftest import copy_file, run_cli, shared_path

from postselectd.photos import find_photos, shared_sidecar_owner, sidecar_profiles_for
from postselectd.sidecar import read_sidecar

daemon_factory = test_daemon.daemon_factory  # the real daemon of tests/test_daemon.py


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def test_the_camera_raw_owns_the_shared_sidecar_name(tmp_path: Path):
    _touch(tmp_path, "DSC_0001.NEF", "DSC_0001.DNG", "DSC_0001.JPG", "DSC_0002.DNG")
    for name in ("DSC_0001.NEF", "DSC_0001.DNG", "DSC_0001.JPG"):
        assert shared_sidecar_owner(tmp_path / name) == tmp_path / "DSC_0001.NEF"
    assert shared_sidecar_owner(tmp_path / "DSC_0002.DNG") == tmp_path / "DSC_0002.DNG"


@pytest.mark.parametrize(
    ("profiles", "rated"),
    [
        (["lightroom"], ["DSC_0001.NEF"]),
        (["photomechanic"], ["DSC_0001.NEF"]),
        # DSC_0001.NEF.xmp and DSC_0001.DNG.xmp are two files: both raws are rated.
        (["darktable"], ["DSC_0001.DNG", "DSC_0001.NEF"]),
        (["lightroom", "digikam"], ["DSC_0001.DNG", "DSC_0001.NEF"]),
    ],
)
def test_a_file_is_listed_only_when_it_has_a_sidecar_of_its_own(tmp_path, profiles, rated):
    _touch(tmp_path, "DSC_0001.NEF", "DSC_0001.DNG", "DSC_0001.JPG")
    assert [p.name for p in find_photos([tmp_path], profiles)] == rated


def test_a_heic_keeps_the_shared_sidecar_name_from_its_jpeg_copy(tmp_path: Path):
    # Lightroom reads IMG_0001.xmp for the HEIC only (a JPEG's own XMP for the JPEG), so
    # the phone's original keeps the name whatever the case of the two suffixes.
    _touch(tmp_path, "IMG_0001.heic", "IMG_0001.JPG", "IMG_0002.HEIC", "IMG_0002.webp")
    for name in ("IMG_0001.heic", "IMG_0001.JPG"):
        assert shared_sidecar_owner(tmp_path / name) == tmp_path / "IMG_0001.heic"
    assert shared_sidecar_owner(tmp_path / "IMG_0002.webp") == tmp_path / "IMG_0002.HEIC"
    assert [p.name for p in find_photos([tmp_path], ["lightroom"])] == [
        "IMG_0001.heic",
        "IMG_0002.HEIC",
    ]
    assert sidecar_profiles_for(tmp_path / "IMG_0001.JPG", ["lightroom", "darktable"]) == [
        "darktable"  # IMG_0001.JPG.xmp is its own
    ]


def test_score_lists_videos_but_a_live_photos_movie_goes_with_its_photo(tmp_path: Path):
    _touch(tmp_path, "IMG_0001.HEIC", "IMG_0001.MOV", "IMG_0002.MOV", "clip.mp4", ".x.mov", "a.gif")
    listed = [p.name for p in find_photos([tmp_path], ["lightroom"], videos=True)]
    assert listed == ["IMG_0001.HEIC", "IMG_0002.MOV", "clip.mp4"]
    passed_over: Counter[str] = Counter()
    assert [p.name for p in find_photos([tmp_path], passed_over=passed_over)] == ["IMG_0001.HEIC"]
    assert passed_over == {".mov": 1, ".mp4": 1, ".gif": 1}
    assert [p.name for p in find_photos([tmp_path / "IMG_0002.MOV"])] == ["IMG_0002.MOV"]


def test_a_dng_beside_its_raw_writes_only_its_own_named_sidecar(tmp_path: Path):
    _touch(tmp_path, "DSC_0001.NEF", "DSC_0001.DNG")
    dng = tmp_path / "DSC_0001.DNG"
    assert sidecar_profiles_for(dng, ["lightroom", "darktable"]) == ["darktable"]
    assert sidecar_profiles_for(tmp_path / "DSC_0001.NEF", ["lightroom", "darktable"]) == [
        "lightroom",
        "darktable",
    ]


def test_the_daemon_leaves_a_dng_beside_its_raw_alone_instead_of_failing_it(
    daemon_factory, tmp_path
):
    """The README: of DSC_0001.NEF + DSC_0001.DNG only the raw writes DSC_0001.xmp. The
    real daemon skips the DNG at once (journal: skipped, with why), not after retries."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = daemon_factory([watch])
    daemon.start()
    raw = copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), watch, "DSC_0001.NEF")
    dng = copy_file(shared_path("samples", "nef", "DSC_0103.NEF"), watch, "DSC_0001.DNG")

    def settled() -> bool:
        rows = daemon.rows()
        return all(str(p) in rows and rows[str(p)].status != "pending" for p in (raw, dng))

    daemon.wait_for(settled, 60, "both files dealt with")
    rows = daemon.rows()
    assert rows[str(raw)].status == "rated"
    assert (rows[str(dng)].status, rows[str(dng)].attempts) == ("skipped", 0)
    assert rows[str(dng)].reason == (
        "DSC_0001.DNG: shares DSC_0001.xmp with DSC_0001.NEF, which is rated instead; left alone"
    )
    assert sorted(p.name for p in watch.iterdir()) == [
        "DSC_0001.DNG",
        "DSC_0001.NEF",
        "DSC_0001.xmp",
    ]
    assert daemon.stop()[0] == 0
    assert "retrying" not in daemon.log() and "failed:" not in daemon.log()


def test_a_dng_rated_before_its_raw_arrived_is_then_shown_left_alone(daemon_factory, tmp_path):
    """DSC_0001.DNG alone is rated (its DSC_0001.xmp is its own); once DSC_0001.NEF
    arrives the raw rates that sidecar, and the DNG is shown skipped with why, not as a
    second rating of the photo."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = daemon_factory([watch])
    daemon.start()
    dng = copy_file(shared_path("samples", "nef", "DSC_0103.NEF"), watch, "DSC_0001.DNG")
    daemon.wait_for(lambda: daemon.rated() == 1, 60, "the DNG rated")
    raw = copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), watch, "DSC_0001.NEF")

    def raw_rated() -> bool:
        row = daemon.rows().get(str(raw))
        return row is not None and row.status == "rated"

    daemon.wait_for(raw_rated, 60, "the raw rated")
    assert daemon.stop()[0] == 0
    rows = daemon.rows()
    assert (rows[str(dng)].status, rows[str(dng)].reason) == (
        "skipped",
        "DSC_0001.DNG: shares DSC_0001.xmp with DSC_0001.NEF, which is rated instead; left alone",
    )
    assert sorted(p.name for p in watch.iterdir()) == [
        "DSC_0001.DNG",
        "DSC_0001.NEF",
        "DSC_0001.xmp",
    ]
    assert rows[str(dng)].stars != rows[str(raw)].stars  # the two frames differ
    sidecar = read_sidecar(watch / "DSC_0001.xmp")
    assert sidecar["Xmp.xmp.Rating"] == str(rows[str(raw)].stars)
    # The DNG is no frame of a burst with its own raw.
    assert "Xmp.postselect.BurstId" not in sidecar, daemon.log()


def test_a_jpeg_rated_before_its_raw_is_no_frame_of_the_raws_burst(daemon_factory, tmp_path):
    """RAW+JPEG copied JPEG first: the JPEG (same capture time, as the camera writes it)
    is rated, then its raw. The raw is rated as the single frame it is, not as "best of
    a burst" with its own JPEG."""
    from PIL import Image

    from postselectd.stages import capture_time_of

    watch = tmp_path / "card"
    watch.mkdir()
    source = shared_path("samples", "nef", "DSC_0102.NEF")
    shot = capture_time_of(source)
    assert shot is not None
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = shot.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
    jpeg = watch / "DSC_0001.JPG"
    with Image.open(shared_path("eval", "blur", "blur-0002.jpg")) as photo:
        photo.save(watch / ".DSC_0001.JPG.part", "JPEG", exif=exif, quality=90)
    daemon = daemon_factory([watch])
    daemon.start()
    (watch / ".DSC_0001.JPG.part").rename(jpeg)
    daemon.wait_for(lambda: daemon.rated() == 1, 60, "the JPEG rated")
    raw = copy_file(source, watch, "DSC_0001.NEF")

    def raw_rated() -> bool:
        row = daemon.rows().get(str(raw))
        return row is not None and row.status == "rated"

    daemon.wait_for(raw_rated, 60, "the raw rated")
    assert daemon.stop()[0] == 0
    assert daemon.rows()[str(jpeg)].status == "skipped"
    sidecar = read_sidecar(watch / "DSC_0001.xmp")
    assert "Xmp.postselect.BurstId" not in sidecar, daemon.log()


@pytest.mark.parametrize("profile", ["lightroom", "photomechanic"])
def test_raw_and_jpeg_end_with_one_sidecar_carrying_the_raws_rating(tmp_path, profile):
    folder = tmp_path / "pair"
    copy_file(shared_path("samples", "nef", "DSC_0101.NEF"), folder, "DSC_0001.NEF")
    # The JPEG is a sharp photo, the raw a blurred one: the ratings would differ.
    copy_file(shared_path("samples", "nef", "DSC_0113.NEF"), folder, "DSC_0001.JPG")
    config = tmp_path / "config.yaml"
    config.write_text(f"sidecar:\n  profiles: [{profile}]\n")
    result = run_cli("score", "--json", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "DSC_0001.JPG",
        "DSC_0001.NEF",
        "DSC_0001.xmp",
    ]
    [record] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert Path(record["path"]).name == "DSC_0001.NEF"
    text = (folder / "DSC_0001.xmp").read_text()
    assert f'xmp:Rating="{record["rating"]}"' in text


def test_a_dng_named_on_the_command_line_beside_its_raw_is_left_alone(tmp_path: Path):
    folder = tmp_path / "pair"
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), folder, "DSC_0001.NEF")
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), folder, "DSC_0001.DNG")
    result = run_cli("score", str(folder / "DSC_0001.DNG"))
    assert result.returncode == 1
    assert "DSC_0001.DNG: shares DSC_0001.xmp with DSC_0001.NEF" in result.stderr
    assert not (folder / "DSC_0001.xmp").exists()
