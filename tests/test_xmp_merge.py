"""The merge keeps other programs' XMP exactly, and a person's removals stay removed.

Foreign properties are compared by (namespace URI, local name) over the whole RDF tree,
structs, arrays, qualifiers and attributes-as-properties included, read by a walker of
our own here (not by the code under test, nor by exiv2, which keys by prefix). The
samples in tests/data/xmp are listed with their origin in tests/data/xmp/MANIFEST.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pytest
from conftest import DATA, copy_file, run_cli, shared_path

from postselectd.report import verdict_from_sidecar
from postselectd.sidecar import (
    NS_URI,
    SidecarContent,
    SidecarError,
    read_sidecar,
    write_sidecars,
)

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML = "http://www.w3.org/XML/1998/namespace"
XMP = "http://ns.adobe.com/xap/1.0/"
DC = "http://purl.org/dc/elements/1.1/"
LR = "http://ns.adobe.com/lightroom/1.0/"
DIGIKAM = "http://www.digikam.org/ns/1.0/"
DARKTABLE = "http://darktable.sf.net/"
PHOTOMECHANIC = "http://ns.camerabits.com/photomechanic/1.0/"
# What postselectd writes: everything else in a sidecar belongs to someone else.
OURS = {
    (XMP, "Rating"),
    (XMP, "Label"),
    (DC, "subject"),
    (LR, "hierarchicalSubject"),
    (DIGIKAM, "TagsList"),
    (DIGIKAM, "ColorLabel"),
    (DIGIKAM, "PickLabel"),
    (DARKTABLE, "colorlabels"),
    (PHOTOMECHANIC, "ColorClass"),
}
KEYWORD_ARRAYS = ((DC, "subject"), (LR, "hierarchicalSubject"), (DIGIKAM, "TagsList"))

# exiftool_prefixes.xmp is beyond the XMP Toolkit that editors read with: see below.
SAMPLES = [p for p in sorted((DATA / "xmp").glob("*.xmp")) if p.name != "exiftool_prefixes.xmp"]
SAMPLES += [DATA / "lightroom_sidecar.xmp", DATA / "darktable_sidecar.xmp"]

REJECT = SidecarContent(
    stars=1,
    label="Red",
    keywords=("reject", "motion blur"),
    keyword_parent="PostSelect",
    keeper_probability=0.08,
    reasons=("motion blur",),
    model_version="test-1",
    verdict="reject",
)
SELECT = SidecarContent(
    stars=4,
    label="Green",
    keywords=("select",),
    keyword_parent="PostSelect",
    keeper_probability=0.93,
    reasons=(),
    model_version="test-1",
    verdict="select",
)
ALL = ["lightroom", "darktable", "digikam", "photomechanic"]


def _name(tag: str) -> tuple[str, str]:
    uri, _, local = tag[1:].partition("}")
    return uri, local


def _node(element, path: tuple, out: dict) -> None:
    """One property element (or array item): its value, fields, items and qualifiers."""
    fields = False
    for attr, value in element.attrib.items():
        name = _name(attr)
        if name == (RDF, "resource"):
            out[path] = ("resource", value)
        elif name == (XML, "lang"):
            out[path + (name,)] = value
        elif name[0] != RDF:
            out[path + (name,)] = value  # a struct field as an attribute
            fields = True
    children = list(element)
    if element.get(f"{{{RDF}}}parseType") == "Resource":
        for child in children:
            _node(child, path + (_name(child.tag),), out)
        return
    for child in children:
        name = _name(child.tag)
        if name in ((RDF, "Bag"), (RDF, "Seq"), (RDF, "Alt")):
            out[path + ("array",)] = name[1]
            for index, item in enumerate(child):
                _node(item, path + (index,), out)
        elif name == (RDF, "Description"):
            _description(child, path, out)
        else:
            _node(child, path + (name,), out)
    if not children and not fields and path not in out:
        out[path] = (element.text or "").strip() if element.text else ""


def _description(element, path: tuple, out: dict) -> None:
    for attr, value in element.attrib.items():
        name = _name(attr)
        if name[0] not in (RDF, XML):
            out[path + (name,)] = value
    for child in element:
        _node(child, path + (_name(child.tag),), out)


def triples(data: bytes) -> dict[tuple, object]:
    """Every property of a packet: path of (namespace URI, local name) steps -> value,
    plus anything x:xmpmeta holds besides rdf:RDF (as its XML)."""
    root = SafeET.fromstring(data.lstrip(b"\xef\xbb\xbf"))
    out: dict[tuple, object] = {}
    rdf = root if root.tag == f"{{{RDF}}}RDF" else root.find(f".//{{{RDF}}}RDF")
    for description in rdf:
        _description(description, (), out)
    for other in root if rdf is not root else ():
        if other is not rdf:
            out[("outside rdf:RDF", _name(other.tag))] = SafeET.tostring(other)
    return out


def foreign(props: dict[tuple, object]) -> dict[tuple, object]:
    return {
        path: value
        for path, value in props.items()
        if not (isinstance(path[0], tuple) and (path[0] in OURS or path[0][0] == NS_URI))
    }


def items(props: dict[tuple, object], prop: tuple[str, str]) -> list[object]:
    return [
        v
        for p, v in sorted(props.items(), key=str)
        if p[0] == prop and len(p) == 2 and isinstance(p[1], int)
    ]


def exiftool_tags(path: Path) -> dict[str, object]:
    """What exiftool reads from a sidecar, flattened (its -struct view of qualifiers
    depends on Perl's hash order). Groups are prefixes: URIs are compared above."""
    out = subprocess.run(
        ["exiftool", "-j", "-n", "-G1", "-xmp:all", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    [tags] = json.loads(out.stdout)
    tags.pop("SourceFile")
    return tags


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    raw = tmp_path / "DSC_0001.NEF"
    raw.write_bytes(b"not really a raw, never opened for writing")
    return raw


def test_every_sample_is_listed_in_the_manifest_as_committed():
    """Where each sample comes from is only true of the bytes it was written with."""
    listed = {}
    for line in (DATA / "xmp" / "MANIFEST").read_text().splitlines():
        if match := re.fullmatch(r"\s+([0-9a-f]{64})\s+(\S+)", line):
            listed[match[2]] = match[1]
    samples = sorted((DATA / "xmp").glob("*.xmp")) + SAMPLES[-2:]
    assert sorted(listed) == sorted(str(p.relative_to(DATA)) for p in samples)
    for sample in samples:
        digest = hashlib.sha256(sample.read_bytes()).hexdigest()
        assert listed[str(sample.relative_to(DATA))] == digest, f"{sample.name} changed"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_foreign_property_survives_with_its_exact_namespace(photo: Path, sample: Path):
    """Lightroom, darktable, digiKam, Capture One, ON1, Photo Mechanic, exiftool/Windows
    Photo and Photoshop sidecars: all their properties, compared by namespace URI, survive a
    select, a reject and an undecided write in every dialect, and their keywords stay."""
    before = sample.read_bytes()
    for profiles in (["lightroom", "photomechanic"], ["darktable", "digikam"]):
        sidecar = (
            photo.with_suffix(".xmp")
            if "lightroom" in profiles
            else photo.with_name(photo.name + ".xmp")
        )
        sidecar.write_bytes(before)
        for content in (SELECT, REJECT, replace(SELECT, stars=3, label=None, keywords=())):
            write_sidecars(photo, content, profiles)
        after = sidecar.read_bytes()
        old, new = triples(before), triples(after)
        assert foreign(new) == foreign(old), f"{sample.name} ({profiles[0]}): foreign XMP changed"
        for prop in KEYWORD_ARRAYS:
            theirs = items(old, prop)
            assert items(new, prop)[: len(theirs)] == theirs, f"{prop[1]}: a person's keyword lost"
        assert read_sidecar(sidecar)["Xmp.postselect.ModelVersion"] == "test-1"  # exiv2 reads it


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_exiftool_reads_every_foreign_tag_unchanged(photo: Path, sample: Path):
    sidecar = photo.with_name(photo.name + ".xmp")
    shutil.copy(sample, sidecar)
    before = exiftool_tags(sidecar)
    write_sidecars(photo, REJECT, ["darktable", "digikam"])
    after = exiftool_tags(sidecar)
    ours = (
        "Rating",
        "Label",
        "Subject",
        "HierarchicalSubject",
        "TagsList",
        "ColorLabel",
        "PickLabel",
        "Colorlabels",
        "ColorClass",
    )
    for tag, value in before.items():
        if tag.split(":")[-1] in ours or tag == "XMP-x:XMPToolkit":  # the writer's name
            continue
        assert after.get(tag) == value, f"{sample.name}: exiftool reads {tag} differently"
    person = before.get("XMP-xmp:Rating") not in (None, 0)  # 0: "not rated"
    assert after["XMP-xmp:Rating"] == (before["XMP-xmp:Rating"] if person else 1)


def test_a_sidecar_the_xmp_toolkit_cannot_read_is_reported_and_left_alone(photo: Path):
    """Lightroom, darktable and digiKam read with the XMP Toolkit: a sidecar it refuses
    (here exiftool's prefix torture test) would not show our rating anyway; say so."""
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "xmp" / "exiftool_prefixes.xmp", sidecar)
    with pytest.raises(SidecarError, match="not valid XMP .*Top level typedNode.*left untouched"):
        write_sidecars(photo, REJECT, ["lightroom"])
    assert sidecar.read_bytes() == (DATA / "xmp" / "exiftool_prefixes.xmp").read_bytes()


@pytest.mark.parametrize("encoding", ["iso-8859-1", "utf-16"])
def test_a_sidecar_not_in_utf8_is_reported_and_left_alone(photo: Path, encoding: str):
    sidecar = photo.with_suffix(".xmp")
    text = (DATA / "xmp" / "capture_one.xmp").read_text().replace("\ufeff", "")
    text = f'<?xml version="1.0" encoding="{encoding}"?>\n' + text
    sidecar.write_bytes(text.encode(encoding))
    before = sidecar.read_bytes()
    with pytest.raises(SidecarError, match="not UTF-8 XMP; left untouched"):
        write_sidecars(photo, REJECT, ["lightroom"])
    assert sidecar.read_bytes() == before


def test_a_merge_the_xmp_toolkit_cannot_read_is_never_written(photo: Path, monkeypatch):
    """The safety net under the packet editor: a fault injected into its output."""
    from postselectd import sidecar as module

    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "lightroom_sidecar.xmp", sidecar)
    real = module._Packet.merged
    monkeypatch.setattr(
        module._Packet, "merged", lambda self: real(self).replace(b"<rdf:Description", b"<rdf:x", 1)
    )
    with pytest.raises(SidecarError, match="merging into it failed .*left untouched"):
        write_sidecars(photo, REJECT, ["lightroom"])
    assert sidecar.read_bytes() == (DATA / "lightroom_sidecar.xmp").read_bytes()
    assert sorted(p.name for p in photo.parent.iterdir()) == ["DSC_0001.NEF", "DSC_0001.xmp"]


def test_a_namespace_without_a_trailing_slash_keeps_its_uri(photo: Path):
    """exiv2 registers http://www.on1.com/photoraw as .../photoraw/; ON1 then no longer
    finds its own settings."""
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "xmp" / "on1.xmp", sidecar)
    write_sidecars(photo, REJECT, ["lightroom"])
    text = sidecar.read_text()
    assert 'xmlns:on1="http://www.on1.com/photoraw"' in text
    assert 'xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0"' in text
    assert "photoraw/" not in text and "photo/1.0/" not in text
    assert "kept outside RDF</on1:Settings>" in text


