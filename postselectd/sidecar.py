"""XMP sidecars: read, merge, write atomically — the part that must never hurt anyone.

The only module that calls pyexiv2. Rules it keeps:

- The photo is never opened for writing; only ``NAME.xmp`` / ``NAME.EXT.xmp`` are written.
- What is there is merged into, never replaced: every foreign property (crs:*, darktable:*,
  unknown namespaces) survives; only PostSelect's own keywords are replaced. The merge
  edits the packet's bytes (``_Packet``): only our properties change, every other byte
  stays, so namespace URIs, layout and content beside rdf:RDF are as their owner wrote
  them. pyexiv2 only reads (``read_sidecar``).
- A rating or label a person set is never changed: postselectd records what it wrote in
  its own ``postselect:`` namespace and only changes a value that still equals that
  (``dialects.set_by_person``, the rule the report and train read sidecars with too).
  Keywords alike: one of ours a person removed stays removed (``_keyword_changes``).
- A person's verdict wins whole: once they set (or removed) the rating, a label or a pick,
  postselectd withdraws its own label, pick and verdict keywords (``overruled``) and says
  so with the keyword ``overruled``; its ``postselect:`` numbers stay.
- No rewrite without a change: a sidecar that already says everything postselectd would
  write is not touched (editors flag every changed sidecar as "changed on disk"), and
  ``postselect:RatedAt`` is when the verdict it holds was first written.
- Atomic: the merged sidecar is written to a temp file in the same folder under a
  per-folder lock, fsynced, and replaces the sidecar. Editors do not take our lock: the
  sidecar is re-read just before the swap and an editor's newer version is merged into
  again; on Linux the swap is an atomic exchange, so a version an editor slipped in
  after that check is caught and merged too.
- Editors speak dialects (``dialects.DIALECTS``): the sidecar's name and which label/pick
  properties are written. Two profiles that name the same file write one file.
- An existing sidecar that is not valid XMP is reported and left alone.
"""

from __future__ import annotations

import codecs
import ctypes
import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from xml.parsers import expat

import defusedxml.ElementTree as SafeET
import pyexiv2
from defusedxml import DefusedXmlException

from postselectd.dialects import (
    DARKTABLE_URI,
    DIALECTS,
    NAMESPACES,
    NOTHING_WRITTEN,
    NS_PREFIX,
    NS_URI,
    OVERRULED,
    PHOTOMECHANIC_URI,
    RATING_RECORD,
    Dialect,
    Guarded,
    PersonMarks,
    set_by_person,
    sidecar_names,
    value_text,
)
from postselectd.photos import name_key

log = logging.getLogger(__name__)

_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}RDF"

# exiv2 needs >= 80 bytes and an XMP packet to open a standalone .xmp file.
TEMPLATE = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    b' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    b" </rdf:RDF>\n"
    b"</x:xmpmeta>\n"
    b'<?xpacket end="w"?>\n'
)
MAX_SIDECAR_BYTES = 16 * 1024 * 1024  # a larger "sidecar" is not one we should touch

pyexiv2.set_log_level(3)  # errors only: 4 would also hide failed writes
# exiv2 knows digiKam's namespace; darktable's and Photo Mechanic's must be registered.
for _uri, _prefix in (
    (NS_URI, NS_PREFIX),
    (DARKTABLE_URI, "darktable"),
    (PHOTOMECHANIC_URI, "photomechanic"),
):
    try:
        pyexiv2.registerNs(_uri, _prefix)
    except Exception:  # already registered in this process
        pass


# pyexiv2 encodes a file name with the codec it is given ("utf-8" by default), which
# fails on a name that is not valid UTF-8 (b'DSC_\xff01.NEF' on Linux, which Python keeps
# as a lone surrogate); exiv2 itself takes the name as bytes. This codec hands it the
# name's bytes as the OS has them, the same bytes UTF-8 gives for every valid name.
_FS_CODEC = "postselectd-fsencode"


def _find_fs_codec(name: str) -> codecs.CodecInfo | None:
    if name != _FS_CODEC.replace("-", "_"):
        return None
    return codecs.CodecInfo(
        encode=lambda text, errors="strict": (os.fsencode(text), len(text)),
        decode=lambda data, errors="strict": (os.fsdecode(bytes(data)), len(data)),
        name=_FS_CODEC,
    )


codecs.register(_find_fs_codec)


def _open_image(path: Path) -> pyexiv2.Image:
    return pyexiv2.Image(str(path), encoding=_FS_CODEC)


class SidecarError(Exception):
    """The sidecar could not be written; str() is the reason for the log line.

    ``waits_for``: the folder cannot take a sidecar now, which is not the photo's fault:
    "space" (disk full or over quota) or "write access" (read-only); None otherwise."""

    def __init__(self, message: str, waits_for: str | None = None):
        super().__init__(message)
        self.waits_for = waits_for


@dataclass(frozen=True)
class SidecarContent:
    """What postselectd wants a sidecar to say about one photo."""

    stars: int
    label: str | None  # xmp:Label text (free text: Lightroom matches it by name)
    keywords: tuple[str, ...]  # leaves, e.g. ("select",) or ("reject", "motion blur")
    keyword_parent: str
    keeper_probability: float
    reasons: tuple[str, ...]
    model_version: str
    # Numbers behind the verdict, written as postselect:<Name>.
    details: tuple[tuple[str, str | None], ...] = ()  # None: remove the property
    verdict: str = ""  # "select", "reject" or "" (undecided): digiKam's pick label
    # Keywords that are facts, not a judgement (the burst's): they stay when a person's
    # own verdict replaces postselectd's; every other keyword of ours goes.
    facts: tuple[str, ...] = ()


def overruled(content: SidecarContent) -> SidecarContent:
    """What postselectd still says about a frame a person judged: no label, no pick, no
    verdict keywords, but ``overruled``; the numbers stay. A -1 rating (Lightroom's
    "rejected") is a verdict too: it is written as the 1 star of a reject."""
    facts = tuple(k for k in content.keywords if k in content.facts)
    return replace(
        content,
        stars=max(content.stars, 1),
        label=None,
        verdict="",
        keywords=(OVERRULED,) + facts,
    )


