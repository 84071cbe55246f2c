"""Shared fixtures. Real files come from ../shared beside the checkout; tests that need
them skip with a clear reason where it is absent."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = Path(__file__).resolve().parent / "data"


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared not found ({path}): real camera samples are needed")
    return path


@pytest.fixture
def nef_dir(tmp_path: Path) -> Path:
    """A writable copy of ../shared/samples/nef (13 NEFs with real photographs as previews)."""
    source = shared_path("samples", "nef")
    target = tmp_path / "shoot"
    target.mkdir()
    for nef in sorted(source.glob("*.NEF")):
        shutil.copy2(nef, target / nef.name)
        os.chmod(target / nef.name, 0o644)
    return target


# The local time each line of the daemon's log starts with (not under systemd's journal).
LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", re.M)


def without_time(log: str) -> str:
    """A daemon's log with the time taken off the start of each line."""
    return LOG_TIME.sub("", log)


def copy_file(source: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    shutil.copy2(source, target)
    os.chmod(target, 0o644)
    return target


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 600, popen: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process, as a user would (``popen``: more
    subprocess arguments, e.g. ``Unprivileged.popen``)."""
    full_env = dict(os.environ)
    full_env.setdefault(
        "XDG_CONFIG_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "postselectd-test-noconfig")
    )
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "postselectd", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
        **(popen or {}),
    )


# --- a file the daemon really cannot read, also where the tests run as root -------------

# prctl(2) PR_CAPBSET_DROP; capability(7) CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH.
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _without_file_powers() -> None:
    """In the child before exec: drop root's power to read and write every file, so
    another user's 0600 file is as unreadable to it as to any user. (Not a switch to
    ``nobody``: this interpreter may live where only root can reach, like ~/.pyenv.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class Unprivileged:
    """How to start a process that file permissions apply to, and make a file it cannot
    read: as root, root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH and a file of
    ``nobody``'s, mode 0600; otherwise ourselves and a file of ours, mode 000."""

    def __init__(self) -> None:
        self.root = os.geteuid() == 0
        self.popen: dict = {}
        if not self.root:
            return
        self.popen = {"preexec_fn": _without_file_powers}
        try:
            subprocess.run([sys.executable, "-c", "pass"], check=True, **self.popen)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"running as root and cannot drop the file-permission powers: {exc}")

    def unreadable_file(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        self.lock(path, 0o600)

    def lock(self, path: Path, mode: int) -> None:
        """``path`` (a file or folder) as another user's with ``mode`` (as root) or as our
        own with no permission at all: closed to the processes started with ``popen``."""
        if self.root:
            os.chown(path, 65534, 65534)  # nobody
            os.chmod(path, mode)
        else:
            os.chmod(path, 0o000)

    @staticmethod
    def release(path: Path) -> None:
        """Readable again, for the test's own checks and tmp_path's cleanup."""
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


@pytest.fixture
def unprivileged() -> Unprivileged:
    return Unprivileged()


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


# --- phone and web photos, and a video, made from real photographs -----------------------

# EXIF orientation -> the transpose that stores an upright picture so that this orientation
# turns it upright again (the inverse of preview.upright_picture's).
_STORED_AS = {
    3: "ROTATE_180",
    6: "ROTATE_90",
    8: "ROTATE_270",
}


def phone_photo(
    path: Path,
    upright: Image.Image,
    orientation: int = 1,
    camera: tuple[str, str] | None = ("Apple", "iPhone XS"),
    taken: str | None = "2026:05:01 14:03:22",
    **options,
) -> Path:
    """``upright`` written as the file format of ``path``'s suffix (.jpg gives a WebP, as a
    browser's "Save image" often does), stored turned with ``orientation`` in its EXIF, as
    a phone stores a portrait frame. HEIC goes through pillow-heif, AVIF through Pillow:
    both write the orientation as the container's irot property, as phones do."""
    fmt = {".heic": "HEIF", ".jpg": "WEBP", ".tif": "TIFF"}.get(path.suffix.lower())
    suffix = path.suffix.lower()
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
        options.setdefault("enc_params", {"preset": "ultrafast"})  # x265: 0.1 s, not 1.4 s
    elif suffix == ".avif":
        options.setdefault("speed", 10)  # libaom's fastest: 0.2 s, not 1.8 s
    elif suffix == ".png":
        options.setdefault("compress_level", 1)
    exif = Image.Exif()
    exif[0x0112] = orientation
    if camera:
        exif[0x010F], exif[0x0110] = camera
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    stored = upright
    if orientation in _STORED_AS:
        stored = upright.transpose(getattr(Image.Transpose, _STORED_AS[orientation]))
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, fmt, exif=exif.tobytes(), **options)
    return path


def real_photo(name: str = "blur-0006.jpg", long_side: int | None = 1024) -> Image.Image:
    """A real photograph from ../shared/eval/blur (blur-0006: a phone's sharp frame)."""
    with Image.open(shared_path("eval", "blur", name)) as img:
        picture = img.convert("RGB")
    if long_side:
        picture.thumbnail((long_side, long_side))
    return picture


def quicktime_movie() -> bytes:
    """The smallest real QuickTime file: ftyp "qt  ", a moov with its mvhd, an empty mdat."""

    def atom(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    mvhd = bytes(4) + struct.pack(">IIII", 0, 0, 600, 0) + struct.pack(">IH", 0x10000, 0x100)
    mvhd += bytes(10) + struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd += bytes(24) + struct.pack(">I", 1)
    ftyp = atom(b"ftyp", b"qt  " + bytes(4) + b"qt  ")
    return ftyp + atom(b"moov", atom(b"mvhd", mvhd)) + atom(b"mdat", b"")
