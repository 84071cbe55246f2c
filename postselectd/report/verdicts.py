"""What a sidecar says, as the contact sheet shows it: stars, label, reasons, the
``postselect:`` numbers and the face boxes.

The sidecar is the truth, as the editor will see it: a rating a person changed shows as
theirs, whichever editor wrote it (``dialects`` holds every editor's vocabulary).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from postselectd.dialects import (
    COLORS,
    DIGIKAM_COLORS,
    NS_PREFIX,
    OVERRULED,
    PHOTOMECHANIC_CLASSES,
    REJECT,
    SELECT,
    color_of,
    set_by_person,
)
from postselectd.rating import BEST_OF_BURST, CHECK

_NS = f"Xmp.{NS_PREFIX}."


@dataclass(frozen=True)
class FaceNumbers:
    box: tuple[float, float, float, float] | None  # x, y, w, h in the preview's pixels
    eye_openness: str  # "0.30/0.31" (left/right) or "-" (eyes not measured)
    sharpness: str


@dataclass(frozen=True)
class Verdict:
    """What the sidecar of one photo says, as the editor will show it."""

    rated: bool  # postselectd's numbers or keywords are there
    stars: int | None  # xmp:Rating (-1: rejected in Lightroom), None: no rating
    label: str | None
    color: str | None  # red, yellow, green, blue, purple (for the dot), None
    verdict: str  # "select", "reject" or "" (kept, undecided)
    keeper_probability: float | None = None
    reasons: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()  # what a doubtful reason asks to look at: "exposure"
    burst_id: str | None = None
    burst_size: int | None = None
    best_of_burst: bool = False
    rating_by_person: bool = False  # xmp:Rating is not what postselectd wrote (or removed)
    # A person set the rating, label or pick: theirs is the verdict, postselectd's (and its
    # reasons) only numbers, whether or not it has rated the frame again since.
    overruled: bool = False
    faces: tuple[FaceNumbers, ...] = ()
    preview_size: tuple[int, int] | None = None
    numbers: tuple[tuple[str, str], ...] = ()  # (what, value) rows for the larger view
    rated_at: str | None = None


NOT_RATED = Verdict(rated=False, stars=None, label=None, color=None, verdict="")


def verdict_from_sidecar(xmp: Mapping[str, object], keyword_parent: str = "PostSelect") -> Verdict:
    """Read stars, label, verdict and the numbers behind it from a sidecar's properties.

    The verdict is postselectd's keyword (``PostSelect|reject``); a rating of -1
    (Lightroom's "rejected", whoever set it) also counts as a reject. Where a person set
    the rating, label or pick (``set_by_person``, the rule the sidecar writer keeps),
    their verdict wins: postselectd's keywords and reasons no longer count.
    """
    ours = {
        k.split("|", 1)[1]
        for k in _strings(xmp.get("Xmp.lr.hierarchicalSubject"))
        if k.startswith(keyword_parent + "|")
    } | {
        k.split("/", 1)[1]
        for k in _strings(xmp.get("Xmp.digiKam.TagsList"))
        if k.startswith(keyword_parent + "/")
    }
    stars = _int(xmp.get("Xmp.xmp.Rating"))
    label = _text(xmp.get("Xmp.xmp.Label"))
    color = color_of(label) or _color_from_numbers(xmp)
    if label is None and color:
        label = color.capitalize()
    keeper = _float(xmp.get(_NS + "KeeperProbability"))
    reasons = tuple(_strings(xmp.get(_NS + "Reasons")))
    rated = keeper is not None or bool(ours)
    person = set_by_person(xmp)
    overruled = rated and (person.any or OVERRULED in ours)
    judged = reasons  # postselectd's, shown among the numbers either way
    if overruled:
        ours, reasons = ours & {BEST_OF_BURST}, ()
    checks = tuple(sorted(k.split("|", 1)[1] for k in ours if k.startswith(CHECK + "|")))
    if REJECT in ours or stars == -1:
        verdict = REJECT
    elif SELECT in ours:
        verdict = SELECT
    else:
        verdict = ""
    preview_size = _size(xmp.get(_NS + "PreviewSize"))
    faces = _faces(xmp)
    return Verdict(
        rated=rated,
        stars=stars,
        label=label,
        color=color,
        verdict=verdict,
        keeper_probability=keeper,
        reasons=reasons,
        checks=checks,
        burst_id=_text(xmp.get(_NS + "BurstId")),
        burst_size=_int(xmp.get(_NS + "BurstSize")),
        best_of_burst=BEST_OF_BURST in ours,
        rating_by_person=rated and person.rating is not None,
        overruled=overruled,
        faces=faces,
        preview_size=preview_size,
        numbers=_numbers(xmp, keeper, judged, overruled),
        rated_at=_text(xmp.get(_NS + "RatedAt")),
    )


def _color_from_numbers(xmp: Mapping[str, object]) -> str | None:
    """The color of a sidecar with no xmp:Label (the digiKam profile writes numbers only;
    Photo Mechanic may write only its color class)."""
    found = _numbered(xmp.get("Xmp.digiKam.ColorLabel"), DIGIKAM_COLORS)
    if found:
        return found
    for value in _strings(xmp.get("Xmp.darktable.colorlabels")):
        if value.isdigit() and int(value) < len(COLORS):
            return COLORS[int(value)]
    return _numbered(xmp.get("Xmp.photomechanic.ColorClass"), PHOTOMECHANIC_CLASSES)


def _numbered(value: object, colors: Mapping[int, str]) -> str | None:
    text = _text(value) or ""
    return colors.get(int(text)) if text.isdigit() else None


def _numbers(
    xmp: Mapping[str, object], keeper: float | None, reasons: tuple[str, ...], overruled: bool
) -> tuple[tuple[str, str], ...]:
    def get(name: str) -> str | None:
        return _text(xmp.get(_NS + name))

    rows: list[tuple[str, str]] = []
    if keeper is not None:
        rows.append(("Keeper probability", f"{keeper:.2f}"))
    rows.append(("Reasons", (", ".join(reasons) or "none") + (" (overruled)" if overruled else "")))
    # The keeper probability is the row above, whatever the verdict; a sidecar written
    # before #20 also has the head's keeper class here, which is not shown beside it.
    parts = re.findall(r"([^=]+?)=([0-9.]+)\s*", get("Probabilities") or "")
    parts = [(k.strip(), v) for k, v in parts if k.strip() != "keeper"]
    if parts:
        rows.append(("Class probabilities", "\n".join(f"{k} {v}" for k, v in parts)))
    if get("SubjectSharpness"):
        text = get("SubjectSharpness") or ""
        if get("OverallSharpness"):
            text += f" (whole frame {get('OverallSharpness')})"
        rows.append(("Subject sharpness", text))
    if get("BlurDirectionality"):
        rows.append(("Blur direction", f"{get('BlurDirectionality')} (1 = all one way: motion)"))
    if get("MeanLuminance"):
        rows.append(("Mean luminance", f"{get('MeanLuminance')} of 255"))
    for name, what in (
        ("ClippedHighlights", "Clipped highlights"),
        ("CrushedShadows", "Crushed shadows"),
    ):
        value = _float(xmp.get(_NS + name))
        if value is not None:
            rows.append((what, f"{value * 100:.2f} % of pixels"))
    if get("Faces") is not None:
        rows.append(("Faces", get("Faces") or "0"))
    if get("PreviewSource"):
        rows.append(("Judged on", get("PreviewSource") or ""))
    if get("ModelVersion"):
        rows.append(("Model", get("ModelVersion") or ""))
    rated_at = _parse_time(get("RatedAt"))
    if rated_at:
        rows.append(("Rated at", rated_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()))
    return tuple(rows)


def _faces(xmp: Mapping[str, object]) -> tuple[FaceNumbers, ...]:
    boxes = _split(xmp.get(_NS + "FaceBoxes"))
    eyes = _split(xmp.get(_NS + "EyeOpenness"))
    sharpness = _split(xmp.get(_NS + "FaceSharpness"))
    count = max(len(boxes), len(eyes), len(sharpness))
    faces = []
    for i in range(count):
        box = None
        if i < len(boxes):
            try:
                x, y, w, h = (float(v) for v in boxes[i].split(","))
                box = (x, y, w, h)
            except ValueError:
                box = None
        faces.append(
            FaceNumbers(
                box=box,
                eye_openness=eyes[i] if i < len(eyes) else "-",
                sharpness=sharpness[i] if i < len(sharpness) else "-",
            )
        )
    return tuple(faces)


def _split(value: object) -> list[str]:
    text = _text(value)
    return [part.strip() for part in text.split(";")] if text else []


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # a lang-alt: {'lang="x-default"': text}
        value = next(iter(value.values()), None)
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if str(v)]
    return [str(value)] if str(value) else []


def _int(value: object) -> int | None:
    text = _text(value)
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def _float(value: object) -> float | None:
    text = _text(value)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _size(value: object) -> tuple[int, int] | None:
    text = _text(value) or ""
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.astimezone() if when.tzinfo else when
