"""The learning loop's part in the daemon; learn.py does the rest."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

from postselectd import learn
from postselectd.daemon.shared import Part, Shared
from postselectd.state import Row

log = logging.getLogger(__name__)


class Learning(Part):
    """The learning loop's part in the daemon (learn.py does the rest): corrections noticed
    in the main thread, a retrain in its own process (learn.background_retrain, at nice
    19 and idle I/O), and its outcome heard on a later turn."""

    def __init__(self, shared: Shared, new_model: Callable[[], None]):
        super().__init__(shared)
        self.new_model = new_model  # the workers load the model the next photos need
        self.process = None
        self.last_activity = time.time()
        self._said_off = None
        self.model = learn.current_model(self.config) if self.config.model == "personal" else None

    def sidecar_written(self, sidecar: Path) -> None:
        try:
            written = sidecar.stat().st_mtime
        except OSError:
            return
        for row in learn.owners(self.journal, sidecar):
            rated_at = row.rated_at or row.updated_at
            if written > rated_at:  # not the sidecar the daemon wrote when it rated the photo
                self.look(row, since=rated_at)

    def look(self, row: Row, since: float | None = None) -> None:
        try:
            found = learn.look(self.journal, row, self.config, time.time(), since)
        except OSError as exc:
            log.debug("%s: sidecar not read for corrections (%s)", row.path.name, exc)
            return
        if found:
            self.last_activity = time.time()
            log.info(
                "%s: %s",
                self.shown_name(row.path),
                "your correction noted" if found == "new" else "your correction undone",
            )

    def tick(self) -> None:
        config = self.config
        if self.process is not None:
            if self.process.is_alive():
                return
            self.process.join()
            self.process = None
            outcome = learn.last_try(config)
            log.info("%s", learn.outcome_line(outcome))
            if outcome.get("outcome") == "swapped":
                self.model = learn.current_model(config)
                self.new_model()
        if config.model == "personal":
            model = learn.current_model(config)
            if model != self.model:  # trained, learnt, rolled back: for the next photos
                self.model = model
                self.new_model()
                log.info("personal model now in use for the next photos: %s", model)
        asked = learn.take_request(config)
        if asked is not None and asked["action"] == "rollback":
            try:
                retired, now = learn.rollback(config)
            except learn.LearnError as exc:
                log.error("rollback: %s", exc)
                return
            log.info(
                "rolled back: %s rates the next photos (%s kept in %s)",
                now.stem,
                retired.stem,
                retired.parent,
            )
            self.model = now
            self.new_model()
            return
        off = learn.why_off(config)
        if off != self._said_off:
            self._said_off = off
            log.info("learning from your corrections: %s", off or "on")
        if asked is not None:
            reason = "asked with `postselectd learn --now`"
        elif off:
            return
        else:
            reason = learn.due(config, self.journal, time.time(), self.last_activity)
        if reason:
            self.start(reason, shuffle_labels=bool(asked and asked.get("shuffle_labels")))

    def start(self, reason: str, shuffle_labels: bool = False) -> None:
        log.info("learning from your corrections in the background: %s", reason)
        self.process = multiprocessing.get_context("spawn").Process(
            target=learn.background_retrain,
            args=(self.config, reason, shuffle_labels),
            name="postselectd-learn",
            daemon=True,
        )
        self.process.start()

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()  # the next start learns again from the journal
            self.process.join(timeout=5)