def test_untouched_bytes_stay_byte_for_byte(photo: Path):
    """Only our properties change: the editor's layout, comments and order stay."""
    sidecar = photo.with_name(photo.name + ".xmp")
    shutil.copy(DATA / "darktable_sidecar.xmp", sidecar)
    write_sidecars(photo, REJECT, ["darktable"])
    before = (DATA / "darktable_sidecar.xmp").read_text()
    after = sidecar.read_text()
    history = before[before.index("<darktable:history>") : before.index("</darktable:history>")]
    assert history in after
    assert after.startswith(before[: before.index("xmp:Rating")])


# --- what a person removed stays removed ------------------------------------------------

needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None, reason="exiftool is not installed (the editor here)"
)


def exiftool_edit(sidecar: Path, *assignments: str) -> None:
    """A person's edit, made by a real XMP writer that is not ours."""
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", *assignments, str(sidecar)],
        check=True,
        capture_output=True,
    )


def keywords(sidecar: Path) -> tuple[list[str], list[str]]:
    xmp = read_sidecar(sidecar)
    return xmp.get("Xmp.lr.hierarchicalSubject", []), xmp.get("Xmp.dc.subject", [])


@needs_exiftool
def test_a_keyword_a_person_removed_stays_removed_also_after_a_folder_rename(tmp_path: Path):
    shoot = tmp_path / "2026-05-01"
    shoot.mkdir()
    photo = shoot / "DSC_0001.NEF"
    photo.write_bytes(b"not really a raw")
    write_sidecars(photo, REJECT, ["lightroom"])
    sidecar = photo.with_suffix(".xmp")
    # The photographer disagrees: removes the keyword in the editor (both forms of it).
    exiftool_edit(
        sidecar, "-XMP-lr:HierarchicalSubject-=PostSelect|reject", "-XMP-dc:Subject-=reject"
    )
    write_sidecars(photo, REJECT, ["lightroom"])
    assert keywords(sidecar) == (["PostSelect|motion blur"], ["motion blur"])
    # A renamed folder is re-rated: the sidecar moved with it, and so did the memory.
    renamed = shoot.rename(tmp_path / "2026-05-01 wedding")
    photo, sidecar = renamed / photo.name, renamed / sidecar.name
    write_sidecars(photo, REJECT, ["lightroom"])
    write_sidecars(photo, SELECT, ["lightroom"])  # a new verdict adds its own keyword...
    write_sidecars(photo, REJECT, ["lightroom"])  # ...and the removed one never comes back
    assert keywords(sidecar) == (["PostSelect|motion blur"], ["motion blur"])
    tags = exiftool_tags(sidecar)
    assert tags["XMP-lr:HierarchicalSubject"] == "PostSelect|motion blur"


