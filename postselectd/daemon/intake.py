"""Files in: watchdog's events and the scanner's finds become journal rows (pending, due
once their file has been quiet); the watches themselves (added, gone, back, reloaded),
rescans, and the journal forgetting photos that are gone."""

from __future__ import annotations

import logging
import os
import queue
import shlex
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from postselectd import photos, watcher
from postselectd.config import Config, WatchFolder, default_inbox
from postselectd.daemon.learning import Learning
from postselectd.daemon.scheduler import CLOSED_SETTLE_SECONDS
from postselectd.daemon.shared import DaemonError, Part, Shared
from postselectd.daemon.verdicts import Verdicts
from postselectd.photos import JPEG_SUFFIXES, Signature, has_raw_sibling
from postselectd.state import GONE

log = logging.getLogger(__name__)

# Overflow warnings come in bursts: one rescan after they stop.
OVERFLOW_RESCAN_DELAY = 1.0
# The signature of a photo whose stat failed for another reason than its absence.
UNREADABLE = Signature(-1, -1)
# Journal rows checked for photos that are gone, per turn of the loop (~2 ms).
PRUNE_BATCH = 500


# --- messages into the inbox ---------------------------------------------------------


@dataclass(frozen=True)
class Arrived:
    arrival: watcher.Arrival


@dataclass(frozen=True)
class Scanned:
    path: Path
    sig: Signature
    newest: float  # max(mtime, ctime): when the file last arrived or changed
    since: float | None  # files older than this were there before the watch began


@dataclass(frozen=True)
class ScanDone:
    root: Path
    files: int
    reason: str


# --- the scanner -------------------------------------------------------------------


class Scanner:
    """Reconcile scans in their own thread (a share can take minutes to list); the
    results go through the inbox, where the main thread compares them to the journal."""

    def __init__(self, post: Callable[[object], bool], watched: Callable[[], list[Path]] = list):
        self.post = post
        self.watched = watched  # the configured watch folders: links inside them are fine
        self._requests: queue.Queue = queue.Queue()
        self._queued: set[tuple[Path, bool, float | None]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)
        self._thread.start()

    def request(self, root: Path, recursive: bool, since: float | None, reason: str) -> None:
        key = (root, recursive, since)
        with self._lock:
            if key in self._queued:
                return
            self._queued.add(key)
        self._requests.put((key, reason))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._requests.put(None)
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._requests.get()
            if item is None:
                return
            (root, recursive, since), reason = item
            with self._lock:
                self._queued.discard((root, recursive, since))
            count = 0
            for path, st in photos.scan(root, recursive, self._stop, self.watched()):
                if st is None:  # there, but it cannot be looked at: fails with its reason
                    message = Scanned(path, UNREADABLE, time.time(), since)
                else:
                    message = Scanned(path, Signature.of(st), max(st.st_mtime, st.st_ctime), since)
                if not self.post(message):
                    return
                count += 1
            self.post(ScanDone(root, count, reason))


def with_watches(config: Config, extra_watches: list[WatchFolder]) -> Config:
    """The configured folders, the ones given with --watch, or the default inbox."""
    watches = list(config.watch)
    known = {w.path for w in watches}
    watches += [w for w in extra_watches if w.path not in known]
    if not watches:
        watches = [WatchFolder(path=default_inbox())]
    return config.model_copy(update={"watch": watches})


