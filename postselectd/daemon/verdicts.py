"""From an analysis to a sidecar: a result waits out its file's quiet time, joins its
folder's bursts, is held for its burst's verdict while a dump comes in (deferred), and is
written by finish() in the one place sidecars are written; a sidecar written before a kill
counts as rated at the next start (recovery)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from postselectd.bursts import BurstBook, BurstInfo
from postselectd.daemon.blocked import BlockedFolders, folder_trouble
from postselectd.daemon.scheduler import EARLY_START_SECONDS, RAW_RATED_INSTEAD, Job, Scheduler
from postselectd.daemon.shared import Part, Shared
from postselectd.photos import Signature, left_alone_reason, same_stem_names
from postselectd.preview import cut_previews_text
from postselectd.sidecar import read_sidecar, sidecar_paths
from postselectd.stages import (
    FileResult,
    Scored,
    finish,
    frame_of,
    judged,
    scored_record,
    withdraw_second_truths,
)
from postselectd.state import Row

log = logging.getLogger(__name__)

# The frames of a folder where nothing arrived for this long leave memory; a late frame
# of one of its bursts loads them again from the journal.
IDLE_FOLDER_SECONDS = 600.0


class Verdicts(Part):
    """Results in, sidecars out. ``on_result``: told of each file rated (the CLI prints it)."""

    def __init__(
        self,
        shared: Shared,
        scheduler: Scheduler,
        blocked: BlockedFolders,
        on_result: Callable[[FileResult], None],
    ):
        super().__init__(shared)
        self.scheduler = scheduler
        self.blocked = blocked
        self.on_result = on_result
        # Analysed before their quiet time was over: (job, result, from the cache).
        self.early: list[tuple[Job, Scored, bool]] = []
        # Every frame of the folders being rated, grouped into bursts as `score DIR` would.
        self.bursts = BurstBook()
        # Analysed while other files were queued (a dump): their one sidecar waits for the
        # burst's verdict. The signature is the file's when it was analysed.
        self.deferred: dict[Path, tuple[Scored, Signature]] = {}

    def tick(self) -> None:
        self.settle_early()
        self.release_bursts()

    def sleep_limit(self) -> float:
        """How long the loop may sleep before an early result's quiet time is over."""
        if self.early:
            quiet = min(job.quiet_until for job, _, _ in self.early)
            return max(0.0, quiet - time.time())
        return float("inf")

    def unload_idle(self, now_m: float) -> None:
        self.bursts.unload_idle(now_m, IDLE_FOLDER_SECONDS)

    def forget(self, path: Path) -> None:
        """A frame that is no longer there (renamed away) leaves its burst."""
        self.bursts.remove(path, time.monotonic())

    def in_hand(self) -> frozenset[Path]:
        """The photos being analysed or waiting for their burst: not gone, whatever the
        journal's pass over the folder sees."""
        return frozenset(self.deferred) | {job.path for job in self.scheduler.jobs.values()}

    def let_go_deferred(self) -> None:
        """The sidecars held for their bursts are not written (the journal cannot record
        them): their files are still queued, and are rated again later."""
        for path in list(self.deferred):
            self.bursts.remove(path, time.monotonic())
        self.deferred.clear()

    # --- results -------------------------------------------------------------------

    def analysed(self, job_id: int, scored: Scored, cached: bool = False) -> None:
        job = self.scheduler.take(job_id)
        if job is None:
            return
        if time.time() < job.quiet_until:
            # Started early (a worker was idle): judged once the file has been quiet.
            self.early.append((job, scored, cached))
            return
        try:
            self._settled(job, scored, cached)
        except OSError as exc:
            self.photo_os_error(job.path, exc)

    def settle_early(self, everything: bool = False) -> None:
        """Results of early starts whose quiet time is over (all of them: ``everything``)."""
        now = time.time()
        ready, waiting = [], []
        for item in self.early:
            (ready if everything or item[0].quiet_until <= now else waiting).append(item)
        self.early = waiting
        for job, scored, cached in ready:
            try:
                self._settled(job, scored, cached)
            except OSError as exc:
                self.photo_os_error(job.path, exc)

    def _settled(self, job: Job, scored: Scored, cached: bool) -> None:
        """A file's analysis, once the file has been quiet: rated, unless it changed."""
        now = time.time()
        try:
            st = os.stat(job.path)
        except OSError as exc:
            self.scheduler.unreachable(job.path, exc, now)
            return
        sig = Signature.of(st)
        if sig != job.sig:
            # Rewritten while it was analysed: that analysis is of bytes no longer there.
            self.journal.resettle(job.path, sig, now + self.config.daemon.settle_seconds, now)
            return
        if scored.analysis is None:
            if not self._waits_for_the_rest(job.path, st, scored, now):
                self.scheduler.attempt_failed(job.path, scored.error or "no analysis")
            return
        if not cached:
            self.scheduler.model_version = scored.analysis.model_version
        if job.fingerprint and not cached:
            try:
                record = scored_record(scored)
            except TypeError as exc:  # a field the record cannot hold: just not cached
                log.debug("%s: analysis not cached: %s", self.shown_name(job.path), exc)
            else:
                # Kept even while the file waits for the rest: unchanged, its next look
                # takes no worker.
                self.journal.store_analysis(
                    job.fingerprint, self.scheduler.analysis_version, record, now
                )
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
        if self.scheduler.jobs or self.early:
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
        self.deferred.pop(path, None)  # analysed again: this analysis supersedes it
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
                self.scheduler.unreachable(path, exc, time.time())
                return
            self.deferred[path] = (scored, sig)
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
            if self.scheduler.left_alone(path, time.time()):
                return  # its raw arrived while it was analysed
            trouble = folder_trouble(path.parent, result.waits_for)
            if trouble is not None:
                self.blocked.wait_for_folder(path, trouble, result.error)
            else:
                self.scheduler.attempt_failed(path, result.error)
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
        scored = self.scheduler.cached(row.fingerprint)
        return None if scored is None else replace(scored, path=row.path)

    # --- bursts held for their verdict ---------------------------------------------

    def _on_the_way(self) -> dict[str, list[datetime | None]]:
        """Per folder, the capture times of files being analysed: they may join a burst."""
        coming: dict[str, list[datetime | None]] = {}
        for job in self.scheduler.jobs.values():
            coming.setdefault(str(job.path.parent), []).append(job.capture_time)
        for _, scored, _ in self.early:
            coming.setdefault(str(scored.path.parent), []).append(scored.capture_time)
        return coming

    def release_bursts(self, everything: bool = False, budget: float | None = None) -> None:
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
                    path not in self.deferred,
                    not getattr(self.bursts.burst_of(path), "best_of_burst", False),
                )
            )
        deadline = time.monotonic() + (budget if budget is not None else float("inf"))
        for done, path in enumerate(ready):
            if time.monotonic() > deadline:
                left = ready[done:]
                unrated = sum(1 for p in left if p in self.deferred)
                log.warning(
                    "stopping: %d frame%s of bursts keep their own rating (no time to write "
                    "the burst's verdict), %d not rated yet (rated after the restart)",
                    len(left) - unrated,
                    "" if len(left) - unrated == 1 else "s",
                    unrated,
                )
                return
            if path in self.deferred:
                self._rate_deferred(path)
            else:
                self._rejudge(path)

    def _rate_deferred(self, path: Path) -> None:
        scored, sig = self.deferred.pop(path)
        now = time.time()
        try:
            current = Signature.of(os.stat(path))
        except OSError as exc:
            self.bursts.remove(path, time.monotonic())
            self.scheduler.unreachable(path, exc, now)
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

    # --- the backstop, and recovery after a kill -----------------------------------

    def photo_os_error(self, path: Path, exc: OSError) -> None:
        """The backstop: an OS error on one photo that no step foresaw (a card or an NFS
        mount failing under a look at its folder, its sidecar or the photo) is that
        photo's failed attempt, retried with backoff and then failed with its reason;
        never the daemon's end, which would reach the same photo again at every restart."""
        self.scheduler.drop(path)  # its analysis, if one comes back, is not waited for
        self.deferred.pop(path, None)
        self.bursts.remove(path, time.monotonic())
        log.debug("%s: unforeseen OS error", self.shown_name(path), exc_info=exc)
        self.scheduler.unreachable(path, exc, time.time())

    def recover_interrupted_sidecars(self) -> None:
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
