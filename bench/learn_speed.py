#!/usr/bin/env python3
"""What one retrain of the daemon's learning loop costs (learn.py), in CPU seconds.

Builds the "people" photographer of bench/eval_personal.py from ../shared/eval, trains a
personal model on 3/4 of the shoots (`postselectd train`), and lets the other shoots be
the photographer's corrections of photos the daemon rated: each is analysed as the
daemon's workers do, its analysis kept in a journal, and the photographer's verdict
recorded as a correction. Then the retrain runs exactly as the daemon starts it
(learn.background_retrain in a process of its own, nice 19 and idle I/O), and its CPU
time, wall time and outcome are printed (learn/last.json).

    python bench/learn_speed.py ../shared/eval          # ~4 min the first time, then ~1 min
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from eval_personal import build_frames, rated_copy, select_for  # noqa: E402

from postselectd import __version__, learn  # noqa: E402
from postselectd.config import Config  # noqa: E402
from postselectd.pipeline import Scored, scored_record  # noqa: E402
from postselectd.state import Journal, Signature, fingerprint  # noqa: E402
from postselectd.train import train  # noqa: E402


def daemon_rated(journal: Journal, photos: list[Path], config: Config) -> None:
    """Each photo analysed as a daemon worker does, kept in the journal as rated."""
    from postselectd.analysis import Analyzer
    from postselectd.preview import load_preview

    analyzer = Analyzer(config.analysis.model_copy(update={"personal_model": None}))
    for photo in photos:
        fp = fingerprint(photo)
        if journal.cached_analysis(fp, __version__) is None:
            preview = load_preview(photo, min_size=config.analysis.preview_min_size)
            analysis = analyzer.analyze(preview.picture)
            scored = Scored(
                photo,
                analysis,
                capture_time=preview.capture_time,
                preview_size=preview.picture.size,
            )
            journal.store_analysis(fp, __version__, scored_record(scored), time.time())
        now = time.time()
        journal.touch(photo, Signature.of(photo.stat()), now, 0)
        journal.claim(photo, fp, now)
        journal.rated(photo, stars=3, label=None, result=None, elapsed_ms=0.0, now=now)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path, nargs="?", default=ROOT.parent / "shared" / "eval")
    parser.add_argument("--work", type=Path, default=Path("/tmp/postselectd-learn-speed"))
    parser.add_argument("--shoots", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    state = args.work / "state"
    config = Config(state_dir=state, model="personal")

    items = build_frames(args.eval_dir, args.work, 3, args.shoots)
    folder = rated_copy(args.work, items, 3, "people")
    shoots = sorted({item["shoot"] for item in items})
    learnt_from = shoots[: len(shoots) * 3 // 4]
    corrected = [item for item in items if item["shoot"] not in learnt_from]
    for old in (state / "personal").glob("*"):
        if old.is_file():
            old.unlink()
    (state / "learn" / "last.json").unlink(missing_ok=True)
    result = train(
        [folder / f"shoot-{s:02d}" for s in learnt_from if (folder / f"shoot-{s:02d}").is_dir()],
        config,
        workers=args.workers,
    )
    print(f"model: {result.card['images']} frames in {result.card['shoots']} shoots")

    with Journal(state) as journal:
        photos = [folder / item["file"] for item in corrected]
        daemon_rated(journal, photos, config)
        for item, photo in zip(corrected, photos, strict=True):
            select = select_for("people", item)
            journal.record_correction(photo, "select" if select else "reject", "bench", time.time())
    print(f"corrections: {len(corrected)} frames in {len(shoots) - len(learnt_from)} shoots")

    process = multiprocessing.get_context("spawn").Process(
        target=learn.background_retrain, args=(config, "bench/learn_speed.py")
    )
    started = time.perf_counter()
    process.start()
    process.join()
    wall = time.perf_counter() - started
    outcome = learn.last_try(config)
    print(learn.outcome_line(outcome))
    print(
        f"retrain: {outcome.get('cpu_seconds')} s CPU in the retrain process "
        f"({outcome.get('seconds')} s inside it, {wall:.1f} s with its start at nice 19), "
        f"{os.cpu_count()} cores"
    )
    print(json.dumps({k: outcome.get(k) for k in ("outcome", "cpu_seconds", "seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
