"""Folders where no sidecar can be written (read-only, disk full): their photos wait
instead of failing, the folder is reported once, and one photo tries again once the
folder looks writable (or now and then anyway)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from postselectd.daemon.shared import Part

log = logging.getLogger(__name__)

# A folder where no sidecar can be written (read-only, disk full) holds its photos back;
# they wait this long between looks, and one of them tries again at least this often
# even when the folder's state cannot tell us it changed.
FOLDER_RETRY_SECONDS = 60.0


@dataclass
class BlockedFolder:
    """A folder no sidecar can be written into right now: its photos wait, not fail."""

    trouble: str  # "read-only" or "full"
    error: str  # the sidecar module's message, the reason its waiting photos show
    free_bytes: int  # free space when the last write failed
    retry_at: float  # monotonic: let one photo try anyway from then on
    probe: Path | None = None  # the one photo trying, while it tries


def _statvfs(folder: Path) -> os.statvfs_result | None:
    try:
        return os.statvfs(folder)
    except OSError:
        return None


def _read_only(folder: Path, st: os.statvfs_result) -> bool:
    return bool(st.f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)


def folder_trouble(folder: Path, waits_for: str | None = None) -> str | None:
    """Why no sidecar can be written in ``folder`` ("read-only", "full": no space, or over
    quota), or None when the failure is the file's own (a foreign sidecar, a name clash):
    that one counts as an attempt. ``waits_for``: what the failed write said the folder
    lacks (FileResult.waits_for)."""
    if waits_for == "space":
        return "full"
    st = _statvfs(folder)
    if st is None:
        return None
    if _read_only(folder, st):
        return "read-only"  # the folder's state decides: EACCES may be one file's
    if st.f_bavail == 0:
        return "full"
    return None


def free_bytes(folder: Path) -> int | None:
    st = _statvfs(folder)
    if st is None:
        return None
    return st.f_bavail * st.f_frsize


class BlockedFolders(Part):
    """The folders no sidecar can be written into now, and the one photo each lets try."""

    def __init__(self, shared):
        super().__init__(shared)
        self._blocked: dict[Path, BlockedFolder] = {}

    def get(self, folder: Path) -> BlockedFolder | None:
        return self._blocked.get(folder)

    def __contains__(self, folder: Path) -> bool:
        return folder in self._blocked

    def wait_for_folder(self, path: Path, trouble: str, error: str) -> None:
        """The sidecar failed because of its folder: the photo waits without using up its
        retries, and the folder is reported once, not once per photo."""
        folder = path.parent
        now = time.time()
        self.journal.wait(path, error, now + FOLDER_RETRY_SECONDS, now)
        blocked = self._blocked.get(folder)
        free = free_bytes(folder) or 0
        if blocked is None:
            what = (
                "the disk is full"
                if trouble == "full"
                else "the folder is read-only (or not writable for this user)"
            )
            log.error(
                "%s: %s; no sidecars are written there until it can be written again, "
                "its photos wait (old sidecars stay as they are)",
                folder,
                what,
            )
            self._blocked[folder] = BlockedFolder(
                trouble, error, free, time.monotonic() + FOLDER_RETRY_SECONDS
            )
            return
        blocked.trouble = trouble
        blocked.error = error
        blocked.free_bytes = free
        blocked.retry_at = time.monotonic() + FOLDER_RETRY_SECONDS
        if blocked.probe == path:
            blocked.probe = None

    def tick(self, now_m: float) -> None:
        """Let one waiting photo of a blocked folder try again once the folder looks
        writable (remounted read-write, space freed), or now and then anyway."""
        for folder, blocked in list(self._blocked.items()):
            if blocked.probe is not None:
                row = self.journal.get(blocked.probe)
                if row is not None and row.status == "pending":
                    if row.claimed or (row.due_at or 0) <= time.time() + 1:
                        continue  # still trying
                blocked.probe = None  # it ended another way (gone, failed, moved)
            if not (self._folder_looks_writable(folder, blocked) or now_m >= blocked.retry_at):
                continue
            waiting = self.journal.waiting_in(folder, limit=1)
            if not waiting:
                del self._blocked[folder]  # nothing waits there any more
                continue
            blocked.probe = waiting[0].path
            blocked.retry_at = now_m + FOLDER_RETRY_SECONDS
            self.journal.wait(blocked.probe, waiting[0].reason, time.time(), time.time())

    def _folder_looks_writable(self, folder: Path, blocked: BlockedFolder) -> bool:
        st = _statvfs(folder)
        if st is None:
            return False
        if _read_only(folder, st):
            return False
        if blocked.trouble == "full":
            return st.f_bavail * st.f_frsize > blocked.free_bytes
        return True

    def unblock(self, folder: Path) -> None:
        del self._blocked[folder]
        others = self.journal.release_waiting(folder, time.time())
        log.info(
            "%s: sidecars can be written again; the %d photo%s that waited there are rated now",
            folder,
            others + 1,
            "" if others == 0 else "s",
        )
