"""Daemon figures: latency from a NEF's final close to its sidecar, idle CPU, peak memory.

Starts the real daemon (`python -m postselectd run`, default settings unless told
otherwise) on a temp folder, with HOME/XDG dirs inside it, and prints a table:

- latency: a 3.4 MB sample NEF (../shared/samples/nef) is written and closed every
  --gap seconds on an otherwise idle daemon; latency is the sidecar's mtime minus the
  time of the close. Each copy gets a unique tail, so nothing is served from the cache.
- idle CPU: utime+stime of the daemon and its workers over --idle seconds, nothing
  arriving, as % of one core.
- burst: --burst small NEFs (copies of one, or --unique content) created as fast as
  possible; peak RSS of the daemon and of its workers (sampled, and the kernel's VmHWM),
  and the throughput.
- dump: --dump DIR copies --dump-count camera-size NEFs of DIR (bench/throughput.py
  --make) into the watch folder as fast as the disk takes them, as a card dump does
  (data regions only: the NEFs made there are sparse); the rate at which sidecars follow
  (first file created -> last sidecar), and once the copy is over (the files still
  waiting then, over the time to the last sidecar: the daemon alone on the cores, as
  `score` is), close -> sidecar latency during the dump, and the peak RSS of all
  processes.

usage: python bench/latency.py [--files 30] [--gap 1.5] [--idle 60] [--burst 2000] [--unique]
                               [--dump /tmp/nefs --dump-count 500]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
JPG_FROM_RAW = (1189376, 2287892)
TICKS = os.sysconf("SC_CLK_TCK")
sys.path.insert(0, str(ROOT))

from postselectd.workers import status_kb  # noqa: E402


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def workers_of(pid: int) -> list[int]:
    """The worker processes (not multiprocessing's resource tracker)."""
    found = []
    for child in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def small_nef_bytes(tmp: Path) -> bytes:
    out = tmp / "small.NEF"
    face = SHARED / "eval" / "eyes-face" / "eyes-face-0001.jpg"
    subprocess.run(
        [sys.executable, str(SHARED / "tools" / "make_nef.py"), str(face), str(out)],
        check=True,
        capture_output=True,
    )
    data = bytearray(out.read_bytes())
    offset, length = JPG_FROM_RAW
    data[offset : offset + length] = bytes(length)
    return bytes(data)


def write_unique(data: bytes, path: Path, tag: int | None, sparse: bool = False) -> None:
    """Write ``data`` to ``path``; ``tag`` (in the last 4 KB) makes the content unique.

    ``sparse`` skips all-zero 4 KB blocks (holes): a 3.4 MB small NEF costs 0.3 MB.
    """
    if tag is not None:
        stamp = f"bench{tag:010d}".encode()
        data = data[: len(data) - 4096] + stamp + data[len(data) - 4096 + len(stamp) :]
    if sparse:
        write_sparse(data, path)
    else:
        path.write_bytes(data)


def write_sparse(data: bytes, path: Path) -> None:
    """Write ``data`` leaving its all-zero 4 KB blocks as holes."""
    zero = bytes(4096)
    with open(path, "wb") as f:
        for offset in range(0, len(data), 4096):
            block = data[offset : offset + 4096]
            if block != zero[: len(block)]:
                f.seek(offset)
                f.write(block)
        f.truncate(len(data))


def copy_data(source: Path, target: Path) -> None:
    """Copy ``source``'s data regions only (SEEK_DATA/SEEK_HOLE); the holes stay holes."""
    size = source.stat().st_size
    with open(source, "rb") as src, open(target, "wb") as dst:
        fd = src.fileno()
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            dst.seek(start)
            src.seek(start)
            dst.write(src.read(end - start))
            offset = end
        dst.truncate(size)


def dump(args, proc, watch: Path) -> dict:
    """Copy --dump-count NEFs in as fast as possible; measure how the sidecars follow."""
    sources = sorted(args.dump.glob("*.NEF"))[: args.dump_count]
    folder = watch / "DCIM" / "100D7100"
    folder.mkdir(parents=True)
    closed: dict[Path, float] = {}

    def copy_all() -> None:
        for source in sources:
            target = folder / source.name
            copy_data(source, target)
            closed[target] = time.time()

    copier = threading.Thread(target=copy_all)
    started = time.time()
    copier.start()
    peak_total = 0
    seen: dict[Path, float] = {}
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and len(seen) < len(sources):
        workers = workers_of(proc.pid)
        total = status_kb(proc.pid, "VmRSS") + sum(status_kb(p, "VmRSS") for p in workers)
        peak_total = max(peak_total, total)
        for target in list(closed):
            if target not in seen:
                sidecar = target.with_suffix(".xmp")
                if sidecar.exists():
                    seen[target] = sidecar.stat().st_mtime
        time.sleep(0.1)
    copier.join()
    copy_done = max(closed.values()) - started
    latencies = sorted(seen[t] - closed[t] for t in seen)
    last = max(seen.values()) - started if seen else float("nan")
    waiting = sum(1 for t in seen.values() if t - started > copy_done)
    return {
        "waiting_after_copy": waiting,
        "rate_after_copy": waiting / (last - copy_done) if waiting else float("nan"),
        "files": len(sources),
        "copied_s": copy_done,
        "rated": len(seen),
        "last_sidecar_s": last,
        "rate": len(seen) / last if seen else 0.0,
        "latency_median_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "latency_p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000 if seen else 0,
        "peak_rss_mb": peak_total / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=30)
    ap.add_argument("--gap", type=float, default=1.5, help="seconds between files")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU sampling")
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument(
        "--unique",
        action="store_true",
        help="burst files with unique content (default: copies of one small NEF, as a "
        "card with many identical frames; each still gets its own sidecar)",
    )
    ap.add_argument("--dump", type=Path, help="folder of camera-size NEFs for the dump")
    ap.add_argument("--dump-count", type=int, default=500)
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--settle", type=float, default=2.0)
    args = ap.parse_args()
    samples = sorted((SHARED / "samples" / "nef").glob("*.NEF"))
    if not samples:
        print(f"needs {SHARED}/samples/nef", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="postselectd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        watch = tmp / "watch"
        watch.mkdir()
        config = tmp / "config.yaml"
        config.write_text(
            f"watch:\n  - path: {watch}\nstate_dir: {tmp / 'state'}\n"
            f"daemon:\n  workers: {args.workers}\n  settle_seconds: {args.settle}\n"
        )
        env = dict(
            os.environ,
            HOME=str(tmp / "home"),
            XDG_CONFIG_HOME=str(tmp / "xdg"),
            XDG_DATA_HOME=str(tmp / "data"),
        )
        env.pop("NOTIFY_SOCKET", None)
        log = open(tmp / "daemon.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "postselectd",
                "run",
                "--config",
                str(config),
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        try:
            return run(args, proc, tmp, watch, samples)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()
            if os.environ.get("BENCH_KEEP_LOG"):
                print((tmp / "daemon.log").read_text(), file=sys.stderr)


def run(args, proc, tmp: Path, watch: Path, samples: list[Path]) -> int:
    # Ready: started (only files arriving after that are ours), and the first file
    # round-trips (workers up, models loaded).
    if not wait_for(lambda: " started (pid " in (tmp / "daemon.log").read_text(), 120):
        print((tmp / "daemon.log").read_text(), file=sys.stderr)
        return 1
    warm = watch / "WARMUP.NEF"
    write_unique(samples[0].read_bytes(), warm, 0)
    if not wait_for(lambda: warm.with_suffix(".xmp").exists(), 120):
        print((tmp / "daemon.log").read_text(), file=sys.stderr)
        return 1
    time.sleep(args.gap)

    # 1. Latency on an idle daemon.
    latencies = []
    for i in range(args.files):
        data = samples[i % len(samples)].read_bytes()
        target = watch / f"LAT_{i:04d}.NEF"
        write_unique(data, target, 1000 + i)  # closed on leaving the with-block
        closed = time.time()
        sidecar = target.with_suffix(".xmp")
        if not wait_for(sidecar.exists, 30):
            print(f"{target.name}: no sidecar after 30 s", file=sys.stderr)
            return 1
        latencies.append(sidecar.stat().st_mtime - closed)
        time.sleep(args.gap)
    latencies.sort()

    # 2. Idle CPU.
    time.sleep(3)
    pids = [proc.pid, *children(proc.pid)]
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(args.idle)
    idle_cpu = (sum(cpu_seconds(p) for p in pids) - before) / args.idle * 100

    # 3. A burst of small NEFs.
    data = small_nef_bytes(tmp)
    peak_main = peak_workers = peak_total = 0
    burst_dir = watch / "100NIKON"
    burst_dir.mkdir()
    started = time.monotonic()
    for i in range(args.burst):
        tag = 100000 + i if args.unique else None
        write_unique(data, burst_dir / f"DSC_{i:05d}.NEF", tag, sparse=True)
    created = time.monotonic() - started
    deadline = time.monotonic() + 1800
    done = 0
    while time.monotonic() < deadline:
        workers = workers_of(proc.pid)
        rss_main = status_kb(proc.pid, "VmRSS")
        rss_workers = [status_kb(p, "VmRSS") for p in workers]
        peak_main = max(peak_main, rss_main)
        peak_workers = max([peak_workers, *rss_workers])
        peak_total = max(peak_total, rss_main + sum(rss_workers))
        done = sum(1 for _ in burst_dir.glob("*.xmp"))
        if done >= args.burst:
            break
        time.sleep(0.1)
    took = time.monotonic() - started
    hwm_main = status_kb(proc.pid, "VmHWM")
    hwm_workers = max((status_kb(p, "VmHWM") for p in workers_of(proc.pid)), default=0)
    dumped = dump(args, proc, watch) if args.dump else None

    print(f"{'measure':<44}value")
    print(
        f"{f'latency, NEF close -> sidecar (n={len(latencies)})':<44}"
        f"median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )
    idle_label = f"idle CPU, daemon + workers ({args.idle:.0f} s)"
    print(f"{idle_label:<44}{idle_cpu:.2f} % of a core")
    print(
        f"{'burst: files':<44}{args.burst} created in {created:.1f} s, "
        f"{done} rated in {took:.1f} s ({done / took:.1f} files/s)"
    )
    print(
        f"{'burst: peak RSS daemon (sampled / VmHWM)':<44}"
        f"{peak_main / 1024:.0f} / {hwm_main / 1024:.0f} MB"
    )
    print(
        f"{'burst: peak RSS one worker (sampled / VmHWM)':<44}"
        f"{peak_workers / 1024:.0f} / {hwm_workers / 1024:.0f} MB"
    )
    print(f"{'burst: peak RSS all processes (sampled)':<44}{peak_total / 1024:.0f} MB")
    if dumped:
        print(
            f"{'dump: camera-size NEFs':<44}{dumped['files']} copied in "
            f"{dumped['copied_s']:.1f} s, {dumped['rated']} rated, the last "
            f"{dumped['last_sidecar_s']:.1f} s after the first copy began "
            f"({dumped['rate']:.1f} files/s)"
        )
        print(
            f"{'dump: after the copy':<44}{dumped['waiting_after_copy']} still waiting, "
            f"rated at {dumped['rate_after_copy']:.1f} files/s"
        )
        print(
            f"{'dump: close -> sidecar':<44}median {dumped['latency_median_ms']:.0f} ms, "
            f"p95 {dumped['latency_p95_ms']:.0f} ms"
        )
        print(f"{'dump: peak RSS all processes (sampled)':<44}{dumped['peak_rss_mb']:.0f} MB")
    print(f"{'workers':<44}{len(workers_of(proc.pid))} ({args.workers}), cores {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
