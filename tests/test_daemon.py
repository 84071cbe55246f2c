"""`postselectd run` end to end: the real daemon process watching real folders.

Files arrive the ways photographers' tools write them (slow card-reader copies, temp names
renamed, folders moved in, a storm of 2,000 files), the daemon is killed and stopped in
the middle of work, and the journal, the sidecars and the logs must say that every photo
was rated exactly once and never before its copy finished.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import LOG_TIME, ROOT, run_cli, shared_path, without_time

from postselectd.daemon.scheduler import CLOSED_SETTLE_SECONDS
from postselectd.sidecar import read_sidecar
from postselectd.state import Journal
from postselectd.versions import analysis_version

pytestmark = pytest.mark.slow

SETTLE = 0.5
# The JpgFromRaw slot of a make_nef NEF (6000x4000): zeroed in the small test NEFs, which
# are rated from their 1620x1080 preview. Zeros are holes on disk: 3.4 MB files, 0.3 MB used.
JPG_FROM_RAW = (1189376, 2287892)


# --- test files ---------------------------------------------------------------------


class SmallNef:
    """A NEF made by ../shared/tools/make_nef.py from a 64x64 face, written sparsely."""

    def __init__(self, data: bytes):
        self.size = len(data)
        self.runs: list[tuple[int, bytes]] = []
        block = 4096
        i = 0
        while i < len(data):
            if any(data[i : i + block]):
                j = i
                while j < len(data) and any(data[j : j + block]):
                    j += block
                self.runs.append((i, data[i:j]))
                i = j
            else:
                i += block

    def write(self, path: Path, tag: int | None = None) -> Path:
        """Write a copy; ``tag`` makes its content (and fingerprint) unique."""
        with open(path, "wb") as f:
            for offset, chunk in self.runs:
                f.seek(offset)
                f.write(chunk)
            if tag is not None:  # inside the zeroed JpgFromRaw slot, in the last 64 KB
                f.seek(self.size - 4096)
                f.write(f"tag{tag:08d}".encode())
            f.truncate(self.size)
        return path


@pytest.fixture(scope="session")
def small_nef(tmp_path_factory) -> SmallNef:
    tool = shared_path("tools", "make_nef.py")
    face = shared_path("eval", "eyes-face", "eyes-face-0001.jpg")
    out = tmp_path_factory.mktemp("small-nef") / "small.NEF"
    subprocess.run(
        [sys.executable, str(tool), str(face), str(out)], check=True, capture_output=True
    )
    data = bytearray(out.read_bytes())
    offset, length = JPG_FROM_RAW
    data[offset : offset + length] = bytes(length)
    return SmallNef(bytes(data))


@pytest.fixture(scope="session")
def sample_nefs() -> list[Path]:
    return sorted(shared_path("samples", "nef").glob("*.NEF"))


# --- the daemon process -------------------------------------------------------------


class DaemonProcess:
    """`python -m postselectd run` with its home, config and data in tmp_path."""

    def __init__(self, tmp_path: Path, watches: list[Path], **daemon_settings):
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        self.state_dir = tmp_path / "state"
        self.config_path = tmp_path / "config.yaml"
        self.settings = {
            "settle_seconds": SETTLE,
            "workers": 2,
            "max_retries": 2,
            "retry_backoff_seconds": 0.3,
        }
        self.settings.update(daemon_settings)
        self.write_config(watches)
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.env = dict(os.environ)
        self.env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
            XDG_DATA_HOME=str(tmp_path / "xdg-data"),
            PYTHONUNBUFFERED="1",
        )
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            self.env.pop(name, None)

    def write_config(self, watches: list[Path], extra: dict | None = None) -> None:
        config = {
            "watch": [{"path": str(w)} for w in watches],
            "state_dir": str(self.state_dir),
            "daemon": dict(self.settings),
        }
        config.update(extra or {})
        self.config_path.write_text(yaml.safe_dump(config))

    def start(
        self, *args: str, env: dict | None = None, wait: bool = True, journal: bool = False
    ) -> None:
        """``journal``: its output looks like systemd's journal stream (JOURNAL_STREAM)."""
        log = self.tmp / f"daemon-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self._log_file = open(log, "w")
        env = dict(env or {})
        if journal:
            st = os.fstat(self._log_file.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "postselectd",
                "run",
                "--config",
                str(self.config_path),
                "--log-level",
                "info",
                *args,
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**self.env, **env},
            cwd=ROOT,
        )
        if wait:
            self.wait_for(lambda: " started (pid " in self.log(), 90, "the start-up line")

    def log(self, which: int = -1) -> str:
        return self.logs[which].read_text() if self.logs else ""

    def all_logs(self) -> str:
        return "".join(p.read_text() for p in self.logs)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc is not None and self.proc.poll() is not None:
                if predicate():
                    return
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) waiting for "
                    f"{what}:\n{self.log()[-3000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}:\n{self.log()[-3000:]}"
        )

    def rows(self) -> dict[str, object]:
        if not (self.state_dir / "journal.sqlite3").exists():
            return {}
        with Journal(self.state_dir, readonly=True) as journal:
            return {str(r.path): r for r in journal.rows()}

    def rated(self) -> int:
        return sum(1 for r in self.rows().values() if r.status == "rated")

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout)
        self._log_file.close()
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._log_file.close()


@pytest.fixture
def daemon_factory(tmp_path: Path):
    made: list[DaemonProcess] = []

    def make(watches: list[Path], **settings) -> DaemonProcess:
        d = DaemonProcess(tmp_path, watches, **settings)
        made.append(d)
        return d

    yield make
    for d in made:
        d.kill()


@pytest.fixture
def watching(daemon_factory, tmp_path: Path):
    """``watching(name)``: a new folder tmp_path/name and a started daemon watching it."""

    def start(name: str) -> tuple[Path, DaemonProcess]:
        watch = tmp_path / name
        watch.mkdir()
        daemon = daemon_factory([watch])
        daemon.start()
        return watch, daemon

    return start


def sidecar_of(raw: Path) -> Path:
    return raw.with_suffix(".xmp")


