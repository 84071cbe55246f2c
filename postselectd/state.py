"""The journal: every file the daemon has seen and what was done with it, in sqlite.

The only module that opens sqlite. The journal is also the daemon's queue: a file is
written here as ``pending`` the moment an event names it, so a restart (even after
SIGKILL) neither loses a queued file nor rates one twice. One writer (the daemon's main
thread); ``postselectd status`` reads it concurrently (WAL).

A file goes ``pending`` -> ``rated`` | ``failed`` (with a reason, after bounded retries)
| ``skipped`` (gone before it was rated, or a JPEG whose raw is rated instead). While
pending, ``size``/``mtime_ns`` are the last look at the file and ``due_at`` is when to look
again: it is complete when that look finds the same size and mtime (the settle rule).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from postselectd.photos import Signature

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite3"
# 2: cached analyses are JSON text (1 kept pickles, which are dropped on upgrade).
SCHEMA_VERSION = 2
# How many analyses are kept for re-copied / renamed files (~8.5 KB of JSON each).
ANALYSIS_CACHE_ENTRIES = 20_000

PENDING, RATED, FAILED, SKIPPED = "pending", "rated", "failed", "skipped"
GONE = "gone before it was rated"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path            TEXT PRIMARY KEY,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'rated', 'failed', 'skipped')),
    size            INTEGER,
    mtime_ns        INTEGER,
    fingerprint     TEXT,
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    due_at          REAL,
    claimed         INTEGER NOT NULL DEFAULT 0,
    sidecar_started REAL,
    rated_count     INTEGER NOT NULL DEFAULT 0,
    stars           INTEGER,
    label           TEXT,
    result          TEXT,
    elapsed_ms      REAL,
    first_seen      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    rated_at        REAL
);
CREATE INDEX IF NOT EXISTS files_due ON files (status, claimed, due_at);
CREATE INDEX IF NOT EXISTS files_rated_at ON files (rated_at);
CREATE TABLE IF NOT EXISTS watches (
    path  TEXT PRIMARY KEY,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS analyses (
    fingerprint TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    scored      BLOB NOT NULL,
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS corrections (
    path       TEXT PRIMARY KEY,
    verdict    TEXT NOT NULL,
    why        TEXT NOT NULL,
    noticed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class JournalError(Exception):
    """The journal cannot be opened or used; str() says which file and why."""


class JournalFull(JournalError):
    """The journal cannot be written now: its disk is full, over quota or failing. Nothing
    was changed (sqlite rolled the statement back); writes work again once there is space."""


# sqlite's primary result codes for "the write did not make it to disk": SQLITE_FULL
# (ENOSPC) and SQLITE_IOERR (EDQUOT and other write errors arrive as IOERR_WRITE).
_CANNOT_WRITE = {13, 10}
_CANNOT_WRITE_WORDS = ("database or disk is full", "disk i/o error")


class _Connection:
    """The sqlite connection, with a full or failing disk turned into JournalFull."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._translated(exc) from exc

    def executescript(self, script: str) -> None:
        try:
            self._db.executescript(script)
        except sqlite3.Error as exc:
            raise self._translated(exc) from exc

    def close(self) -> None:
        self._db.close()

    def _translated(self, exc: sqlite3.Error) -> Exception:
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        cannot_write = (code is not None and code & 0xFF in _CANNOT_WRITE) or (
            code is None and any(w in str(exc).lower() for w in _CANNOT_WRITE_WORDS)
        )
        if not cannot_write:
            return exc
        if self._db.in_transaction:
            try:
                self._db.rollback()
            except sqlite3.Error:
                pass
        return JournalFull(f"{self._path}: the journal cannot be written ({exc})")


@dataclass(frozen=True)
class Row:
    path: Path
    status: str
    size: int | None
    mtime_ns: int | None
    fingerprint: str | None
    reason: str | None
    attempts: int
    due_at: float | None
    claimed: bool
    sidecar_started: float | None
    rated_count: int
    stars: int | None
    label: str | None
    elapsed_ms: float | None
    updated_at: float
    rated_at: float | None

    @property
    def signature(self) -> Signature | None:
        if self.size is None or self.mtime_ns is None:
            return None
        return Signature(self.size, self.mtime_ns)


