"""`postselectd run`: the lifecycle of the background service, read top to bottom.

    run() -> startup() -> main_loop() -> shutdown()

The only module that knows about threads, processes, signals and the service manager.
Threads (watchdog's observers, one scanner, the worker pool's listener) only put small
messages into one bounded inbox; the main thread does everything else, so the journal
has one writer and sidecars are written one at a time:

    observers/scanner --Arrived/Scanned--> inbox --> main: journal (pending, settle)
    main --(due, settled, fingerprint)--> a worker process --Analysed--> inbox
    main: finish() (rating + sidecar) --> journal (rated / retry / failed)

A signal only flips ``should_exit`` (a second one forces the exit); SIGHUP asks for a
config reload, which a bad config refuses while the old one keeps running.
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from postselectd import __version__, watcher
from postselectd.bursts import BurstBook, BurstInfo
from postselectd.config import (
    Config,
    ConfigError,
    WatchFolder,
    default_inbox,
    load_config,
)
from postselectd.daemon.blocked import FOLDER_RETRY_SECONDS, BlockedFolders, folder_trouble
from postselectd.daemon.learning import Learning
from postselectd.daemon.manager import Manager, local_midnight
from postselectd.daemon.shared import DaemonError, Part, Shared
from postselectd.pipeline import (
    JPEG_SUFFIXES,
    FileResult,
    RecordError,
    Scored,
    capture_time_of,
    default_workers,
    finish,
    frame_of,
    has_raw_sibling,
    judged,
    left_alone_reason,
    same_stem_names,
    scored_from_record,
    scored_record,
    withdraw_second_truths,
)
from postselectd.preview import cut_previews_text
from postselectd.sidecar import read_sidecar, sidecar_paths
from postselectd.state import (
    GONE,
    Journal,
    JournalError,
    JournalFull,
    Row,
    Signature,
    fingerprint,
)
from postselectd.workers import (
    TASK_TIMEOUT_SECONDS,
    Analysed,
    WorkerDied,
    WorkerPool,
    WorkerReady,
)

log = logging.getLogger("postselectd.daemon")

# A file whose writer's close (or final rename) was seen only needs a short recheck.
CLOSED_SETTLE_SECONDS = 0.25
# An idle worker starts on a file this long before its quiet time is over; the result
# waits for the end of the quiet time, and is dropped if the file changed meanwhile. The
# analysis (~0.1 s) then overlaps the recheck instead of following it: close -> sidecar
# in ~0.27 s instead of ~0.36 s (bench/latency.py).
EARLY_START_SECONDS = CLOSED_SETTLE_SECONDS
# The main loop wakes at least this often (signals, watchdog pings, folder checks).
TICK_SECONDS = 1.0
FOLDER_CHECK_SECONDS = 2.0
# Overflow warnings come in bursts: one rescan after they stop.
OVERFLOW_RESCAN_DELAY = 1.0
# A worker stuck on one file this long is killed (a decoder in an endless loop).
# SIGTERM: finish what the workers hold for at most this long, then re-queue the rest.
DRAIN_SECONDS = 7.0
# A stop ends every open burst: their sidecars are rewritten for at most this long, the
# best frames first (theirs gain a star); the rest keep the rating they already have.
STOP_BURSTS_SECONDS = 2.0
# The frames of a folder where nothing arrived for this long leave memory; a late frame
# of one of its bursts loads them again from the journal.
IDLE_FOLDER_SECONDS = 600.0
WORKER_START_TIMEOUT = 120.0
RAW_RATED_INSTEAD = "a raw of the same name is rated instead"
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
            for path, st in watcher.scan(root, recursive, self._stop, self.watched()):
                if st is None:  # there, but it cannot be looked at: fails with its reason
                    message = Scanned(path, UNREADABLE, time.time(), since)
                else:
                    message = Scanned(path, Signature.of(st), max(st.st_mtime, st.st_ctime), since)
                if not self.post(message):
                    return
                count += 1
            self.post(ScanDone(root, count, reason))


# --- the daemon --------------------------------------------------------------------


@dataclass
class _Job:
    id: int
    path: Path
    sig: Signature
    fingerprint: str | None
    quiet_until: float = 0.0  # time.time() at which the file's quiet time ends
    capture_time: datetime | None = None  # from its EXIF: which burst it may join


class Daemon(Part):
    def __init__(
        self,
        config: Config,
        *,
        config_source: str = "built-in defaults",
        config_path: Path | None = None,
        extra_watches: list[WatchFolder] | None = None,
        catch_up: bool = False,
        on_result: Callable[[FileResult], None] | None = None,
        environ: dict | None = None,
        log_level_fixed: bool = False,
    ):
        self.config_source = config_source
        self.config_path = config_path
        self.extra_watches = list(extra_watches or [])
        self.catch_up = catch_up
        self.on_result = on_result or (lambda result: None)
        self.log_level_fixed = log_level_fixed  # --log-level given: a reload keeps it
        super().__init__(Shared(self._with_watches(config)))
        self.manager = Manager(self.shared, environ, working_on=lambda: len(self.jobs))
        self.notifier = self.manager.notifier
        self.force_exit = False
        self.reload_requested = False
        self.inbox: queue.Queue = queue.Queue(maxsize=self.config.daemon.queue_size)
        self.pool: WorkerPool | None = None
        self.watcher: watcher.Watcher | None = None
        self.scanner: Scanner | None = None
        self.jobs: dict[int, _Job] = {}
        # Analysed before their quiet time was over: (job, result, from the cache).
        self._early: list[tuple[_Job, Scored, bool]] = []
        self._job_ids = 0
        self._since: dict[Path, float] = {}
        # Folders watched for the first time: the photos their first scan leaves alone.
        self._left_before: dict[Path, int] = {}
        self._pool_stale = False
        self._next_rescan = 0.0
        self._overflow_at: float | None = None
        self._next_folder_check = 0.0
        self._started_at = time.monotonic()
        self._exit_code = 0
        self._timed_out: set[int] = set()
        self._bloated: set[int] = set()
        # Every frame of the folders being rated, grouped into bursts as `score DIR` would.
        self.bursts = BurstBook()
        # Analysed while other files were queued (a dump): their one sidecar waits for the
        # burst's verdict. The signature is the file's when it was analysed.
        self._deferred: dict[Path, tuple[Scored, Signature]] = {}
        self._overflowed = False
        self.blocked = BlockedFolders(self.shared)
        # Watch folders whose journal rows are being checked for photos that are gone:
        # where the pass is, and how many it forgot so far.
        self._pruning: dict[Path, tuple[Path | None, int]] = {}
        self._started = False
        self.learning = Learning(self.shared, new_model=self._new_model)

    @property
    def should_exit(self) -> bool:
        return self.shared.should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self.shared.should_exit = value

    # --- the lifecycle --------------------------------------------------------------

    def run(self) -> int:
        """Start, work until a signal, stop. Returns the exit status."""
        handlers = self._install_signal_handlers()
        try:
            self.startup()
            if not self.should_exit:
                self.main_loop()
        finally:
            try:
                self.shutdown()
            finally:
                # Even when something in the shutdown failed before the pool was closed:
                # the workers ignore SIGTERM, so left to the interpreter's exit they would
                # be waited for without end (the service manager's stop would hang).
                if self.pool is not None:
                    self.pool.close(timeout=0.5 if self.force_exit else 3.0)
                for signum, previous in handlers.items():
                    signal.signal(signum, previous)
        return self._exit_code

    def startup(self) -> None:
        self._check_watch_folders(self.config)
        state_dir = self.config.resolved_state_dir()
        self.manager.lock_state_dir(state_dir)
        try:
            self.journal = Journal(state_dir)
        except JournalError as exc:
            raise DaemonError(str(exc)) from None
        self._recover_interrupted_sidecars()
        self.shared.tally.rated_today = self.journal.rated_since(local_midnight())
        try:
            self.pool = WorkerPool(self._worker_count(), self.config.analysis, self._post)
        except OSError as exc:  # EAGAIN, EMFILE: the ones started are ended already
            raise DaemonError(
                f"cannot start the worker processes: {exc.strerror or exc}", retry=True
            ) from None
        self._wait_for_workers()
        if self.should_exit:
            return
        self.watcher = watcher.Watcher(self._post_arrival, self._post_overflow)
        self.scanner = Scanner(
            self._post_from_scanner, lambda: [folder.path for folder in self.config.watch]
        )
        described = [self._add_watch(folder, reason="start-up") for folder in self.config.watch]
        log.info(
            "postselectd %s started (pid %d): watching %s with %d worker%s; config: %s",
            __version__,
            os.getpid(),
            "; ".join(described),
            self.pool.size,
            "" if self.pool.size == 1 else "s",
            self.config_source,
        )
        self._schedule_rescan()
        self._started = True
        self.notifier.notify("READY=1", f"STATUS={self.manager.status_text()}")

    def main_loop(self) -> None:
        while not self.should_exit:
            try:
                self._turn()
            except JournalFull as exc:
                self._journal_full(exc)

    def _turn(self) -> None:
        timeout = self._tick()
        try:
            message = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(message)
        # Drain what else arrived, without waiting: a storm is handled in batches.
        for _ in range(500):
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                break
            self._handle(message)

    def shutdown(self) -> None:
        self.notifier.notify("STOPPING=1", "STATUS=stopping")
        self.learning.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.scanner is not None:
            self.scanner.stop()
        # Finish what the workers hold (their sidecars are written whole, or not at all).
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.jobs and not self.force_exit and time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(message, Analysed | WorkerDied):
                self._handle(message)
            elif isinstance(message, Arrived | Scanned):
                self._handle(message)  # recorded as pending; rated after the restart
        if self._early and not self.force_exit:
            # At most EARLY_START_SECONDS from the end of their quiet time: see it out.
            time.sleep(max(0.0, max(job.quiet_until for job, _, _ in self._early) - time.time()))
            self._settle_early(everything=True)
        if self.pool is not None:
            self.pool.close(timeout=0.5 if self.force_exit else 3.0)
        queued = 0
        if self.journal is not None:
            try:
                if not self.force_exit and self.shared.journal_full_since is None:
                    self._release_bursts(everything=True, budget=STOP_BURSTS_SECONDS)
                now = time.time()
                for job in [*self.jobs.values(), *(job for job, _, _ in self._early)]:
                    self.journal.unclaim(job.path, now, now)
                for path in self._deferred:  # not rated yet: rated after the restart
                    self.journal.unclaim(path, now, now)
            except JournalFull as exc:
                log.warning("%s: what was in progress is rated after the restart", exc)
            self.jobs.clear()
            self._early.clear()
            self._deferred.clear()
            queued = self.journal.counts()["pending"]
            self.journal.close()
        self.notifier.close()
        self.manager.unlock_state_dir()
        if self.force_exit and self._exit_code == 0:
            self._exit_code = 1
        if not self._started:
            return  # it never started: the reason is the one line the user sees
        log.info(
            "postselectd stopped (pid %d)%s: rated %d, rated again %d (changed since their "
            "rating), failed %d in this run; %d still queued",
            os.getpid(),
            " (forced)" if self.force_exit else "",
            self.shared.tally.rated,
            self.shared.tally.rerated,
            self.shared.tally.failed,
            queued,
        )

    # --- signals --------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict:
        previous = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._handle_exit)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle_reload)
        return previous

    def _handle_exit(self, signum, frame) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    def _handle_reload(self, signum, frame) -> None:
        self.reload_requested = True

    # --- posting into the inbox (other threads) ------------------------------------

    def _post(self, message: object) -> None:
        # Blocking when full: the watcher or the pool waits (the kernel queues events
        # meanwhile; an overflow there is caught and rescanned), memory does not grow.
        # While stopping, give up instead: what is not journaled is found by the start-up
        # scan, and a result not taken is analysed again.
        while True:
            try:
                self.inbox.put(message, timeout=0.5)
                return
            except queue.Full:
                if self.should_exit:
                    return

    def _post_arrival(self, arrival: watcher.Arrival) -> None:
        self._post(Arrived(arrival))

    def _post_overflow(self) -> None:
        # A flag, not a message: the inbox may be full of the very storm that overflowed.
        self._overflowed = True

    def _post_from_scanner(self, message: object) -> bool:
        while self.scanner is None or not self.scanner._stop.is_set():
            try:
                self.inbox.put(message, timeout=1.0)
                return True
            except queue.Full:
                continue
        return False

    # --- one turn of the loop ------------------------------------------------------

    def _tick(self) -> float:
        """Timers and dispatch; returns how long the loop may sleep."""
        now_m = time.monotonic()
        if self.shared.journal_full_since is not None:
            return self._wait_for_journal_space(now_m)
        if self.reload_requested:
            self.reload_requested = False
            self._reload()
        if now_m >= self._next_folder_check:
            self._next_folder_check = now_m + FOLDER_CHECK_SECONDS
            self._check_folders()
            self.blocked.tick(now_m)
            self.learning.tick()
            self.bursts.unload_idle(now_m, IDLE_FOLDER_SECONDS)
            for job in self.pool.kill_stuck(TASK_TIMEOUT_SECONDS):
                self._timed_out.add(job)
            for job in self.pool.kill_bloated():
                if job is not None:
                    self._bloated.add(job)
        if self._overflowed:
            self._overflowed = False
            if self._overflow_at is None:
                log.warning("file events were lost (inotify queue overflow); rescanning soon")
            self._overflow_at = now_m + OVERFLOW_RESCAN_DELAY
        if self._overflow_at is not None and now_m >= self._overflow_at:
            self._overflow_at = None
            self._rescan_all("lost events (inotify queue overflow)")
        if self._next_rescan and now_m >= self._next_rescan:
            self._rescan_all("periodic reconcile")
            self._schedule_rescan()
        if self._pool_stale and not self.jobs:
            self._replace_pool()
        self._settle_early()
        self._release_bursts()
        self._dispatch()
        self._prune_some()
        self.manager.notify_status()
        self.manager.ping(now_m)
        # Sleep until the next file is due, a message arrives, or the next timer.
        timeout = min(TICK_SECONDS, self.manager.sleep_limit(now_m))
        next_due = self.journal.next_due()
        if next_due is not None and not self._pool_stale and self.pool.idle() > 0:
            timeout = min(timeout, max(0.0, next_due - EARLY_START_SECONDS - time.time()))
        if self._early:
            quiet = min(job.quiet_until for job, _, _ in self._early)
            timeout = min(timeout, max(0.0, quiet - time.time()))
        if self._overflow_at is not None:
            timeout = min(timeout, max(0.0, self._overflow_at - now_m))
        return timeout

    def _handle(self, message: object) -> None:
        if isinstance(message, Arrived):
            self._arrived(message.arrival)
        elif isinstance(message, Scanned):
            self._scanned(message)
        elif isinstance(message, Analysed):
            # Its worker is free: give it the next file before this one is rated (sidecar
            # and journal writes, ~10 ms), so the workers never wait on the writing.
            self._dispatch()
            self._analysed(message.job, message.scored)
        elif isinstance(message, WorkerDied):
            self._worker_died(message)
        elif isinstance(message, ScanDone):
            log.debug(
                "%s scan of %s: %d photos looked at", message.reason, message.root, message.files
            )
            self._say_left_before(message.root)
            if any(folder.path == message.root for folder in self.config.watch):
                # The journal forgets the photos that are gone (a pass over its rows
                # below the folder, a batch a turn).
                self._pruning.setdefault(message.root, (None, 0))
        elif isinstance(message, WorkerReady):
            if message.error:
                log.error("a worker cannot load the models: %s", message.error)

    # --- arrivals: into the journal as pending ---------------------------------------

    def _settle_for(self, kind: str) -> float:
        settle = self.config.daemon.settle_seconds
        if kind in ("closed", "moved"):
            return min(settle, CLOSED_SETTLE_SECONDS)
        return settle

    def _arrived(self, arrival: watcher.Arrival) -> None:
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
            self.bursts.remove(arrival.moved_from, time.monotonic())
        self._touch(arrival.path, self._settle_for(arrival.kind))

    def _scanned(self, found: Scanned) -> None:
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

    # --- dispatch: settled files to workers ------------------------------------------

    def _dispatch(self) -> None:
        if self._pool_stale or self.should_exit or self.shared.journal_full_since is not None:
            return
        budget = 200  # cached results finished per turn; keeps the loop responsive
        while budget > 0 and self.pool.idle() > 0:
            now = time.time()
            rows = self.journal.due(now + EARLY_START_SECONDS, limit=max(8, self.pool.idle() * 2))
            if not rows:
                return
            for row in rows:
                budget -= 1
                if self.pool.idle() == 0:
                    return
                try:
                    self._start(row, now)
                except OSError as exc:
                    self._photo_os_error(row.path, exc)

    def _start(self, row: Row, now: float) -> None:
        path = row.path
        blocked = self.blocked.get(path.parent)
        if blocked is not None and blocked.probe != path:
            # Its folder cannot take a sidecar: wait (the folder's probe wakes it).
            self.journal.wait(path, blocked.error, now + FOLDER_RETRY_SECONDS, now)
            return
        try:
            st = os.stat(path)
        except OSError as exc:
            self._unreachable(path, exc, now)
            return
        sig = Signature.of(st)
        if sig != row.signature:
            # Still being written: look again once it has been quiet for the settle time.
            self.journal.resettle(path, sig, now + self.config.daemon.settle_seconds, now)
            return
        if path.suffix.lower() in JPEG_SUFFIXES and has_raw_sibling(path):
            self.journal.skip(path, RAW_RATED_INSTEAD, now)
            return
        if self._left_alone(path, now):
            return
        try:
            fp = fingerprint(path, sig.size)
        except OSError as exc:
            self._attempt_failed(path, f"cannot read file ({exc.strerror or exc})")
            return
        self._job_ids += 1
        job = _Job(self._job_ids, path, sig, fp, quiet_until=row.due_at or now)
        cached = self._cached(fp)
        if cached is not None:
            # The same content was analysed before (a re-copy or a rename): reuse it, but
            # this name still gets its own sidecar.
            self.journal.claim(path, fp, now)
            self.jobs[job.id] = job
            self._analysed(job.id, replace(cached, path=path), cached=True)
            return
        if self.pool.submit(job.id, path):
            job.capture_time = capture_time_of(path)
            self.journal.claim(path, fp, now)
            self.jobs[job.id] = job

    def _cached(self, fp: str) -> Scored | None:
        """The analysis of identical content seen before (a re-copy, a rename), or None."""
        record = self.journal.cached_analysis(fp, __version__)
        if record is None:
            return None
        try:
            return scored_from_record(record)
        except RecordError as exc:
            log.debug("cached analysis %s not used: %s", fp[:12], exc)
            return None

    # --- results -------------------------------------------------------------------

    def _analysed(self, job_id: int, scored: Scored, cached: bool = False) -> None:
        job = self.jobs.pop(job_id, None)
        if job is None:
            return
        if time.time() < job.quiet_until:
            # Started early (a worker was idle): judged once the file has been quiet.
            self._early.append((job, scored, cached))
            return
        try:
            self._settled(job, scored, cached)
        except OSError as exc:
            self._photo_os_error(job.path, exc)

    def _settle_early(self, everything: bool = False) -> None:
        """Results of early starts whose quiet time is over (all of them: ``everything``)."""
        now = time.time()
        ready, waiting = [], []
        for item in self._early:
            (ready if everything or item[0].quiet_until <= now else waiting).append(item)
        self._early = waiting
        for job, scored, cached in ready:
            try:
                self._settled(job, scored, cached)
            except OSError as exc:
                self._photo_os_error(job.path, exc)

    def _settled(self, job: _Job, scored: Scored, cached: bool) -> None:
        """A file's analysis, once the file has been quiet: rated, unless it changed."""
        now = time.time()
        try:
            st = os.stat(job.path)
        except OSError as exc:
            self._unreachable(job.path, exc, now)
            return
        sig = Signature.of(st)
        if sig != job.sig:
            # Rewritten while it was analysed: that analysis is of bytes no longer there.
            self.journal.resettle(job.path, sig, now + self.config.daemon.settle_seconds, now)
            return
        if scored.analysis is None:
            if not self._waits_for_the_rest(job.path, st, scored, now):
                self._attempt_failed(job.path, scored.error or "no analysis")
            return
        if job.fingerprint and not cached:
            try:
                record = scored_record(scored)
            except TypeError as exc:  # a field the record cannot hold: just not cached
                log.debug("%s: analysis not cached: %s", self.shown_name(job.path), exc)
            else:
                # Kept even while the file waits for the rest: unchanged, its next look
                # takes no worker.
                self.journal.store_analysis(job.fingerprint, __version__, record, now)
        if self._waits_for_the_rest(job.path, st, scored, now):
            return
        self._rate(scored)

    def _waits_for_the_rest(
        self, path: Path, st: os.stat_result, scored: Scored, now: float
    ) -> bool:
        """Whether a file whose own offsets put a preview past its end is left to wait.

        A copy written in pieces, closed between them, looks quiet after each piece; rated
        then, it was rated from its first 10 % and again after every piece. While it
        changed within ``daemon.incomplete_wait_seconds`` it is looked at again that long
        after its last change (sooner when it changes: its events queue it). After that it
        is rated as it is: a file cut short on a broken card gets its verdict (with a note
        that it looks truncated) or its error, and never waits for ever. A time stamp far
        from now (a camera's clock kept by the copy) says nothing about a recent change.
        """
        wait = self.config.daemon.incomplete_wait_seconds
        if not scored.previews_cut or wait <= 0:
            return False
        recent = [t for t in (st.st_mtime, st.st_ctime) if now - wait < t < now + wait]
        if not recent:
            return False
        due = max(recent) + wait
        self.journal.resettle(path, Signature.of(st), due, now)
        log.debug(
            "%s: %s; not rated while it may still be written, looked at again in %.1f s",
            self.shown_name(path),
            cut_previews_text(scored.previews_cut),
            due - now,
        )
        return True

    def _busy(self) -> bool:
        """Other files are being analysed or due: a dump or a burst coming in, not one file."""
        if self.jobs or self._early:
            return True
        next_due = self.journal.next_due()
        return next_due is not None and next_due <= time.time() + EARLY_START_SECONDS

    def _rate(self, scored: Scored) -> None:
        """A file's rating once it is analysed (again, when its bytes changed).

        Its burst is a property of the capture times and content of its folder's frames,
        whatever the order and spacing they arrive in (``self.bursts``). On an idle daemon
        the frame is rated at once with the burst it is in so far: the photographer should
        not wait for a burst to end. While other files are queued (a card dump, a burst
        being shot) its sidecar waits until its burst is complete and is written once,
        with the burst's verdict. A frame that joins a burst later (a slow card reader, an
        upload, a restart in between) makes the burst's sidecars be written again once it
        is complete: the same bursts and best frames as ``score DIR``.
        """
        path = scored.path
        self._deferred.pop(path, None)  # analysed again: this analysis supersedes it
        if not (judged(scored) and scored.capture_time is not None):
            self.bursts.remove(path, time.monotonic())  # a changed file no longer judged
            self._write(scored)
            return
        self._load_folder(path.parent)
        frame = frame_of(scored, self.config.rating)
        if self._busy():
            try:
                sig = Signature.of(os.stat(path))
            except OSError as exc:
                self.bursts.remove(path, time.monotonic())
                self._unreachable(path, exc, time.time())
                return
            self._deferred[path] = (scored, sig)
            self.bursts.place(frame, time.monotonic(), hold=True)
            return
        self.bursts.place(frame, time.monotonic())
        self._write(scored, burst=self.bursts.burst_of(path))

    def _write(
        self, scored: Scored, burst: BurstInfo | None = None, *, rejudge: bool = False
    ) -> None:
        """The one place a file's sidecar is written; ``rejudge``: again, for its burst."""
        path = scored.path
        self.journal.begin_sidecar(path, time.time())
        result = finish(scored, self.config, burst=burst)
        if result.error and rejudge:
            # Already rated; only the burst's update did not make it (tried again when
            # the burst next changes).
            self.bursts.let_go(path)
            log.warning("%s: burst verdict not written: %s", self.shown_name(path), result.error)
            return
        if result.error:
            # Rated again once it can be: its burst goes on without it meanwhile.
            self.bursts.remove(path, time.monotonic())
            if self._left_alone(path, time.time()):
                return  # its raw arrived while it was analysed
            trouble = folder_trouble(path.parent, result.waits_for)
            if trouble is not None:
                self.blocked.wait_for_folder(path, trouble, result.error)
            else:
                self._attempt_failed(path, result.error)
            return
        self.bursts.wrote(path)
        verdict = {
            "stars": result.rating.stars if result.rating else None,
            "label": result.rating.label if result.rating else None,
            "result": result.as_json(),
        }
        if rejudge:
            self.journal.rejudged(path, now=time.time(), **verdict)
        else:
            before = self.journal.get(path)
            self.journal.rated(path, elapsed_ms=result.elapsed_ms, now=time.time(), **verdict)
            if path.parent in self.blocked:
                self.blocked.unblock(path.parent)
            if before is not None and before.rated_count > 0:
                self.shared.tally.rerated += 1
            else:
                self.shared.tally.rated += 1
            self.shared.tally.count_today()
            self.on_result(result)
            for sibling in withdraw_second_truths(path, self.config, result.same_stem):
                row = self.journal.get(sibling)
                if row is not None and row.status == "rated":
                    self.journal.skip(sibling, RAW_RATED_INSTEAD, time.time())
                    self.bursts.remove(sibling, time.monotonic())  # not a frame of its own
            self._leave_alone_rated_siblings(path, result.same_stem)
        if burst is not None:
            log.info(
                "%s: burst %04d of %d%s: %s*",
                self.shown_name(path),
                burst.burst_id,
                burst.size,
                ", best of burst" if burst.best_of_burst else "",
                verdict["stars"],
            )
        elif rejudge:
            log.info("%s: no longer in a burst: %s*", self.shown_name(path), verdict["stars"])

    def _load_folder(self, folder: Path) -> None:
        """The frames rated in ``folder`` before (an earlier run, or before the folder
        left memory), from the journal's analyses: a late frame joins their bursts."""
        if self.bursts.is_loaded(str(folder)):
            return
        frames = []
        for row in self.journal.rated_in(folder):
            scored = self._stored_analysis(row)
            if scored is not None and judged(scored) and scored.capture_time is not None:
                frames.append(frame_of(scored, self.config.rating))
        self.bursts.load(str(folder), frames, time.monotonic())

    def _stored_analysis(self, row: Row) -> Scored | None:
        """A rated file's analysis as the journal keeps it, if its file is still there."""
        # os.path.exists: a photo that cannot be looked at any more (EIO, ESTALE) has no
        # analysis at hand either; Path.exists would raise, and stop the daemon.
        if row.status != "rated" or not row.fingerprint or not os.path.exists(row.path):
            return None
        scored = self._cached(row.fingerprint)
        return None if scored is None else replace(scored, path=row.path)

    def _on_the_way(self) -> dict[str, list[datetime | None]]:
        """Per folder, the capture times of files being analysed: they may join a burst."""
        coming: dict[str, list[datetime | None]] = {}
        for job in self.jobs.values():
            coming.setdefault(str(job.path.parent), []).append(job.capture_time)
        for _, scored, _ in self._early:
            coming.setdefault(str(scored.path.parent), []).append(scored.capture_time)
        return coming

    def _release_bursts(self, everything: bool = False, budget: float | None = None) -> None:
        """Write the sidecars held for their bursts, once the bursts are complete: frames
        of a dump for the first time, and frames whose burst changed (a late frame joined)
        again.

        With a ``budget`` (seconds, when stopping) first ratings go first, then the best
        frames of bursts, and the rest is left once it runs out: a copy of 2,000 frames of
        one scene held 500 rewrites per folder and kept SIGTERM waiting far past the
        service manager's patience. A frame rated before keeps that rating; one not rated
        yet is rated after the restart."""
        ready = self.bursts.ready(time.monotonic(), self._on_the_way(), everything=everything)
        if budget is not None:
            ready.sort(
                key=lambda path: (
                    path not in self._deferred,
                    not getattr(self.bursts.burst_of(path), "best_of_burst", False),
                )
            )
        deadline = time.monotonic() + (budget if budget is not None else float("inf"))
        for done, path in enumerate(ready):
            if time.monotonic() > deadline:
                left = ready[done:]
                unrated = sum(1 for p in left if p in self._deferred)
                log.warning(
                    "stopping: %d frame%s of bursts keep their own rating (no time to write "
                    "the burst's verdict), %d not rated yet (rated after the restart)",
                    len(left) - unrated,
                    "" if len(left) - unrated == 1 else "s",
                    unrated,
                )
                return
            if path in self._deferred:
                self._rate_deferred(path)
            else:
                self._rejudge(path)

    def _rate_deferred(self, path: Path) -> None:
        scored, sig = self._deferred.pop(path)
        now = time.time()
        try:
            current = Signature.of(os.stat(path))
        except OSError as exc:
            self.bursts.remove(path, time.monotonic())
            self._unreachable(path, exc, now)
            return
        if current != sig:
            # Written again while it waited for its burst: rate the new bytes.
            self.bursts.remove(path, time.monotonic())
            self.journal.resettle(path, current, now + self.config.daemon.settle_seconds, now)
            return
        self._write(scored, burst=self.bursts.burst_of(path))

    def _rejudge(self, path: Path) -> None:
        """A rated frame whose burst changed: its sidecar is written again with it."""
        burst = self.bursts.burst_of(path)
        if burst == self.bursts.written(path):
            self.bursts.wrote(path)  # changed and changed back: the sidecar says it already
            return
        row = self.journal.get(path)
        scored = None if row is None else self._stored_analysis(row)
        if scored is None:
            # Changed or gone since its rating (it is rated again, or forgotten), or its
            # analysis is no longer kept.
            self.bursts.let_go(path)
            log.debug("%s: burst changed, its analysis is not at hand", self.shown_name(path))
            return
        self._write(scored, burst=burst, rejudge=True)

    def _left_alone(self, path: Path, now: float) -> bool:
        """DSC_0001.DNG beside DSC_0001.NEF with only shared-name profiles: the raw writes
        DSC_0001.xmp, this file writes nothing. Skipped, as the README says; not a failure."""
        reason = left_alone_reason(path, self.config.sidecar.profiles)
        if reason is None:
            return False
        self.journal.skip(path, reason, now)
        log.info("%s: %s", self.shown_name(path), reason.removeprefix(f"{path.name}: "))
        return True

    def _leave_alone_rated_siblings(self, path: Path, same_stem: Iterable[str] | None) -> None:
        """DSC_0001.DNG rated alone before DSC_0001.NEF arrived: the raw has now written
        DSC_0001.xmp, so the DNG is shown left alone, with why (as when it comes second),
        not as a second rating of the photo. Under darktable/digikam it keeps its own."""
        names = same_stem_names(path) if same_stem is None else list(same_stem)
        for name in names:
            sibling = path.with_name(name)
            if sibling == path:
                continue
            row = self.journal.get(sibling)
            if row is None or row.status != "rated":
                continue
            reason = left_alone_reason(sibling, self.config.sidecar.profiles, names)
            if reason is not None:
                self.journal.skip(sibling, reason, time.time())
                self.bursts.remove(sibling, time.monotonic())  # not a frame of its own
                log.info("%s: %s", self.shown_name(sibling), reason.removeprefix(f"{name}: "))

    def _attempt_failed(self, path: Path, reason: str) -> None:
        daemon = self.config.daemon
        retry = self.journal.attempt_failed(
            path,
            reason,
            time.time(),
            max_retries=daemon.max_retries,
            backoff=daemon.retry_backoff_seconds,
        )
        if retry:
            row = self.journal.get(path)
            wait_s = (row.due_at or time.time()) - time.time()
            log.warning("%s: %s; retrying in %.1f s", self.shown_name(path), reason, max(wait_s, 0))
        else:
            self.shared.tally.failed += 1
            log.error("%s: failed: %s", self.shown_name(path), reason)

    def _photo_os_error(self, path: Path, exc: OSError) -> None:
        """The backstop: an OS error on one photo that no step foresaw (a card or an NFS
        mount failing under a look at its folder, its sidecar or the photo) is that
        photo's failed attempt, retried with backoff and then failed with its reason;
        never the daemon's end, which would reach the same photo again at every restart."""
        for job_id in [i for i, job in self.jobs.items() if job.path == path]:
            del self.jobs[job_id]  # its analysis, if one comes back, is not waited for
        self._deferred.pop(path, None)
        self.bursts.remove(path, time.monotonic())
        log.debug("%s: unforeseen OS error", self.shown_name(path), exc_info=exc)
        self._unreachable(path, exc, time.time())

    def _unreachable(self, path: Path, exc: OSError, now: float) -> None:
        """The photo could not be looked at: gone when its name is, otherwise (EIO on a
        failing card, ESTALE on NFS, a permission) a failed attempt, retried like any."""
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            self._gone(path, now)
        else:
            self._attempt_failed(path, f"cannot read file ({exc.strerror or exc})")

    def _gone(self, path: Path, now: float) -> None:
        """Deleted or renamed away between its event and its rating: one line, no sidecar."""
        self.journal.skip(path, GONE, now)
        log.info(
            "%s: gone before it was rated (deleted, renamed or its card pulled)",
            self.shown_name(path),
        )

    def _worker_died(self, message: WorkerDied) -> None:
        job = self.jobs.pop(message.job, None) if message.job is not None else None
        if job is None:
            if not self.should_exit:
                log.warning("a worker process ended (exit status %s); replaced", message.exitcode)
            return
        if self.should_exit:
            self.journal.unclaim(job.path, time.time(), time.time())
            return
        if job.id in self._timed_out:
            self._timed_out.discard(job.id)
            reason = f"analysis took longer than {TASK_TIMEOUT_SECONDS:.0f} s; stopped"
        elif job.id in self._bloated:
            self._bloated.discard(job.id)
            reason = "decoding it needed too much memory; stopped"
        else:
            reason = f"the decoder crashed on this file (worker exit status {message.exitcode})"
        self._attempt_failed(job.path, reason)

    def _recover_interrupted_sidecars(self) -> None:
        """After a kill between sidecar write and journal commit: a sidecar that is already
        written counts as rated, so a restart never rates a file twice."""
        for row in self.journal.recover(time.time()):
            written = sidecar_paths(row.path, self.config.sidecar.profiles)
            try:
                done = all(
                    p.stat().st_mtime >= row.sidecar_started - 1.0
                    and "Xmp.postselect.KeeperProbability" in read_sidecar(p)
                    for p in written
                )
            except Exception:
                done = False
            if done:
                self.journal.rated(
                    row.path,
                    stars=None,
                    label=None,
                    result=None,
                    elapsed_ms=None,
                    now=time.time(),
                )
                log.info(
                    "%s: its sidecar was written before the restart", self.shown_name(row.path)
                )

    # --- watches, scans, reloads ---------------------------------------------------

    def _check_watch_folders(self, config: Config) -> None:
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

    def _add_watch(self, folder: WatchFolder, reason: str) -> str:
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

    def _rescan_all(self, reason: str) -> None:
        log.info("rescanning watched folders: %s", reason)
        for folder in self.config.watch:
            if self.watcher.is_attached(folder.path):
                self.scanner.request(
                    folder.path, folder.recursive, self._since.get(folder.path), reason
                )

    def _schedule_rescan(self) -> None:
        minutes = self.config.daemon.rescan_interval_minutes
        self._next_rescan = time.monotonic() + minutes * 60 if minutes > 0 else 0.0

    def _check_folders(self) -> None:
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

    def _with_watches(self, config: Config) -> Config:
        watches = list(config.watch)
        known = {w.path for w in watches}
        watches += [w for w in self.extra_watches if w.path not in known]
        if not watches:
            watches = [WatchFolder(path=default_inbox())]
        return config.model_copy(update={"watch": watches})

    def _reload(self) -> None:
        try:
            new, source = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config reload refused, the running config stays: %s", exc)
            return
        new = self._with_watches(new)
        try:
            self._check_watch_folders(new)
        except DaemonError as exc:
            log.error("config reload refused, the running config stays: %s", exc)
            return
        old = self.config
        self.config = new
        self.config_source = source
        old_paths = {w.path: w for w in old.watch}
        new_paths = {w.path: w for w in new.watch}
        for path, folder in old_paths.items():
            if new_paths.get(path) != folder:
                self.watcher.remove(path)
        added = [
            self._add_watch(f, "config reload")
            for p, f in new_paths.items()
            if old_paths.get(p) != f
        ]
        if old.analysis != new.analysis or self._worker_count(old) != self._worker_count(new):
            self._pool_stale = True  # replaced once the files in hand are done
        if old.daemon.rescan_interval_minutes != new.daemon.rescan_interval_minutes:
            self._schedule_rescan()
        if not self.log_level_fixed:
            logging.getLogger().setLevel(new.log_level.upper())
        log.info(
            "config reloaded from %s%s",
            source,
            (": now also watching " + "; ".join(added)) if added else "",
        )

    def _new_model(self) -> None:
        self._pool_stale = True  # the workers load the new model

    def _replace_pool(self) -> None:
        self._pool_stale = False
        self.pool.close()
        self.pool = WorkerPool(self._worker_count(), self.config.analysis, self._post)
        log.info("worker pool restarted with %d workers for the new config", self.pool.size)

    def _worker_count(self, config: Config | None = None) -> int:
        setting = (config or self.config).daemon.workers
        return default_workers() if setting == "auto" else int(setting)

    def _wait_for_workers(self) -> None:
        """The first worker's model load says whether the models work at all."""
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while not self.should_exit and time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(message, WorkerReady):
                if message.error:
                    raise DaemonError(f"models unusable: {message.error}")
                return
            if isinstance(message, WorkerDied):
                raise DaemonError(
                    f"a worker process died while starting (exit status {message.exitcode})",
                    retry=True,
                )
        if not self.should_exit:
            raise DaemonError(
                f"the worker processes did not start within {WORKER_START_TIMEOUT:.0f} s",
                retry=True,
            )

    # --- a journal that cannot be written ------------------------------------------

    def _journal_full(self, exc: JournalFull) -> None:
        """The journal's disk is full (or over quota, or failing): say so once, and rate
        nothing more until it can be recorded. The results in hand are let go: their
        files are still queued in the journal and are analysed again (from the cache)."""
        if self.shared.journal_full_since is None:
            self.shared.journal_full_since = time.monotonic()
            log.warning(
                "%s; nothing is rated until there is space again (photos that arrive "
                "meanwhile are found then)",
                exc,
            )
        for path in list(self._deferred):
            self.bursts.remove(path, time.monotonic())
        self._deferred.clear()
        self.manager.notify_status()

    def _wait_for_journal_space(self, now_m: float) -> float:
        """The turn of the loop while the journal cannot be written: keep the service
        manager informed, and look for space every FOLDER_CHECK_SECONDS once the workers
        are done with what they held."""
        self.manager.ping(now_m)
        if now_m >= self._next_folder_check:
            self._next_folder_check = now_m + FOLDER_CHECK_SECONDS
            for job in self.pool.kill_stuck(TASK_TIMEOUT_SECONDS):
                self._timed_out.add(job)
            if not self.jobs and self.journal.can_write(time.time()):
                waited = now_m - self.shared.journal_full_since
                self.shared.journal_full_since = None
                self._early.clear()
                log.info("the journal has space again after %.0f s: rating resumes", waited)
                self._recover_interrupted_sidecars()
                self._rescan_all("the journal had no space")
        self.manager.notify_status()
        return min(FOLDER_CHECK_SECONDS, self.manager.sleep_limit(now_m))

    def _prune_some(self, limit: int = PRUNE_BATCH) -> None:
        """One batch of the journal's rows checked for photos no longer there."""
        if not self._pruning:
            return
        root, (after, forgotten) = next(iter(self._pruning.items()))
        if not (self.watcher.is_attached(root) and root.is_dir()):
            del self._pruning[root]  # a card pulled out: its photos are not gone
            return
        keep = frozenset(self._deferred) | {job.path for job in self.jobs.values()}
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
