"""The editors' vocabulary, once: what their sidecars are called, which properties carry a
rating, a color label or a pick in each of them, and the one rule that tells a person's
value from postselectd's own.

Three modules read and write these words: ``sidecar.py`` writes sidecars, ``report``
shows what they say, ``ratings_sources.py`` learns from what a photographer marked. If
their words drifted apart, ``train`` would learn from postselectd's own ratings, or the
writer would overwrite a person's label the report shows as theirs. So the words live
here, in plain Python (no exiv2, no XML parser), and the three import them.

- Editors speak dialects (``DIALECTS``): the sidecar's name (``sidecar_names``) and which
  label/pick properties they read. Two profiles that name the same file share it.
- postselectd records what it wrote in its own ``postselect:`` namespace
  (postselect:Written<Name>); a value that differs from that record is a person's
  (``person_set``), and what a person set is never changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# The verdicts, as keywords (PostSelect|select), digiKam picks and train's classes.
SELECT, REJECT = "select", "reject"
# The keyword of a frame whose verdict a person gave instead: PostSelect|overruled.
OVERRULED = "overruled"

NS_URI = "http://ns.postselectd.org/xmp/1.0/"
NS_PREFIX = "postselect"
XMP_URI = "http://ns.adobe.com/xap/1.0/"
# exiv2 knows digiKam's namespace; darktable's and Photo Mechanic's must be registered
# (under the URIs and prefixes those programs write themselves).
DARKTABLE_URI = "http://darktable.sf.net/"
PHOTOMECHANIC_URI = "http://ns.camerabits.com/photomechanic/1.0/"
DIGIKAM_URI = "http://www.digikam.org/ns/1.0/"
# The namespaces of the properties postselectd reads or writes, with the prefix it declares
# when the sidecar has none for them; keys are "Xmp.<prefix>.<Name>", as pyexiv2's.
NAMESPACES = {
    XMP_URI: "xmp",
    "http://purl.org/dc/elements/1.1/": "dc",
    "http://ns.adobe.com/lightroom/1.0/": "lr",
    DIGIKAM_URI: "digiKam",
    DARKTABLE_URI: "darktable",
    PHOTOMECHANIC_URI: "photomechanic",
    NS_URI: NS_PREFIX,
}

# --- colors ---------------------------------------------------------------------------

# The five colors every editor here has, with Bridge's default label words for them.
COLORS = ("red", "yellow", "green", "blue", "purple")  # darktable:colorlabels' 0..4 too
_COLOR_WORDS = {
    **{c: c for c in COLORS},
    "select": "red",
    "second": "yellow",
    "approved": "green",
    "review": "blue",
    "to do": "purple",
}
# digiKam's color label numbers (0: none); postselectd writes only the five COLORS.
DIGIKAM_COLORS = {1: "red", 2: "orange", 3: "yellow", 4: "green", 5: "blue", 6: "purple"}
# Photo Mechanic's default color classes (0: none).
PHOTOMECHANIC_CLASSES = {1: "red", 2: "orange", 3: "yellow", 4: "green", 5: "blue", 6: "purple"}
_DIGIKAM_COLOR = {color: str(n) for n, color in DIGIKAM_COLORS.items()}
_PHOTOMECHANIC_CLASS = {color: str(n) for n, color in PHOTOMECHANIC_CLASSES.items()}
DIGIKAM_PICKS = {REJECT: "1", "": "2", SELECT: "3"}  # rejected, pending, accepted


def color_of(label: str | None) -> str | None:
    """The color a label text means (Lightroom's or Bridge's words), or None."""
    if not label:
        return None
    return _COLOR_WORDS.get(" ".join(label.lower().split()))


# --- label and pick properties --------------------------------------------------------


class Judgement(Protocol):
    """What a label or pick property is written from (sidecar.SidecarContent)."""

    label: str | None
    verdict: str


@dataclass(frozen=True)
class Guarded:
    """A label or pick property a person may set, so postselectd only changes its own value.

    What postselectd wrote is recorded as postselect:<record>; a value that differs from the
    record (or, with no record, any value but ``unset``) is a person's and is kept.
    """

    key: str
    record: str
    group: str  # "label" or "pick": a person's value anywhere in a group keeps the group
    unset: tuple[str, ...] = ()
    is_list: bool = False

    def value(self, content: Judgement) -> str | None:
        """What this property says for the verdict (a list joined by ','), None: absent."""
        color = color_of(content.label)
        if self.key == "Xmp.xmp.Label":
            return content.label or None
        if self.key == "Xmp.darktable.colorlabels":
            return str(COLORS.index(color)) if color else None
        if self.key == "Xmp.digiKam.ColorLabel":
            return _DIGIKAM_COLOR.get(color or "")
        if self.key == "Xmp.digiKam.PickLabel":
            return DIGIKAM_PICKS.get(content.verdict)
        if self.key == "Xmp.photomechanic.ColorClass":
            return _PHOTOMECHANIC_CLASS.get(color or "")
        raise KeyError(self.key)


XMP_LABEL = Guarded("Xmp.xmp.Label", "WrittenLabel", "label")
DARKTABLE_COLORS = Guarded("Xmp.darktable.colorlabels", "WrittenColorLabels", "label", is_list=True)
DIGIKAM_COLOR = Guarded("Xmp.digiKam.ColorLabel", "WrittenColorLabel", "label", unset=("0",))
DIGIKAM_PICK = Guarded("Xmp.digiKam.PickLabel", "WrittenPickLabel", "pick", unset=("0",))
PHOTOMECHANIC_CLASS = Guarded(
    "Xmp.photomechanic.ColorClass", "WrittenColorClass", "label", unset=("0",)
)
RATING_RECORD = "WrittenRating"  # postselect:WrittenRating, the record of xmp:Rating


@dataclass(frozen=True)
class Dialect:
    """How one family of editors wants its sidecar: its name and its label/pick properties.

    Every dialect also gets xmp:Rating, dc:subject + lr:hierarchicalSubject keywords and the
    postselect: numbers. photoshop:Urgency is never written: digiKam and Capture One read it
    with different meanings.
    """

    name: str
    names_after_raw: bool  # DSC_0001.NEF.xmp, else DSC_0001.xmp
    guarded: tuple[Guarded, ...]
    tags_list: bool = False  # digiKam:TagsList ("PostSelect/select")


DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        # Lightroom Classic, Bridge/ACR, Capture One, Photo Mechanic, Excire, FastRawViewer.
        Dialect("lightroom", False, (XMP_LABEL,)),
        # darktable reads darktable:colorlabels first, xmp:Label when that is absent.
        Dialect("darktable", True, (XMP_LABEL, DARKTABLE_COLORS)),
        Dialect("digikam", True, (DIGIKAM_COLOR, DIGIKAM_PICK), tags_list=True),
        Dialect("photomechanic", False, (XMP_LABEL, PHOTOMECHANIC_CLASS)),
    )
}


# Every label and pick property of every dialect, for reading any sidecar (the report).
ALL_GUARDED = tuple(dict.fromkeys(g for d in DIALECTS.values() for g in d.guarded))


# --- where the sidecar is -------------------------------------------------------------


def sidecar_names(photo: Path, profiles: Iterable[str] = tuple(DIALECTS)) -> list[str]:
    """The names of the photo's sidecar for these profiles, in their order, each once:
    DSC_0001.xmp (Lightroom, Capture One, Bridge, Photo Mechanic) or DSC_0001.NEF.xmp
    (darktable, digiKam). Every profile's by default: where any editor keeps one.

    The name as the profile writes it; the one on disk may differ in case or Unicode form
    (a card's DSC_0001.XMP), which each reader matches (``names.name_key``)."""
    photo = Path(photo)
    return list(
        dict.fromkeys(
            photo.name + ".xmp" if DIALECTS[p].names_after_raw else photo.stem + ".xmp"
            for p in profiles
        )
    )


def names_shared_sidecar(profile: str) -> bool:
    """True when the profile names the sidecar DSC_0001.xmp, which a DSC_0001.JPG would share."""
    return not DIALECTS[profile].names_after_raw


# --- who set it -----------------------------------------------------------------------

# postselect:Written<Name> of a label or pick postselectd wrote no value to.
NOTHING_WRITTEN = "none"
# 0 stars: every editor's "not rated" (Lightroom writes xmp:Rating="0").
RATING_UNSET = ("0",)


def person_set(value: str | None, written: str | None, unset: tuple[str, ...] = ()) -> bool:
    """Whether a person set (or removed) a property, given postselectd's record of what it
    wrote there last. The one rule: the writer keeps what it says is a person's, the report
    shows it as theirs, ``train`` learns only from it.

    ``value``: the property as it is now (a list joined by ','), None: absent.
    ``written``: postselect:Written<Name>; None: no record (postselectd never wrote it, so
    any value is a person's), "none": postselectd wrote no value. ``unset``: an editor's own
    spelling of "no value" (digiKam's and Photo Mechanic's 0), which means the same as no
    property: one written over our "none" is not a person's.
    """
    if value in unset:
        value = None
    if written is None:
        return value is not None
    return value != (None if written == NOTHING_WRITTEN or written in unset else written)


def rating_set_by_person(value: str | None, written: str | None) -> bool:
    """``person_set`` for xmp:Rating. A rating of 0 is no rating only where postselectd has
    not rated: it writes 0 itself (a frame it did not judge) and records it, so once there
    is a record, any other value is a person's, and so is a rating removed."""
    return person_set(value, written, RATING_UNSET if written is None else ())


@dataclass(frozen=True)
class PersonMarks:
    """What a person set in a sidecar instead of postselectd: their value, "" where they
    removed ours, None where the property is still postselectd's (or nobody's)."""

    rating: str | None = None
    label: str | None = None
    pick: str | None = None

    @property
    def any(self) -> bool:
        """A person has given their own verdict: it wins over postselectd's, whole."""
        return (self.rating, self.label, self.pick) != (None, None, None)


def set_by_person(
    current: Mapping[str, object], guarded: Iterable[Guarded] = ALL_GUARDED
) -> PersonMarks:
    """Which of the rating, label and pick in a sidecar a person set or removed.

    ``current``: the sidecar's properties keyed like pyexiv2's (``Xmp.xmp.Rating``), as
    ``sidecar.read_sidecar`` or the merge reads them (``person_set`` for each).
    """
    ours = value_text(current.get(f"Xmp.{NS_PREFIX}.{RATING_RECORD}"))
    theirs = value_text(current.get("Xmp.xmp.Rating"))
    human = rating_set_by_person(theirs, ours)
    rating = (theirs or "") if human else None  # "": the person removed the rating
    groups: dict[str, str | None] = {}
    guarded = list(guarded)
    for group in ("label", "pick"):
        groups[group] = _guard_group(current, [g for g in guarded if g.group == group])
    return PersonMarks(rating=rating, label=groups["label"], pick=groups["pick"])


def _guard_group(current: Mapping[str, object], fields: list[Guarded]) -> str | None:
    """The first of these properties a person set, or "" if they removed it; None: all
    still ours."""
    for guarded in fields:
        theirs = joined_text(current.get(guarded.key))
        ours = value_text(current.get(f"Xmp.{NS_PREFIX}.{guarded.record}"))
        if person_set(theirs, ours, guarded.unset):
            return "" if theirs in guarded.unset else (theirs or "")
    return None


def joined_text(value: object) -> str | None:
    """A property's value for comparing with our record: lists joined by ','."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or None
    return value_text(value)


def value_text(value: object) -> str | None:
    """A property's value (as pyexiv2 reads it) as text; None: absent or empty."""
    if value is None:
        return None
    if isinstance(value, dict):  # lang-alt
        value = next(iter(value.values()), None)
    if isinstance(value, list):
        value = value[0] if value else None
    text = str(value).strip() if value is not None else None
    return text or None
