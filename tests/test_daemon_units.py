"""Pieces of the daemon on their own: systemd notify over a real socket, the worker pool
losing a worker, and `postselectd doctor`."""

from __future__ import annotations

import os
import queue
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from postselectd.config import AnalysisConfig
from postselectd.daemon import ServiceNotifier
from postselectd.pipeline import Scored
from postselectd.service import render
from postselectd.workers import Analysed, WorkerDied, WorkerPool, WorkerReady

# --- sd_notify ------------------------------------------------------------------------


def _receive(sock: socket.socket) -> str:
    sock.settimeout(2)
    return sock.recv(4096).decode()


def test_notify_sends_datagrams_to_a_socket_path(tmp_path: Path):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = ServiceNotifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.notify("READY=1", "STATUS=queue 0")
        assert _receive(sock) == "READY=1\nSTATUS=queue 0"
        assert notifier.notify("STOPPING=1")
        assert _receive(sock) == "STOPPING=1"
        notifier.close()


def test_notify_reaches_an_abstract_socket():
    name = f"postselectd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = ServiceNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.notify("WATCHDOG=1")
        assert _receive(sock) == "WATCHDOG=1"
        notifier.close()


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_us():
    assert ServiceNotifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    mine = ServiceNotifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 2.0
    theirs = ServiceNotifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert theirs.watchdog_interval is None


def test_without_notify_socket_nothing_is_sent():
    notifier = ServiceNotifier({})
    assert not notifier.enabled and not notifier.notify("READY=1")


# --- the worker pool --------------------------------------------------------------


def crashy_worker(worker_id, tasks, results, config) -> None:
    """A worker whose decoder dies on files named CRASH*: the fault to inject."""
    results.send(("ready", worker_id, None))
    while True:
        task = tasks.recv()
        if task is None:
            return
        job, path = task
        if Path(path).name.startswith("CRASH"):
            os._exit(3)
        time.sleep(0.05)
        results.send(("done", job, Scored(path=Path(path), analysis=None, error="ok")))


def test_a_worker_that_dies_costs_only_its_own_file():
    inbox: queue.Queue = queue.Queue()
    pool = WorkerPool(2, AnalysisConfig(), inbox.put, target=crashy_worker)
    try:
        files = ["A.NEF", "CRASH.NEF", "B.NEF", "C.NEF", "D.NEF"]
        pending = list(enumerate(files))
        done: dict[int, object] = {}
        deadline = time.monotonic() + 60
        while len(done) < len(files) and time.monotonic() < deadline:
            while pending and pool.idle():
                job, name = pending[0]
                assert pool.submit(job, Path("/x") / name)
                pending.pop(0)
            try:
                message = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(message, Analysed):
                done[message.job] = message.scored.path.name
            elif isinstance(message, WorkerDied):
                done[message.job] = ("died", message.exitcode)
            else:
                assert isinstance(message, WorkerReady)
        assert done == {0: "A.NEF", 1: ("died", 3), 2: "B.NEF", 3: "C.NEF", 4: "D.NEF"}
        assert len(pool.pids()) == 2  # the dead worker was replaced
    finally:
        pool.close()


# --- doctor -----------------------------------------------------------------------


def _config(tmp_path: Path, watches: list[Path]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "watch": [{"path": str(w)} for w in watches],
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    return path


def _env(tmp_path: Path) -> dict:
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }


def test_doctor_checks_config_models_folders_limits_disk_and_service(tmp_path: Path):
    import_dir = tmp_path / "import"
    (import_dir / "2026-05-01").mkdir(parents=True)
    missing = tmp_path / "card"
    config = _config(tmp_path, [import_dir, missing])
    text = config.read_text().replace(f"path: {missing}", f"path: {missing}\n  removable: true")
    config.write_text(text)
    result = run_cli("doctor", "--config", str(config), env=_env(tmp_path))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    lines = {line.split()[1] if len(line.split()) > 1 else "": line for line in out.splitlines()}
    assert out.startswith("OK    config")
    assert "OK    models" in out
    assert "OK    decoders" in lines["decoders"] and "HEIC (libheif " in lines["decoders"]
    assert f"OK    watch {import_dir}" in out and "2 folder(s), inotify" in out
    assert f"WARN  watch {missing}" in out and "not there" in out
    if Path("/proc/sys/fs/inotify/max_user_watches").exists():
        assert "inotify watches" in out and "limit" in out
    assert "free space (state folder)" in out
    assert "WARN  service" in out and "postselectd service install" in out
    assert "daemon" in lines


