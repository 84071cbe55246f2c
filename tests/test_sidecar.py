"""The sidecar writer: merges, keeps what people and editors wrote, never tears a file."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
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
    # The person's verdict wins whole: no Red beside their 2 stars, no reject keywords.
    assert "Xmp.xmp.Label" not in xmp
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["PostSelect|overruled"]
    assert second.overruled
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


def test_read_only_folder_gives_a_clear_error(photo: Path, unprivileged):
    """In a process file permissions apply to (root ignores them, so CI drops that power)."""
    folder = photo.parent
    unprivileged.lock(folder, 0o755)  # another user's folder: readable, not writable
    if not unprivileged.root:
        os.chmod(folder, 0o555)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from postselectd.sidecar import SidecarContent, SidecarError, write_sidecars\n"
        f"content = SidecarContent(**{dict(SELECT.__dict__)!r})\n"
        "try:\n"
        f"    write_sidecars(Path({str(photo)!r}), content, ['lightroom'])\n"
        "except SidecarError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
            **unprivileged.popen,
        )  # fmt: skip
    finally:
        unprivileged.release(folder)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not writable" in result.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["DSC_0001.NEF"]


# --- dialects ---------------------------------------------------------------------------

ALL = ["lightroom", "darktable", "digikam", "photomechanic"]


def _reject(label: str | None = "Red") -> SidecarContent:
    return SidecarContent(
        stars=1,
        label=label,
        keywords=("reject",),
        keyword_parent="PostSelect",
        keeper_probability=0.1,
        reasons=("motion blur",),
        model_version="test-1",
        verdict="reject",
    )


def test_each_profile_writes_its_editors_dialect(photo: Path):
    results = write_sidecars(photo, replace(SELECT, verdict="select"), ALL)
    # lightroom + photomechanic share DSC_0001.xmp; darktable + digikam DSC_0001.NEF.xmp.
    assert [r.path.name for r in results] == ["DSC_0001.xmp", "DSC_0001.NEF.xmp"]
    short, long = (read_sidecar(r.path) for r in results)
    assert short["Xmp.xmp.Label"] == "Green"
    assert short["Xmp.photomechanic.ColorClass"] == "4"
    assert "Xmp.digiKam.ColorLabel" not in short and "Xmp.darktable.colorlabels" not in short
    assert long["Xmp.darktable.colorlabels"] == ["2"]
    assert long["Xmp.digiKam.ColorLabel"] == "4"
    assert long["Xmp.digiKam.PickLabel"] == "3"
    assert long["Xmp.digiKam.TagsList"] == ["PostSelect/select"]
    for xmp in (short, long):
        assert xmp["Xmp.xmp.Rating"] == "4"
        assert not any("Urgency" in key for key in xmp)
    # darktable writes its color labels as an rdf:Seq of numbers; so do we.
    assert re.search(
        r"<darktable:colorlabels>\s*<rdf:Seq>\s*<rdf:li>2</rdf:li>", results[1].path.read_text()
    )


@pytest.mark.parametrize(
    ("label", "darktable", "digikam", "photomechanic"),
    [
        ("Red", ["0"], "1", "1"),
        ("Purple", ["4"], "6", "6"),
        ("Second", ["1"], "3", "3"),  # Bridge's words
        ("To Do", ["4"], "6", "6"),
        ("Keeper", None, None, None),  # a custom Lightroom label: text only
    ],
)
def test_label_words_map_to_each_editors_color_numbers(
    photo, label, darktable, digikam, photomechanic
):
    write_sidecars(photo, _reject(label), ALL)
    short = read_sidecar(photo.with_suffix(".xmp"))
    long = read_sidecar(photo.with_name("DSC_0001.NEF.xmp"))
    assert short["Xmp.xmp.Label"] == label and long["Xmp.xmp.Label"] == label
    assert long.get("Xmp.darktable.colorlabels") == darktable
    assert long.get("Xmp.digiKam.ColorLabel") == digikam
    assert short.get("Xmp.photomechanic.ColorClass") == photomechanic
    assert long["Xmp.digiKam.PickLabel"] == "1"


def test_undecided_frame_is_pending_in_digikam_and_has_no_color(photo: Path):
    write_sidecars(photo, _reject(), ["digikam", "darktable"])
    write_sidecars(photo, MAYBE, ["digikam", "darktable"])
    xmp = read_sidecar(photo.with_name("DSC_0001.NEF.xmp"))
    assert xmp["Xmp.digiKam.PickLabel"] == "2"
    for key in (
        "Xmp.digiKam.ColorLabel",
        "Xmp.darktable.colorlabels",
        "Xmp.xmp.Label",
        "Xmp.digiKam.TagsList",
    ):
        assert key not in xmp, key


def test_a_persons_darktable_color_label_is_never_overwritten(photo: Path):
    sidecar = photo.with_name("DSC_0001.NEF.xmp")
    shutil.copy(DATA / "darktable_sidecar.xmp", sidecar)  # purple, set in darktable
    [result] = write_sidecars(photo, _reject(), ["darktable"])
    assert result.kept_label == "4"
    xmp = read_sidecar(sidecar)
    assert xmp["Xmp.darktable.colorlabels"] == ["4"]
    assert "Xmp.xmp.Label" not in xmp  # the label group is the person's: no Red beside it
    assert xmp["Xmp.xmp.Rating"] == "1"  # darktable's 0 stars meant "not rated"


def test_a_persons_digikam_pick_is_never_overwritten(photo: Path):
    [first] = write_sidecars(photo, _reject(), ["digikam"])
    first.path.write_text(
        first.path.read_text().replace('digiKam:PickLabel="1"', 'digiKam:PickLabel="3"')
    )
    [second] = write_sidecars(photo, replace(SELECT, verdict="select"), ["digikam"])
    # Only the pick was the person's: the rating was still ours, and was written.
    assert second.kept_pick == "3" and second.rating_written and second.kept_rating is None
    xmp = read_sidecar(first.path)
    assert xmp["Xmp.digiKam.PickLabel"] == "3"
    # The person's pick is their verdict: postselectd's color and keywords are withdrawn.
    assert second.overruled and "Xmp.digiKam.ColorLabel" not in xmp
    assert xmp["Xmp.digiKam.TagsList"] == ["PostSelect/overruled"]


def test_every_key_of_a_darktable_sidecar_survives(photo: Path):
    """tests/data/darktable_sidecar.xmp was written by darktable 4.2.1 (import, a purple
    label, a People|Anna tag, an export that applied its default modules: 10 history
    entries, and empty masks_history)."""
    sidecar = photo.with_name("DSC_0001.NEF.xmp")
    shutil.copy(DATA / "darktable_sidecar.xmp", sidecar)
    before = read_sidecar(sidecar)
    assert before["Xmp.darktable.masks_history"] == []
    assert any(k.startswith("Xmp.darktable.history[10]") for k in before)
    write_sidecars(photo, REJECT, ["darktable", "digikam"])
    write_sidecars(photo, MAYBE, ["darktable", "digikam"])
    after = read_sidecar(sidecar)
    for key, value in before.items():
        assert key in after, f"{key} was lost"
        if key not in ("Xmp.xmp.Rating", "Xmp.dc.subject", "Xmp.lr.hierarchicalSubject"):
            assert after[key] == value, f"{key} changed"
    # Its purple label is a person's verdict: only "overruled" of PostSelect's keywords.
    assert after["Xmp.lr.hierarchicalSubject"] == ["People|Anna", "PostSelect|overruled"]


# --- living next to an editor -----------------------------------------------------------

EDITOR = r"""
import os, random, sys, time
path, stop = sys.argv[1], sys.argv[2]
n = 0
while not os.path.exists(stop):
    text = open(path, encoding="utf-8").read()
    n += 1
    if "xmlns:editor=" not in text:
        text = text.replace("<rdf:Description ",
                            '<rdf:Description xmlns:editor="http://example.com/editor/" ', 1)
    text = text.replace("<rdf:Description ", f'<rdf:Description editor:Edit{n}="{n}" ', 1)
    tmp = path + f".editor-{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)  # its own temp + rename, as Lightroom does; no lock
    time.sleep(random.uniform(0.02, 0.08))  # Lightroom: once per change
