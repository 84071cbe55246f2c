"""The journal: the daemon's memory across restarts, and its queue."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from postselectd.photos import FINGERPRINT_BYTES, Signature, fingerprint
from postselectd.state import Journal, JournalError, journal_path

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


class _Planted:
    """What a hostile pickle does when loaded: here, create a file (it could run anything)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cached_analyses_are_json_and_a_planted_pickle_never_runs(journal, tmp_path):
    journal.store_analysis("abc", "0.1.0", {"keeper": 0.9, "faces": [1, 2]}, NOW)
    db = sqlite3.connect(journal.path)
    (kind, text) = db.execute("SELECT typeof(scored), scored FROM analyses").fetchone()
    assert kind == "text" and json.loads(text) == {"keeper": 0.9, "faces": [1, 2]}
    # Someone who can write the journal plants a pickle where an analysis would be.
    marker = tmp_path / "code-ran"
    db.execute(
        "INSERT INTO analyses VALUES ('evil', '0.1.0', ?, ?)",
        (pickle.dumps(_Planted(marker)), NOW),
    )
    db.commit()
    assert journal.cached_analysis("evil", "0.1.0") is None
    assert not marker.exists()


def test_upgrade_drops_the_pickled_analyses_of_schema_1_unread(tmp_path: Path):
    state = tmp_path / "state"
    with Journal(state) as journal:
        journal.touch(Path("/p/DSC_0001.NEF"), sig(), NOW, 0)
    marker = tmp_path / "code-ran"
    db = sqlite3.connect(journal_path(state))
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")  # as 3568b71 left it
    db.execute(
        "INSERT INTO analyses VALUES ('fp', '0.1.0', ?, ?)", (pickle.dumps(_Planted(marker)), NOW)
    )
    db.commit()
    db.close()
    with Journal(state) as journal:
        assert journal.cached_analysis("fp", "0.1.0") is None
        assert journal.get(Path("/p/DSC_0001.NEF")).status == "pending"  # the rest is kept
    db = sqlite3.connect(journal_path(state))
    assert db.execute("SELECT count(*) FROM analyses").fetchone() == (0,)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    assert not marker.exists()


def test_a_real_analysis_survives_the_cache_record_exactly():
    from conftest import shared_path

    from postselectd.config import Config
    from postselectd.stages import (
        analyze_file,
        finish,
        frame_of,
        scored_from_record,
        scored_record,
    )

    scored = analyze_file(shared_path("samples", "nef", "DSC_0101.NEF"))  # motion blur
    assert scored.analysis is not None and scored.capture_time is not None
    assert scored.analysis.findings and scored.analysis.reasons
    back = scored_from_record(json.loads(json.dumps(scored_record(scored))))
    assert back == scored  # every field but the arrays (compare=False)...
    assert back.analysis.findings == scored.analysis.findings
    for name in ("embedding", "measurements"):
        ours, theirs = getattr(scored.analysis, name), getattr(back.analysis, name)
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    config = Config()
    # What the daemon does with it: the same verdict, and the same frame for bursts.
    verdicts = [
        replace(finish(s, config, dry_run=True), elapsed_ms=0.0, timings_ms=())
        for s in (back, scored)
    ]
    assert verdicts[0] == verdicts[1] and verdicts[0].rating is not None
    assert frame_of(back, config.rating) == frame_of(scored, config.rating)


def test_a_cache_record_builds_only_analysis_types():
    from postselectd.stages import RecordError, scored_from_record

    for record in (
        {"__type__": "Popen", "args": ["touch", "/tmp/x"]},
        {"__type__": "Scored", "path": {"__ndarray__": "|O", "shape": [1], "data": "AA=="}},
        {"__type__": "Scored", "path": "/x", "analysis": None, "shell": True},
        {"keeper": 0.9},
        "not a record",
    ):
        with pytest.raises(RecordError):
            scored_from_record(record)


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


def test_the_journal_of_an_archive_renamed_and_deleted_over_time_stays_bounded(tmp_path):
    # Issue #19: rows of photos that are gone are forgotten (the daemon runs this after
    # each scan of a watch folder), so years of renames and deletions do not pile up.
    archive = tmp_path / "archive"
    archive.mkdir()
    kept = [archive / f"keep_{i:03d}.NEF" for i in range(50)]
    for path in kept:
        path.write_bytes(b"x")
    sizes = []
    with Journal(tmp_path / "state") as journal:
        for round_ in range(5):
            # 4,000 photos arrive and are rated, then are renamed or deleted.
            for i in range(4000):
                path = archive / f"r{round_}_{i:04d}.NEF"
                journal.touch(path, sig(), NOW, 0)
                journal.rated(path, stars=3, label=None, result={}, elapsed_ms=1.0, now=NOW)
            for path in kept:
                journal.touch(path, sig(), NOW, 0)
            after, forgotten = None, 0
            while True:
                pruned, after = journal.prune_missing(archive, after, 500)
                forgotten += pruned
                if after is None:
                    break
            assert forgotten == 4000
            assert sorted(row.path for row in journal.rows()) == kept
            sizes.append(journal_path(tmp_path / "state").stat().st_size)
        # Elsewhere: untouched (another watch folder, or one not mounted now).
        other = tmp_path / "other" / "DSC_0001.NEF"
        journal.touch(other, sig(), NOW, 0)
        assert journal.prune_missing(archive, None, 500) == (0, None)
        assert journal.get(other) is not None
    assert sizes[-1] <= sizes[0] * 1.5, sizes


def test_a_sidecar_name_finds_the_rated_photos_it_may_belong_to(journal, tmp_path):
    folder = tmp_path / "shoot"
    for name in ("DSC_0001.NEF", "DSC_0001.JPG", "DSC_00010.NEF", "DSC_0001-2.NEF"):
        journal.touch(folder / name, sig(), NOW, 0)
        journal.claim(folder / name, "fp", NOW)
        journal.rated(folder / name, stars=3, label=None, result=None, elapsed_ms=1, now=NOW)
    journal.touch(folder / "sub" / "DSC_0001.NEF", sig(), NOW, 0)  # below, and pending
    found = sorted(r.path.name for r in journal.rated_named(folder, "DSC_0001"))
    assert found == ["DSC_0001.JPG", "DSC_0001.NEF"]


def test_a_correction_counts_once_with_the_persons_latest_verdict(journal, tmp_path):
    photo = tmp_path / "DSC_0001.NEF"
    assert journal.record_correction(photo, "select", "4 stars", NOW)
    assert not journal.record_correction(photo, "select", "4 stars", NOW + 1)
    assert journal.record_correction(photo, "reject", "Red label", NOW + 2)
    assert journal.corrections() == [(photo, "reject", "Red label", NOW + 2)]
    assert journal.corrections_since(NOW + 1) == (1, NOW + 2)
    assert journal.drop_correction(photo) and journal.corrections_since(0) == (0, None)
