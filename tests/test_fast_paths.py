"""The speed work's code paths do what they claim (how fast they are is for bench/):
`score` writes sidecars while the workers analyse later files and still groups bursts as
if it had waited for all of them; workers reuse their freed image buffers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import ROOT, shared_path

from postselectd.config import Config
from postselectd.pipeline import Pipeline, _Runs


def test_sidecars_are_written_before_the_last_file_is_analysed(nef_dir: Path):
    events: list[tuple[str, str]] = []
    files = sorted(nef_dir.glob("*.NEF"))
    results = Pipeline(Config(), workers=2).score(
        files,
        on_result=lambda r: events.append(("written", r.path.name)),
        on_analyzed=lambda s: events.append(("analysed", s.path.name)),
    )
    last_analysed = max(i for i, (kind, _) in enumerate(events) if kind == "analysed")
    written_early = [name for kind, name in events[:last_analysed] if kind == "written"]
    assert written_early, events
    # Each of those sidecars really was on disk with the analysis still going on.
    assert all((nef_dir / name).with_suffix(".xmp").is_file() for name in written_early)
    assert [r.path for r in results] == [
        r.path for r in sorted(results, key=lambda r: r.path.name)
    ], "results come back in capture order (the sample NEFs' names follow it)"
    assert not any(r.error for r in results)
    by_name = {r.path.name: r for r in results}
    assert {by_name[f"DSC_{n:04d}.NEF"].burst for n in (101, 102, 103)} == {101}
    assert {by_name[f"DSC_{n:04d}.NEF"].burst for n in (104, 105, 106)} == {104}
    assert [n for n, r in by_name.items() if r.best_of_burst] == ["DSC_0102.NEF", "DSC_0104.NEF"]


def test_runs_split_where_no_burst_can_cross(tmp_path: Path):
    source = shared_path("samples", "nef")
    # Two folders holding the same frames: a burst never spans folders.
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for nef in sorted(source.glob("DSC_010[1-4].NEF")):
            shutil.copy2(nef, tmp_path / folder / nef.name)
    broken = tmp_path / "a" / "DSC_0999.NEF"
    broken.write_bytes(b"not a raw file")
    paths = sorted(tmp_path.glob("*/*.NEF"), reverse=True)
    runs = _Runs(paths)
    # Capture order within each folder, whatever order the paths came in; a file without
    # a capture time first.
    assert runs.order == [broken] + [
        tmp_path / folder / f"DSC_010{i}.NEF" for folder in ("a", "b") for i in range(1, 5)
    ]
    run = [runs._run_of[p] for p in runs.order]
    # 0101-0103 are 0.3 s apart, 0104 comes 108 s later; the other folder starts anew.
    assert run == [0, 1, 1, 1, 2, 3, 3, 3, 4]


def test_capture_order_key_puts_unknown_times_first():
    from postselectd.pipeline import Scored, _capture_order

    known = Scored(path=Path("/x/b.NEF"), analysis=None, capture_time=datetime(2026, 1, 1))
    unknown = Scored(path=Path("/x/a.NEF"), analysis=None)
    assert sorted([known, unknown], key=_capture_order) == [unknown, known]


_FAULTS = """
import resource, sys
from postselectd.workers import reuse_freed_memory
reused = reuse_freed_memory() if sys.argv[1] == "reuse" else None
from postselectd.analysis import Analyzer
from postselectd.preview import load_preview
analyzer = Analyzer()
for n in range(6):  # what a worker does for every file; the first two warm up
    if n == 2:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    analyzer.analyze(load_preview(sys.argv[2]).image)
print(reused, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def _faults_per_file(mode: str, nef: Path) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode, str(nef)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


def test_workers_reuse_freed_buffers_instead_of_faulting_in_new_pages():
    nef = shared_path("samples", "nef", "DSC_0107.NEF")
    reused, with_reuse = _faults_per_file("reuse", nef)
    if reused != "True":
        pytest.skip("not glibc: malloc cannot be told to keep freed buffers here")
    _, without = _faults_per_file("plain", nef)
    # Measured: ~2,700 page faults a file when glibc unmaps the freed buffers, ~370-500
    # when they are kept (each fault is a page the kernel zeroes again).
    assert with_reuse < without / 3, (with_reuse, without)
