"""`postselectd score --cluster`: the same analysis, on the workers of a Dask cluster.

Only the analysis moves. The driver (the machine that runs ``score``) lists the photos,
reads their capture times, groups bursts, rates and writes every sidecar, exactly as
``Pipeline.score`` does for a local run (``Pipeline(analyze_on=...)``); each Dask
worker runs the preview + analysis of the files it is given in a ``PoolAnalysis`` of its
own, the one local ``score`` runs: a worker process per Dask worker thread that loads
the models once (``AnalysisPlugin``) and holds one file at a time, so a decoder that
crashes, hangs or balloons on a hostile file costs that file, on a cluster as here.

What Dask adds: when a machine (or a Dask worker) is lost, the scheduler gives its
files to another worker, at most ``distributed.scheduler.allowed-failures`` times (3
by default); a file on which worker after worker dies is reported as failed. A task
never fails for a file's fault (that comes back as the file's error, not retried); it
raises only when its worker cannot analyse at all (models that do not load there),
which Dask tries again ``TASK_RETRIES`` times, maybe elsewhere, before the run ends
with that error, as a local run would. Files go out a few at a time (up to
``MAX_FILES_PER_TASK``), and only a few tasks per worker thread are in flight, so the
driver holds the rest and a lost worker takes few files with it.

Every node must see the photos at the same paths the driver does (one NFS/SMB mount,
mounted at the same place) and run the same postselectd with the ``cluster`` extra.
Dask is optional: this module imports without it and says how to install it.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from postselectd import __version__
from postselectd.config import AnalysisConfig
from postselectd.pipeline import PipelineError, PoolAnalysis, default_workers
from postselectd.stages import Scored

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # the default install: `score --cluster` says what to install
    WorkerPlugin = object  # type: ignore[misc,assignment]
    HAVE_DASK = False
else:
    HAVE_DASK = True

log = logging.getLogger(__name__)

INSTALL_HINT = "--cluster needs Dask distributed: pip install 'postselectd[cluster]'"
# A task raises only when its worker cannot analyse at all (files' faults come back as
# their errors): another try may land on another worker; more would only repeat it.
TASK_RETRIES = 2
# Tasks in flight per Dask worker thread: one being analysed, one on its way, so a
# worker never waits for its next files, and a lost worker takes few files with it.
IN_FLIGHT_PER_THREAD = 2
# Files per task, at most: the scheduler spends a few ms of CPU on each task whatever it
# does (bench/throughput.py --cluster), which one file (~40 ms of a core) would make the
# limit of a large cluster. A crash still costs one file (the worker's PoolAnalysis
# holds one at a time); a lost worker costs its tasks' files a second analysis.
MAX_FILES_PER_TASK = 16
CONNECT_TIMEOUT_SECONDS = 20
WAIT_FOR_WORKERS_SECONDS = 600


class ClusterError(Exception):
    """Dask is not installed, or a worker cannot analyse (a different postselectd); str()
    says why. The driver's run ends with a PipelineError saying it (``_stopped``)."""


def _stopped(message: str) -> Exception:
    """What ends a run on the cluster: the caller's PipelineError, as for a local run."""
    return PipelineError(message)


# --- the worker side ---------------------------------------------------------------------


class AnalysisPlugin(WorkerPlugin):
    """Set up on every Dask worker (and on every worker that joins later): one
    ``PoolAnalysis`` per worker thread, whose process loads the models once and analyses
    the files of that thread's tasks for as long as the worker lives.

    Named after what it analyses with (version, analysis settings), and idempotent: a
    second driver with the same settings shares the loaded models instead of replacing
    them under the first one's tasks. The models stay loaded between runs."""

    idempotent = True

    def __init__(
        self,
        config: AnalysisConfig,
        *,
        task_timeout: float | None = None,
        worker_target: Callable | None = None,
    ):
        self.config = config
        self.task_timeout = task_timeout
        self.worker_target = worker_target  # tests inject crashing workers
        self.version = __version__
        target = getattr(worker_target, "__qualname__", "")
        digest = hashlib.sha256(
            f"{config.model_dump_json()}|{task_timeout}|{target}".encode()
        ).hexdigest()
        self.name = f"postselectd-{__version__}-{digest[:12]}"
        self._free: queue.SimpleQueue[PoolAnalysis] = queue.SimpleQueue()
        self._pools: list[PoolAnalysis] = []

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_free", "_pools")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._free = queue.SimpleQueue()
        self._pools = []

    def setup(self, worker) -> None:
        if self.version != __version__:
            raise ClusterError(
                f"worker {worker.address} runs postselectd {__version__}, the driver "
                f"{self.version}: install the same version on every node"
            )
        process = multiprocessing.current_process()
        if process.daemon:
            # Dask's nanny starts its worker as a daemon process, and multiprocessing lets a
            # daemon have no children, lest they outlive it. The analysis processes cannot:
            # they stop at the end of their task pipe, which closes when this worker ends.
            process.daemon = False
        for _ in range(max(1, worker.state.nthreads)):
            pool = PoolAnalysis(
                self.config, 1, task_timeout=self.task_timeout, worker_target=self.worker_target
            )
            pool.start()  # loads the models now, while the driver sends the first files
            self._pools.append(pool)
            self._free.put(pool)

    def teardown(self, worker) -> None:
        for pool in self._pools:
            pool.close()

    def analyze(self, paths: list[Path]) -> list[Scored]:
        pool = self._free.get()  # one per worker thread: never waits
        try:
            return pool.analyze(paths)
        finally:
            self._free.put(pool)


