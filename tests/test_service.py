"""Service files: a unit systemd accepts, a plist launchd accepts, install and uninstall."""

from __future__ import annotations

import getpass
import os
import plistlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need_tool, run_cli, shared_path

from postselectd.service import (
    DAEMON_MEMORY_BYTES,
    LAUNCHD_LABEL,
    can_sandbox,
    command_line,
    install,
    installed_command,
    installed_path,
    render,
    render_launchd_plist,
    render_systemd_unit,
    uninstall,
)
from postselectd.workers import WORKER_ADDRESS_SPACE_BYTES


def _unit_lines(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


def test_systemd_unit_has_what_a_background_culler_needs():
    unit = _unit_lines(render_systemd_unit("/opt/venv/bin/python", Path("/etc/p.yaml")))
    assert unit["Type"] == "notify"
    assert unit["Restart"] == "on-failure"
    assert int(unit["WatchdogSec"]) > 0
    assert unit["Nice"] == "10"
    assert unit["IOSchedulingClass"] == "idle"
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["KillMode"] == "mixed"
    assert unit["ExecStart"] == (
        '"/opt/venv/bin/python" "-m" "postselectd" "run" "--config" "/etc/p.yaml"'
    )
    assert unit["WantedBy"] == "default.target"


def test_systemd_unit_quotes_spaces_percent_and_dollar():
    unit = _unit_lines(render_systemd_unit("/Users/Me/My Venv/bin/python", Path("/x/100%$y")))
    assert unit["ExecStart"].startswith('"/Users/Me/My Venv/bin/python" ')
    assert '"/x/100%%$$y"' in unit["ExecStart"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (apt package: systemd)")
    unit = tmp_path / "postselectd.service"
    unit.write_text(render_systemd_unit(sys.executable, tmp_path / "my config.yaml"))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # verify exits 0 even for settings it ignores: any line about our unit is a problem.
    problems = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert problems == []

    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("IOSchedulingClass=idle", "IOSchedulingClass=x"))
    result = subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True)
    assert str(broken) in result.stderr  # the check above can fail


def test_launchd_plist_round_trips_and_is_not_background():
    text = render_launchd_plist(
        "/Users/me/.venv/bin/python", Path("/Users/me/a & b.yaml"), Path("/Users/me/log.txt")
    )
    plist = plistlib.loads(text.encode())
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == [
        "/Users/me/.venv/bin/python",
        "-m",
        "postselectd",
        "run",
        "--config",
        "/Users/me/a & b.yaml",
        "--service-manager",
        "launchd",
    ]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"]
    assert plist["ProcessType"] == "Standard"
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == "/Users/me/log.txt"
    assert plistlib.loads(plistlib.dumps(plist)) == plist
    assert "Full Disk Access" in text and "Removable Volumes" in text
    plutil = shutil.which("plutil")
    if plutil:
        assert subprocess.run([plutil, "-lint", "-"], input=text.encode()).returncode == 0


def test_print_shows_both_service_files_on_any_system():
    result = run_cli("service", "install", "--print", "--platform", "all")
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in result.stdout and "<key>ProcessType</key>" in result.stdout
    mac = run_cli("service", "install", "--print", "--platform", "macos")
    body = mac.stdout
    assert plistlib.loads(body.encode())["ProgramArguments"][1:4] == ["-m", "postselectd", "run"]


def test_install_and_uninstall_write_and_remove_the_user_unit(tmp_path: Path, monkeypatch):
    if sys.platform == "darwin":
        pytest.skip("the Linux layout")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    done = install("linux", "/usr/bin/python3", tmp_path / "c.yaml", start=False)
    path = tmp_path / "config" / "systemd" / "user" / "postselectd.service"
    assert path == installed_path("linux") and path.is_file()
    assert done == [f"wrote {path}"]
    assert '"--config" "' + str(tmp_path / "c.yaml") + '"' in path.read_text()
    assert uninstall("linux", stop=False) == [f"removed {path}"]
    assert not path.exists()


