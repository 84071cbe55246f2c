"""Where a photographer's past selects and rejects live, read without changing anything.

- XMP sidecars of any editor (``DSC_0001.xmp`` and ``DSC_0001.NEF.xmp``): xmp:Rating,
  xmp:Label, darktable:colorlabels, digiKam:PickLabel / ColorLabel, photomechanic:ColorClass;
  and the same properties in the XMP packet embedded in a JPEG, TIFF or DNG;
- the folder layout of a culled shoot: ``select/`` and ``reject/`` sub-folders;
- a Lightroom Classic catalog (``.lrcat``, SQLite): copied first, and the copy opened
  read-only, so a catalog Lightroom has open is never touched;
- a darktable library (``library.db``, SQLite), opened read-only;
- postselectd's own ratings a person changed (a sidecar whose rating or label differs from
  what postselectd recorded writing there): the strongest signal there is. A rating that
  still equals what postselectd wrote is postselectd's, not the photographer's, and is
  never learnt from.

XMP is parsed here with defusedxml (no DTDs, no entities), read-only; sidecar.py, which
writes sidecars, stays the only user of exiv2. What counts as a select or a reject is
``TrainConfig`` (config.py): by default 3 stars and up, a pick flag or a Green label
select; 1 star, a reject flag or a Red label reject; anything else is not used.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import defusedxml.ElementTree as SafeET

from postselectd import dialects
from postselectd.config import TrainConfig
from postselectd.dialects import (
    COLORS,
    DARKTABLE_URI,
    DIGIKAM_COLORS,
    DIGIKAM_URI,
    NS_URI,
    PHOTOMECHANIC_CLASSES,
    PHOTOMECHANIC_URI,
    RATING_RECORD,
    REJECT,
    SELECT,
    XMP_URI,
    color_of,
    person_set,
    rating_set_by_person,
    sidecar_names,
)
from postselectd.sidecar import MAX_SIDECAR_BYTES, names_like

log = logging.getLogger(__name__)

# Strongest first: a person's correction of postselectd's rating, then the catalogs the
# photographer culls in, then sidecars and embedded XMP, then the folder layout.
CORRECTION = "correction of postselectd's rating"
LIGHTROOM = "Lightroom catalog"
DARKTABLE = "darktable library"
SIDECAR = "XMP sidecar"
EMBEDDED = "XMP in the file"
FOLDERS = "folder layout"
PRIORITY = (CORRECTION, LIGHTROOM, DARKTABLE, SIDECAR, EMBEDDED, FOLDERS)

SELECT_FOLDERS = frozenset({"select", "selects", "selected"})
REJECT_FOLDERS = frozenset({"reject", "rejects", "rejected"})

# digiKam's pick numbers as a Marks.pick.
_PICK_OF_VERDICT = {REJECT: -1, "": 0, SELECT: 1}
DIGIKAM_PICKS = {int(n): _PICK_OF_VERDICT[v] for v, n in dialects.DIGIKAM_PICKS.items()}

_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# The properties a person marks a photo with, by their names below, each with the label
# or pick it is (its record, its "no value"; None: the rating, ``rating_set_by_person``).
_MARKS = {
    "rating": None,
    "label": dialects.XMP_LABEL,
    "darktable_colors": dialects.DARKTABLE_COLORS,
    "digikam_color": dialects.DIGIKAM_COLOR,
    "digikam_pick": dialects.DIGIKAM_PICK,
    "photomechanic_class": dialects.PHOTOMECHANIC_CLASS,
}
_PROPERTIES = {
    (XMP_URI, "Rating"): "rating",
    (XMP_URI, "Label"): "label",
    (DARKTABLE_URI, "colorlabels"): "darktable_colors",
    (DARKTABLE_URI, "xmp_version"): "darktable_version",
    (DIGIKAM_URI, "ColorLabel"): "digikam_color",
    (DIGIKAM_URI, "PickLabel"): "digikam_pick",
    (PHOTOMECHANIC_URI, "ColorClass"): "photomechanic_class",
    (NS_URI, RATING_RECORD): "written:rating",
    **{(NS_URI, g.record): f"written:{name}" for name, g in _MARKS.items() if g is not None},
}
_PACKET = re.compile(rb"<x:x[am]pmeta[\s>].*?</x:x[am]pmeta>", re.S)
EMBEDDED_SUFFIXES = frozenset({".jpg", ".jpeg", ".tif", ".tiff", ".dng"})


class RatingsSourceError(Exception):
    """A catalog or library that cannot be read; str() says which and why."""


@dataclass(frozen=True)
class Marks:
    """What a person marked on one photo, in any editor's terms."""

    stars: int | None = None  # 0..5; None: not rated
    pick: int = 0  # 1 picked / accepted, -1 rejected, 0 neither
    labels: tuple[str, ...] = ()  # label texts or color names ("Green", "red")
    one_star_is_default: bool = False  # darktable gives every import 1 star


