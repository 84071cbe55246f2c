#!/usr/bin/env python3
"""Is a frame judged the same at every preview size? Known-good and blurred, per size.

    python bench/eval_sizes.py                       # data: ../data/trust (~3 min, 2 cores)
    python bench/eval_sizes.py --sizes 1620,1000,800,640 --every 4 --json

Previews come in many sizes: a camera's 1620 px one, 640-1023 px ones in older raws and
web exports, a phone photo decoded at a fraction. This takes the known-good photographs
of bench/eval_trust.py (bench/trust/fetch_trust.py gathers them) and rates them with the
real analysis and the default policy:

- keepers: each photo's preview shrunk to each size (Lanczos, as an export would; a size
  at or above the preview's own is skipped): how many are rejected (and for focus), how
  many get a check;
- blurred: each photo whose preview has >= 1620 px (every ``--every``-th), at 1620 px,
  blurred as a lens does (a disk of radius 4 px: ~15 px in the camera's 6000 px frame)
  and as a shaking hand does (20 px in a random direction), with a camera's noise and
  JPEG (models/train_default.py's degradations), then shrunk to each size: how many are
  rejected, checked, missed (neither).

A reject that comes and goes with the size is the analysis reading the size, not the
photograph.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "bench"))

FOCUS = {"out of focus", "motion blur"}
CAMERA = 1620  # the long side of a camera's preview (a D7100's SubIFD2 JPEG)
LENS_RADIUS = 4.0  # px at CAMERA
SHAKE_LENGTH = 20.0  # px at CAMERA

_state: dict = {}


def _init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from postselectd.analysis import Analyzer
    from postselectd.config import Config

    _state["analyzer"], _state["config"] = Analyzer(), Config()


def shrunk(picture: Image.Image, long_side: int) -> Image.Image:
    scale = long_side / max(picture.size)
    if scale >= 1:
        return picture
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.LANCZOS)


def verdict(picture: Image.Image) -> dict:
    from postselectd.rating import rate

    analysis = _state["analyzer"].analyze(picture)
    rating = rate(
        analysis.keeper_probability,
        analysis.findings,
        _state["config"].rating,
        preview_size=picture.size,
    )
    return {"reasons": list(rating.reasons), "checks": list(rating.checks)}


def keeper_verdicts(job: tuple[str, list[int]]) -> dict:
    from postselectd.preview import load_preview

    path, sizes = job
    picture = load_preview(path).picture
    return {str(size): verdict(shrunk(picture, size)) for size in sizes if size < max(picture.size)}


def blurred_verdicts(job: tuple[int, str, list[int]]) -> dict:
    import train_default as degrade

    from postselectd.preview import load_preview

    seed, path, sizes = job
    rng = np.random.default_rng(seed)
    picture = load_preview(path).picture
    if max(picture.size) < CAMERA:
        return {}
    base = np.asarray(shrunk(picture, CAMERA))
    out = {}
    for kind, image in (
        ("lens", degrade.disk(base, LENS_RADIUS)),
        ("shake", degrade.motion(base, SHAKE_LENGTH, rng.uniform(0, 180))),
    ):
        camera = Image.fromarray(degrade.camera_finish(image, rng))
        for size in sizes:
            out[f"{kind}@{size}"] = verdict(shrunk(camera, size))
    return out


def photos(data: Path) -> Iterator[tuple[str, str]]:
    with (data / "labels.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            yield str(data / row["file"]), row["category"]


def main() -> int:
    from eval_trust import default_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="known-good set (labels.tsv)")
    parser.add_argument("--sizes", default="1620,1000,800,640", help="long sides, px")
    parser.add_argument("--every", type=int, default=2, help="blur every n-th large photo")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args()
    data = args.data or default_data_dir()
    if not (data / "labels.tsv").exists():
        print(f"no known-good set at {data}: run bench/trust/fetch_trust.py", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    items = list(photos(data))
    with Pool(args.workers, initializer=_init) as pool:
        kept = pool.map(keeper_verdicts, [(p, sizes) for p, _ in items], chunksize=4)
        jobs = [(i, p, sizes) for i, (p, _) in enumerate(items) if i % args.every == 0]
        blurred = pool.map(blurred_verdicts, jobs, chunksize=2)

    table = []
    for size in sizes:
        good = [v[str(size)] for v in kept if str(size) in v]
        row = {
            "size": size,
            "good": len(good),
            "good_rejected": sum(bool(v["reasons"]) for v in good),
            "good_rejected_focus": sum(bool(set(v["reasons"]) & FOCUS) for v in good),
            "good_checked": sum(bool(v["checks"]) and not v["reasons"] for v in good),
            "good_rejected_files": sorted(
                Path(path).name
                for (path, _), v in zip(items, kept, strict=True)
                if str(size) in v and set(v[str(size)]["reasons"]) & FOCUS
            ),
        }
        for kind in ("lens", "shake"):
            seen = [v[f"{kind}@{size}"] for v in blurred if f"{kind}@{size}" in v]
            rejected = sum(bool(v["reasons"]) for v in seen)
            checked = sum(bool(v["checks"]) and not v["reasons"] for v in seen)
            row[kind] = {
                "n": len(seen),
                "rejected": rejected,
                "checked": checked,
                "missed": len(seen) - rejected - checked,
            }
        table.append(row)
    if args.json:
        print(json.dumps({"data": str(data), "sizes": table}, indent=1))
        return 0
    print(f"known-good photos of {data}; blurred: every {args.every}th with >= {CAMERA} px")
    print(
        f"{'size':>6} | {'good':>5} {'rejected':>9} {'(focus)':>8} {'checked':>8} |"
        f" {'lens blur: rej / chk / missed':>30} | {'shake: rej / chk / missed':>26}"
    )
    for row in table:

        def counts(c: dict) -> str:
            return f"{c['rejected']:>4} / {c['checked']:>3} / {c['missed']:>3} of {c['n']:<4}"

        print(
            f"{row['size']:>6} | {row['good']:>5} {row['good_rejected']:>9}"
            f" {row['good_rejected_focus']:>8} {row['good_checked']:>8} |"
            f" {counts(row['lens']):>30} | {counts(row['shake']):>26}"
        )
    for row in table:
        if row["good_rejected_files"]:
            print(f"{row['size']} px, good photos rejected for focus:", *row["good_rejected_files"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
