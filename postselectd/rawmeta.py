"""Container sniffing, capture metadata and embedded-preview discovery for photos and raws.

Why this module exists
----------------------
The preview stage needs three things that rawpy/LibRaw cannot give without unpacking sensor data
(which fails on truncated, pruned or unsupported raws):

* the file's real type from its bytes, not its extension (a JPEG named ``.NEF`` is a JPEG, a
  WebP saved from the web as ``.jpg`` is a WebP, a ``.MOV`` is a video);
* capture metadata: make, model, EXIF Orientation and DateTimeOriginal with sub-second precision
  (bursts are grouped at sub-second resolution);
* every embedded JPEG preview with its real pixel size, so the caller can decode the *smallest one
  that is large enough*.  JPEG decode cost scales with the preview's byte size, and a D7100 NEF
  carries 640x424, 1620x1080 and 6000x4000 JPEGs; LibRaw only hands out the largest.

It also recovers previews from files LibRaw refuses (a truncated CR2 whose IFD0 still points at a
complete JPEG; CR3s whose PRVW box LibRaw does not look for).

Safety model
------------
Input is untrusted and may be fuzzed.  Everything is read with ``os.pread`` on a read-only,
non-blocking descriptor (a FIFO must not hang us), only the few KB that are needed, never the whole
file and never mmap (a shrinking file must not SIGBUS us).  Every offset and length is checked
against the file size before it is read, IFD chains and SubIFD recursion are bounded (visited set,
depth, IFD count, entries per IFD), and no allocation is driven by an unchecked count.

A broken *essential* structure (the TIFF header or IFD0, a CR3 without metadata, an empty file)
ends in :class:`ContainerError` with a reason a photographer can read.  A broken *secondary*
structure (an EXIF IFD, a SubIFD, a preview whose bytes lie past EOF) is skipped and the rest is
returned: a partial result is more useful to a culler than an error.  A preview skipped because
its bytes lie past EOF is still named (``previews_cut``): the file may be still being written.
No other exception type ever leaves :func:`read_container`.

Stdlib only (struct, os, stat, datetime, dataclasses).
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = [
    "HEAD_BYTES",
    "PHONE_AND_WEB_SUFFIXES",
    "PHOTO_SUFFIXES",
    "RAW_SUFFIXES",
    "UNRATED_IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ContainerError",
    "ContainerInfo",
    "EmbeddedJpeg",
    "expected_kind",
    "read_container",
    "sniff",
]


class ContainerError(Exception):
    """The file's structure is unreadable; str(e) is the user-facing reason."""


@dataclass(frozen=True)
class EmbeddedJpeg:
    """One JPEG stored inside the file, validated: it starts with FF D8, lies within the file and
    has a baseline/extended/progressive SOF from which width and height were read."""

    offset: int  # absolute file offset of the FF D8
    length: int
    width: int  # from the JPEG SOF
    height: int
    # Where the file keeps it: TIFF raws give the IFD path ("IFD0", "IFD1", "SubIFD0",
    # "SubIFD2", "MakerNote PreviewIFD", "RW2 JpgFromRaw"); also "CR3 THMB", "CR3 PRVW",
    # "RAF", "RAF EXIF IFD1", "CRW JpgFromRaw", "CRW Thumbnail", and "JPEG" for a JPEG file.
    where: str


@dataclass(frozen=True)
class ContainerInfo:
    """What the bytes of one file say about it.

    ``kind`` is one of "jpeg", "tiff" (a TIFF-based raw), "cr3", "raf", "crw", "png",
    "tiff-image" (a TIFF with no raw indicator at all: no SubIFDs, no DNGVersion, no CFA or
    LinearRaw photometric, no raw-only compression, no raw-only magic) or "unknown".

    Phone and web formats: "webp", "heif" (HEIC/HEIF, ``format_name`` "HEIC" or "HEIF") and
    "avif". Their EXIF gives make, model and capture time. For "heif" and "avif" ``orientation``
    is always 1: the HEIF standard makes the EXIF tag informational, the container's own
    irot/imir properties turn the image, and the decoder reports those. Files that are
    recognised but are not photos: "video" (``format_name`` "QuickTime MOV", "MP4", "AVI", ...)
    and "other" (``format_name`` says what they are: "PDF document", "GIF image", ...).
    """

    kind: str
    format_name: str
    make: str | None
    model: str | None
    orientation: int  # EXIF 1..8; 1 when absent or out of range
    capture_time: datetime | None  # naive; DateTimeOriginal + SubSecTimeOriginal
    previews: tuple[EmbeddedJpeg, ...]  # sorted by width*height ascending
    # The embedded previews the file's own structure declares whose bytes run past its end
    # (their ``where``): a file still being written, or one cut short. Only previews: a raw
    # whose sensor data is cut off (the sample NEF heads) but whose previews are whole has
    # none here.
    previews_cut: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Suffixes
# --------------------------------------------------------------------------------------------

RAW_SUFFIXES: frozenset[str] = frozenset(
    {
        ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".dng", ".raf",
        ".orf", ".rw2", ".rwl", ".pef", ".srw", ".3fr", ".fff", ".erf", ".kdc", ".dcr",
        ".k25", ".mrw", ".x3f", ".iiq", ".mef", ".mos", ".gpr", ".raw",
    }
)  # fmt: skip
# Phones write HEIC (iPhone) or HEIF (.hif: Canon and Sony cameras); clients and the web send
# WebP, AVIF and PNG.
PHONE_AND_WEB_SUFFIXES: frozenset[str] = frozenset(
    {".heic", ".heif", ".hif", ".webp", ".avif", ".png"}
)
PHOTO_SUFFIXES: frozenset[str] = (
    RAW_SUFFIXES | {".jpg", ".jpeg", ".tif", ".tiff"} | PHONE_AND_WEB_SUFFIXES
)
# Pictures postselectd does not rate (no camera writes them as its original), counted where
# a command passes them over so it can say so instead of finding "no photos" in silence.
UNRATED_IMAGE_SUFFIXES: frozenset[str] = frozenset({".gif", ".bmp", ".jxl"})
# Videos a camera or phone writes beside its photos (a Live Photo's .MOV among them).
VIDEO_SUFFIXES: frozenset[str] = frozenset(
    {".mov", ".mp4", ".m4v", ".3gp", ".avi", ".mts", ".m2ts", ".mkv", ".webm"}
)

# Raw suffixes whose files are always TIFF-structured.  Suffixes that are not listed here or in
# _SUFFIX_KIND (.kdc: some Kodak KDCs are not TIFF; .raw: several unrelated formats; .mrw, .x3f,
# .iiq: own containers) map to None: "cannot tell from the name, do not flag a mismatch".
_TIFF_RAW_SUFFIXES = frozenset(
    {
        ".nef", ".nrw", ".cr2", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2", ".rwl",
        ".pef", ".srw", ".3fr", ".fff", ".erf", ".dcr", ".k25", ".mef", ".mos", ".gpr",
    }
)  # fmt: skip
_SUFFIX_KIND = {
    ".cr3": "cr3",
    ".raf": "raf",
    ".crw": "crw",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".tif": "tiff-image",
    ".tiff": "tiff-image",
    ".webp": "webp",
    ".heic": "heif",
    ".heif": "heif",
    ".hif": "heif",
    ".avif": "avif",
}