@needs_exiftool
def test_score_after_a_folder_rename_leaves_out_the_keyword_a_person_removed(tmp_path: Path):
    """The whole way: `score` on a real raw, the photographer deletes one reason in an
    editor, the shoot's folder is renamed and `score` runs on it again."""
    shoot = tmp_path / "2026-05-01"
    copy_file(shared_path("samples", "nef", "DSC_0109.NEF"), shoot)
    first = run_cli("score", "--json", str(shoot))
    assert first.returncode == 0, first.stderr
    sidecar = shoot / "DSC_0109.xmp"
    assert keywords(sidecar) == (
        ["PostSelect|reject", "PostSelect|eyes closed"],
        ["reject", "eyes closed"],
    )
    exiftool_edit(
        sidecar,
        "-XMP-lr:HierarchicalSubject-=PostSelect|eyes closed",
        "-XMP-dc:Subject-=eyes closed",
    )
    renamed = shoot.rename(tmp_path / "2026-05-01 regatta")
    second = run_cli("score", "--json", str(renamed))
    assert second.returncode == 0, second.stderr
    [record] = [json.loads(line) for line in second.stdout.splitlines() if line.strip()]
    assert record["reasons"] == ["eyes closed"]  # still postselectd's verdict...
    # ...but not the keyword the person took out.
    assert keywords(renamed / sidecar.name) == (["PostSelect|reject"], ["reject"])


