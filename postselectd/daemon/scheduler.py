"""Settled files to the workers: the worker pool, the jobs it holds, and a photo's way to
a retry (a failed attempt, with backoff), or out of the queue without a rating (gone,
left alone for its raw)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from postselectd.config import Config
from postselectd.daemon.blocked import FOLDER_RETRY_SECONDS, BlockedFolders
from postselectd.daemon.shared import DaemonError, Part, Shared
from postselectd.photos import (
    JPEG_SUFFIXES,
    Signature,
    fingerprint,
    has_raw_sibling,
    left_alone_reason,
)
from postselectd.pipeline import default_workers
from postselectd.stages import RecordError, Scored, capture_time_of, scored_from_record, worker_body
from postselectd.state import GONE, Row
from postselectd.versions import ModelError, analysis_version
from postselectd.workers import TASK_TIMEOUT_SECONDS, WorkerDied, WorkerPool

log = logging.getLogger(__name__)

# A file whose writer's close (or final rename) was seen only needs a short recheck: long
# enough for a writer that closes and reopens at once (preallocate, then fill; a tethering
# tool appending) to be seen changing, short enough that close -> sidecar stays near
# 0.2 s. A change after the recheck is a new arrival: the file is rated again.
CLOSED_SETTLE_SECONDS = 0.2
# An idle worker starts on a file this long before its quiet time is over; the result
# waits for the end of the quiet time, and is dropped if the file changed meanwhile. The
# analysis (~0.1 s) then overlaps the recheck instead of following it: close -> sidecar
# in ~0.2 s instead of ~0.3 s (bench/latency.py).
EARLY_START_SECONDS = CLOSED_SETTLE_SECONDS
RAW_RATED_INSTEAD = "a raw of the same name is rated instead"


@dataclass
class Job:
    id: int
    path: Path
    sig: Signature
    fingerprint: str | None
    quiet_until: float = 0.0  # time.time() at which the file's quiet time ends
    capture_time: datetime | None = None  # from its EXIF: which burst it may join


class Scheduler(Part):
    """Hands due files to idle workers. ``analysed``: where a result found in the cache
    goes (as a worker's would); ``os_error``: the backstop for an OS error on one photo."""

    def __init__(
        self,
        shared: Shared,
        blocked: BlockedFolders,
        post: Callable[[object], None],
        analysed: Callable[..., None],
        os_error: Callable[[Path, OSError], None],
    ):
        super().__init__(shared)
        self.blocked = blocked
        self.post = post  # the workers' results and deaths go into the inbox
        self.analysed = analysed
        self.os_error = os_error
        self.pool: WorkerPool | None = None
        # The analyses kept in the journal are those of versions.analysis_version (models
        # and analysis code); of them, a photo copied again is rated from one only when it
        # was made with the models the workers rate with now (``model_version``: as their
        # last analysis said; None after a start or a new pool, a personal model swapped).
        self.analysis_version = ""
        self.model_version: str | None = None
        # Replace the pool (a new model or analysis config) once the files in hand are done.
        self.pool_stale = False
        self.jobs: dict[int, Job] = {}
        self._job_ids = 0
        self._timed_out: set[int] = set()
        self._bloated: set[int] = set()

    # --- the pool --------------------------------------------------------------------

    def start_pool(self) -> None:
        try:
            self.analysis_version = analysis_version()
        except (ModelError, OSError) as exc:
            raise DaemonError(str(exc)) from None
        try:
            self.pool = WorkerPool(
                self.worker_count(), worker_body(self.config.analysis), self.post
            )
        except OSError as exc:  # EAGAIN, EMFILE: the ones started are ended already
            raise DaemonError(
                f"cannot start the worker processes: {exc.strerror or exc}", retry=True
            ) from None

    def renew_pool(self) -> None:
        """The workers start again (a new model, a new analysis config) once the files
        they hold are done."""
        self.pool_stale = True

    def replace_pool(self) -> None:
        self.pool_stale = False
        self.model_version = None
        self.pool.close()
        self.pool = WorkerPool(self.worker_count(), worker_body(self.config.analysis), self.post)
        log.info("worker pool restarted with %d workers for the new config", self.pool.size)

    def worker_count(self, config: Config | None = None) -> int:
        setting = (config or self.config).daemon.workers
        return default_workers() if setting == "auto" else int(setting)

    def tick(self) -> None:
        if self.pool_stale and not self.jobs:
            self.replace_pool()

    def kill_stuck(self) -> None:
        """A worker on one file for TASK_TIMEOUT_SECONDS is killed (a decoder in an endless
        loop); its file's attempt fails with that reason when its death is heard."""
        for job in self.pool.kill_stuck(TASK_TIMEOUT_SECONDS):
            self._timed_out.add(job)

    def kill_bloated(self) -> None:
        for job in self.pool.kill_bloated():
            if job is not None:
                self._bloated.add(job)

    def sleep_limit(self) -> float:
        """How long the loop may sleep before the next file is due to a worker."""
        next_due = self.journal.next_due()
        if next_due is not None and not self.pool_stale and self.pool.idle() > 0:
            return max(0.0, next_due - EARLY_START_SECONDS - time.time())
        return float("inf")

    # --- dispatch: settled files to workers ------------------------------------------

    def dispatch(self) -> None:
        if self.pool_stale or self.should_exit or self.shared.journal_full_since is not None:
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
                    self.os_error(row.path, exc)

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
            self.unreachable(path, exc, now)
            return
        sig = Signature.of(st)
        if sig != row.signature:
            # Still being written: look again once it has been quiet for the settle time.
            self.journal.resettle(path, sig, now + self.config.daemon.settle_seconds, now)
            return
        if path.suffix.lower() in JPEG_SUFFIXES and has_raw_sibling(path):
            self.journal.skip(path, RAW_RATED_INSTEAD, now)
            return
        if self.left_alone(path, now):
            return
        try:
            fp = fingerprint(path, sig.size)
        except OSError as exc:
            self.attempt_failed(path, f"cannot read file ({exc.strerror or exc})")
            return
        self._job_ids += 1
        job = Job(self._job_ids, path, sig, fp, quiet_until=row.due_at or now)
        cached = self.cached(fp)
        if cached is not None:
            # The same content was analysed before (a re-copy or a rename): reuse it, but
            # this name still gets its own sidecar.
            self.journal.claim(path, fp, now)
            self.jobs[job.id] = job
            self.analysed(job.id, replace(cached, path=path), cached=True)
            return
        if self.pool.submit(job.id, path):
            job.capture_time = capture_time_of(path)
            self.journal.claim(path, fp, now)
            self.jobs[job.id] = job

    def cached(self, fp: str) -> Scored | None:
        """The analysis of identical content seen before (a re-copy, a rename), or None."""
        record = self.journal.cached_analysis(fp, self.analysis_version)
        if record is None:
            return None
        try:
            scored = scored_from_record(record)
        except RecordError as exc:
            log.debug("cached analysis %s not used: %s", fp[:12], exc)
            return None
        if scored.analysis is None or scored.analysis.model_version != self.model_version:
            return None  # rated with another model (or none is known yet): analysed again
        return scored

    def take(self, job_id: int) -> Job | None:
        """The job an analysis came back for; None when it is no longer waited for."""
        return self.jobs.pop(job_id, None)

    def drop(self, path: Path) -> None:
        """Stop waiting for this photo's analysis, if one comes back."""
        for job_id in [i for i, job in self.jobs.items() if job.path == path]:
            del self.jobs[job_id]  # its analysis, if one comes back, is not waited for

    # --- a photo's way out: retried, gone, left alone --------------------------------

    def left_alone(self, path: Path, now: float) -> bool:
        """DSC_0001.DNG beside DSC_0001.NEF with only shared-name profiles: the raw writes
        DSC_0001.xmp, this file writes nothing. Skipped, as the README says; not a failure."""
        reason = left_alone_reason(path, self.config.sidecar.profiles)
        if reason is None:
            return False
        self.journal.skip(path, reason, now)
        log.info("%s: %s", self.shown_name(path), reason.removeprefix(f"{path.name}: "))
        return True

    def attempt_failed(self, path: Path, reason: str) -> None:
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

    def unreachable(self, path: Path, exc: OSError, now: float) -> None:
        """The photo could not be looked at: gone when its name is, otherwise (EIO on a
        failing card, ESTALE on NFS, a permission) a failed attempt, retried like any."""
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            self.gone(path, now)
        else:
            self.attempt_failed(path, f"cannot read file ({exc.strerror or exc})")

    def gone(self, path: Path, now: float) -> None:
        """Deleted or renamed away between its event and its rating: one line, no sidecar."""
        self.journal.skip(path, GONE, now)
        log.info(
            "%s: gone before it was rated (deleted, renamed or its card pulled)",
            self.shown_name(path),
        )

    def worker_died(self, message: WorkerDied) -> None:
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
        self.attempt_failed(job.path, reason)
