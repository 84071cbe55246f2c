"""XMP sidecars: read, merge, write atomically — the part that must never hurt anyone.

The only module that calls pyexiv2. Rules it keeps:

- The photo is never opened for writing; only ``NAME.xmp`` / ``NAME.EXT.xmp`` are written.
- What is there is merged into, never replaced: every foreign property (crs:*, darktable:*,
  unknown namespaces) survives; only PostSelect's own keywords are replaced.
- A rating or label a person set is never changed: postselectd records what it wrote in
  its own ``postselect:`` namespace and only changes a value that still equals that.
- Atomic: exiv2 rewrites files in place (truncate, write, no fsync), so the edit happens on
  a temp copy in the same folder under a per-folder lock, is fsynced, and replaces the
  sidecar with ``os.replace``. An editor that wrote the sidecar meanwhile is merged again.
- An existing sidecar that is not valid XMP is reported and left alone.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pyexiv2
from defusedxml import DefusedXmlException

log = logging.getLogger(__name__)

NS_URI = "http://ns.postselectd.org/xmp/1.0/"
NS_PREFIX = "postselect"
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
try:
    pyexiv2.registerNs(NS_URI, NS_PREFIX)
except Exception:  # already registered in this process
    pass


class SidecarError(Exception):
    """The sidecar could not be written; str() is the reason for the log line."""


@dataclass(frozen=True)
class SidecarContent:
    """What postselectd wants a sidecar to say about one photo."""

    stars: int
    label: str | None
    keywords: tuple[str, ...]  # leaves, e.g. ("select",) or ("reject", "motion blur")
    keyword_parent: str
    keeper_probability: float
    reasons: tuple[str, ...]
    model_version: str
    # Numbers behind the verdict, written as postselect:<Name>.
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SidecarResult:
    path: Path
    created: bool
    rating_written: bool  # False: a person's rating (or label) was kept
    kept_rating: str | None  # the person's rating that was left alone
    kept_label: str | None


def sidecar_path(photo: Path, profile: str) -> Path:
    """Lightroom & co. read DSC_0001.xmp; darktable and digiKam read DSC_0001.NEF.xmp."""
    photo = Path(photo)
    if profile == "darktable":
        wanted = photo.with_name(photo.name + ".xmp")
    else:
        wanted = photo.with_suffix(".xmp")
    # Reuse an existing sidecar whose extension differs only in case (DSC_0001.XMP).
    if not wanted.exists():
        try:
            for sibling in wanted.parent.iterdir():
                if sibling.name.lower() == wanted.name.lower() and sibling.is_file():
                    return sibling
        except OSError:
            pass
    return wanted


def sidecar_paths(photo: Path, profiles: Iterable[str]) -> list[Path]:
    return list(dict.fromkeys(sidecar_path(photo, p) for p in profiles))


def write_sidecars(
    photo: Path,
    content: SidecarContent,
    profiles: Iterable[str],
    *,
    force: bool = False,
    dry_run: bool = False,
) -> list[SidecarResult]:
    return [
        write_sidecar(path, content, force=force, dry_run=dry_run)
        for path in sidecar_paths(photo, profiles)
    ]


def write_sidecar(
    path: Path, content: SidecarContent, *, force: bool = False, dry_run: bool = False
) -> SidecarResult:
    path = Path(path)
    folder = path.parent
    with _folder_lock(folder):
        for _attempt in range(5):
            before = _read_existing(path)
            work_dir = Path(tempfile.gettempdir()) if dry_run else folder
            tmp = _make_temp(work_dir, path.name, before if before is not None else TEMPLATE)
            try:
                if before is not None and not dry_run:
                    _copy_mode(path, tmp)
                result = _edit(tmp, path, content, force=force, created=before is None)
                if dry_run:
                    return result
                _fsync_file(tmp)
                if _read_existing(path) != before:
                    # An editor wrote the sidecar while we worked: merge into its version.
                    continue
                os.replace(tmp, path)
                _fsync_dir(folder)
                return result
            except OSError as exc:
                raise SidecarError(_os_reason(exc, path)) from None
            finally:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                except OSError:
                    pass
        raise SidecarError(f"{path.name}: another program keeps rewriting it; try again later")


def read_sidecar(path: Path) -> dict[str, object]:
    """All XMP properties of a sidecar, keyed like ``Xmp.xmp.Rating``."""
    data = _read_existing(Path(path))
    if data is None:
        return {}
    img = pyexiv2.Image(str(path))
    try:
        return img.read_xmp()
    finally:
        img.close()


def _edit(
    tmp: Path, final: Path, content: SidecarContent, *, force: bool, created: bool
) -> SidecarResult:
    try:
        img = pyexiv2.Image(str(tmp))
    except Exception as exc:
        raise SidecarError(
            f"{final.name}: existing sidecar is not valid XMP ({exc}); left untouched"
        ) from None
    try:
        # exiv2 mirrors sidecar XMP into in-memory Exif/IPTC on read and copies them back on
        # write, which resurrects deleted keywords (dc:subject <-> IPTC Keywords) and can
        # reformat dates. A sidecar has no Exif or IPTC of its own: drop the mirrors.
        img.clear_exif()
        img.clear_iptc()
        current = img.read_xmp()
        changes: dict[str, object] = {}
        # A list given to modify_xmp replaces the array; an empty one leaves an empty
        # array element, removed below. (Deleting dc:subject with None does not work.)
        deletions: dict[str, None] = {}
        ours_rating = _text(current.get(f"Xmp.{NS_PREFIX}.WrittenRating"))
        theirs_rating = _text(current.get("Xmp.xmp.Rating"))
        if ours_rating is None:
            human_rating = theirs_rating not in (None, "0")
        else:
            human_rating = theirs_rating != ours_rating
        kept_rating = None
        if force or not human_rating:
            changes["Xmp.xmp.Rating"] = str(content.stars)
            changes[f"Xmp.{NS_PREFIX}.WrittenRating"] = str(content.stars)
        else:
            kept_rating = theirs_rating

        ours_label = _text(current.get(f"Xmp.{NS_PREFIX}.WrittenLabel"))
        theirs_label = _text(current.get("Xmp.xmp.Label"))
        if ours_label is None:
            human_label = theirs_label is not None
        else:
            human_label = theirs_label != (None if ours_label == "none" else ours_label)
        kept_label = None
        if force or not human_label:
            if content.label:
                changes["Xmp.xmp.Label"] = content.label
            else:
                deletions["Xmp.xmp.Label"] = None
            changes[f"Xmp.{NS_PREFIX}.WrittenLabel"] = content.label or "none"
        else:
            kept_label = theirs_label or ""

        # Keywords: replace only PostSelect's own, keep everyone else's in their order.
        prefix = content.keyword_parent + "|"
        hierarchical = [
            k for k in _list(current.get("Xmp.lr.hierarchicalSubject")) if not k.startswith(prefix)
        ]
        ours_before = set(_list(current.get(f"Xmp.{NS_PREFIX}.WrittenKeywords")))
        subjects = [k for k in _list(current.get("Xmp.dc.subject")) if k not in ours_before]
        new_leaves = [k for k in content.keywords if k not in subjects]
        hierarchical += [prefix + k for k in content.keywords]
        subjects += new_leaves
        if deletions:
            img.modify_xmp(deletions)
        changes["Xmp.lr.hierarchicalSubject"] = hierarchical
        changes["Xmp.dc.subject"] = subjects
        changes[f"Xmp.{NS_PREFIX}.WrittenKeywords"] = new_leaves
        changes[f"Xmp.{NS_PREFIX}.Reasons"] = list(content.reasons)
        changes[f"Xmp.{NS_PREFIX}.KeeperProbability"] = f"{content.keeper_probability:.4f}"
        changes[f"Xmp.{NS_PREFIX}.ModelVersion"] = content.model_version
        changes[f"Xmp.{NS_PREFIX}.RatedAt"] = (
            datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        )
        for name, value in content.details:
            changes[f"Xmp.{NS_PREFIX}.{name}"] = value
        img.modify_xmp(changes)
        # pyexiv2 writes every list as rdf:Seq; dc:subject and lr:hierarchicalSubject are
        # Bags (digiKam flattens a Seq hierarchicalSubject). Fix them in the packet.
        raw = img.read_raw_xmp()
        fixed = _drop_empty_arrays(_seq_to_bag(raw, ("dc:subject", "lr:hierarchicalSubject")))
        if fixed != raw:
            img.modify_raw_xmp(fixed)
    except SidecarError:
        raise
    except Exception as exc:
        raise SidecarError(f"{final.name}: cannot update sidecar ({exc})") from None
    finally:
        img.close()
    return SidecarResult(
        path=final,
        created=created,
        rating_written=kept_rating is None and kept_label is None,
        kept_rating=kept_rating,
        kept_label=kept_label,
    )


def _seq_to_bag(packet: str, properties: tuple[str, ...]) -> str:
    for prop in properties:
        packet = re.sub(
            rf"(<{re.escape(prop)}>\s*)<rdf:Seq>(.*?)</rdf:Seq>",
            r"\1<rdf:Bag>\2</rdf:Bag>",
            packet,
            flags=re.DOTALL,
        )
    return packet


def _drop_empty_arrays(packet: str) -> str:
    return re.sub(r"\s*<([\w.-]+:[\w.-]+)>\s*<rdf:(?:Seq|Bag|Alt)\s*/>\s*</\1>", "", packet)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # lang-alt
        value = next(iter(value.values()), None)
    if isinstance(value, list):
        value = value[0] if value else None
    text = str(value).strip() if value is not None else None
    return text or None


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
        raise SidecarError(_os_reason(exc, path)) from None
    validate_xmp(data, path.name)
    return data


def _make_temp(folder: Path, name: str, data: bytes) -> Path:
    for _ in range(10):
        tmp = folder / f".{name}.postselectd-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            # 0o666 lets the user's umask decide, as for any file they create.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise SidecarError(_os_reason(exc, folder / name)) from None
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            os.close(fd)
            os.unlink(tmp)
            raise SidecarError(_os_reason(exc, folder / name)) from None
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
        raise SidecarError(_os_reason(exc, folder)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _os_reason(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{path.name}: disk full, sidecar not written (the old one is intact)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path.parent}: folder is not writable, sidecar not written"
    return f"{path.name}: {exc.strerror or exc}"
