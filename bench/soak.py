"""Soak: the daemon under steady ingest for 10 minutes; does its memory level off?

Starts the real daemon (`python -m postselectd run`, 2 workers by default, HOME/XDG dirs
and the state folder inside a temp folder) watching one flat folder, and writes a NEF
into it every --interval seconds (0.1: ten files a second, a card copy or a fast
tethered session) for --minutes. Every file is distinct: the NEFs are made by
../shared/tools/make_nef.py from --photos different photographs of ../shared/eval
(people with faces, landscapes, blurred frames), and each copy gets its own capture time
(rewritten in place, --capture-step seconds after the previous file, so consecutive frames
chain like one long burst: the worst case for the burst hold) and a unique tail, so the
analysis cache never hits and every file is decoded and analysed.

Prints RSS (resident memory) of the daemon's main process and of its workers at the start
(daemon ready, nothing arrived), after 1, 5 and 10 minutes (and every minute), the files
written, rated and still queued, and every log line that is not a rated file's line (the
errors and warnings). RSS levels off when the last half of the run adds less than 10% to
the tree's RSS.

usage: python bench/soak.py [--minutes 10] [--interval 0.1] [--workers 2] [--photos 12]
                            [--capture-step 0.1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

# Beside bench/latency.py (run as `python bench/soak.py`, this folder is on sys.path);
# latency.py puts the checkout on sys.path for postselectd.
from latency import status_kb, workers_of, write_sparse

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The 6000x4000 JpgFromRaw slot of a make_nef NEF: zeroed (postselectd reads the
# 1620x1080 preview), so a 3.4 MB file costs 0.3 MB of disk when written sparsely.
JPG_FROM_RAW = (1189376, 2287892)
BASE_TIME = "2026:05:01 10:00:00"
CATEGORIES = ("portraits", "natural", "blur", "faceblur", "eyes-face")
CHECKPOINTS = (1, 5, 10)  # minutes


# --- the files ---------------------------------------------------------------------


def make_bases(count: int, tmp: Path) -> list[bytes]:
    """``count`` NEFs from different photographs, with the JpgFromRaw slot zeroed."""
    photos: list[Path] = []
    pools = [sorted((SHARED / "eval" / c).glob("*.jpg")) for c in CATEGORIES]
    pools = [p for p in pools if p]
    i = 0
    while len(photos) < count and any(pools):
        pool = pools[i % len(pools)]
        if pool:
            photos.append(pool.pop(len(pool) // 2))
        i += 1
    bases = []
    for n, photo in enumerate(photos):
        out = tmp / f"base{n}.NEF"
        subprocess.run(
            [sys.executable, str(SHARED / "tools" / "make_nef.py"), str(photo), str(out)]
            + ["--time", BASE_TIME],
            check=True,
            capture_output=True,
        )
        data = bytearray(out.read_bytes())
        offset, length = JPG_FROM_RAW
        data[offset : offset + length] = bytes(length)
        if BASE_TIME.encode() not in data:
            raise SystemExit(f"{out}: capture time {BASE_TIME} not found in the NEF")
        bases.append(bytes(data))
        out.unlink()
    return bases


def write_nef(base: bytes, path: Path, capture: datetime, tag: int) -> None:
    """A distinct file: its own capture time (every EXIF date, same length) and tail."""
    stamp = capture.strftime("%Y:%m:%d %H:%M:%S").encode()
    data = bytearray(base.replace(BASE_TIME.encode(), stamp))
    mark = f"soak{tag:010d}".encode()
    data[len(data) - 4096 : len(data) - 4096 + len(mark)] = mark
    write_sparse(bytes(data), path)


# --- measuring -----------------------------------------------------------------------


def journal_counts(state: Path) -> dict[str, int]:
    counts = {"pending": 0, "rated": 0, "failed": 0, "skipped": 0}
    try:
        db = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            for status, n in db.execute("SELECT status, COUNT(*) FROM files GROUP BY status"):
                counts[status] = n
        finally:
            db.close()
    except sqlite3.Error:
        pass
    return counts


RATED_LINE = re.compile(r"^\S.*: (?:\d\*|reject) \S+ p=")
QUIET_LINES = re.compile(r"^(postselectd \S+ started|postselectd stopped|.*: burst \d{4} of \d+)")


def other_lines(log_text: str) -> list[str]:
    """Log lines that are not one rated file's line, a burst's update, start or stop."""
    return [
        line
        for line in log_text.splitlines()
        if line.strip() and not RATED_LINE.match(line) and not QUIET_LINES.match(line)
    ]


# --- the run -------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between files")
    ap.add_argument("--workers", default="2")
    ap.add_argument("--photos", type=int, default=12, help="different photographs")
    ap.add_argument("--capture-step", type=float, default=0.1, help="capture time step (s)")
    ap.add_argument("--keep", type=Path, help="copy the daemon's log here")
    args = ap.parse_args()
    if not (SHARED / "eval").is_dir():
        print(f"needs {SHARED}/eval and {SHARED}/tools/make_nef.py", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="postselectd-soak-") as tmp_name:
        tmp = Path(tmp_name)
        watch, state = tmp / "shoot", tmp / "state"
        watch.mkdir()
        print(f"making {args.photos} distinct NEFs ...", flush=True)
        bases = make_bases(args.photos, tmp)
        config = tmp / "config.yaml"
        config.write_text(
            f"watch:\n  - path: {watch}\nstate_dir: {state}\ndaemon:\n  workers: {args.workers}\n"
        )
        env = dict(
            os.environ,
            HOME=str(tmp / "home"),
            XDG_CONFIG_HOME=str(tmp / "xdg"),
            XDG_DATA_HOME=str(tmp / "data"),
        )
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        log_path = tmp / "daemon.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "run", "--config", str(config)]
            + ["--log-level", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        try:
            return soak(args, proc, log_path, watch, state, bases)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
            if args.keep:
                shutil.copy(log_path, args.keep)


def soak(args, proc, log_path: Path, watch: Path, state: Path, bases: list[bytes]) -> int:
    deadline = time.monotonic() + 120
    while " started (pid " not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(log_path.read_text(), file=sys.stderr)
            return 1
        time.sleep(0.1)
    time.sleep(2.0)  # let the workers settle after loading their models

    def sample(minute: float, written: int) -> dict:
        workers = workers_of(proc.pid)
        main_kb = status_kb(proc.pid, "VmRSS")
        worker_kb = [status_kb(w, "VmRSS") for w in workers]
        counts = journal_counts(state)
        return {
            "minute": minute,
            "main": main_kb / 1024,
            "workers": [kb / 1024 for kb in worker_kb],
            "tree": (main_kb + sum(worker_kb)) / 1024,
            "written": written,
            **counts,
        }

    def show(s: dict, label: str) -> None:
        workers = " + ".join(f"{w:.0f}" for w in s["workers"])
        print(
            f"{label:>9}  main {s['main']:6.0f} MB  workers {workers:>11} MB  "
            f"tree {s['tree']:6.0f} MB  written {s['written']:5d}  rated {s['rated']:5d}  "
            f"queued {s['pending']:4d}  failed {s['failed']}",
            flush=True,
        )

    samples = [sample(0.0, 0)]
    show(samples[0], "start")
    total = int(args.minutes * 60 / args.interval)
    started = time.monotonic()
    capture = datetime(2026, 5, 1, 10, 0, 0)
    next_minute = 1
    for n in range(total):
        due = started + n * args.interval
        while True:
            now = time.monotonic()
            if now >= due:
                break
            time.sleep(min(due - now, 0.05))
        if proc.poll() is not None:
            print(f"the daemon died (exit status {proc.returncode}) after {n} files")
            print("\n".join(log_path.read_text().splitlines()[-30:]))
            return 1
        write_nef(
            bases[n % len(bases)],
            watch / f"DSC_{n:05d}.NEF",
            capture + timedelta(seconds=args.capture_step * n),
            n,
        )
        minute = (time.monotonic() - started) / 60
        if minute >= next_minute:
            s = sample(float(next_minute), n + 1)
            samples.append(s)
            show(s, f"{next_minute} min")
            next_minute += 1
    if next_minute <= args.minutes:  # the last minute mark, once the last file is written
        s = sample(float(next_minute), total)
        samples.append(s)
        show(s, f"{next_minute} min")
    # Let the queue drain, then stop the daemon as a service manager would.
    drain_start = time.monotonic()
    drain_deadline = drain_start + 600
    while time.monotonic() < drain_deadline:
        c = journal_counts(state)
        if c["rated"] + c["failed"] + c["skipped"] >= total:
            break
        time.sleep(1.0)
    final = sample(args.minutes, total)
    show(final, f"+{time.monotonic() - drain_start:.0f} s")
    stop_start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    stop_s = time.monotonic() - stop_start
    text = log_path.read_text()
    rated_lines = sum(1 for line in text.splitlines() if RATED_LINE.match(line))
    others = other_lines(text)

    print()
    print("RSS (MB)        main  workers(sum)   tree")
    for minute in (0, *CHECKPOINTS):
        match = [s for s in samples if s["minute"] == minute]
        if match:
            s = match[0]
            label = "start" if minute == 0 else f"{minute} min"
            print(f"  {label:>8}  {s['main']:8.0f}  {sum(s['workers']):12.0f}  {s['tree']:6.0f}")
    half = [s for s in samples if s["minute"] >= args.minutes / 2]
    verdict = "n/a"
    if len(half) >= 2 and half[0]["tree"] > 0:
        growth = (half[-1]["tree"] - half[0]["tree"]) / half[0]["tree"]
        span = half[-1]["minute"] - half[0]["minute"]
        verdict = (
            f"{'levels off' if growth < 0.10 else 'STILL GROWING'}: "
            f"{growth * 100:+.1f}% from minute {half[0]['minute']:.0f} to "
            f"{half[-1]['minute']:.0f} ({(half[-1]['tree'] - half[0]['tree']) / span:+.1f} MB/min)"
        )
    print(f"RSS: {verdict}")
    print(
        f"files: {total} written in {args.minutes:g} min, {final['rated']} rated "
        f"({rated_lines} rated lines in the log), {final['failed']} failed, "
        f"{final['pending']} still queued, {final['skipped']} skipped"
    )
    print(
        f"load average during the run: {os.getloadavg()[1]:.1f} (5 min; the machine has "
        f"{os.cpu_count()} cores)"
    )
    print(f"stop: SIGTERM -> exit status {code} in {stop_s:.1f} s")
    print(f"other log lines (errors, warnings): {len(others)}")
    for line in others[:20]:
        print(f"  {line}")
    ok = code == 0 and final["failed"] == 0 and "levels off" in verdict
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