@needs_exiftool
def test_removing_only_the_flat_keyword_removes_ours_everywhere(photo: Path):
    """Editors that show dc:subject only (Photo Mechanic, Bridge's list) remove the word."""
    write_sidecars(photo, REJECT, ["lightroom"])
    sidecar = photo.with_suffix(".xmp")
    exiftool_edit(sidecar, "-XMP-dc:Subject-=reject")
    write_sidecars(photo, REJECT, ["lightroom"])
    assert keywords(sidecar) == (["PostSelect|motion blur"], ["motion blur"])


@needs_exiftool
def test_a_digikam_tag_a_person_removed_stays_removed(photo: Path):
    write_sidecars(photo, REJECT, ["digikam"])
    sidecar = photo.with_name(photo.name + ".xmp")
    exiftool_edit(
        sidecar,
        "-XMP-digiKam:TagsList-=PostSelect/reject",
        "-XMP-lr:HierarchicalSubject-=PostSelect|reject",
        "-XMP-dc:Subject-=reject",
    )
    write_sidecars(photo, REJECT, ["digikam"])
    xmp = read_sidecar(sidecar)
    assert xmp["Xmp.digiKam.TagsList"] == ["PostSelect/motion blur"]
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["PostSelect|motion blur"]


@needs_exiftool
def test_a_keyword_a_person_added_under_postselect_is_theirs(photo: Path):
    write_sidecars(photo, REJECT, ["lightroom"])
    sidecar = photo.with_suffix(".xmp")
    exiftool_edit(sidecar, "-XMP-lr:HierarchicalSubject+=PostSelect|print")
    write_sidecars(photo, SELECT, ["lightroom"])
    assert read_sidecar(sidecar)["Xmp.lr.hierarchicalSubject"] == [
        "PostSelect|print",
        "PostSelect|select",
    ]


