"""Worker processes that each hold one file, so a bad file costs one file.

LibRaw and libjpeg are C/C++ decoders with a long history of crashes and hangs on
malformed files. Each worker holds at most one file at a time, so when a worker dies
(segfault, abort, out of memory) or is killed for taking too long or growing too large,
we know exactly which file did it; the worker is replaced and the run goes on.
``postselectd score``, the daemon, report and train use this pool. A listener thread turns
results and deaths into messages for the owner's inbox (``post``).

This is mechanism only: what a worker does with a file is its ``WorkerBody``, which the
owner passes in (stages.worker_body: preview + analysis).
"""

from __future__ import annotations

import importlib
import itertools
import logging
import multiprocessing
import multiprocessing.util
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

log = logging.getLogger(__name__)

# A worker that holds one file longer than this is killed (a decoder caught in a loop).
TASK_TIMEOUT_SECONDS = 120.0
# A worker whose resident memory grows past this is killed after its file (a decompression
# bomb, or a leak); the models and one preview take ~200 MB.
MAX_WORKER_RSS_BYTES = 1536 * 1024 * 1024
# ...and the kernel refuses it address space beyond this (RLIMIT_AS), so a file that asks
# for gigabytes at once fails by itself before the 2 s poll above sees it, instead of
# pushing the machine into swap or the OOM killer. Measured (bench/worker_memory.py): a
# worker's address space is ~270 MB with the models loaded and at most ~390 MB after the
# largest previews (an 8256x5504 JPEG, raws from 7 cameras), resident ~120 MB less, so
# the limit is the RSS limit plus room for what is mapped but not resident.
WORKER_ADDRESS_SPACE_BYTES = 2048 * 1024 * 1024


@dataclass(frozen=True)
class WorkerBody:
    """What a worker process runs, given as the name of the module that holds it: the
    module's ``init_worker(args)`` once (it raises when the process cannot work: models
    that do not load), then ``work(task)`` for each task the owner submits (a file's path,
    or a value naming the file and what to do with it), which returns the result and
    never raises for a bad file; ``failed(task, error)`` is the result for a task ``work``
    raised on anyway.

    Named, not passed as functions, so that the owner need not import the stage: the
    analysis stage loads onnxruntime, and ``score``, where it spawns its first worker,
    starts it before that import to have the models loaded meanwhile."""

    module: str
    args: object = None


@dataclass(frozen=True)
class WorkerReady:
    worker: int
    error: str | None


@dataclass(frozen=True)
class Analysed:
    job: int
    scored: object  # the body's result for the file (stages.Scored)


@dataclass(frozen=True)
class WorkerDied:
    job: int | None
    exitcode: int | None


@dataclass(frozen=True)
class Lost:
    """A task whose worker died holding it (crashed, or stopped for taking too long or
    growing too large): why, in the photographer's words, for the owner's result."""

    reason: str


class WorkerCannotStart(Exception):
    """A worker's body could not start (its ``init_worker`` raised: models that do not load)."""


