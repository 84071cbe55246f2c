"""Watching: names, scans, network shares, the overflow alarm, and real inotify events."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sys
import time
from pathlib import Path

import pytest

from postselectd.config import WatchFolder
from postselectd.photos import is_ignored_name, is_photo_path, scan
from postselectd.watcher import (
    Arrival,
    Watcher,
    filesystem_type_linux,
    is_network_type,
    should_poll,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify events")


@pytest.mark.parametrize(
    "name",
    [
        "._DSC_0001.NEF",  # AppleDouble
        ".DSC_0001.NEF.Xa81kQ",  # rsync temp
        "DSC_0001.NEF.part",
        "DSC_0001.NEF.tmp",
        "DSC_0001.NEF.crdownload",
        "DSC_0001.NEF.inprogress",
        "DSC_0001.xmp",
        "DSC_0001.NEF.xmp",
        ".hidden.NEF",
    ],
)
def test_temp_and_system_files_are_ignored(name):
    assert is_ignored_name(name)
    assert not is_photo_path(Path("/import") / name)


@pytest.mark.parametrize(
    "name",
    [
        "DSC_0001.NEF", "IMG_0001.CR3", "_DSC0001.ARW", "P1.jpg",
        "IMG_0001.HEIC", "IMG_0001.heif", "IMG_0001.HIF", "client.webp", "client.avif",
        "export.png", "scan.tif",
    ],
)  # fmt: skip
def test_photos_are_candidates(name):
    assert is_photo_path(Path("/import") / name)


@pytest.mark.parametrize("name", ["IMG_0001.MOV", "clip.mp4", "anim.gif", "notes.txt"])
def test_videos_and_other_files_are_passed_over_by_the_daemon(name):
    # `score` names a video as not a photo; a watched folder's Live Photo halves and
    # clips are no failures to the daemon.
    assert not is_photo_path(Path("/import") / name)


def test_photos_in_hidden_folders_are_not_candidates():
    root = Path("/import")
    assert not is_photo_path(root / ".thumbnails" / "DSC_0001.NEF", root)
    assert is_photo_path(root / "2026-05-01" / "DSC_0001.NEF", root)


def test_scan_lists_photos_recursively_or_not(tmp_path: Path):
    (tmp_path / "a" / ".cache").mkdir(parents=True)
    for name in ("DSC_0001.NEF", "notes.txt", "DSC_0001.xmp", "._DSC_0001.NEF"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a" / "DSC_0002.NEF").write_bytes(b"x")
    (tmp_path / "a" / ".cache" / "DSC_0003.NEF").write_bytes(b"x")
    deep = sorted(p.name for p, _ in scan(tmp_path, recursive=True))
    flat = sorted(p.name for p, _ in scan(tmp_path, recursive=False))
    assert deep == ["DSC_0001.NEF", "DSC_0002.NEF"]
    assert flat == ["DSC_0001.NEF"]


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
nas:/volume1/photos /mnt/nas nfs4 rw,vers=4.2 0 0
//server/share /mnt/smb\\040share cifs rw 0 0
me@host:/pics /home/me/remote fuse.sshfs rw 0 0
/dev/sdb1 /media/me/CARD vfat rw 0 0
/dev/sdc1 /media/me/USB fuseblk rw 0 0
"""


@pytest.mark.parametrize(
    "path, fs_type, network",
    [
        ("/home/me/Pictures", "ext4", False),
        ("/mnt/nas/2026", "nfs4", True),
        ("/mnt/smb share/import", "cifs", True),
        ("/home/me/remote/x", "fuse.sshfs", True),
        ("/media/me/CARD/DCIM", "vfat", False),
        ("/media/me/USB", "fuseblk", False),  # NTFS on a local disk: inotify sees it
        ("/mnt/nasty", "ext4", False),  # a prefix of /mnt/nas, not inside it
    ],
)
def test_network_shares_are_recognised_from_proc_mounts(path, fs_type, network):
    assert filesystem_type_linux(Path(path), MOUNTS) == fs_type
    assert is_network_type(fs_type) is network


def test_poll_setting_true_and_false_are_obeyed(tmp_path: Path):
    assert should_poll(WatchFolder(path=tmp_path, poll=True))[0] is True
    assert should_poll(WatchFolder(path=tmp_path, poll=False))[0] is False
    assert should_poll(WatchFolder(path=tmp_path))[0] is False  # a local tmp folder


