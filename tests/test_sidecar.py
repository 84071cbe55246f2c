"""The sidecar writer: merges, keeps what people and editors wrote, never tears a file."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from conftest import DATA

from postselectd.sidecar import (
    SidecarContent,
    SidecarError,
    read_sidecar,
    sidecar_path,
    sidecar_paths,
    write_sidecar,
    write_sidecars,
)

SELECT = SidecarContent(
    stars=4,
    label="Green",
    keywords=("select",),
    keyword_parent="PostSelect",
    keeper_probability=0.93,
    reasons=(),
    model_version="test-1",
    details=(("SubjectSharpness", "4797.6"),),
)
REJECT = SidecarContent(
    stars=1,
    label="Red",
    keywords=("reject", "motion blur"),
    keyword_parent="PostSelect",
    keeper_probability=0.08,
    reasons=("motion blur",),
    model_version="test-1",
)
MAYBE = SidecarContent(
    stars=3,
    label=None,
    keywords=(),
    keyword_parent="PostSelect",
    keeper_probability=0.7,
    reasons=(),
    model_version="test-1",
)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    raw = tmp_path / "DSC_0001.NEF"
    raw.write_bytes(b"not really a raw, never opened for writing")
    return raw


def test_profiles_name_sidecars_as_each_editor_expects(photo: Path):
    assert sidecar_path(photo, "lightroom").name == "DSC_0001.xmp"
    assert sidecar_path(photo, "darktable").name == "DSC_0001.NEF.xmp"
    assert [p.name for p in sidecar_paths(photo, ["lightroom", "darktable"])] == [
        "DSC_0001.xmp",
        "DSC_0001.NEF.xmp",
    ]


def test_existing_uppercase_sidecar_is_reused(photo: Path):
    existing = photo.with_name("DSC_0001.XMP")
    shutil.copy(DATA / "lightroom_sidecar.xmp", existing)
    write_sidecars(photo, SELECT, ["lightroom"])
    assert sorted(p.name for p in photo.parent.iterdir()) == ["DSC_0001.NEF", "DSC_0001.XMP"]
    assert read_sidecar(existing)["Xmp.xmp.Rating"] == "4"


def test_new_sidecar_has_rating_label_and_bag_keywords(photo: Path):
    [result] = write_sidecars(photo, REJECT, ["lightroom"])
    assert result.created and result.rating_written
    xmp = read_sidecar(result.path)
    assert xmp["Xmp.xmp.Rating"] == "1"
    assert xmp["Xmp.xmp.Label"] == "Red"
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["PostSelect|reject", "PostSelect|motion blur"]
    assert xmp["Xmp.dc.subject"] == ["reject", "motion blur"]
    assert xmp["Xmp.postselect.KeeperProbability"] == "0.0800"
    text = result.path.read_text()
    for prop in ("dc:subject", "lr:hierarchicalSubject"):
        assert re.search(rf"<{prop}>\s*<rdf:Bag>", text), f"{prop} must be an rdf:Bag"
        assert not re.search(rf"<{prop}>\s*<rdf:Seq>", text)


def test_every_foreign_lightroom_property_survives(photo: Path):
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "lightroom_sidecar.xmp", sidecar)
    before = read_sidecar(sidecar)
    assert any(k.startswith("Xmp.crs.Look") for k in before)
    assert any(k.startswith("Xmp.acme.") for k in before)
    write_sidecars(photo, SELECT, ["lightroom"])
    write_sidecars(photo, REJECT, ["lightroom"])
    after = read_sidecar(sidecar)
    ours = {"Xmp.dc.subject", "Xmp.lr.hierarchicalSubject"}
    for key, value in before.items():
        assert key in after, f"{key} was lost"
        if key not in ours:
            assert after[key] == value, f"{key} changed"
    # People's keywords stay, PostSelect's are replaced, not accumulated.
    assert after["Xmp.dc.subject"] == ["wedding", "Anna", "reject", "motion blur"]
    assert after["Xmp.lr.hierarchicalSubject"] == [
        "Events|wedding",
        "People|Anna",
        "PostSelect|reject",
        "PostSelect|motion blur",
    ]


def test_human_rating_is_never_overwritten(photo: Path):
    [first] = write_sidecars(photo, SELECT, ["lightroom"])
    # The photographer demotes the frame in the editor, which rewrites the sidecar.
    text = first.path.read_text().replace('xmp:Rating="4"', 'xmp:Rating="2"')
    first.path.write_text(text)
    [second] = write_sidecars(photo, REJECT, ["lightroom"])
    assert not second.rating_written and second.kept_rating == "2"
    xmp = read_sidecar(first.path)
    assert xmp["Xmp.xmp.Rating"] == "2"
    # The label was still ours, so it follows the new verdict; keywords too.
    assert xmp["Xmp.xmp.Label"] == "Red"
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["PostSelect|reject", "PostSelect|motion blur"]
    # And again: the guard holds on every later run.
    write_sidecars(photo, SELECT, ["lightroom"])
    assert read_sidecar(first.path)["Xmp.xmp.Rating"] == "2"


def test_rating_set_before_postselectd_ever_ran_is_kept(photo: Path):
    sidecar = photo.with_suffix(".xmp")
    text = (
        (DATA / "lightroom_sidecar.xmp")
        .read_text()
        .replace(
            'crs:Version="16.0"\n   crs:ProcessVersion',
            'xmp:Rating="5"\n   xmp:Label="Purple"\n   crs:Version="16.0"\n   crs:ProcessVersion',
            1,
        )
    )
    sidecar.write_text(text)
    [result] = write_sidecars(photo, REJECT, ["lightroom"])
    assert result.kept_rating == "5" and result.kept_label == "Purple"
    xmp = read_sidecar(sidecar)
    assert (xmp["Xmp.xmp.Rating"], xmp["Xmp.xmp.Label"]) == ("5", "Purple")


def test_force_overrides_a_person_rating(photo: Path):
    [first] = write_sidecars(photo, SELECT, ["lightroom"])
    first.path.write_text(first.path.read_text().replace('xmp:Rating="4"', 'xmp:Rating="2"'))
    [second] = write_sidecars(photo, REJECT, ["lightroom"], force=True)
    assert second.rating_written
    assert read_sidecar(first.path)["Xmp.xmp.Rating"] == "1"


def test_our_own_rating_is_updated_on_rescore(photo: Path):
    write_sidecars(photo, SELECT, ["lightroom"])
    [result] = write_sidecars(photo, MAYBE, ["lightroom"])
    assert result.rating_written
    xmp = read_sidecar(result.path)
    assert xmp["Xmp.xmp.Rating"] == "3"
    assert "Xmp.xmp.Label" not in xmp  # no label for an undecided frame
    assert "Xmp.dc.subject" not in xmp and "Xmp.lr.hierarchicalSubject" not in xmp


@pytest.mark.parametrize("name", ["billion_laughs.xmp", "xxe.xmp"])
def test_hostile_xml_sidecar_is_refused_and_left_untouched(photo: Path, name: str):
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / name, sidecar)
    before = sidecar.read_bytes()
    with pytest.raises(SidecarError, match="DTD or entities"):
        write_sidecars(photo, SELECT, ["lightroom"])
    assert sidecar.read_bytes() == before
    assert sorted(p.name for p in photo.parent.iterdir()) == ["DSC_0001.NEF", "DSC_0001.xmp"]


@pytest.mark.parametrize(
    "content", [b"", b"garbage \x00\x01 not xml", b"<html><body>hi</body></html>"]
)
def test_invalid_sidecar_is_never_overwritten(photo: Path, content: bytes):
    sidecar = photo.with_suffix(".xmp")
    sidecar.write_bytes(content)
    with pytest.raises(SidecarError, match="left untouched"):
        write_sidecars(photo, SELECT, ["lightroom"])
    assert sidecar.read_bytes() == content


def test_photo_is_never_touched(photo: Path):
    before = (photo.read_bytes(), photo.stat().st_mtime_ns)
    write_sidecars(photo, SELECT, ["lightroom", "darktable"])
    assert (photo.read_bytes(), photo.stat().st_mtime_ns) == before


def test_new_sidecar_follows_the_umask(photo: Path):
    old = os.umask(0o027)
    try:
        [result] = write_sidecars(photo, SELECT, ["lightroom"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o640


def test_existing_sidecar_keeps_its_permissions(photo: Path):
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "lightroom_sidecar.xmp", sidecar)
    os.chmod(sidecar, 0o664)
    write_sidecars(photo, SELECT, ["lightroom"])
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o664


def test_no_temp_files_are_left_behind(photo: Path):
    write_sidecars(photo, SELECT, ["lightroom", "darktable"])
    write_sidecars(photo, REJECT, ["lightroom", "darktable"])
    assert sorted(p.name for p in photo.parent.iterdir()) == [
        "DSC_0001.NEF",
        "DSC_0001.NEF.xmp",
        "DSC_0001.xmp",
    ]


def test_dry_run_writes_nothing(photo: Path):
    result = write_sidecar(photo.with_suffix(".xmp"), SELECT, dry_run=True)
    assert result.created
    assert sorted(p.name for p in photo.parent.iterdir()) == ["DSC_0001.NEF"]


def test_read_only_folder_gives_a_clear_error(photo: Path):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    os.chmod(photo.parent, 0o555)
    try:
        with pytest.raises(SidecarError, match="not writable"):
            write_sidecars(photo, SELECT, ["lightroom"])
    finally:
        os.chmod(photo.parent, 0o755)
