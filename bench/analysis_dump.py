#!/usr/bin/env python3
"""Every answer of the analysis for a folder, to diff before and after a speed change.

    python bench/analysis_dump.py FOLDER... --out before.json     # on the old code
    python bench/analysis_dump.py FOLDER... --out after.json      # on the new code
    python bench/analysis_dump.py --compare before.json after.json

A speed change must not change an answer: --compare says which files differ in a number
by more than 1e-5 relative (measurements, sharpness, exposure, class and keeper
probabilities, faces and their eye values, embedding) or at all in a word (reasons,
stars, label, keywords). Exit status 1 when anything differs. Each file is analysed on
one onnxruntime thread, as a daemon worker does; the CPU seconds of each stage are kept
too (``cpu_ms``) but never compared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUFFIXES = {".nef", ".jpg", ".jpeg", ".png"}
TOLERANCE = 1e-5


def dump(folders: list[Path]) -> dict:
    import numpy as np

    from postselectd.analysis import Analyzer
    from postselectd.config import AnalysisConfig, RatingPolicy
    from postselectd.preview import load_preview
    from postselectd.rating import rate

    analyzer = Analyzer(AnalysisConfig(threads=1))
    policy = RatingPolicy()
    out: dict[str, dict] = {}
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
            start = time.thread_time()
            preview = load_preview(path)
            decoded = (time.thread_time() - start) * 1000
            a = analyzer.analyze(preview.picture)
            rating = rate(
                a.keeper_probability,
                a.findings or a.reasons,
                policy,
                preview_size=preview.picture.size,
            )
            out[str(path)] = {
                "keeper_probability": a.keeper_probability,
                "reasons": list(a.reasons),
                "findings": [[f.reason, f.confidence, f.detail] for f in a.findings],
                "sharpness": asdict(a.sharpness),
                "exposure": asdict(a.exposure),
                "class_probabilities": dict(a.class_probabilities),
                "judged_probabilities": dict(a.judged_probabilities),
                "measurements": np.asarray(a.measurements, dtype=float).tolist(),
                "embedding": np.asarray(a.embedding, dtype=float).tolist(),
                "faces": [_plain(asdict(f)) for f in a.faces],
                "stars": rating.stars,
                "label": rating.label,
                "keywords": list(rating.keywords),
                "cpu_ms": {"decode": decoded},
            }
            print(path.name, rating.stars, rating.label, list(a.reasons), file=sys.stderr)
    return out


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def differences(before, after, where: str = "") -> list[str]:
    """Where two dumps disagree: numbers beyond TOLERANCE (relative), anything else at all."""
    if isinstance(before, dict) and isinstance(after, dict):
        if before.keys() != after.keys():
            return [f"{where}: keys {sorted(before.keys() ^ after.keys())}"]
        return [
            d
            for k in before
            if k != "cpu_ms"
            for d in differences(before[k], after[k], f"{where}.{k}")
        ]
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{where}: {len(before)} -> {len(after)} items"]
        found = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            found += differences(b, a, f"{where}[{i}]")
        return found
    numbers = (int, float)
    if (
        isinstance(before, numbers)
        and isinstance(after, numbers)
        and not isinstance(before, bool)
        and not isinstance(after, bool)
    ):
        if math.isclose(before, after, rel_tol=TOLERANCE, abs_tol=TOLERANCE * 1e-3):
            return []
        return [f"{where}: {before!r} -> {after!r}"]
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        found = differences(before, after)
        for line in found[:50]:
            print(line)
        print(f"{len(before)} files, {len(found)} differences")
        return 1 if found else 0
    if not args.folders or args.out is None:
        parser.error("give FOLDER... --out FILE, or --compare BEFORE AFTER")
    args.out.write_text(json.dumps(dump(args.folders)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
