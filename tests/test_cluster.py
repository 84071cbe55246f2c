"""`postselectd score --cluster` on a real Dask cluster: a `dask scheduler` and two
`dask worker` processes (one thread each) on 127.0.0.1, started here as a user would.

The photos: the 13 sample NEFs, a hostile file of the fuzz corpus, and 200 camera-size
NEFs in a subfolder. Those are copies of DSC_0113.NEF (the camera's own 6000x4000 JPEG
and the D7100's other previews) extended to 28.8 MB with a hole, as a real D7100 file
is long; each has its own capture time (bursts of 4 frames 1 s apart, 10 s between
bursts), which makes every file distinct and gives the run bursts to group. `score`
keeps no analysis cache, so identical pixels would measure nothing less; the capture
times are what burst grouping and resuming must get right. The NEFs are made once and
hard-linked into each run's folder (sidecars are per folder; the photos are only read).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import DATA, ROOT, run_cli, shared_path

pytest.importorskip("distributed", reason="the cluster tests need postselectd[test]")

from postselectd.sidecar import read_sidecar  # noqa: E402

pytestmark = pytest.mark.slow

CAMERA_SIZE = 28842901  # a D7100 NEF
CAPTURE_TIME = b"2026:05:01 15:10:00"  # DSC_0113.NEF's, in its four EXIF date fields
HOSTILE = "f01806_1.rw2"  # a broken JPEG stream where the preview should be
CARD_FILES = 200


# --- the cluster ----------------------------------------------------------------------


class DaskCluster:
    """`python -m dask scheduler` and `python -m dask worker` x 2 (a nanny each), as a
    user starts them. They start while the local run is made; ``address`` waits for them."""

    def __init__(self, folder: Path, workers: int = 2):
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.count = workers
        self._address: str | None = None
        env = dict(os.environ)
        # The fault-injecting worker targets below are found by name on the workers.
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
        self.scheduler = self._start(["scheduler", "--port", "0"], env, "scheduler")
        self.workers = [
            self._start(
                ["worker", "--nthreads", "1", "--name", f"w{i}", "--death-timeout", "60"],
                env,
                f"worker{i}",
            )
            for i in range(workers)
        ]

    def _start(self, args: list[str], env: dict, name: str) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "dask", *args, "--host", "127.0.0.1", "--no-dashboard"]
                + ["--scheduler-file", str(self.scheduler_file)],
                env=env,
                stdout=log,
                stderr=log,
                cwd="/",
                start_new_session=True,  # stop() ends each with all its processes
            )

    @property
    def address(self) -> str:
        if self._address is None:
            from distributed import Client

            deadline = time.monotonic() + 120
            while not self.scheduler_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            with Client(scheduler_file=str(self.scheduler_file), timeout=60) as client:
                client.wait_for_workers(self.count, timeout=120)
                self._address = client.scheduler.address
        return self._address

    def worker_process(self, nanny: subprocess.Popen) -> int:
        """The pid of the worker a nanny runs (the nanny starts it anew when it dies)."""
        tasks = Path(f"/proc/{nanny.pid}/task").iterdir()
        children = [int(pid) for task in tasks for pid in (task / "children").read_text().split()]
        for pid in children:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        raise AssertionError("the nanny runs no worker")

    def worker_addresses(self) -> set[str]:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(self.count, timeout=120)  # one lost is started anew
            return set(client.nthreads())

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster
    finally:
        cluster.stop()


# --- the photos -----------------------------------------------------------------------


def make_card(folder: Path, count: int) -> None:
    """``count`` camera-size NEFs, each with its own capture time (see the module doc)."""
    data = shared_path("samples", "nef", "DSC_0113.NEF").read_bytes()
    assert data.count(CAPTURE_TIME) == 4
    start = datetime(2026, 5, 2, 9, 0, 0)
    folder.mkdir(parents=True)
    for i in range(count):
        when = start + timedelta(seconds=10 * (i // 4) + i % 4)
        stamp = when.strftime("%Y:%m:%d %H:%M:%S").encode()
        path = folder / f"DSC_{2000 + i:04d}.NEF"
        with open(path, "wb") as f:
            f.write(data.replace(CAPTURE_TIME, stamp))
            f.truncate(CAMERA_SIZE)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The photos, made once; ``shoot()`` links them into a folder of a run's own."""
    master = tmp_path_factory.mktemp("photos") / "shoot"
    master.mkdir()
    for nef in sorted(shared_path("samples", "nef").glob("*.NEF")):
        (master / nef.name).write_bytes(nef.read_bytes())
    (master / HOSTILE).write_bytes((DATA / "fuzz" / HOSTILE).read_bytes())
    make_card(master / "card", CARD_FILES)
    return master


