#!/usr/bin/env python3
"""Bursts do not depend on how files arrive: the daemon against `score DIR` (issue #20).

    python bench/burst_arrival.py [--nefs /tmp/burst-nefs] [--spacings 0,3.5,10,60]

The photos: the 13 sample NEFs of ../shared/samples/nef (bursts 0101 and 0104) and 100
camera-size NEFs of bench/throughput.py made in bursts (8 framings of one photo shot
0.4 s apart; made in --nefs on the first run, ~2 min). `postselectd score` on a folder of
them gives the reference: each photo's burst and whether it is the best of its burst.

Then, for each spacing, a real daemon (`postselectd run`, two workers) watches an empty
folder and the photos are moved in, in a shuffled order: one at a time `spacing`
seconds apart, or (spacings of 10 s and more, to keep the run short) in 8 batches with
`spacing` seconds between batches, so that frames of one burst arrive minutes apart. The
60 s run restarts the daemon in the middle. Once every photo is rated and the daemon
has been quiet, its sidecars are compared with the reference. Prints one line per run.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from throughput import make_set  # noqa: E402

from postselectd.sidecar import read_sidecar  # noqa: E402
from postselectd.state import Journal  # noqa: E402

BATCHES = 8


def bursts_in(folder: Path) -> dict[str, tuple[str | None, bool]]:
    found = {}
    for raw in sorted(folder.glob("*.NEF")):
        sidecar = raw.with_suffix(".xmp")
        subjects = (
            read_sidecar(sidecar).get("Xmp.lr.hierarchicalSubject", []) if sidecar.exists() else []
        )
        burst = next((s for s in subjects if s.startswith("PostSelect|burst ")), None)
        found[raw.name] = (burst, "PostSelect|best of burst" in subjects)
    return found


def link_all(sources: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    made = []
    for source in sources:
        os.link(source, folder / source.name)
        made.append(folder / source.name)
    return made


class Daemon:
    def __init__(self, work: Path, watch: Path):
        self.work = work
        self.state = work / "state"
        self.config = work / "config.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "watch": [{"path": str(watch)}],
                    "state_dir": str(self.state),
                    "daemon": {"workers": 2},
                }
            )
        )
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.work / f"daemon-{self.runs}.log", "w")
        env = dict(os.environ, XDG_CONFIG_HOME=str(self.work / "xdg"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 120
        while " started (pid " not in (self.work / f"daemon-{self.runs}.log").read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the daemon did not start: see {self.work}")
            time.sleep(0.1)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def rated(self) -> int:
        if not (self.state / "journal.sqlite3").exists():
            return 0
        with Journal(self.state, readonly=True) as journal:
            return journal.counts().get("rated", 0)


def run(
    sources: list[Path], spacing: float, expected: dict, seed: int, restart: bool, work: Path
) -> str:
    staging = work / "staging"
    files = link_all(sources, staging)
    random.Random(seed).shuffle(files)
    watch = work / "in"
    watch.mkdir()
    daemon = Daemon(work, watch)
    daemon.start()
    per_batch = 1 if spacing < 10 else -(-len(files) // BATCHES)
    batches = [files[i : i + per_batch] for i in range(0, len(files), per_batch)]
    started = time.monotonic()
    for b, batch in enumerate(batches):
        if b:
            time.sleep(spacing)
        if restart and b == len(batches) // 2:
            daemon.stop()
            daemon.start()
        for path in batch:
            os.rename(path, watch / path.name)  # a "moved in" event, like a finished upload
    deadline = time.monotonic() + 600
    while daemon.rated() < len(files) and time.monotonic() < deadline:
        time.sleep(0.5)
    got = bursts_in(watch)
    quiet_deadline = time.monotonic() + 30  # rewrites wait for a burst to be complete
    while got != expected and time.monotonic() < quiet_deadline:
        time.sleep(1)
        got = bursts_in(watch)
    daemon.stop()
    got = bursts_in(watch)
    bursts = {b for b, _ in expected.values() if b}
    same_bursts = sum(
        1
        for b in bursts
        if {n for n, v in got.items() if v[0] == b} == {n for n, v in expected.items() if v[0] == b}
    )
    best_expected = {n for n, v in expected.items() if v[1]}
    best_got = {n for n, v in got.items() if v[1]}
    wrong = sorted(n for n in expected if got.get(n) != expected[n])
    return (
        f"{spacing:>7g} s  {'shuffled' + (', restart' if restart else ''):<18}"
        f"{len(batches):>8} {time.monotonic() - started:>7.0f} s"
        f"{same_bursts:>8}/{len(bursts):<4}"
        f"{len(best_got & best_expected):>6}/{len(best_expected):<4}"
        f"{len(wrong):>6}" + (f"  differ: {', '.join(wrong[:6])}" if wrong else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nefs", type=Path, default=Path("/tmp/burst-nefs"))
    parser.add_argument("--spacings", default="0,3.5,10,60")
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    if len(list(args.nefs.glob("*.NEF"))) < 100:
        make_set(args.nefs, 100, 2, bursts_first=True)
    sources = (
        sorted((SHARED / "samples" / "nef").glob("*.NEF")) + sorted(args.nefs.glob("*.NEF"))[:100]
    )
    tmp = Path(tempfile.mkdtemp(prefix="burst-arrival-", dir=args.nefs.parent))
    reference = tmp / "reference"
    link_all(sources, reference)
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / "xdg"))
    subprocess.run(
        [sys.executable, "-m", "postselectd", "score", str(reference)],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    expected = bursts_in(reference)
    bursts = {b for b, _ in expected.values() if b}
    print(f"command: {sys.executable} {' '.join(sys.argv)}")
    print(
        f"{len(sources)} photos; `score DIR`: {len(bursts)} bursts, "
        f"{sum(1 for _, best in expected.values() if best)} best frames"
    )
    header = f"{'spacing':>9}  {'order':<18}{'batches':>8}{'took':>9}"
    print(header + f"{'bursts':>10}{'best':>9}{'differ':>8}")
    for n, spacing in enumerate(float(s) for s in args.spacings.split(",")):
        work = tmp / f"run-{n}"
        work.mkdir()
        print(
            run(sources, spacing, expected, args.seed + n, restart=spacing >= 60, work=work),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