@needs_exiftool
def test_force_restores_the_keywords_a_person_removed(photo: Path):
    write_sidecars(photo, REJECT, ["lightroom"])
    sidecar = photo.with_suffix(".xmp")
    exiftool_edit(
        sidecar, "-XMP-lr:HierarchicalSubject-=PostSelect|reject", "-XMP-dc:Subject-=reject"
    )
    write_sidecars(photo, REJECT, ["lightroom"], force=True)
    assert keywords(sidecar) == (
        ["PostSelect|reject", "PostSelect|motion blur"],
        ["reject", "motion blur"],
    )


@needs_exiftool
def test_a_removal_from_a_sidecar_written_before_the_record_existed_holds(photo: Path):
    """Sidecars from 3568b71 only record the dc:subject words postselectd added."""
    write_sidecars(photo, REJECT, ["lightroom"])
    sidecar = photo.with_suffix(".xmp")
    text = sidecar.read_text()
    start = text.index("   <postselect:WrittenHierarchicalSubject>")
    end = text.index("</postselect:WrittenHierarchicalSubject>") + len(
        "</postselect:WrittenHierarchicalSubject>\n"
    )
    sidecar.write_text(text[:start] + text[end:])
    assert "Xmp.postselect.WrittenHierarchicalSubject" not in read_sidecar(sidecar)
    exiftool_edit(
        sidecar, "-XMP-lr:HierarchicalSubject-=PostSelect|reject", "-XMP-dc:Subject-=reject"
    )
    write_sidecars(photo, REJECT, ["lightroom"])
    assert keywords(sidecar) == (["PostSelect|motion blur"], ["motion blur"])


@needs_exiftool
def test_a_removed_keyword_a_person_puts_back_is_theirs(photo: Path):
    write_sidecars(photo, REJECT, ["lightroom"])
    sidecar = photo.with_suffix(".xmp")
    exiftool_edit(
        sidecar, "-XMP-lr:HierarchicalSubject-=PostSelect|reject", "-XMP-dc:Subject-=reject"
    )
    write_sidecars(photo, REJECT, ["lightroom"])
    exiftool_edit(sidecar, "-XMP-lr:HierarchicalSubject+=PostSelect|reject")
    write_sidecars(photo, SELECT, ["lightroom"])  # our verdict changes; the person's stays
    assert read_sidecar(sidecar)["Xmp.lr.hierarchicalSubject"] == [
        "PostSelect|reject",
        "PostSelect|select",
    ]


# --- guard states, as they are ----------------------------------------------------------