def expected_kind(suffix: str) -> str | None:
    """The :attr:`ContainerInfo.kind` a file with this suffix should have, or None when the
    suffix says nothing reliable.

    ``.tif``/``.tiff`` map to "tiff-image" (a plain TIFF), TIFF-based raw suffixes to "tiff".
    Note that :func:`sniff` cannot tell the two TIFF flavours apart from 32 bytes and says "tiff"
    for both; only :func:`read_container` refines to "tiff-image".  Case-insensitive; the leading
    dot is optional.
    """
    s = suffix.lower()
    if s and not s.startswith("."):
        s = "." + s
    if s in _TIFF_RAW_SUFFIXES:
        return "tiff"
    return _SUFFIX_KIND.get(s)


# --------------------------------------------------------------------------------------------
# Limits (fuzz and hang guards)
# --------------------------------------------------------------------------------------------

_MAX_DEPTH = 4  # IFD0 -> EXIF -> MakerNote -> PreviewIFD
_MAX_IFDS = 64  # IFDs visited per file, all TIFF structures together
_MAX_ENTRIES = 1000  # entries per IFD
_MAX_CHAIN = 16  # IFD0 -> IFD1 -> ... next-pointer chain
_MAX_SUBIFDS = 16  # SubIFD pointers followed per IFD
_MAX_TEXT = 256  # bytes read for a string tag
_MAX_JPEG_SEGMENTS = 256  # markers scanned while looking for the SOF
_MAX_BOXES = 512  # ISO BMFF boxes per level
_MAX_CIFF_RECORDS = 1000
_MAX_CIFF_HEAPS = 64
_MIN_PHOTO_BYTES = 32

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_RAF_MAGIC = b"FUJIFILMCCD-RAW "
_CR3_META_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
_CR3_PRVW_UUID = bytes.fromhex("eaf42b5e1c984b88b9fbb7dc406e4d16")

# TIFF field type -> (size in bytes, struct code or "" when not an integer)
_TIFF_TYPES: dict[int, tuple[int, str]] = {
    1: (1, "B"), 2: (1, ""), 3: (2, "H"), 4: (4, "I"), 5: (8, ""), 6: (1, "b"), 7: (1, ""),
    8: (2, "h"), 9: (4, "i"), 10: (8, ""), 11: (4, ""), 12: (8, ""), 13: (4, "I"),
}  # fmt: skip

# Compression codes only raws use (Nikon NEF, Sony ARW, Panasonic, Kodak, Pentax, ...).
_RAW_COMPRESSIONS = frozenset({32767, 32769, 32770, 32772, 32867, 34316, 34713, 65000, 65535})
_RAW_PHOTOMETRICS = frozenset({32803, 34892})  # CFA, LinearRaw
_RAW_ONLY_TAGS = frozenset({0x014A, 0xC612, 0xC634, 0x7000, 0x8290})  # SubIFDs, DNGVersion, ...

# SOF markers Pillow/libjpeg decode for previews: baseline, extended, progressive (Huffman).
_SOF_OK = frozenset({0xC0, 0xC1, 0xC2})
_SOF_OTHER = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})

_TRUNCATED = "(file truncated?)"


# --------------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------------


def sniff(head: bytes) -> str:
    """The kind from the first bytes of a file, same vocabulary as :attr:`ContainerInfo.kind`.

    32 bytes tell every photo format; ISO BMFF files (HEIF, AVIF, MOV, MP4) list more brands
    after that, and an MPEG transport stream shows only at byte 188, so give up to
    ``HEAD_BYTES`` when there are. Every TIFF-structured head (classic TIFF, CR2, ORF, RW2)
    gives "tiff": whether a plain TIFF is a raw needs its IFDs, which only
    :func:`read_container` reads.
    """
    return _identify(head)[0]


HEAD_BYTES = 256  # what read_container gives sniff

# ISO BMFF brands (ftyp major and compatible brands).  An image brand anywhere wins: a HEIF
# says "mif1" and "heic", an AVIF "avif" and "mif1".
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis"})
_HEIF_BRANDS = _HEIC_BRANDS | {b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"mif2", b"msf1"}
_VIDEO_BRANDS = {
    b"qt  ": "QuickTime MOV",
    b"M4V ": "M4V",
    b"M4VH": "M4V",
    b"M4VP": "M4V",
    b"3gp4": "3GP",
    b"3gp5": "3GP",
    b"3gp6": "3GP",
    b"3gp7": "3GP",
    b"3g2a": "3G2",
    b"XAVC": "MP4",  # Sony cameras
    b"MSNV": "MP4",  # Sony
    b"isom": "MP4",
    b"iso2": "MP4",
    b"iso4": "MP4",
    b"iso5": "MP4",
    b"iso6": "MP4",
    b"mp41": "MP4",
    b"mp42": "MP4",
    b"avc1": "MP4",
    b"dash": "MP4",
    b"f4v ": "F4V",
}
_BMP_HEADER_SIZES = frozenset(struct.pack("<I", n) for n in (12, 40, 52, 56, 64, 108, 124))
# Atoms a QuickTime file from before ftyp existed starts with.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})

