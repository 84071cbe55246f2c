"""The daemon as the service manager sees it: sd_notify (ready, stopping, watchdog pings,
the status line) and the lock that keeps one daemon per state folder."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from postselectd.daemon.shared import DaemonError, Part, Shared

log = logging.getLogger(__name__)

STATUS_MIN_INTERVAL = 2.0
LOCK_NAME = "daemon.lock"


class ServiceNotifier:
    """sd_notify(3) in a few lines: a datagram to $NOTIFY_SOCKET; silent without one."""

    def __init__(self, environ: dict | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or ""
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self.address = address or None
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2  # ping at half the limit
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", fields, exc)
            return False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class Manager(Part):
    """What the service manager is told, and the state folder's lock.

    ``working_on``: how many files the workers hold now (for the status line)."""

    def __init__(self, shared: Shared, environ: dict | None, working_on: Callable[[], int]):
        super().__init__(shared)
        self.notifier = ServiceNotifier(environ)
        self.working_on = working_on
        self._lock_file = None
        self._next_ping = 0.0  # monotonic
        self._last_status = ""
        self._last_status_at = 0.0  # monotonic

    # --- watchdog pings --------------------------------------------------------------

    def ping(self, now_m: float) -> None:
        """The watchdog ping, when one is due (``now_m``: monotonic)."""
        if self.notifier.watchdog_interval and now_m >= self._next_ping:
            self.notifier.notify("WATCHDOG=1")
            self._next_ping = now_m + self.notifier.watchdog_interval

    def sleep_limit(self, now_m: float) -> float:
        """How long the loop may sleep before the next ping is due."""
        if self.notifier.watchdog_interval:
            return max(0.05, self._next_ping - now_m)
        return float("inf")

    # --- the status line -------------------------------------------------------------

    def status_text(self) -> str:
        if self.shared.journal_full_since is not None:
            return f"waiting for space for the journal, working on {self.working_on()}"
        pending = self.journal.counts()["pending"] if self.journal else 0
        tally = self.shared.tally
        return (
            f"queue {pending}, working on {self.working_on()}, "
            f"rated today {tally.rated_today}, failed this run {tally.failed}"
        )

    def notify_status(self) -> None:
        if not self.notifier.enabled:
            return
        now = time.monotonic()
        if now - self._last_status_at < STATUS_MIN_INTERVAL:
            return
        text = self.status_text()
        if text != self._last_status:
            self.notifier.notify(f"STATUS={text}")
            self._last_status = text
            self._last_status_at = now

    # --- one daemon per state folder ----------------------------------------------

    def lock_state_dir(self, state_dir: Path) -> None:
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_file = open(state_dir / LOCK_NAME, "a+")
        except OSError as exc:
            reason = exc.strerror or exc
            raise DaemonError(f"cannot use state folder {state_dir}: {reason}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            other = self._lock_file.read().strip() or "?"
            self._lock_file.close()
            self._lock_file = None
            raise DaemonError(
                f"another postselectd (pid {other}) is already running on {state_dir}"
            ) from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()

    def unlock_state_dir(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def running_daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon holding this state folder's lock, or None."""
    path = Path(state_dir) / LOCK_NAME
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = f.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def local_midnight() -> float:
    t = time.localtime()
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))