def test_install_from_the_command_line_without_starting(tmp_path: Path):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    if sys.platform == "darwin":
        pytest.skip("the Linux layout")
    result = run_cli("service", "install", "--no-start", env=env)
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "config" / "systemd" / "user" / "postselectd.service"
    assert unit.is_file() and f'"{sys.executable}"' in unit.read_text()
    result = run_cli("service", "uninstall", "--no-start", env=env)
    assert result.returncode == 0 and not unit.exists()


# --- restarts: a mistake only a person can fix is not retried every few seconds ----------


def test_systemd_does_not_restart_a_daemon_that_exits_with_a_config_error(tmp_path: Path):
    unit = _unit_lines(render_systemd_unit(sys.executable, tmp_path / "c.yaml", sandbox=False))
    assert unit["Restart"] == "on-failure"
    assert unit["RestartPreventExitStatus"] == "2"
    # ...and the daemon really exits 2 on a bad config, with the reason once.
    config = tmp_path / "c.yaml"
    config.write_text("watch: [{path: 3}]\nnot_a_setting: 1\n")
    result = run_cli("run", "--config", str(config), env={"INVOCATION_ID": "0123abcd"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("bad config") == 1
    assert "systemctl --user restart postselectd" in result.stderr


def test_a_daemon_that_fails_to_start_for_good_exits_2(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(f"watch: [{{path: '{tmp_path / 'renamed'}'}}]\nstate_dir: '{tmp_path}/s'\n")
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr


def test_start_timeout_covers_the_wait_for_the_workers():
    from postselectd.daemon import WORKER_START_TIMEOUT

    unit = _unit_lines(render_systemd_unit("/usr/bin/python3", sandbox=False))
    # systemd's default (90 s) would kill a daemon whose workers take 91-120 s to load.
    assert float(unit["TimeoutStartSec"]) >= WORKER_START_TIMEOUT + 30
    assert unit["Type"] == "notify"  # READY only once the workers are there


# --- the sandbox ---------------------------------------------------------------------

_NAMESPACE_SETTINGS = ("PrivateUsers", "ProtectSystem", "ReadWritePaths", "PrivateTmp")


def _exposure(unit: Path, tmp_path: Path) -> float:
    """systemd-analyze's overall exposure score of a user unit (0 safe .. 10 unsafe)."""
    tool = need_tool("systemd-analyze")
    runtime = tmp_path / "runtime"  # --user wants a runtime folder, even offline
    runtime.mkdir(mode=0o700, exist_ok=True)
    result = subprocess.run(
        [tool, "security", "--user", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    print(f"{unit.name}: exposure {found.group(1)}")
    return float(found.group(1))


def test_installed_unit_is_sandboxed_to_the_watched_and_state_folders(tmp_path: Path):
    if sys.platform == "darwin":
        pytest.skip("the Linux layout")
    photos, card = tmp_path / "My Photos", tmp_path / "card"
    photos.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"watch:\n  - path: '{photos}'\n  - path: '{card}'\n    removable: true\n"
        f"state_dir: '{tmp_path / 'state'}'\ndaemon: {{workers: 2}}\n"
    )
    env = {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    result = run_cli("service", "install", "--no-start", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "config" / "systemd" / "user" / "postselectd.service"
    text = path.read_text()
    unit = _unit_lines(text)
    assert unit["MemoryMax"] == f"{(2 * WORKER_ADDRESS_SPACE_BYTES + DAEMON_MEMORY_BYTES) >> 20}M"
    assert unit["RestrictAddressFamilies"] == "AF_UNIX"  # sd_notify; no network at all
    assert unit["NoNewPrivileges"] == "yes"
    if can_sandbox():
        assert f'ReadWritePaths=-"{photos}"' in text
        assert f'ReadWritePaths=-"{card}"' in text  # "-": a card not inserted is no error
        assert f'ReadWritePaths=-"{tmp_path / "state"}"' in text
        assert (tmp_path / "state").is_dir()  # made now: home is read-only in the sandbox
        # onnxruntime's optimized models: the service starts its workers as fast as score
        assert f'ReadWritePaths=-"{tmp_path / "cache" / "postselectd"}"' in text
        assert (tmp_path / "cache" / "postselectd").is_dir()
        assert unit["ProtectSystem"] == "strict" and unit["PrivateUsers"] == "yes"
        assert _exposure(path, tmp_path) <= 2.0  # 3568b71: 9.6
    else:
        assert not any(name in unit for name in _NAMESPACE_SETTINGS)
        assert _exposure(path, tmp_path) <= 6.5  # 3568b71: 9.6


def test_sandboxed_and_plain_units_both_pass_systemd_analyze(tmp_path: Path):
    tool = need_tool("systemd-analyze")
    for sandbox, most in ((True, 2.0), (False, 6.5)):
        unit = tmp_path / "postselectd.service"
        text = render_systemd_unit(sys.executable, tmp_path / "c.yaml", sandbox=sandbox)
        unit.write_text(text)
        result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
        assert result.returncode == 0 and str(unit) not in result.stderr, result.stderr
        assert _exposure(unit, tmp_path) <= most
        assert any(name in _unit_lines(text) for name in _NAMESPACE_SETTINGS) == sandbox


# --- the launchd agent, as far as Linux can check it ----------------------------------
# launchd never runs here. What is checked is the file `service install` writes on macOS
# (for a home in tmp_path): against launchd.plist(5) and parsed as `plutil -lint` parses
# it; its command line, run the way launchd runs a job; and what each way the daemon can
# end means under the agent's KeepAlive.

# launchd.plist(5): the keys this agent may use, with their types.
_LAUNCHD_KEYS = {
    "Label": str,
    "Disabled": bool,
    "Program": str,
    "ProgramArguments": list,
    "EnvironmentVariables": dict,
    "WorkingDirectory": str,
    "RunAtLoad": bool,
    "KeepAlive": (bool, dict),
    "ThrottleInterval": int,
    "ExitTimeOut": int,
    "ProcessType": str,
    "LowPriorityIO": bool,
    "LowPriorityBackgroundIO": bool,
    "Nice": int,
    "StandardOutPath": str,
    "StandardErrorPath": str,
    "SoftResourceLimits": dict,
    "HardResourceLimits": dict,
}
_KEEPALIVE_KEYS = {"SuccessfulExit", "Crashed", "NetworkState", "PathState", "OtherJobEnabled"}
# KeepAlive/Crashed: "a signal which is typically associated with a crash (SIGILL, SIGSEGV, etc.)"
_CRASH_SIGNALS = {
    signal.SIGILL, signal.SIGTRAP, signal.SIGABRT, signal.SIGFPE, signal.SIGBUS, signal.SIGSEGV,
    signal.SIGSYS,
}  # fmt: skip


def _assert_launchd_form(text: str) -> dict:
    """The plist in ``text``, checked against launchd.plist(5)'s keys and types and for
    values that make sense for this daemon."""
    # What `plutil -lint` checks: well-formed XML, a plist DOCTYPE, one top-level dict.
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist')
    plist = plistlib.loads(text.encode(), fmt=plistlib.FMT_XML)
    assert set(plist) <= set(_LAUNCHD_KEYS), set(plist) - set(_LAUNCHD_KEYS)
    for key, value in plist.items():
        assert isinstance(value, _LAUNCHD_KEYS[key]), key
        assert not (isinstance(value, bool) and _LAUNCHD_KEYS[key] is int), key
    if isinstance(plist["KeepAlive"], dict):
        assert set(plist["KeepAlive"]) <= _KEEPALIVE_KEYS
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProcessType"] in ("Background", "Standard", "Adaptive", "Interactive")
    # Background throttles the rating of a card dump for hours; Adaptive is Background
    # for a job that has no XPC connections (no MachServices), as postselectd has none.
    assert plist["ProcessType"] != "Background"
    assert plist["ProcessType"] != "Adaptive" or "MachServices" in plist
    # launchd's default is 10 s; a crash loop at that rate fills the log for nothing.
    assert 10 <= plist["ThrottleInterval"] <= 60
    assert plist["ExitTimeOut"] >= 10  # time for the daemon to finish its files
    assert all(isinstance(a, str) for a in plist["ProgramArguments"])
    assert all(isinstance(v, str) for v in plist["EnvironmentVariables"].values())
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).is_absolute()
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    # The whole file survives a binary round trip, as launchd stores it.
    assert plistlib.loads(plistlib.dumps(plist, fmt=plistlib.FMT_BINARY)) == plist
    return plist


def _launchd_restarts(keep_alive: bool | dict, returncode: int) -> bool:
    """Whether launchd starts the job again after it ended with ``returncode`` (as
    subprocess gives it: -N for signal N), by launchd.plist(5): KeepAlive true restarts it
    always; SuccessfulExit true after exit status 0, false after anything else (a non-zero
    status or a signal); Crashed true after a crash signal, false after anything else;
    several conditions are ORed."""
    if isinstance(keep_alive, bool):
        return keep_alive
    assert set(keep_alive) <= {"SuccessfulExit", "Crashed"}, f"not modelled: {keep_alive}"
    clean = returncode == 0
    crashed = returncode < 0 and -returncode in _CRASH_SIGNALS
    return any(
        (clean if key == "SuccessfulExit" else crashed) == wanted
        for key, wanted in keep_alive.items()
    )


def _install_agent(home: Path, config: Path) -> tuple[Path, dict]:
    """`service install` for macOS, not started, into ``home`` (HOME is set to it)."""
    done = install("macos", config=config, start=False)
    path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    assert done == [f"wrote {path}"] and path == installed_path("macos")
    return path, _assert_launchd_form(path.read_text())


def _run_as_launchd(plist: dict) -> subprocess.Popen:
    """Start the job as launchd does: ProgramArguments from / (no WorkingDirectory),
    with launchd's few environment variables and the plist's, stdin from /dev/null,
    stdout and stderr appended to their files."""
    env = {
        "HOME": os.environ["HOME"],
        "USER": getpass.getuser(),
        "LOGNAME": getpass.getuser(),
        "SHELL": "/bin/zsh",
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "XPC_SERVICE_NAME": plist["Label"],
        **plist.get("EnvironmentVariables", {}),
    }
    with (
        open(plist["StandardOutPath"], "ab") as stdout,
        open(plist["StandardErrorPath"], "ab") as stderr,
    ):
        return subprocess.Popen(
            plist["ProgramArguments"],
            cwd=plist.get("WorkingDirectory", "/"),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )


@pytest.fixture
def mac_home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_launchd_plist_uses_only_documented_keys_with_their_types():
    # Paths as on a Mac, with characters XML must escape.
    text = render_launchd_plist(
        "/Users/me/.venv/bin/python", Path("/Users/me/a & <b>.yaml"), Path("/Users/me/l/p.log")
    )
    plist = _assert_launchd_form(text)
    assert plist["ProgramArguments"][5] == "/Users/me/a & <b>.yaml"
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == "/Users/me/l/p.log"


def test_the_installed_launchd_agent_points_at_what_exists(tmp_path, mac_home, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("{}\n")
    path, plist = _install_agent(mac_home, Path("c.yaml"))
    assert path.name == f"{plist['Label']}.plist"  # launchctl and the README name it so
    assert list(path.parent.iterdir()) == [path]  # no temporary file left beside it
    program = Path(plist["ProgramArguments"][0])
    assert program.is_file() and os.access(program, os.X_OK), program
    # launchd starts the job in /: a relative --config would name another file.
    assert plist["ProgramArguments"][1:] == [
        "-m",
        "postselectd",
        "run",
        "--config",
        str(tmp_path / "c.yaml"),
        "--service-manager",
        "launchd",
    ]
    # launchd opens the log file itself and makes no folder for it: install does.
    log = Path(plist["StandardErrorPath"])
    assert plist["StandardOutPath"] == str(log)
    assert log.parent == mac_home / "Library" / "Logs" / "postselectd" and log.parent.is_dir()
    assert uninstall("macos", stop=False) == [f"removed {path}"]
    assert not path.exists()


def test_launchd_agent_is_not_restarted_after_a_mistake_only_a_person_can_fix(tmp_path, mac_home):
    config = tmp_path / "c.yaml"
    _, plist = _install_agent(mac_home, config)
    log = Path(plist["StandardErrorPath"])
    mistakes = [
        ("workers: many\n", "bad config"),
        (f"watch: [{{path: '{tmp_path / 'gone'}'}}]\nstate_dir: '{tmp_path / 's'}'\n", "not exist"),
    ]
    for text, reason in mistakes:
        config.write_text(text)
        before = log.stat().st_size if log.exists() else 0
        returncode = _run_as_launchd(plist).wait(timeout=120)
        said = log.read_text()[before:]
        assert not _launchd_restarts(plist["KeepAlive"], returncode), (returncode, said)
        assert said.count(reason) == 1, said  # the reason, once, in the agent's log
        assert f"launchctl kickstart -k gui/{os.getuid()}/{LAUNCHD_LABEL}" in said


def test_launchd_agent_restarts_a_crash_and_stops_within_its_exit_timeout(tmp_path, mac_home):
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"watch: [{{path: '{tmp_path / 'in'}'}}]\nstate_dir: '{tmp_path / 's'}'\n"
        "daemon: {workers: 1}\n"
    )
    _, plist = _install_agent(mac_home, config)
    keep_alive = plist["KeepAlive"]
    # A crash, the kernel's OOM kill, workers that could not start (exit 1): restarted,
    # at most once every ThrottleInterval seconds.
    for returncode in (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGKILL, 1):
        assert _launchd_restarts(keep_alive, returncode), returncode
    # A stop (bootout, logout) is SIGTERM, then SIGKILL after ExitTimeOut seconds: the
    # daemon must be done by then, and its clean exit is not restarted.
    log = Path(plist["StandardErrorPath"])
    daemon = _run_as_launchd(plist)
    try:
        deadline = time.monotonic() + 120
        while " started (pid " not in (log.read_text() if log.exists() else ""):
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no start-up line in the agent's log"
            time.sleep(0.1)
        daemon.send_signal(signal.SIGTERM)
        returncode = daemon.wait(timeout=plist["ExitTimeOut"])
    finally:
        daemon.kill()
        daemon.wait()
    assert returncode == 0, log.read_text()
    assert not _launchd_restarts(keep_alive, returncode)


def _fake_systemd_run(folder: Path, refuse: str | None, no_bus: bool = False) -> None:
    """A systemd-run whose user manager refuses units with ``refuse`` in their settings
    (226/NAMESPACE, as in a container or where AppArmor restricts user namespaces)."""
    folder.mkdir(exist_ok=True)
    script = folder / "systemd-run"
    if no_bus:
        body = 'echo "Failed to connect to bus: No medium found" >&2; exit 1'
    else:
        body = f'case "$*" in *{refuse}*) exit 226;; esac; exit 0'
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def test_only_the_sandbox_settings_the_user_manager_applies_are_written(tmp_path, monkeypatch):
    from postselectd.config import Config
    from postselectd.service import accepted_settings, namespace_settings

    wanted = namespace_settings(Config(), [Path("/opt/venv/bin/python")])
    assert "PrivateTmp=yes" in wanted and wanted[0] == "PrivateUsers=yes"
    fake = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    _fake_systemd_run(fake, refuse="ProtectKernelTunables")
    kept = accepted_settings(wanted, sys.executable)
    assert kept == [line for line in wanted if line != "ProtectKernelTunables=yes"]
    _fake_systemd_run(fake, refuse="PrivateUsers")  # no user namespaces at all
    assert accepted_settings(wanted, sys.executable) == []
    _fake_systemd_run(fake, refuse=None, no_bus=True)  # no user manager to ask
    assert accepted_settings(wanted, sys.executable) is None

    # install writes what was accepted, and nothing that needs a user namespace if none.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    _fake_systemd_run(fake, refuse="PrivateUsers")
    install("linux", sys.executable, tmp_path / "c.yaml", start=False)
    unit = _unit_lines(installed_path("linux").read_text())
    assert not any(name in unit for name in _NAMESPACE_SETTINGS)
    assert unit["NoNewPrivileges"] == "yes" and unit["SystemCallFilter"]


def test_private_tmp_only_when_nothing_the_daemon_needs_is_under_tmp():
    from postselectd.config import Config, WatchFolder
    from postselectd.service import namespace_settings

    home = Config(watch=[WatchFolder(path=Path("/home/me/Photos"))], state_dir=Path("/home/me/s"))
    assert "PrivateTmp=yes" in namespace_settings(home, [Path("/usr/bin/python3")])
    # A private /tmp would hide these from the daemon: the unit would not even start.
    assert "PrivateTmp=yes" not in namespace_settings(home, [Path("/tmp/venv/bin/python")])
    in_tmp = Config(watch=[WatchFolder(path=Path("/var/tmp/shoot"))], state_dir=Path("/home/s"))
    assert "PrivateTmp=yes" not in namespace_settings(in_tmp, [Path("/usr/bin/python3")])


def test_a_worker_that_dies_while_starting_exits_1_so_the_service_is_retried(tmp_path: Path):
    # Not a mistake to fix (a worker killed by the OOM killer while loading the models):
    # exit status 1, which systemd and launchd restart, where 2 would stop for good.
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"watch: [{{path: '{tmp_path / 'in'}'}}]\nstate_dir: '{tmp_path / 's'}'\n")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "postselectd", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        worker = None
        for _ in range(3000):  # its first worker, while it loads the models
            children = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()
            for child in children:
                try:  # a child can end between the listing and this read (a helper)
                    cmdline = Path(f"/proc/{child}/cmdline").read_text(errors="replace")
                except OSError:
                    continue
                if "spawn_main" in cmdline:
                    worker = int(child)
            if worker or daemon.poll() is not None:
                break
            time.sleep(0.01)
        assert worker, "no worker process appeared"
        os.kill(worker, signal.SIGKILL)
        _, stderr = daemon.communicate(timeout=60)
    finally:
        daemon.kill()
    if "started (pid" in stderr:
        pytest.skip("the worker was ready before it could be killed")
    assert daemon.returncode == 1, stderr
    assert "a worker process died while starting" in stderr


def test_doctor_says_when_a_new_watch_folder_is_outside_the_installed_sandbox(
    tmp_path: Path, monkeypatch
):
    if sys.platform == "darwin":
        pytest.skip("the Linux layout")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    first, added = tmp_path / "Photos", tmp_path / "Phone"
    first.mkdir()
    added.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"watch: [{{path: '{first}'}}]\nstate_dir: '{tmp_path / 's'}'\n")
    from postselectd.config import load_config

    settings, _ = load_config(config)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    install("linux", sys.executable, config, settings, start=False, sandbox=True)
    result = run_cli("doctor", "--config", str(config), env=env)
    assert "service sandbox" not in result.stdout, result.stdout
    config.write_text(
        config.read_text().replace(
            f"[{{path: '{first}'}}]", f"[{{path: '{first}'}}, {{path: '{added}'}}]"
        )
    )
    result = run_cli("doctor", "--config", str(config), env=env)
    line = next(x for x in result.stdout.splitlines() if "service sandbox" in x)
    assert line.startswith("FAIL") and str(added) in line and str(first) not in line
    assert "postselectd service install" in line


@pytest.mark.parametrize("platform", ["linux", "macos"])
def test_the_installed_command_line_is_read_back_as_written(tmp_path: Path, monkeypatch, platform):
    # What `doctor` reads to check the folders the service's daemon watches.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    config = tmp_path / "my photos" / '100% $HOME \\ "quoted".yaml'
    path = installed_path(platform)
    path.parent.mkdir(parents=True)
    path.write_text(render(platform, "/opt/py thon/bin/python3", config, sandbox=False))
    manager = "launchd" if platform == "macos" else None
    assert installed_command(platform) == command_line("/opt/py thon/bin/python3", config, manager)


# --- the daemon inside the unit's seccomp restrictions --------------------------------
# No user manager runs here (nor on CI) to start the unit itself; what its
# RestrictAddressFamilies=AF_UNIX does to a process is a seccomp filter (socket() with any
# other family fails EAFNOSUPPORT) under no_new_privs, inherited by every child. The test
# installs that same filter and runs the real daemon in it.

_SECCOMP_ARCH = {  # machine: (AUDIT_ARCH_*, __NR_socket)
    "x86_64": (0xC000003E, 41),
    "aarch64": (0xC00000B7, 198),
}
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000


def _only_local_sockets() -> None:
    """In the child before exec: socket() of any family but AF_UNIX fails EAFNOSUPPORT."""
    import ctypes
    import errno

    arch, socket_nr = _SECCOMP_ARCH[os.uname().machine]

    class Instruction(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_ushort),
            ("jt", ctypes.c_ubyte),
            ("jf", ctypes.c_ubyte),
            ("k", ctypes.c_uint),
        ]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    load, equal, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    code = [
        (load, 0, 0, 4),  # seccomp_data.arch
        (equal, 0, 5, arch),
        (load, 0, 0, 0),  # seccomp_data.nr
        (equal, 0, 3, socket_nr),
        (load, 0, 0, 16),  # seccomp_data.args[0], its low 32 bits: the family
        (equal, 1, 0, socket.AF_UNIX),
        (ret, 0, 0, _SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT),
        (ret, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    instructions = (Instruction * len(code))(*code)
    program = Program(len(code), instructions)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def _in_the_filter(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=_only_local_sockets
    )


def test_the_daemon_rates_and_notifies_systemd_with_local_sockets_only(tmp_path: Path):
    if not sys.platform.startswith("linux") or os.uname().machine not in _SECCOMP_ARCH:
        pytest.skip("a seccomp filter for Linux on x86_64 or aarch64")
    nef = shared_path("samples", "nef", "DSC_0102.NEF")
    # The filter does what the unit's setting does: no network socket, local ones work.
    probe = _in_the_filter(
        "import socket\n"
        "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()\n"
        "try:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "except OSError as e:\n    print(e.errno)\n"
    )
    assert probe.returncode == 0 and probe.stdout.strip() == "97", probe  # EAFNOSUPPORT

    watch, state = tmp_path / "shoot", tmp_path / "state"
    watch.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"watch: [{{path: '{watch}'}}]\nstate_dir: '{state}'\n"
        "daemon: {workers: 1, settle_seconds: 0.3}\n"
    )
    shutil.copyfile(nef, watch / "DSC_0102.NEF")
    notify = tmp_path / "notify.sock"  # a path, as the user manager's NOTIFY_SOCKET is
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(1.0)
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=str(notify), HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "run", "--config", str(config), "--catch-up"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            preexec_fn=_only_local_sockets,
        )
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and daemon.poll() is None:
            try:
                messages += listener.recv(4096).decode().split("\n")
            except TimeoutError:
                pass
            if "READY=1" in messages and (watch / "DSC_0102.xmp").exists():
                break
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    finally:
        daemon.kill()
        listener.close()
    text = log.read_text()
    assert code == 0, text
    assert "READY=1" in messages, (messages, text)
    assert "DSC_0102.NEF: " in text and (watch / "DSC_0102.xmp").exists(), text
    assert "Address family not supported" not in text and "EAFNOSUPPORT" not in text, text
