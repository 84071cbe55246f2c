"""`postselectd score` of one NEF: time from process start to its first sidecar.

A tethered shoot or a one-folder run pays the start (imports, worker processes, model
sessions) for every call, so this is the figure a photographer feels. Each run copies
one NEF (default ../shared/samples/nef/DSC_0101.NEF) into a fresh temp folder with its
own HOME and XDG dirs (no journal, so nothing is served from the analysis cache; the
onnxruntime cache of optimized models is kept between runs unless --cold-cache, as it
is for a user), starts `python -m postselectd score FOLDER`, and polls for the sidecar
every millisecond. One untimed run first warms the disk cache (and fills the model
cache and the checkout's __pycache__: PYTHONDONTWRITEBYTECODE is dropped, unless
--no-bytecode, as an installed package has its bytecode). Prints every run, the median
and the best.

On a shared or busy machine compare medians of the same run of this script (before and
after a change, alternately), not figures from different hours.

With --against CHECKOUT (another worktree, e.g. of the commit before a change) each run
times that checkout's code right after this one's, with this interpreter, so both see the
same load.

usage: python bench/start_time.py [--nef FILE] [--runs 5] [--cold-cache] [--workers N]
                                  [--against CHECKOUT]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if not SHARED.is_dir():
    SHARED = Path("/work/shared")


def one_run(
    nef: Path, cache: Path, extra: list[str], checkout: Path = ROOT, bytecode: bool = True
) -> tuple[float, float, float]:
    """(seconds to the first sidecar, seconds to the process's exit, CPU seconds of the
    command and its workers: what a loaded machine cannot make noisier)."""
    with tempfile.TemporaryDirectory(prefix="start-time-") as tmp:
        home = Path(tmp) / "home"
        photos = Path(tmp) / "photos"
        photos.mkdir()
        home.mkdir()
        shutil.copyfile(nef, photos / nef.name)
        env = dict(
            os.environ,
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_STATE_HOME=str(home / ".local/state"),
            XDG_DATA_HOME=str(home / ".local/share"),
            XDG_CACHE_HOME=str(cache),
        )
        if bytecode:
            # As an installed package runs (pip compiles its .pyc at install): without
            # them every process compiles postselectd's sources again, ~0.2 s each.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "score", str(photos), *extra],
            env=env,
            cwd=checkout,  # `python -m postselectd` runs this checkout's code
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        first = None
        while first is None:
            if any(p.suffix == ".xmp" and not p.name.startswith(".") for p in photos.iterdir()):
                first = time.perf_counter() - start
            elif process.poll() is not None:
                raise SystemExit(f"score ended with status {process.returncode}, no sidecar")
            else:
                time.sleep(0.001)
        process.wait()
        ended = time.perf_counter() - start
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
        return first, ended, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nef", type=Path, default=SHARED / "samples/nef/DSC_0101.NEF")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="an empty onnxruntime model cache at every run (a first start after install)",
    )
    parser.add_argument("--against", type=Path, default=None, metavar="CHECKOUT")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE if set: every start compiles the sources",
    )
    args = parser.parse_args()
    if not args.nef.is_file():
        raise SystemExit(f"{args.nef}: not found (pass --nef)")
    extra = ["--workers", str(args.workers)] if args.workers else []
    checkouts = {"this": ROOT}
    if args.against:
        checkouts[str(args.against)] = args.against.resolve()
    times: dict[str, tuple[list[float], ...]] = {name: ([], [], []) for name in checkouts}
    with tempfile.TemporaryDirectory(prefix="start-time-cache-") as caches:
        kept = Path(caches) / "kept"
        for checkout in checkouts.values():  # warm the disk cache and the model cache
            one_run(args.nef, kept, extra, checkout, not args.no_bytecode)
        for number in range(args.runs):
            for name, checkout in checkouts.items():
                cache = Path(caches) / f"cold-{name}-{number}" if args.cold_cache else kept
                first, ended, cpu = one_run(args.nef, cache, extra, checkout, not args.no_bytecode)
                for column, value in zip(times[name], (first, ended, cpu), strict=True):
                    column.append(value)
                print(
                    f"run {number + 1} {name}: first sidecar {first:.3f} s, exit {ended:.3f} s, "
                    f"CPU {cpu:.2f} s"
                )
    for name, (firsts, exits, cpus) in times.items():
        print(
            f"{name}: first sidecar median {statistics.median(firsts):.3f} s, "
            f"best {min(firsts):.3f} s; exit median {statistics.median(exits):.3f} s; "
            f"CPU median {statistics.median(cpus):.2f} s "
            f"({args.runs} runs, {args.nef.name}, "
            f"{'cold' if args.cold_cache else 'kept'} model cache, "
            f"{'sources compiled at every start' if args.no_bytecode else 'bytecode kept'})"
        )


if __name__ == "__main__":
    main()