@dataclass(frozen=True)
class Verdict:
    """A photo the photographer selected or rejected, and how we know."""

    path: Path
    verdict: str  # SELECT or REJECT
    source: str  # one of PRIORITY
    why: str  # "4 stars", "reject flag", "Red label", "in reject/"


def decide(marks: Marks, rules: TrainConfig) -> tuple[str | None, str]:
    """(SELECT, REJECT or None, the evidence). A flag beats stars and labels; stars and a
    label that disagree (4 stars and a Red label) say nothing."""
    if marks.pick < 0:
        return REJECT, "reject flag"
    if marks.pick > 0:
        return SELECT, "pick flag"
    votes: dict[str, list[str]] = {SELECT: [], REJECT: []}
    stars = marks.stars
    if stars is not None and stars > 0:
        ignore = stars == 1 and marks.one_star_is_default and not rules.darktable_one_star_is_reject
        if stars >= rules.select_from_stars:
            votes[SELECT].append(f"{stars} stars")
        elif stars <= rules.reject_up_to_stars and not ignore:
            votes[REJECT].append(f"{stars} star" + ("s" if stars > 1 else ""))
    for label in marks.labels:
        if _label_in(label, rules.select_labels):
            votes[SELECT].append(f"{label} label")
        elif _label_in(label, rules.reject_labels):
            votes[REJECT].append(f"{label} label")
    if votes[SELECT] and votes[REJECT]:
        return None, "conflicting: " + ", ".join(votes[SELECT] + votes[REJECT])
    for verdict in (SELECT, REJECT):
        if votes[verdict]:
            return verdict, ", ".join(votes[verdict])
    return None, "not rated"


def _label_in(label: str, names: Iterable[str]) -> bool:
    color = color_of(label)
    for name in names:
        if name.strip().lower() == label.strip().lower():
            return True
        if color is not None and color_of(name) == color:
            return True
    return False


# --- XMP -------------------------------------------------------------------------------


def xmp_properties(packet: bytes) -> dict[str, str | list[str]]:
    """The rating-related properties of one XMP packet, keyed by _PROPERTIES' names.

    Properties may be attributes of rdf:Description or elements (text, or an rdf:Seq /
    rdf:Bag / rdf:Alt of rdf:li); both forms are read.
    """
    root = SafeET.fromstring(packet.lstrip(b"\xef\xbb\xbf"), forbid_dtd=True)
    found: dict[str, str | list[str]] = {}
    for description in root.iter(f"{{{_RDF}}}Description"):
        for name, value in description.attrib.items():
            key = _PROPERTIES.get(_split(name))
            if key:
                found[key] = value.strip()
        for child in description:
            key = _PROPERTIES.get(_split(child.tag))
            if not key:
                continue
            items = [(li.text or "").strip() for li in child.iter(f"{{{_RDF}}}li")]
            if items or any(True for _ in child):
                found[key] = [i for i in items if i]
            else:
                found[key] = (child.text or "").strip()
    return found


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        uri, _, local = name[1:].partition("}")
        return uri, local
    return "", name


def _text(value: str | list[str] | None) -> str | None:
    if isinstance(value, list):
        value = ",".join(value)
    return value or None


