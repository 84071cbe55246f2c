"""What a photo is, and the names it goes by: the rules every part that lists, watches
or pairs files uses, in plain Python (no decoder, no model, no watchdog, no pyexiv2), so
that asking whether a name is a photo loads none of them.

- Which names are photos (``is_candidate``, ``is_photo_path``) and which are temp files,
  sidecars or hidden.
- When two names are the same name. Cards and the disks photographers copy them to are
  often case-insensitive (exFAT and FAT cards, macOS APFS/HFS+, SMB shares), and macOS
  hands out names decomposed (``Café`` as ``Cafe`` + U+0301) where Linux keeps whatever
  bytes were written. So ``DSC_0001.NEF`` and ``dsc_0001.jpg`` are a raw+JPEG pair, and
  ``DSC_0001.xmp`` and ``dsc_0001.XMP`` one sidecar, wherever the folder happens to live.
  Names that are not valid UTF-8 (kept by Python as lone surrogates) compare by their
  bytes. And how a photo is named in a log line (``shown_name``).
- Pairs: which file of a same-name set (DSC_0001.NEF, .DNG, .JPG) owns DSC_0001.xmp,
  and so which editors' sidecars each writes (by dialects' naming rule).
- Listing folders (``find_photos`` for ``score``, ``scan`` for the daemon) and a file's identity
  (``Signature`` for the settle rule, ``fingerprint`` for its content).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from postselectd import rawmeta
from postselectd.dialects import names_shared_sidecar

log = logging.getLogger(__name__)

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
# Where a partial download or copy sits until its writer renames it.
TEMP_SUFFIXES = frozenset(
    {".part", ".partial", ".tmp", ".temp", ".crdownload", ".inprogress", ".download", ".filepart"}
)
# What ``fingerprint`` reads of a file: its first and last this many bytes.
FINGERPRINT_BYTES = 64 * 1024


# --- when two names are the same name ---------------------------------------------


def name_key(name: str) -> str:
    """What makes two names the same name: Unicode NFC, then lower case."""
    return unicodedata.normalize("NFC", name).lower()


def stem_key(name: str) -> str:
    """The key of a name without its last extension (DSC_0001 of DSC_0001.NEF)."""
    return name_key(os.path.splitext(name)[0])


def same_stem(names: list[str], stem: str) -> list[str]:
    """The names among ``names`` whose stem is ``stem`` but for case and normalisation."""
    key = name_key(stem)
    size = len(key)
    # A card folder's 6,000 names are checked for every photo rated: an ASCII name (nearly
    # all) is ruled out by its lowered head alone, as cheap as the byte-for-byte compare
    # it replaces (bench/names_speed.py); only the few left are normalised and split.
    return [
        n
        for n in names
        if (n[:size].lower() == key if n.isascii() else name_key(n).startswith(key))
        and stem_key(n) == key
    ]


def shown_name(path: Path, roots: Iterable[Path]) -> str:
    """How a log line names a photo: from the watched folder it is in, that folder's own
    name included (``wedding/ceremony/DSC_0101.NEF``). Six folders each hold a
    DSC_0101.NEF; the bare name told them apart for no one, the full path makes every line
    a screen wide. A photo in none of ``roots`` is named with its own folder."""
    best: Path | None = None
    for root in roots:
        if (root == path or root in path.parents) and (
            best is None or len(root.parts) > len(best.parts)
        ):
            best = root
    base = (best if best is not None else path.parent).parent
    return path.relative_to(base).as_posix() if base != path else path.name


# --- which names are photos ---------------------------------------------------------


def is_candidate(path: Path) -> bool:
    """A photo we rate: known suffix, not hidden, not an editor's or copier's temp file."""
    name = path.name
    if name.startswith("."):
        return False
    return path.suffix.lower() in rawmeta.PHOTO_SUFFIXES


def is_ignored_name(name: str) -> bool:
    """Temp and system files: dotfiles (AppleDouble ``._*``, rsync's ``.NAME.XXXXXX``),
    partial downloads, sidecars."""
    if name.startswith("."):
        return True
    lowered = name.lower()
    suffix = os.path.splitext(lowered)[1]
    return suffix in TEMP_SUFFIXES or suffix == ".xmp" or lowered.endswith("~")


def is_sidecar_name(name: str) -> bool:
    """An XMP sidecar's name (not a temp file's: those start with a dot)."""
    return not name.startswith(".") and name.lower().endswith(".xmp")


def is_photo_path(path: Path, root: Path | None = None) -> bool:
    """A name we would rate (``is_candidate``: no temp file, sidecar or dotfile is one), in
    a folder that is not hidden (below ``root``)."""
    if not is_candidate(path):
        return False
    if root is not None:
        try:
            parts = path.relative_to(root).parts[:-1]
        except ValueError:
            parts = ()
        if any(part.startswith(".") for part in parts):
            return False
    return True


# --- pairs: the files of one frame ---------------------------------------------------


def same_stem_names(path: Path, listing: list[str] | None = None) -> list[str]:
    """Names in the file's folder that share its stem (DSC_0001.NEF, dsc_0001.jpg, ...).

    ``listing``: the folder's names, when the caller has just listed it.
    """
    if listing is not None:
        names = listing
    else:
        try:
            names = os.listdir(path.parent)
        except OSError:
            return []
    # Case and Unicode form aside (name_key): on an exFAT card or a Mac, DSC_0001.NEF and
    # dsc_0001.jpg would write one DSC_0001.xmp.
    return same_stem(names, path.stem)


def has_raw_sibling(path: Path, siblings: list[str] | None = None) -> bool:
    """DSC_0001.JPG next to DSC_0001.NEF: the raw is rated, the JPEG would share its sidecar.

    ``siblings``: the folder's names with the same stem, when the caller listed the folder
    once already (a card folder of 3,000 frames must not be listed 3,000 times).
    """
    if path.suffix.lower() not in JPEG_SUFFIXES | {".tif", ".tiff"}:
        return False
    names = same_stem_names(path) if siblings is None else siblings
    return any(n != path.name and Path(n).suffix.lower() in rawmeta.RAW_SUFFIXES for n in names)


def _sidecar_rank(path: Path) -> int:
    suffix = path.suffix.lower()
    if suffix == ".dng":
        return 1  # often converted from the camera's raw beside it
    if suffix in rawmeta.RAW_SUFFIXES:
        return 0
    if suffix in (".tif", ".tiff"):
        return 2
    # An iPhone's IMG_0001.HEIC beside its IMG_0001.JPG copy: Lightroom reads IMG_0001.xmp
    # for the HEIC only (it reads a JPEG's own embedded XMP), so the HEIC keeps the name.
    return 3 if suffix in HEIF_SUFFIXES else 4


def shared_sidecar_owner(path: Path, siblings: list[str] | None = None) -> Path:
    """Which file of a same-name set (DSC_0001.NEF, .DNG, .JPG) writes DSC_0001.xmp.

    Two files must never write one sidecar: the camera's raw wins, then a DNG, then a
    TIFF, then a JPEG; the others are left alone for profiles that use that name.
    """
    names = same_stem_names(path) if siblings is None else siblings
    owners = [path] + [
        path.parent / n for n in names if n != path.name and is_candidate(path.parent / n)
    ]
    return min(owners, key=lambda p: (_sidecar_rank(p), p.name))


def sidecar_profiles_for(
    path: Path, profiles: Iterable[str], siblings: list[str] | None = None
) -> list[str]:
    """The profiles this file writes: none whose DSC_0001.xmp belongs to a sibling."""
    profiles = list(profiles)
    if (
        any(names_shared_sidecar(p) for p in profiles)
        and shared_sidecar_owner(path, siblings) != path
    ):
        return [p for p in profiles if not names_shared_sidecar(p)]
    return profiles


def left_alone_reason(
    path: Path, profiles: Iterable[str], siblings: list[str] | None = None
) -> str | None:
    """Why this file writes no sidecar at all (every one it would write is a sibling's:
    DSC_0001.DNG beside DSC_0001.NEF under the lightroom profile), or None."""
    if sidecar_profiles_for(path, profiles, siblings):
        return None
    owner = shared_sidecar_owner(path, siblings)
    return (
        f"{path.name}: shares {owner.with_suffix('.xmp').name} with {owner.name}, "
        "which is rated instead; left alone"
    )


# --- listing folders -----------------------------------------------------------------


_LINKS_REPORTED_MAX = 1024
_links_reported: set[tuple[str, str]] = set()


def skip_linked_folder(link: Path, inside: Iterable[Path]) -> None:
    """A symlinked folder met while listing photos, which is never followed.

    Photos are found, and their sidecars written, where they really are and only inside
    the folders the config (or the command line) names: a link to one of those is rated
    there, under its real name, never twice; a link leading out of them is said once.
    """
    target = os.path.realpath(link)
    for folder in inside:
        real = os.path.realpath(folder)
        if target == real or target.startswith(real.rstrip(os.sep) + os.sep):
            log.debug("%s: a link to %s, which is rated there", link, target)
            return
    key = (str(link), target)
    if key in _links_reported:
        return
    if len(_links_reported) >= _LINKS_REPORTED_MAX:
        _links_reported.clear()
    _links_reported.add(key)
    log.warning(
        "%s: a link to %s, outside the folders to rate; not followed, so no sidecar is "
        "written there (name that folder itself to have it rated)",
        link,
        target,
    )


def find_photos(
    paths: Iterable[Path],
    profiles: Iterable[str] | None = None,
    passed_over: Counter[str] | None = None,
    videos: bool = False,
) -> Iterator[Path]:
    """Photos under the given files and folders, in name order.

    Symlinked folders are not followed (``skip_linked_folder``); a symlinked photo is,
    and its sidecar goes beside the link. With ``profiles``, a file whose every sidecar
    would be a sibling's (DSC_0001.DNG next to DSC_0001.NEF with the lightroom profile)
    is not listed. ``passed_over`` counts, by suffix (".gif"), the pictures and videos
    found in the folders that are not a type postselectd rates
    (rawmeta.UNRATED_IMAGE_SUFFIXES, rawmeta.VIDEO_SUFFIXES).

    ``videos``: list video files too, so that ``score`` can name each as not a photo
    (the preview stage says so from its bytes), except a Live Photo's motion half
    (IMG_0001.MOV beside IMG_0001.HEIC), which goes with its photo.
    """
    profiles = list(profiles) if profiles is not None else None
    paths = [Path(p) for p in paths]
    seen: set[tuple[int, int]] = set()  # a folder given twice (A and A/sub) is listed once
    for root in paths:
        if root.is_file():
            yield root
            continue
        for folder, dirs, files in os.walk(root):
            try:
                st = os.stat(folder)
            except OSError:
                dirs[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
            for name in linked:
                if not name.startswith("."):
                    skip_linked_folder(Path(folder) / name, paths)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
            by_stem: dict[str, list[str]] = {}
            for name in files:
                by_stem.setdefault(stem_key(name), []).append(name)
            for name in sorted(files):
                path = Path(folder) / name
                siblings = by_stem[stem_key(name)]
                if not is_candidate(path):
                    suffix = path.suffix.lower()
                    if name.startswith("."):
                        continue
                    if suffix in rawmeta.VIDEO_SUFFIXES and not _motion_of_a_photo(path, siblings):
                        if videos:
                            yield path
                        elif passed_over is not None:
                            passed_over[suffix] += 1
                    elif passed_over is not None and suffix in rawmeta.UNRATED_IMAGE_SUFFIXES:
                        passed_over[suffix] += 1
                    continue
                if has_raw_sibling(path, siblings):
                    continue
                if profiles is not None and not sidecar_profiles_for(path, profiles, siblings):
                    continue
                yield path


def _motion_of_a_photo(video: Path, siblings: list[str]) -> bool:
    """IMG_0001.MOV beside IMG_0001.HEIC (or .JPG): the moving half of a Live Photo."""
    return any(n != video.name and is_candidate(video.parent / n) for n in siblings)


def passed_over_text(passed_over: Counter[str]) -> str:
    """``find_photos``'s ``passed_over`` in words: "3 .gif files, 1 .mov file, which
    postselectd does not rate"."""
    kinds = ", ".join(
        f"{count} {suffix} file{'' if count == 1 else 's'}"
        for suffix, count in sorted(passed_over.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return f"{kinds}, which postselectd does not rate"


def scan(
    root: Path,
    recursive: bool,
    stop: threading.Event | None = None,
    inside: Iterable[Path] = (),
) -> Iterator[tuple[Path, os.stat_result | None]]:
    """Photos under ``root`` with their stat; hidden folders skipped. A photo that is
    there but cannot be looked at (EIO on a failing card, ESTALE on NFS) comes with None,
    so that it is reported with its reason, never passed over without a word.

    Symlinked folders are not followed, as the observers do not follow them: a link to a
    folder ``inside`` the watched folders (``root`` when none are given) is rated there,
    under its real path; one leading outside is said once and left alone.
    """
    inside = list(inside) or [root]
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        if stop is not None and stop.is_set():
            return
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir():
                    if recursive and not entry.name.startswith("."):
                        if entry.is_symlink():
                            skip_linked_folder(Path(entry.path), inside)
                        else:
                            subfolders.append(Path(entry.path))
                    continue
                if not is_photo_path(Path(entry.path)):
                    continue
            except OSError:
                continue
            try:
                st = entry.stat()
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone meanwhile
            except OSError:
                yield Path(entry.path), None
                continue
            if stat.S_ISREG(st.st_mode):
                yield Path(entry.path), st
        stack.extend(reversed(subfolders))


# --- a file's identity ---------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """What the settle rule compares: a file is complete when this stops changing."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Signature:
        return cls(st.st_size, st.st_mtime_ns)


def fingerprint(path: Path, size: int | None = None) -> str:
    """Content identity that never reads a whole raw: size + first and last 64 KB.

    Two different frames differ in their first 64 KB (capture time, preview); a file cut
    short differs in size. Cheap enough to run in the daemon's main thread.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size is None:
            size = os.fstat(f.fileno()).st_size
        digest.update(str(size).encode())
        digest.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(f.read(FINGERPRINT_BYTES))
    return digest.hexdigest()
