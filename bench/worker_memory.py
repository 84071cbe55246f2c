#!/usr/bin/env python3
"""How much address space and resident memory one worker really uses.

    python bench/worker_memory.py [FILE_OR_FOLDER ...] [--big]

Loads the models as a worker does, then analyses each file in this process and prints
/proc/self/status after each: VmSize/VmPeak (address space: what RLIMIT_AS counts),
VmData (what RLIMIT_DATA would count), VmRSS/VmHWM (resident: what the pool's 2 s poll
kills at). --big also makes and analyses an 8256x5504 q95 JPEG (the largest preview a
45 MP camera embeds). The worker's limit (workers.WORKER_ADDRESS_SPACE_BYTES) must stay
well above the largest VmPeak seen here. Linux only (reads /proc).

2026-12, 2 cores, onnxruntime 1.32: models loaded VmSize 267 MB, VmRSS 124 MB; after the
sample NEFs, 7 cameras' raws and the 8256x5504 JPEG: VmPeak at most 391 MB, VmHWM 234 MB,
VmData 244 MB (--big shows VmPeak 426 MB: it makes the JPEG in this same process).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postselectd import stages  # noqa: E402
from postselectd.analysis import Analyzer  # noqa: E402
from postselectd.config import AnalysisConfig  # noqa: E402

KEYS = ("VmPeak", "VmSize", "VmData", "VmHWM", "VmRSS")


def status_mb() -> dict[str, int]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in KEYS:
            found[key] = int(value.split()[0]) // 1024
    return found


def show(label: str) -> None:
    figures = status_mb()
    print(f"{label:<44}" + "  ".join(f"{k} {figures.get(k, 0):>4} MB" for k in KEYS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ROOT.parent / "shared" / "samples" / "nef"
    parser.add_argument("paths", nargs="*", type=Path, default=[default])
    parser.add_argument("--big", action="store_true", help="also an 8256x5504 JPEG")
    args = parser.parse_args()
    files = []
    for path in args.paths:
        files += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    with tempfile.TemporaryDirectory() as tmp:
        if args.big:
            import numpy as np
            from PIL import Image

            rng = np.random.default_rng(0)
            small = (rng.random((688, 1032, 3)) * 255).astype("uint8")
            big = Path(tmp) / "big.jpg"
            Image.fromarray(small).resize((8256, 5504)).save(big, quality=95)
            files.append(big)
        show("start")
        analyzer = Analyzer(AnalysisConfig())
        show("models loaded")
        for path in files:
            scored = stages.analyze_file(path, analyzer)
            show(f"{path.name[:30]} {'error' if scored.error else 'ok'}")


if __name__ == "__main__":
    main()
