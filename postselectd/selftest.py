"""`postselectd doctor --bench`: images/s of the analysis on this machine, offline.

The frames are made here, not read from photographs: the command must work on a fresh
install, offline, without the repository's ../shared samples, and the package ships no
photograph (a few MB of JPEGs in every install, and licences to carry, for one command).
Each frame is a camera preview's size (1620x1080, a Nikon NEF's embedded JPEG) with
structure at every scale (gradients, edges, noise, a random seed each), written as a
JPEG to a temp folder and read back through the real preview stage, so every frame
costs what a JPEG preview costs: decode, measurements, backbone, keeper head and the
face search. A generated frame has no face, so the landmark and eye models do not run
(3-17 ms a frame on the sample NEFs with faces); otherwise a frame costs about what a
real NEF's preview does (README, Performance).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FRAMES = 20
FRAME_SIZE = (1620, 1080)


@dataclass(frozen=True)
class SelfTest:
    frames: int
    images_per_second: float
    median_ms: float


def synthetic_frame(seed: int, size: tuple[int, int] = FRAME_SIZE) -> Image.Image:
    """A photograph-like RGB frame: soft gradients, hard-edged shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    base = np.empty((height, width, 3), dtype=np.uint8)
    base[..., 0] = 120 + 80 * np.sin(x / (90 + 40 * rng.random()) + rng.random() * 6) * np.cos(
        y / (150 + 60 * rng.random())
    )
    base[..., 1] = 110 + 70 * np.cos(y / (70 + 30 * rng.random()) + rng.random() * 6)
    base[..., 2] = 100 + 60 * np.sin((x + y) / (120 + 50 * rng.random()))
    picture = Image.fromarray(base)
    draw = ImageDraw.Draw(picture)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(20, 400)), y0 + int(rng.integers(20, 300)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noise = rng.integers(-10, 11, (height, width, 3), dtype=np.int16)
    noisy = np.asarray(picture, dtype=np.int16) + noise
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def run_self_test(analyzer, frames: int = FRAMES) -> SelfTest:
    """Preview + analysis of ``frames`` generated JPEG frames in this process, one after
    another, with ``analyzer``'s sessions (after one unmeasured frame)."""
    from postselectd.stages import analyze_file

    with tempfile.TemporaryDirectory(prefix="postselectd-selftest-") as folder:
        paths = []
        for number in range(frames + 1):
            path = Path(folder) / f"frame_{number:02d}.jpg"
            synthetic_frame(number).save(path, quality=92)
            paths.append(path)
        warm, *measured = paths
        analyze_file(warm, analyzer)
        times = []
        start = time.perf_counter()
        for path in measured:
            began = time.perf_counter()
            scored = analyze_file(path, analyzer)
            if scored.analysis is None:
                raise RuntimeError(f"self-test frame not analysed: {scored.error}")
            times.append((time.perf_counter() - began) * 1000)
        elapsed = time.perf_counter() - start
    return SelfTest(frames, frames / elapsed, statistics.median(times))
