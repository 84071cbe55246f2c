"""Symlinked folders: photos are found, and sidecars written, only inside the folders the
config (or the command line) names, never through a link out of them nor round a loop."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import time
from pathlib import Path

import pytest
import test_daemon
from conftest import copy_file, run_cli, shared_path

from postselectd.config import WatchFolder
from postselectd.photos import scan
from postselectd.watcher import Watcher

# The real-daemon fixtures of tests/test_daemon.py.
daemon_factory = test_daemon.daemon_factory
small_nef = test_daemon.small_nef


def _tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """watch/ with a photo, a link out (to outside/), a link into another watched folder
    (watch2/sub), a loop back up and a link to itself."""
    watch, outside, watch2 = tmp_path / "watch", tmp_path / "outside", tmp_path / "watch2"
    (watch / "2026-05-01").mkdir(parents=True)
    outside.mkdir()
    (watch2 / "sub").mkdir(parents=True)
    (watch / "2026-05-01" / "DSC_0001.NEF").write_bytes(b"x")
    (outside / "DSC_0009.NEF").write_bytes(b"x")
    (watch2 / "sub" / "DSC_0005.NEF").write_bytes(b"x")
    (watch / "elsewhere").symlink_to(outside)
    (watch / "other").symlink_to(watch2 / "sub")
    (watch / "2026-05-01" / "up").symlink_to(watch)
    (watch / "self").symlink_to(watch / "self")
    return watch, outside, watch2


def test_the_scan_stays_inside_the_watched_folders_and_says_so_once(tmp_path, caplog):
    watch, outside, watch2 = _tree(tmp_path)
    photo = watch / "2026-05-01" / "DSC_0001.NEF"
    caplog.set_level(logging.DEBUG, logger="postselectd")
    # Watched alone: both links lead out of it, and each is said once.
    assert [p for p, _ in scan(watch, True)] == [photo]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert f"{watch / 'elsewhere'}: a link to {outside}," in warnings[0]
    assert f"{watch / 'other'}: a link to {watch2 / 'sub'}," in warnings[1]
    caplog.clear()
    # With watch2 configured too, "other" is fine: watch2/sub is rated by its own watch,
    # under its real path (no alias through the link). A rescan says nothing again.
    for _ in range(2):
        assert [p for p, _ in scan(watch, True, inside=[watch, watch2])] == [photo]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_score_writes_no_sidecar_through_a_link_out_of_the_folder(tmp_path: Path):
    shoot, outside = tmp_path / "shoot", tmp_path / "outside"
    copy_file(shared_path("samples", "nef", "DSC_0101.NEF"), shoot)
    copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), outside)
    (shoot / "elsewhere").symlink_to(outside)
    (shoot / "loop").symlink_to(shoot)
    result = run_cli("score", "--json", str(shoot))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["path"]).name for r in records] == ["DSC_0101.NEF"]
    assert sorted(os.listdir(outside)) == ["DSC_0102.NEF"]
    assert result.stderr.count("a link to") == 1
    assert "outside the folders to rate" in result.stderr


def test_polling_sees_nothing_through_a_link_out_of_the_watched_folder(tmp_path: Path):
    watch, outside = tmp_path / "share", tmp_path / "outside"
    watch.mkdir()
    outside.mkdir()
    (watch / "elsewhere").symlink_to(outside)
    (watch / "loop").symlink_to(watch)
    events: queue.Queue = queue.Queue()
    watcher = Watcher(events.put, lambda: None)
    seen = []
    try:
        assert watcher.add(WatchFolder(path=watch, poll=True)).startswith("polling")
        time.sleep(0.5)  # the first snapshot
        (outside / "DSC_0003.NEF").write_bytes(b"x")
        (watch / "DSC_0004.NEF").write_bytes(b"x")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(a.path.name == "DSC_0004.NEF" for a in seen):
            try:
                seen.append(events.get(timeout=0.2))
            except queue.Empty:
                pass
        time.sleep(3)  # one more poll: anything through the link would be here by now
        while not events.empty():
            seen.append(events.get())
    finally:
        watcher.stop()
    assert [a.path for a in seen if a.kind != "folder"] == [watch / "DSC_0004.NEF"]


@pytest.mark.slow
def test_the_daemon_never_writes_through_a_link_out_of_its_watched_folders(
    daemon_factory, tmp_path, small_nef
):
    watch, outside, watch2 = _tree(tmp_path)
    for path in [*watch.rglob("*.NEF"), *outside.glob("*.NEF"), *watch2.rglob("*.NEF")]:
        path.unlink()
    old = small_nef.write(watch / "2026-05-01" / "DSC_0001.NEF", tag=1)
    theirs = small_nef.write(outside / "DSC_0009.NEF", tag=2)
    linked = small_nef.write(watch2 / "sub" / "DSC_0005.NEF", tag=3)
    daemon = daemon_factory([watch, watch2], workers=1)
    daemon.start("--catch-up")
    daemon.wait_for(lambda: daemon.rated() >= 2, 60, "the two watched photos")
    later = small_nef.write(outside / "DSC_0010.NEF", tag=4)  # arrives through the link
    new = small_nef.write(watch / "2026-05-01" / "DSC_0002.NEF", tag=5)
    daemon.wait_for(lambda: test_daemon.sidecar_of(new).exists(), 30, "a new photo")
    daemon.send(signal.SIGHUP)  # a rescan through every link again
    time.sleep(2.0)
    assert daemon.stop()[0] == 0
    test_daemon.assert_rated_once(daemon, [old, linked, new])
    assert sorted(daemon.rows()) == sorted(str(p) for p in (old, linked, new))
    assert sorted(os.listdir(outside)) == sorted([theirs.name, later.name])
    log = daemon.all_logs()
    assert log.count(f"{watch / 'elsewhere'}: a link to {outside}") == 1
    assert "Traceback" not in log