def _worker_main(worker_id: int, tasks: Connection, results: Connection, body: WorkerBody) -> None:
    """A worker process: its body's work, one file at a time, until told to stop.

    It ignores SIGINT/SIGTERM: the daemon stops it (or, if the daemon is gone, the closed
    task pipe does), so a Ctrl-C or a service stop never tears a file out of its hands.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    limit_address_space()
    reuse_freed_memory()
    stage = importlib.import_module(body.module)
    try:
        stage.init_worker(body.args)
    except Exception as exc:
        results.send(("init-failed", worker_id, str(exc)))
        return
    results.send(("ready", worker_id, None))
    quiet_stderr()
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        job, work = task
        try:
            result = stage.work(work)
        except MemoryError:  # past limit_address_space: this file asked for too much
            result = stage.failed(
                work,
                "needs more memory than a worker may use "
                f"({WORKER_ADDRESS_SPACE_BYTES >> 20} MB): a damaged or hostile file?",
            )
        except Exception as exc:  # a bug, not a bad file: report it, keep the worker
            result = stage.failed(work, f"internal error: {exc}")
        try:
            results.send(("done", job, result))
        except (BrokenPipeError, OSError):
            return


def _forked_worker_main(parent_ends: list[Connection], target: Callable, *args: object) -> None:
    """A worker forked from the owner (WorkerPool(fork=True)) first drops what it copied
    that a spawned one never has, then runs as one.

    The owner's ends of the pipes: a worker that held a copy of its own task pipe's
    writing end would never see it close, and would outlive an owner that was killed.
    The owner's log handlers: a spawned worker has none (warnings only, bare, on stderr),
    and its lines must not pass for the command's. The owner's exit hooks (the pool's
    Finalize, atexit) do not run: multiprocessing clears the first in a forked child and
    ends it with os._exit.
    """
    for conn in parent_ends:
        conn.close()
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    target(*args)


def fork_is_safe() -> bool:
    """Whether a worker may be forked from this process rather than spawned: on Linux,
    while this process runs no other thread (a fork copies only the calling thread, so a
    lock another one held stays locked in the child forever). Counted by the kernel
    (/proc/self/task), so the threads of C libraries count too. macOS is left out: its
    system frameworks are not safe to use in a forked child."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def quiet_stderr() -> None:
    """Send this process's file descriptor 2 to /dev/null.

    LibRaw and libjpeg print their complaints about damaged files ("Premature end of
    JPEG file") straight to it, which would put stray lines between the daemon's
    one-line-per-file log or a command's progress. A worker reports everything it has to
    say through its results, so once its body has started (an error in starting is sent
    back too) nothing it prints is needed.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def limit_address_space(limit: int = WORKER_ADDRESS_SPACE_BYTES) -> bool:
    """Cap this process's address space: an allocation beyond it fails (MemoryError in
    Python, a failed malloc in the decoders), which costs the file being read, not the
    machine. RLIMIT_AS rather than RLIMIT_DATA: it also bounds what C code maps directly,
    and a worker maps little it does not use (see WORKER_ADDRESS_SPACE_BYTES). Only
    lowers the limit; where the platform does not enforce it (macOS) it says so."""
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        if soft != resource.RLIM_INFINITY and soft <= limit:
            return True
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError, AttributeError):
        return False
    return True


# glibc malloc (mallopt parameters): serve blocks up to this size from the heap...
_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES = -3, 32 * 1024 * 1024
# ...and give the heap's free top back to the kernel only beyond this.
_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES = -1, 128 * 1024 * 1024


def reuse_freed_memory() -> bool:
    """Let this process reuse its freed image buffers instead of faulting in new pages.

    A worker allocates and frees buffers of 1-8 MB for every file (the decoded preview,
    its halvings, grey and float copies, onnxruntime's tensors). glibc decides by a
    threshold it adapts as it goes whether such a block comes from the heap or from a
    fresh mmap, and how much of the heap's free top it returns to the kernel; which way
    it goes depends on the order of allocations, so a small change elsewhere flips it.
    When it flips, every file's buffers are page-faulted and zeroed again by the kernel:
    measured 3,400-3,700 faults and 8-9 ms of system time a file (bench/throughput.py:
    22.6 against 25.7 images/s). Fixed thresholds make it the heap, every time. Memory
    stays bounded: a heap top beyond TRIM_THRESHOLD_BYTES is still returned, and the
    pool kills a worker that grows past MAX_WORKER_RSS_BYTES.
    Only glibc has these knobs; elsewhere (macOS, musl) this does nothing and says so.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


@dataclass
class _Worker:
    id: int
    process: multiprocessing.process.BaseProcess
    tasks: Connection
    results: Connection
    job: int | None = None
    started_job_at: float = 0.0


class WorkerPool:
    """Worker processes that each hold at most one file, so when one dies we know which
    file killed it; a dead worker is replaced and only its file pays.

    A listener thread turns results and deaths into inbox messages (``post``). Each
    worker runs ``body`` (``target``, which runs it, is for tests that inject faults).

    ``fork``: the workers the pool starts with are forked from this process where that is
    safe (fork_is_safe), so they skip the interpreter's start and the imports this
    process has made (``score``'s first worker: pydantic, the config, numpy, onnxruntime;
    bench/start_time.py). The workers started later (grow, a replacement) are spawned:
    the listener thread runs by then. The daemon spawns all of its workers.
    """

    def __init__(
        self,
        size: int,
        body: WorkerBody,
        post: Callable[[object], None],
        target: Callable | None = None,
        fork: bool = False,
    ):
        self.size = size
        self.body = body
        self.post = post
        self.target = target or _worker_main  # tests inject faults with their own
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._next_id = 0
        self._run_jobs = itertools.count()  # run()'s job numbers, never reused
        self._closing = False
        self._closed = False
        self._wake_r, self._wake_w = self._context.Pipe(duplex=False)
        # The workers ignore SIGTERM, and the interpreter's exit would SIGTERM them and wait
        # without a deadline: however the owner's code ends (an exception past its
        # close()), the pool is closed first, with its deadline (exitpriority >= 0 runs
        # before multiprocessing terminates and joins the children).
        self._at_exit = multiprocessing.util.Finalize(self, self.close, exitpriority=10)
        self._listener = threading.Thread(target=self._listen, name="workers", daemon=True)
        # Checked once, before the first worker: the workers started here are all alike.
        if fork and not fork_is_safe():
            log.debug("workers spawned, not forked: this process runs other threads")
            fork = False
        try:
            for _ in range(size):
                self._spawn(fork)
        except BaseException:
            # A worker that cannot be started (EAGAIN, EMFILE): the ones that were are
            # ended now, with the deadline; the caller never gets a pool to close.
            self.close()
            raise
        self._listener.start()

    def _spawn(self, fork: bool = False) -> None:
        """Start one worker: spawned, or ``fork``ed from this process (only from
        __init__, before the listener thread starts: see fork_is_safe)."""
        tasks_r, tasks_w = self._context.Pipe(duplex=False)
        results_r, results_w = self._context.Pipe(duplex=False)
        worker_id = self._next_id
        self._next_id += 1
        target, args = self.target, (worker_id, tasks_r, results_w, self.body)
        if fork:
            ours = [self._wake_r, self._wake_w, tasks_w, results_r]
            for other in self._workers.values():
                ours += [other.tasks, other.results]
            target, args = _forked_worker_main, (ours, self.target, *args)
        context = multiprocessing.get_context("fork") if fork else self._context
        process = context.Process(
            target=target, args=args, name=f"postselectd-worker-{worker_id}", daemon=True
        )
        process.start()
        tasks_r.close()
        results_w.close()
        self._workers[worker_id] = _Worker(worker_id, process, tasks_w, results_r)

    def grow(self, size: int) -> None:
        """Up to ``size`` workers: a pool started with one before its files were counted."""
        with self._lock:
            if self._closing:
                return
            while len(self._workers) < size:
                self._spawn()
            self.size = max(self.size, size)
        self._wake_w.send("grown")  # the listener watches the new workers too

    def idle(self) -> int:
        with self._lock:
            return sum(1 for w in self._workers.values() if w.job is None)

    def submit(self, job: int, task: object) -> bool:
        """Give ``task`` (picklable: a path, or the body's own task value) to an idle
        worker; False when every worker holds a file."""
        with self._lock:
            for worker in self._workers.values():
                if worker.job is None:
                    try:
                        worker.tasks.send((job, task))
                    except OSError:
                        continue  # dying; the listener replaces it
                    worker.job = job
                    worker.started_job_at = time.monotonic()
                    return True
        return False

    def run(
        self, tasks: Iterable[object], inbox: queue.Queue, timeout: float = TASK_TIMEOUT_SECONDS
    ) -> Iterator[tuple[object, object]]:
        """Every task through the workers, as ``(task, result)`` in completion order; a
        task its worker died on comes back with a ``Lost``, so a bad file costs that file
        and nothing else. ``inbox`` is where this pool posts (its ``post`` is
        ``inbox.put``). Raises WorkerCannotStart when a worker's body cannot start.
        The one loop that score, report and train share (the daemon schedules its own).
        Job numbers are never reused: a late answer to an interrupted call cannot pass
        for one of this call's."""
        pending = [(next(self._run_jobs), task) for task in tasks]
        pending.reverse()
        jobs: dict[int, object] = {}
        stopped: dict[int, str] = {}
        while pending or jobs:
            while pending and self.submit(*pending[-1]):
                job, task = pending.pop()
                jobs[job] = task
            try:
                message = inbox.get(timeout=1.0)
            except queue.Empty:
                message = None
            for job in self.kill_stuck(timeout):
                stopped[job] = f"analysis took longer than {timeout:.0f} s; stopped"
            for job in self.kill_bloated():
                if job is not None:
                    stopped[job] = "decoding it needed too much memory; stopped"
            if isinstance(message, Analysed) and message.job in jobs:
                yield jobs.pop(message.job), message.scored
            elif isinstance(message, WorkerDied) and message.job in jobs:
                reason = stopped.pop(
                    message.job,
                    f"the decoder crashed on this file (worker exit status {message.exitcode})",
                )
                yield jobs.pop(message.job), Lost(reason)
            elif isinstance(message, WorkerReady) and message.error:
                raise WorkerCannotStart(message.error)

    def kill_stuck(self, older_than: float) -> list[int]:
        """Kill workers that have held one file too long; their deaths are reported."""
        now = time.monotonic()
        stuck = []
        with self._lock:
            for worker in self._workers.values():
                if worker.job is not None and now - worker.started_job_at > older_than:
                    stuck.append(worker.job)
                    worker.process.kill()
        return stuck

    def kill_bloated(self, max_rss: int = MAX_WORKER_RSS_BYTES) -> list[int | None]:
        """Kill workers whose resident memory passed ``max_rss`` (Linux: /proc)."""
        bloated = []
        with self._lock:
            for worker in self._workers.values():
                if _rss(worker.process.pid) > max_rss:
                    bloated.append(worker.job)
                    worker.process.kill()
        return bloated

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers.values() if w.process.pid]

    def _listen(self) -> None:
        while True:
            try:
                if not self._listen_once():
                    return
            except Exception:  # a bug here must not silently stop all rating
                log.exception("worker pool listener")
                time.sleep(1.0)

    def _listen_once(self) -> bool:
        """Wait for results and deaths once; False when the pool is closing."""
        with self._lock:
            if self._closing:
                return False
            by_result = {w.results: w for w in self._workers.values()}
            by_sentinel = {w.process.sentinel: w for w in self._workers.values()}
        ready = wait([self._wake_r, *by_result, *by_sentinel])
        for item in ready:
            if item is self._wake_r:
                if self._wake_r.recv() is None:  # close(); grow() sends "grown"
                    return False
                continue
            if item in by_result:
                worker = by_result[item]
                try:
                    message = item.recv()
                except (EOFError, OSError):
                    self._died(worker)
                    continue
                self._received(worker, message)
        for item in ready:
            if item in by_sentinel:
                worker = by_sentinel[item]
                with self._lock:
                    handled = self._workers.get(worker.id) is not worker
                if handled:  # its pipe's end-of-file already reported the death
                    continue
                try:
                    unread = worker.results.poll()
                except OSError:
                    unread = False
                if unread:  # a result sent just before exiting: read it first
                    continue
                self._died(worker)
        return True

    def _received(self, worker: _Worker, message: tuple) -> None:
        kind, key, payload = message
        if kind == "done":
            with self._lock:
                worker.job = None
            self.post(Analysed(key, payload))
        elif kind == "ready":
            self.post(WorkerReady(worker.id, None))
        elif kind == "init-failed":
            self.post(WorkerReady(worker.id, payload))

    def _died(self, worker: _Worker) -> None:
        with self._lock:
            if self._workers.get(worker.id) is not worker:
                return
            del self._workers[worker.id]
            worker.process.join(timeout=1)
            job = worker.job
            for conn in (worker.tasks, worker.results):
                conn.close()
            if not self._closing:
                self._spawn()
        self.post(WorkerDied(job, worker.process.exitcode))

    def close(self, timeout: float = 3.0) -> None:
        """Ask every worker to stop; kill the ones still busy after ``timeout``.

        Safe to call again (the owner's ``finally`` and the exit hook both may)."""
        with self._lock:
            if self._closed:
                return
            self._closed = self._closing = True
            workers = list(self._workers.values())
        self._at_exit.cancel()
        self._wake_w.send(None)
        if self._listener.ident is not None:  # started (not when a worker failed to start)
            self._listener.join(timeout=5)
        for worker in workers:
            try:
                worker.tasks.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=2)
            for conn in (worker.tasks, worker.results):
                conn.close()
        self._wake_r.close()
        self._wake_w.close()


def _rss(pid: int | None) -> int:
    """Resident memory of a process in bytes; 0 where /proc cannot tell."""
    return status_kb(pid, "VmRSS") * 1024 if pid else 0


def status_kb(pid: int, key: str) -> int:
    """A kB figure of /proc/PID/status (VmRSS, VmHWM, ...); 0 where /proc cannot tell.

    Linux only, like the memory limit it serves; the benchmarks and tests read memory
    through it too."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    """Resident memory (kB) of a process and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += status_kb(current, "VmRSS")
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total