_ROW_COLUMNS = (
    "path, status, size, mtime_ns, fingerprint, reason, attempts, due_at, claimed, "
    "sidecar_started, rated_count, stars, label, elapsed_ms, updated_at, rated_at"
)


def _row(values: tuple) -> Row:
    return Row(
        _path(values[0]),
        values[1],
        values[2],
        values[3],
        values[4],
        values[5],
        values[6],
        values[7],
        bool(values[8]),
        values[9],
        values[10],
        values[11],
        values[12],
        values[13],
        values[14],
        values[15],
    )


def _key(path: Path) -> str | bytes:
    """A path as the journal keeps it: text, or its bytes when the name is not valid UTF-8
    (b'DSC_\xff01.NEF' on Linux, a lone surrogate in Python), which sqlite text cannot
    hold; such a row is a BLOB, read back to the same Path."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def _below(folder: Path) -> str | bytes:
    """The key prefix of the paths in ``folder``: its key and a separator."""
    key = _key(folder)
    sep = b"/" if isinstance(key, bytes) else "/"
    return key.rstrip(sep) + sep


def _path(value: str | bytes) -> Path:
    return Path(os.fsdecode(value)) if isinstance(value, bytes) else Path(value)


def _gone(path: Path) -> bool:
    """Whether the name is really no longer there. A photo that cannot be looked at now
    (EIO on a failing card, ESTALE on NFS) is not gone: os.path.lexists would say it is,
    and its rating would be forgotten (and done again once the card reads)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        pass  # there, but not readable now
    return False


