"""The journal: the daemon's memory across restarts, and its queue."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from postselectd.state import (
    FINGERPRINT_BYTES,
    Journal,
    JournalError,
    Signature,
    fingerprint,
    journal_path,
)

NOW = 1_800_000_000.0


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "state") as j:
        yield j


def sig(size: int = 100, mtime: int = 1) -> Signature:
    return Signature(size, mtime)


def test_journal_uses_wal_and_a_private_folder(tmp_path: Path):
    Journal(tmp_path / "state").close()
    db = sqlite3.connect(journal_path(tmp_path / "state"))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0


def test_a_new_file_is_pending_until_it_is_due(journal):
    path = Path("/photos/DSC_0001.NEF")
    assert journal.touch(path, sig(), NOW, quiet=2.0)
    assert journal.get(path).status == "pending"
    assert journal.due(NOW + 1.9, 10) == []
    assert [r.path for r in journal.due(NOW + 2.0, 10)] == [path]
    assert journal.next_due() == NOW + 2.0


def test_a_further_write_restarts_the_settle_time(journal):
    path = Path("/photos/DSC_0001.NEF")
    journal.touch(path, sig(100, 1), NOW, quiet=2.0)
    journal.touch(path, sig(200, 2), NOW + 1.5, quiet=2.0)
    assert journal.due(NOW + 2.0, 10) == []
    assert journal.get(path).signature == sig(200, 2)
    assert journal.next_due() == NOW + 3.5


def test_a_close_with_the_same_bytes_shortens_the_wait(journal):
    path = Path("/photos/DSC_0001.NEF")
    journal.touch(path, sig(), NOW, quiet=2.0)  # Created
    journal.touch(path, sig(), NOW + 0.1, quiet=0.25)  # Closed, nothing changed since
    assert journal.next_due() == pytest.approx(NOW + 0.35)


def test_the_version_already_rated_is_not_queued_again(journal):
    path = Path("/photos/DSC_0001.NEF")
    journal.touch(path, sig(), NOW, quiet=0.0)
    journal.claim(path, "fp", NOW)
    journal.rated(path, stars=3, label=None, result={"rating": 3}, elapsed_ms=5.0, now=NOW)
    assert not journal.touch(path, sig(), NOW + 10, quiet=0.0)
    # A new version of the file (re-copied over it) is.
    assert journal.touch(path, sig(300, 9), NOW + 20, quiet=0.0)
    row = journal.get(path)
    assert row.status == "pending" and row.rated_count == 1


def test_a_failed_file_is_retried_with_backoff_then_failed_with_its_reason(journal):
    path = Path("/photos/TRUNC.NEF")
    journal.touch(path, sig(), NOW, quiet=0.0)
    assert journal.attempt_failed(path, "cut short", NOW, max_retries=2, backoff=10)
    assert journal.get(path).due_at == NOW + 10
    assert journal.attempt_failed(path, "cut short", NOW + 10, max_retries=2, backoff=10)
    assert journal.get(path).due_at == NOW + 10 + 20
    assert not journal.attempt_failed(path, "cut short", NOW + 30, max_retries=2, backoff=10)
    row = journal.get(path)
    assert (row.status, row.reason, row.attempts) == ("failed", "cut short", 3)
    assert journal.due(NOW + 1000, 10) == []


def test_a_file_that_is_gone_before_it_was_rated_is_skipped(journal):
    path = Path("/photos/DSC_0001.NEF")
    journal.touch(path, sig(), NOW, quiet=2.0)
    assert not journal.touch(path, None, NOW + 1, quiet=2.0)
    assert journal.get(path).status == "skipped"
    # Moved away and back unchanged: queued again.
    assert journal.touch(path, sig(), NOW + 5, quiet=2.0)
    assert journal.get(path).status == "pending"
    assert not journal.touch(Path("/photos/never-seen.NEF"), None, NOW, quiet=2.0)
    assert journal.get(Path("/photos/never-seen.NEF")) is None


def test_restart_releases_claimed_files_and_reports_interrupted_sidecar_writes(tmp_path):
    a, b = Path("/photos/A.NEF"), Path("/photos/B.NEF")
    with Journal(tmp_path) as journal:
        for path in (a, b):
            journal.touch(path, sig(), NOW, quiet=0.0)
            journal.claim(path, "fp", NOW)
        journal.begin_sidecar(b, NOW + 1)
    with Journal(tmp_path) as journal:
        interrupted = journal.recover(NOW + 100)
        assert [r.path for r in interrupted] == [b]
        assert not journal.get(a).claimed
        assert {r.path for r in journal.due(NOW + 100, 10)} == {a, b}


def test_watch_since_is_recorded_on_first_start_and_kept(journal):
    folder = Path("/photos/import")
    assert journal.watch_since(folder, now=NOW) == NOW
    assert journal.watch_since(folder, now=NOW + 500) == NOW
    assert journal.watch_since(folder, catch_up=True, now=NOW + 600) == 0.0
    assert journal.watch_since(folder, now=NOW + 700) == 0.0


def test_analysis_cache_roundtrip_and_version_mismatch(journal):
    journal.store_analysis("abc", "0.1.0", {"keeper": 0.9}, NOW)
    assert journal.cached_analysis("abc", "0.1.0") == {"keeper": 0.9}
    assert journal.cached_analysis("abc", "0.2.0") is None
    assert journal.cached_analysis("nope", "0.1.0") is None


def test_readonly_journal_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(JournalError, match="no journal yet"):
        Journal(tmp_path / "nothing", readonly=True)


def test_fingerprint_reads_only_head_and_tail(tmp_path: Path):
    size = 4 * FINGERPRINT_BYTES
    data = bytearray(os.urandom(size))
    one, two, three = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    one.write_bytes(data)
    data[2 * FINGERPRINT_BYTES] ^= 0xFF  # the middle: never read
    two.write_bytes(data)
    data[-1] ^= 0xFF  # the tail: read
    three.write_bytes(data)
    assert fingerprint(one) == fingerprint(two)
    assert fingerprint(one) != fingerprint(three)
    short = tmp_path / "short"
    short.write_bytes(bytes(data[:1000]))
    assert fingerprint(short) != fingerprint(one)
