"""`postselectd score` starts its first worker before it reads the folder.

The worker loads the models (most of a one-file run's time) while the command imports
the rest of postselectd and reads the files; the pool grows to as many workers as the
files need once they are counted (PoolAnalysis(started=...), WorkerPool.grow).
"""

from __future__ import annotations

import queue
from pathlib import Path

from conftest import copy_file, run_cli, shared_path
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
