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
    python bench/learn_speed.py ../shared/eval --latency 12

--latency N: then a real daemon (`postselectd run`, model: personal, this state folder)
watches a folder, and N photos not seen before are written into it one every --gap
seconds, first with nothing else going on, then while the daemon retrains (asked as
`postselectd learn --now` asks it); close -> sidecar latency of each, p50 and max.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from eval_personal import build_frames, rated_copy, select_for  # noqa: E402

from postselectd import learn  # noqa: E402
from postselectd.config import Config  # noqa: E402
from postselectd.photos import Signature, fingerprint  # noqa: E402
from postselectd.stages import Scored, scored_record  # noqa: E402
from postselectd.state import Journal  # noqa: E402
from postselectd.train import train  # noqa: E402
from postselectd.versions import analysis_version  # noqa: E402


def daemon_rated(journal: Journal, photos: list[Path], config: Config) -> None:
    """Each photo analysed as a daemon worker does, kept in the journal as rated."""
    from postselectd.analysis import Analyzer
    from postselectd.preview import load_preview

    analyzer = Analyzer(config.analysis.model_copy(update={"personal_model": None}))
    for photo in photos:
        fp = fingerprint(photo)
        if journal.cached_analysis(fp, analysis_version()) is None:
            preview = load_preview(photo, min_size=config.analysis.preview_min_size)
            analysis = analyzer.analyze(preview.picture)
            scored = Scored(
                photo,
                analysis,
                capture_time=preview.capture_time,
                preview_size=preview.picture.size,
            )
            journal.store_analysis(fp, analysis_version(), scored_record(scored), time.time())
        now = time.time()
        journal.touch(photo, Signature.of(photo.stat()), now, 0)
        journal.claim(photo, fp, now)
        journal.rated(photo, stars=3, label=None, result=None, elapsed_ms=0.0, now=now)


def write_and_wait(photo: Path, target: Path, timeout: float = 60.0) -> float:
    """Copy ``photo`` to ``target`` (closed at once); seconds until its sidecar appears."""
    shutil.copyfile(photo, target)
    closed = time.time()
    sidecar = target.with_suffix(".xmp")
    deadline = time.monotonic() + timeout
    while not sidecar.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{target.name}: no sidecar after {timeout} s")
        time.sleep(0.01)
    return sidecar.stat().st_mtime - closed


def latency(args, config: Config, photos: list[Path]) -> None:
    """Close -> sidecar latency on an idle daemon, and while it retrains."""
    import yaml

    watch = args.work / "watch"
    shutil.rmtree(watch, ignore_errors=True)
    watch.mkdir()
    config_path = args.work / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "watch": [{"path": str(watch)}],
                "state_dir": str(config.resolved_state_dir()),
                "model": "personal",
                "daemon": {"workers": args.workers},
                "learn": {"after_corrections": 100_000, "after_quiet_minutes": 0},
            }
        )
    )
    log_path = args.work / "daemon.log"
    env = {**os.environ, "HOME": str(args.work), "XDG_CONFIG_HOME": str(args.work / "xdg")}
    with open(log_path, "w") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "run", "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 120
        while " started (pid " not in log_path.read_text():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(log_path.read_text()[-2000:])
            time.sleep(0.1)
        time.sleep(2)
        photos = iter(photos)
        idle = []
        for _ in range(args.latency):
            photo = next(photos)
            idle.append(write_and_wait(photo, watch / f"idle-{photo.name}"))
            time.sleep(args.gap)
        learn.request(config, "now")
        while "in the background" not in log_path.read_text():
            time.sleep(0.05)
        busy = []
        while len(busy) < args.latency:
            if "learnt from" in log_path.read_text() or "refused" in log_path.read_text():
                break  # the retrain is over: what follows is not "during"
            photo = next(photos)
            busy.append(write_and_wait(photo, watch / f"busy-{photo.name}"))
            time.sleep(args.gap)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    for name, values in (("idle", idle), ("during a retrain", busy)):
        if values:
            print(
                f"latency {name:<17} {len(values):>3} photos: p50 "
                f"{statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"
            )
    print(
        [
            line
            for line in log_path.read_text().splitlines()
            if "learnt from" in line or "refused" in line
        ][:1]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path, nargs="?", default=ROOT.parent / "shared" / "eval")
    parser.add_argument("--work", type=Path, default=Path("/tmp/postselectd-learn-speed"))
    parser.add_argument("--shoots", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency", type=int, default=0, metavar="N")
    parser.add_argument("--gap", type=float, default=0.3)
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
    if args.latency:
        # Photos the journal has not seen: those the first model learnt from.
        fresh = [folder / item["file"] for item in items if item["shoot"] in learnt_from]
        latency(args, config, fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
