"""File names as cards, Macs and old Linux disks hand them over.

A raw and its JPEG are one pair whatever the case of their names (``DSC_0001.NEF`` +
``dsc_0001.jpg``: one file on an exFAT card, a Mac or an SMB share) and whatever their
Unicode form (macOS gives ``Café`` decomposed); an editor's sidecar is found the same way;
a name that is not valid UTF-8 is rated and gets its sidecar, by ``score`` and by the daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
import test_daemon
from conftest import copy_file, run_cli, shared_path

from postselectd.photos import find_photos, shared_sidecar_owner, shown_name
from postselectd.ratings_sources import sidecars_of
from postselectd.report import _folder_listing, _sidecar_candidates
from postselectd.sidecar import TEMPLATE, read_sidecar

# The real-daemon fixtures of tests/test_daemon.py.
daemon_factory = test_daemon.daemon_factory
small_nef = test_daemon.small_nef
watching = test_daemon.watching

NFC = unicodedata.normalize("NFC", "Café")  # as Linux tools and cameras write it
NFD = unicodedata.normalize("NFD", "Café")  # as macOS hands it out
NOT_UTF8 = os.fsdecode(b"DSC_\xff01")  # Latin-1 bytes from an old disk: a lone surrogate


def _raw() -> Path:
    return shared_path("samples", "nef", "DSC_0101.NEF")


def _jpeg() -> Path:
    return shared_path("eval", "blur", "blur-0001.jpg")  # a real 2048x1365 JPEG


def _records(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _xmps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(".xmp"))


def _not_utf8_name_allowed(folder: Path) -> None:
    probe = folder / (NOT_UTF8 + ".probe")
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        pytest.skip(f"this filesystem takes only UTF-8 names (macOS): {exc}")
    probe.unlink()


def _sidecar_with_rating(path: Path, rating: int) -> None:
    """A sidecar as an editor leaves it: a person's rating and nothing of ours."""
    path.write_bytes(
        TEMPLATE.replace(
            b" </rdf:RDF>",
            b'  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
            b' xmp:Rating="%d"/>\n </rdf:RDF>' % rating,
        )
    )


# --- the pair rule ----------------------------------------------------------------------


def test_a_raw_and_its_jpeg_pair_whatever_their_case_or_unicode_form(tmp_path: Path):
    for name in ("DSC_0001.NEF", "dsc_0001.jpg", f"{NFD}.NEF", f"{NFC}.JPG", "IMG_0002.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_photos([tmp_path], ["lightroom"])] == sorted(
        ["DSC_0001.NEF", f"{NFD}.NEF", "IMG_0002.jpg"]
    )
    assert shared_sidecar_owner(tmp_path / "dsc_0001.jpg") == tmp_path / "DSC_0001.NEF"
    assert shared_sidecar_owner(tmp_path / f"{NFC}.JPG") == tmp_path / f"{NFD}.NEF"


@pytest.mark.parametrize(
    ("raw", "jpeg"),
    [("DSC_0001.NEF", "dsc_0001.jpg"), (f"{NFD}_0001.NEF", f"{NFC}_0001.JPG")],
    ids=["case", "unicode-form"],
)
def test_raw_and_jpeg_of_one_name_get_one_sidecar_through_the_raw(tmp_path, raw, jpeg):
    folder = tmp_path / "pair"
    copy_file(_raw(), folder, raw)
    copy_file(_jpeg(), folder, jpeg)
    records = _records(run_cli("score", "--json", str(folder)))
    assert [Path(r["path"]).name for r in records] == [raw]
    # On a case-insensitive card both would have written this one file.
    assert _xmps(folder) == [Path(raw).stem + ".xmp"]
    assert read_sidecar(folder / _xmps(folder)[0])["Xmp.xmp.Rating"] == str(records[0]["rating"])


def test_an_editors_sidecar_in_the_other_unicode_form_is_merged_into(tmp_path: Path):
    folder = tmp_path / "mac"
    photo = copy_file(_raw(), folder, f"{NFC}_0001.NEF")
    theirs = folder / f"{NFD}_0001.xmp"  # written on a Mac, copied here
    _sidecar_with_rating(theirs, 5)
    [record] = _records(run_cli("score", "--json", str(photo)))
    assert record["sidecar"] == [str(theirs)]
    assert _xmps(folder) == [theirs.name]
    merged = read_sidecar(theirs)
    assert merged["Xmp.xmp.Rating"] == "5"  # the person's rating stays
    assert "Xmp.postselect.KeeperProbability" in merged