@needs_exiftool
def test_a_rating_a_person_deleted_is_kept_and_reported_as_theirs(photo: Path):
    write_sidecars(photo, SELECT, ["lightroom"])
    sidecar = photo.with_suffix(".xmp")
    exiftool_edit(sidecar, "-XMP-xmp:Rating=")  # "no stars", as the person wants it
    [result] = write_sidecars(photo, REJECT, ["lightroom"])
    assert not result.rating_written and result.kept_rating == ""
    assert result.kept_by_person == (("rating", ""),)
    assert "XMP-xmp:Rating" not in exiftool_tags(sidecar)
    verdict = verdict_from_sidecar(read_sidecar(sidecar))
    assert verdict.stars is None and verdict.rating_by_person
    [again] = write_sidecars(photo, SELECT, ["lightroom"])
    assert again.kept_rating == "" and "XMP-xmp:Rating" not in exiftool_tags(sidecar)


def test_a_rating_set_before_postselectd_ran_is_reported_as_a_persons(photo: Path):
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "xmp" / "photoshop_cs2.xmp", sidecar)  # xap:Rating="1"
    [result] = write_sidecars(photo, SELECT, ["lightroom"])
    assert verdict_from_sidecar(read_sidecar(sidecar)).rating_by_person  # the report's view
    assert result.kept_rating == "1" and result.kept_by_person == (("rating", "1"),)


# XMP lets a value carry qualifiers: rdf:value beside them, in three spellings. The XMP
# Toolkit (Lightroom, darktable, digiKam) reads rdf:value as the value.
Q = "http://ns.example.com/qualifiers/1.0/"
QUALIFIED = {
    "parseType Resource": '<xmp:Rating rdf:parseType="Resource">'
    "<rdf:value>{}</rdf:value><q:by>Anna</q:by></xmp:Rating>",
    "rdf:Description": "<xmp:Rating><rdf:Description>"
    "<rdf:value>{}</rdf:value><q:by>Anna</q:by></rdf:Description></xmp:Rating>",
    "attributes": '<xmp:Rating rdf:value="{}" q:by="Anna"/>',
}


def qualified_rating(form: str, stars: str, ours: str | None = None) -> bytes:
    record = f' xmlns:postselect="{NS_URI}" postselect:WrittenRating="{ours}"' if ours else ""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">' + _RDF_OPEN + '<rdf:Description rdf:about=""'
        f' xmlns:xmp="{XMP}" xmlns:q="{Q}"{record}>'
        + QUALIFIED[form].format(stars)
        + '</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>'
    ).encode()


@pytest.mark.parametrize("form", QUALIFIED)
def test_a_persons_qualified_rating_is_kept_with_its_qualifier(photo: Path, form: str):
    """3 stars with a qualifier (who gave them) are a person's 3 stars: not overwritten,
    not taken for a rating they removed, and their qualifier stays."""
    sidecar = photo.with_suffix(".xmp")
    sidecar.write_bytes(qualified_rating(form, "3"))
    assert read_sidecar(sidecar)["Xmp.xmp.Rating"] == "3"  # as editors read it
    [result] = write_sidecars(photo, REJECT, ["lightroom"])
    assert result.kept_by_person == (("rating", "3"),) and not result.rating_written
    assert read_sidecar(sidecar)["Xmp.xmp.Rating"] == "3"
    assert triples(sidecar.read_bytes())[((XMP, "Rating"), (Q, "by"))] == "Anna"


@pytest.mark.parametrize("form", QUALIFIED)
def test_our_rating_given_a_qualifier_is_still_ours_and_keeps_it(photo: Path, form: str):
    """An editor that adds a qualifier to our 1 star has not set a rating: the next
    verdict changes the value and leaves the qualifier where it is."""
    sidecar = photo.with_suffix(".xmp")
    sidecar.write_bytes(qualified_rating(form, "1", ours="1"))
    [result] = write_sidecars(photo, SELECT, ["lightroom"])
    assert result.kept_by_person == () and result.rating_written
    assert read_sidecar(sidecar)["Xmp.xmp.Rating"] == "4"
    assert triples(sidecar.read_bytes())[((XMP, "Rating"), (Q, "by"))] == "Anna"