def marks_from_xmp(properties: dict[str, str | list[str]]) -> tuple[Marks, bool]:
    """(the person's marks, True when one of them corrects what postselectd wrote).

    A property whose value still equals postselectd's record of what it wrote there is
    postselectd's own, and left out.
    """
    human: dict[str, str] = {}
    corrected = False
    for key, guarded in _MARKS.items():
        value = _text(properties.get(key))
        written = _text(properties.get(f"written:{key}"))
        if guarded is None:
            person, unset = rating_set_by_person(value, written), dialects.RATING_UNSET
        else:
            person, unset = person_set(value, written, guarded.unset), guarded.unset
        if not person:
            continue  # still what postselectd wrote: postselectd's, not the person's
        if written is not None:
            corrected = True
        if value is None or value in unset:
            continue
        human[key] = value

    stars, pick, labels = None, 0, []
    if "rating" in human:
        try:
            rating = round(float(human["rating"]))
        except ValueError:
            rating = 0
        if rating < 0:
            pick = -1  # Lightroom's and Bridge's "rejected"
        elif rating > 0:
            stars = min(rating, 5)
    if "label" in human:
        labels.append(human["label"])
    for number in _numbers(human.get("darktable_colors")):
        if 0 <= number < len(COLORS):
            labels.append(COLORS[number])
    for number in _numbers(human.get("digikam_color")):
        labels.extend([DIGIKAM_COLORS[number]] if number in DIGIKAM_COLORS else [])
    for number in _numbers(human.get("photomechanic_class")):
        labels.extend([PHOTOMECHANIC_CLASSES[number]] if number in PHOTOMECHANIC_CLASSES else [])
    for number in _numbers(human.get("digikam_pick")):
        pick = pick or DIGIKAM_PICKS.get(number, 0)
    marks = Marks(
        stars=stars,
        pick=pick,
        labels=tuple(dict.fromkeys(labels)),
        one_star_is_default="darktable_version" in properties,
    )
    return marks, corrected


def _numbers(value: str | None) -> list[int]:
    out = []
    for part in (value or "").split(","):
        try:
            out.append(int(part.strip()))
        except ValueError:
            continue
    return out


def sidecars_of(photo: Path) -> list[Path]:
    """Both sidecar names editors use: DSC_0001.xmp (Lightroom, Capture One, Bridge, Photo
    Mechanic) and DSC_0001.NEF.xmp (darktable, digiKam), case and Unicode form aside (a
    card's DSC_0001.XMP for dsc_0001.nef, a Mac's decomposed Cafe\u0301.xmp for Café.NEF)."""
    names = []
    for wanted in (photo.with_name(name) for name in sidecar_names(photo)):
        names.append(wanted)
        names += [photo.with_name(n) for n in names_like(photo.parent, wanted.name)]
    seen, found = set(), []
    for path in names:
        try:
            st = path.stat()
        except OSError:
            continue
        # One file by its identity: on a case-insensitive volume every spelling opens it.
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            found.append(path)
    return found


def embedded_packet(photo: Path, head: int = 4 << 20, tail: int = 1 << 20) -> bytes | None:
    """The XMP packet inside a JPEG, TIFF or DNG: near the start (JPEG APP1, TIFF tag 700
    as cameras and converters write it) or near the end (where exiftool appends it)."""
    try:
        with photo.open("rb") as f:
            data = f.read(head)
            match = _PACKET.search(data)
            if match:
                return match.group(0)
            size = f.seek(0, 2)
            if size > head:
                f.seek(max(head, size - tail))
                match = _PACKET.search(f.read())
                if match:
                    return match.group(0)
    except OSError:
        return None
    return None


def from_xmp(photo: Path, rules: TrainConfig, *, embedded: bool = True) -> Verdict | None:
    """The verdict of the photo's sidecars, else (``embedded``) of the XMP embedded in it."""
    verdicts: list[Verdict] = []
    sources = [(p, SIDECAR) for p in sidecars_of(photo)]
    for path, source in sources:
        try:
            if path.stat().st_size > MAX_SIDECAR_BYTES:
                raise ValueError("too large to be XMP")
            marks, corrected = marks_from_xmp(xmp_properties(path.read_bytes()))
        except Exception as exc:  # malformed XML, DTDs, unreadable: report and go on
            log.warning("%s: not usable XMP (%s); its rating is not used", path.name, exc)
            continue
        verdict, why = decide(marks, rules)
        if verdict:
            verdicts.append(Verdict(photo, verdict, CORRECTION if corrected else source, why))
    if embedded and not verdicts and photo.suffix.lower() in EMBEDDED_SUFFIXES:
        packet = embedded_packet(photo)
        if packet:
            try:
                marks, corrected = marks_from_xmp(xmp_properties(packet))
            except Exception as exc:
                log.warning("%s: embedded XMP unreadable (%s)", photo.name, exc)
            else:
                verdict, why = decide(marks, rules)
                if verdict:
                    source = CORRECTION if corrected else EMBEDDED
                    verdicts.append(Verdict(photo, verdict, source, why))
    return _agree(verdicts, photo)


