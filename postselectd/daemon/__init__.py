"""`postselectd run`: the background service (lifecycle.py reads top to bottom).

What other modules import from the daemon is named here, so they need not know which
part of it holds what.
"""

from postselectd.daemon.blocked import folder_trouble
from postselectd.daemon.lifecycle import WORKER_START_TIMEOUT, Daemon
from postselectd.daemon.manager import ServiceNotifier, running_daemon_pid
from postselectd.daemon.shared import DaemonError

__all__ = [
    "WORKER_START_TIMEOUT",
    "Daemon",
    "DaemonError",
    "ServiceNotifier",
    "folder_trouble",
    "running_daemon_pid",
]
