"""Service files: a unit systemd accepts, a plist launchd accepts, install and uninstall."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from postselectd.service import (
    LAUNCHD_LABEL,
    install,
    installed_path,
    render_launchd_plist,
    render_systemd_unit,
    uninstall,
)


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
    ]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"]
    assert plist["ProcessType"] == "Adaptive"
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
