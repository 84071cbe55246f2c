#!/usr/bin/env python3
"""Per-stage time of the full analysis of one preview, on ONE core.

    python bench/analysis_speed.py [../shared/samples/nef] [--repeat 5]

onnxruntime gets one intra-op thread (as each daemon worker does); every sample NEF is
decoded (its 1620x1080 preview) and analysed --repeat times. Prints the median per stage
and file, and the median over all of decode + analysis: the goal is under 150 ms.
Run it on an otherwise idle machine: other processes on the two cores inflate every number.
On a shared machine use --cpu: every figure is then the CPU time of this one thread (the
analysis runs on one thread, onnxruntime's too), which other processes do not inflate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postselectd.analysis import Analyzer  # noqa: E402
from postselectd.config import AnalysisConfig  # noqa: E402
from postselectd.preview import load_preview  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folder", nargs="?", type=Path, default=ROOT.parent / "shared" / "samples" / "nef"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--cpu", action="store_true", help="CPU time of this thread instead of wall time"
    )
    args = parser.parse_args()
    if args.cpu:
        # The Analyzer's stage timings read time.perf_counter: the thread's CPU clock
        # instead, for them and for this script's own (one intra-op thread, no spinning).
        time.perf_counter = time.thread_time
    files = sorted(args.folder.glob("*.NEF"))
    if not files:
        print(f"no NEFs in {args.folder}", file=sys.stderr)
        return 2
    analyzer = Analyzer(AnalysisConfig(threads=1))
    analyzer.analyze(load_preview(files[0]).picture)  # warm-up
    totals: list[float] = []
    stages: dict[str, list[float]] = defaultdict(list)
    print(
        f"{'file':<14}{'faces':>6}{'decode':>8}{'measure':>9}{'backbone':>9}"
        f"{'head':>6}{'faces':>7}{'total':>8}  ms"
    )
    for path in files:
        per_file: dict[str, list[float]] = defaultdict(list)
        faces = 0
        for _ in range(args.repeat):
            start = time.perf_counter()
            preview = load_preview(path)
            decoded = (time.perf_counter() - start) * 1000
            analysis = analyzer.analyze(preview.picture)  # as the pipeline does
            total = (time.perf_counter() - start) * 1000
            per_file["decode"].append(decoded)
            for stage, ms in analysis.timings_ms:
                per_file[stage].append(ms)
            per_file["total"].append(total)
            faces = len(analysis.faces)
        for stage, values in per_file.items():
            stages[stage] += values
        totals += per_file["total"]
        m = {k: np.median(v) for k, v in per_file.items()}
        print(
            f"{path.name:<14}{faces:>6}{m['decode']:>8.0f}{m['measure']:>9.0f}{m['backbone']:>9.0f}"
            f"{m['keeper_head']:>6.1f}{m['faces']:>7.0f}{m['total']:>8.0f}"
        )
    print(
        f"\nmedian over all: {np.median(totals):.0f} ms per preview (decode + analysis),"
        " goal < 150 ms"
    )
    for stage, values in stages.items():
        print(f"  {stage:<12}{np.median(values):>6.1f} ms median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
