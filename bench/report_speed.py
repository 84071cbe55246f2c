"""How long `postselectd report` takes for a 3,000-frame shoot (the goal: under a minute
on 2 cores), and how big the page and its thumbnail folder get.

    python bench/report_speed.py                 # 3,000 frames, 2 workers
    python bench/report_speed.py --frames 500 --workers 1 --embed

The frames are real NEFs made distinct: every photo in ../shared/eval/natural is made into
a NEF by ../shared/tools/make_nef.py (its own capture time), the 13 sample NEFs join them,
and the whole set is rated once with `postselectd score`. The 3,000 frames are copies of
those, each with its own capture time written in (so no two files are alike), with the
sidecar of the frame it copies, in 6 shoot folders under one tree. All of this is made
once under --work (default /tmp/postselectd-bench-report, ~10 GB for 3,000 frames) and
reused; only the report is timed, as the command a user runs (process start included).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from postselectd import rawmeta  # noqa: E402

SHOOTS = 6


def make_base(work: Path) -> list[Path]:
    """Distinct NEFs from every natural photo + the sample NEFs, rated once."""
    base = work / "base"
    done = base / ".rated"
    if done.exists():
        return sorted(base.glob("*.NEF"))
    base.mkdir(parents=True, exist_ok=True)
    photos = sorted(
        p for p in (SHARED / "eval" / "natural").iterdir() if p.suffix in (".png", ".jpg")
    )
    start = datetime(2026, 6, 1, 9, 0, 0)

    def make(item: tuple[int, Path]) -> None:
        i, photo = item
        stamp = (start + timedelta(seconds=7 * i)).strftime("%Y:%m:%d %H:%M:%S")
        out = base / f"NAT_{i:04d}.NEF"
        if not out.exists():
            subprocess.run(
                [
                    sys.executable,
                    str(SHARED / "tools" / "make_nef.py"),
                    str(photo),
                    str(out),
                    "--time",
                    f"{stamp}.00",
                ],
                check=True,
                capture_output=True,
            )

    began = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(make, enumerate(photos)))
    for nef in sorted((SHARED / "samples" / "nef").glob("*.NEF")):
        shutil.copy(nef, base / nef.name)
        os.chmod(base / nef.name, 0o644)
    print(f"made {len(photos)} NEFs with make_nef.py in {time.perf_counter() - began:.0f} s")
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "postselectd", "score", str(base)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        env=_env(work),
    )
    print(
        f"rated the {len(list(base.glob('*.NEF')))} base NEFs in "
        f"{time.perf_counter() - began:.0f} s"
    )
    done.touch()
    return sorted(base.glob("*.NEF"))


def make_tree(work: Path, base: list[Path], frames: int) -> Path:
    """``frames`` distinct copies of the base NEFs, with their sidecars, in shoot folders."""
    tree = work / f"tree-{frames}"
    done = tree / ".complete"
    if done.exists():
        return tree
    began = time.perf_counter()
    times = {nef: rawmeta.read_container(nef).capture_time for nef in base}
    start = datetime(2026, 7, 1, 8, 0, 0)
    for i in range(frames):
        source = base[i % len(base)]
        folder = tree / f"shoot-{i * SHOOTS // frames + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"DSC_{i:05d}.NEF"
        data = source.read_bytes()
        old = times[source].strftime("%Y:%m:%d %H:%M:%S").encode()
        new = (start + timedelta(seconds=3 * i)).strftime("%Y:%m:%d %H:%M:%S").encode()
        target.write_bytes(data.replace(old, new))  # its own capture time: a distinct file
        shutil.copy(source.with_suffix(".xmp"), target.with_suffix(".xmp"))
    done.touch()
    print(f"made {frames} frames in {SHOOTS} shoots in {time.perf_counter() - began:.0f} s")
    return tree


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(work / "no-config")  # built-in defaults
    env["XDG_DATA_HOME"] = str(work / "no-journal")
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--embed", action="store_true", help="time the one-file page instead")
    parser.add_argument("--work", type=Path, default=Path("/tmp/postselectd-bench-report"))
    args = parser.parse_args()
    if not (SHARED / "eval" / "natural").exists():
        print(f"needs {SHARED} (eval/natural, samples/nef, tools/make_nef.py)")
        return 2
    tree = make_tree(args.work, make_base(args.work), args.frames)
    output = args.work / "out" / "report.html"
    shutil.rmtree(output.parent, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "postselectd",
        "report",
        str(tree),
        "-o",
        str(output),
        "--workers",
        str(args.workers),
    ] + (["--embed"] if args.embed else [])
    load = os.getloadavg()[0]
    cpu_before = _children_cpu()
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=_env(args.work))
    seconds = time.perf_counter() - began
    cpu = _children_cpu() - cpu_before
    if done.returncode != 0:
        print(done.stdout, done.stderr)
        return 1
    files = output.parent / "report_files"
    folder_mb = sum(p.stat().st_size for p in files.rglob("*.jpg")) / 1e6 if files.exists() else 0
    print(done.stdout.strip())
    print(f"cpus: {os.cpu_count()}, workers: {args.workers}")
    print(
        f"report of {args.frames} frames: {seconds:.1f} s "
        f"({args.frames / seconds:.0f} frames/s, process start included)"
    )
    print(f"page: {output.stat().st_size / 1e6:.1f} MB, thumbnails folder: {folder_mb:.0f} MB")
    # Other work on the machine stretches the wall time; the CPU time says what the report
    # itself needs (its workers included).
    print(
        f"cpu time: {cpu:.1f} s ({cpu / args.frames * 1000:.1f} ms a frame); load average "
        f"before: {load:.1f} (1.0 per busy core)"
    )
    goal = 60.0 * args.frames / 3000
    print(f"{'PASS' if seconds < goal else 'FAIL'}: goal {goal:.0f} s")
    return 0 if seconds < goal else 1


if __name__ == "__main__":
    sys.exit(main())