print(n)
"""


def test_an_editor_rewriting_the_sidecar_meanwhile_loses_nothing(photo: Path, tmp_path: Path):
    import subprocess
    import sys
    import time

    [first] = write_sidecars(photo, SELECT, ["lightroom"])
    stop = tmp_path.parent / f"{tmp_path.name}-stop"
    editor = subprocess.Popen(
        [sys.executable, "-c", EDITOR, str(first.path), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    writes = 0
    try:
        while time.monotonic() - started < 3.0:
            write_sidecars(photo, SELECT if writes % 2 else REJECT, ["lightroom"])
            writes += 1
    finally:
        stop.touch()
        edits = int(editor.communicate(timeout=30)[0])
    last = write_sidecars(photo, REJECT, ["lightroom"])[0]
    assert edits > 20 and writes > 50, f"too little overlap ({edits} edits, {writes} writes)"
    xmp = read_sidecar(last.path)  # parses
    # Every edit the editor made is there: postselectd never replaced a version it had not
    # merged into (each editor round builds on the file it read, so a lost one leaves a gap).
    present = sorted(int(k[len("Xmp.editor.Edit") :]) for k in xmp if k.startswith("Xmp.editor."))
    assert present == list(range(1, edits + 1))
    assert xmp["Xmp.xmp.Rating"] == "1" and xmp["Xmp.xmp.Label"] == "Red"
    assert sorted(p.name for p in photo.parent.iterdir()) == ["DSC_0001.NEF", "DSC_0001.xmp"]


def test_temps_of_killed_writers_are_swept_at_the_first_write_and_then_now_and_then(
    photo: Path, monkeypatch
):
    import subprocess
    import sys

    from postselectd import sidecar

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a writer that was killed: its pid is no longer running
    folder = photo.parent
    stale = folder / f".DSC_0002.xmp.postselectd-{gone.pid}-0bad.tmp"
    alive = folder / f".DSC_0003.xmp.postselectd-{os.getppid()}-0f0f.tmp"
    for tmp in (stale, alive):
        tmp.write_bytes(b"<half a sidecar")
    write_sidecars(photo, SELECT, ["lightroom"])
    assert not stale.exists(), "the first write into a folder sweeps it"
    assert alive.exists(), "a running writer's temp is its own"
    stale.write_bytes(b"<half a sidecar")
    write_sidecars(photo, MAYBE, ["lightroom"], force=True)
    assert stale.exists(), "not listed again for every sidecar"
    monkeypatch.setattr(sidecar, "SWEEP_EVERY_SECONDS", 0.0)
    write_sidecars(photo, SELECT, ["lightroom"], force=True)
    assert not stale.exists() and alive.exists()
    assert read_sidecar(photo.with_suffix(".xmp"))["Xmp.xmp.Rating"]


# --- no rewrite without a change (#20, point 4) -----------------------------------------


def test_a_sidecar_that_already_says_it_all_is_not_touched(photo: Path):
    write_sidecars(photo, SELECT, ["lightroom", "darktable"])
    sidecars = sidecar_paths(photo, ["lightroom", "darktable"])
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sidecars}
    results = write_sidecars(photo, SELECT, ["lightroom", "darktable"])
    assert [r.changed for r in results] == [False, False]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sidecars} == before
    assert sorted(p.name for p in photo.parent.iterdir()) == sorted(
        [photo.name] + [p.name for p in sidecars]
    )  # no temp file either


def test_rated_at_moves_with_the_verdict_not_with_the_numbers(photo: Path):
    [first] = write_sidecars(photo, SELECT, ["lightroom"])
    # The verdict was written long ago.
    text = re.sub(
        r'postselect:RatedAt="[^"]*"',
        'postselect:RatedAt="2020-01-01T00:00:00+00:00"',
        first.path.read_text(),
    )
    first.path.write_text(text)
    [numbers] = write_sidecars(photo, replace(SELECT, keeper_probability=0.95), ["lightroom"])
    xmp = read_sidecar(first.path)
    assert numbers.changed and xmp["Xmp.postselect.KeeperProbability"] == "0.9500"
    assert xmp["Xmp.postselect.RatedAt"] == "2020-01-01T00:00:00+00:00"
    [verdict] = write_sidecars(photo, REJECT, ["lightroom"])
    assert verdict.changed
    rated_at = read_sidecar(first.path)["Xmp.postselect.RatedAt"]
    assert rated_at != "2020-01-01T00:00:00+00:00" and rated_at.startswith("20")


def test_a_persons_label_overrules_and_a_later_run_leaves_it_alone(photo: Path):
    [first] = write_sidecars(photo, REJECT, ["lightroom"])
    # The person labels the frame in an exiv2-based editor (a real pyexiv2 write), in a
    # process of its own: exiv2's namespace table is per process, and a sidecar read
    # earlier in this one (xmlns:xmp bound to another URI) would redirect its Xmp.xmp.
    edit = (
        "import pyexiv2, sys; image = pyexiv2.Image(sys.argv[1]); "
        "image.modify_xmp({sys.argv[2]: sys.argv[3]}); image.close()"
    )
    subprocess.run(
        [sys.executable, "-c", edit, str(first.path), "Xmp.xmp.Label", "Purple"], check=True
    )
    [second] = write_sidecars(photo, REJECT, ["lightroom"])
    assert second.overruled and second.kept_label == "Purple" and second.changed
    xmp = read_sidecar(first.path)
    assert xmp["Xmp.xmp.Label"] == "Purple" and xmp["Xmp.xmp.Rating"] == "1"
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["PostSelect|overruled"]
    assert xmp["Xmp.dc.subject"] == ["overruled"]
    assert xmp["Xmp.postselect.Reasons"] == ["motion blur"]  # the numbers stay
    state = (first.path.read_bytes(), first.path.stat().st_mtime_ns)
    [third] = write_sidecars(photo, REJECT, ["lightroom"])
    assert not third.changed and third.overruled
    assert (first.path.read_bytes(), first.path.stat().st_mtime_ns) == state
