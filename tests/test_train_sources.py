"""`postselectd train` reads the photographer's selects and rejects from where they live.

Each source is built for real: sidecars and embedded XMP written by exiftool, a folder
layout, a SQLite file with the Lightroom Classic catalog's tables and columns, and a
darktable library made by darktable itself (headless; a schema-subset stand-in where
darktable is not installed).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import copy_file, need_tool, shared_path
from PIL import Image

from postselectd.config import TrainConfig
from postselectd.dialects import set_by_person
from postselectd.ratings_sources import (
    CORRECTION,
    DARKTABLE,
    EMBEDDED,
    FOLDERS,
    LIGHTROOM,
    REJECT,
    SELECT,
    SIDECAR,
    CatalogIndex,
    Marks,
    RatingsSourceError,
    collect_verdicts,
    decide,
    marks_from_xmp,
    read_darktable_library,
    read_lightroom_catalog,
    shoot_folder,
    xmp_properties,
)
from postselectd.sidecar import SidecarContent, write_sidecars

RULES = TrainConfig()


def photo(folder: Path, name: str, color=(120, 90, 60)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", (64, 48), color).save(path, quality=90)
    return path


def exiftool(*args: str) -> None:
    subprocess.run([need_tool("exiftool"), "-q", "-overwrite_original", *args], check=True)


def verdicts_of(folder: Path, **catalogs) -> dict[str, tuple[str, str]]:
    photos = [(p, folder) for p in sorted(folder.rglob("*.jpg"))]
    photos += [(p, folder) for p in sorted(folder.rglob("*.dng"))]
    found, _ = collect_verdicts(photos, RULES, **catalogs)
    return {v.path.name: (v.verdict, v.source) for v in found}


def test_sidecars_written_by_exiftool_in_every_editors_dialect(tmp_path: Path):
    shoot = tmp_path / "shoot"
    cases = {
        "stars4.jpg": ("-XMP-xmp:Rating=4", "{stem}.xmp"),
        "stars1.jpg": ("-XMP-xmp:Rating=1", "{stem}.xmp"),
        "stars2.jpg": ("-XMP-xmp:Rating=2", "{stem}.xmp"),  # neither: not used
        "rejected.jpg": ("-XMP-xmp:Rating=-1", "{stem}.xmp"),  # Lightroom / Bridge reject
        "green.jpg": ("-XMP-xmp:Label=Green", "{stem}.xmp"),
        "red.jpg": ("-XMP-xmp:Label=Red", "{stem}.xmp"),
        "bridge.jpg": ("-XMP-xmp:Label=Approved", "{stem}.xmp"),  # Bridge's word for green
        "accepted.jpg": ("-XMP-digiKam:PickLabel=3", "{name}.xmp"),
        "pickrej.jpg": ("-XMP-digiKam:PickLabel=1", "{name}.xmp"),
        "dkred.jpg": ("-XMP-digiKam:ColorLabel=1", "{name}.xmp"),
        "conflict.jpg": ("-XMP-xmp:Rating=5 -XMP-xmp:Label=Red", "{stem}.xmp"),
    }
    for name, (tags, sidecar) in cases.items():
        path = photo(shoot, name)
        target = shoot / sidecar.format(stem=path.stem, name=path.name)
        exiftool("-o", str(target), *tags.split(), str(path))
        assert target.is_file()
    found = verdicts_of(shoot)
    assert found == {
        "stars4.jpg": (SELECT, SIDECAR),
        "stars1.jpg": (REJECT, SIDECAR),
        "rejected.jpg": (REJECT, SIDECAR),
        "green.jpg": (SELECT, SIDECAR),
        "red.jpg": (REJECT, SIDECAR),
        "bridge.jpg": (SELECT, SIDECAR),
        "accepted.jpg": (SELECT, SIDECAR),
        "pickrej.jpg": (REJECT, SIDECAR),
        "dkred.jpg": (REJECT, SIDECAR),
    }


def test_xmp_embedded_in_jpeg_and_dng_by_exiftool(tmp_path: Path):
    shoot = tmp_path / "shoot"
    exiftool("-XMP-xmp:Rating=5", str(photo(shoot, "inside.jpg")))
    exiftool("-XMP-xmp:Label=Red", str(photo(shoot, "inside-red.jpg")))
    # A sidecar beside the file wins over what is inside it.
    both = photo(shoot, "both.jpg")
    exiftool("-o", str(shoot / "both.xmp"), "-XMP-xmp:Rating=1", str(both))
    exiftool("-XMP-xmp:Rating=5", str(both))
    dng = next(iter(sorted(shared_path("samples", "raw", "good").glob("*.dng"))), None)
    if dng is not None:
        copy_file(dng, shoot, "camera.dng")
        exiftool("-XMP-xmp:Rating=1", str(shoot / "camera.dng"))
    found = verdicts_of(shoot)
    assert found["inside.jpg"] == (SELECT, EMBEDDED)
    assert found["inside-red.jpg"] == (REJECT, EMBEDDED)
    assert found["both.jpg"] == (REJECT, SIDECAR)
    if dng is not None:
        assert found["camera.dng"] == (REJECT, EMBEDDED)


def test_postselectds_own_rating_is_never_learnt_but_a_persons_correction_is(tmp_path: Path):
    shoot = tmp_path / "shoot"
    template = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:postselect="http://ns.postselectd.org/xmp/1.0/" {attrs}/></rdf:RDF></x:xmpmeta>'
    )
    cases = {
        # postselectd wrote 1 star + Red, nobody changed it: postselectd's opinion, not used.
        "ours.jpg": 'xmp:Rating="1" postselect:WrittenRating="1" xmp:Label="Red" '
        'postselect:WrittenLabel="Red"',
        # the person made our reject a 4-star: the strongest signal.
        "fixed.jpg": 'xmp:Rating="4" postselect:WrittenRating="1" xmp:Label="Red" '
        'postselect:WrittenLabel="Red"',
        # the person only turned our Green label Red (our 4 stars left alone).
        "relabelled.jpg": 'xmp:Rating="4" postselect:WrittenRating="4" xmp:Label="Red" '
        'postselect:WrittenLabel="Green"',
    }
    for name, attrs in cases.items():
        path = photo(shoot, name)
        path.with_suffix(".xmp").write_text(template.format(attrs=attrs))
    found = verdicts_of(shoot)
    assert found == {"fixed.jpg": (SELECT, CORRECTION), "relabelled.jpg": (REJECT, CORRECTION)}


@pytest.mark.parametrize(
    "value, written, by_person",
    [
        ("0", "none", False),  # digiKam's own "no label" over our "none": still ours
        ("1", "none", True),  # a person gave the frame we left unlabelled a Red label
        (None, "1", True),  # a person removed our Red label ...
        ("0", "1", True),  # ... or set digiKam's "no label" over it
        ("1", "1", False),  # still our Red
        ("4", None, True),  # no record: a label postselectd never wrote is a person's
        ("0", None, False),  # digiKam's "no label", no record: nobody's
    ],
)
def test_train_and_the_sidecar_writer_agree_on_who_set_a_label(value, written, by_person):
    """One rule (dialects.person_set): what the writer keeps as a person's, train learns
    as theirs, and what the writer may still change, train never learns from."""
    sidecar = {"Xmp.digiKam.ColorLabel": value, "Xmp.postselect.WrittenColorLabel": written}
    kept = set_by_person({k: v for k, v in sidecar.items() if v is not None}).label
    found = {"digikam_color": value, "written:digikam_color": written}
    marks, corrected = marks_from_xmp({k: v for k, v in found.items() if v is not None})
    assert (kept is not None, corrected or bool(marks.labels)) == (by_person, by_person)


def test_a_sidecar_postselectd_left_as_digikam_spells_it_teaches_nothing(tmp_path: Path):
    """digiKam writes ColorLabel 0 for "no label"; postselectd, rating a frame undecided,
    leaves that 0 and records that it wrote no label. That sidecar is all postselectd's:
    not a correction for train to learn from (nor for the learning loop to count)."""
    raw = photo(tmp_path, "DSC_0001.jpg")
    sidecar = raw.with_name(raw.name + ".xmp")
    sidecar.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:digiKam="http://www.digikam.org/ns/1.0/" digiKam:ColorLabel="0"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    undecided = SidecarContent(
        stars=3,
        label=None,
        keywords=(),
        keyword_parent="PostSelect",
        keeper_probability=0.7,
        reasons=(),
        model_version="test-1",
    )
    write_sidecars(raw, undecided, ["digikam"])
    properties = xmp_properties(sidecar.read_bytes())
    assert (properties["digikam_color"], properties["written:digikam_color"]) == ("0", "none")
    assert marks_from_xmp(properties) == (Marks(), False)
    assert verdicts_of(tmp_path) == {}


def test_select_and_reject_folders_are_verdicts_of_one_shoot(tmp_path: Path):
    shoot = tmp_path / "2026-05-01 wedding"
    keep = photo(shoot / "select", "a.jpg")
    drop = photo(shoot / "Rejects", "b.jpg")
    photo(shoot, "c.jpg")  # not culled: not used
    found = verdicts_of(tmp_path)
    assert found == {"a.jpg": (SELECT, FOLDERS), "b.jpg": (REJECT, FOLDERS)}
    assert shoot_folder(keep) == shoot_folder(drop) == shoot


def make_lightroom_catalog(path: Path, rows: list[tuple]) -> None:
    """The Lightroom Classic tables and columns FACTS.md lists (a real catalog has many
    more of both); rows: (absolute folder, file name, rating, pick, colorLabels)."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE AgLibraryRootFolder (id_local INTEGER PRIMARY KEY, absolutePath TEXT,
            name TEXT);
        CREATE TABLE AgLibraryFolder (id_local INTEGER PRIMARY KEY, pathFromRoot TEXT,
            rootFolder INTEGER);
        CREATE TABLE AgLibraryFile (id_local INTEGER PRIMARY KEY, baseName TEXT,
            extension TEXT, originalFilename TEXT, folder INTEGER);
        CREATE TABLE Adobe_images (id_local INTEGER PRIMARY KEY, rating INTEGER,
            pick NOT NULL DEFAULT 0, colorLabels NOT NULL DEFAULT '', rootFile INTEGER);
        """
    )
    roots: dict[str, int] = {}
    for n, (folder, name, rating, pick, label) in enumerate(rows, start=1):
        root, sub = str(folder.parent) + "/", folder.name + "/"
        if root not in roots:
            roots[root] = len(roots) + 1
            con.execute(
                "INSERT INTO AgLibraryRootFolder VALUES (?, ?, ?)", (roots[root], root, "r")
            )
        con.execute("INSERT INTO AgLibraryFolder VALUES (?, ?, ?)", (n, sub, roots[root]))
        stem, ext = name.rsplit(".", 1)
        con.execute("INSERT INTO AgLibraryFile VALUES (?, ?, ?, ?, ?)", (n, stem, ext, name, n))
        con.execute("INSERT INTO Adobe_images VALUES (?, ?, ?, ?, ?)", (n, rating, pick, label, n))
    con.commit()
    con.close()


def test_lightroom_catalog_stars_flags_and_labels_from_a_copy(tmp_path: Path):
    shoot = tmp_path / "Pictures" / "2026-06-01"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"):
        photo(shoot, name)
    catalog = tmp_path / "Lightroom Catalog.lrcat"
    make_lightroom_catalog(
        catalog,
        [
            (shoot, "a.jpg", 4, 0, ""),  # 4 stars
            (shoot, "b.jpg", None, -1.0, ""),  # rejected flag (Lightroom stores a REAL)
            (shoot, "c.jpg", 0, 1.0, ""),  # picked
            (shoot, "d.jpg", None, 0, "Red"),
            (shoot, "e.jpg", 2, 0, ""),  # 2 stars: neither
            (shoot, "f.jpg", 5, -1.0, "Green"),  # a reject flag beats stars and labels
        ],
    )
    before = (catalog.read_bytes(), catalog.stat().st_mtime_ns)
    index = CatalogIndex(read_lightroom_catalog(catalog))
    assert (catalog.read_bytes(), catalog.stat().st_mtime_ns) == before
    assert not list(tmp_path.glob("*.lrcat-*")), "the live catalog got a journal"
    found = verdicts_of(shoot, lightroom=index)
    assert found == {
        "a.jpg": (SELECT, LIGHTROOM),
        "b.jpg": (REJECT, LIGHTROOM),
        "c.jpg": (SELECT, LIGHTROOM),
        "d.jpg": (REJECT, LIGHTROOM),
        "f.jpg": (REJECT, LIGHTROOM),
    }


def test_a_catalog_made_on_another_machine_matches_by_folder_and_name(tmp_path: Path):
    here = tmp_path / "moved" / "2026-06-01"
    photo(here, "a.jpg")
    marks = {"C:/Users/anna/Pictures/2026-06-01/a.jpg": Marks(stars=5)}
    assert CatalogIndex(marks).get(here / "a.jpg") == Marks(stars=5)


def test_a_file_that_is_no_catalog_says_so(tmp_path: Path):
    bad = tmp_path / "broken.lrcat"
    bad.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(RatingsSourceError, match="broken.lrcat: not a Lightroom Classic catalog"):
        read_lightroom_catalog(bad)
    other = tmp_path / "other.lrcat"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(RatingsSourceError, match="no such table: Adobe_images"):
        read_lightroom_catalog(other)
    with pytest.raises(RatingsSourceError, match="not a darktable library"):
        read_darktable_library(bad)


def test_flags_beat_stars_and_disagreeing_marks_say_nothing():
    assert decide(Marks(stars=5, pick=-1), RULES)[0] == REJECT
    assert decide(Marks(stars=1, pick=1), RULES)[0] == SELECT
    assert decide(Marks(stars=4, labels=("Red",)), RULES) == (
        None,
        "conflicting: 4 stars, Red label",
    )
    # darktable's import default of 1 star is not a reject (unless configured so).
    assert decide(Marks(stars=1, one_star_is_default=True), RULES)[0] is None
    strict = TrainConfig(darktable_one_star_is_reject=True)
    assert decide(Marks(stars=1, one_star_is_default=True), strict)[0] == REJECT


# --- darktable --------------------------------------------------------------------------

RATE_LUA = """
local dt = require "darktable"
dt.register_event("postselectd-train-test", "post-import-film", function(event, film)
  for i = 1, #film do
    local img = film[i]
    if img.filename == "a.jpg" then img.rating = 4 end
    if img.filename == "b.jpg" then img.rating = -1 end
    if img.filename == "c.jpg" then img.red = true end
    if img.filename == "d.jpg" then img.green = true end
    if img.filename == "e.jpg" then img.rating = 1 end
  end
  local done = io.open("{done}", "w")
  done:write("ok")
  done:close()
end)
dt.database.import("{folder}")
"""


def run_darktable(home: Path, folder: Path, done: Path, timeout: float = 90) -> Path:
    """darktable (headless, Xvfb) imports ``folder`` and rates it as a person would."""
    darktable, xvfb_run = need_tool("darktable"), need_tool("xvfb-run")
    home.mkdir(parents=True)
    (home / "darktablerc").write_text("ui_last/import_initial_rating=1\n")
    lua = home / "rate.lua"
    lua.write_text(RATE_LUA.replace("{done}", str(done)).replace("{folder}", str(folder)))
    library = home / "library.db"
    log = (home / "darktable.log").open("wb")
    proc = subprocess.Popen(
        [
            xvfb_run,
            "-a",
            darktable,
            "--configdir",
            str(home),
            "--library",
            str(library),
            "--luacmd",
            f'dofile("{lua}")',
        ],
        env={**os.environ, "HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and not done.exists():
            time.sleep(0.25)
        time.sleep(1.0)  # let darktable write its changes to the library
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
    if not done.exists():
        tail = (home / "darktable.log").read_bytes()[-2000:].decode(errors="replace")
        pytest.fail(f"darktable did not rate the folder in {timeout:.0f} s; log:\n{tail}")
    return library


EXPECTED_DARKTABLE = {
    "a.jpg": (SELECT, DARKTABLE),  # 4 stars
    "b.jpg": (REJECT, DARKTABLE),  # rejected
    "c.jpg": (REJECT, DARKTABLE),  # red label
    "d.jpg": (SELECT, DARKTABLE),  # green label
    # e.jpg: 1 star, darktable's import default: not a reject
}


@pytest.mark.slow
def test_darktable_library_made_by_darktable(tmp_path: Path):
    folder = tmp_path / "shoot"
    for n, name in enumerate(("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")):
        photo(folder, name, color=(40 * n, 100, 200 - 40 * n))
    library = run_darktable(tmp_path / "darktable", folder, tmp_path / "done")
    index = CatalogIndex(read_darktable_library(library))
    assert len(index) == 5
    photos = [(p, folder) for p in sorted(folder.glob("*.jpg"))]
    found, _ = collect_verdicts(photos, RULES, darktable=index)
    assert {v.path.name: (v.verdict, v.source) for v in found} == EXPECTED_DARKTABLE


def test_darktable_library_schema_subset(tmp_path: Path):
    """The same reading on a library.db with only darktable 4.2's tables and columns that
    matter (for machines without darktable; the test above uses the real thing)."""
    folder = tmp_path / "shoot"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
        photo(folder, name)
    library = tmp_path / "library.db"
    con = sqlite3.connect(library)
    con.executescript(
        "CREATE TABLE film_rolls (id INTEGER PRIMARY KEY, access_timestamp INTEGER, "
        "folder VARCHAR(1024) NOT NULL);"
        "CREATE TABLE images (id INTEGER PRIMARY KEY, film_id INTEGER, filename VARCHAR, "
        "flags INTEGER);"
        "CREATE TABLE color_labels (imgid INTEGER, color INTEGER);"
    )
    con.execute("INSERT INTO film_rolls VALUES (1, 0, ?)", (str(folder),))
    # flags: stars in the low 3 bits, 8 = rejected
    for n, (name, flags) in enumerate(
        [("a.jpg", 4), ("b.jpg", 8 | 1), ("c.jpg", 1), ("d.jpg", 0), ("e.jpg", 1)], start=1
    ):
        con.execute("INSERT INTO images VALUES (?, 1, ?, ?)", (n, name, flags))
    con.executemany("INSERT INTO color_labels VALUES (?, ?)", [(3, 0), (4, 2)])
    con.commit()
    con.close()
    photos = [(p, folder) for p in sorted(folder.glob("*.jpg"))]
    index = CatalogIndex(read_darktable_library(library))
    found, _ = collect_verdicts(photos, RULES, darktable=index)
    assert {v.path.name: (v.verdict, v.source) for v in found} == EXPECTED_DARKTABLE