def test_sidecars_are_found_whatever_their_case_or_unicode_form(tmp_path: Path):
    for name in ("DSC_0001.NEF", "dsc_0001.XMP", f"{NFC}.NEF", f"{NFD}.NEF.xmp", "B.NEF"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in sidecars_of(tmp_path / "DSC_0001.NEF")] == ["dsc_0001.XMP"]
    assert [p.name for p in sidecars_of(tmp_path / f"{NFC}.NEF")] == [f"{NFD}.NEF.xmp"]
    assert sidecars_of(tmp_path / "B.NEF") == []
    listing = _folder_listing(tmp_path)
    found = {
        photo: [p.name for p in _sidecar_candidates(tmp_path / photo, ["lightroom"], listing)]
        for photo in ("DSC_0001.NEF", f"{NFC}.NEF", "B.NEF")
    }
    assert found == {
        "DSC_0001.NEF": ["dsc_0001.XMP"],
        f"{NFC}.NEF": [f"{NFD}.NEF.xmp"],
        "B.NEF": [],
    }


# --- names that are not UTF-8 -----------------------------------------------------------


def test_a_name_that_is_not_utf8_is_rated_and_gets_its_sidecars(tmp_path: Path):
    folder = tmp_path / "old disk"
    folder.mkdir()
    _not_utf8_name_allowed(folder)
    raw = copy_file(_raw(), folder, NOT_UTF8 + ".NEF")
    copy_file(_jpeg(), folder, NOT_UTF8.lower() + ".JPG")  # its JPEG: left alone
    config = tmp_path / "config.yaml"
    config.write_text("sidecar:\n  profiles: [lightroom, darktable]\n")
    # A UTF-8 locale's stdout is strict: the name must not crash the output either.
    result = run_cli(
        "score", "--json", "--config", str(config), str(folder),
        env={"PYTHONIOENCODING": "utf-8:strict"},
    )  # fmt: skip
    [record] = _records(result)
    assert os.fsencode(record["path"]) == os.fsencode(raw)  # the exact bytes, escaped
    assert _xmps(folder) == sorted([NOT_UTF8 + ".NEF.xmp", NOT_UTF8 + ".xmp"])
    for sidecar in _xmps(folder):
        assert read_sidecar(folder / sidecar)["Xmp.xmp.Rating"] == str(record["rating"])
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
    # The contact sheet shows it, by its escaped name, with the verdict from its sidecar.
    page = tmp_path / "report.html"
    result = run_cli("report", "--config", str(config), "-o", str(page), str(folder))
    assert result.returncode == 0, result.stderr
    assert f"{NOT_UTF8.encode('utf-8', 'backslashreplace').decode()}.NEF: " in page.read_text()
    assert f"{record['rating']} star" in page.read_text()


