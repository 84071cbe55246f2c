"""The little state every part of the daemon reads: the config (a reload replaces it), the
journal (opened at start-up), and the flags a signal or a full disk set. Parts get it at
construction; none of them imports the lifecycle that composes them.

Two clocks: ``time.time()`` (wall) for what the journal stores and compares with file
times (due, quiet until, rated at); ``time.monotonic()`` for the daemon's own timers
(folder checks, retries of blocked folders, bursts' idle time, the status line)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from postselectd.config import Config
from postselectd.photos import shown_name
from postselectd.state import Journal


class DaemonError(Exception):
    """The daemon cannot start; str() is the reason for the user.

    ``retry``: it may start if tried again (its workers were slow or died while
    starting), so a service manager should restart it; otherwise only a person can fix
    it (a missing folder, unusable models) and restarting it every few seconds helps no one.
    """

    def __init__(self, message: str, *, retry: bool = False):
        super().__init__(message)
        self.retry = retry


@dataclass
class Tally:
    """What this run did, for the stop line and the status line."""

    # Files rated for the first time, and rated again (their bytes changed since their
    # last rating, in this run or an earlier one): the stop line counts them apart.
    rated: int = 0
    rerated: int = 0
    failed: int = 0
    rated_today: int = 0
    today: int = field(default_factory=lambda: time.localtime().tm_yday)

    def count_today(self) -> None:
        today = time.localtime().tm_yday
        if today != self.today:
            self.today = today
            self.rated_today = 0
        self.rated_today += 1


@dataclass
class Shared:
    config: Config
    journal: Journal | None = None
    should_exit: bool = False
    # Since when (monotonic) the journal cannot be written (its disk is full): nothing is
    # rated that could not be recorded, until there is space again.
    journal_full_since: float | None = None
    tally: Tally = field(default_factory=Tally)


class Part:
    """A part of the daemon: reads the shared state through ``self.config`` and
    ``self.journal``, and names photos in the log as the daemon does."""

    def __init__(self, shared: Shared):
        self.shared = shared

    @property
    def config(self) -> Config:
        return self.shared.config

    @config.setter
    def config(self, config: Config) -> None:
        self.shared.config = config

    @property
    def journal(self) -> Journal:
        return self.shared.journal

    @journal.setter
    def journal(self, journal: Journal | None) -> None:
        self.shared.journal = journal

    @property
    def should_exit(self) -> bool:
        return self.shared.should_exit

    def shown_name(self, path: Path) -> str:
        """How the log names this photo: from its watched folder on (``wedding/DSC_0101.NEF``)."""
        return shown_name(path, (folder.path for folder in self.config.watch))