@dataclass(frozen=True)
class SidecarResult:
    path: Path
    created: bool
    rating_written: bool  # False: a person's rating was kept (their label may be too)
    # What a person set and postselectd left alone: their value, "" where they removed
    # ours, None where the property was still ours and was written.
    kept_rating: str | None
    kept_label: str | None
    kept_pick: str | None = None
    changed: bool = True  # False: the sidecar already said all this and was not touched
    overruled: bool = False  # a person's verdict stands; postselectd's was withdrawn

    @property
    def kept_by_person(self) -> tuple[tuple[str, str], ...]:
        """(("rating", "2"), ("label", "")): what was kept; "" means removed."""
        kept = (("rating", self.kept_rating), ("label", self.kept_label), ("pick", self.kept_pick))
        return tuple((what, value) for what, value in kept if value is not None)


def sidecar_path(photo: Path, profile: str, listing: Iterable[str] | None = None) -> Path:
    """Lightroom & co. read DSC_0001.xmp; darktable and digiKam read DSC_0001.NEF.xmp.

    ``listing``: the folder's names, when the caller has just listed it.
    """
    photo = Path(photo)
    wanted = photo.with_name(sidecar_names(photo, [profile])[0])
    # Reuse an existing sidecar whose name differs only in case or Unicode form
    # (DSC_0001.XMP, dsc_0001.xmp; a Mac's decomposed Cafe\u0301.xmp for Café.NEF).
    # os.path: a name that cannot be looked at (EIO, ESTALE) is not raised from here.
    if not os.path.exists(wanted):
        if listing is None:
            like = names_like(wanted.parent, wanted.name)
        else:
            like = _same_but_case(listing, wanted.name)
        for name in like:
            if os.path.isfile(wanted.parent / name):
                return wanted.parent / name
    return wanted


# A listing is trusted while the folder's mtime stays what it was, and only once that
# mtime is older than the coarsest timestamp a card's filesystem keeps (FAT: 2 s), so a
# name added in the same tick as the listing cannot hide behind an unchanged mtime.
_LISTING_SETTLED_NS = 3_000_000_000
_LISTINGS_KEPT = 64
_listings: dict[tuple[int, int, str], tuple[int, dict[str, tuple[str, ...]]]] = {}


def names_like(folder: Path, name: str) -> tuple[str, ...]:
    """Names in ``folder`` equal to ``name`` but for case and Unicode form, in name order.

    Rating a card folder asks this for every file: listing 3,000 names each time made it
    quadratic (~9 ms a file at 500 files). A settled folder's listing is kept while its
    mtime (which any create, delete or rename inside it changes) stays the same; a folder
    that is being written to (a dump, or our own sidecars) is scanned for the one name.
    """
    try:
        st = os.stat(folder)
    except OSError:
        return ()
    key = (st.st_dev, st.st_ino, str(folder))
    cached = _listings.get(key)
    if cached is not None and cached[0] == st.st_mtime_ns:
        return cached[1].get(name_key(name), ())
    listed_at = time.time_ns()
    try:
        listing = os.listdir(folder)
    except OSError:
        return ()
    if listed_at - st.st_mtime_ns < _LISTING_SETTLED_NS:
        return _same_but_case(listing, name)
    names: dict[str, tuple[str, ...]] = {}
    for entry in sorted(listing):
        same = name_key(entry)
        names[same] = names.get(same, ()) + (entry,)
    if len(_listings) >= _LISTINGS_KEPT:
        _listings.pop(next(iter(_listings)))
    _listings[key] = (st.st_mtime_ns, names)
    return names.get(name_key(name), ())


def _same_but_case(listing: Iterable[str], name: str) -> tuple[str, ...]:
    wanted = name_key(name)
    return tuple(sorted(n for n in listing if name_key(n) == wanted))


def sidecar_paths(photo: Path, profiles: Iterable[str]) -> list[Path]:
    return list(_by_path(photo, profiles))


def _by_path(
    photo: Path, profiles: Iterable[str], listing: Iterable[str] | None = None
) -> dict[Path, list[str]]:
    """Profiles grouped by the file they name: lightroom + photomechanic write one file."""
    groups: dict[Path, list[str]] = {}
    for profile in profiles:
        groups.setdefault(sidecar_path(photo, profile, listing), []).append(profile)
    return groups


def write_sidecars(
    photo: Path,
    content: SidecarContent,
    profiles: Iterable[str],
    *,
    force: bool = False,
    dry_run: bool = False,
    listing: Iterable[str] | None = None,
) -> list[SidecarResult]:
    """``listing``: the photo's folder's names, when the caller has just listed it (a
    card folder of 6,000 names costs ~0.5 ms a listing, for every photo rated)."""
    return [
        write_sidecar(path, content, profiles=group, force=force, dry_run=dry_run)
        for path, group in _by_path(photo, profiles, listing).items()
    ]


def write_sidecar(
    path: Path,
    content: SidecarContent,
    *,
    profiles: Iterable[str] = ("lightroom",),
    force: bool = False,
    dry_run: bool = False,
) -> SidecarResult:
    path = Path(path)
    folder = path.parent
    dialects = [DIALECTS[p] for p in profiles]
    with _folder_lock(folder):
        if not dry_run:
            _remove_stale_temps(folder)
        base = _read_settled(path)
        for attempt in range(10):
            if attempt:
                # An editor is writing (they write in bursts): give it a moment.
                time.sleep(min(0.2, 0.005 * 2**attempt) * (0.5 + secrets.randbelow(100) / 100))
                base = _read_settled(path)
            merged, result = _merge(
                base if base is not None else TEMPLATE,
                path,
                content,
                dialects,
                force=force,
                created=base is None,
            )
            _readable(merged, base, path.name)
            if dry_run or not result.changed:
                return result
            if _put(path, base, merged):
                return result
        raise SidecarError(f"{path.name}: another program keeps rewriting it; try again later")