def analyze_files(plugin_name: str, paths: list[Path]) -> list[Scored]:
    """A Dask task: preview + analysis of a few files by this worker's analysis process."""
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    if plugin is None:
        raise ClusterError(f"worker {worker.address} has no postselectd analysis set up")
    return plugin.analyze(paths)


# --- the driver side ---------------------------------------------------------------------


class ClusterAnalysis:
    """Where ``Pipeline.score`` has its files analysed with ``score --cluster``.

    ``address``: a scheduler's (``tcp://host:8786``), or ``local`` for a cluster of
    ``workers`` processes on this machine (started and stopped with the run).
    Use as a context manager; ``analyze`` is the ``analyze_on`` of a Pipeline.
    """

    def __init__(
        self,
        address: str,
        config: AnalysisConfig,
        *,
        workers: int | None = None,
        files_per_task: int | None = None,
        task_timeout: float | None = None,
        worker_target: Callable | None = None,
    ):
        if not HAVE_DASK:
            raise ClusterError(INSTALL_HINT)
        self.address = address
        self.config = config
        self.workers = workers
        self.files_per_task = files_per_task  # None: as many as keep all threads busy
        self.plugin = AnalysisPlugin(config, task_timeout=task_timeout, worker_target=worker_target)
        self.client = None
        self._local = None
        self._threads = 0
        self._threads_checked = 0.0

    def __enter__(self) -> ClusterAnalysis:
        try:
            self._connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> None:
        from distributed import Client

        # Dask's own INFO lines (workers joining, plugins registered) would come between
        # the one line per photo; they are there with --log-level debug.
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("distributed").setLevel(logging.WARNING)
        if self.address == "local":
            from distributed import LocalCluster

            self._local = LocalCluster(
                n_workers=self.workers or default_workers(),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                # Its scheduler serves HTTP whatever this says: on a free port, and only
                # to this machine.
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.WARNING,
            )
            self.client = Client(self._local)
        else:
            try:
                self.client = Client(self.address, timeout=CONNECT_TIMEOUT_SECONDS)
            except (OSError, TimeoutError, ValueError) as exc:
                reason = f"cannot reach the Dask scheduler at {self.address}: {exc}"
                raise _stopped(reason) from None
        if not self.client.nthreads():
            log.info("waiting for Dask workers to join %s", self.address)
            try:
                self.client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_SECONDS)
            except TimeoutError:
                raise _stopped(
                    f"no Dask worker joined {self.address} in {WAIT_FOR_WORKERS_SECONDS} s"
                ) from None
        try:
            self.client.register_plugin(self.plugin)
        except ClusterError as exc:  # a worker's setup said why (a different postselectd)
            raise _stopped(str(exc)) from None
        log.info(
            "analysing on %s: %d Dask workers, %d threads",
            self.address,
            len(self.client.nthreads()),
            self._worker_threads(),
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._local is not None:
            self._local.close()
            self._local = None

    def _worker_threads(self) -> int:
        """The cluster's worker threads (re-asked every few seconds: workers come and go)."""
        now = time.monotonic()
        if now - self._threads_checked > 5.0:
            self._threads = sum(self.client.nthreads().values())
            self._threads_checked = now
        return max(1, self._threads)

    def analyze(
        self, paths: Iterable[Path], on_analyzed: Callable[[Scored], None] | None = None
    ) -> list[Scored]:
        """Preview + analysis of every path on the cluster, in completion order; every
        path comes back, analysed or with its error."""
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        # Workers have other working folders: they are sent absolute paths (the shared
        # mount's), and the results are handed on under the driver's own names.
        named = {Path(os.path.abspath(p)): Path(p) for p in paths}
        todo = list(named)
        todo.reverse()
        held: dict[object, list[Path]] = {}
        finished = as_completed()
        analysed: list[Scored] = []
        alone: list[Path] = []  # files of a task that killed its workers: one task each

        def send() -> None:
            while (alone or todo) and len(held) < IN_FLIGHT_PER_THREAD * self._worker_threads():
                if alone:
                    batch = [alone.pop()]
                else:
                    # Up to MAX_FILES_PER_TASK files, fewer towards the end, so that no
                    # thread is left with a long last task while the others are done.
                    n = self.files_per_task or min(
                        MAX_FILES_PER_TASK, max(1, len(todo) // (4 * self._worker_threads()))
                    )
                    batch = [todo.pop() for _ in range(min(n, len(todo)))]
                future = self.client.submit(
                    analyze_files, self.plugin.name, batch, pure=False, retries=TASK_RETRIES
                )
                held[future] = batch
                finished.add(future)

        send()
        for future in finished:
            batch = held.pop(future)
            try:
                results = future.result()
            except PipelineError:
                raise  # the worker cannot load the models, as a local run would say
            except ClusterError as exc:
                raise _stopped(str(exc)) from None
            except KilledWorker as exc:
                if len(batch) > 1:  # which file was it? each is tried alone, once
                    alone.extend(reversed(batch))
                    send()
                    continue
                error = (
                    f"{exc.args[2] + 1} Dask workers were lost while analysing it "
                    "(a machine that went away, or a file that kills the worker itself); "
                    "not tried again"
                )
                results = [Scored(path=p, analysis=None, error=error) for p in batch]
            except Exception as exc:  # the scheduler or the connection to it went away
                raise _stopped(f"the cluster stopped answering: {exc!r}") from None
            for scored in results:
                scored = replace(scored, path=named.get(scored.path, scored.path))
                analysed.append(scored)
                if on_analyzed:
                    on_analyzed(scored)
            send()
        return analysed
