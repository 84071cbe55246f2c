"""`postselectd run`: the lifecycle of the background service, read top to bottom.

    run() -> startup() -> main_loop() -> shutdown()

The only module that knows about threads, processes, signals and the service manager.
Threads (watchdog's observers, one scanner, the worker pool's listener) only put small
messages into one bounded inbox; the main thread does everything else, so the journal
has one writer and sidecars are written one at a time:

    observers/scanner --Arrived/Scanned--> inbox --> main: journal (pending, settle)
    main --(due, settled, fingerprint)--> a worker process --Analysed--> inbox
    main: finish() (rating + sidecar) --> journal (rated / retry / failed)

The parts, each owning its state: intake.py (arrivals, watches, scans), scheduler.py
(the workers and the jobs they hold), verdicts.py (bursts, deferral, the sidecar
write, recovery), blocked.py (folders no sidecar can be written into), learning.py,
manager.py (the service manager, the state lock). This module composes them: a
message goes to the handler its type names, and a turn of the loop is the parts' ticks.

A signal only flips ``should_exit`` (a second one forces the exit); SIGHUP asks for a
config reload, which a bad config refuses while the old one keeps running.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from postselectd import __version__
from postselectd.config import Config, ConfigError, WatchFolder, load_config
from postselectd.daemon.blocked import BlockedFolders
from postselectd.daemon.intake import Arrived, Intake, ScanDone, Scanned, with_watches
from postselectd.daemon.learning import Learning
from postselectd.daemon.manager import Manager, local_midnight
from postselectd.daemon.scheduler import Scheduler
from postselectd.daemon.shared import DaemonError, Part, Shared
from postselectd.daemon.verdicts import Verdicts
from postselectd.stages import FileResult, Scored
from postselectd.state import Journal, JournalError, JournalFull
from postselectd.workers import Analysed, WorkerDied, WorkerReady

log = logging.getLogger(__name__)

# The main loop wakes at least this often (signals, watchdog pings, folder checks).
TICK_SECONDS = 1.0
FOLDER_CHECK_SECONDS = 2.0
# SIGTERM: finish what the workers hold for at most this long, then re-queue the rest.
DRAIN_SECONDS = 7.0
# A stop ends every open burst: their sidecars are rewritten for at most this long, the
# best frames first (theirs gain a star); the rest keep the rating they already have.
STOP_BURSTS_SECONDS = 2.0
WORKER_START_TIMEOUT = 120.0


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
        self.log_level_fixed = log_level_fixed  # --log-level given: a reload keeps it
        super().__init__(Shared(with_watches(config, self.extra_watches)))
        self.force_exit = False
        self.reload_requested = False
        self.inbox: queue.Queue = queue.Queue(maxsize=self.config.daemon.queue_size)
        self._next_folder_check = 0.0  # monotonic
        self._exit_code = 0
        self._started = False
        # The parts, each given what it talks to: no part knows this module.
        self.manager = Manager(self.shared, environ, working_on=lambda: len(self.scheduler.jobs))
        self.blocked = BlockedFolders(self.shared)
        self.scheduler = Scheduler(
            self.shared,
            self.blocked,
            post=self._post,
            analysed=self._analysed,
            os_error=self._photo_os_error,
        )
        self.verdicts = Verdicts(
            self.shared, self.scheduler, self.blocked, on_result=on_result or (lambda result: None)
        )
        self.learning = Learning(self.shared, new_model=self.scheduler.renew_pool)
        self.intake = Intake(
            self.shared,
            self.verdicts,
            self.learning,
            post=self._post,
            inbox=self.inbox,
            extra_watches=self.extra_watches,
            catch_up=catch_up,
            config_path=config_path,
        )
        # Each message of the inbox, by its type, to the part that handles it.
        self._handlers: dict[type, Callable] = {
            Arrived: lambda message: self.intake.arrived(message.arrival),
            Scanned: self.intake.scanned,
            Analysed: self._on_analysed,
            WorkerDied: self.scheduler.worker_died,
            ScanDone: self.intake.scan_done,
            WorkerReady: self._on_worker_ready,
        }

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
                if self.scheduler.pool is not None:
                    self.scheduler.pool.close(timeout=0.5 if self.force_exit else 3.0)
                for signum, previous in handlers.items():
                    signal.signal(signum, previous)
        return self._exit_code

    def startup(self) -> None:
        self.intake.check_watch_folders(self.config)
        state_dir = self.config.resolved_state_dir()
        self.manager.lock_state_dir(state_dir)
        try:
            self.journal = Journal(state_dir)
        except JournalError as exc:
            raise DaemonError(str(exc)) from None
        self.verdicts.recover_interrupted_sidecars()
        self.shared.tally.rated_today = self.journal.rated_since(local_midnight())
        self.scheduler.start_pool()
        self._wait_for_workers()
        if self.should_exit:
            return
        described = self.intake.start()
        pool = self.scheduler.pool
        log.info(
            "postselectd %s started (pid %d): watching %s with %d worker%s; config: %s",
            __version__,
            os.getpid(),
            "; ".join(described),
            pool.size,
            "" if pool.size == 1 else "s",
            self.config_source,
        )
        self.intake.schedule_rescan()
        self._started = True
        self.manager.notifier.notify("READY=1", f"STATUS={self.manager.status_text()}")

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
        self.manager.notifier.notify("STOPPING=1", "STATUS=stopping")
        self.learning.stop()
        self.intake.stop()
        jobs, verdicts = self.scheduler.jobs, self.verdicts
        # Finish what the workers hold (their sidecars are written whole, or not at all).
        deadline = time.monotonic() + DRAIN_SECONDS
        while jobs and not self.force_exit and time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(message, Analysed | WorkerDied):
                self._handle(message)
            elif isinstance(message, Arrived | Scanned):
                self._handle(message)  # recorded as pending; rated after the restart
        if verdicts.early and not self.force_exit:
            # At most EARLY_START_SECONDS from the end of their quiet time: see it out.
            time.sleep(max(0.0, max(job.quiet_until for job, _, _ in verdicts.early) - time.time()))
            verdicts.settle_early(everything=True)
        if self.scheduler.pool is not None:
            self.scheduler.pool.close(timeout=0.5 if self.force_exit else 3.0)
        queued = 0
        if self.journal is not None:
            try:
                if not self.force_exit and self.shared.journal_full_since is None:
                    verdicts.release_bursts(everything=True, budget=STOP_BURSTS_SECONDS)
                now = time.time()
                for job in [*jobs.values(), *(job for job, _, _ in verdicts.early)]:
                    self.journal.unclaim(job.path, now, now)
                for path in verdicts.deferred:  # not rated yet: rated after the restart
                    self.journal.unclaim(path, now, now)
            except JournalFull as exc:
                log.warning("%s: what was in progress is rated after the restart", exc)
            jobs.clear()
            verdicts.early.clear()
            verdicts.deferred.clear()
            queued = self.journal.counts()["pending"]
            self.journal.close()
        self.manager.notifier.close()
        self.manager.unlock_state_dir()
        if self.force_exit and self._exit_code == 0:
            self._exit_code = 1
        if not self._started:
            return  # it never started: the reason is the one line the user sees
        tally = self.shared.tally
        log.info(
            "postselectd stopped (pid %d)%s: rated %d, rated again %d (changed since their "
            "rating), failed %d in this run; %d still queued",
            os.getpid(),
            " (forced)" if self.force_exit else "",
            tally.rated,
            tally.rerated,
            tally.failed,
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

    # --- one turn of the loop ------------------------------------------------------

    def _tick(self) -> float:
        """Timers and dispatch, each part's in turn; returns how long the loop may sleep."""
        now_m = time.monotonic()
        if self.shared.journal_full_since is not None:
            return self._wait_for_journal_space(now_m)
        if self.reload_requested:
            self.reload_requested = False
            self._reload()
        if now_m >= self._next_folder_check:
            self._next_folder_check = now_m + FOLDER_CHECK_SECONDS
            self.intake.check_folders()
            self.blocked.tick(now_m)
            self.learning.tick()
            self.verdicts.unload_idle(now_m)
            self.scheduler.kill_stuck()
            self.scheduler.kill_bloated()
        self.intake.tick(now_m)
        self.scheduler.tick()
        self.verdicts.tick()
        self.scheduler.dispatch()
        self.intake.prune_some()
        self.manager.notify_status()
        self.manager.ping(now_m)
        # Sleep until the next file is due, a message arrives, or the next timer.
        return min(
            TICK_SECONDS,
            self.manager.sleep_limit(now_m),
            self.scheduler.sleep_limit(),
            self.verdicts.sleep_limit(),
            self.intake.sleep_limit(now_m),
        )

    def _handle(self, message: object) -> None:
        handler = self._handlers.get(type(message))
        if handler is not None:
            handler(message)

    def _on_analysed(self, message: Analysed) -> None:
        # Its worker is free: give it the next file before this one is rated (sidecar
        # and journal writes, ~10 ms), so the workers never wait on the writing.
        self.scheduler.dispatch()
        self.verdicts.analysed(message.job, message.scored)

    def _on_worker_ready(self, message: WorkerReady) -> None:
        if message.error:
            log.error("a worker cannot load the models: %s", message.error)

    # The scheduler is built before the verdicts it hands results to: these pass them on.

    def _analysed(self, job_id: int, scored: Scored, cached: bool = False) -> None:
        self.verdicts.analysed(job_id, scored, cached=cached)

    def _photo_os_error(self, path: Path, exc: OSError) -> None:
        self.verdicts.photo_os_error(path, exc)

    # --- reloads -------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            new, source = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config reload refused, the running config stays: %s", exc)
            return
        new = with_watches(new, self.extra_watches)
        try:
            self.intake.check_watch_folders(new)
        except DaemonError as exc:
            log.error("config reload refused, the running config stays: %s", exc)
            return
        old = self.config
        self.config = new
        self.config_source = source
        added = self.intake.rewatch(old, new)
        count = self.scheduler.worker_count
        if old.analysis != new.analysis or count(old) != count(new):
            self.scheduler.renew_pool()  # replaced once the files in hand are done
        if old.daemon.rescan_interval_minutes != new.daemon.rescan_interval_minutes:
            self.intake.schedule_rescan()
        if not self.log_level_fixed:
            logging.getLogger().setLevel(new.log_level.upper())
        log.info(
            "config reloaded from %s%s",
            source,
            (": now also watching " + "; ".join(added)) if added else "",
        )

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
        self.verdicts.let_go_deferred()
        self.manager.notify_status()

    def _wait_for_journal_space(self, now_m: float) -> float:
        """The turn of the loop while the journal cannot be written: keep the service
        manager informed, and look for space every FOLDER_CHECK_SECONDS once the workers
        are done with what they held."""
        self.manager.ping(now_m)
        if now_m >= self._next_folder_check:
            self._next_folder_check = now_m + FOLDER_CHECK_SECONDS
            self.scheduler.kill_stuck()
            if not self.scheduler.jobs and self.journal.can_write(time.time()):
                waited = now_m - self.shared.journal_full_since
                self.shared.journal_full_since = None
                self.verdicts.early.clear()
                log.info("the journal has space again after %.0f s: rating resumes", waited)
                self.verdicts.recover_interrupted_sidecars()
                self.intake.rescan_all("the journal had no space")
        self.manager.notify_status()
        return min(FOLDER_CHECK_SECONDS, self.manager.sleep_limit(now_m))
