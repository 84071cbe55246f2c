"""`postselectd score` starts its first worker before it reads the folder.

The worker loads the models (most of a one-file run's time) while the command imports
the rest of postselectd and reads the files; the pool grows to as many workers as the
files need once they are counted (PoolAnalysis(started=...), WorkerPool.grow).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, copy_file, run_cli, shared_path
from test_reliability import misbehaving_worker

from postselectd.config import AnalysisConfig
from postselectd.pipeline import PoolAnalysis
from postselectd.stages import worker_body
from postselectd.workers import WorkerPool, WorkerReady


def test_a_pool_started_with_one_worker_grows_and_hears_the_new_ones(tmp_path: Path):
    nef = shared_path("samples", "nef", "DSC_0102.NEF")
    folder = tmp_path / "shoot"
    hang = folder / "a_hang.NEF"
    good = copy_file(nef, folder, "b_good.NEF")
    inbox: queue.Queue = queue.Queue()
    first = WorkerPool(1, worker_body(AnalysisConfig()), inbox.put, target=misbehaving_worker)
    # The first worker is ready, so its listener waits on it alone when the pool grows.
    assert inbox.get(timeout=60) == WorkerReady(0, None)
    order = []
    with PoolAnalysis(AnalysisConfig(), 2, task_timeout=5, started=(first, inbox)) as pool:
        scored = pool.analyze([hang, good], lambda s: order.append(s.path))
        assert len(first.pids()) == 2
    # The new worker's file is heard while the first one still hangs on its own.
    assert order == [good, hang]
    by_path = {s.path: s for s in scored}
    assert by_path[good].analysis is not None
    assert "took longer than 5 s" in by_path[hang].error


def test_no_photos_found_stops_the_worker_started_early(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = run_cli("score", str(tmp_path / "empty"))
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no photos found" in result.stderr


# The first worker of `score`, as the command starts it, in a process of its own (the
# test's process has threads, so it would spawn): it must be forked and still be a worker
# like a spawned one. Last, the process kills itself, as a user's `kill -9` would.
FIRST_WORKER = r"""
import json, os, queue, signal, sys
from pathlib import Path

from postselectd.cli import _start_first_worker, setup_logging
from postselectd.config import Config
from postselectd.workers import WorkerReady

def cmdline(pid):
    return Path(f"/proc/{pid}/cmdline").read_bytes()

setup_logging("debug")
pool, inbox = _start_first_worker(Config())
assert inbox.get(timeout=120) == WorkerReady(0, None)
(first,) = pool.pids()
os.kill(first, signal.SIGTERM)
((_, scored),) = list(pool.run([Path(sys.argv[1])], inbox))
pool.grow(2)
assert inbox.get(timeout=120) == WorkerReady(1, None)
(grown,) = set(pool.pids()) - {first}
print(json.dumps({
    "first": first,
    "grown": grown,
    "first_is_forked": cmdline(first) == cmdline(os.getpid()),
    "grown_is_forked": cmdline(grown) == cmdline(os.getpid()),
    "rated_after_sigterm": scored.analysis is not None and pool.pids().count(first) == 1,
    "stderr": os.readlink(f"/proc/{first}/fd/2"),
    "limits": Path(f"/proc/{first}/limits").read_text(),
}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _gone(pid: int) -> bool:
    """Ended (a zombie counts: nobody may reap an orphan in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_scores_first_worker_is_forked_and_is_still_a_worker_like_the_others(tmp_path: Path):
    from postselectd.workers import WORKER_ADDRESS_SPACE_BYTES

    nef = shared_path("samples", "nef", "DSC_0102.NEF")
    # A cache "folder" that is a file: the worker logs at debug that it saves no models.
    (tmp_path / "cache").write_text("")
    with (tmp_path / "stderr").open("w") as stderr:
        command = subprocess.Popen(
            [sys.executable, "-c", FIRST_WORKER, str(nef)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache")),
        )
    # One line, then its own kill -9 (not the end of its output: its workers hold that).
    seen = json.loads(command.stdout.readline() or "null")
    command.stdout.close()
    assert command.wait(timeout=60) == -9 and seen, (tmp_path / "stderr").read_text()
    workers = [seen["first"], seen["grown"]]
    try:
        # The command was killed: its workers see their task pipes close and end, the
        # forked one too (it holds no copy of the command's end of its pipe).
        deadline = time.monotonic() + 30
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [_gone(pid) for pid in workers] == [True, True]
    finally:
        for pid in workers:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
    # Forked: no second interpreter start, pydantic and config (bench/start_time.py).
    assert seen["first_is_forked"]
    # The one grown later is spawned: the pool's listener thread runs by then.
    assert not seen["grown_is_forked"]
    assert seen["rated_after_sigterm"]  # a service stop never tears a file out of its hands
    assert seen["stderr"] == "/dev/null"  # decoders' complaints stay out of the output
    line = next(x for x in seen["limits"].splitlines() if x.startswith("Max address space"))
    assert line.split()[3] == str(WORKER_ADDRESS_SPACE_BYTES)
    # The command logs at debug; a worker, like a spawned one, has no handler of its own
    # and shows warnings only: its lines do not pass for the command's.
    assert "optimized models not saved" not in (tmp_path / "stderr").read_text()


# A forked worker whose decoder crashes, in a process of its own (as above).
FORKED_CRASH = r"""
import json, os, queue, sys
from pathlib import Path

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # as score does: no thread, so it may fork
sys.path.insert(0, "tests")
from test_reliability import misbehaving_worker

from postselectd.config import AnalysisConfig
from postselectd.stages import worker_body
from postselectd.workers import Lost, WorkerPool

inbox = queue.Queue()
pool = WorkerPool(1, worker_body(AnalysisConfig()), inbox.put, misbehaving_worker, fork=True)
forked = pool.pids()
command_line = Path(f"/proc/{forked[0]}/cmdline").read_bytes()
results = {Path(task).name: result for task, result in pool.run(sys.argv[1:], inbox)}
print(json.dumps({
    "forked": command_line == Path("/proc/self/cmdline").read_bytes(),
    "crash": results["a_crash.NEF"].reason if isinstance(results["a_crash.NEF"], Lost) else None,
    "good": results["b_good.NEF"].error if results["b_good.NEF"].analysis else "no analysis",
    "replaced": pool.pids() != forked,
}))
pool.close()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_a_forked_worker_that_crashes_costs_its_file_and_a_spawned_one_goes_on(tmp_path: Path):
    nef = shared_path("samples", "nef", "DSC_0102.NEF")
    crash = copy_file(nef, tmp_path, "a_crash.NEF")
    good = copy_file(nef, tmp_path, "b_good.NEF")
    done = subprocess.run(
        [sys.executable, "-c", FORKED_CRASH, str(crash), str(good)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["forked"]
    assert "decoder crashed" in seen["crash"]
    assert seen["good"] is None
    assert seen["replaced"]