def _put(path: Path, base: bytes | None, merged: bytes, *, remove_if_empty: bool = False) -> bool:
    """Put ``merged`` at ``path`` atomically (a temp file in the same folder, then a swap)
    if ``path`` still holds ``base`` (None: no sidecar yet), so an editor's write is never
    lost. False: an editor wrote it meanwhile; read it and merge again. With
    ``remove_if_empty``, a merge that leaves nothing of anyone's removes the sidecar."""
    folder = path.parent
    tmp = _make_temp(folder, path.name, merged)
    try:
        if remove_if_empty and not read_sidecar(tmp):
            if _read_bytes(path) != base:
                return False
            os.unlink(path)
            _fsync_dir(folder)
            return True
        if base is not None:
            _copy_mode(path, tmp)
        _fsync_file(tmp)
        if _read_bytes(path) != base:
            return False
        if base is None:
            if not _create_new(tmp, path):
                return False
            _fsync_dir(folder)
            return True
        displaced = _swap_in(tmp, path)
        if displaced is None or displaced == base:
            _fsync_dir(folder)
            return True
        # An editor replaced the sidecar between the check and the swap. Swap its version
        # straight back (ours was live for microseconds) and merge again.
        log.debug("%s: an editor wrote it during the swap; merging again", path.name)
        _exchange(tmp, path)
        return False
    except OSError as exc:
        raise _os_error(exc, path) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def withdraw(path: Path, profiles: Iterable[str], keyword_parent: str) -> bool:
    """Take postselectd's verdict out of a sidecar that is no longer its to write
    (DSC_0001.JPG.xmp once the raw DSC_0001.NEF beside it is rated): the rating, label,
    pick and keywords it wrote where a person has not changed them, and its postselect:
    numbers. Everything else stays; a sidecar left with nothing at all is removed (it
    only ever held our verdict). Returns whether the sidecar changed."""
    path = Path(path)
    folder = path.parent
    dialects = [DIALECTS[p] for p in profiles]
    guarded = list(dict.fromkeys(g for d in dialects for g in d.guarded))
    nothing = SidecarContent(
        stars=0,
        label=None,
        keywords=(),
        keyword_parent=keyword_parent,
        keeper_probability=0.0,
        reasons=(),
        model_version="",
    )
    with _folder_lock(folder):
        for _ in range(10):
            base = _read_settled(path)
            if base is None:
                return False
            packet = _Packet(base, path.name)
            current = packet.values()
            ours = [key for key in current if key.startswith(f"Xmp.{NS_PREFIX}.")]
            if not ours:
                return False
            person = set_by_person(current, guarded)
            changes: dict[str, str | list[str] | None] = {}
            if person.rating is None:
                changes["Xmp.xmp.Rating"] = None
            for item in guarded:
                if getattr(person, item.group) is None and item.key in current:
                    changes[item.key] = [] if item.is_list else None
            keywords = _keyword_changes(current, nothing, dialects, force=False)
            for key in ("Xmp.lr.hierarchicalSubject", "Xmp.dc.subject", "Xmp.digiKam.TagsList"):
                if key in keywords and key in current:
                    changes[key] = keywords[key]
            changes.update(dict.fromkeys(ours))
            for key, value in changes.items():
                packet.set(key, value)
            merged = packet.merged()
            _readable(merged, base, path.name)
            if _put(path, base, merged, remove_if_empty=True):
                return True
        raise SidecarError(f"{path.name}: another program keeps rewriting it; try again later")


def rated_with(photo: Path, profiles: Iterable[str], model_version: str) -> bool:
    """Whether every sidecar the profiles name for this photo already holds postselectd's
    verdict by ``model_version`` (whatever a person changed since). No sidecar, one that
    cannot be read, or a verdict of other models: not rated."""
    groups = _by_path(photo, profiles)
    if not groups:
        return False
    try:
        for path in groups:
            data = _read_existing(path)
            if data is None:
                return False
            version = _Packet(data, path.name).values().get(f"Xmp.{NS_PREFIX}.ModelVersion")
            if version != model_version:
                return False
    except SidecarError:
        return False
    return True


def read_sidecar(path: Path) -> dict[str, object]:
    """All XMP properties of a sidecar, keyed like ``Xmp.xmp.Rating``."""
    data = _read_existing(Path(path))
    if data is None:
        return {}
    img = _open_image(path)
    try:
        return img.read_xmp()
    finally:
        img.close()


def _readable(merged: bytes, base: bytes | None, name: str) -> None:
    """Editors read sidecars with Adobe's XMP Toolkit (Lightroom; darktable and digiKam
    through exiv2's copy of it): a sidecar it cannot read is reported and left alone, and
    a merge it could not read (a bug of ours) is never written. ~1 ms."""
    try:
        pyexiv2.ImageData(merged).close()
        return
    except Exception as exc:  # noqa: BLE001 - pyexiv2 raises RuntimeError and others
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if base is not None:
        try:
            pyexiv2.ImageData(base).close()
        except Exception:  # noqa: BLE001
            raise SidecarError(
                f"{name}: existing sidecar is not valid XMP ({reason}); left untouched"
            ) from None
    if base is None:  # our own new sidecar: nothing of the photographer's is wrong
        raise SidecarError(f"{name}: exiv2 cannot open it ({reason}); not written")
    raise SidecarError(f"{name}: merging into it failed ({reason}); left untouched")


def _merge(
    data: bytes,
    final: Path,
    content: SidecarContent,
    dialects: list[Dialect],
    *,
    force: bool,
    created: bool,
) -> tuple[bytes, SidecarResult]:
    """The sidecar's bytes with our properties merged in, and what was kept for a person."""
    try:
        return _merge_packet(data, final, content, dialects, force=force, created=created)
    except SidecarError:
        raise
    except Exception as exc:  # noqa: BLE001 - a sidecar we cannot merge is that file's failure
        raise SidecarError(f"{final.name}: cannot update sidecar ({exc}); left untouched") from None


# postselect: properties that are numbers behind the verdict, not the verdict: a change
# of theirs alone rewrites the sidecar but keeps RatedAt (see _stamped).
_NUMBERS = frozenset(f"Xmp.{NS_PREFIX}.{n}" for n in ("KeeperProbability", "ModelVersion"))


def _merge_packet(
    data: bytes,
    final: Path,
    content: SidecarContent,
    dialects: list[Dialect],
    *,
    force: bool,
    created: bool,
) -> tuple[bytes, SidecarResult]:
    packet = _Packet(data, final.name)
    current = packet.values()
    # Label and pick properties, each dialect's own; a person's value in one keeps the
    # whole group (a darktable color label set by hand also keeps our xmp:Label as is).
    guarded = list(dict.fromkeys(g for d in dialects for g in d.guarded))
    person = PersonMarks() if force else set_by_person(current, guarded)
    if person.any:
        content = overruled(content)
    changes = _verdict_changes(current, content, guarded, person)
    changes.update(_keyword_changes(current, content, dialects, force=force))
    numbers, number_keys = _number_changes(content)
    changes.update(numbers)
    changed = [key for key, value in changes.items() if packet.set(key, value)]
    merged = _stamped(packet, data, current, changed, number_keys)
    return merged, SidecarResult(
        path=final,
        created=created,
        rating_written=person.rating is None,
        kept_rating=person.rating,
        kept_label=person.label,
        kept_pick=person.pick,
        changed=merged != data,
        overruled=person.any,
    )


