#!/usr/bin/env python3
"""Throughput of `postselectd score` on camera-size NEFs, next to the slow ways to do it.

    python bench/throughput.py --make /tmp/nefs --count 1000     # once: distinct NEFs
    python bench/throughput.py /tmp/nefs [--reference 200] [--repeat 3]

Prints one table, all measured in the same run on the same files:

- postselectd: ``Pipeline.score`` (exactly what ``postselectd score DIR`` runs: worker
  processes, one per core, burst grouping, rating and sidecar writing with every check
  on); images/s over the whole run including worker start-up, per-stage median ms, and
  the peak RSS of all processes (sampled every 50 ms).
- reference: LibRaw's largest preview (``rawpy.extract_thumb``, the 6000x4000 JPEG of a
  D7100 NEF) fully decoded with Pillow, then the same ``Analyzer.analyze`` (same models),
  in the same number of worker processes; no sidecars (that only flatters it).
- naive raw decode: ``rawpy.postprocess(half_size=True)`` on the complete raws of
  ../shared/samples/raw/good, per file and per megapixel (the NEFs made here carry
  zero-filled sensor data, so timing them would mean nothing).

The NEFs are made by ../shared/tools/make_nef.py --full (28.8 MB each, sparse on disk)
from different photos of ../shared/eval (natural, portraits, blur), each in up to 8
variants (mirrored, cropped) so every file is distinct: copies of one file would be
served from the daemon's analysis reuse and measure nothing. Variants of one photo get
capture times 0.4 s apart, like a burst; photos 20 s apart.
The machine's load average is printed: the two cores may be shared.

    python bench/throughput.py /tmp/nefs --files 1000 --cluster

``--cluster`` measures ``score --cluster`` instead, against local ``score`` in the same
run: a Dask cluster is started here as a deployment has one running before ``score``
(``dask scheduler``, ``dask worker --nthreads 1`` x 2, then x 1), and the run is timed
from connecting to it: setting up the analysis on the workers (their models load),
``leave_rated``, analysis on the workers, bursts, rating and sidecars in this process.
It prints the images/s of each, the CPU each process took per image (the scheduler's
is what bounds a big cluster), and the ratio to local ``score``.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from postselectd.workers import tree_rss_kb  # noqa: E402

# (mirror, crop fraction, anchor x, anchor y): 8 distinct framings of one photo.
VARIANTS = [
    (False, 1.0, 0.5, 0.5),
    (True, 1.0, 0.5, 0.5),
    (False, 0.9, 0.0, 0.0),
    (True, 0.9, 1.0, 1.0),
    (False, 0.85, 1.0, 0.0),
    (True, 0.85, 0.0, 1.0),
    (False, 0.8, 0.5, 0.5),
    (True, 0.75, 0.5, 0.3),
]


def source_photos() -> list[Path]:
    photos: list[Path] = []
    for folder in ("natural", "portraits", "blur"):
        for path in sorted((SHARED / "eval" / folder).iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                photos.append(path)
    return photos


def make_set(out: Path, count: int, jobs: int, bursts_first: bool = False) -> int:
    """``count`` distinct camera-size NEFs in ``out`` (existing ones are kept).

    ``bursts_first``: every variant of a photo before the next photo, so that a small set
    is made of bursts (8 frames each) rather than of single frames of many photos."""
    from PIL import Image, ImageOps

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="throughput-src-"))
    photos = source_photos()
    plan = []
    start = datetime(2026, 5, 2, 9, 0, 0)
    for v, (mirror, frac, ax, ay) in enumerate(VARIANTS):
        for p, photo in enumerate(photos):
            plan.append((photo, p, v, mirror, frac, ax, ay))
    if bursts_first:
        plan.sort(key=lambda item: (item[1], item[2]))
    plan = plan[:count]
    # Capture order: a photo's variants together, like a burst.
    plan.sort(key=lambda item: (item[1], item[2]))
    tool = SHARED / "tools" / "make_nef.py"

    def one(index: int) -> None:
        photo, p, v, mirror, frac, ax, ay = plan[index]
        target = out / f"DSC_{index + 1:04d}.NEF"
        if target.exists() and target.stat().st_size > 28_000_000:
            return
        with Image.open(photo) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        if mirror:
            img = ImageOps.mirror(img)
        if frac < 1.0:
            w, h = img.size
            cw, ch = round(w * frac), round(h * frac)
            x, y = round((w - cw) * ax), round((h - ch) * ay)
            img = img.crop((x, y, x + cw, y + ch))
        src = work / f"{index:04d}.png"
        img.save(src)
        when = start + timedelta(seconds=20 * p + 0.4 * v)
        stamp = when.strftime("%Y:%m:%d %H:%M:%S") + f".{when.microsecond // 10000:02d}"
        subprocess.run(
            [sys.executable, str(tool), str(src), str(target), "--full", "--time", stamp],
            check=True,
            capture_output=True,
        )
        src.unlink()

    started = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        for done, _ in enumerate(pool.map(one, range(len(plan))), 1):
            if done % 50 == 0:
                print(
                    f"  {done}/{len(plan)} NEFs ({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                )
    os.rmdir(work)
    print(f"{len(plan)} NEFs in {out} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


# --- measuring ----------------------------------------------------------------------


class PeakRss:
    """Samples the RSS of this process and its children every 50 ms."""

    def __enter__(self) -> PeakRss:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_rss_kb(os.getpid()))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_postselectd(files: list[Path], workers: int) -> dict:
    """What `postselectd score` runs (cli.cmd_score): find_photos, Pipeline.score."""
    from postselectd.config import Config
    from postselectd.photos import find_photos
    from postselectd.pipeline import Pipeline

    for sidecar in files[0].parent.glob("*.xmp"):
        sidecar.unlink()
    config = Config()
    stages: dict[str, list[float]] = defaultdict(list)
    cpu = cpu_seconds()
    driver_cpu = own_cpu_seconds()
    started = time.perf_counter()
    with PeakRss() as rss:
        photos = list(find_photos([files[0].parent], config.sidecar.profiles))
        wanted = set(files)
        photos = [p for p in photos if p in wanted]
        results = Pipeline(config, workers=workers).score(photos)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    driver_cpu = own_cpu_seconds() - driver_cpu
    for result in results:
        for stage, ms in result.timings_ms:
            stages[stage].append(ms)
    failed = [r for r in results if r.error]
    return {
        "files": len(results),
        "failed": len(failed),
        "first_error": failed[0].error if failed else None,
        "seconds": seconds,
        "rate": len(results) / seconds,
        "cpu_ms": cpu * 1000 / len(results),
        "driver_cpu_ms": driver_cpu * 1000 / len(results),
        "stages": {k: statistics.median(v) for k, v in stages.items()},
        "peak_rss_mb": rss.peak / 1024,
    }


class DaskCluster:
    """``dask scheduler`` and ``workers`` x ``dask worker --nthreads 1`` on 127.0.0.1."""

    def __init__(self, workers: int):
        self.folder = Path(tempfile.mkdtemp(prefix="throughput-dask-"))
        scheduler_file = self.folder / "scheduler.json"
        common = ["--host", "127.0.0.1", "--no-dashboard", "--scheduler-file", str(scheduler_file)]
        self.processes: dict[str, subprocess.Popen] = {}

        def start(name: str, args: list[str]) -> None:
            with open(self.folder / f"{name}.log", "wb") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "dask", *args, *common],
                    stdout=log,
                    stderr=log,
                    cwd="/",
                    start_new_session=True,
                )

        start("scheduler", ["scheduler", "--port", "0"])
        for i in range(workers):
            start(f"worker{i}", ["worker", "--nthreads", "1", "--death-timeout", "60"])
        from distributed import Client

        while not scheduler_file.exists():
            time.sleep(0.1)
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
            self.address = client.scheduler.address

    def cpu_seconds(self, which: str = "") -> float:
        """CPU time of the named processes (and theirs): "scheduler", "worker", or all."""
        return sum(tree_cpu_seconds(p.pid) for n, p in self.processes.items() if which in n)

    def stop(self) -> None:
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a live process and all its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def run_cluster(files: list[Path], workers: int) -> dict:
    """What `postselectd score --cluster ADDRESS` runs (cli.cmd_score), on a cluster of
    ``workers`` Dask workers started beforehand (not timed, as a deployment's)."""
    from postselectd.analysis import Analyzer
    from postselectd.cluster import ClusterAnalysis
    from postselectd.config import Config
    from postselectd.photos import find_photos
    from postselectd.pipeline import Pipeline, leave_rated

    for sidecar in files[0].parent.glob("*.xmp"):
        sidecar.unlink()
    config = Config()
    model_version = Analyzer(config.analysis).model_version  # the driver's model check
    cluster = DaskCluster(workers)
    try:
        # The scheduler's CPU when idle (heartbeats, its own bookkeeping), so that what
        # the files cost it can be told apart.
        idle_cpu = cluster.cpu_seconds("scheduler")
        time.sleep(3.0)
        idle_per_second = (cluster.cpu_seconds("scheduler") - idle_cpu) / 3.0
        driver_cpu = cpu_seconds()
        cpu = driver_cpu + cluster.cpu_seconds()
        scheduler_cpu = cluster.cpu_seconds("scheduler")
        worker_cpu = cluster.cpu_seconds("worker")
        started = time.perf_counter()
        with PeakRss() as rss:
            photos = list(find_photos([files[0].parent], config.sidecar.profiles))
            wanted = set(files)
            photos = [p for p in photos if p in wanted]
            photos, _ = leave_rated(photos, config, model_version)
            with ClusterAnalysis(cluster.address, config.analysis) as analysis:
                results = Pipeline(config, analyze_on=analysis.analyze).score(photos)
        seconds = time.perf_counter() - started
        driver_cpu = cpu_seconds() - driver_cpu
        cpu = cpu_seconds() + cluster.cpu_seconds() - cpu
        scheduler_cpu = cluster.cpu_seconds("scheduler") - scheduler_cpu
        worker_cpu = cluster.cpu_seconds("worker") - worker_cpu
    finally:
        cluster.stop()
    failed = [r for r in results if r.error]
    return {
        "files": len(results),
        "failed": len(failed),
        "first_error": failed[0].error if failed else None,
        "seconds": seconds,
        "rate": len(results) / seconds,
        "cpu_ms": cpu * 1000 / len(results),
        "driver_cpu_ms": driver_cpu * 1000 / len(results),
        "scheduler_cpu_ms": scheduler_cpu * 1000 / len(results),
        "scheduler_busy_cpu_ms": (scheduler_cpu - idle_per_second * seconds) * 1000 / len(results),
        "worker_cpu_ms": worker_cpu * 1000 / len(results),
        "peak_rss_mb": rss.peak / 1024,
    }


def cluster_table(files: list[Path], local_workers: int, repeat: int) -> None:
    runs: dict[str, list[dict]] = defaultdict(list)
    for _ in range(repeat):  # interleaved: the machine's other load hits all alike
        for name, run in (
            ("local score", lambda: run_postselectd(files, local_workers)),
            ("cluster, 2 workers", lambda: run_cluster(files, 2)),
            ("cluster, 1 worker", lambda: run_cluster(files, 1)),
        ):
            runs[name].append(run())
            print(
                f"  {name}: {runs[name][-1]['rate']:.1f} images/s, load {load_average()}",
                file=sys.stderr,
            )
    median = {k: sorted(v, key=lambda r: r["rate"])[len(v) // 2] for k, v in runs.items()}
    local = median["local score"]
    print(f"\n{len(files)} distinct camera-size NEFs; local score with {local_workers} workers")
    print(
        f"{'':22}{'images/s':>10}{'of local':>10}{'CPU ms/img':>12}{'driver':>8}"
        f"{'scheduler':>11}{'workers':>9}{'peak RSS MB':>13}{'failed':>8}"
    )
    for name, r in median.items():
        print(
            f"{name:22}{r['rate']:>10.1f}{r['rate'] / local['rate']:>10.0%}{r['cpu_ms']:>12.0f}"
            f"{r.get('driver_cpu_ms', 0):>8.1f}{r.get('scheduler_cpu_ms', 0):>11.1f}"
            f"{r.get('worker_cpu_ms', 0):>9.0f}{r['peak_rss_mb']:>13.0f}{r['failed']:>8}"
        )
    print(
        "  runs: "
        + "; ".join(f"{k} " + ", ".join(f"{r['rate']:.1f}" for r in v) for k, v in runs.items())
    )
    print(
        "(CPU ms/img: all processes of the run; of which driver: this process (listing,\n"
        " bursts, rating, sidecars, and the Dask client or the local worker pool's threads);\n"
        " scheduler: the Dask scheduler; workers: the Dask workers with their analysis\n"
        " processes)"
    )
    one, two = median["cluster, 1 worker"], median["cluster, 2 workers"]
    driver_ms = statistics.median(
        r["driver_cpu_ms"] for name, v in runs.items() for r in v if "cluster" in name
    )
    busy_ms = max(two["scheduler_busy_cpu_ms"], 1e-3)
    print(
        f"on paper: a worker thread {one['rate']:.1f} images/s ({one['worker_cpu_ms']:.0f} ms "
        f"of a core a photo); the driver {driver_ms:.1f} ms a photo, so ~{1000 / driver_ms:.0f} "
        f"photos/s for one driver core; the scheduler {busy_ms:.2f} ms a photo beyond its "
        f"idle load, ~{1000 / busy_ms:.0f} photos/s for its core"
    )


_REFERENCE_ANALYZER = None


def _reference_init() -> None:
    global _REFERENCE_ANALYZER
    from postselectd.analysis import Analyzer

    _REFERENCE_ANALYZER = Analyzer()


def _reference_one(path: str) -> dict[str, float]:
    """LibRaw's largest preview (extract_thumb), fully decoded, then the same analysis."""
    import rawpy
    from PIL import Image

    from postselectd.preview import _FLIP_TO_ORIENTATION, upright_picture

    times = {}
    start = time.perf_counter()
    with rawpy.imread(path) as raw:
        thumb = raw.extract_thumb()
        orientation = _FLIP_TO_ORIENTATION.get(raw.sizes.flip, 1)
    times["open+extract_thumb"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    with Image.open(io.BytesIO(thumb.data)) as img:
        picture = upright_picture(img.convert("RGB"), orientation)
    times["decode"] = (time.perf_counter() - start) * 1000
    analysis = _REFERENCE_ANALYZER.analyze(picture)
    times.update({k: v for k, v in analysis.timings_ms if "." not in k})
    times["size"] = picture.width * 10000 + picture.height
    return times


def run_reference(files: list[Path], workers: int) -> dict:
    context = multiprocessing.get_context("spawn")
    stages: dict[str, list[float]] = defaultdict(list)
    cpu = cpu_seconds()
    with PeakRss() as rss:
        with context.Pool(workers, initializer=_reference_init) as pool:
            # Counted like postselectd's run: model loading and warm-up included.
            started = time.perf_counter()
            for times in pool.imap_unordered(_reference_one, [str(f) for f in files]):
                for stage, ms in times.items():
                    stages[stage].append(ms)
            seconds = time.perf_counter() - started
            pool.close()
            pool.join()
    cpu = cpu_seconds() - cpu
    size = int(stages.pop("size")[0])
    return {
        "files": len(files),
        "seconds": seconds,
        "rate": len(files) / seconds,
        "cpu_ms": cpu * 1000 / len(files),
        "stages": {k: statistics.median(v) for k, v in stages.items()},
        "peak_rss_mb": rss.peak / 1024,
        "preview": f"{size // 10000}x{size % 10000}",
    }


def preview_breakdown(files: list[Path]) -> dict[str, float]:
    """open, preview choice (TIFF/EXIF walk) and decode, in this process, one core."""
    from postselectd import preview, rawmeta

    stages: dict[str, list[float]] = defaultdict(list)
    for path in files:
        start = time.perf_counter()
        fd = os.open(path, os.O_RDONLY)
        os.fstat(fd)
        os.close(fd)
        stages["open"].append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        info = rawmeta.read_container(path)
        chosen = preview._preview_order(info.previews, 1024)[0]
        stages["preview choice"].append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        data = preview._pread(path, chosen.offset, chosen.length)
        preview._decode_jpeg_bytes(data, 1024)
        stages["decode"].append((time.perf_counter() - start) * 1000)
    stages_ms = {k: statistics.median(v) for k, v in stages.items()}
    stages_ms["chosen"] = f"{chosen.where} {chosen.width}x{chosen.height}"
    return stages_ms


def naive_raw(folder: Path) -> list[tuple[str, float, float]]:
    """rawpy.postprocess(half_size=True) on complete raws: (file, s, ms per megapixel)."""
    import rawpy

    rows = []
    for path in sorted(folder.iterdir()):
        try:
            with rawpy.imread(str(path)) as raw:
                start = time.perf_counter()
                raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
                seconds = time.perf_counter() - start
                megapixels = raw.sizes.raw_width * raw.sizes.raw_height / 1e6
        except (rawpy.LibRawError, OSError):
            continue
        rows.append((path.name, seconds, seconds * 1000 / megapixels, megapixels))
    return rows


def own_cpu_seconds() -> float:
    """CPU time of this process alone (the driver: listing, bursts, rating, sidecars)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="NEFs made with --make")
    parser.add_argument("--make", type=Path, help="make --count distinct NEFs in this folder")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2, help="make_nef.py processes (--make)")
    parser.add_argument("--files", type=int, default=0, help="score only the first N NEFs")
    parser.add_argument("--reference", type=int, default=200, help="files for the reference")
    parser.add_argument("--repeat", type=int, default=1, help="postselectd runs (median)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--raws", type=Path, default=SHARED / "samples" / "raw" / "good")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="compare score --cluster (Dask, 2 and 1 workers started here) with local score",
    )
    args = parser.parse_args()
    if args.reference < 1:
        parser.error("--reference must be at least 1: every figure is printed next to it")
    if args.make:
        return make_set(args.make, args.count, args.jobs)
    if not args.folder:
        parser.error("give the folder of NEFs (make it with --make)")
    files = sorted(args.folder.glob("*.NEF"))
    if args.files:
        files = files[: args.files]
    if not files:
        print(f"no NEFs in {args.folder}", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"command: {sys.executable} {' '.join(sys.argv)}")
    print(f"cores {os.cpu_count()}, workers {args.workers}, load average {load_average()}")
    if args.cluster:
        cluster_table(files, args.workers, args.repeat)
        print(f"\nload average at the end: {load_average()}")
        return 0

    runs = []
    for _ in range(args.repeat):
        runs.append(run_postselectd(files, args.workers))
        print(
            f"  postselectd run: {runs[-1]['rate']:.1f} images/s, load {load_average()}",
            file=sys.stderr,
        )
    ours = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    reference = run_reference(files[: args.reference], args.workers)
    breakdown = preview_breakdown(files[: min(len(files), 100)])
    naive = naive_raw(args.raws) if args.raws.is_dir() else []

    print(f"\n{len(files)} distinct camera-size NEFs ({files[0].stat().st_size / 1e6:.1f} MB each)")
    print(f"{'':34}{'postselectd score':>20}{'reference':>14}")
    ratio = ours["rate"] / reference["rate"]
    print(f"{'images/s':34}{ours['rate']:>20.1f}{reference['rate']:>14.1f}   ({ratio:.1f}x)")
    all_rates = ", ".join(f"{r['rate']:.1f}" for r in runs)
    print(f"{'  runs':34}{all_rates:>20}")
    cores = os.cpu_count() or 1
    cpu_ratio = reference["cpu_ms"] / ours["cpu_ms"]
    print(
        f"{'CPU ms per image (all processes)':34}{ours['cpu_ms']:>20.0f}"
        f"{reference['cpu_ms']:>14.0f}   ({cpu_ratio:.1f}x)"
    )
    print(
        f"{f'images/s if the {cores} cores were ours':34}{cores * 1000 / ours['cpu_ms']:>20.1f}"
        f"{cores * 1000 / reference['cpu_ms']:>14.1f}"
    )
    print(f"{'files (failed)':34}{ours['files']:>14} ({ours['failed']}){reference['files']:>14}")
    print(f"{'seconds':34}{ours['seconds']:>20.1f}{reference['seconds']:>14.1f}")
    print(
        f"{'peak RSS, all processes (MB)':34}{ours['peak_rss_mb']:>20.0f}"
        f"{reference['peak_rss_mb']:>14.0f}"
    )
    print(f"{'preview decoded':34}{breakdown['chosen']:>20}{reference['preview']:>14}")
    print("per-stage median ms (per file, in a worker):")
    rows = [
        ("open", breakdown["open"], None),
        (
            "preview choice",
            breakdown["preview choice"],
            reference["stages"].get("open+extract_thumb"),
        ),
        ("decode", breakdown["decode"], reference["stages"].get("decode")),
        ("preview (open+choice+decode)", ours["stages"].get("preview"), None),
    ]
    for stage in (
        "measure",
        "backbone",
        "keeper_head",
        "faces",
        "faces.detect",
        "faces.mesh",
        "faces.eyes",
        "personal_head",
        "sidecar",
    ):
        if stage in ours["stages"]:
            rows.append((f"  {stage}", ours["stages"][stage], reference["stages"].get(stage)))
    for name, value, ref in rows:
        ref_text = f"{ref:>14.1f}" if ref is not None else f"{'':>14}"
        value_text = f"{value:>20.1f}" if value is not None else f"{'':>20}"
        print(f"{name:34}{value_text}{ref_text}")
    print(
        "(open, preview choice, decode: in the bench process on the first 100 files;\n"
        " policy (rating) and burst grouping run in the main process, < 0.1 ms a file)"
    )
    if ours["first_error"]:
        print(f"first error: {ours['first_error']}")
    if naive:
        print(f"\nnaive rawpy.postprocess(half_size=True) on {args.raws}:")
        for name, seconds, per_mp, mp in naive:
            print(f"  {name:44}{mp:6.1f} MP {seconds * 1000:8.0f} ms  {per_mp:5.1f} ms/MP")
        med = statistics.median(r[2] for r in naive)
        print(f"  median {med:.1f} ms per megapixel: {med * 24:.0f} ms for a 24 MP frame")
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