def test_the_overflow_warning_watchdog_logs_triggers_the_alarm(tmp_path: Path):
    alarms = []
    watcher = Watcher(lambda arrival: None, lambda: alarms.append(1))
    try:
        # What watchdog's inotify backend logs when the kernel queue overflowed.
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        logging.getLogger("watchdog.observers.inotify_c").warning("something else")
        assert alarms == [1]
    finally:
        watcher.stop()
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed")
    assert alarms == [1]  # the alarm is detached when the watcher stops


def _collect(events: queue.Queue, until, timeout: float = 5.0) -> list[Arrival]:
    seen: list[Arrival] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(seen):
        try:
            seen.append(events.get(timeout=0.1))
        except queue.Empty:
            pass
    return seen


@linux_only
def test_a_sidecar_written_whole_arrives_as_a_sidecar_not_a_photo(tmp_path: Path):
    watch = tmp_path / "watch"
    watch.mkdir()
    events: queue.Queue = queue.Queue()
    watcher = Watcher(events.put, lambda: None)
    try:
        watcher.add(WatchFolder(path=watch))
        (watch / "DSC_0001.xmp").write_text("<x/>")  # an editor writing in place
        (watch / ".DSC_0002.xmp.tmp").write_text("<x/>")  # ... or by a temp and a rename
        os.rename(watch / ".DSC_0002.xmp.tmp", watch / "DSC_0002.NEF.xmp")
        seen = _collect(events, lambda s: len(s) >= 2)
    finally:
        watcher.stop()
    assert {(a.path.name, a.kind) for a in seen} == {
        ("DSC_0001.xmp", "sidecar"),
        ("DSC_0002.NEF.xmp", "sidecar"),
    }


@linux_only
def test_real_events_copy_rename_and_folder_move(tmp_path: Path):
    watch = tmp_path / "watch"
    watch.mkdir()
    events: queue.Queue = queue.Queue()
    watcher = Watcher(events.put, lambda: None)
    try:
        assert watcher.add(WatchFolder(path=watch)) == "inotify"
        (watch / "DSC_0001.NEF").write_bytes(b"x" * 1000)
        (watch / "DSC_0002.NEF.part").write_bytes(b"x")
        os.rename(watch / "DSC_0002.NEF.part", watch / "DSC_0002.NEF")
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "DSC_0003.NEF").write_bytes(b"x")
        os.rename(outside, watch / "shoot")
        seen = _collect(events, lambda s: len(s) >= 4)
    finally:
        watcher.stop()
    kinds = {(a.path.name, a.kind) for a in seen}
    assert ("DSC_0001.NEF", "closed") in kinds
    assert ("DSC_0002.NEF", "moved") in kinds
    assert ("shoot", "folder") in kinds
    assert not any(a.path.name.endswith(".part") for a in seen)


@linux_only
def test_a_folder_that_goes_away_is_reattached_when_it_returns(tmp_path: Path):
    card = tmp_path / "CARD"
    card.mkdir()
    events: queue.Queue = queue.Queue()
    watcher = Watcher(events.put, lambda: None)
    try:
        watcher.add(WatchFolder(path=card))
        shutil.rmtree(card)
        assert watcher.check_folders() == [(card, "gone")]
        assert not watcher.is_attached(card)
        assert watcher.check_folders() == []
        card.mkdir()
        assert watcher.check_folders() == [(card, "back")]
        (card / "DSC_0001.NEF").write_bytes(b"x")
        seen = _collect(events, lambda s: any(a.kind == "closed" for a in s))
    finally:
        watcher.stop()
    assert any(a.path == card / "DSC_0001.NEF" and a.kind == "closed" for a in seen)


def test_a_folder_that_is_not_there_yet_is_attached_when_it_appears(tmp_path: Path):
    later = tmp_path / "later"
    watcher = Watcher(lambda arrival: None, lambda: None)
    try:
        watcher.add(WatchFolder(path=later))
        assert not watcher.is_attached(later)
        later.mkdir()
        assert watcher.check_folders() == [(later, "back")]
        assert watcher.is_attached(later)
    finally:
        watcher.stop()