def shoot(photos: Path, folder: Path) -> Path:
    for source in sorted(photos.rglob("*")):
        target = folder / source.relative_to(photos)
        if source.is_dir():
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)
    return folder


def sidecars(folder: Path) -> dict[str, str]:
    """Every sidecar's text without its postselect:RatedAt, by path in the folder."""
    return {
        str(p.relative_to(folder)): re.sub(r'\s*postselect:RatedAt="[^"]*"', "", p.read_text())
        for p in sorted(folder.rglob("*.xmp"))
    }


def records(output: str, folder: Path) -> dict[str, dict]:
    """--json records by path in the folder, without what differs by run (time taken)."""
    found = {}
    for line in output.splitlines():
        record = json.loads(line)
        record.pop("elapsed_ms")
        name = str(Path(record.pop("path")).relative_to(folder))
        record["sidecar"] = [str(Path(p).relative_to(folder)) for p in record["sidecar"]]
        found[name] = record
    return found


@pytest.fixture(scope="module")
def local_run(photos, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Local `score` of the same photos: what the cluster runs must write."""
    folder = shoot(photos, tmp_path_factory.mktemp("local") / "shoot")
    result = run_cli("score", "--json", str(folder))
    assert result.returncode == 1, result.stderr  # the hostile file
    return folder, result


# --- the tests ------------------------------------------------------------------------


def test_cluster_writes_the_sidecars_and_records_a_local_run_writes(
    dask_cluster, photos, local_run, tmp_path
):
    local_folder, local = local_run
    folder = shoot(photos, tmp_path / "shoot")
    result = run_cli("score", "--json", str(folder), "--cluster", dask_cluster.address)
    assert result.returncode == 1, result.stderr
    assert sidecars(folder) == sidecars(local_folder)
    assert len(sidecars(folder)) == 13 + CARD_FILES
    ours, theirs = records(result.stdout, folder), records(local.stdout, local_folder)
    assert ours == theirs
    # The hostile file fails alone, with its reason, and gets no sidecar.
    assert "broken data stream" in ours[HOSTILE]["error"]
    assert [name for name, r in ours.items() if r["error"]] == [HOSTILE]
    assert re.search(r"files\s+214", result.stderr) and re.search(r"failed\s+1", result.stderr)
    # Bursts were grouped as locally: 50 bursts of 4 frames on the card, one best each.
    card = [r for name, r in ours.items() if name.startswith("card/")]
    assert len({r["burst"] for r in card}) == CARD_FILES // 4
    assert sum(r["best_of_burst"] for r in card) == CARD_FILES // 4
    # Dask's own chatter stays out of the one line per photo.
    assert "distributed." not in result.stderr and "Registering" not in result.stderr


def test_a_killed_run_rerun_rates_every_photo_once_even_when_a_worker_is_lost(
    dask_cluster, photos, local_run, tmp_path
):
    local_folder, _ = local_run
    folder = shoot(photos, tmp_path / "shoot")
    card = folder / "card"
    command = [sys.executable, "-m", "postselectd", "score", "--json", str(folder)]
    command += ["--cluster", dask_cluster.address]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "noconfig")}
    with open(tmp_path / "first.out", "wb") as out:
        driver = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, env=env)
        try:
            while len(list(card.glob("*.xmp"))) < CARD_FILES // 3 and driver.poll() is None:
                time.sleep(0.05)
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
    assert driver.returncode == -signal.SIGKILL
    written = {p.name: p for p in card.glob("*.xmp")}
    assert CARD_FILES // 3 <= len(written) < CARD_FILES
    # No torn sidecar: each one there is whole, with the verdict it was written with.
    before = {}
    for name, path in written.items():
        assert read_sidecar(path)["Xmp.postselect.ModelVersion"]
        st = path.stat()
        before[name] = (st.st_ino, st.st_mtime_ns, path.read_bytes())

    # The same command again, and a Dask worker killed while it runs: its files go to the
    # other worker, and the nanny starts it anew.
    workers = dask_cluster.worker_addresses()
    with open(tmp_path / "second.out", "wb") as out, open(tmp_path / "second.err", "wb") as err:
        driver = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        try:
            while len(list(card.glob("*.xmp"))) < len(written) + 20 and driver.poll() is None:
                time.sleep(0.05)
            os.kill(dask_cluster.worker_process(dask_cluster.workers[0]), signal.SIGKILL)
            assert driver.wait(timeout=300) == 1, (tmp_path / "second.err").read_text()
        finally:
            if driver.poll() is None:
                driver.kill()
    assert dask_cluster.worker_addresses() != workers  # one was lost and replaced
    second = records((tmp_path / "second.out").read_text(), folder)
    stderr = (tmp_path / "second.err").read_text()
    assert re.search(r"\d+ of 214 photos already rated by \S+: left alone", stderr)

    # Every photo rated once: a sidecar written before the kill was never written again
    # (same file, same bytes); where the rerun analysed one again (a burst only partly
    # written when the driver died is judged again whole), it found it said it all.
    for name, (inode, mtime, data) in before.items():
        st = (card / name).stat()
        assert (st.st_ino, st.st_mtime_ns, (card / name).read_bytes()) == (inode, mtime, data)
        record = second.get(f"card/{name}")
        assert record is None or record["unchanged"], name
    for name in {p.name for p in card.glob("*.NEF")}:
        if Path(name).with_suffix(".xmp").name not in before:
            assert not second[f"card/{name}"]["unchanged"]
    # ...and the result is the uninterrupted run's.
    assert sidecars(folder) == sidecars(local_folder)
    # A temp file the killed driver left mid-write is gone too.
    assert not [p for p in folder.rglob(".*.tmp")]
    # The third time there is nothing left but the hostile file.
    third = run_cli("score", "--json", str(folder), "--cluster", dask_cluster.address)
    assert third.returncode == 1
    assert list(records(third.stdout, folder)) == [HOSTILE]


def crashing_worker(worker_id, tasks, results, config):
    """Fault injection: a worker whose decoder dies (SIGSEGV) on files named *crash*,
    else the real worker. Found by name on the Dask workers (tests/ is on their path)."""
    from postselectd import workers

    real_recv = tasks.recv

    def recv():
        task = real_recv()
        if task is not None and "crash" in Path(task[1]).name:
            os.kill(os.getpid(), signal.SIGSEGV)
        return task

    tasks.recv = recv
    workers._worker_main(worker_id, tasks, results, config)


def test_a_decoder_crash_on_a_worker_costs_that_file_only(dask_cluster, photos, tmp_path):
    from postselectd.cluster import ClusterAnalysis
    from postselectd.config import Config
    from postselectd.pipeline import Pipeline

    folder = tmp_path / "shoot"
    folder.mkdir()
    names = ["a.NEF", "b_crash.NEF", "c.NEF", "d_crash.NEF", "e.NEF"]
    for name in names:
        os.link(photos / "DSC_0102.NEF", folder / name)
    workers = dask_cluster.worker_addresses()
    config = Config()
    with ClusterAnalysis(
        dask_cluster.address, config.analysis, worker_target=crashing_worker
    ) as cluster:
        results = Pipeline(config, analyze_on=cluster.analyze).score([folder / n for n in names])
    by_name = {r.path.name: r for r in results}
    for name in ("b_crash.NEF", "d_crash.NEF"):
        assert "the decoder crashed on this file" in by_name[name].error
        assert not (folder / name).with_suffix(".xmp").exists()
    for name in ("a.NEF", "c.NEF", "e.NEF"):
        assert by_name[name].error is None and (folder / name).with_suffix(".xmp").exists()
    # Not retried on another worker, and no Dask worker was lost for it.
    assert dask_cluster.worker_addresses() == workers


def test_without_dask_the_cluster_option_says_how_to_install_it(tmp_path):
    # Fault injection: a `distributed` that cannot be imported, as in the default install.
    fake = tmp_path / "site" / "distributed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named distributed')\n")
    nef = shared_path("samples", "nef", "DSC_0101.NEF")
    result = run_cli(
        "score", str(nef), "--cluster", "tcp://127.0.0.1:8786",
        env={"PYTHONPATH": str(tmp_path / "site")},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "postselectd: --cluster needs Dask distributed: pip install 'postselectd[cluster]'"
    ]
    assert not nef.with_suffix(".xmp").exists()


def test_the_default_install_does_not_pull_dask():
    from importlib.metadata import requires

    for requirement in requires("postselectd") or []:
        if re.match(r"(dask|distributed)\b", requirement):
            assert "extra ==" in requirement, requirement


def test_cluster_options_are_checked_before_anything_runs(tmp_path):
    nef = shared_path("samples", "nef", "DSC_0101.NEF")
    result = run_cli("score", str(nef), "--cluster-workers", "2")
    assert result.returncode == 2 and "--cluster-workers" in result.stderr
    result = run_cli("score", str(nef), "--cluster", "tcp://127.0.0.1:1", "--cluster-workers", "2")
    assert result.returncode == 2 and "--cluster local" in result.stderr
