"""`postselectd doctor`: what the daemon needs, checked before it is needed.

Each check is (status, what, detail): OK, WARN or FAIL, and the detail says what to do. The
command line prints them and exits 1 when any FAILs; nothing here prints or exits.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from postselectd.analysis import Analyzer, ModelError
from postselectd.analysis.runtime import offered_providers
from postselectd.config import (
    Config,
    ConfigError,
    WatchFolder,
    default_inbox,
    load_config,
    user_config_file,
)
from postselectd.daemon import folder_trouble, running_daemon_pid
from postselectd.preview import decoders
from postselectd.selftest import FRAME_SIZE, run_self_test
from postselectd.service import (
    current_platform,
    folders_the_unit_cannot_write,
    installed_command,
    installed_path,
    service_state,
)
from postselectd.watcher import should_poll

OK, WARN, FAIL = "OK", "WARN", "FAIL"


def checks(
    config: Config | None,
    source: str,
    *,
    watch: Iterable[Path] = (),
    config_file: Path | None = None,
    bench: bool = False,
) -> list[tuple[str, str, str]]:
    """Every check, in the order printed. ``config`` is None when it could not be loaded
    (``source`` then says why); ``watch`` are extra folders as for `run --watch`,
    ``config_file`` the --config given, ``bench`` adds the 20-frame self-test."""
    results: list[tuple[str, str, str]] = []

    def check(status: str, what: str, detail: str) -> None:
        results.append((status, what, detail))

    if config is None:
        check(FAIL, "config", source)
        config = Config()
    else:
        check(OK, "config", f"valid ({source})")

    analyzer = None
    try:
        analyzer = Analyzer(config.analysis)
        check(OK, "models", f"load ({analyzer.model_version})")
    except ModelError as exc:
        check(FAIL, "models", str(exc))
    version, offered = offered_providers()
    setting = f"analysis.providers: {config.analysis.providers}"
    offer = f"onnxruntime {version} offers {', '.join(offered)}"
    if analyzer is not None:
        in_use = analyzer.providers_in_use
        wanted = analyzer.providers[0]
        if in_use[0] != wanted:
            check(WARN, "provider", f"{in_use[0]}: {wanted} did not start ({setting}; {offer})")
        else:
            check(OK, "provider", f"{in_use[0]} ({setting}; {offer})")
        if bench:
            result = run_self_test(analyzer)
            check(
                OK,
                "self-test",
                f"{result.images_per_second:.1f} images/s on {in_use[0]}, one process "
                f"({result.frames} generated {FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG frames, "
                f"{result.median_ms:.0f} ms a frame)",
            )

    decodes = decoders()
    missing = [name for name, library in decodes.items() if library is None]
    listed = ", ".join(f"{name} ({library})" for name, library in decodes.items() if library)
    if missing:
        check(
            WARN,
            "decoders",
            f"cannot decode {', '.join(missing)}: such photos fail (HEIC needs pillow-heif, "
            f"AVIF Pillow 11.3 or newer); decodes {listed}",
        )
    else:
        check(OK, "decoders", listed)

    found, service_settings = _watched_by_the_daemon(config, watch, config_file, check)
    watches = [folder for folder, _ in found]
    folders = 0
    for folder, origin in found:
        path = folder.path
        what = f"watch {path}"

        def say(status: str, detail: str, what: str = what, origin: str = origin) -> None:
            check(status, what, f"{detail} ({origin})" if origin else detail)

        if not path.exists():
            if path == default_inbox():
                say(OK, "the default inbox; created when the daemon starts")
            elif folder.removable:
                say(WARN, "not there (removable: watched once it appears)")
            else:
                say(
                    FAIL,
                    "does not exist, so the daemon will not start: create it, correct the "
                    "path, or set removable: true for a card or share mounted later",
                )
            continue
        if not path.is_dir():
            say(FAIL, "not a folder")
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            say(FAIL, "not readable by this user")
            continue
        poll, mode = should_poll(folder)
        count = _count_folders(path) if folder.recursive else 1
        if not poll:
            folders += count
        trouble = folder_trouble(path, "")
        if trouble == "read-only":
            say(
                FAIL,
                f"readable, but no sidecar can be written there (read-only, or not writable "
                f"for this user): its photos would wait unrated; {count} folder(s), {mode}",
            )
        elif trouble == "full":
            say(
                WARN,
                f"readable, but its disk is full: no sidecar fits; {count} folder(s), {mode}",
            )
        else:
            say(OK, f"readable, sidecars writable, {count} folder(s), {mode}")

    limit_file = Path("/proc/sys/fs/inotify/max_user_watches")
    if limit_file.exists():
        limit = int(limit_file.read_text().split()[0])
        detail = f"{folders} folder(s) to watch, limit {limit} (fs.inotify.max_user_watches)"
        if folders > limit:
            check(FAIL, "inotify watches", detail + ": raise it with sysctl")
        elif folders > limit * 0.8:
            check(WARN, "inotify watches", detail + ": close to the limit")
        else:
            check(OK, "inotify watches", detail)

    state_dir = config.resolved_state_dir()
    places = [("state folder", state_dir)] + [(f"disk of {w.path}", w.path) for w in watches]
    for what, place in places:
        probe = place
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError as exc:
            check(WARN, f"free space ({what})", str(exc))
            continue
        detail = f"{free / 2**30:.1f} GiB free at {probe}"
        check(WARN if free < 2**30 else OK, f"free space ({what})", detail)
    if state_dir.exists() and not os.access(state_dir, os.W_OK):
        check(FAIL, "state folder", f"{state_dir} is not writable")

    pid = running_daemon_pid(state_dir)
    platform = current_platform()
    service = service_state(platform)
    where = installed_path(platform)
    if service.installed:
        check(OK, "service", f"installed ({where})")
        sealed = folders_the_unit_cannot_write(service_settings or config)
        if sealed:
            check(
                FAIL,
                "service sandbox",
                f"the service may not write to {', '.join(map(str, sealed))}: "
                "run `postselectd service install` again",
            )
    else:
        check(WARN, "service", "not installed: run `postselectd service install`")
    if service.running or pid:
        how = f"pid {pid}" if pid else service.detail
        check(OK, "daemon", f"running ({how})")
    else:
        check(WARN, "daemon", f"not running ({service.detail})")

    return results


def _watched_by_the_daemon(
    config: Config, watch: list[Path], config_file: Path | None, check
) -> tuple[list[tuple[WatchFolder, str]], Config | None]:
    """The folders the daemon watches, each with where it comes from ("" for this config):
    this config's, the --watch ones given here, and those of the installed service's own
    command line, whose config may be another file and which may add --watch folders. The
    default inbox where that is none, as for the daemon. Also the service's config, where
    it could be read."""
    found = [(folder, "") for folder in config.watch]
    found += [(WatchFolder(path=p.expanduser().absolute()), "--watch") for p in watch]
    service_settings = None
    command = installed_command()
    if command is not None:
        named, extra = _run_options(command)
        theirs = named or user_config_file()
        if _same_file(theirs, config_file or user_config_file()):
            service_settings = config
        else:
            try:
                service_settings, _ = load_config(named)
            except ConfigError as exc:
                check(FAIL, "service config", f"{exc}: the service's daemon does not start")
            else:
                origin = f"the service's config {theirs}"
                found += [(folder, origin) for folder in service_settings.watch]
        found += [(WatchFolder(path=p), "the service's --watch") for p in extra]
    if not found:
        found = [(WatchFolder(path=default_inbox()), "")]
    unique: dict[Path, tuple[WatchFolder, str]] = {}
    for folder, origin in found:
        unique.setdefault(folder.path, (folder, origin))
    return list(unique.values()), service_settings


def _run_options(command: list[str]) -> tuple[Path | None, list[Path]]:
    """--config and the --watch folders of a `postselectd run` command line (a service's).
    A relative folder is taken from the home folder, where a user service starts."""
    words = iter(command[command.index("run") + 1 :] if "run" in command else [])
    config: Path | None = None
    watches: list[Path] = []
    for word in words:
        name, eq, value = word.partition("=")
        if name not in ("--config", "--watch"):
            continue
        value = value if eq else next(words, "")
        if value:
            path = Path.home() / Path(value).expanduser()
            if name == "--config":
                config = path
            else:
                watches.append(path)
    return config, watches


def _same_file(one: Path, other: Path) -> bool:
    return one.expanduser().resolve() == other.expanduser().resolve()


def _count_folders(root: Path, cap: int = 1_000_000) -> int:
    count = 0
    for _folder, dirs, _files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        count += 1
        if count >= cap:
            break
    return count
