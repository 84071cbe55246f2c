#!/usr/bin/env python3
"""What the name rules cost on a card folder: pairing and sidecar lookups per photo.

    python bench/names_speed.py [--frames 3000] [--repeat 5]

A folder of FRAMES raws, each with its sidecar and every tenth with a JPEG beside it
(empty files: only names matter here). Prints the median of REPEAT runs of:

- find_photos: listing the folder for ``score`` (pairs resolved), ms per folder;
- same_stem_names: the siblings of one photo from a listing, as ``finish`` does before
  each sidecar write, µs per photo;
- sidecar_path: the lightroom sidecar of one photo (an existing one), µs per photo;
- second_truths: the daemon's look, after each raw is rated, for a JPEG of the same name
  rated before it (the sibling names come from the listing the sidecar write made), µs
  per raw.

Names are compared ignoring case and Unicode form (postselectd/photos.py): this shows
what that costs next to a byte-for-byte comparison on the same machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postselectd.config import Config  # noqa: E402
from postselectd.photos import find_photos, same_stem_names  # noqa: E402
from postselectd.sidecar import sidecar_path  # noqa: E402
from postselectd.stages import withdraw_second_truths  # noqa: E402


def _median_ms(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.frames):
            for name in (f"DSC_{i:04d}.NEF", f"DSC_{i:04d}.xmp"):
                (folder / name).write_bytes(b"")
            if i % 10 == 0:
                (folder / f"dsc_{i:04d}.jpg").write_bytes(b"")
        old = time.time() - 60  # a settled folder, as a card is once copied
        os.utime(folder, (old, old))
        listing = os.listdir(folder)
        photos = [folder / f"DSC_{i:04d}.NEF" for i in range(0, args.frames, 10)]
        n = len(photos)
        found = _median_ms(lambda: list(find_photos([folder], ["lightroom"])), args.repeat)
        stems = _median_ms(lambda: [same_stem_names(p, listing) for p in photos], args.repeat)
        sidecar_path(photos[0], "lightroom")  # the folder's listing is cached once
        sidecars = _median_ms(
            lambda: [sidecar_path(p, "lightroom") for p in photos], args.repeat
        )  # fmt: skip
        config = Config()
        siblings = {p: same_stem_names(p, listing) for p in photos}
        truths = _median_ms(
            lambda: [withdraw_second_truths(p, config, siblings[p]) for p in photos], args.repeat
        )  # fmt: skip
        print(f"folder: {args.frames} raws + sidecars + {args.frames // 10} JPEGs")
        print(f"find_photos       {found:8.1f} ms per folder")
        print(f"same_stem_names   {stems / n * 1000:8.1f} µs per photo")
        print(f"sidecar_path      {sidecars / n * 1000:8.1f} µs per photo")
        print(f"second_truths     {truths / n * 1000:8.1f} µs per raw")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
