"""`postselectd run`: the background service (lifecycle.py reads top to bottom).

What other modules import from the daemon is named here, so they need not know which
part of it holds what.
"""

from postselectd.daemon.lifecycle import (
    WORKER_START_TIMEOUT,
    Daemon,
    DaemonError,
    ServiceNotifier,
    folder_trouble,
    running_daemon_pid,
)

__all__ = [
    "WORKER_START_TIMEOUT",
    "Daemon",
    "DaemonError",
    "ServiceNotifier",
    "folder_trouble",
    "running_daemon_pid",
]