def _text(text: str | None) -> str | None:
    """A reason or result to show: a name that is not valid UTF-8 as its escape (\udcff)."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def journal_path(state_dir: Path) -> Path:
    return Path(state_dir) / JOURNAL_NAME


class Journal:
    """The daemon's only writer connection; every method commits before it returns."""

    def __init__(self, state_dir: Path, *, readonly: bool = False):
        self.path = journal_path(state_dir)
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.exists():
                    raise JournalError(f"{self.path}: no journal yet (the daemon has not run)")
                uri = f"file:{self.path}?mode=ro"
                self._db = _Connection(
                    sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10), self.path
                )
            else:
                Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
                self._db = _Connection(
                    sqlite3.connect(self.path, isolation_level=None, timeout=10), self.path
                )
                self._db.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: a killed process loses nothing committed; only a power cut
                # can lose the last commits (then a file is rated again, never torn).
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )
                self._upgrade()
        except (sqlite3.Error, JournalFull) as exc:
            raise JournalError(f"{self.path}: cannot open the journal ({exc})") from None
        self._inserted_analyses = 0

    def _upgrade(self) -> None:
        (found,) = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if int(found) < 2:
            # Schema 1 cached analyses as pickles, which can run code when loaded: they are
            # dropped unread (a re-copied file is analysed again, nothing else is lost).
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM analyses")
            self._db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
            self._db.execute("COMMIT")
            log.info("%s: cached analyses of the older format dropped", self.path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- watches ---------------------------------------------------------------------

    def has_watched(self, folder: Path) -> bool:
        """Whether a watch of this folder began before (``watch_since`` recorded one)."""
        found = self._db.execute("SELECT 1 FROM watches WHERE path = ?", (_key(folder),))
        return found.fetchone() is not None

    def watch_since(
        self, folder: Path, *, catch_up: bool = False, now: float | None = None
    ) -> float:
        """When this folder's watch began: files older than that are not ours to rate.

        The first start of a watch records now; ``catch_up`` records 0 (rate everything).
        """
        now = time.time() if now is None else now
        key = _key(folder)
        if catch_up:
            self._db.execute(
                "INSERT INTO watches (path, since) VALUES (?, 0) "
                "ON CONFLICT(path) DO UPDATE SET since = 0",
                (key,),
            )
            return 0.0
        found = self._db.execute("SELECT since FROM watches WHERE path = ?", (key,)).fetchone()
        if found is not None:
            return float(found[0])
        self._db.execute("INSERT INTO watches (path, since) VALUES (?, ?)", (key, now))
        return now

    # --- reading ---------------------------------------------------------------------

    def get(self, path: Path) -> Row | None:
        found = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM files WHERE path = ?", (_key(path),)
        ).fetchone()
        return None if found is None else _row(found)

    def rows(self, status: str | None = None) -> list[Row]:
        if status is None:
            cursor = self._db.execute(f"SELECT {_ROW_COLUMNS} FROM files ORDER BY path")
        else:
            cursor = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM files WHERE status = ? ORDER BY path", (status,)
            )
        return [_row(r) for r in cursor]

    def due(self, now: float, limit: int) -> list[Row]:
        """Pending files, not with a worker, whose next look is due."""
        cursor = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM files WHERE status = 'pending' AND claimed = 0 "
            "AND due_at <= ? ORDER BY due_at LIMIT ?",
            (now, limit),
        )
        return [_row(r) for r in cursor]

    def next_due(self) -> float | None:
        found = self._db.execute(
            "SELECT MIN(due_at) FROM files WHERE status = 'pending' AND claimed = 0"
        ).fetchone()
        return None if found is None or found[0] is None else float(found[0])

    def counts(self) -> dict[str, int]:
        result = {PENDING: 0, RATED: 0, FAILED: 0, SKIPPED: 0}
        for status, count in self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status"):
            result[status] = count
        return result

    def rated_since(self, since: float) -> int:
        found = self._db.execute(
            "SELECT COUNT(*) FROM files WHERE status = 'rated' AND rated_at >= ?", (since,)
        ).fetchone()
        return int(found[0])

    def retrying(self) -> int:
        found = self._db.execute(
            "SELECT COUNT(*) FROM files WHERE status = 'pending' AND attempts > 0"
        ).fetchone()
        return int(found[0])

    def waiting(self) -> dict[Path, tuple[int, str]]:
        """Queued photos that wait for their folder (no space, not writable: ``wait``), by
        folder: how many, and the latest reason."""
        found: dict[Path, tuple[int, str]] = {}
        for key, reason in self._db.execute(
            "SELECT path, reason FROM files WHERE status = 'pending' AND attempts = 0"
            " AND reason IS NOT NULL ORDER BY updated_at"
        ):
            folder = _path(key).parent
            found[folder] = (found.get(folder, (0, ""))[0] + 1, reason)
        return found

    def recent(self, status: str, limit: int) -> list[Row]:
        order = "rated_at" if status == RATED else "updated_at"
        cursor = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM files WHERE status = ? ORDER BY {order} DESC LIMIT ?",
            (status, limit),
        )
        return [_row(r) for r in cursor]

    # --- the settle rule ---------------------------------------------------------------

    def touch(self, path: Path, sig: Signature | None, now: float, quiet: float) -> bool:
        """Something happened to ``path``: queue it to be looked at after ``quiet`` seconds.

        Returns False when there is nothing to do: the file is gone and was never queued,
        or it is exactly the version already rated / failed / skipped.
        """
        row = self.get(path)
        if sig is None:  # gone
            if row is not None and row.status == PENDING and not row.claimed:
                self.skip(path, GONE, now)
            return False
        if row is None:
            self._db.execute(
                "INSERT INTO files (path, status, size, mtime_ns, due_at, first_seen, updated_at)"
                " VALUES (?, 'pending', ?, ?, ?, ?, ?)",
                (_key(path), sig.size, sig.mtime_ns, now + quiet, now, now),
            )
            return True
        if row.status != PENDING:
            if row.signature == sig and row.reason != GONE:
                return False  # the same bytes we already dealt with
            self._db.execute(
                "UPDATE files SET status = 'pending', size = ?, mtime_ns = ?, fingerprint = NULL,"
                " reason = NULL, attempts = 0, due_at = ?, updated_at = ? WHERE path = ?",
                (sig.size, sig.mtime_ns, now + quiet, now, _key(path)),
            )
            return True
        if row.signature != sig:
            # Written again: a new version, a fresh settle and a fresh set of retries.
            self._db.execute(
                "UPDATE files SET size = ?, mtime_ns = ?, fingerprint = NULL, attempts = 0,"
                " reason = NULL, due_at = ?, updated_at = ? WHERE path = ?",
                (sig.size, sig.mtime_ns, now + quiet, now, _key(path)),
            )
        elif row.attempts == 0 and (row.due_at is None or row.due_at > now + quiet):
            # Same bytes, a stronger hint that the writer is done (its close): look sooner.
            self._db.execute(
                "UPDATE files SET due_at = ?, updated_at = ? WHERE path = ?",
                (now + quiet, now, _key(path)),
            )
        return True

    def resettle(self, path: Path, sig: Signature, due_at: float, now: float) -> None:
        """Still changing when we looked: remember this look and look again later."""
        self._db.execute(
            "UPDATE files SET size = ?, mtime_ns = ?, fingerprint = NULL, attempts = 0,"
            " due_at = ?, claimed = 0, updated_at = ? WHERE path = ?",
            (sig.size, sig.mtime_ns, due_at, now, _key(path)),
        )

    def forget(self, path: Path) -> None:
        """A file renamed away inside the watch: its new name has (or gets) its own row."""
        self._db.execute("DELETE FROM files WHERE path = ? AND claimed = 0", (_key(path),))

    # --- with a worker ---------------------------------------------------------------

    def claim(self, path: Path, fp: str | None, now: float) -> None:
        self._db.execute(
            "UPDATE files SET claimed = 1, fingerprint = ?, updated_at = ? WHERE path = ?",
            (fp, now, _key(path)),
        )

    def unclaim(self, path: Path, due_at: float, now: float) -> None:
        """Back to the queue without counting an attempt (shutdown, config change)."""
        self._db.execute(
            "UPDATE files SET claimed = 0, sidecar_started = NULL, due_at = ?, updated_at = ?"
            " WHERE path = ?",
            (due_at, now, _key(path)),
        )

    def begin_sidecar(self, path: Path, now: float) -> None:
        """Committed before the sidecar is written, so a crash in between is recognisable."""
        self._db.execute(
            "UPDATE files SET sidecar_started = ?, updated_at = ? WHERE path = ?",
            (now, now, _key(path)),
        )

    def rated(
        self,
        path: Path,
        *,
        stars: int | None,
        label: str | None,
        result: dict | None,
        elapsed_ms: float | None,
        now: float,
    ) -> None:
        self._db.execute(
            "UPDATE files SET status = 'rated', claimed = 0, sidecar_started = NULL,"
            " reason = NULL, due_at = NULL, rated_count = rated_count + 1, stars = ?,"
            " label = ?, result = ?, elapsed_ms = ?, rated_at = ?, updated_at = ? WHERE path = ?",
            (
                stars,
                label,
                None if result is None else _text(json.dumps(result, ensure_ascii=False)),
                elapsed_ms,
                now,
                now,
                _key(path),
            ),
        )

    def rejudged(
        self, path: Path, *, stars: int | None, label: str | None, result: dict | None, now: float
    ) -> None:
        """A rated file's verdict changed (its burst completed): same rating, new result."""
        self._db.execute(
            "UPDATE files SET sidecar_started = NULL, stars = ?, label = ?, result = ?,"
            " updated_at = ? WHERE path = ? AND status = 'rated'",
            (
                stars,
                label,
                None if result is None else _text(json.dumps(result, ensure_ascii=False)),
                now,
                _key(path),
            ),
        )

    def attempt_failed(
        self, path: Path, reason: str, now: float, *, max_retries: int, backoff: float
    ) -> bool:
        """Count a failed attempt: True when it will be retried, False when it is failed now."""
        row = self.get(path)
        attempts = (row.attempts if row else 0) + 1
        if attempts > max_retries:
            self._db.execute(
                "UPDATE files SET status = 'failed', claimed = 0, sidecar_started = NULL,"
                " reason = ?, attempts = ?, due_at = NULL, updated_at = ? WHERE path = ?",
                (_text(reason), attempts, now, _key(path)),
            )
            return False
        self._db.execute(
            "UPDATE files SET claimed = 0, sidecar_started = NULL, reason = ?, attempts = ?,"
            " due_at = ?, updated_at = ? WHERE path = ?",
            (_text(reason), attempts, now + backoff * 2 ** (attempts - 1), now, _key(path)),
        )
        return True

    def wait(self, path: Path, reason: str | None, due_at: float, now: float) -> None:
        """Back to the queue with its reason, without counting an attempt: its folder
        cannot take a sidecar now (read-only, disk full), which is not the file's fault."""
        self._db.execute(
            "UPDATE files SET claimed = 0, sidecar_started = NULL, reason = ?, due_at = ?,"
            " updated_at = ? WHERE path = ? AND status = 'pending'",
            (_text(reason), due_at, now, _key(path)),
        )

    def waiting_in(self, folder: Path, limit: int) -> list[Row]:
        """Pending files directly in ``folder`` (not below it), not with a worker."""
        prefix = _below(folder)
        cursor = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM files WHERE status = 'pending' AND claimed = 0"
            " AND substr(path, 1, ?) = ? AND instr(substr(path, ?), '/') = 0"
            " ORDER BY due_at LIMIT ?",
            (len(prefix), prefix, len(prefix) + 1, limit),
        )
        return [_row(r) for r in cursor]

    def rated_in(self, folder: Path) -> list[Row]:
        """Rated files directly in ``folder`` (not below it): the frames a late frame of a
        burst joins, after a restart."""
        prefix = _below(folder)
        cursor = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM files WHERE status = 'rated'"
            " AND substr(path, 1, ?) = ? AND instr(substr(path, ?), '/') = 0",
            (len(prefix), prefix, len(prefix) + 1),
        )
        return [_row(r) for r in cursor]

    def release_waiting(self, folder: Path, now: float) -> int:
        """Make every pending file directly in ``folder`` due now; returns how many."""
        prefix = _below(folder)
        cursor = self._db.execute(
            "UPDATE files SET due_at = ?, updated_at = ? WHERE status = 'pending'"
            " AND claimed = 0 AND substr(path, 1, ?) = ? AND instr(substr(path, ?), '/') = 0",
            (now, now, len(prefix), prefix, len(prefix) + 1),
        )
        return cursor.rowcount

    def skip(self, path: Path, reason: str, now: float) -> None:
        self._db.execute(
            "UPDATE files SET status = 'skipped', claimed = 0, sidecar_started = NULL,"
            " reason = ?, due_at = NULL, updated_at = ? WHERE path = ?",
            (_text(reason), now, _key(path)),
        )

    def prune_missing(
        self, folder: Path, after: Path | None, limit: int, keep: frozenset[Path] = frozenset()
    ) -> tuple[int, Path | None]:
        """Forget up to ``limit`` rows below ``folder`` (in path order, after ``after``) whose
        photo is no longer there (deleted, or renamed while the daemon was not watching).
        Rows with a worker or still queued, and ``keep``, stay. Returns how many were
        forgotten and where to go on from (None: the end of the folder). Sized for the
        hourly scan: the journal of an archive whose photos are renamed and deleted over
        time stays the size of what is there."""
        prefix = _below(folder)
        if isinstance(prefix, bytes):
            return 0, None  # a folder whose name is not UTF-8: its rows are kept
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        start = prefix if after is None else _key(after)
        found = self._db.execute(
            "SELECT path, claimed, status FROM files WHERE path > ? AND path < ?"
            " ORDER BY path LIMIT ?",
            (start, upper, limit),
        ).fetchall()
        # A queued photo stays: its own look finds it gone (a card pulled mid-copy and
        # put back must lose none of its queue).
        gone = [
            key
            for key, claimed, status in found
            if not claimed and status != PENDING and _path(key) not in keep and _gone(_path(key))
        ]
        for i in range(0, len(gone), 500):
            chunk = gone[i : i + 500]
            self._db.execute(
                f"DELETE FROM files WHERE claimed = 0 AND path IN ({','.join('?' * len(chunk))})",
                tuple(chunk),
            )
        last = _path(found[-1][0]) if len(found) == limit else None
        return len(gone), last

    def can_write(self, now: float) -> bool:
        """Whether a write reaches the disk now (after JournalFull: is there space again?)."""
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('written', ?)", (repr(now),)
            )
        except JournalFull:
            return False
        return True

    def recover(self, now: float) -> list[Row]:
        """At start-up: nothing is with a worker any more. Returns the files whose sidecar
        write was interrupted, for the daemon to check before rating them again."""
        interrupted = [
            _row(r)
            for r in self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM files WHERE status = 'pending'"
                " AND sidecar_started IS NOT NULL"
            )
        ]
        self._db.execute(
            "UPDATE files SET claimed = 0, due_at = COALESCE(due_at, ?) WHERE status = 'pending'",
            (now,),
        )
        return interrupted

    # --- analyses of content seen before ---------------------------------------------

    def cached_analysis(self, fp: str, version: str) -> object | None:
        """The record stored for identical content (JSON data), or None. Only text is read,
        and only as JSON: nothing stored here can make the reader run code."""
        found = self._db.execute(
            "SELECT scored FROM analyses WHERE fingerprint = ? AND version = ?", (fp, version)
        ).fetchone()
        if found is None or not isinstance(found[0], str):
            return None
        try:
            return json.loads(found[0])
        except ValueError:
            log.debug("cached analysis %s unreadable", fp[:12])
            return None

    def store_analysis(self, fp: str, version: str, record: object, now: float) -> None:
        """Keep ``record`` (plain JSON data) for content with fingerprint ``fp``."""
        self._db.execute(
            "INSERT OR REPLACE INTO analyses (fingerprint, version, scored, created)"
            " VALUES (?, ?, ?, ?)",
            (fp, version, json.dumps(record), now),
        )
        self._inserted_analyses += 1
        if self._inserted_analyses % 500 == 0:
            self._db.execute(
                "DELETE FROM analyses WHERE fingerprint NOT IN "
                "(SELECT fingerprint FROM analyses ORDER BY created DESC LIMIT ?)",
                (ANALYSIS_CACHE_ENTRIES,),
            )

    # --- corrections: a person's verdict on a photo the daemon rated ---------------

    def rated_named(self, folder: Path, stem: str) -> list[Row]:
        """Rated files directly in ``folder`` named ``stem.EXT``: the photos a sidecar
        ``stem.xmp`` (or ``stem.EXT.xmp``) may belong to."""
        prefix = _below(folder)
        if isinstance(prefix, bytes) or "/" in stem:
            return []
        start = prefix + stem + "."
        cursor = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM files WHERE status = 'rated'"
            " AND path > ? AND path < ? AND instr(substr(path, ?), '/') = 0",
            (start, prefix + stem + "/", len(prefix) + 1),
        )
        return [_row(r) for r in cursor]

    def record_correction(self, path: Path, verdict: str, why: str, now: float) -> bool:
        """A person's verdict on a rated photo; True when it is new or changed (a photo
        corrected twice counts once, with its latest verdict)."""
        found = self._db.execute(
            "SELECT verdict, why FROM corrections WHERE path = ?", (_key(path),)
        ).fetchone()
        if found is not None and tuple(found) == (verdict, why):
            return False
        self._db.execute(
            "INSERT OR REPLACE INTO corrections (path, verdict, why, noticed_at)"
            " VALUES (?, ?, ?, ?)",
            (_key(path), verdict, why, now),
        )
        return True

    def drop_correction(self, path: Path) -> bool:
        """The sidecar says again what postselectd wrote (the person undid their change)."""
        return (
            self._db.execute("DELETE FROM corrections WHERE path = ?", (_key(path),)).rowcount > 0
        )

    def corrections(self) -> list[tuple[Path, str, str, float]]:
        """(photo, verdict, why, when noticed) of every correction, oldest first."""
        try:
            cursor = self._db.execute(
                "SELECT path, verdict, why, noticed_at FROM corrections ORDER BY noticed_at"
            )
            return [(_path(p), v, w, float(t)) for p, v, w, t in cursor]
        except sqlite3.OperationalError:  # a journal from before corrections, read-only
            return []

    def corrections_since(self, since: float) -> tuple[int, float | None]:
        """How many corrections were noticed after ``since``, and when the latest was."""
        try:
            count, latest = self._db.execute(
                "SELECT COUNT(*), MAX(noticed_at) FROM corrections WHERE noticed_at > ?",
                (since,),
            ).fetchone()
        except sqlite3.OperationalError:
            return 0, None
        return int(count), None if latest is None else float(latest)