def assert_rated_once(
    daemon: DaemonProcess, raws: list[Path], killed_pid: int | None = None
) -> None:
    """The journal says rated exactly once; one sidecar each that parses; no strays.

    A process killed with SIGKILL may leave the sidecar module's temp file of the write it
    was in (``.NAME.xmp.postselectd-PID-*.tmp``; the sidecar itself is whole): only those
    of ``killed_pid`` are allowed.
    """
    rows = daemon.rows()
    for raw in raws:
        row = rows.get(str(raw))
        assert row is not None, f"{raw.name} is not in the journal"
        assert row.status == "rated", f"{raw.name}: {row.status} ({row.reason})"
        assert row.rated_count == 1, f"{raw.name} was rated {row.rated_count} times"
        props = read_sidecar(sidecar_of(raw))
        assert props.get("Xmp.xmp.Rating"), f"{sidecar_of(raw).name} has no rating"
    # Nothing half-written left behind: no temp files, no sidecars of temp names.
    for folder in {raw.parent for raw in raws}:
        for name in os.listdir(folder):
            assert not name.startswith(".") or not name.endswith(".xmp"), name
            if killed_pid is not None and f".postselectd-{killed_pid}-" in name:
                continue
            assert ".tmp" not in name, name


def logged_names(text: str) -> list[str]:
    """The file names (from the watched folder on) of the one-line-per-rated-file INFO lines."""
    return re.findall(r"^(\S+): (?:\d\*|reject) ", without_time(text), re.M)


# --- arrivals -----------------------------------------------------------------------