def test_a_new_sidecar_exiv2_cannot_open_is_not_called_an_invalid_existing_one(
    tmp_path: Path, monkeypatch
):
    from postselectd import sidecar

    def refuse(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(sidecar.pyexiv2, "ImageData", refuse)
    content = sidecar.SidecarContent(3, None, (), "PostSelect", 0.5, (), "test")
    with pytest.raises(sidecar.SidecarError) as error:
        sidecar.write_sidecar(tmp_path / "DSC_0001.xmp", content)
    assert str(error.value) == "DSC_0001.xmp: exiv2 cannot open it (injected); not written"
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_the_daemon_rates_a_name_that_is_not_utf8_and_goes_on(watching, small_nef):
    watch, daemon = watching("import")
    _not_utf8_name_allowed(watch)
    odd = small_nef.write(watch / (NOT_UTF8 + ".NEF"), tag=1)
    plain = small_nef.write(watch / "DSC_0002.NEF", tag=2)
    daemon.wait_for(
        lambda: (watch / (NOT_UTF8 + ".xmp")).exists() and (watch / "DSC_0002.xmp").exists(),
        60,
        "both sidecars",
    )
    test_daemon.assert_rated_once(daemon, [odd, plain])
    status = run_cli("status", "--config", str(daemon.config_path), env=daemon.env)
    assert status.returncode == 0, status.stderr
    assert "DSC_\\xff01.NEF" in status.stdout  # the byte, as status shows undecodable ones
    assert daemon.stop()[0] == 0
    assert "Traceback" not in daemon.log()


@pytest.mark.slow
def test_the_daemon_rates_a_raw_and_its_lowercase_jpeg_once_through_the_raw(watching, small_nef):
    watch, daemon = watching("card")
    raw = small_nef.write(watch / "DSC_0001.NEF", tag=3)
    jpeg = watch / "dsc_0001.jpg"
    shutil.copyfile(_jpeg(), jpeg)  # arrives after its raw, with a new mtime
    daemon.wait_for(
        lambda: (row := daemon.rows().get(str(jpeg))) is not None and row.status != "pending",
        60,
        "the JPEG's turn",
    )
    daemon.wait_for(lambda: daemon.rated() >= 1, 60, "the raw rated")
    row = daemon.rows()[str(jpeg)]
    assert (row.status, row.reason) == ("skipped", "a raw of the same name is rated instead")
    test_daemon.assert_rated_once(daemon, [raw])
    assert _xmps(watch) == ["DSC_0001.xmp"]
    assert daemon.stop()[0] == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("raw", "jpeg"),
    [("DSC_0102.NEF", "dsc_0102.jpg"), (f"{NFD}_0102.NEF", f"{NFC}_0102.JPG")],
    ids=["case", "unicode-form"],
)
def test_a_jpeg_rated_before_its_raw_of_another_case_leaves_no_second_verdict(
    daemon_factory, tmp_path, raw, jpeg
):
    # The JPEG of a pair copied first is rated on its own; once its raw (named in another
    # case or Unicode form) is rated, the pair has one verdict, the raw's: the sidecar
    # only the JPEG names loses ours, as it does when both names are spelled alike.
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = daemon_factory([watch])
    daemon.write_config([watch], {"sidecar": {"profiles": ["lightroom", "darktable"]}})
    daemon.start()
    shutil.copyfile(_jpeg(), watch / jpeg)
    daemon.wait_for(lambda: daemon.rated() == 1, 60, "the JPEG rated")
    assert (watch / (jpeg + ".xmp")).exists()
    shutil.copyfile(_raw(), watch / raw)
    daemon.wait_for(
        lambda: (row := daemon.rows().get(str(watch / raw))) is not None and row.status == "rated",
        60,
        "the raw rated",
    )
    assert daemon.stop()[0] == 0
    rows = daemon.rows()
    assert (rows[str(watch / jpeg)].status, rows[str(watch / jpeg)].reason) == (
        "skipped",
        "a raw of the same name is rated instead",
    )
    assert not (watch / (jpeg + ".xmp")).exists()  # it held only the JPEG's verdict
    # One shared sidecar, however its name is spelled, holding the raw's verdict.
    [shared] = [n for n in _xmps(watch) if n.count(".") == 1]
    keeper = "Xmp.postselect.KeeperProbability"
    assert read_sidecar(watch / shared)[keeper] == read_sidecar(watch / (raw + ".xmp"))[keeper]


# --- a real case-insensitive volume -----------------------------------------------------


