"""The stages wired together for ``postselectd score``: preview -> analysis -> rating ->
sidecar.

Decoding and inference run in worker processes (each with its own onnxruntime session,
one thread each: faster than one process with two threads, and a decoder crash takes
down only a worker). Rating and sidecar writing are cheap and run in the caller (in
``score``, one writer thread while the workers go on), so sidecar writes are serialized.
The per-file stage itself is stages.py; the daemon drives it one file at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from postselectd import workers
from postselectd.bursts import MAX_GAP_SECONDS, group_bursts
from postselectd.config import AnalysisConfig, Config
from postselectd.photos import sidecar_profiles_for
from postselectd.sidecar import rated_with
from postselectd.stages import (
    FileResult,
    Scored,
    capture_time_of,
    finish,
    frame_of,
    judged,
    worker_body,
)

# Scored (stages.py) is also imported from here: ``from postselectd.pipeline import Scored``
# stays valid for the callers, benchmarks and tests that use it.

log = logging.getLogger(__name__)


def _order_key(path: Path, capture_time: datetime | None) -> tuple:
    """Folder, then capture time (unknown first), then name: the order files are rated in."""
    return (str(path.parent), capture_time or datetime.min, path.name)


def _capture_order(scored: Scored) -> tuple:
    return _order_key(scored.path, scored.capture_time)


class _Runs:
    """The files of a ``score`` call in capture order, cut into runs that bursts cannot
    cross: consecutive frames of a folder more than MAX_GAP_SECONDS apart (or without a
    capture time) are never in one burst, so each run can be judged on its own."""

    def __init__(self, paths: list[Path]) -> None:
        times = {path: capture_time_of(path) for path in paths}
        self.order = sorted(paths, key=lambda p: _order_key(p, times[p]))
        self._run_of: dict[Path, int] = {}
        self._left: dict[int, int] = {}
        self._members: dict[int, list[Scored]] = {}
        previous: Path | None = None
        run = -1
        for path in self.order:
            when = times[path]
            joins = (
                previous is not None
                and when is not None
                and times[previous] is not None
                and previous.parent == path.parent
                and (when - times[previous]).total_seconds() <= MAX_GAP_SECONDS
            )
            if not joins:
                run += 1
            self._run_of[path] = run
            self._left[run] = self._left.get(run, 0) + 1
            previous = path

    def run_of(self, path: Path) -> int:
        return self._run_of[path]

    def add(self, scored: Scored) -> list[Scored] | None:
        """Record one analysed file; returns its run once the run is complete."""
        run = self._run_of.get(scored.path)
        if run is None:
            return [scored]
        self._members.setdefault(run, []).append(scored)
        self._left[run] -= 1
        if self._left[run] > 0:
            return None
        del self._left[run]
        return self._members.pop(run)

    def rest(self) -> list[list[Scored]]:
        """Runs that never completed (only if a file was never reported back)."""
        rest = list(self._members.values())
        self._members.clear()
        return rest


def leave_rated(
    paths: Iterable[Path], config: Config, model_version: str
) -> tuple[list[Path], list[Path]]:
    """(to rate, already rated): the photos whose every sidecar holds a verdict by
    ``model_version`` are left alone, so a run that was stopped (Ctrl-C, a lost machine,
    a killed process) finishes when it is run again. Whole runs of ``_Runs`` at a time: a
    burst that was only partly written when it stopped is analysed again whole, so its
    frames are judged together, and the frames written already are left untouched (their
    sidecars say it all already: ``write_sidecar`` does not rewrite them)."""
    paths = list(paths)
    runs = _Runs(paths)
    members: dict[int, list[Path]] = {}
    for path in runs.order:
        members.setdefault(runs.run_of(path), []).append(path)
    to_rate: list[Path] = []
    rated: list[Path] = []
    for run in members.values():
        done = all(
            rated_with(path, sidecar_profiles_for(path, config.sidecar.profiles), model_version)
            for path in run
        )
        (rated if done else to_rate).extend(run)
    return to_rate, rated


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class PipelineError(Exception):
    """The run cannot go on (the workers cannot load the models); str() says why."""


class Pipeline:
    """Scores files with a pool of worker processes; rating and sidecars in this process."""

    def __init__(
        self,
        config: Config,
        *,
        workers: int | None = None,
        force: bool = False,
        dry_run: bool = False,
        task_timeout: float | None = None,
        worker_target: Callable | None = None,
        analyze_on: AnalyzeFiles | None = None,
    ):
        self.config = config
        self.workers = workers or default_workers()
        self.force = force
        self.dry_run = dry_run
        self.task_timeout = task_timeout
        self.worker_target = worker_target  # tests inject crashing/hanging workers
        # Where the files are analysed: this machine's worker processes (``analyze``), or
        # a Dask cluster's (cluster.ClusterAnalysis). Everything else is the same.
        self.analyze_on = analyze_on

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def score(
        self,
        paths: Iterable[Path],
        on_result: Callable[[FileResult], None] | None = None,
        on_analyzed: Callable[[Scored], None] | None = None,
    ) -> list[FileResult]:
        """Analyse every path, group bursts, rate and write sidecars; results in capture order.

        Sidecars are written while the workers go on with later files: a burst never has
        more than MAX_GAP_SECONDS between consecutive frames of a folder, so the capture
        times (read from each file's own EXIF, ~0.2-0.4 ms a file, before the workers are
        started) split the files into runs that are judged independently. A run is rated and
        written by a writer thread as soon as its last frame is analysed, and the files are
        analysed in capture order, so runs complete one after another.
        """
        paths = list(paths)
        runs = _Runs(paths)
        callbacks = threading.Lock()  # progress and per-file output: one at a time
        results: list[tuple[tuple, FileResult]] = []
        ready: queue.Queue = queue.Queue()
        failure: list[BaseException] = []
        used_ids: dict[str, set[int]] = {}  # burst numbers given, per folder

        def write() -> None:
            while (run := ready.get()) is not None:
                if failure:
                    continue  # drain after an error; the caller re-raises it
                try:
                    bursts = group_bursts(
                        (frame_of(s, self.config.rating) for s in run if judged(s)),
                        used_ids=used_ids,
                    )
                    for item in sorted(run, key=_capture_order):
                        result = finish(
                            item,
                            self.config,
                            burst=bursts.get(item.path),
                            force=self.force,
                            dry_run=self.dry_run,
                        )
                        results.append((_capture_order(item), result))
                        if on_result:
                            with callbacks:
                                on_result(result)
                except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                    failure.append(exc)

        def analysed(scored: Scored) -> None:
            if failure:
                # Writing failed (stdout closed under `score --json | head`): no point in
                # analysing the rest; the caller gets the writer's exception.
                raise failure[0]
            if on_analyzed:
                with callbacks:
                    on_analyzed(scored)
            run = runs.add(scored)
            if run is not None:
                ready.put(run)

        writer = threading.Thread(target=write, name="sidecars", daemon=True)
        writer.start()
        try:
            (self.analyze_on or self.analyze)(runs.order, analysed)
            for run in runs.rest():
                ready.put(run)
        finally:
            ready.put(None)
            writer.join()
        if failure:
            raise failure[0]
        results.sort(key=lambda pair: pair[0])
        return [result for _, result in results]

    def analyze(
        self, paths: Iterable[Path], on_analyzed: Callable[[Scored], None] | None = None
    ) -> list[Scored]:
        """Preview + analysis of every path in this machine's worker processes, in
        completion order (``PoolAnalysis``; its processes are stopped at the end)."""
        with PoolAnalysis(
            self.config.analysis,
            self.workers,
            task_timeout=self.task_timeout,
            worker_target=self.worker_target,
        ) as pool:
            return pool.analyze(paths, on_analyzed)


# Where ``Pipeline.score`` has its files analysed: (paths in capture order, a callback for
# each analysed file) -> every file's Scored. ``Pipeline.analyze`` or a ClusterAnalysis.
AnalyzeFiles = Callable[[Iterable[Path], Callable[[Scored], None] | None], list[Scored]]


class PoolAnalysis:
    """Preview + analysis in worker processes (workers.WorkerPool): what ``score`` runs on
    this machine, and what each Dask worker of ``score --cluster`` runs for its tasks.

    Each worker process holds one file, so a decoder that crashes, hangs past
    TASK_TIMEOUT_SECONDS or balloons in memory costs only that file. The processes start
    with the first ``analyze`` (no more than it has files) and live until ``close``, so
    the models load once however many calls follow.
    """

    def __init__(
        self,
        config: AnalysisConfig,
        workers: int,
        *,
        task_timeout: float | None = None,
        worker_target: Callable | None = None,
        started: tuple[workers.WorkerPool, queue.Queue] | None = None,
    ):
        self.config = config
        self.workers = workers
        self.task_timeout = task_timeout
        self.worker_target = worker_target
        # ``started``: a pool of one the caller started before it had this module and the
        # files (``score`` does: the worker loads the models meanwhile), with its inbox;
        # the first ``start`` grows it to as many workers as the files need.
        self._pool, self._inbox = started or (None, queue.Queue())
        self._grow = started is not None

    def __enter__(self) -> PoolAnalysis:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, files: int | None = None) -> None:
        """Start the worker processes (they load the models meanwhile), if not yet."""
        size = self.workers if files is None else max(1, min(self.workers, files))
        if self._pool is None:
            self._pool = workers.WorkerPool(
                size, worker_body(self.config), self._inbox.put, target=self.worker_target
            )
        elif self._grow:
            self._pool.grow(size)
        self._grow = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def analyze(
        self, paths: Iterable[Path], on_analyzed: Callable[[Scored], None] | None = None
    ) -> list[Scored]:
        """Preview + analysis of every path, in completion order; never raises for a bad
        file. PipelineError: the worker processes cannot load the models."""
        paths = list(paths)
        if not paths:
            return []
        self.start(len(paths))
        timeout = self.task_timeout or workers.TASK_TIMEOUT_SECONDS
        analysed: list[Scored] = []
        try:
            for path, result in self._pool.run(paths, self._inbox, timeout):
                if isinstance(result, workers.Lost):
                    result = Scored(path=path, analysis=None, error=result.reason)
                analysed.append(result)
                if on_analyzed:
                    on_analyzed(result)
        except workers.WorkerCannotStart as exc:
            self.close()
            raise PipelineError(f"worker cannot start: {exc}") from None
        except BaseException:
            # Whatever stops a call midway (an interrupt, a callback that raised), the
            # files it left in the workers' hands must not answer the next call.
            self.close()
            raise
        return analysed