# Recognised files that are not photos: (magic, offset, what it is).
_OTHER_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF-", 0, "PDF document"),
    (b"PK\x03\x04", 0, "ZIP archive"),
    (b"\x1f\x8b", 0, "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "7-Zip archive"),
    (b"Rar!\x1a\x07", 0, "RAR archive"),
    (b"GIF87a", 0, "GIF image"),
    (b"GIF89a", 0, "GIF image"),
    (b"\xff\x0a", 0, "JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "JPEG 2000 image"),
    (b"8BPS", 0, "Photoshop PSD image"),
    (b"\x76\x2f\x31\x01", 0, "OpenEXR image"),
    (b"ID3", 0, "MP3 audio file"),
    (b"fLaC", 0, "FLAC audio file"),
    (b"OggS", 0, "Ogg media file"),
    (b"<?xpacket", 0, "XMP sidecar"),
    (b"<x:xmpmeta", 0, "XMP sidecar"),
    (b"\x7fELF", 0, "program (ELF)"),
    (b"SQLite format 3\x00", 0, "SQLite database"),
)


def _identify(head: bytes) -> tuple[str, str]:
    """(kind, format_name) from the first bytes; see :func:`sniff`."""
    h = bytes(head[:HEAD_BYTES])
    if h[:3] == b"\xff\xd8\xff":
        return "jpeg", "JPEG"
    if h[:8] == _PNG_MAGIC:
        return "png", "PNG"
    if h[:16] == _RAF_MAGIC:
        return "raf", "RAF"
    if h[:2] in (b"II", b"MM") and h[6:14] == b"HEAPCCDR":
        return "crw", "CRW"
    if h[:4] in (b"II*\x00", b"MM\x00*", b"IIRO", b"IIRS", b"MMOR", b"IIU\x00"):
        return "tiff", "TIFF"
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return "webp", "WebP"
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return "video", "AVI"
    if h[:4] == b"\x1a\x45\xdf\xa3":
        return "video", "WebM" if b"webm" in h[:64] else "Matroska MKV"
    if h[4:8] == b"ftyp":
        return _identify_bmff(h)
    if h[4:8] in _QUICKTIME_ATOMS:
        return "video", "QuickTime MOV"
    if _is_transport_stream(h):
        return "video", "MPEG transport stream (AVCHD MTS)"
    if h[:4] == b"\x00MRM":
        return "unknown", "MRW"
    if h[:4] == b"FOVb":
        return "unknown", "X3F"
    if h[:2] == b"BM" and h[14:18] in _BMP_HEADER_SIZES:
        return "other", "BMP image"
    for magic, at, name in _OTHER_MAGIC:
        if h[at : at + len(magic)] == magic:
            return "other", name
    if h[:5] == b"<?xml":
        return "other", "XML document"
    if _looks_like_text(h):
        return "other", "text file"
    return "unknown", "unknown"


def _identify_bmff(h: bytes) -> tuple[str, str]:
    """An ISO BMFF file by the brands of its ftyp box (as far as ``h`` holds them)."""
    (size,) = struct.unpack(">I", h[:4])
    major = h[8:12]
    brands = [major] + [h[i : i + 4] for i in range(16, min(size, len(h)) - 3, 4)]
    if major == b"crx ":
        return "cr3", "CR3"
    if any(b in _AVIF_BRANDS for b in brands):
        return "avif", "AVIF"
    if any(b in _HEIF_BRANDS for b in brands):
        return "heif", "HEIC" if any(b in _HEIC_BRANDS for b in brands) else "HEIF"
    for brand in brands:
        if brand in _VIDEO_BRANDS:
            return "video", _VIDEO_BRANDS[brand]
    return "unknown", "ISO BMFF " + major.decode("ascii", "replace").strip()


def _is_transport_stream(h: bytes) -> bool:
    """MPEG-TS (188-byte packets) or M2TS/AVCHD (192: a 4-byte time code first)."""
    return (h[:1] == b"\x47" and h[188:189] == b"\x47") or (
        h[4:5] == b"\x47" and h[196:197] == b"\x47"
    )


def _looks_like_text(h: bytes) -> bool:
    if len(h) < 8 or b"\x00" in h:
        return False
    try:
        text = h.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(h) - 3:  # not only a character cut at the end of the head
            return False
        text = h[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n\f" for c in text)


# --------------------------------------------------------------------------------------------
# Bounded reader
# --------------------------------------------------------------------------------------------


class _Reader:
    """pread on a descriptor with every read checked against the size seen at open time."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, offset: int, n: int, what: str = "data") -> bytes:
        """Exactly n bytes at offset, or ContainerError when they are not all in the file."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ContainerError(f"{what} lies past the end of the file {_TRUNCATED}")
        if n == 0:
            return b""
        data = os.pread(self.fd, n, offset)
        if len(data) != n:
            raise ContainerError("file got shorter while being read (still being copied?)")
        return data

    def read_upto(self, offset: int, n: int) -> bytes:
        """Up to n bytes at offset, clipped at the end of the file (for headers)."""
        n = max(0, min(n, self.size - offset))
        return self.read(offset, n) if n else b""


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------


@dataclass
class _JpegInfo:
    width: int
    height: int
    exif: tuple[int, int] | None  # absolute [start, end) of the TIFF inside APP1 "Exif\0\0"


def _jpeg_info(r: _Reader, offset: int, length: int, want_exif: bool = False) -> _JpegInfo | None:
    """Width/height from the SOF of the JPEG at [offset, offset+length), or None when it is not a
    decodable JPEG that fits in the file.  Scans markers from the start, bounded; tags that claim a
    preview size are not trusted."""
    end = offset + length
    if offset < 0 or length < 4 or end > r.size:
        return None
    if r.read(offset, 2) != b"\xff\xd8":
        return None
    exif: tuple[int, int] | None = None
    p = offset + 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        if p + 4 > end:
            return None
        b = r.read(p, 4)
        if b[0] != 0xFF:
            return None
        marker = b[1]
        if marker == 0xFF:  # fill byte
            p += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            p += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA) or marker in _SOF_OTHER:
            return None  # no usable frame header before the scan / lossless or arithmetic
        seglen = (b[2] << 8) | b[3]
        if seglen < 2 or p + 2 + seglen > end:
            return None
        if marker in _SOF_OK:
            if seglen < 8:
                return None
            sof = r.read(p + 4, 5)
            height, width = struct.unpack(">HH", sof[1:5])
            if width == 0 or height == 0:
                return None
            return _JpegInfo(width, height, exif)
        if want_exif and exif is None and marker == 0xE1 and seglen >= 16:
            if r.read(p + 4, 6) == b"Exif\x00\x00":
                exif = (p + 10, p + 2 + seglen)
        p += 2 + seglen
    return None


# --------------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    typ: int
    count: int
    data_off: int  # absolute offset of the value, -1 when the value lies outside the limit
    inline: bytes | None  # the value when it fits in the 4-byte slot


class _Tiff:
    """One TIFF structure: a header at ``base`` whose offsets are relative to ``base``."""

    def __init__(self, r: _Reader, base: int, limit: int, what: str = "TIFF") -> None:
        self.r = r
        self.base = base
        self.limit = min(limit, r.size)
        self.what = what
        if base < 0 or base + 8 > self.limit:
            raise ContainerError(f"{what} header lies past the end of the file {_TRUNCATED}")
        hdr = r.read(base, 8, f"{what} header")
        if hdr[:2] == b"II":
            self.e = "<"
        elif hdr[:2] == b"MM":
            self.e = ">"
        else:
            raise ContainerError(f"{what} header has no byte-order mark (corrupt)")
        self.magic, self.ifd0 = struct.unpack(self.e + "HI", hdr[2:8])
        if self.magic not in (42, 0x4F52, 0x5352, 0x55):
            raise ContainerError(f"{what} header has a bad magic number (corrupt)")

    def read_ifd(self, rel: int, name: str) -> tuple[dict[int, _Entry], int]:
        """The entries of the IFD at ``rel`` (first occurrence of a tag wins) and the next-IFD
        offset (0 when absent or unreadable)."""
        a = self.base + rel
        if rel < 8 or a + 2 > self.limit:
            raise ContainerError(f"{self.what} {name} offset points past end of file {_TRUNCATED}")
        (n,) = struct.unpack(self.e + "H", self.r.read(a, 2))
        if n == 0 or n > _MAX_ENTRIES:
            raise ContainerError(f"{self.what} {name} claims {n} entries (corrupt)")
        need = 2 + 12 * n
        if a + need > self.limit:
            raise ContainerError(f"{self.what} {name} runs past the end of the file {_TRUNCATED}")
        has_next = a + need + 4 <= self.limit
        block = self.r.read(a, need + (4 if has_next else 0))
        entries: dict[int, _Entry] = {}
        for i in range(n):
            p = 2 + 12 * i
            tag, typ, count = struct.unpack(self.e + "HHI", block[p : p + 8])
            spec = _TIFF_TYPES.get(typ)
            if spec is None or tag in entries:
                continue
            nbytes = spec[0] * count
            if nbytes <= 4:
                entries[tag] = _Entry(typ, count, a + p + 8, block[p + 8 : p + 8 + nbytes])
            else:
                (off,) = struct.unpack(self.e + "I", block[p + 8 : p + 12])
                data_off = self.base + off
                if data_off + nbytes > self.limit:
                    data_off = -1
                entries[tag] = _Entry(typ, count, data_off, None)
        nxt = struct.unpack(self.e + "I", block[need : need + 4])[0] if has_next else 0
        return entries, nxt

    def _raw(self, e: _Entry, nbytes: int) -> bytes | None:
        if e.inline is not None:
            return e.inline[:nbytes]
        if e.data_off < 0:
            return None
        return self.r.read(e.data_off, nbytes)

    def ints(self, e: _Entry | None, maxn: int = 1) -> list[int]:
        """Up to maxn integer values of an integer-typed entry ([] when unreadable)."""
        if e is None:
            return []
        size, code = _TIFF_TYPES[e.typ]
        if not code:
            return []
        n = min(e.count, maxn)
        raw = self._raw(e, n * size)
        if raw is None or len(raw) < n * size:
            return []
        return list(struct.unpack(self.e + code * n, raw))

    def int1(self, e: _Entry | None) -> int | None:
        v = self.ints(e, 1)
        return v[0] if v else None

    def text(self, e: _Entry | None) -> str | None:
        """A string tag, cut at the first NUL, stripped; None when empty or unreadable."""
        if e is None or e.typ not in (1, 2, 7):
            return None
        raw = self._raw(e, min(e.count, _MAX_TEXT))
        if not raw:
            return None
        s = raw.split(b"\x00", 1)[0].decode("utf-8", "replace").strip()
        return s or None


@dataclass
class _Meta:
    """Metadata gathered while walking; first value found wins."""

    make: str | None = None
    model: str | None = None
    unique_model: str | None = None
    orientation: int | None = None
    times: dict[str, str] = field(default_factory=dict)  # "dto","dto_sub","dtd",... -> text
    cands: list[tuple[int, int, str]] = field(default_factory=list)  # (abs offset, length, where)
    cut: list[str] = field(default_factory=list)  # declared previews whose offset is past EOF
    raw_hint: bool = False
    dng: bool = False

    def set_time(self, key: str, value: str | None) -> None:
        if value is not None and key not in self.times:
            self.times[key] = value


class _TiffWalker:
    """Walks IFD0's chain, SubIFDs, the EXIF IFD and a Nikon MakerNote's PreviewIFD, bounded by a
    visited set, a depth limit and an IFD budget shared by every TIFF structure of the file."""

    def __init__(
        self, r: _Reader, meta: _Meta, collect_previews: bool = True, prefix: str = ""
    ) -> None:
        self.r = r
        self.meta = meta
        self.collect = collect_previews
        self.prefix = prefix  # prepended to ``where`` (e.g. "RAF EXIF " for the RAF's thumbnail)
        self.visited: set[int] = set()
        self.budget = _MAX_IFDS

    def walk_main(self, t: _Tiff) -> None:
        """IFD0 and its next-pointer chain.  IFD0 must be readable; later IFDs are optional."""
        rel = t.ifd0
        for idx in range(_MAX_CHAIN):
            if rel == 0:
                break
            try:
                nxt = self._ifd(t, rel, f"IFD{idx}", 0, "image")
            except ContainerError:
                if idx == 0:
                    raise
                break
            if nxt is None:
                break
            rel = nxt

    def walk_exif_only(self, t: _Tiff) -> None:
        """A TIFF whose IFD0 *is* an EXIF IFD (CR3's CMT2)."""
        self._ifd(t, t.ifd0, "EXIF", 1, "exif")

    def _optional(self, t: _Tiff, rel: int, name: str, depth: int, role: str) -> None:
        try:
            self._ifd(t, rel, name, depth, role)
        except ContainerError:
            pass  # a secondary IFD that is broken is left out: partial result

    def _ifd(self, t: _Tiff, rel: int, name: str, depth: int, role: str) -> int | None:
        if depth > _MAX_DEPTH or self.budget <= 0:
            return None
        key = t.base + rel
        if key in self.visited:
            return None
        self.visited.add(key)
        self.budget -= 1
        entries, nxt = t.read_ifd(rel, name)
        if role == "image":
            self._image_ifd(t, entries, name, depth)
        elif role == "exif":
            self._exif_ifd(t, entries, depth)
        elif role == "makernote":
            off = t.int1(entries.get(0x0011))
            if off:
                self._optional(t, off, "MakerNote PreviewIFD", depth + 1, "preview")
        elif role == "preview":
            self._jpeg_interchange(t, entries, name)
        return nxt

    def _jpeg_interchange(self, t: _Tiff, entries: dict[int, _Entry], where: str) -> None:
        off = t.int1(entries.get(0x0201))
        ln = t.int1(entries.get(0x0202))
        if self.collect and off and ln:
            self.meta.cands.append((t.base + off, ln, self.prefix + where))

    def _image_ifd(self, t: _Tiff, entries: dict[int, _Entry], name: str, depth: int) -> None:
        m = self.meta
        compression = t.int1(entries.get(0x0103))
        photometric = t.int1(entries.get(0x0106))
        if (
            compression in _RAW_COMPRESSIONS
            or photometric in _RAW_PHOTOMETRICS
            or any(tag in entries for tag in _RAW_ONLY_TAGS)
        ):
            m.raw_hint = True
        if name == "IFD0":
            m.make = m.make or t.text(entries.get(0x010F))
            m.model = m.model or t.text(entries.get(0x0110))
            if m.orientation is None:
                m.orientation = t.int1(entries.get(0x0112))
            m.set_time("dt", t.text(entries.get(0x0132)))
            m.dng = m.dng or 0xC612 in entries
            m.unique_model = m.unique_model or t.text(entries.get(0xC614))
            if t.magic == 0x55 and self.collect:  # RW2: tag 0x2E is a whole JPEG (JpgFromRaw)
                e = entries.get(0x002E)
                if e is not None and e.data_off >= 0 and e.inline is None:
                    m.cands.append((e.data_off, e.count, "RW2 JpgFromRaw"))
                elif e is not None and e.inline is None:
                    m.cut.append("RW2 JpgFromRaw")  # its bytes lie past the end of the file
        if self.collect:
            self._jpeg_interchange(t, entries, name)
            strips = entries.get(0x0111)
            counts = entries.get(0x0117)
            if (
                compression in (6, 7)
                and strips
                and counts
                and strips.count == 1
                and not _is_sensor_data(t, entries, photometric)
            ):
                off, ln = t.int1(strips), t.int1(counts)
                if off and ln:
                    m.cands.append((t.base + off, ln, self.prefix + name))
        exif = t.int1(entries.get(0x8769))
        if exif:
            self._optional(t, exif, "EXIF", depth + 1, "exif")
        for i, sub in enumerate(t.ints(entries.get(0x014A), _MAX_SUBIFDS)):
            sub_name = f"SubIFD{i}" if name == "IFD0" else f"{name} SubIFD{i}"
            if sub:
                self._optional(t, sub, sub_name, depth + 1, "image")

    def _exif_ifd(self, t: _Tiff, entries: dict[int, _Entry], depth: int) -> None:
        m = self.meta
        for key, tag in (
            ("dto", 0x9003),
            ("dto_sub", 0x9291),
            ("dtd", 0x9004),
            ("dtd_sub", 0x9292),
            ("dt_sub", 0x9290),
        ):
            m.set_time(key, t.text(entries.get(tag)))
        mn = entries.get(0x927C)
        if not self.collect or mn is None or mn.data_off < 0 or mn.count < 18:
            return
        hdr = self.r.read(mn.data_off, 18)
        if hdr[:6] == b"Nikon\x00" and hdr[10:12] in (b"II", b"MM"):
            try:
                mt = _Tiff(self.r, mn.data_off + 10, self.r.size, "Nikon MakerNote")
            except ContainerError:
                return
            self._optional(mt, mt.ifd0, "MakerNote", depth + 1, "makernote")


def _is_sensor_data(t: _Tiff, entries: dict[int, _Entry], photometric: int | None) -> bool:
    """A JPEG-compressed strip that holds the sensor data (a CR2's IFD3, a DNG's lossless
    JPEG), never a preview: CFA or LinearRaw pixels, Canon's slice layout, or more than
    8 bits a sample. Its bytes lying past the end of a file says nothing about the previews."""
    if photometric in _RAW_PHOTOMETRICS or 0xC640 in entries:  # 0xC640: CR2Slice
        return True
    return any(bits > 8 for bits in t.ints(entries.get(0x0102), 4))


def _tiff_format_name(magic4: bytes, cr2: bool, meta: _Meta) -> str:
    """Best-effort format name from the magic, DNGVersion and Make."""
    make = (meta.make or "").upper()
    if cr2:
        return "CR2"
    if magic4 in (b"IIRO", b"IIRS", b"MMOR"):
        return "ORF"
    if magic4 == b"IIU\x00":
        return "RWL" if make.startswith("LEICA") else "RW2"
    if meta.dng:
        return "DNG"
    for prefix, name in (
        ("NIKON", "NEF"),
        ("SONY", "ARW"),
        ("PENTAX", "PEF"),
        ("ASAHI", "PEF"),
        ("RICOH", "PEF"),
        ("SAMSUNG", "SRW"),
        ("HASSELBLAD", "3FR"),
        ("EASTMAN KODAK", "KDC"),
        ("KODAK", "DCR"),
        ("SEIKO EPSON", "ERF"),
        ("MAMIYA", "MEF"),
        ("LEAF", "MOS"),
        ("PHASE ONE", "IIQ"),
        ("OLYMPUS", "ORF"),
    ):
        if make.startswith(prefix) and meta.raw_hint:
            return name
    return "TIFF"


def _read_tiff(r: _Reader, head: bytes) -> ContainerInfo:
    meta = _Meta()
    t = _Tiff(r, 0, r.size)
    _TiffWalker(r, meta).walk_main(t)
    cr2 = head[8:10] == b"CR"
    magic4 = head[:4]
    raw = meta.raw_hint or cr2 or magic4 not in (b"II*\x00", b"MM\x00*")
    return _finish(
        r,
        kind="tiff" if raw else "tiff-image",
        format_name=_tiff_format_name(magic4, cr2, meta) if raw else "TIFF",
        meta=meta,
    )


# --------------------------------------------------------------------------------------------
# JPEG files, RAF
# --------------------------------------------------------------------------------------------


def _exif_into(
    r: _Reader, span: tuple[int, int] | None, meta: _Meta, thumbs_prefix: str | None = None
) -> None:
    """Metadata from an APP1 Exif TIFF; a broken one is ignored (the image is still usable).
    With ``thumbs_prefix`` its IFD1 thumbnail is collected as a preview candidate too."""
    if span is None:
        return
    try:
        t = _Tiff(r, span[0], span[1], "EXIF")
        collect = thumbs_prefix is not None
        _TiffWalker(r, meta, collect, thumbs_prefix or "").walk_main(t)
    except ContainerError:
        pass


def _read_jpeg(r: _Reader) -> ContainerInfo:
    info = _jpeg_info(r, 0, r.size, want_exif=True)
    if info is None:
        raise ContainerError("JPEG has no readable frame header (file truncated or corrupt?)")
    meta = _Meta()
    _exif_into(r, info.exif, meta)
    preview = EmbeddedJpeg(0, r.size, info.width, info.height, "JPEG")
    return _finish(r, "jpeg", "JPEG", meta, extra=(preview,))


def _read_raf(r: _Reader) -> ContainerInfo:
    hdr = r.read_upto(0, 100)
    if len(hdr) < 92:
        raise ContainerError(f"RAF header is cut short {_TRUNCATED}")
    meta = _Meta()
    joff, jlen = struct.unpack(">II", hdr[84:92])
    previews: tuple[EmbeddedJpeg, ...] = ()
    info = _jpeg_info(r, joff, jlen, want_exif=True) if jlen else None
    if info is None and jlen:
        meta.cands.append((joff, jlen, "RAF"))  # _finish tells a cut one from a broken one
    if info is not None:
        # The EXIF IFD1 thumbnail (160x120) is what LibRaw extracts from trimmed RAFs.
        _exif_into(r, info.exif, meta, thumbs_prefix="RAF EXIF ")
        previews = (EmbeddedJpeg(joff, jlen, info.width, info.height, "RAF"),)
    header_model = hdr[28:60].split(b"\x00", 1)[0].decode("ascii", "replace").strip()
    meta.model = meta.model or header_model or None
    meta.make = meta.make or "FUJIFILM"
    return _finish(r, "raf", "RAF", meta, extra=previews)


# --------------------------------------------------------------------------------------------
# CR3 (ISO BMFF)
# --------------------------------------------------------------------------------------------


@dataclass
class _Box:
    typ: bytes
    uuid: bytes
    start: int
    payload: int
    end: int  # declared end, may lie past EOF (truncated mdat)


def _boxes(r: _Reader, start: int, end: int, what: str = "CR3") -> list[_Box]:
    """Child boxes in [start, end), bounded; stops at the first box that cannot be read."""
    out: list[_Box] = []
    end = min(end, r.size)
    p = start
    while p + 8 <= end and len(out) < _MAX_BOXES:
        size, typ = struct.unpack(">I4s", r.read(p, 8))
        hdr = 8
        if size == 1:
            if p + 16 > end:
                break
            (size,) = struct.unpack(">Q", r.read(p + 8, 8))
            hdr = 16
        elif size == 0:
            size = end - p
        uuid = b""
        if typ == b"uuid":
            if p + hdr + 16 > end:
                break
            uuid = r.read(p + hdr, 16)
            hdr += 16
        if size < hdr:
            raise ContainerError(f"{what} box has an impossible size (corrupt)")
        out.append(_Box(typ, uuid, p, p + hdr, p + size))
        p += size
    return out


def _read_cr3(r: _Reader) -> ContainerInfo:
    meta = _Meta()
    top = _boxes(r, 0, r.size)
    if not top or top[0].typ != b"ftyp":
        raise ContainerError("CR3 does not start with an ftyp box (corrupt)")
    found_meta = False
    walker = _TiffWalker(r, meta, collect_previews=False)
    for box in top:
        if box.typ == b"moov":
            for sub in _boxes(r, box.payload, box.end):
                if sub.typ == b"uuid" and sub.uuid == _CR3_META_UUID:
                    found_meta |= _cr3_canon_box(r, sub, meta, walker)
        elif box.typ == b"uuid" and box.uuid == _CR3_PRVW_UUID:
            for sub in _boxes(r, box.payload + 8, box.end):
                if sub.typ == b"PRVW":
                    _cr3_jpeg(r, sub, 4, meta, "CR3 PRVW")
    if not found_meta and not meta.cands:
        raise ContainerError("CR3 has no readable metadata or preview (file truncated?)")
    return _finish(r, "cr3", "CR3", meta)


def _cr3_jpeg(r: _Reader, box: _Box, size_at: int, meta: _Meta, where: str) -> None:
    """THMB/PRVW: 16 bytes of header (version, width, height, JPEG size) then the JPEG."""
    if box.payload + 16 > min(box.end, r.size):
        return
    (jlen,) = struct.unpack(">I", r.read(box.payload + 8 + size_at, 4))
    jpeg_at = box.payload + 16
    if jpeg_at + jlen <= box.end:
        meta.cands.append((jpeg_at, jlen, where))


def _cr3_canon_box(r: _Reader, box: _Box, meta: _Meta, walker: _TiffWalker) -> bool:
    """The Canon uuid box in moov: CMT1 (IFD0), CMT2 (EXIF IFD), THMB (160x120 JPEG)."""
    found = False
    for sub in _boxes(r, box.payload, box.end):
        try:
            if sub.typ == b"CMT1":
                walker.walk_main(_Tiff(r, sub.payload, sub.end, "CR3 CMT1"))
                found = True
            elif sub.typ == b"CMT2":
                walker.walk_exif_only(_Tiff(r, sub.payload, sub.end, "CR3 CMT2"))
                found = True
            elif sub.typ == b"THMB":
                _cr3_jpeg(r, sub, 0, meta, "CR3 THMB")
        except ContainerError:
            continue  # one broken block does not hide the others
    return found


# --------------------------------------------------------------------------------------------
# Phone and web formats: PNG, WebP, HEIF/HEIC and AVIF
# --------------------------------------------------------------------------------------------

_MAX_CHUNKS = 64  # PNG/WebP chunks looked at before giving up on finding EXIF
_MAX_ITEMS = 4096  # HEIF items (a 48 MP grid image has ~200)
_MAX_META_BOX = 1 << 20  # bytes of a HEIF iinf/iloc box read at once


def _read_png(r: _Reader) -> ContainerInfo:
    """EXIF from the eXIf chunk, looked for up to the first IDAT (where writers put it)."""
    meta = _Meta()
    p = 8
    for _ in range(_MAX_CHUNKS):
        if p + 8 > r.size:
            break
        length, typ = struct.unpack(">I4s", r.read(p, 8))
        if typ in (b"IDAT", b"IEND"):
            break
        if typ == b"eXIf" and p + 8 + length <= r.size:
            _exif_into(r, (p + 8, p + 8 + length), meta)
            break
        p += 12 + length  # length, type, data, CRC
    return _finish(r, "png", "PNG", meta)


def _read_webp(r: _Reader) -> ContainerInfo:
    """EXIF from the RIFF EXIF chunk (a TIFF, "Exif\\0\\0" first in some writers' files)."""
    hdr = r.read_upto(0, 12)
    if len(hdr) < 12:
        raise ContainerError(f"WebP header is cut short {_TRUNCATED}")
    (riff_size,) = struct.unpack("<I", hdr[4:8])
    end = min(8 + riff_size, r.size)
    meta = _Meta()
    p = 12
    for _ in range(_MAX_CHUNKS):
        if p + 8 > end:
            break
        typ, length = struct.unpack("<4sI", r.read(p, 8))
        if typ == b"EXIF" and p + 8 + length <= end:
            start = p + 8
            if r.read_upto(start, 6) == b"Exif\x00\x00":
                start += 6
            _exif_into(r, (start, p + 8 + length), meta)
            break
        p += 8 + length + (length & 1)  # chunks are padded to an even size
    return _finish(r, "webp", "WebP", meta)


def _read_heif(r: _Reader, kind: str, format_name: str) -> ContainerInfo:
    """HEIC/HEIF/AVIF: make, model and capture time from the Exif item of the meta box.

    The meta box lists items (iinf) and where their bytes are (iloc); the Exif item starts
    with a 4-byte offset to its TIFF header.  Orientation stays 1 (see ContainerInfo).
    """
    meta = _Meta()
    top = _boxes(r, 0, r.size, format_name)
    box = next((b for b in top if b.typ == b"meta"), None)
    if box is None:
        raise ContainerError(f"{format_name} has no meta box {_TRUNCATED}")
    if box.end > r.size:
        raise ContainerError(f"{format_name} meta box runs past the end of the file {_TRUNCATED}")
    try:
        children = {b.typ: b for b in reversed(_boxes(r, box.payload + 4, box.end, format_name))}
    except ContainerError:
        children = {}
    items = _heif_locations(r, children.get(b"iloc")) or {}
    if _heif_cut_short(r, items):
        raise ContainerError(f"{format_name} image data runs past the end of the file {_TRUNCATED}")
    try:
        exif_item = _heif_exif_item(r, children.get(b"iinf"))
        span = None
        if exif_item is not None:
            span = _heif_item_span(r, items.get(exif_item), children.get(b"idat"))
        if span is not None and span[1] - span[0] > 4:
            (to_tiff,) = struct.unpack(">I", r.read(span[0], 4))
            start = span[0] + 4 + to_tiff
            if r.read_upto(start, 6) == b"Exif\x00\x00":
                start += 6
            if start < span[1]:
                _exif_into(r, (start, span[1]), meta)
    except ContainerError:
        pass  # the metadata is secondary: the image may still decode
    meta.orientation = 1
    return _finish(r, kind, format_name, meta)


def _box_bytes(r: _Reader, box: _Box | None) -> bytes | None:
    """A full box's payload (version and flags first), or None when absent, cut or too big."""
    if box is None or box.end > r.size or box.end - box.payload > _MAX_META_BOX:
        return None
    data = r.read(box.payload, box.end - box.payload)
    return data if len(data) >= 4 else None


def _heif_exif_item(r: _Reader, iinf: _Box | None) -> int | None:
    """The ID of the first item of type "Exif" (infe version 2 or 3)."""
    data = _box_bytes(r, iinf)
    if data is None:
        return None
    p = 8 if data[0] else 6  # version, flags, entry count (u32 from version 1 on, else u16)
    for _ in range(_MAX_ITEMS):
        if p + 8 > len(data):
            return None
        size, typ = struct.unpack(">I4s", data[p : p + 8])
        if size < 8 or p + size > len(data):
            return None
        if typ == b"infe" and size > 12 and data[p + 8] in (2, 3):
            id_size = 2 if data[p + 8] == 2 else 4  # version 2: 16-bit item IDs
            item_type = data[p + 14 + id_size : p + 18 + id_size]  # after the protection index
            if item_type == b"Exif" and p + 18 + id_size <= p + size:
                return _uint(data, p + 12, id_size)
        p += size
    return None


def _heif_locations(r: _Reader, iloc: _Box | None) -> dict[int, tuple[int, list]] | None:
    """Item ID -> (construction method, [(offset, length), ...]) from the iloc box; offsets
    are absolute for method 0 (in the file), relative to idat's payload for method 1.
    None when the box is absent or unreadable."""
    data = _box_bytes(r, iloc)
    if data is None:
        return None
    version = data[0]
    if version > 2 or len(data) < 8:
        return None
    offset_size, length_size = data[4] >> 4, data[4] & 15
    base_size, index_size = data[5] >> 4, (data[5] & 15) if version else 0
    if any(n not in (0, 4, 8) for n in (offset_size, length_size, base_size, index_size)):
        return None
    id_size = 4 if version == 2 else 2
    p = 6
    count = _uint(data, p, id_size)
    p += id_size
    items: dict[int, tuple[int, list]] = {}
    for _ in range(min(count or 0, _MAX_ITEMS)):
        item_id = _uint(data, p, id_size)
        p += id_size
        method = 0
        if version:
            method = (_uint(data, p, 2) or 0) & 15
            p += 2
        p += 2  # data reference index
        base = _uint(data, p, base_size)
        p += base_size
        extents = _uint(data, p, 2)
        p += 2
        if item_id is None or base is None or extents is None:
            return None
        spans = []
        for _ in range(extents):
            p += index_size
            off, ln = _uint(data, p, offset_size), _uint(data, p + offset_size, length_size)
            p += offset_size + length_size
            if off is None or ln is None:
                return None
            spans.append((base + off, ln))
        items.setdefault(item_id, (method, spans))
    return items


def _heif_item_span(
    r: _Reader, located: tuple[int, list] | None, idat: _Box | None
) -> tuple[int, int] | None:
    """Absolute [start, end) of one item's bytes, when it is one extent in the file or in the
    meta box's idat (construction methods 0 and 1); None otherwise."""
    if located is None:
        return None
    method, spans = located
    if len(spans) != 1 or method not in (0, 1):
        return None
    start, length = spans[0]
    if method == 1:
        if idat is None:
            return None
        start += idat.payload
        if length == 0 or start + length > idat.end:
            return None
    end = r.size if length == 0 else start + length
    return (start, end) if end <= r.size else None


def _heif_cut_short(r: _Reader, items: dict[int, tuple[int, list]]) -> bool:
    """Some item's bytes (a tile of the image, usually) lie past the end of the file.

    libheif decodes a missing tile as flat green without an error: a half-copied HEIC must
    not be rated from that."""
    return any(
        method == 0 and length and start + length > r.size
        for method, spans in items.values()
        for start, length in spans
    )


def _uint(data: bytes, at: int, size: int) -> int | None:
    """A big-endian unsigned integer of 0, 2, 4 or 8 bytes (0 bytes: 0); None past the end."""
    if at < 0 or at + size > len(data):
        return None
    return int.from_bytes(data[at : at + size], "big")


# --------------------------------------------------------------------------------------------
# CRW (CIFF)
# --------------------------------------------------------------------------------------------


def _read_crw(r: _Reader, head: bytes) -> ContainerInfo:
    e = "<" if head[:2] == b"II" else ">"
    (hlen,) = struct.unpack(e + "I", head[2:6])
    if hlen < 14 or hlen >= r.size:
        raise ContainerError("CRW header has an impossible length (corrupt)")
    meta = _Meta()
    state = _CiffState()
    _ciff_heap(r, e, hlen, r.size, 0, meta, state)
    if state.rotation is not None:
        # ImageInfo rotation in degrees (as dcraw reads it) -> EXIF orientation
        meta.orientation = {0: 1, 90: 6, 180: 3, 270: 8}.get(state.rotation % 360, 1)
    return _finish(r, "crw", "CRW", meta)


@dataclass
class _CiffState:
    heaps: int = 0
    rotation: int | None = None


def _ciff_heap(
    r: _Reader, e: str, start: int, end: int, depth: int, meta: _Meta, state: _CiffState
) -> None:
    """One CIFF heap: the last 4 bytes point at a record table (count + 10-byte records);
    records with type 0x2800/0x3000 are sub-heaps.  Broken sub-heaps are skipped; a broken root
    heap is an error."""
    if depth > _MAX_DEPTH or state.heaps >= _MAX_CIFF_HEAPS:
        return
    state.heaps += 1
    if end - start < 6 or end > r.size:
        raise ContainerError(f"CRW directory lies past the end of the file {_TRUNCATED}")
    (tbl_rel,) = struct.unpack(e + "I", r.read(end - 4, 4))
    tbl = start + tbl_rel
    if tbl + 2 > end - 4:
        raise ContainerError(f"CRW directory offset points past its block {_TRUNCATED}")
    (n,) = struct.unpack(e + "H", r.read(tbl, 2))
    if n > _MAX_CIFF_RECORDS or tbl + 2 + 10 * n > end:
        raise ContainerError("CRW directory has an impossible record count (corrupt)")
    block = r.read(tbl + 2, 10 * n)
    for i in range(n):
        tag, size, off = struct.unpack(e + "HII", block[10 * i : 10 * i + 10])
        loc = tag & 0xC000
        tag_type = tag & 0x3800
        tag_id = tag & 0x3FFF
        if loc == 0x4000:  # value stored in the record itself
            data_off, size = tbl + 2 + 10 * i + 2, 8
        elif loc == 0:
            data_off = start + off
        else:
            continue
        if data_off + size > end:
            continue
        if tag_type in (0x2800, 0x3000):
            try:
                _ciff_heap(r, e, data_off, data_off + size, depth + 1, meta, state)
            except ContainerError:
                pass
        elif tag_id == 0x080A and meta.make is None:  # "Make\0Model\0"
            parts = r.read(data_off, min(size, _MAX_TEXT)).split(b"\x00")
            if len(parts) >= 2:
                meta.make = parts[0].decode("utf-8", "replace").strip() or None
                meta.model = parts[1].decode("utf-8", "replace").strip() or None
        elif tag_id == 0x180E and size >= 4 and "crw_ts" not in meta.times:  # unix time
            (ts,) = struct.unpack(e + "I", r.read(data_off, 4))
            meta.times["crw_ts"] = str(ts)
        elif tag_id == 0x1810 and size >= 16 and state.rotation is None:
            (state.rotation,) = struct.unpack(e + "i", r.read(data_off + 12, 4))
        elif tag_id == 0x2007:
            meta.cands.append((data_off, size, "CRW JpgFromRaw"))
        elif tag_id == 0x2008:
            meta.cands.append((data_off, size, "CRW Thumbnail"))


# --------------------------------------------------------------------------------------------
# Result assembly
# --------------------------------------------------------------------------------------------


def _parse_exif_time(text: str | None, subsec: str | None) -> datetime | None:
    """'YYYY:MM:DD HH:MM:SS' (any separators) + SubSec digits as a fraction of a second.

    SubSec "4" means .4 s, "40" .40 s, "004" .004 s: the digits are a decimal fraction.
    Blank or zeroed dates ("0000:00:00 00:00:00") give None.
    """
    if not text:
        return None
    digits: list[str] = []
    cur = ""
    for ch in text[:64]:
        if ch.isdigit() and ch.isascii():
            cur += ch
        elif cur:
            digits.append(cur)
            cur = ""
    if cur:
        digits.append(cur)
    if len(digits) < 6:
        return None
    try:
        y, mo, d, h, mi, s = (int(x) for x in digits[:6])
        dt = datetime(y, mo, d, h, mi, min(s, 59))
    except ValueError:
        return None
    frac = ""
    for ch in (subsec or "").strip():
        if not (ch.isdigit() and ch.isascii()):
            break
        frac += ch
    if frac:
        dt = dt.replace(microsecond=int((frac + "000000")[:6]))
    return dt


def _capture_time(meta: _Meta) -> datetime | None:
    """DateTimeOriginal+SubSecTimeOriginal, else DateTimeDigitized+SubSecTimeDigitized, else
    DateTime+SubSecTime: each date is paired only with its own sub-second tag."""
    t = meta.times
    for key in ("dto", "dtd", "dt"):
        dt = _parse_exif_time(t.get(key), t.get(key + "_sub"))
        if dt is not None:
            return dt
    ts = t.get("crw_ts")
    if ts is not None:
        try:
            return datetime(1970, 1, 1) + timedelta(seconds=int(ts))
        except (OverflowError, ValueError):
            return None
    return None


def _finish(
    r: _Reader,
    kind: str,
    format_name: str,
    meta: _Meta,
    extra: tuple[EmbeddedJpeg, ...] = (),
) -> ContainerInfo:
    """Validate candidate previews (FF D8, inside the file, readable SOF), dedupe by offset and
    sort by pixel count; name those whose bytes run past the end of the file."""
    previews: dict[int, EmbeddedJpeg] = {p.offset: p for p in extra}
    cut = dict.fromkeys(meta.cut)
    for off, ln, where in meta.cands:
        if off in previews:
            continue
        if off >= 0 and ln > 0 and off + ln > r.size:
            cut[where] = None
            continue
        info = _jpeg_info(r, off, ln)
        if info is not None:
            previews[off] = EmbeddedJpeg(off, ln, info.width, info.height, where)
    ordered = sorted(previews.values(), key=lambda p: (p.width * p.height, p.length, p.offset))
    orientation = meta.orientation if meta.orientation in range(1, 9) else 1
    assert orientation is not None
    return ContainerInfo(
        kind=kind,
        format_name=format_name,
        make=meta.make,
        model=meta.model or meta.unique_model,
        orientation=orientation,
        capture_time=_capture_time(meta),
        previews=tuple(ordered),
        previews_cut=tuple(cut),
    )


def read_container(path: str | os.PathLike[str]) -> ContainerInfo:
    """Identify the file from its bytes and read its metadata and embedded JPEG previews.

    Returns kind "unknown" for bytes it does not recognise (not an error: LibRaw may still know
    them), "video" or "other" for files it knows are not photos.  Raises
    :class:`ContainerError` -- and nothing else -- for an unreadable, empty or too-short file,
    or a recognised container whose essential structure is broken.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ContainerError(f"cannot open file: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ContainerError("not a regular file")
        r = _Reader(fd, st.st_size)
        if r.size == 0:
            raise ContainerError("file is empty")
        if r.size < _MIN_PHOTO_BYTES:
            raise ContainerError(f"file is {r.size} bytes: too short to be a photo")
        head = r.read_upto(0, HEAD_BYTES)
        kind, format_name = _identify(head)
        if kind == "jpeg":
            return _read_jpeg(r)
        if kind == "tiff":
            return _read_tiff(r, head)
        if kind == "cr3":
            return _read_cr3(r)
        if kind == "raf":
            return _read_raf(r)
        if kind == "crw":
            return _read_crw(r, head)
        if kind == "png":
            return _read_png(r)
        if kind == "webp":
            return _read_webp(r)
        if kind in ("heif", "avif"):
            return _read_heif(r, kind, format_name)
        return _finish(r, kind, format_name, _Meta())  # video, other, unknown
    except ContainerError:
        raise
    except OSError as exc:
        raise ContainerError(f"cannot read file: {exc.strerror or exc}") from exc
    except Exception as exc:  # the contract is "ContainerError or a result", even for our bugs
        # Safety net for a parser bug on hostile input; the tests assert it is never reached.
        reason = f"unreadable file structure (parser error: {type(exc).__name__})"
        raise ContainerError(reason) from exc
    finally:
        os.close(fd)
