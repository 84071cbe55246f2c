"""Watching folders: watchdog observers, and which folders to poll.

The only module that imports watchdog. What it knows (measured, see ../shared/FACTS.md):

- Events are filtered to Closed, Moved and Created (plus folder Created/Moved). With the
  default mask a storm of 20,000 files overflowed the kernel queue and lost most of them;
  with the filter none were lost. Closed means a writer finished; Moved (to a final name)
  is how temp-name writers and rsync finish; Created is all a ``mv`` from another disk, a
  hardlink or a folder moved in produce.
- An inotify overflow is only logged by watchdog (logger ``watchdog.observers.inotify_c``):
  a logging handler turns it into a call, and the daemon rescans.
- Network shares (NFS, SMB/CIFS, SSHFS and other FUSE mounts) never send native events
  for changes made elsewhere: ``poll: auto`` polls them.

The handler only enqueues; deciding whether a file is complete is the daemon's job.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserverVFS

from postselectd.config import WatchFolder
from postselectd.photos import is_photo_path, is_sidecar_name

log = logging.getLogger(__name__)

EVENT_FILTER = [FileClosedEvent, FileMovedEvent, FileCreatedEvent, DirCreatedEvent, DirMovedEvent]
# Polling interval for network shares: a share is polled by listing it, so not too often.
POLL_SECONDS = 2.0
# Linux filesystem types whose changes made elsewhere never reach inotify.
_NETWORK_FS = re.compile(
    r"^(nfs4?|cifs|smb3?|smbfs|ncpfs|afs|9p|ceph|glusterfs|lustre|gpfs|davfs|sshfs|"
    r"fuse\.(?!(?:ntfs|ntfs-3g|exfat|exfat-fuse)$).*|fuse)$"
)
# macOS statfs f_flags: the volume is local.
_MNT_LOCAL = 0x00001000
_OVERFLOW_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


@dataclass(frozen=True)
class Arrival:
    """A name something just happened to: ``kind`` is closed, moved, created or folder, or
    sidecar (an XMP sidecar written: the daemon looks for a person's correction)."""

    path: Path
    kind: str
    moved_from: Path | None = None


# --- network filesystems ------------------------------------------------------------


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type_linux(path: Path, mounts_text: str) -> str | None:
    """The type of the mount holding ``path``, from /proc/mounts text."""
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point, fs_type = _unescape_mount(fields[1]), fields[2]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type


def is_network_type(fs_type: str | None) -> bool:
    return bool(fs_type) and bool(_NETWORK_FS.match(fs_type))


def network_filesystem(path: Path) -> str | None:
    """The filesystem type when ``path`` is on a network share, else None."""
    if sys.platform.startswith("linux"):
        try:
            text = Path("/proc/mounts").read_text()
        except OSError:
            return None
        fs_type = filesystem_type_linux(path, text)
        return fs_type if is_network_type(fs_type) else None
    if sys.platform == "darwin":
        return _darwin_remote_type(path)
    return None


def _darwin_remote_type(path: Path) -> str | None:
    """macOS: statfs(2) flags say whether the volume is local (not tested on Linux CI)."""
    import ctypes
    import ctypes.util

    class StatFs(ctypes.Structure):  # struct statfs, 64-bit inode layout
        _fields_ = [
            ("f_bsize", ctypes.c_uint32),
            ("f_iosize", ctypes.c_int32),
            ("f_blocks", ctypes.c_uint64),
            ("f_bfree", ctypes.c_uint64),
            ("f_bavail", ctypes.c_uint64),
            ("f_files", ctypes.c_uint64),
            ("f_ffree", ctypes.c_uint64),
            ("f_fsid", ctypes.c_int32 * 2),
            ("f_owner", ctypes.c_uint32),
            ("f_type", ctypes.c_uint32),
            ("f_flags", ctypes.c_uint32),
            ("f_fssubtype", ctypes.c_uint32),
            ("f_fstypename", ctypes.c_char * 16),
            ("f_mntonname", ctypes.c_char * 1024),
            ("f_mntfromname", ctypes.c_char * 1024),
            ("f_flags_ext", ctypes.c_uint32),
            ("f_reserved", ctypes.c_uint32 * 7),
        ]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        statfs = libc["statfs$INODE64"] if hasattr(libc, "statfs$INODE64") else libc.statfs
        buf = StatFs()
        if statfs(os.fsencode(str(path)), ctypes.byref(buf)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    if buf.f_flags & _MNT_LOCAL:
        return None
    return buf.f_fstypename.decode(errors="replace") or "network"


def should_poll(folder: WatchFolder) -> tuple[bool, str]:
    """(poll?, why) for a watch: ``poll: auto`` polls network shares only."""
    if folder.poll is True:
        return True, "polling (poll: true)"
    if folder.poll is False:
        return False, _native_name()
    remote = network_filesystem(folder.path)
    if remote:
        return True, f"polling ({remote} share)"
    return False, _native_name()


def _native_name() -> str:
    if sys.platform.startswith("linux"):
        return "inotify"
    if sys.platform == "darwin":
        return "FSEvents"
    return "native events"


# --- the observers ------------------------------------------------------------------


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into Arrivals; only enqueues."""

    def __init__(self, root: Path, enqueue: Callable[[Arrival], None]):
        self.root = root
        self.enqueue = enqueue

    def _file(self, path: str, kind: str, moved_from: str | None = None) -> None:
        candidate = Path(path)
        if kind != "created" and is_sidecar_name(candidate.name):
            # Written whole (closed, or renamed into place): a person may have rated it.
            self.enqueue(Arrival(candidate, "sidecar"))
        elif is_photo_path(candidate, self.root):
            self.enqueue(Arrival(candidate, kind, Path(moved_from) if moved_from else None))

    def on_closed(self, event: FileSystemEvent) -> None:
        self._file(os.fsdecode(event.src_path), "closed")

    def on_created(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self.enqueue(Arrival(Path(os.fsdecode(event.src_path)), "folder"))
        else:
            self._file(os.fsdecode(event.src_path), "created")

    def on_moved(self, event: FileSystemEvent) -> None:
        dest = os.fsdecode(event.dest_path)
        if event.is_directory:
            self.enqueue(Arrival(Path(dest), "folder"))
        else:
            self._file(dest, "moved", os.fsdecode(event.src_path))


class _OverflowAlarm(logging.Handler):
    """watchdog reports a lost-events overflow only as a log warning: hear it."""

    def __init__(self, callback: Callable[[], None]):
        super().__init__(logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                self.callback()
        except Exception:  # never let the alarm break watchdog's thread
            pass


@dataclass
class _Watch:
    folder: WatchFolder
    polling: bool  # which observer: the polling one, or the native one
    mode: str  # how it is watched, in words: "inotify", "polling (nfs share)", ...
    observed: ObservedWatch | None = None
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder when attached


class Watcher:
    """Native and polling observers for the configured folders; survives folders that
    disappear (a card pulled, a share unmounted) and re-attaches when they return."""

    def __init__(self, enqueue: Callable[[Arrival], None], on_overflow: Callable[[], None]):
        self.enqueue = enqueue
        self._native: BaseObserver | None = None
        self._polling: BaseObserver | None = None
        self._watches: dict[Path, _Watch] = {}
        self._alarm = _OverflowAlarm(on_overflow)
        for name in _OVERFLOW_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self._alarm)
            if logger.getEffectiveLevel() > logging.WARNING:
                logger.setLevel(logging.WARNING)

    @property
    def folders(self) -> list[WatchFolder]:
        return [w.folder for w in self._watches.values()]

    def mode(self, path: Path) -> str:
        return self._watches[path].mode

    def is_attached(self, path: Path) -> bool:
        watch = self._watches.get(path)
        return watch is not None and watch.observed is not None

    def add(self, folder: WatchFolder) -> str:
        """Start watching; a folder that is not there yet is attached when it appears."""
        poll, mode = should_poll(folder)
        watch = _Watch(folder, poll, mode)
        self._watches[folder.path] = watch
        self._attach(watch)
        return mode

    def remove(self, path: Path) -> None:
        watch = self._watches.pop(path, None)
        if watch is not None:
            self._detach(watch)

    def check_folders(self) -> list[tuple[Path, str]]:
        """Notice folders that went away or came back: [(path, "gone" | "back")]."""
        changes = []
        for path, watch in self._watches.items():
            identity = _identity(path)
            if watch.observed is not None and identity != watch.identity:
                self._detach(watch)
                if identity is None:
                    changes.append((path, "gone"))
            if watch.observed is None and identity is not None:
                if self._attach(watch):
                    changes.append((path, "back"))
        return changes

    def stop(self) -> None:
        for observer in (self._native, self._polling):
            if observer is not None:
                observer.stop()
        for observer in (self._native, self._polling):
            if observer is not None and observer.is_alive():
                observer.join(timeout=5)
        for name in _OVERFLOW_LOGGERS:
            logging.getLogger(name).removeHandler(self._alarm)

    def _observer(self, polling: bool) -> BaseObserver:
        if polling:
            if self._polling is None:
                self._polling = PollingObserverVFS(
                    self._poll_stat, os.scandir, polling_interval=POLL_SECONDS
                )
                self._polling.daemon = True
                self._polling.start()
            return self._polling
        if self._native is None:
            self._native = Observer()
            self._native.daemon = True
            self._native.start()
        return self._native

    def _poll_stat(self, path: str) -> os.stat_result:
        """What polling sees: a symlinked folder is not a folder, so it is not descended
        into (inotify does not follow links either: no photo is found, and no sidecar
        written, through a link out of the watched tree, nor round a link loop); a
        symlinked file is its target, and a watched folder that is a link is followed."""
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode):
            return st
        try:
            target = os.stat(path)
        except OSError:
            return st  # a dangling or looping link
        if stat.S_ISDIR(target.st_mode) and Path(path) not in self._watches:
            return st
        return target

    def _attach(self, watch: _Watch) -> bool:
        path = watch.folder.path
        identity = _identity(path)
        if identity is None:
            return False
        try:
            watch.observed = self._observer(watch.polling).schedule(
                _Handler(path, self.enqueue),
                str(path),
                recursive=watch.folder.recursive,
                event_filter=EVENT_FILTER,
            )
        except OSError as exc:
            log.warning("cannot watch %s: %s", path, exc.strerror or exc)
            return False
        watch.identity = identity
        return True

    def _detach(self, watch: _Watch) -> None:
        if watch.observed is None:
            return
        observer = self._polling if watch.polling else self._native
        try:
            if observer is not None:
                observer.unschedule(watch.observed)
        except (KeyError, OSError):  # the emitter already ended with its folder
            pass
        watch.observed = None
        watch.identity = None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return st.st_dev, st.st_ino
