"""Service files: the systemd user unit and the launchd agent, rendered and installed.

The templates live in ``service/`` (in a wheel: ``postselectd/_service``); this module
fills in the interpreter and config paths, writes them to the user's service folder and
asks the service manager to start them. ``--print`` only renders.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from postselectd.config import Config

UNIT_NAME = "postselectd.service"
LAUNCHD_LABEL = "org.postselectd.daemon"
PLATFORMS = ("linux", "macos")


class ServiceError(Exception):
    """Installing or removing the service failed; str() says what to do."""


def current_platform() -> str:
    return "macos" if sys.platform == "darwin" else "linux"


def templates_dir() -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package / "_service", package.parent / "service"):
        if (candidate / UNIT_NAME).is_file():
            return candidate
    raise ServiceError(f"service templates not found in {package / '_service'} (reinstall)")


def command_line(
    python: str | None = None, config: Path | None = None, manager: str | None = None
) -> list[str]:
    args = [python or sys.executable, "-m", "postselectd", "run"]
    if config is not None:
        args += ["--config", str(Path(config).expanduser().resolve())]
    if manager is not None:
        args += ["--service-manager", manager]
    return args


def _systemd_quote(arg: str) -> str:
    """One ExecStart word: quoted, with systemd's specifier (%) and variable ($) escaped."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


# Headroom over the workers' own limits for the daemon process and the page cache.
DAEMON_MEMORY_BYTES = 1024 * 1024 * 1024


def writable_folders(settings: Config) -> list[Path]:
    """What the daemon writes to: sidecars beside the photos, its journal in the state
    folder, onnxruntime's optimized models in the cache folder (made again at will)."""
    from postselectd.config import default_inbox, user_cache_dir

    folders = [w.path for w in settings.watch] or [default_inbox()]
    folders.append(settings.resolved_state_dir())
    folders.append(user_cache_dir())
    seen: list[Path] = []
    for folder in folders:
        folder = Path(folder).expanduser().absolute()
        if folder not in seen:
            seen.append(folder)
    return seen


def memory_max(settings: Config) -> int:
    from postselectd.pipeline import default_workers
    from postselectd.workers import WORKER_ADDRESS_SPACE_BYTES

    setting = settings.daemon.workers
    workers = default_workers() if setting == "auto" else int(setting)
    return workers * WORKER_ADDRESS_SPACE_BYTES + DAEMON_MEMORY_BYTES


_TEMP_FOLDERS = (Path("/tmp"), Path("/var/tmp"))


def namespace_settings(settings: Config, seen: Iterable[Path] = ()) -> list[str]:
    """The unit's mount-namespace sandbox: everything read-only but the folders it writes
    to. ``seen``: further paths the daemon must see (the interpreter, the config file):
    under /tmp they rule out PrivateTmp, which would hide them."""
    writable = writable_folders(settings)
    in_temp = any(
        folder in path.parents or folder == path
        for path in [*writable, *(Path(p).absolute() for p in seen)]
        for folder in _TEMP_FOLDERS
    )
    return [
        "PrivateUsers=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        # "-": a folder that is not there (a card not inserted) is no reason not to start.
        *(f"ReadWritePaths=-{_systemd_quote(str(p))}" for p in writable),
        *([] if in_temp else ["PrivateTmp=yes"]),
        "PrivateDevices=yes",
        "PrivateNetwork=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "PrivateMounts=yes",
        # It holds no capability outside its namespace; this drops those inside it too.
        "CapabilityBoundingSet=",
    ]