def _verdict_changes(
    current: Mapping[str, object],
    content: SidecarContent,
    guarded: list[Guarded],
    person: PersonMarks,
) -> dict[str, str | list[str] | None]:
    """The rating, labels and pick postselectd writes, where a person has not set theirs,
    each with its postselect:Written* record. None: remove; []: remove our array."""
    changes: dict[str, str | list[str] | None] = {}
    if person.rating is None:
        changes["Xmp.xmp.Rating"] = str(content.stars)
        changes[f"Xmp.{NS_PREFIX}.{RATING_RECORD}"] = str(content.stars)
    for group in ("label", "pick"):
        if getattr(person, group) is not None:
            continue
        for item in (g for g in guarded if g.group == group):
            value = item.value(content)
            if item.is_list:
                changes[item.key] = value.split(",") if value else []
            elif value is None:
                # An editor's own "none" (Photo Mechanic's ColorClass 0) already says it.
                if value_text(current.get(item.key)) not in item.unset:
                    changes[item.key] = None
            else:
                changes[item.key] = value
            changes[f"Xmp.{NS_PREFIX}.{item.record}"] = value or NOTHING_WRITTEN
    return changes


def _number_changes(
    content: SidecarContent,
) -> tuple[dict[str, str | list[str] | None], frozenset[str]]:
    """postselectd's reasons and the numbers behind its verdict, and which of these keys
    are numbers only (``_NUMBERS`` and the details)."""
    changes: dict[str, str | list[str] | None] = {}
    changes[f"Xmp.{NS_PREFIX}.Reasons"] = list(content.reasons)
    changes[f"Xmp.{NS_PREFIX}.KeeperProbability"] = f"{content.keeper_probability:.4f}"
    changes[f"Xmp.{NS_PREFIX}.ModelVersion"] = content.model_version
    numbers = set(_NUMBERS)
    for name, value in content.details:
        changes[f"Xmp.{NS_PREFIX}.{name}"] = value
        numbers.add(f"Xmp.{NS_PREFIX}.{name}")
    return changes, frozenset(numbers)