@pytest.fixture
def exfat_card(tmp_path: Path):
    """An exFAT image mounted through FUSE (exfat-fuse): case-insensitive, as a camera's
    card is. Needs root, /dev/fuse, a loop device, mkfs.exfat and mount.exfat-fuse."""
    tools = [shutil.which(t) for t in ("mkfs.exfat", "mount.exfat-fuse", "losetup", "umount")]
    if os.geteuid() != 0 or not all(tools) or not os.path.exists("/dev/fuse"):
        pytest.skip("an exFAT card needs root, /dev/fuse, exfatprogs and exfat-fuse")
    image = tmp_path / "card.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.exfat", str(image)], check=True, capture_output=True)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True
    )  # fmt: skip
    if loop.returncode != 0:
        pytest.skip(f"no loop device here: {loop.stderr.strip()}")
    device = loop.stdout.strip()
    card = tmp_path / "card"
    card.mkdir()
    mounted = subprocess.run(["mount.exfat-fuse", device, str(card)], capture_output=True)
    if mounted.returncode != 0:
        subprocess.run(["losetup", "-d", device], check=False)
        pytest.skip(f"cannot mount exFAT here: {mounted.stderr.decode().strip()}")
    try:
        (card / "PROBE").write_bytes(b"")
        assert (card / "probe").exists(), "exFAT should be case-insensitive"
        (card / "PROBE").unlink()
        yield card
    finally:
        subprocess.run(["umount", str(card)], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def test_on_an_exfat_card_raw_and_lowercase_jpeg_write_one_sidecar_once(exfat_card: Path):
    folder = exfat_card / "DCIM"
    copy_file(_raw(), folder, "DSC_0001.NEF")
    copy_file(_jpeg(), folder, "dsc_0001.jpg")
    records = _records(run_cli("score", "--json", str(folder)))
    assert [Path(r["path"]).name for r in records] == ["DSC_0001.NEF"]
    assert _xmps(folder) == ["DSC_0001.xmp"]
    assert read_sidecar(folder / "DSC_0001.xmp")["Xmp.xmp.Rating"] == str(records[0]["rating"])


def test_a_log_line_names_a_photo_from_its_watched_folder_on():
    roots = [Path("/srv/photos/wedding"), Path("/srv/photos"), Path("/media/NIKON")]
    named = {
        "/srv/photos/wedding/ceremony/DSC_0101.NEF": "wedding/ceremony/DSC_0101.NEF",
        "/srv/photos/portraits/DSC_0101.NEF": "photos/portraits/DSC_0101.NEF",
        "/media/NIKON/DSC_0101.NEF": "NIKON/DSC_0101.NEF",
        "/elsewhere/shoot/DSC_0101.NEF": "shoot/DSC_0101.NEF",  # in no watched folder
        "/DSC_0101.NEF": "DSC_0101.NEF",
    }
    assert {path: shown_name(Path(path), roots) for path in named} == named
    assert shown_name(Path("/DSC_0101.NEF"), [Path("/")]) == "DSC_0101.NEF"


@pytest.mark.slow
def test_on_an_exfat_card_a_jpeg_rated_before_its_raw_leaves_the_raws_verdict(
    exfat_card: Path, daemon_factory
):
    # dsc_0102.jpg is rated first and writes dsc_0102.xmp; DSC_0102.NEF then writes the
    # same file (the card ignores case). The JPEG's verdict goes, the raw's stays in it.
    watch = exfat_card / "DCIM"
    watch.mkdir()
    daemon = daemon_factory([watch])
    daemon.write_config([watch], {"sidecar": {"profiles": ["lightroom", "darktable"]}})
    daemon.start()
    shutil.copyfile(_jpeg(), watch / "dsc_0102.jpg")
    daemon.wait_for(lambda: daemon.rated() == 1, 60, "the JPEG rated")
    shutil.copyfile(_raw(), watch / "DSC_0102.NEF")
    daemon.wait_for(
        lambda: (
            (row := daemon.rows().get(str(watch / "DSC_0102.NEF"))) is not None
            and row.status == "rated"
        ),
        60,
        "the raw rated",
    )
    assert daemon.stop()[0] == 0
    rows = daemon.rows()
    assert rows[str(watch / "dsc_0102.jpg")].status == "skipped"
    # One shared sidecar, spelled as the card last wrote it, and the raw's own.
    names = {n.lower(): n for n in _xmps(watch)}
    assert sorted(names) == ["dsc_0102.nef.xmp", "dsc_0102.xmp"], daemon.all_logs()
    # Read each by the spelling the card holds: exfat-fuse answers a read by another
    # spelling, right after the file was replaced, with the old file's length (its
    # attribute cache is per spelling), cutting the sidecar short.
    shared = read_sidecar(watch / names["dsc_0102.xmp"])
    raws_own = read_sidecar(watch / names["dsc_0102.nef.xmp"])
    keeper = "Xmp.postselect.KeeperProbability"
    assert shared.get(keeper) == raws_own[keeper]
    assert shared.get("Xmp.xmp.Rating") == raws_own["Xmp.xmp.Rating"]