def _starts_with(settings: list[str], python: str) -> bool | None:
    """Whether the user's service manager starts the interpreter with these settings
    (systemd-run: a unit of a moment); None where it cannot be asked."""
    command = ["systemd-run", "--user", "--wait", "--quiet", "--collect"]
    command += [f"--property={line}" for line in settings]
    try:
        done = _run([*command, "--", python, "-c", ""], timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 and "Failed to connect to bus" in done.stderr:
        return None
    return done.returncode == 0


def accepted_settings(settings: list[str], python: str) -> list[str] | None:
    """Of the namespace ``settings``, those this system's user manager can apply: one
    it cannot apply (a container's /proc/sys, AppArmor's user-namespace rule) makes the
    whole unit fail to start (226/NAMESPACE). None: no user manager to ask."""
    works = _starts_with(settings, python)
    if works is None or works:
        return settings if works else None
    base = settings[:1]  # PrivateUsers: what the others need in a user unit
    if not _starts_with(base, python):
        return []
    kept = list(base)
    for line in settings[1:]:
        if _starts_with([*kept, line], python):
            kept.append(line)
    return kept


_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000
_PR_CAPBSET_DROP, _CAP_SYS_ADMIN = 24, 21


def can_sandbox() -> bool:
    """Whether this user may create a user namespace, mount and drop capabilities in it,
    as systemd does for a user unit's sandbox. Tried in a child process, which exits at
    once. Where it may not (Ubuntu 23.10+ refuses it through AppArmor), a unit asking for
    it would fail to start at all."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports through its exit status
        ok = (
            libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) == 0
            and libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) == 0
            and libc.prctl(_PR_CAPBSET_DROP, _CAP_SYS_ADMIN, 0, 0, 0) == 0
        )
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def render_systemd_unit(
    python: str | None = None,
    config: Path | None = None,
    settings: Config | None = None,
    *,
    sandbox: bool | list[str] | None = None,
) -> str:
    """The user unit for ``settings`` (the config at ``config``). ``sandbox``: the
    namespace settings to write, or all of them (True), none (False), all where this
    user may create a user namespace (None)."""
    from postselectd.config import Config
    from postselectd.daemon import WORKER_START_TIMEOUT

    settings = settings or Config()
    python = python or sys.executable
    if sandbox is None:
        sandbox = can_sandbox()
    if sandbox is True:
        sandbox = namespace_settings(settings, [Path(python), *([config] if config else [])])
    text = (templates_dir() / UNIT_NAME).read_text()
    exec_start = " ".join(_systemd_quote(a) for a in command_line(python, config))
    if sandbox:
        namespaced = "\n".join(sandbox) + "\n"
    else:
        namespaced = "# (none: this system does not let this user create one)\n"
    return (
        text.replace("@EXEC_START@", exec_start)
        .replace("@WORKER_START_TIMEOUT@", f"{WORKER_START_TIMEOUT:.0f}")
        .replace("@TIMEOUT_START@", f"{WORKER_START_TIMEOUT + 60:.0f}")
        .replace("@MEMORY_MAX@", f"{memory_max(settings) // 2**20}M")
        .replace("@NAMESPACE_SANDBOX@\n", namespaced)
    )


def launchd_log_file() -> Path:
    return Path.home() / "Library" / "Logs" / "postselectd" / "postselectd.log"


def render_launchd_plist(
    python: str | None = None, config: Path | None = None, log_file: Path | None = None
) -> str:
    text = (templates_dir() / f"{LAUNCHD_LABEL}.plist").read_text()
    arguments = "\n".join(
        f"    <string>{escape(a)}</string>" for a in command_line(python, config, "launchd")
    )
    return text.replace("@PROGRAM_ARGUMENTS@", arguments).replace(
        "@LOG_FILE@", escape(str(log_file or launchd_log_file()))
    )


def render(
    platform: str,
    python: str | None = None,
    config: Path | None = None,
    settings: Config | None = None,
    *,
    sandbox: bool | list[str] | None = None,
) -> str:
    if platform == "linux":
        return render_systemd_unit(python, config, settings, sandbox=sandbox)
    if platform == "macos":
        return render_launchd_plist(python, config)
    raise ServiceError(f"unknown platform {platform!r}: one of {', '.join(PLATFORMS)}")


def installed_path(platform: str) -> Path:
    if platform == "macos":
        return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def installed_command(platform: str | None = None) -> list[str] | None:
    """The command line the installed service runs (the unit's ExecStart, the agent's
    ProgramArguments), or None where none is installed or it cannot be read."""
    platform = platform or current_platform()
    try:
        text = installed_path(platform).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if platform == "macos":
        try:
            arguments = plistlib.loads(text.encode()).get("ProgramArguments")
        except (plistlib.InvalidFileException, ValueError, AttributeError):
            return None
        return [str(a) for a in arguments] if isinstance(arguments, list) else None
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            try:
                words = shlex.split(line[len("ExecStart=") :])
            except ValueError:
                return None
            # _systemd_quote's escapes: shlex took the backslashes, these are systemd's own.
            return [w.replace("%%", "%").replace("$$", "$") for w in words]
    return None


def folders_the_unit_cannot_write(settings: Config, platform: str | None = None) -> list[Path]:
    """Folders the daemon writes to that the installed unit's sandbox keeps read-only
    (a watch folder added to the config after ``service install``)."""
    path = installed_path(platform or current_platform())
    try:
        text = path.read_text()
    except OSError:
        return []
    if "\nProtectSystem=strict" not in text:
        return []
    return [
        folder
        for folder in writable_folders(settings)
        if f"\nReadWritePaths=-{_systemd_quote(str(folder))}\n" not in text
    ]


@dataclass(frozen=True)
class ServiceState:
    installed: bool
    running: bool | None  # None: the service manager could not be asked
    detail: str


def _run(args: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def service_state(platform: str | None = None) -> ServiceState:
    platform = platform or current_platform()
    path = installed_path(platform)
    installed = path.is_file()
    try:
        if platform == "macos":
            if not shutil.which("launchctl"):
                return ServiceState(installed, None, "launchctl not found")
            done = _run(["launchctl", "print", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"])
            running = done.returncode == 0 and "state = running" in done.stdout
            return ServiceState(installed, running, "launchd")
        if not shutil.which("systemctl"):
            return ServiceState(installed, None, "systemctl not found")
        done = _run(["systemctl", "--user", "is-active", UNIT_NAME])
        state = (done.stdout.strip() or done.stderr.strip() or "unknown").splitlines()[0]
        if done.returncode != 0 and state not in ("inactive", "failed", "activating"):
            return ServiceState(installed, None, f"systemd user manager: {state}")
        return ServiceState(installed, state == "active", state)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ServiceState(installed, None, str(exc))


def install(
    platform: str,
    python: str | None = None,
    config: Path | None = None,
    settings: Config | None = None,
    *,
    start: bool = True,
    sandbox: bool | list[str] | None = None,
) -> list[str]:
    """Write the service file and (with ``start``) enable and start it. Returns what was
    done, one line each."""
    from postselectd.config import Config

    settings = settings or Config()
    if platform == "linux" and sandbox is None:
        # Ask the user's service manager which of the sandbox settings it can apply here.
        python = python or sys.executable
        wanted = namespace_settings(settings, [Path(python), *([config] if config else [])])
        sandbox = accepted_settings(wanted, python)
    text = render(platform, python, config, settings, sandbox=sandbox)
    path = installed_path(platform)
    done = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if "ReadWritePaths=" in text:
            # A sandboxed unit cannot create them later: home is read-only there.
            _make_writable_folders(settings)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        if platform == "macos":
            launchd_log_file().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror or exc}") from None
    done.append(f"wrote {path}")
    if not start:
        return done
    if platform == "macos":
        domain = f"gui/{os.getuid()}"
        _run(["launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"])  # an older copy, if any
        steps = [["launchctl", "bootstrap", domain, str(path)]]
    else:
        steps = [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", UNIT_NAME],
        ]
    for step in steps:
        _checked(step)
        done.append("ran " + " ".join(step))
    return done


def _make_writable_folders(settings: Config) -> None:
    from postselectd.config import default_inbox, user_cache_dir

    state_dir = settings.resolved_state_dir()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:  # a cache: a daemon without it only starts slower
        user_cache_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        pass
    if not settings.watch:
        default_inbox().mkdir(parents=True, exist_ok=True)


def uninstall(platform: str, *, stop: bool = True) -> list[str]:
    path = installed_path(platform)
    done = []
    if stop:
        if platform == "macos":
            step = ["launchctl", "bootout", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"]
        else:
            step = ["systemctl", "--user", "disable", "--now", UNIT_NAME]
        if path.exists():
            _checked(step, allow_failure=True)
            done.append("ran " + " ".join(step))
    if path.exists():
        try:
            path.unlink()
        except OSError as exc:
            raise ServiceError(f"cannot remove {path}: {exc.strerror or exc}") from None
        done.append(f"removed {path}")
        if platform == "linux" and stop:
            _checked(["systemctl", "--user", "daemon-reload"], allow_failure=True)
    else:
        done.append(f"{path} is not installed")
    return done


def _checked(step: list[str], allow_failure: bool = False) -> None:
    if not shutil.which(step[0]):
        if allow_failure:
            return
        raise ServiceError(f"{step[0]} not found: start the service by hand")
    try:
        result = _run(step, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{' '.join(step)}: {exc}") from None
    if result.returncode != 0 and not allow_failure:
        message = (result.stderr or result.stdout).strip()
        raise ServiceError(f"{' '.join(step)} failed: {message}")