@needs_exiftool
def test_photo_mechanics_no_color_class_does_not_freeze_the_label(photo: Path):
    undecided = replace(SELECT, stars=3, label=None, keywords=(), verdict="")
    write_sidecars(photo, undecided, ["photomechanic"])
    sidecar = photo.with_suffix(".xmp")
    # Photo Mechanic saves the sidecar and spells "no color class" as 0.
    exiftool_edit(sidecar, "-XMP-photomech:ColorClass=0")
    [result] = write_sidecars(photo, REJECT, ["photomechanic"])
    assert result.kept_label is None and result.rating_written
    assert result.kept_by_person == ()
    tags = exiftool_tags(sidecar)
    assert (tags["XMP-photomech:ColorClass"], tags["XMP-xmp:Label"]) == (1, "Red")
    # A person who then clears the class in Photo Mechanic removed our label: kept so.
    exiftool_edit(sidecar, "-XMP-photomech:ColorClass=0", "-XMP-xmp:Label=")
    [result] = write_sidecars(photo, SELECT, ["photomechanic"])
    assert result.kept_label == "" and result.kept_by_person == (("label", ""),)
    tags = exiftool_tags(sidecar)
    assert tags["XMP-photomech:ColorClass"] == 0 and "XMP-xmp:Label" not in tags


@needs_exiftool
def test_a_photo_mechanic_sidecar_with_no_class_and_no_stars_takes_our_verdict(photo: Path):
    """As Photo Mechanic leaves a frame nobody has judged: ColorClass 0, Rating 0."""
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "xmp" / "photo_mechanic.xmp", sidecar)
    [result] = write_sidecars(photo, REJECT, ["photomechanic"])
    assert result.kept_by_person == () and result.rating_written
    [again] = write_sidecars(photo, SELECT, ["photomechanic"])  # and it stays ours
    assert again.kept_by_person == ()
    tags = exiftool_tags(sidecar)
    assert (tags["XMP-photomech:ColorClass"], tags["XMP-xmp:Label"]) == (4, "Green")
    assert tags["XMP-xmp:Rating"] == 4 and tags["XMP-photomech:PMVersion"] == "PM6"


@needs_exiftool
def test_digikams_zero_labels_are_no_labels(photo: Path):
    write_sidecars(photo, replace(SELECT, label=None, verdict=""), ["digikam"])
    sidecar = photo.with_name(photo.name + ".xmp")
    exiftool_edit(sidecar, "-XMP-digiKam:ColorLabel=0")  # digiKam writes 0 for "none"
    [result] = write_sidecars(photo, REJECT, ["digikam"])
    assert read_sidecar(sidecar)["Xmp.digiKam.ColorLabel"] == "1"
    assert result.kept_label is None and result.kept_by_person == ()


def test_the_log_line_and_json_say_what_a_person_kept(tmp_path: Path):
    """`score` on a real raw: the person removed the rating and set a label."""
    folder = tmp_path / "shoot"
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), folder)
    first = run_cli("score", "--json", str(folder))
    assert first.returncode == 0, first.stderr
    sidecar = folder / "DSC_0102.xmp"
    text = sidecar.read_text()
    text = re.sub(r'\s+xmp:Rating="[^"]*"', "", text)
    text = re.sub(r'xmp:Label="[^"]*"', 'xmp:Label="Purple"', text)
    if 'xmp:Label="Purple"' not in text:
        text = text.replace(" postselect:", ' xmp:Label="Purple" postselect:', 1)
    sidecar.write_text(text)
    second = run_cli("score", "--json", str(folder))
    assert second.returncode == 0, second.stderr
    [record] = [json.loads(line) for line in second.stdout.splitlines() if line.strip()]
    assert record["kept_by_person"] == {"rating": None, "label": "Purple"}
    assert "kept the rating a person removed, the label a person set (Purple)" in second.stderr


# --- packets as odd as XML allows ---------------------------------------------------------