def test_every_way_a_file_arrives_is_rated_once_and_only_when_complete(
    watching, tmp_path, sample_nefs, small_nef
):
    watch, daemon = watching("import")
    expected: list[Path] = []
    seen_early: list[str] = []

    # 1. A card reader: a real NEF in 64 KB chunks, slowly, one open and one close.
    def card_reader(source: Path, target: Path) -> None:
        with open(source, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(64 * 1024):
                dst.write(chunk)
                dst.flush()
                if sidecar_of(target).exists():
                    seen_early.append(target.name)
                time.sleep(0.03)

    # 2. A file that keeps growing for several settle times, in several opens (a
    #    tethering tool appending, pausing less than the recheck after a close); not
    #    rated until it stops.
    def grower(source: Path, target: Path) -> None:
        data = source.read_bytes()
        step = len(data) // 12
        for i in range(0, len(data), step):
            with open(target, "ab") as f:
                f.write(data[i : i + step])
            if sidecar_of(target).exists():
                seen_early.append(target.name)
            time.sleep(CLOSED_SETTLE_SECONDS * 0.6)

    writers = [
        threading.Thread(target=card_reader, args=(sample_nefs[0], watch / "CARD_0001.NEF")),
        threading.Thread(target=card_reader, args=(sample_nefs[1], watch / "CARD_0002.NEF")),
        threading.Thread(target=grower, args=(sample_nefs[2], watch / "GROW_0001.NEF")),
    ]
    expected += [watch / "CARD_0001.NEF", watch / "CARD_0002.NEF", watch / "GROW_0001.NEF"]
    for w in writers:
        w.start()

    # 3. Temp name, then rename: a downloader's .part and rsync's .NAME.XXXXXX.
    part = watch / "PART_0001.NEF.part"
    shutil.copyfile(sample_nefs[3], part)
    os.rename(part, watch / "PART_0001.NEF")
    rsync_temp = watch / ".RSYNC_0001.NEF.Xa81kQ"
    shutil.copyfile(sample_nefs[4], rsync_temp)
    os.rename(rsync_temp, watch / "RSYNC_0001.NEF")
    expected += [watch / "PART_0001.NEF", watch / "RSYNC_0001.NEF"]

    # 4. A whole folder moved in (mv from elsewhere on the disk: only Created events).
    outside = tmp_path / "outside" / "2026-05-01"
    outside.mkdir(parents=True)
    for i in range(5):
        small_nef.write(outside / f"MOVED_{i:04d}.NEF", tag=i)
    os.rename(outside, watch / "2026-05-01")
    expected += [watch / "2026-05-01" / f"MOVED_{i:04d}.NEF" for i in range(5)]

    # 5. A hardlink (Created only) and a preallocate-close-reopen-fill writer.
    linked = tmp_path / "outside" / "LINK_0001.NEF"
    small_nef.write(linked, tag=100)
    os.link(linked, watch / "LINK_0001.NEF")
    expected.append(watch / "LINK_0001.NEF")
    prealloc = watch / "PREALLOC_0001.NEF"
    data = sample_nefs[5].read_bytes()
    with open(prealloc, "wb") as f:
        f.truncate(len(data))
    time.sleep(0.4)
    with open(prealloc, "r+b") as f:
        f.write(data)
    expected.append(prealloc)

    # 6. A file that stays truncated: retried, then failed with its reason.
    truncated = watch / "TRUNC_0001.NEF"
    truncated.write_bytes(sample_nefs[6].read_bytes()[:30000])
    # 7. Things that are not photos to rate.
    (watch / "._CARD_0001.NEF").write_bytes(b"\0" * 4096)  # AppleDouble
    (watch / "notes.txt").write_text("hello")
    shutil.copyfile(sample_nefs[7], watch / "PAIR_0001.NEF")
    (watch / "PAIR_0001.JPG").write_bytes(b"\xff\xd8\xff\xd9")  # the camera's JPEG
    expected.append(watch / "PAIR_0001.NEF")

    for w in writers:
        w.join()
    daemon.wait_for(lambda: all(sidecar_of(p).exists() for p in expected), 60, "all sidecars")
    daemon.wait_for(
        lambda: (
            daemon.rows().get(str(truncated)) is not None
            and daemon.rows()[str(truncated)].status == "failed"
        ),
        30,
        "the truncated file to fail",
    )
    assert seen_early == [], f"rated before the copy finished: {seen_early}"
    code, took = daemon.stop()
    assert code == 0, daemon.log()
    assert_rated_once(daemon, expected)

    rows = daemon.rows()
    failed = rows[str(truncated)]
    assert failed.attempts == 3 and failed.reason  # 1 try + 2 retries, with the reason
    assert re.search(r"TRUNC_0001\.NEF: .*retrying in", daemon.log())
    assert re.search(r"TRUNC_0001\.NEF: failed: ", daemon.log())
    assert not sidecar_of(truncated).exists()
    assert str(watch / "._CARD_0001.NEF") not in rows
    assert not (watch / "._CARD_0001.xmp").exists()
    pair_jpeg = rows.get(str(watch / "PAIR_0001.JPG"))
    assert pair_jpeg is None or pair_jpeg.status == "skipped"
    assert not any(name.startswith(".RSYNC") for name in os.listdir(watch))
    # One INFO line per rated file, each file once.
    names = logged_names(daemon.log())
    assert sorted(names) == sorted(p.relative_to(tmp_path).as_posix() for p in expected)


def test_storm_of_2000_files_loses_none(daemon_factory, tmp_path, small_nef):
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = daemon_factory([watch], queue_size=200)
    daemon.start()
    raws = []
    for folder in range(4):  # a card: 4 folders of 500 (100NIKON, 101NIKON, ...)
        sub = watch / f"{100 + folder}NIKON"
        sub.mkdir()
        for i in range(500):
            raws.append(small_nef.write(sub / f"DSC_{folder * 500 + i:04d}.NEF"))
    daemon.wait_for(lambda: daemon.rated() >= len(raws), 150, "2,000 files rated")
    code, _ = daemon.stop()
    assert code == 0
    assert_rated_once(daemon, raws)
    assert len(list(watch.rglob("*.xmp"))) == len(raws)
    assert len(logged_names(daemon.log())) == len(raws)


# --- killed and stopped -------------------------------------------------------------


def test_sigkill_mid_load_then_restart_rates_every_file_exactly_once(watching, small_nef):
    watch, daemon = watching("card")
    # 50 different frames among 600 files: workers busy, and many re-copies whose cached
    # analysis makes the main thread write sidecars fast (the window a kill can tear).
    raws = [
        small_nef.write(watch / f"DSC_{i:04d}.NEF", tag=i if i % 20 == 0 else i % 20)
        for i in range(600)
    ]
    daemon.wait_for(lambda: daemon.rated() >= 120, 60, "a fifth of the files rated")
    killed_pid = daemon.proc.pid
    daemon.proc.kill()  # SIGKILL: no chance to tidy up
    daemon.proc.wait(timeout=10)
    assert daemon.rated() < len(raws), "the load finished before the kill: make it bigger"
    daemon.start()
    daemon.wait_for(lambda: daemon.rated() >= len(raws), 120, "every file rated")
    code, _ = daemon.stop()
    assert code == 0
    assert_rated_once(daemon, raws, killed_pid=killed_pid)
    names = logged_names(daemon.all_logs())
    assert len(names) == len(set(names)), "a file was rated in both runs"


def test_sigterm_with_work_in_flight_exits_0_and_restart_finishes(
    daemon_factory, tmp_path, sample_nefs, small_nef
):
    watch = tmp_path / "tether"
    watch.mkdir()
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(0.2)
    messages: list[str] = []
    listening = threading.Event()
    listening.set()

    def listen() -> None:  # read as systemd does: promptly (the socket queue is short)
        while listening.is_set():
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    daemon = daemon_factory([watch])
    daemon.start(env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    # Full-size samples (real analysis in the workers) and many unique small ones.
    raws = [shutil.copyfile(src, watch / f"BIG_{i:04d}.NEF") for i, src in enumerate(sample_nefs)]
    raws += [small_nef.write(watch / f"DSC_{i:04d}.NEF", tag=1000 + i) for i in range(50)]
    # 20 files taken up (their sidecars may wait for their bursts: the 50 small ones are
    # one burst, of 50 identical frames shot at the same second).
    started = lambda: sum(1 for r in daemon.rows().values() if r.fingerprint)  # noqa: E731
    daemon.wait_for(lambda: started() >= 20, 60, "work in flight")
    code, took = daemon.stop(signal.SIGTERM, timeout=15)
    assert code == 0, daemon.log()
    assert took < 10, f"took {took:.1f} s to stop"
    assert "stopped (pid" in daemon.log()

    time.sleep(0.5)
    listening.clear()
    reader.join(timeout=5)
    listener.close()
    fields = [line for m in messages for line in m.split("\n")]
    assert "READY=1" in fields and "STOPPING=1" in fields and "WATCHDOG=1" in fields
    assert fields.index("READY=1") < fields.index("STOPPING=1")
    assert any(re.match(r"STATUS=queue \d+, working on \d+, rated today \d+", f) for f in fields)

    # The journal is consistent: nothing claimed by a worker, no half-done sidecar step,
    # and a sidecar exists exactly for the rated files.
    rows = daemon.rows()
    rated_before = {p for p, r in rows.items() if r.status == "rated"}
    assert len(rated_before) < len(raws), "everything finished before SIGTERM"
    for path, row in rows.items():
        assert not row.claimed and row.sidecar_started is None, path
        assert sidecar_of(Path(path)).exists() == (row.status == "rated"), path

    daemon.start()
    daemon.wait_for(lambda: daemon.rated() >= len(raws), 120, "the rest rated")
    code, _ = daemon.stop()
    assert code == 0
    assert_rated_once(daemon, raws)


def test_second_signal_forces_exit(watching, small_nef):
    watch, daemon = watching("in")
    for i in range(40):
        small_nef.write(watch / f"DSC_{i:04d}.NEF", tag=5000 + i)
    daemon.wait_for(lambda: daemon.rated() >= 5, 60, "work in flight")
    daemon.send(signal.SIGINT)
    daemon.send(signal.SIGINT)
    code = daemon.proc.wait(timeout=10)
    assert "stopped (pid" in daemon.log()
    assert code in (0, 1)
    rows = daemon.rows()
    assert not any(r.claimed for r in rows.values())


# --- first start, catch-up, restarts ---------------------------------------------------


def test_first_start_rates_only_new_files_says_so_and_catch_up_rates_the_rest(
    daemon_factory, tmp_path, small_nef
):
    archive = tmp_path / "my archive"
    (archive / "2024").mkdir(parents=True)
    old = [small_nef.write(archive / f"OLD_{i:04d}.NEF", tag=7000 + i) for i in range(2)]
    old.append(small_nef.write(archive / "2024" / "OLD_0002.NEF", tag=7002))
    (archive / "OLD_0000.JPG").write_bytes(b"\xff\xd8\xff\xd9")  # the camera's JPEG
    time.sleep(0.05)
    daemon = daemon_factory([archive])
    daemon.start()
    new = small_nef.write(archive / "NEW_0001.NEF", tag=7100)
    daemon.wait_for(lambda: sidecar_of(new).exists(), 30, "the new file's sidecar")
    # Issue #20: a folder watched for the first time says what it left alone, and how to
    # rate that, in a command to copy.
    daemon.wait_for(lambda: "left alone" in daemon.log(), 10, "the left-alone line")
    said = [line for line in daemon.log().splitlines() if "left alone" in line]
    config = shlex.quote(str(daemon.config_path))
    assert len(said) == 1 and said[0].endswith(
        f"{archive}: watched for the first time; the 3 photos already there are left alone "
        f"(only new ones are rated); to rate them too: postselectd score --config {config} "
        f"'{archive}' (or start the daemon once with: postselectd run --catch-up --config "
        f"{config})"
    ), said
    time.sleep(SETTLE * 3)  # the start-up scan has long finished
    assert not any(sidecar_of(p).exists() for p in old), "old files were rated"
    assert daemon.stop()[0] == 0

    # While the daemon is down a file arrives: the start-up reconcile scan finds it.
    while_down = small_nef.write(archive / "DOWN_0001.NEF", tag=7200)
    daemon.start()
    daemon.wait_for(lambda: sidecar_of(while_down).exists(), 30, "the file from downtime")
    assert not any(sidecar_of(p).exists() for p in old)
    assert daemon.stop()[0] == 0
    assert "left alone" not in daemon.log(), "said again on a later start"

    daemon.start("--catch-up")
    daemon.wait_for(lambda: all(sidecar_of(p).exists() for p in old), 30, "catch-up")
    assert daemon.stop()[0] == 0
    assert_rated_once(daemon, [*old, new, while_down])
    assert "catching up" in daemon.log()


def test_no_config_watches_the_default_inbox_and_says_so(tmp_path, small_nef):
    home = tmp_path / "home"
    env = dict(
        os.environ,
        HOME=str(home),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
    )
    env.pop("NOTIFY_SOCKET", None)
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        inbox = home / "Pictures" / "postselectd-inbox"
        deadline = time.monotonic() + 60
        while " started (pid " not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        first = log.read_text().splitlines()[0]
        assert str(inbox) in first and "default inbox" in first
        assert inbox.is_dir()
        raw = small_nef.write(inbox / "DSC_0001.NEF")
        deadline = time.monotonic() + 30
        while not sidecar_of(raw).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sidecar_of(raw).exists()
        # The journal is in the per-user data folder.
        assert (tmp_path / "xdg-data" / "postselectd" / "journal.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_a_second_daemon_on_the_same_state_refuses_to_start(watching):
    watch, daemon = watching("in")
    second = subprocess.run(
        [sys.executable, "-m", "postselectd", "run", "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        env=daemon.env,
        cwd=ROOT,
        timeout=60,
    )
    assert second.returncode == 2
    assert f"already running on {daemon.state_dir}" in second.stderr
    assert daemon.proc.poll() is None
    assert daemon.stop()[0] == 0


# --- folders that come and go, reloads ---------------------------------------------------


def test_a_card_pulled_and_put_back_is_watched_again(daemon_factory, tmp_path, small_nef):
    card = tmp_path / "media" / "NIKON D7100"
    card.mkdir(parents=True)
    later = tmp_path / "media" / "not-mounted-yet"
    daemon = daemon_factory([card, later])
    # A folder that may be absent at start-up must say so; a missing one that does not
    # is refused (tests/test_reliability_daemon.py).
    daemon.write_config(
        [], extra={"watch": [{"path": str(card)}, {"path": str(later), "removable": True}]}
    )
    daemon.start()
    assert "not-mounted-yet is not there (yet)" in daemon.log()
    first = small_nef.write(card / "DSC_0001.NEF", tag=8000)
    daemon.wait_for(lambda: sidecar_of(first).exists(), 30, "first sidecar")

    os.rename(card, tmp_path / "media" / "pulled")  # the card is gone
    daemon.wait_for(lambda: "NIKON D7100 is gone" in daemon.log(), 10, "gone logged")
    os.rename(tmp_path / "media" / "pulled", card)  # ... and back, with its photos
    daemon.wait_for(lambda: "NIKON D7100 is back" in daemon.log(), 10, "back logged")
    second = small_nef.write(card / "DSC_0002.NEF", tag=8001)
    daemon.wait_for(lambda: sidecar_of(second).exists(), 30, "sidecar after return")

    later.mkdir()  # a folder that appears after start-up
    daemon.wait_for(lambda: "not-mounted-yet is back" in daemon.log(), 10, "attached")
    third = small_nef.write(later / "DSC_0003.NEF", tag=8002)
    daemon.wait_for(lambda: sidecar_of(third).exists(), 30, "sidecar in the new folder")
    assert daemon.stop()[0] == 0
    assert_rated_once(daemon, [second, third])
    assert daemon.rows()[str(first)].rated_count == 1


def test_sighup_reloads_the_config_and_refuses_a_bad_one(daemon_factory, tmp_path, small_nef):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    daemon = daemon_factory([first])
    daemon.start()

    good_config = daemon.config_path.read_text()
    daemon.config_path.write_text(good_config + "rating:\n  select_treshold: 0.8\n")
    daemon.send(signal.SIGHUP)
    daemon.wait_for(lambda: "config reload refused" in daemon.log(), 10, "the refusal")
    assert "rating.select_treshold: unknown key" in daemon.log()
    raw = small_nef.write(first / "DSC_0001.NEF", tag=9000)
    daemon.wait_for(lambda: sidecar_of(raw).exists(), 30, "still rating on the old config")

    daemon.write_config([first, second])
    daemon.send(signal.SIGHUP)
    daemon.wait_for(lambda: "config reloaded" in daemon.log(), 10, "the reload")
    raw2 = small_nef.write(second / "DSC_0002.NEF", tag=9001)
    daemon.wait_for(lambda: sidecar_of(raw2).exists(), 30, "the new watch working")
    assert daemon.stop()[0] == 0
    assert_rated_once(daemon, [raw, raw2])


def test_a_renamed_or_recopied_file_reuses_its_analysis_and_gets_its_own_sidecar(
    watching, sample_nefs
):
    watch, daemon = watching("in")
    original = shutil.copyfile(sample_nefs[8], watch / "DSC_0001.NEF")
    daemon.wait_for(lambda: sidecar_of(original).exists(), 30, "first sidecar")
    copy = shutil.copyfile(sample_nefs[8], watch / "COPY_0001.NEF")
    daemon.wait_for(lambda: sidecar_of(copy).exists(), 30, "the copy's sidecar")
    assert daemon.stop()[0] == 0
    rows = daemon.rows()
    assert rows[str(original)].fingerprint == rows[str(copy)].fingerprint
    first = read_sidecar(sidecar_of(original))
    again = read_sidecar(sidecar_of(copy))
    key = "Xmp.postselect.KeeperProbability"
    assert first[key] == again[key]
    assert rows[str(copy)].elapsed_ms is not None


def test_a_kept_analysis_is_reused_only_if_the_same_models_and_code_made_it(watching, sample_nefs):
    # The journal keeps analyses by versions.analysis_version (the models' and the analysis
    # code's digest, not postselectd's version alone), and a re-copied photo is rated from
    # one only when the models the workers use now made it: after a personal model was
    # swapped in (or a models folder of your own), the kept one is another model's verdict.
    watch, daemon = watching("in")
    first = [shutil.copyfile(sample_nefs[n], watch / f"DSC_000{n}.NEF") for n in (1, 2)]
    daemon.wait_for(lambda: all(sidecar_of(p).exists() for p in first), 30, "the sidecars")
    assert daemon.stop()[0] == 0
    rows = daemon.rows()
    key = "Xmp.postselect.KeeperProbability"
    measured = float(read_sidecar(sidecar_of(first[1]))[key])
    marked = {}
    with Journal(daemon.state_dir) as journal:
        for path, mark in zip(first, (0.0123, 0.0456), strict=True):
            fp = rows[str(path)].fingerprint
            record = journal.cached_analysis(fp, analysis_version())
            assert record is not None, "not kept under the analysis version"
            record["analysis"]["keeper_probability"] = mark
            if mark == 0.0456:  # as if another (personal) model had made it
                record["analysis"]["model_version"] = (
                    "personal-20260101-000000+" + (record["analysis"]["model_version"])
                )
            journal.store_analysis(fp, analysis_version(), record, time.time())
            marked[mark] = path
    daemon.start()
    fresh = shutil.copyfile(sample_nefs[3], watch / "DSC_0003.NEF")  # the models in use
    daemon.wait_for(lambda: sidecar_of(fresh).exists(), 30, "a fresh photo's sidecar")
    same = shutil.copyfile(marked[0.0123], watch / "COPY_0001.NEF")
    other = shutil.copyfile(marked[0.0456], watch / "COPY_0002.NEF")
    daemon.wait_for(
        lambda: sidecar_of(same).exists() and sidecar_of(other).exists(), 30, "the copies"
    )
    assert daemon.stop()[0] == 0
    assert float(read_sidecar(sidecar_of(same))[key]) == pytest.approx(0.0123)
    assert float(read_sidecar(sidecar_of(other))[key]) == pytest.approx(measured)


def test_a_file_changed_within_its_recheck_is_not_rated_from_its_earlier_bytes(
    watching, sample_nefs
):
    # An idle worker starts on a closed file before its recheck (CLOSED_SETTLE_SECONDS) is
    # over; the result has to wait for the recheck, and be dropped because the file changed
    # within it.
    settle = CLOSED_SETTLE_SECONDS
    watch, daemon = watching("in")
    data = sample_nefs[8].read_bytes()
    for attempt in range(5):
        target = watch / f"DSC_{attempt:04d}.NEF"
        with open(target, "wb") as f:
            f.write(data)
        closed = time.monotonic()
        time.sleep(0.12)  # the early analysis (~0.1 s) is back, or nearly
        with open(target, "ab") as f:
            f.write(b"\0" * 16)
        changed = time.monotonic()
        # A sidecar of the first bytes would come `settle` after the first close; one of
        # the final bytes not before `settle` after the second.
        time.sleep(settle - 0.03)
        early = sidecar_of(target).exists()
        if changed - closed < settle - 0.05 and time.monotonic() - changed < settle - 0.005:
            break
    else:
        pytest.skip("the machine is too loaded to change a file within its recheck")
    assert not early, "rated from the bytes it had before the change"
    daemon.wait_for(lambda: sidecar_of(target).exists(), 30, "the final bytes' sidecar")
    assert daemon.stop()[0] == 0
    row = daemon.rows()[str(target)]
    assert (row.status, row.size, row.rated_count) == ("rated", len(data) + 16, 1)


# --- status and doctor --------------------------------------------------------------


def test_status_reports_queue_rated_failed_with_reasons_and_last_files(
    daemon_factory, tmp_path, small_nef
):
    watch = tmp_path / "in"
    watch.mkdir()
    daemon = daemon_factory([watch], max_retries=0)
    daemon.start()
    good = small_nef.write(watch / "GOOD_0001.NEF", tag=9500)
    bad = watch / "BAD_0001.NEF"
    bad.write_bytes(b"this is not a raw file at all" * 10)
    daemon.wait_for(lambda: sidecar_of(good).exists(), 30, "the good one rated")
    daemon.wait_for(
        lambda: (
            daemon.rows().get(str(bad)) is not None and daemon.rows()[str(bad)].status == "failed"
        ),
        30,
        "the bad one failed",
    )

    def status(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "postselectd",
                "status",
                "--config",
                str(daemon.config_path),
                *args,
            ],
            capture_output=True,
            text=True,
            env=daemon.env,
            cwd=ROOT,
            timeout=60,
        )

    running = status()
    assert running.returncode == 0, running.stderr
    assert f"running (pid {daemon.proc.pid})" in running.stdout
    assert re.search(r"^rated\s+1 ", running.stdout, re.M)
    assert re.search(r"^failed\s+1$", running.stdout, re.M)
    assert re.search(r"^queue\s+0", running.stdout, re.M)
    assert f"{bad}: " in running.stdout and "(1 attempts)" in running.stdout
    assert str(good) in running.stdout
    assert daemon.stop()[0] == 0

    import json

    stopped = json.loads(status("--json").stdout)
    assert stopped["running_pid"] is None
    assert stopped["rated"] == 1 and stopped["failed"] == 1 and stopped["queue"] == 0
    assert stopped["failures"][0]["path"] == str(bad) and stopped["failures"][0]["reason"]
    assert stopped["last"][0]["path"] == str(good) and 1 <= stopped["last"][0]["stars"] <= 5


def test_a_sidecar_written_just_before_a_kill_is_not_written_again(watching, small_nef):
    import sqlite3

    watch, daemon = watching("in")
    done = small_nef.write(watch / "DONE_0001.NEF", tag=9700)
    torn = small_nef.write(watch / "TORN_0001.NEF", tag=9701)
    daemon.wait_for(lambda: daemon.rated() == 2, 30, "two files rated")
    assert daemon.stop()[0] == 0
    # What a SIGKILL between the sidecar's rename and the journal's commit leaves: the
    # journal says "writing the sidecar" and still pending. For DONE the sidecar is there;
    # for TORN it never got written.
    sidecar_of(torn).unlink()
    written_at = sidecar_of(done).stat().st_mtime_ns
    db = sqlite3.connect(daemon.state_dir / "journal.sqlite3")
    with db:
        db.execute(
            "UPDATE files SET status = 'pending', claimed = 1, rated_count = 0,"
            " sidecar_started = ? WHERE path IN (?, ?)",
            (written_at / 1e9 - 0.5, str(done), str(torn)),
        )
    db.close()
    daemon.start()
    daemon.wait_for(lambda: sidecar_of(torn).exists(), 30, "the torn one rated again")
    daemon.wait_for(lambda: daemon.rated() == 2, 10, "both rated")
    assert daemon.stop()[0] == 0
    assert "DONE_0001.NEF: its sidecar was written before the restart" in daemon.log()
    assert sidecar_of(done).stat().st_mtime_ns == written_at  # not written twice
    assert logged_names(daemon.log()) == ["in/TORN_0001.NEF"]
    assert_rated_once(daemon, [done, torn])


def test_a_burst_is_judged_together_once_its_last_frame_arrived(watching, sample_nefs):
    watch, daemon = watching("in")
    burst = [p for p in sample_nefs if p.name in {f"DSC_{n:04d}.NEF" for n in range(101, 108)}]
    for source in burst:
        shutil.copyfile(source, watch / source.name)

    def best(name: str) -> bool:
        props = read_sidecar(sidecar_of(watch / name)) if sidecar_of(watch / name).exists() else {}
        return "PostSelect|best of burst" in props.get("Xmp.lr.hierarchicalSubject", [])

    daemon.wait_for(lambda: best("DSC_0102.NEF") and best("DSC_0104.NEF"), 60, "burst verdicts")
    assert daemon.stop()[0] == 0
    subjects = {
        p.name: read_sidecar(sidecar_of(watch / p.name)).get("Xmp.lr.hierarchicalSubject", [])
        for p in burst
    }
    for n in (101, 102, 103):
        assert "PostSelect|burst 0101" in subjects[f"DSC_{n:04d}.NEF"]
    for n in (104, 105, 106):
        assert "PostSelect|burst 0104" in subjects[f"DSC_{n:04d}.NEF"]
    assert not any(k.startswith("PostSelect|burst") for k in subjects["DSC_0107.NEF"])
    assert_rated_once(daemon, [watch / p.name for p in burst])


def test_during_a_dump_a_burst_frame_gets_one_sidecar_with_its_bursts_verdict(
    watching, sample_nefs
):
    # All 13 sample NEFs copied in at once: while later files wait, a frame is held until
    # its burst is known and written once, instead of at once and again for the burst.
    watch, daemon = watching("in")
    for source in sample_nefs:
        shutil.copyfile(source, watch / source.name)
    burst_frames = [watch / f"DSC_{n:04d}.NEF" for n in range(101, 107)]
    first_inode: dict[Path, int] = {}

    def all_rated() -> bool:
        for raw in sample_nefs:
            sidecar = sidecar_of(watch / raw.name)
            if watch / raw.name not in first_inode:
                try:
                    first_inode[watch / raw.name] = os.stat(sidecar).st_ino
                except FileNotFoundError:
                    pass
        return len(first_inode) == len(sample_nefs)

    daemon.wait_for(all_rated, 60, "every sidecar")
    time.sleep(4)  # past the burst hold: a second write would have happened by now
    assert daemon.stop()[0] == 0
    for raw in burst_frames:
        assert os.stat(sidecar_of(raw)).st_ino == first_inode[raw], f"{raw.name} written twice"
        subjects = read_sidecar(sidecar_of(raw)).get("Xmp.lr.hierarchicalSubject", [])
        assert f"PostSelect|burst {101 if raw.name < 'DSC_0104' else 104:04d}" in subjects
    assert_rated_once(daemon, [watch / p.name for p in sample_nefs])


def bursts_in(folder: Path) -> dict[str, tuple[str | None, bool]]:
    """Each photo's burst keyword and whether it is its burst's best frame, from its sidecar."""
    found = {}
    for raw in sorted(folder.glob("*.NEF")):
        subjects = read_sidecar(sidecar_of(raw)).get("Xmp.lr.hierarchicalSubject", [])
        burst = next((s for s in subjects if s.startswith("PostSelect|burst ")), None)
        found[raw.name] = (burst, "PostSelect|best of burst" in subjects)
    return found


def test_bursts_are_the_same_however_and_whenever_their_frames_arrive(
    daemon_factory, tmp_path, sample_nefs
):
    # Issue #20: frames copied 3.5 s apart formed no burst, a 4 s gap left the first frame
    # out, and a restart did not regroup them. A burst is a property of capture times and
    # content: the daemon must end with the bursts and best frames of `score DIR`.
    reference = tmp_path / "reference"
    reference.mkdir()
    for source in sample_nefs:
        shutil.copyfile(source, reference / source.name)
    scored = run_cli("score", str(reference))
    assert scored.returncode == 0, scored.stderr
    expected = bursts_in(reference)
    assert sorted(b for b, best in expected.values() if best) == [
        "PostSelect|burst 0101",
        "PostSelect|burst 0104",
    ]

    watch = tmp_path / "in"
    watch.mkdir()
    daemon = daemon_factory([watch])
    daemon.start()
    # Out of capture order: the two blurred frames of burst 0101 and the last of burst
    # 0104 at once, then a restart, then the rest 3.5 s apart, their best frames late.
    at_once = ["0113", "0103", "0106", "0101", "0109", "0111", "0108"]
    one_by_one = ["0105", "0112", "0102", "0110", "0107", "0104"]
    for n in at_once:
        shutil.copyfile(shared_path("samples", "nef", f"DSC_{n}.NEF"), watch / f"DSC_{n}.NEF")
    daemon.wait_for(lambda: daemon.rated() == len(at_once), 60, "the first seven rated")
    assert daemon.stop()[0] == 0
    daemon.start()
    for n in one_by_one:
        shutil.copyfile(shared_path("samples", "nef", f"DSC_{n}.NEF"), watch / f"DSC_{n}.NEF")
        time.sleep(3.5)
    daemon.wait_for(lambda: daemon.rated() == len(sample_nefs), 60, "every photo rated")
    try:
        daemon.wait_for(lambda: bursts_in(watch) == expected, 30, "the bursts of score DIR")
    except AssertionError:
        pass  # the comparison below says what differs
    assert daemon.stop()[0] == 0
    assert bursts_in(watch) == expected, daemon.all_logs()
    assert_rated_once(daemon, [watch / p.name for p in sample_nefs])


def test_a_jpeg_rated_before_its_raw_leaves_no_second_verdict(daemon_factory, tmp_path):
    # Issue #19: RAW+JPEG pairs copied JPEG first (DSC_0102.JPG sorts before .NEF). Once
    # the raw is rated, the pair has one verdict, the raw's: the sidecar only the JPEG
    # names loses ours (and goes, when it held nothing else), a person's edits stay.
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = daemon_factory([watch])
    daemon.write_config([watch], {"sidecar": {"profiles": ["lightroom", "darktable"]}})
    daemon.start()
    stems = ("DSC_0102", "DSC_0104")
    for stem in stems:
        shutil.copyfile(shared_path("eval", "blur", "blur-0002.jpg"), watch / f"{stem}.JPG")
    daemon.wait_for(lambda: daemon.rated() == 2, 60, "the JPEGs rated")
    edited = watch / "DSC_0104.JPG.xmp"  # an editor developed the JPEG meanwhile
    text = edited.read_text()
    assert "<rdf:Description " in text
    edited.write_text(
        text.replace(
            "<rdf:Description ",
            '<rdf:Description xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" '
            'crs:Exposure2012="+0.35" ',
            1,
        )
    )
    for stem in stems:
        shutil.copyfile(shared_path("samples", "nef", f"{stem}.NEF"), watch / f"{stem}.NEF")
    daemon.wait_for(
        lambda: (
            all(sidecar_of(watch / f"{s}.NEF").with_suffix(".NEF.xmp").exists() for s in stems)
            and daemon.rated() == 2
        ),
        60,
        "the raws rated",
    )
    assert daemon.stop()[0] == 0
    rows = daemon.rows()
    for stem in stems:
        assert rows[str(watch / f"{stem}.JPG")].status == "skipped"
        assert rows[str(watch / f"{stem}.NEF")].status == "rated"
        shared = read_sidecar(watch / f"{stem}.xmp")
        raws_own = read_sidecar(watch / f"{stem}.NEF.xmp")
        assert (
            shared["Xmp.postselect.KeeperProbability"]
            == (raws_own["Xmp.postselect.KeeperProbability"])
        )
    assert not (watch / "DSC_0102.JPG.xmp").exists()  # it held only our verdict
    left = read_sidecar(edited)
    assert left.get("Xmp.crs.Exposure2012") == "+0.35"
    assert not [k for k in left if k.startswith("Xmp.postselect.") or k == "Xmp.xmp.Rating"]


def test_the_journal_forgets_photos_deleted_or_renamed_while_it_was_not_watching(
    watching, small_nef
):
    # Issue #19: rows of deleted photos stayed for ever; an archive renamed and pruned
    # over the years grew a journal of ghosts. A scan of the folder (start-up, hourly)
    # leaves only what is there.
    watch, daemon = watching("archive")
    raws = [small_nef.write(watch / f"DSC_{i:04d}.NEF", tag=700 + i) for i in range(4)]
    daemon.wait_for(lambda: daemon.rated() == 4, 60, "four rated")
    assert daemon.stop()[0] == 0
    raws[0].unlink()
    raws[1].rename(watch / "renamed.NEF")
    daemon.start()
    daemon.wait_for(lambda: "left the journal" in daemon.log(), 30, "the journal pruned")
    daemon.wait_for(lambda: daemon.rated() == 3, 30, "the renamed photo rated")
    assert daemon.stop()[0] == 0
    assert sorted(Path(p).name for p in daemon.rows()) == [
        "DSC_0002.NEF",
        "DSC_0003.NEF",
        "renamed.NEF",
    ]
    assert "2 photos no longer there" in daemon.log()


def test_the_stop_line_counts_first_ratings_and_re_ratings_apart(watching, small_nef):
    # Issue #20: a file rated again after it changed was counted as one more rated file.
    watch, daemon = watching("in")
    first = small_nef.write(watch / "DSC_0001.NEF", tag=1)
    small_nef.write(watch / "DSC_0002.NEF", tag=2)
    daemon.wait_for(lambda: daemon.rated() == 2, 60, "two first ratings")
    small_nef.write(first, tag=3)  # new bytes in the same file: rated again
    daemon.wait_for(lambda: daemon.rows()[str(first)].rated_count == 2, 60, "the re-rating")
    assert daemon.stop()[0] == 0
    stop_line = daemon.log().splitlines()[-1]
    assert "stopped (pid" in stop_line
    assert "rated 2, rated again 1 (changed since their rating), failed 0 in this run" in stop_line


# --- files written in pieces ----------------------------------------------------------

WAITING = "not rated while it may still be written"


def _without_levels(log: str) -> str:
    """A --log-level debug log as an info one reads: without the time and the level."""
    return re.sub(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) ", "", without_time(log), flags=re.M)


def _lines_of(log: str, name: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(f"{name}: ")]


def test_a_file_written_in_pieces_is_rated_once_whole_never_as_a_burst_of_itself(
    daemon_factory, tmp_path
):
    # Issue #20: DSC_0113 written in 7 pieces of 640 KB, closed between them (`dd
    # conv=notrunc` in a loop), was rated 6 times, the first at 10 % written, and ended as
    # "burst 0113 of 6, best of burst". Until the last piece its own offsets put its
    # 6000x4000 JpgFromRaw past its end: the daemon's default wait (30 s) applies.
    watch = tmp_path / "chunk"
    watch.mkdir()
    daemon = daemon_factory([watch])
    daemon.start("--log-level", "debug")  # the debug line of each look that waits
    data = shared_path("samples", "nef", "DSC_0113.NEF").read_bytes()
    target = watch / "DSC_0113.NEF"
    shown = f"{watch.name}/{target.name}"  # as the log names it
    piece = 640 * 1024

    def looks() -> int:
        """Looks at the file so far: each one waits, or rates it (an INFO line)."""
        log = _without_levels(daemon.log())
        lines = _lines_of(log, shown)
        return sum(WAITING in line for line in lines) + logged_names(log).count(shown)

    changed = 0
    for start in range(0, 7 * piece, piece):
        with open(target, "r+b" if target.exists() else "wb") as f:
            f.seek(start)
            f.write(data[start : start + piece])  # nothing left for the seventh
        if start < len(data):
            changed += 1
            # The daemon has looked at this much of the file before the next piece comes.
            daemon.wait_for(lambda n=changed: looks() >= n, 60, f"a look at piece {changed}")
        time.sleep(0.2)
    daemon.wait_for(lambda: sidecar_of(target).exists(), 60, "the sidecar")
    time.sleep(1.0)  # a second rating, or a burst rewrite, would come within this
    assert daemon.stop()[0] == 0

    log = _without_levels(daemon.log())
    lines = _lines_of(log, shown)
    subjects = read_sidecar(sidecar_of(target)).get("Xmp.lr.hierarchicalSubject", [])
    assert not any(s.startswith("PostSelect|burst") for s in subjects), subjects
    assert "PostSelect|best of burst" not in subjects
    assert not any("burst" in line for line in lines), lines
    row = daemon.rows()[str(target)]
    assert (row.status, row.rated_count, row.size) == ("rated", 1, len(data)), lines
    assert logged_names(log) == [shown], lines  # rated once, once it was whole
    waits = [line for line in lines if WAITING in line]
    assert len(waits) >= changed - 1, lines  # pieces 1-5: each look waited
    assert all("its SubIFD0" in line for line in waits), waits
    assert "looks truncated" not in log


def test_a_truncated_file_is_rated_or_failed_as_it_is_once_it_stops_changing(
    daemon_factory, tmp_path
):
    # A file cut short (a broken card) looks like one still being written: after the wait
    # it gets its one verdict, saying it looks truncated, or its one error line.
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = daemon_factory([watch], incomplete_wait_seconds=1.5, max_retries=0)
    daemon.start("--log-level", "debug")
    data = shared_path("samples", "nef", "DSC_0113.NEF").read_bytes()
    cut = watch / "DSC_0113.NEF"
    cut_shown = f"{watch.name}/{cut.name}"  # as the log names it
    cut.write_bytes(data[:2_000_000])  # inside the JpgFromRaw; the 1620x1080 one is whole
    pruned = watch / "IMG_1361.dng"  # its only preview points past its end
    shutil.copyfile(
        shared_path("samples", "raw", "broken", "PRUNED_iphone12pro_IMG_1361.dng"), pruned
    )
    daemon.wait_for(
        lambda: (
            [daemon.rows().get(str(p)) and daemon.rows()[str(p)].status for p in (cut, pruned)]
            == ["rated", "failed"]
        ),
        60,
        "a verdict and an error",
    )
    assert daemon.stop()[0] == 0

    log = _without_levels(daemon.log())
    lines = _lines_of(log, cut_shown)
    assert WAITING in lines[0], lines  # it waited first ...
    rated = [line for line in lines if re.match(rf"{re.escape(cut_shown)}: (\d\*|reject) ", line)]
    assert len(rated) == 1 and lines.index(rated[0]) > 0, lines  # ... then was rated once
    assert (
        f"{cut_shown}: rated from a file that looks truncated: its SubIFD0 preview runs past "
        "the end of the file"
    ) in lines
    assert sidecar_of(cut).exists() and daemon.rows()[str(cut)].rated_count == 1

    lines = _lines_of(log, f"{watch.name}/{pruned.name}")
    assert WAITING in lines[0], lines
    assert len(lines) == 2 and "failed: " in lines[1], lines
    assert lines[1].endswith("its IFD0 preview runs past the end of the file"), lines
    assert "IFD0 preview runs past" in daemon.rows()[str(pruned)].reason
    assert not sidecar_of(pruned).exists()


# --- what the log says ------------------------------------------------------------------


def test_log_lines_name_the_folder_and_carry_the_time_but_not_in_the_journal(
    daemon_factory, tmp_path, small_nef
):
    # Issue #20: "DSC_0101.NEF: 1* Red ..." read alike for six folders, and said no time.
    weddings, portraits = tmp_path / "weddings", tmp_path / "portraits"
    (weddings / "ceremony").mkdir(parents=True)
    portraits.mkdir()
    daemon = daemon_factory([weddings, portraits])
    daemon.start()
    raws = [
        small_nef.write(weddings / "ceremony" / "DSC_0101.NEF", tag=11000),
        small_nef.write(portraits / "DSC_0101.NEF", tag=11001),
    ]
    daemon.wait_for(lambda: all(sidecar_of(p).exists() for p in raws), 30, "both sidecars")
    assert daemon.stop()[0] == 0
    lines = daemon.log().splitlines()
    assert lines and all(LOG_TIME.match(line) for line in lines), lines
    assert sorted(logged_names(daemon.log())) == [
        "portraits/DSC_0101.NEF",
        "weddings/ceremony/DSC_0101.NEF",
    ]

    # Under systemd the journal stamps each line itself: no second time in front.
    daemon.start(journal=True)
    third = small_nef.write(portraits / "DSC_0102.NEF", tag=11002)
    daemon.wait_for(lambda: sidecar_of(third).exists(), 30, "the third sidecar")
    assert daemon.stop()[0] == 0
    journal = daemon.log()
    assert not LOG_TIME.search(journal), journal
    assert re.search(r"^portraits/DSC_0102\.NEF: \d\* ", journal, re.M), journal