def _agree(verdicts: list[Verdict], photo: Path) -> Verdict | None:
    """The strongest verdict; None when equally strong sources disagree."""
    if not verdicts:
        return None
    verdicts.sort(key=lambda v: PRIORITY.index(v.source))
    best = verdicts[0]
    rivals = {v.verdict for v in verdicts if v.source == best.source}
    if len(rivals) > 1:
        log.info("%s: its sidecars disagree (select and reject); not used", photo.name)
        return None
    return best


# --- folder layout ---------------------------------------------------------------------


def from_folders(photo: Path, root: Path) -> Verdict | None:
    """select/ or reject/ (also selects/, rejected/, ...) between the root and the photo."""
    try:
        parts = photo.relative_to(root).parts[:-1]
    except ValueError:
        parts = photo.parts[:-1]
    for part in reversed(parts):
        name = part.lower()
        if name in SELECT_FOLDERS:
            return Verdict(photo, SELECT, FOLDERS, f"in {part}/")
        if name in REJECT_FOLDERS:
            return Verdict(photo, REJECT, FOLDERS, f"in {part}/")
    return None


def shoot_folder(photo: Path) -> Path:
    """The shoot a photo belongs to: its folder, with select/ and reject/ taken off (the
    selects and rejects of one shoot must stay on one side of the split)."""
    folder = photo.parent
    while folder.name.lower() in SELECT_FOLDERS | REJECT_FOLDERS and folder.parent != folder:
        folder = folder.parent
    return folder


# --- catalogs --------------------------------------------------------------------------


def _connect_read_only(path: Path, what: str) -> sqlite3.Connection:
    if not path.is_file():
        raise RatingsSourceError(f"{path}: no such {what}")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise RatingsSourceError(f"{path}: not a {what} (SQLite says: {exc})") from None
    return con


def _query(con: sqlite3.Connection, sql: str, path: Path, what: str) -> list[tuple]:
    try:
        return con.execute(sql).fetchall()
    except sqlite3.Error as exc:
        raise RatingsSourceError(f"{path}: not a {what} we can read ({exc})") from None


def read_lightroom_catalog(catalog: Path) -> dict[str, Marks]:
    """Marks per file path, from a copy of the catalog (Lightroom may have it open).

    Adobe_images: rating, pick (1 picked, -1 rejected), colorLabels (label text); the path
    is AgLibraryRootFolder.absolutePath || AgLibraryFolder.pathFromRoot ||
    AgLibraryFile.baseName || '.' || extension. Virtual copies share their master's file:
    the first image row of a file (the master) is used.
    """
    catalog = Path(catalog)
    what = "Lightroom Classic catalog"
    if not catalog.is_file():
        raise RatingsSourceError(f"{catalog}: no such {what}")
    with tempfile.TemporaryDirectory(prefix="postselectd-lrcat-") as tmp:
        copy = Path(tmp) / catalog.name
        try:
            shutil.copyfile(catalog, copy)
            for suffix in ("-wal",):  # changes Lightroom has not checkpointed yet
                side = catalog.with_name(catalog.name + suffix)
                if side.is_file():
                    shutil.copyfile(side, copy.with_name(copy.name + suffix))
        except OSError as exc:
            raise RatingsSourceError(f"{catalog}: cannot copy the catalog ({exc})") from None
        con = _connect_read_only(copy, what)
        try:
            rows = _query(
                con,
                "SELECT r.absolutePath, f.pathFromRoot, fi.baseName, fi.extension, "
                "i.rating, i.pick, i.colorLabels "
                "FROM Adobe_images i "
                "JOIN AgLibraryFile fi ON fi.id_local = i.rootFile "
                "JOIN AgLibraryFolder f ON f.id_local = fi.folder "
                "JOIN AgLibraryRootFolder r ON r.id_local = f.rootFolder "
                "ORDER BY i.id_local",
                catalog,
                what,
            )
        finally:
            con.close()
    marks: dict[str, Marks] = {}
    for root, folder, base, extension, rating, pick, color in rows:
        path = f"{root or ''}{folder or ''}{base or ''}" + (f".{extension}" if extension else "")
        if path in marks:
            continue
        stars = int(rating) if rating not in (None, "") else None
        flag = int(round(float(pick))) if pick not in (None, "") else 0
        labels = (str(color).strip(),) if color and str(color).strip() else ()
        marks[path] = Marks(stars=stars, pick=max(-1, min(1, flag)), labels=labels)
    return marks