class Intake(Part):
    """The watcher and the scanner, and what they find: into the journal as pending.
    ``post``: into the inbox (blocking when it is full); ``inbox``: the scanner's own way
    in, which gives up once the scanner stops."""

    def __init__(
        self,
        shared: Shared,
        verdicts: Verdicts,
        learning: Learning,
        post: Callable[[object], None],
        inbox: queue.Queue,
        *,
        extra_watches: list[WatchFolder],
        catch_up: bool,
        config_path: Path | None,
    ):
        super().__init__(shared)
        self.verdicts = verdicts
        self.learning = learning
        self.post = post
        self.inbox = inbox
        self.extra_watches = extra_watches
        self.catch_up = catch_up
        self.config_path = config_path
        self.watcher: watcher.Watcher | None = None
        self.scanner: Scanner | None = None
        self._since: dict[Path, float] = {}
        # Folders watched for the first time: the photos their first scan leaves alone.
        self._left_before: dict[Path, int] = {}
        self._next_rescan = 0.0  # monotonic; 0: no periodic rescan
        self._overflowed = False
        self._overflow_at: float | None = None  # monotonic
        # Watch folders whose journal rows are being checked for photos that are gone:
        # where the pass is, and how many it forgot so far.
        self._pruning: dict[Path, tuple[Path | None, int]] = {}

    def start(self) -> list[str]:
        """Watch the configured folders and scan them; how each is watched, for the log."""
        self.watcher = watcher.Watcher(self._post_arrival, self._post_overflow)
        self.scanner = Scanner(
            self._post_from_scanner, lambda: [folder.path for folder in self.config.watch]
        )
        return [self.add_watch(folder, reason="start-up") for folder in self.config.watch]

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.scanner is not None:
            self.scanner.stop()

    def rewatch(self, old: Config, new: Config) -> list[str]:
        """A reload: folders no longer (or differently) configured are let go, new ones
        watched; how each new one is watched, for the log."""
        old_paths = {w.path: w for w in old.watch}
        new_paths = {w.path: w for w in new.watch}
        for path, folder in old_paths.items():
            if new_paths.get(path) != folder:
                self.watcher.remove(path)
        return [
            self.add_watch(f, "config reload")
            for p, f in new_paths.items()
            if old_paths.get(p) != f
        ]

    def tick(self, now_m: float) -> None:
        if self._overflowed:
            self._overflowed = False
            if self._overflow_at is None:
                log.warning("file events were lost (inotify queue overflow); rescanning soon")
            self._overflow_at = now_m + OVERFLOW_RESCAN_DELAY
        if self._overflow_at is not None and now_m >= self._overflow_at:
            self._overflow_at = None
            self.rescan_all("lost events (inotify queue overflow)")
        if self._next_rescan and now_m >= self._next_rescan:
            self.rescan_all("periodic reconcile")
            self.schedule_rescan()

    def sleep_limit(self, now_m: float) -> float:
        """How long the loop may sleep before the rescan after lost events."""
        if self._overflow_at is not None:
            return max(0.0, self._overflow_at - now_m)
        return float("inf")

    def scan_done(self, message: ScanDone) -> None:
        log.debug("%s scan of %s: %d photos looked at", message.reason, message.root, message.files)
        self._say_left_before(message.root)
        if any(folder.path == message.root for folder in self.config.watch):
            # The journal forgets the photos that are gone (a pass over its rows
            # below the folder, a batch a turn).
            self._pruning.setdefault(message.root, (None, 0))

    # --- posting into the inbox (other threads) ------------------------------------

    def _post_arrival(self, arrival: watcher.Arrival) -> None:
        self.post(Arrived(arrival))

    def _post_overflow(self) -> None:
        # A flag, not a message: the inbox may be full of the very storm that overflowed.
        self._overflowed = True

    def _post_from_scanner(self, message: object) -> bool:
        while self.scanner is None or not self.scanner.stopping:
            try:
                self.inbox.put(message, timeout=1.0)
                return True
            except queue.Full:
                continue
        return False

    # --- arrivals: into the journal as pending ---------------------------------------

    def _settle_for(self, kind: str) -> float:
        settle = self.config.daemon.settle_seconds
        if kind in ("closed", "moved"):
            return min(settle, CLOSED_SETTLE_SECONDS)
        return settle

    def arrived(self, arrival: watcher.Arrival) -> None:
        if arrival.kind == "sidecar":
            self.learning.sidecar_written(arrival.path)
            return
        self.learning.last_activity = time.time()
        if arrival.kind == "folder":
            # A folder moved or copied in: its files may give no events of their own.
            folder = self._watch_of(arrival.path)
            recursive = folder.recursive if folder else True
            self.scanner.request(arrival.path, recursive, None, "new folder")
            return
        if arrival.moved_from is not None:
            self.journal.forget(arrival.moved_from)
            self.verdicts.forget(arrival.moved_from)
        self._touch(arrival.path, self._settle_for(arrival.kind))

    def scanned(self, found: Scanned) -> None:
        row = self.journal.get(found.path)
        if row is None:
            if found.since is not None and found.newest < found.since:
                self._count_left_before(found.path)
                return  # there before the watch began: `--catch-up` or `score` rates it
        elif (
            row.status == "pending"
            or (row.signature == found.sig and row.reason != GONE)
            or found.sig == UNREADABLE
        ):
            # Already queued, or already dealt with. A file that was gone (its card was
            # pulled while it waited) and is back is queued again. One that cannot be
            # looked at now (EIO) keeps what the journal says of it: a rated photo
            # stays rated, with its sidecar.
            if row.status == "rated":
                self.learning.look(row)  # a correction made while no event could tell
            return
        self.journal.touch(found.path, found.sig, time.time(), self.config.daemon.settle_seconds)

    def _touch(self, path: Path, quiet: float) -> None:
        try:
            sig = Signature.of(os.stat(path))
        except (FileNotFoundError, NotADirectoryError):
            sig = None  # gone already
        except OSError:
            # There, but it cannot be looked at (EIO on a failing card, ESTALE on NFS):
            # queued all the same, so that it fails with its reason after the retries
            # (or is rated once it can be read), never dropped without a word.
            sig = UNREADABLE
        self.journal.touch(path, sig, time.time(), quiet)

    # --- watches, scans ------------------------------------------------------------

    def check_watch_folders(self, config: Config) -> None:
        """A configured folder that is not there is a typo or a renamed folder, unless it
        is marked ``removable`` (a card or share mounted now and then)."""
        for index, folder in enumerate(config.watch):
            if folder.path == default_inbox():
                continue  # created when it is watched
            try:
                st = os.stat(folder.path)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            except OSError as exc:
                # There but it cannot be looked at now (EIO on a failing disk, ESTALE on
                # NFS): not a mistake in the config. Exiting would be restarted into the
                # same error for ever; the folder is watched once it can be looked at.
                log.warning(
                    "%s cannot be looked at (%s); watched once it can be",
                    folder.path,
                    exc.strerror or exc,
                )
                continue
            if (st is not None and stat.S_ISDIR(st.st_mode)) or (folder.removable and st is None):
                continue
            where = "--watch" if folder in self.extra_watches else f"watch.{index}.path"
            if st is not None:
                raise DaemonError(f"{where}: {folder.path} is not a folder")
            raise DaemonError(
                f"{where}: {folder.path} does not exist (create it or correct the path; "
                "for a card or share that is mounted later, set removable: true)"
            )

    def add_watch(self, folder: WatchFolder, reason: str) -> str:
        if folder.path == default_inbox() and not folder.path.exists():
            try:
                folder.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("cannot create %s: %s", folder.path, exc.strerror or exc)
        if not self.catch_up and not self.journal.has_watched(folder.path):
            self._left_before[folder.path] = 0  # said once its first scan is done
        since = self.journal.watch_since(folder.path, catch_up=self.catch_up)
        self._since[folder.path] = since
        mode = self.watcher.add(folder)
        notes = [("recursive" if folder.recursive else "this folder only"), mode]
        if since == 0.0 and self.catch_up:
            notes.append("catching up on what is there")
        if not self.watcher.is_attached(folder.path):
            log.warning("%s is not there (yet); it is watched once it appears", folder.path)
            notes.append("not there yet")
        else:
            self.scanner.request(folder.path, folder.recursive, since, reason)
        label = f"{folder.path} ({', '.join(notes)})"
        if self._is_default_inbox(folder):
            label += " [the default inbox: no folders configured]"
        return label

    def _count_left_before(self, path: Path) -> None:
        """A photo there before the first watch of its folder began (a camera JPEG beside
        its raw is not one more photo)."""
        folder = self._watch_of(path) if self._left_before else None
        if folder is None or folder.path not in self._left_before:
            return
        if not (path.suffix.lower() in JPEG_SUFFIXES and has_raw_sibling(path)):
            self._left_before[folder.path] += 1

    def _say_left_before(self, root: Path) -> None:
        """Once the first scan of a folder is done: how many photos were already there and
        left alone, and the command that rates them. Otherwise an archive pointed at looks
        like a daemon that does nothing."""
        count = self._left_before.pop(root, None)
        if not count:
            return
        config = ""
        if self.config_path is not None:
            config = " --config " + shlex.quote(str(Path(self.config_path).expanduser().absolute()))
        log.info(
            "%s: watched for the first time; the %s photo%s already there %s left alone "
            "(only new ones are rated); to rate %s too: postselectd score%s %s "
            "(or start the daemon once with: postselectd run --catch-up%s)",
            root,
            f"{count:,}",
            "" if count == 1 else "s",
            "is" if count == 1 else "are",
            "it" if count == 1 else "them",
            config,
            shlex.quote(str(root)),
            config,
        )

    def _is_default_inbox(self, folder: WatchFolder) -> bool:
        return folder.path == default_inbox() and not self.extra_watches

    def _watch_of(self, path: Path) -> WatchFolder | None:
        for folder in self.config.watch:
            if path == folder.path or folder.path in path.parents:
                return folder
        return None

    def rescan_all(self, reason: str) -> None:
        log.info("rescanning watched folders: %s", reason)
        for folder in self.config.watch:
            if self.watcher.is_attached(folder.path):
                self.scanner.request(
                    folder.path, folder.recursive, self._since.get(folder.path), reason
                )

    def schedule_rescan(self) -> None:
        minutes = self.config.daemon.rescan_interval_minutes
        self._next_rescan = time.monotonic() + minutes * 60 if minutes > 0 else 0.0

    def check_folders(self) -> None:
        for path, change in self.watcher.check_folders():
            folder = self._watch_of(path)
            if change == "gone":
                log.warning(
                    "watched folder %s is gone (card removed or share unmounted?); "
                    "watching resumes when it is back",
                    path,
                )
            else:
                log.info("watched folder %s is back; watching it again", path)
                self.scanner.request(
                    path,
                    folder.recursive if folder else True,
                    self._since.get(path),
                    "folder came back",
                )

    def prune_some(self, limit: int = PRUNE_BATCH) -> None:
        """One batch of the journal's rows checked for photos no longer there."""
        if not self._pruning:
            return
        root, (after, forgotten) = next(iter(self._pruning.items()))
        if not (self.watcher.is_attached(root) and root.is_dir()):
            del self._pruning[root]  # a card pulled out: its photos are not gone
            return
        keep = self.verdicts.in_hand()
        pruned, after = self.journal.prune_missing(root, after, limit, keep)
        forgotten += pruned
        if after is not None:
            self._pruning[root] = (after, forgotten)
            return
        del self._pruning[root]
        if forgotten:
            log.info(
                "%s: %d photo%s no longer there (deleted or renamed away) left the journal",
                root,
                forgotten,
                "" if forgotten == 1 else "s",
            )