def test_doctor_reports_a_bad_config_and_a_file_where_a_folder_should_be(tmp_path: Path):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    config = _config(tmp_path, [not_a_folder])
    result = run_cli("doctor", "--config", str(config), env=_env(tmp_path))
    assert result.returncode == 1
    assert f"FAIL  watch {not_a_folder}" in result.stdout

    config.write_text("daemon:\n  settle_seconds: -1\n")
    result = run_cli("doctor", "--config", str(config), env=_env(tmp_path))
    assert result.returncode == 1
    assert "FAIL  config" in result.stdout and "daemon.settle_seconds" in result.stdout
    assert "models" in result.stdout  # the other checks still run


def test_doctor_fails_an_unreadable_folder(tmp_path: Path, unprivileged):
    locked = tmp_path / "locked"
    locked.mkdir()
    unprivileged.lock(locked, 0o700)
    try:
        result = run_cli(
            "doctor",
            "--config",
            str(_config(tmp_path, [locked])),
            env=_env(tmp_path),
            popen=unprivileged.popen,
        )
    finally:
        unprivileged.release(locked)
    assert result.returncode == 1 and f"FAIL  watch {locked}" in result.stdout


def test_doctor_checks_the_folders_the_daemon_watches_and_whether_sidecars_can_be_written(
    tmp_path: Path, unprivileged
):
    # Issue #20: doctor looked only at its own config's folders, not at those the daemon
    # is given on its command line or by the installed service (whose config may be
    # another file), and not at whether a sidecar can be written there.
    if sys.platform == "darwin":
        pytest.skip("the Linux layout")
    mine, given, theirs, added = (tmp_path / n for n in ("mine", "given", "theirs", "added"))
    for folder in (mine, given, added):
        folder.mkdir()
    service_config = tmp_path / "service.yaml"
    service_config.write_text(
        yaml.safe_dump({"watch": [{"path": str(theirs)}], "state_dir": str(tmp_path / "s")})
    )
    unit = tmp_path / "xdg" / "systemd" / "user" / "postselectd.service"
    unit.parent.mkdir(parents=True)
    text = render("linux", sys.executable, service_config, sandbox=False)
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    unit.write_text(text.replace(exec_start, f'{exec_start} "--watch" "{added}"'))
    # Readable, but no sidecar can be written: a write-protected card, another user's folder.
    if unprivileged.root:
        unprivileged.lock(mine, 0o755)
    else:
        os.chmod(mine, 0o555)
    try:
        result = run_cli(
            "doctor",
            "--config",
            str(_config(tmp_path, [mine])),
            "--watch",
            str(given),
            env=_env(tmp_path),
            popen=unprivileged.popen,
        )
    finally:
        unprivileged.release(mine)
    assert result.returncode == 1, result.stdout + result.stderr

    def line(status: str, folder: Path) -> str:
        found = [
            x for x in result.stdout.splitlines() if x.split()[:3] == [status, "watch", str(folder)]
        ]
        assert len(found) == 1, result.stdout
        return found[0]

    assert "no sidecar can be written there" in line("FAIL", mine)
    assert line("OK", given).endswith("readable, sidecars writable, 1 folder(s), inotify (--watch)")
    assert "does not exist" in line("FAIL", theirs)
    assert line("FAIL", theirs).endswith(f"(the service's config {service_config})")
    assert line("OK", added).endswith("(the service's --watch)")