def _stamped(
    packet: _Packet,
    data: bytes,
    current: Mapping[str, object],
    changed: list[str],
    numbers: frozenset[str],
) -> bytes:
    """The merged bytes, postselect:RatedAt set where the verdict is new."""
    rated_at = f"Xmp.{NS_PREFIX}.RatedAt"
    if not changed and rated_at in current:
        return data  # it says all this already: not touched, so no "changed on disk"
    # RatedAt is when this verdict was first written: a change of the numbers alone
    # (a new model that judges alike) keeps it.
    if rated_at not in current or any(key not in numbers for key in changed):
        packet.set(rated_at, datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"))
    return packet.merged()


def _keyword_changes(
    current: dict[str, object], content: SidecarContent, dialects: list[Dialect], *, force: bool
) -> dict[str, list[str]]:
    """PostSelect's keywords replaced, everyone else's kept in their order, and what a
    person removed of ours stays removed.

    postselect:WrittenHierarchicalSubject records the lr:hierarchicalSubject entries we
    wrote last; one that is gone (or whose dc:subject leaf we added is gone) was removed
    by a person and is remembered in postselect:RemovedKeywords, in the sidecar itself so
    that it holds after a folder rename or a new journal. ``force`` restores them.
    """
    prefix = content.keyword_parent + "|"
    hierarchical = _list(current.get("Xmp.lr.hierarchicalSubject"))
    subjects = _list(current.get("Xmp.dc.subject"))
    ours_before = _list(current.get(f"Xmp.{NS_PREFIX}.WrittenKeywords"))  # dc leaves we added
    record = current.get(f"Xmp.{NS_PREFIX}.WrittenHierarchicalSubject")
    if record is None:
        # Written before this record existed: every PostSelect| keyword is ours, and a
        # leaf we added that is gone was removed with its keyword.
        written = [k for k in hierarchical if k.startswith(prefix)]
        written += [
            prefix + k
            for k in content.keywords
            if _leaf(k) in ours_before and _leaf(k) not in subjects
        ]
    else:
        written = _list(record)
    present = set(hierarchical)
    # One removed earlier that is back was put back by a person: theirs now.
    removed = set(_list(current.get(f"Xmp.{NS_PREFIX}.RemovedKeywords"))) - present
    for keyword in written:
        leaf = _leaf(keyword)
        if keyword not in present or (leaf in ours_before and leaf not in subjects):
            removed.add(keyword)
    if force:
        removed = set()
    written_set = set(written)
    others = [k for k in hierarchical if k not in written_set]
    added = [
        prefix + k
        for k in content.keywords
        if prefix + k not in removed and prefix + k not in others
    ]
    subjects = [k for k in subjects if k not in set(ours_before)]
    # dc:subject holds leaf names only, as Lightroom writes it: "check|eyes" -> "eyes".
    leaves = dict.fromkeys(_leaf(k) for k in added)
    new_leaves = [k for k in leaves if k not in subjects]
    changes: dict[str, list[str]] = {
        "Xmp.lr.hierarchicalSubject": others + added,
        "Xmp.dc.subject": subjects + new_leaves,
        f"Xmp.{NS_PREFIX}.WrittenKeywords": new_leaves,
        f"Xmp.{NS_PREFIX}.WrittenHierarchicalSubject": added,
        f"Xmp.{NS_PREFIX}.RemovedKeywords": sorted(removed),
    }
    if any(d.tags_list for d in dialects):
        # digiKam's own tag paths, kept in step with lr:hierarchicalSubject.
        slash = content.keyword_parent + "/"
        ours_tags = {k.replace("|", "/") for k in written_set | removed}
        tags = _list(current.get("Xmp.digiKam.TagsList"))
        if record is None:
            ours_tags |= {t for t in tags if t.startswith(slash)}
        tags = [t for t in tags if t not in ours_tags]
        changes["Xmp.digiKam.TagsList"] = tags + [
            k.replace("|", "/") for k in added if k.replace("|", "/") not in tags
        ]
    return changes


def _leaf(keyword: str) -> str:
    """PostSelect|check|eyes -> eyes (the dc:subject word for a keyword)."""
    return keyword.rsplit("|", 1)[-1]


# --- the packet: XMP edited as text ---------------------------------------------------
#
# exiv2 re-serializes the whole packet from its own model, and that model is lossy: it
# appends "/" to a namespace URI that ends in neither "/" nor "#" (ON1's
# http://www.on1.com/photoraw, Microsoft's http://ns.microsoft.com/photo/1.0 as exiftool
# writes it), so their owners no longer find their properties, and it drops what
# x:xmpmeta holds besides rdf:RDF. So the merge edits the sidecar's own bytes: expat
# says where each element starts, only the properties postselectd reads and writes are
# touched, and every other byte stays as it was.

_RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_DESCRIPTION = f"{_RDF_NS} Description"
_RDF_ROOT = f"{_RDF_NS} RDF"
_ARRAYS = {f"{_RDF_NS} {kind}": kind for kind in ("Bag", "Seq", "Alt")}
_LI = f"{_RDF_NS} li"
_VALUE = f"{_RDF_NS} value"
_URI_OF_PREFIX = {prefix: uri for uri, prefix in NAMESPACES.items()}
# dc:subject and lr:hierarchicalSubject are Bags (digiKam flattens a Seq
# hierarchicalSubject, darktable#4095); the other arrays we write are Seqs.
_BAGS = frozenset({"Xmp.dc.subject", "Xmp.lr.hierarchicalSubject"})
_TAG_NAME = re.compile(rb"<([^\s/>]+)")
_ATTRIBUTE = re.compile(rb"\s+([^\s=/>]+)\s*=\s*(\"[^\"]*\"|'[^']*')")
_TAG_END = re.compile(rb"\s*(/?)>")
_ENCODING = re.compile(rb"(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']+)")


@dataclass
class _Element:
    """An element of the packet as expat reported it, with its bytes' positions."""

    name: str  # "namespace-URI local-name"
    qname: bytes  # as the file spells it
    start: int  # its "<"
    tag_end: int  # after its start tag's ">"
    attributes_end: int  # after its last attribute
    empty: bool  # <x/>
    scope: dict[str, str]  # prefix -> namespace URI in scope inside its start tag
    role: str = ""
    key: str = ""  # our property's key, for a property element
    text: list[str] = field(default_factory=list)
    children: list[_Element] = field(default_factory=list)
    close_start: int = 0  # where its end tag starts (tag_end for an empty element)
    end: int = 0  # after its end tag


@dataclass
class _Prop:
    """One occurrence of one of our properties: an attribute or an element."""

    key: str
    value: str | list[str]
    start: int  # from the white space before it
    end: int
    value_span: tuple[int, int] | None = None  # the value's bytes: inside the quotes or tags
    element: _Element | None = None
    array: _Element | None = None  # its rdf:Bag/Seq/Alt
    items: list[_Element] = field(default_factory=list)
    # A value with qualifiers (rdf:value beside them): the value is rdf:value's, and an
    # edit changes only it, so the qualifiers (someone else's) stay.
    qualified: bool = False


class _Packet:
    """A sidecar's bytes, our properties located in them, and the edits to make."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.props: dict[str, list[_Prop]] = {}
        self.descriptions: list[_Element] = []
        self.rdf: _Element | None = None
        self._edits: list[tuple[int, int, int, bytes]] = []  # start, order, end, new bytes
        self._new_attributes: list[bytes] = []
        self._new_elements: list[bytes] = []
        self._declare: dict[str, str] = {}
        declared = _ENCODING.match(data)
        try:
            data.decode("utf-8")
            utf8 = not declared or declared.group(1).lower() in (b"utf-8", b"utf8")
        except UnicodeDecodeError:
            utf8 = False
        if not utf8:  # XMP is UTF-8 in practice; the byte edits below assume it
            raise SidecarError(f"{name}: existing sidecar is not UTF-8 XMP; left untouched")
        try:
            self._parse()
        except expat.ExpatError as exc:
            raise SidecarError(f"{name}: cannot read its XMP ({exc}); left untouched") from None
        except (ValueError, AttributeError):  # a tag where expat said, but not as we read it
            raise SidecarError(f"{name}: cannot read its XMP; left untouched") from None
        if self.rdf is None:
            raise SidecarError(f"{name}: existing sidecar is not XMP (no rdf:RDF); left untouched")
        if not self.descriptions:
            self._add_description()

    def values(self) -> dict[str, str | list[str]]:
        """Our properties' values, keyed like pyexiv2's (the first if one is repeated)."""
        return {key: props[0].value for key, props in self.props.items()}

    # -- reading ------------------------------------------------------------------------

    def _parse(self) -> None:
        data = self.data
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        stack: list[_Element] = []
        scope: dict[str, str] = {"xml": _XML_NS}
        pending: dict[str, str] = {}

        def start_ns(prefix: str | None, uri: str | None) -> None:
            pending[prefix or ""] = uri or ""

        def start(name: str, attrs: dict[str, str]) -> None:
            at = parser.CurrentByteIndex
            qname = _TAG_NAME.match(data, at).group(1)
            inner = stack[-1].scope if stack else scope
            if pending:
                inner = {**inner, **pending}
                pending.clear()
            pos = at + 1 + len(qname)
            attributes = []
            while match := _ATTRIBUTE.match(data, pos):
                attributes.append(match)
                pos = match.end()
            close = _TAG_END.match(data, pos)
            element = _Element(name, qname, at, close.end(), pos, bool(close.group(1)), inner)
            parent = stack[-1] if stack else None
            role = parent.role if parent is not None else ""
            if name == _RDF_ROOT and self.rdf is None:
                element.role = "rdf"
                self.rdf = element
            elif role == "rdf" and name == _DESCRIPTION:
                element.role = "description"
                self.descriptions.append(element)
                for match in attributes:
                    self._attribute(match, attrs, inner)
            elif role == "description":
                key = _key_of(name)
                if key:
                    element.role, element.key = "property", key
                    prop = _Prop(key, attrs.get(f"{_RDF_NS} resource", ""), 0, 0, element=element)
                    self.props.setdefault(key, []).append(prop)
                    self._value_attribute(prop, attributes, attrs, inner)
            elif role == "property" and name in _ARRAYS:
                element.role = "array"
            elif role == "property" and name == _DESCRIPTION:  # a value with qualifiers
                element.role, element.key = "qualified", parent.key
                self._value_attribute(self.props[parent.key][-1], attributes, attrs, inner)
            elif role in ("property", "qualified") and name == _VALUE:
                element.role, element.key = "value", parent.key
            elif role == "array" and name == _LI:
                element.role = "item"
            if parent is not None and element.role in ("array", "item"):
                parent.children.append(element)
            stack.append(element)

        def text(content: str) -> None:
            if stack and stack[-1].role in ("property", "item", "value"):
                stack[-1].text.append(content)

        def end(name: str) -> None:
            at = parser.CurrentByteIndex
            element = stack.pop()
            if element.empty:
                element.close_start = element.end = element.tag_end
            else:
                element.close_start, element.end = at, data.index(b">", at) + 1
            if element.role == "value":
                prop = self.props[element.key][-1]
                prop.value, prop.qualified = "".join(element.text), True
                if not element.empty:
                    prop.value_span = (element.tag_end, element.close_start)
            if element.role == "property":
                prop = self.props[element.key][-1]
                prop.start, prop.end = _with_space_before(data, element.start), element.end
                arrays = [c for c in element.children if c.role == "array"]
                if arrays:
                    prop.array = arrays[0]
                    prop.items = [c for c in arrays[0].children if c.role == "item"]
                    prop.value = ["".join(item.text) for item in prop.items]
                elif not prop.qualified and (element.text or not prop.value):
                    prop.value = "".join(element.text)

        parser.StartNamespaceDeclHandler = start_ns
        parser.StartElementHandler = start
        parser.CharacterDataHandler = text
        parser.EndElementHandler = end
        parser.Parse(data, True)

    @staticmethod
    def _value_attribute(
        prop: _Prop, attributes: list[re.Match], attrs: dict[str, str], scope: dict[str, str]
    ) -> None:
        """rdf:value as an attribute beside qualifiers: <xmp:Rating rdf:value="3" q:by="Anna"/>."""
        for match in attributes:
            prefix, _, local = match.group(1).decode("utf-8").rpartition(":")
            if local == "value" and prefix and scope.get(prefix) == _RDF_NS:
                prop.value, prop.qualified = attrs.get(_VALUE, ""), True
                prop.value_span = (match.start(2) + 1, match.end() - 1)

    def _attribute(self, match: re.Match, attrs: dict[str, str], scope: dict[str, str]) -> None:
        qname = match.group(1).decode("utf-8")
        prefix, _, local = qname.rpartition(":")
        if not prefix or prefix == "xmlns":
            return
        uri = scope.get(prefix)
        key = _key_of(f"{uri} {local}") if uri else None
        if key:
            value_start = match.start(2) + 1
            self.props.setdefault(key, []).append(
                _Prop(
                    key,
                    attrs.get(f"{uri} {local}", ""),
                    match.start(),
                    match.end(),
                    value_span=(value_start, match.end() - 1),
                )
            )

    def _add_description(self) -> None:
        """A packet with an empty rdf:RDF (our template) gets an rdf:Description."""
        rdf = self.rdf
        prefix = _prefix_of(rdf.qname)
        indent = _indent(self.data, rdf.start)
        if prefix:
            tag = b'%s:Description %s:about=""' % (prefix, prefix)
        else:  # rdf is the default namespace: attributes need a prefix
            tag = b'rdf:Description xmlns:rdf="%s" rdf:about=""' % _RDF_NS.encode()
        description = b"\n%s  <%s/>" % (indent, tag)
        if rdf.empty:
            at = rdf.tag_end - 2
            new = b">%s\n%s</%s>" % (description, indent, rdf.qname)
            data = self.data[:at] + new + self.data[rdf.tag_end :]
        else:
            at = self.data.rindex(b">", 0, rdf.close_start) + 1
            data = self.data[:at] + description + self.data[at:]
        self.__init__(data, self.name)

    # -- editing ------------------------------------------------------------------------

    def set(self, key: str, value: str | list[str] | None) -> bool:
        """Give one of our properties a value; None removes it, as does [] an array we
        emptied (an empty array someone else left there stays). False: it has that value
        already (however its owner spelled it), and nothing is edited."""
        found = self.props.get(key, [])
        if self._holds(found, key, value):
            return False
        self._set(key, found, value)
        return True

    @staticmethod
    def _holds(found: list[_Prop], key: str, value: str | list[str] | None) -> bool:
        if not found:
            return value is None or value == []
        if len(found) > 1 or value is None:
            return False
        first = found[0]
        if value == []:
            return not first.value
        if isinstance(value, str):
            return first.array is None and first.value == value
        kind = b"Bag" if key in _BAGS else b"Seq"
        return (
            first.array is not None
            and first.value == value
            and (key not in _BAGS or first.array.qname.rpartition(b":")[2] == kind)
        )

    def _set(self, key: str, found: list[_Prop], value: str | list[str] | None) -> None:
        first, rest = (found[0], found[1:]) if found else (None, [])
        for prop in rest:
            self._replace(prop.start, prop.end, b"")
        if value is None or value == []:
            if first is not None and not (value == [] and not first.value):
                self._replace(first.start, first.end, b"")
            return
        if isinstance(value, str):
            if first is not None and first.value_span is not None:
                self._replace(*first.value_span, _escape(value, attribute=True))
                return
            if first is not None:
                element = first.element
                self._replace(
                    element.start,
                    element.end,
                    b"<%s>%s</%s>" % (element.qname, _escape(value), element.qname),
                )
                return
            self._new_attributes.append(b'%s="%s"' % (self._qname(key), _escape(value, True)))
            return
        kind = b"Bag" if key in _BAGS else b"Seq"
        if first is not None and first.array is not None:
            self._edit_items(first, value, kind)
            return
        if first is not None:
            self._replace(first.start, first.end, b"")
        description = self.descriptions[0]
        indent = _indent(self.data, description.start) + b" "
        rdf = _prefix_of(description.qname)
        self._new_elements.append(_array(self._qname(key), _q(rdf, kind), value, indent))

    def _edit_items(self, prop: _Prop, value: list[str], kind: bytes) -> None:
        """Keep the items that stay byte for byte (with their qualifiers), drop ours that
        go, append the new ones."""
        array = prop.array
        rdf = _prefix_of(array.qname)
        keep = 0
        for item in prop.items:
            if keep < len(value) and "".join(item.text) == value[keep]:
                keep += 1
            else:
                self._replace(_with_space_before(self.data, item.start), item.end, b"")
        container_kind = array.qname.rpartition(b":")[2]
        if prop.key in _BAGS and container_kind != kind:
            container_kind = kind
            self._replace(array.start + 1, array.start + 1 + len(array.qname), _q(rdf, kind))
            if not array.empty:
                self._replace(
                    array.close_start + 2, array.close_start + 2 + len(array.qname), _q(rdf, kind)
                )
        if keep == len(value):
            return
        if prop.items:
            indent = _indent(self.data, prop.items[0].start)
        else:
            indent = _indent(self.data, array.start) + b" "
        li = _q(rdf, b"li")
        new = b"".join(b"\n%s<%s>%s</%s>" % (indent, li, _escape(v), li) for v in value[keep:])
        if array.empty:
            close = b"\n%s</%s>" % (_indent(self.data, array.start), _q(rdf, container_kind))
            self._replace(array.tag_end - 2, array.tag_end, b">" + new + close)
        else:
            at = self.data.rindex(b">", 0, array.close_start) + 1
            self._replace(at, at, new)

    def _qname(self, key: str) -> bytes:
        """The name to write a new property under, in the first description's scope."""
        _, preferred, local = key.split(".", 2)
        uri = _URI_OF_PREFIX[preferred]
        scope = self.descriptions[0].scope
        if scope.get(preferred) == uri or self._declare.get(preferred) == uri:
            prefix = preferred
        else:
            bound = [p for p, u in {**scope, **self._declare}.items() if u == uri and p]
            if bound:
                prefix = bound[0]
            else:
                prefix, n = preferred, 1
                while prefix in scope or prefix in self._declare:
                    prefix, n = f"{preferred}{n}", n + 1
                self._declare[prefix] = uri
        return f"{prefix}:{local}".encode()

    def _replace(self, start: int, end: int, new: bytes) -> None:
        self._edits.append((start, len(self._edits), end, new))

    def merged(self) -> bytes:
        """The packet with every edit made."""
        description = self.descriptions[0]
        indent = _indent(self.data, description.start)
        added = b"".join(
            b'\n%s  xmlns:%s="%s"' % (indent, p.encode(), _escape(u, True))
            for p, u in self._declare.items()
        ) + b"".join(b"\n%s %s" % (indent, a) for a in self._new_attributes)
        if added:
            self._replace(description.attributes_end, description.attributes_end, added)
        if self._new_elements:
            children = b"".join(self._new_elements)
            if description.empty:
                close = b"\n%s</%s>" % (indent, description.qname)
                self._replace(description.tag_end - 2, description.tag_end, b">" + children + close)
            else:
                at = self.data.rindex(b">", 0, description.close_start) + 1
                self._replace(at, at, children)
        newline = b"\r\n" if b"\r\n" in self.data else b"\n"  # the file's own line ends
        out = []
        cursor = 0
        for start, _, end, new in sorted(self._edits):
            if start < cursor:
                raise SidecarError(f"{self.name}: overlapping edits (a bug); left untouched")
            if newline != b"\n":
                new = new.replace(b"\n", newline)
            out += [self.data[cursor:start], new]
            cursor = end
        out.append(self.data[cursor:])
        return b"".join(out)


def _key_of(name: str) -> str | None:
    """ "http://ns.adobe.com/xap/1.0/ Rating" -> "Xmp.xmp.Rating", None: not ours."""
    uri, _, local = name.rpartition(" ")
    prefix = NAMESPACES.get(uri)
    return f"Xmp.{prefix}.{local}" if prefix else None


def _prefix_of(qname: bytes) -> bytes:
    return qname.rpartition(b":")[0]


def _q(prefix: bytes, local: bytes) -> bytes:
    return prefix + b":" + local if prefix else local


def _indent(data: bytes, at: int) -> bytes:
    """The white space an element's line starts with (b"" if it shares its line)."""
    line_start = data.rfind(b"\n", 0, at) + 1
    head = data[line_start:at]
    return head if not head.strip() else b""


def _with_space_before(data: bytes, at: int) -> int:
    """Where the white space before position ``at`` starts."""
    start = at
    while start > 0 and data[start - 1 : start] in (b" ", b"\t", b"\n", b"\r"):
        start -= 1
    return start


def _array(qname: bytes, container: bytes, values: list[str], indent: bytes) -> bytes:
    li = container.rpartition(b":")[0]
    li = li + b":li" if li else b"li"
    items = b"".join(b"\n%s  <%s>%s</%s>" % (indent, li, _escape(v), li) for v in values)
    return b"\n%s<%s>\n%s <%s>%s\n%s </%s>\n%s</%s>" % (
        indent,
        qname,
        indent,
        container,
        items,
        indent,
        container,
        indent,
        qname,
    )


def _escape(value: str, attribute: bool = False) -> bytes:
    text = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if attribute:
        text = (
            text.replace('"', "&quot;")
            .replace("'", "&apos;")
            .replace("\n", "&#xA;")
            .replace("\r", "&#xD;")
            .replace("\t", "&#x9;")
        )
    return text.encode("utf-8")


def _list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def validate_xmp(data: bytes, name: str) -> None:
    """Refuse anything that is not an XMP packet, and XML bombs, before exiv2 sees it."""
    if not data.strip():
        raise SidecarError(f"{name}: existing sidecar is empty; left untouched")
    try:
        root = SafeET.fromstring(data.lstrip(b"\xef\xbb\xbf"), forbid_dtd=True)
    except DefusedXmlException as exc:
        raise SidecarError(
            f"{name}: existing sidecar contains a DTD or entities "
            f"({type(exc).__name__}); left untouched"
        ) from None
    except Exception:
        raise SidecarError(
            f"{name}: existing sidecar is not valid XMP (malformed XML); left untouched"
        ) from None
    if root.tag != _RDF and root.find(f".//{_RDF}") is None:
        raise SidecarError(f"{name}: existing sidecar is not XMP (no rdf:RDF); left untouched")


def _read_existing(path: Path) -> bytes | None:
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise SidecarError(
                f"{path.name}: existing sidecar is {size} bytes, too large to be XMP; "
                "left untouched"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(_read_reason(exc, path)) from None
    validate_xmp(data, path.name)
    return data


def _read_bytes(path: Path) -> bytes | None:
    """The sidecar's bytes, None if there is none. Any other OS error (a sidecar another
    user owns, a folder of that name, EIO on a failing card, ESTALE on NFS) is this
    photo's SidecarError: a sidecar we cannot read is one we cannot merge into."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(_read_reason(exc, path)) from None


def _read_settled(path: Path, attempts: int = 10, pause: float = 0.02) -> bytes | None:
    """The sidecar, valid; a file that is invalid only because an editor is mid-write
    (exiv2-based editors rewrite in place) is read again once it changes."""
    for _ in range(attempts):
        try:
            return _read_existing(path)
        except SidecarError:
            seen = _read_bytes(path)
            time.sleep(pause)
            if _read_bytes(path) == seen:
                raise  # not moving: really not XMP
    return _read_existing(path)


def _create_new(tmp: Path, path: Path) -> bool:
    """Put a new sidecar in place unless one appeared meanwhile (False: merge into that)."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    # No hard links (exFAT, some network shares): the check just before is all we have.
    if path.exists():
        return False
    os.replace(tmp, path)
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None
if sys.platform.startswith("linux"):
    try:
        _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        _renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two names (Linux renameat2 RENAME_EXCHANGE); False: unsupported."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, path: Path) -> bytes | None:
    """Replace path by tmp; return what was replaced, as read after the swap.

    On Linux this is an atomic exchange: the old sidecar lands at tmp's name, so a version
    an editor put in place after our last check is seen (and swapped back) rather than
    silently replaced. Elsewhere, or where the filesystem refuses, os.replace; None:
    nothing to compare.
    """
    if _exchange(tmp, path):
        return tmp.read_bytes()
    os.replace(tmp, path)
    return None


# A folder is swept for the temps of killed writers at its first write and then at most
# this often (each sweep lists the folder).
SWEEP_EVERY_SECONDS = 30.0
_SWEEPS_KEPT = 256
_swept: dict[str, float] = {}
# Our temp files are named .NAME.postselectd-PID-RANDOM.tmp (_make_temp).
_TEMP_MARKER = ".postselectd-"


def _remove_stale_temps(folder: Path) -> None:
    """Temp files of a postselectd that was killed mid-write (power cut, SIGKILL, OOM).

    The sidecar itself is whole (the temp never replaced it); only the temp is left,
    named after the writer's pid. Under the folder lock, a temp whose writer is gone is
    ours to remove. Not at every write: listing a card folder for each sidecar cost
    ~0.5 ms a photo at 2,000 names, and a leftover temp is a hidden file that harms
    nothing until the next sweep.
    """
    now = time.monotonic()
    key = str(folder)
    if now - _swept.get(key, -SWEEP_EVERY_SECONDS) < SWEEP_EVERY_SECONDS:
        return
    if key not in _swept and len(_swept) >= _SWEEPS_KEPT:
        _swept.pop(next(iter(_swept)))
    _swept[key] = now
    try:
        # Names first, Paths only for matches: building a Path for each of 2,000 names
        # cost ~2.7 ms.
        candidates = [
            folder / n
            for n in os.listdir(folder)
            if n.startswith(".") and n.endswith(".tmp") and _TEMP_MARKER in n
        ]
    except OSError:
        return
    for tmp in candidates:
        try:
            pid = int(tmp.name.rsplit(_TEMP_MARKER, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            try:
                tmp.unlink()
                log.debug("%s: removed %s left by a killed writer", folder, tmp.name)
            except OSError:
                pass
        except OSError:
            pass  # alive but not ours to signal: leave it


def _make_temp(folder: Path, name: str, data: bytes) -> Path:
    for _ in range(10):
        tmp = folder / f".{name}{_TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            # 0o666 lets the user's umask decide, as for any file they create.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _os_error(exc, folder / name) from None
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            os.close(fd)
            os.unlink(tmp)
            raise _os_error(exc, folder / name) from None
        os.close(fd)
        return tmp
    raise SidecarError(f"{name}: cannot create a temporary file next to it")


def _copy_mode(source: Path, target: Path) -> None:
    try:
        os.chmod(target, stat.S_IMODE(source.stat().st_mode))
    except OSError:
        pass


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialize postselectd's own writers per folder (threads and processes alike).

    flock on the folder itself leaves no lock files among the photographer's pictures.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise _os_error(exc, folder) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_reason(exc: OSError, path: Path) -> str:
    """Why an existing sidecar cannot be read; it is left exactly as it is."""
    if exc.errno == errno.EISDIR:
        return f"{path.name}: is a folder, not a sidecar; left untouched"
    return f"{path.name}: existing sidecar cannot be read ({exc.strerror or exc}); left untouched"


# What a folder that cannot take a sidecar lacks, by the words of the reason: the journal
# keeps only a waiting photo's reason, and ``status`` says what it waits for from that.
_DISK_FULL = "disk full, sidecar not written"
_OVER_QUOTA = "disk quota exceeded, sidecar not written"
_NOT_WRITABLE = "folder is not writable, sidecar not written"
_WAITS_FOR = {_DISK_FULL: "space", _OVER_QUOTA: "space", _NOT_WRITABLE: "write access"}


def waits_for(reason: str) -> str | None:
    """What a sidecar that failed with ``reason`` (SidecarError's text) waits for: "space",
    "write access" (SidecarError.waits_for), or None."""
    return next((what for words, what in _WAITS_FOR.items() if words in reason), None)


def _os_error(exc: OSError, path: Path) -> SidecarError:
    if exc.errno == errno.ENOSPC:
        return SidecarError(f"{path.name}: {_DISK_FULL} (the old one is intact)", "space")
    if exc.errno == errno.EDQUOT:
        return SidecarError(f"{path.name}: {_OVER_QUOTA} (the old one is intact)", "space")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SidecarError(f"{path.parent}: {_NOT_WRITABLE}", "write access")
    return SidecarError(f"{path.name}: {exc.strerror or exc}")
