"""When two file names are the same name: the rule every pair and sidecar lookup uses.

Cards and the disks photographers copy them to are often case-insensitive (exFAT and FAT
cards, macOS APFS/HFS+, SMB shares), and macOS hands out names decomposed (``Café`` as
``Cafe`` + U+0301) where Linux keeps whatever bytes were written. So ``DSC_0001.NEF`` and
``dsc_0001.jpg`` are a raw+JPEG pair, and ``DSC_0001.xmp`` and ``dsc_0001.XMP`` one
sidecar, wherever the folder happens to live. Names that are not valid UTF-8 (kept by
Python as lone surrogates) compare by their bytes.

And how a photo is named in a log line (``shown_name``).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path


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