_RDF_OPEN = '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
ODD = {
    "self-closing, single quotes": "<x:xmpmeta xmlns:x='adobe:ns:meta/'>"
    + _RDF_OPEN
    + "<rdf:Description rdf:about='' xmlns:xmp='http://ns.adobe.com/xap/1.0/'"
    " xmp:CreatorTool='It&apos;s \"mine\"'/></rdf:RDF></x:xmpmeta>",
    "crlf and tabs": '<x:xmpmeta xmlns:x="adobe:ns:meta/">\r\n\t'
    + _RDF_OPEN
    + '\r\n\t\t<rdf:Description rdf:about=""\r\n\t\t\txmlns:dc="http://purl.org/dc/elements/1.1/">'
    "\r\n\t\t\t<dc:subject>\r\n\t\t\t\t<rdf:Bag>\r\n\t\t\t\t\t<rdf:li>a</rdf:li>\r\n\t\t\t\t"
    "</rdf:Bag>\r\n\t\t\t</dc:subject>\r\n\t\t</rdf:Description>\r\n\t</rdf:RDF>\r\n</x:xmpmeta>",
    "default namespace": '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    + _RDF_OPEN
    + '<rdf:Description rdf:about=""><foo xmlns="http://example.com/foo">bar</foo>'
    "</rdf:Description>"
    "</rdf:RDF></x:xmpmeta>",
    "xmp prefix bound elsewhere": '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    + _RDF_OPEN
    + '<rdf:Description rdf:about="" xmlns:xmp="http://other.example/" xmp:Rating="9"/>'
    "</rdf:RDF></x:xmpmeta>",
    "empty rdf:RDF": '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>',
    "qualified keywords in a Seq": '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    + _RDF_OPEN
    + '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject>'
    '<rdf:Seq><rdf:li xml:lang="en">a &amp; b</rdf:li><rdf:li><![CDATA[<c>]]></rdf:li>'
    "</rdf:Seq></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>",
}


@pytest.mark.parametrize("packet", ODD.values(), ids=ODD.keys())
def test_odd_but_valid_packets_are_merged_without_harm(photo: Path, packet: str):
    before = (
        '\ufeff<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        + packet
        + '\n<?xpacket end="w"?>'
    ).encode()
    sidecar = photo.with_name(photo.name + ".xmp")
    sidecar.write_bytes(before)
    for content in (REJECT, SELECT, REJECT):
        write_sidecars(photo, content, ["darktable", "digikam"])
    after = sidecar.read_bytes()
    old, new = triples(before), triples(after)
    assert foreign(new) == foreign(old)
    assert items(new, (DC, "subject"))[: len(items(old, (DC, "subject")))] == items(
        old, (DC, "subject")
    )
    assert new[((LR, "hierarchicalSubject"), 0)] == "PostSelect|reject"
    assert new[((XMP, "Rating"),)] == "1"
    if b"\r\n" in before:  # new lines end as the file's own do
        lone = before.replace(b"\r\n", b"").count(b"\n")
        assert after.replace(b"\r\n", b"").count(b"\n") == lone


@needs_exiftool
def test_a_nested_keyword_a_person_removed_stays_removed(photo: Path):
    """PostSelect|check|eyes: dc:subject carries only its leaf, "eyes"."""
    check = replace(REJECT, keywords=("check|eyes", "motion blur"))
    write_sidecars(photo, check, ["lightroom", "digikam"])
    sidecar = photo.with_suffix(".xmp")
    assert keywords(sidecar) == (
        ["PostSelect|check|eyes", "PostSelect|motion blur"],
        ["eyes", "motion blur"],
    )
    exiftool_edit(
        sidecar, "-XMP-lr:HierarchicalSubject-=PostSelect|check|eyes", "-XMP-dc:Subject-=eyes"
    )
    write_sidecars(photo, check, ["lightroom"])
    assert keywords(sidecar) == (["PostSelect|motion blur"], ["motion blur"])
    long = photo.with_name(photo.name + ".xmp")
    assert read_sidecar(long)["Xmp.digiKam.TagsList"] == [
        "PostSelect/check/eyes",
        "PostSelect/motion blur",
    ]