def read_darktable_library(library: Path) -> dict[str, Marks]:
    """Marks per file path from darktable's library.db (opened read-only).

    images.flags & 7 = stars (6 = rejected in darktable < 3.0), flags & 8 = rejected;
    color_labels(imgid, color): 0 red, 1 yellow, 2 green, 3 blue, 4 purple; the path is
    film_rolls.folder + '/' + images.filename.
    """
    library = Path(library)
    what = "darktable library"
    con = _connect_read_only(library, what)
    try:
        rows = _query(
            con,
            "SELECT f.folder, i.filename, i.flags, "
            "(SELECT group_concat(c.color) FROM color_labels c WHERE c.imgid = i.id) "
            "FROM images i JOIN film_rolls f ON f.id = i.film_id ORDER BY i.id",
            library,
            what,
        )
    finally:
        con.close()
    marks: dict[str, Marks] = {}
    for folder, filename, flags, colors in rows:
        flags = int(flags or 0)
        stars = flags & 7
        rejected = bool(flags & 8) or stars == 6
        labels = tuple(COLORS[n] for n in _numbers(str(colors or "")) if 0 <= n < len(COLORS))
        path = str(PurePosixPath(folder) / filename) if folder else filename
        if path in marks:
            continue  # a duplicate (darktable's version) of a file already seen
        marks[path] = Marks(
            stars=None if rejected else stars,
            pick=-1 if rejected else 0,
            labels=labels,
            one_star_is_default=True,
        )
    return marks


class CatalogIndex:
    """Catalog paths matched to the photos on this machine: by the full path, else (for a
    catalog made on another machine or before a drive moved) by folder name + file name."""

    def __init__(self, marks: dict[str, Marks]):
        self.by_path: dict[str, Marks] = {}
        tails: dict[tuple[str, str], list[Marks]] = {}
        for raw, value in marks.items():
            parts = _parts(raw)
            self.by_path["/".join(parts).lower()] = value
            tails.setdefault(tuple(parts[-2:]), []).append(value)
        self.by_tail = {k: v[0] for k, v in tails.items() if len(v) == 1}

    def __len__(self) -> int:
        return len(self.by_path)

    def get(self, photo: Path) -> Marks | None:
        parts = _parts(str(photo.absolute()))
        found = self.by_path.get("/".join(parts).lower())
        if found is None:
            found = self.by_tail.get(tuple(parts[-2:]))
        return found


def _parts(path: str) -> list[str]:
    pure = PureWindowsPath(path) if re.match(r"^[A-Za-z]:[\\/]|\\\\", path) else PurePosixPath(path)
    return [p.lower() for p in pure.parts if p not in ("/", "\\")]


# --- everything together ---------------------------------------------------------------


def collect_verdicts(
    photos: Iterable[tuple[Path, Path]],
    rules: TrainConfig,
    *,
    lightroom: CatalogIndex | None = None,
    darktable: CatalogIndex | None = None,
) -> tuple[list[Verdict], dict[str, int]]:
    """The strongest verdict for each (photo, the root it was found under), and counts of
    what was not used ("not rated", "conflicting") for the model card."""
    verdicts: list[Verdict] = []
    skipped: dict[str, int] = {}
    for photo, root in photos:
        candidates: list[Verdict] = []
        found = from_xmp(photo, rules)
        if found:
            candidates.append(found)
        for index, source in ((lightroom, LIGHTROOM), (darktable, DARKTABLE)):
            marks = index.get(photo) if index is not None else None
            if marks is not None:
                verdict, why = decide(marks, rules)
                if verdict:
                    candidates.append(Verdict(photo, verdict, source, why))
                elif why.startswith("conflicting"):
                    skipped["conflicting"] = skipped.get("conflicting", 0) + 1
        folder = from_folders(photo, root)
        if folder:
            candidates.append(folder)
        if candidates:
            verdicts.append(min(candidates, key=lambda v: PRIORITY.index(v.source)))
        else:
            skipped["not rated"] = skipped.get("not rated", 0) + 1
    return verdicts, skipped
