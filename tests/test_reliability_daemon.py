"""The daemon under hostile files, broken disks and odd file systems (issue 5).

tests/test_reliability.py proves these for `postselectd score` and the sidecar module;
here the real daemon (`python -m postselectd run`, tests/test_daemon.py's DaemonProcess)
watches the folder while it happens, and must stay up, rate or fail every file with a
reason, keep old sidecars whole and say each problem once. Mount tricks (a read-only
remount, a size-limited tmpfs) need root and skip with the reason elsewhere.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
import test_daemon
import yaml
from conftest import DATA, ROOT, Unprivileged, shared_path, without_time
from test_daemon import DaemonProcess, assert_rated_once, sidecar_of
from test_reliability import FUZZ_CORPUS, _fill, _mutations

from postselectd.sidecar import read_sidecar, validate_xmp
from postselectd.workers import status_kb, tree_rss_kb

# The real-daemon fixtures of tests/test_daemon.py.
daemon_factory = test_daemon.daemon_factory
small_nef = test_daemon.small_nef

# --- helpers ------------------------------------------------------------------------


def _mount(target: Path, *options: str) -> None:
    """A tmpfs at ``target`` (root only); unmounted by the ``mounts`` fixture."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs (read-only remount, size limit)")
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


def _remount(target: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(target)], check=True)


@pytest.fixture
def mounts():
    made: list[Path] = []

    def mount(target: Path, *options: str) -> Path:
        _mount(target, *options)
        made.append(target)
        return target

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def _row(daemon: DaemonProcess, path: Path):
    return daemon.rows().get(str(path))


def _statuses(daemon: DaemonProcess, paths: list[Path]) -> list[str | None]:
    rows = daemon.rows()
    return [rows[str(p)].status if str(p) in rows else None for p in paths]


# --- fuzzed files through the daemon ------------------------------------------------------


@pytest.mark.slow
def test_fuzzed_files_never_kill_the_daemon_and_each_is_rated_or_failed_with_a_reason(
    daemon_factory, tmp_path
):
    """A few hundred mutated raws (test_reliability's mutations, plus the regression
    corpus) copied into a watched folder: the daemon stays up, each file ends rated (with
    a sidecar that parses) or failed with its reason and one log line (no sidecar), and
    memory stays bounded."""
    rng = random.Random(20261128)
    sources = sorted(shared_path("samples", "raw", "good").iterdir())
    sources += sorted(shared_path("samples", "raw", "broken").iterdir())
    sources += [shared_path("samples", "nef", "DSC_0102.NEF")]
    suffixes = [".NEF", ".CR2", ".ARW", ".DNG", ".RAF", ".RW2", ".JPG"]
    blobs: list[tuple[str, bytes]] = []
    for source in sources:
        # The small broken raws are cheap and hit the parsers hardest; the good ones
        # (several MB, some decoded from sensor data) cost more each.
        per_source = 12 if source.stat().st_size < 1_000_000 else 6
        for kind, blob in _mutations(source, per_source, rng):
            suffix = rng.choice(suffixes) if len(blobs) % 4 == 3 else source.suffix
            blobs.append((f"d{len(blobs):04d}_{kind}{suffix}", blob))
    corpus = [p for p in sorted(FUZZ_CORPUS.iterdir()) if p.suffix != ".md"]
    blobs += [(f"corpus_{p.name}", p.read_bytes()) for p in corpus]
    assert len(blobs) >= 250

    watch = tmp_path / "card"
    watch.mkdir()
    # Many mutations are cut short: they wait for the rest (daemon.incomplete_wait_seconds,
    # 30 s by default) before their verdict; 1 s is enough to go through that path.
    daemon = daemon_factory(
        [watch], max_retries=0, retry_backoff_seconds=0.1, incomplete_wait_seconds=1.0
    )
    daemon.start()
    paths = []
    for name, blob in blobs:  # copied in as a card reader would: one file after another
        path = watch / name
        path.write_bytes(blob)
        paths.append(path)

    peak_kb = 0
    deadline = time.monotonic() + 240
    while True:
        assert daemon.proc.poll() is None, daemon.log()[-3000:]
        peak_kb = max(peak_kb, tree_rss_kb(daemon.proc.pid))
        statuses = _statuses(daemon, paths)
        if all(s in ("rated", "failed", "skipped") for s in statuses):
            break
        assert time.monotonic() < deadline, f"still open: {statuses.count('pending')} pending"
        time.sleep(0.5)
    assert daemon.stop()[0] == 0
    log = daemon.log()
    assert "Traceback" not in log and "internal error" not in log

    rows = daemon.rows()
    failed = 0
    for path in paths:
        row = rows[str(path)]
        if row.status == "rated":
            validate_xmp(sidecar_of(path).read_bytes(), sidecar_of(path).name)
        else:
            assert row.status == "failed" and row.reason, (path.name, row.status, row.reason)
            assert not sidecar_of(path).exists(), f"{path.name}: sidecar without a preview"
            lines = [
                line
                for line in without_time(log).splitlines()
                if line.startswith(f"card/{path.name}: ")
            ]
            assert len(lines) == 1 and "failed: " in lines[0], (path.name, lines)
            failed += 1
    assert 0 < failed < len(paths)
    # The daemon and two workers, each with its models and one preview.
    assert peak_kb < 1_500_000, f"peak RSS {peak_kb / 1024:.0f} MB"
    print(f"daemon fuzz: {len(paths)} files, {failed} failed, peak RSS {peak_kb / 1024:.0f} MB")


# --- folders where no sidecar can be written ---------------------------------------------


def test_read_only_folder_is_reported_once_and_rating_resumes_when_writable(
    daemon_factory, tmp_path, small_nef, mounts
):
    """A write-protected card: the files wait (they are not failed after the retries),
    the problem is one log line per folder, and they are rated once it is writable."""
    card = mounts(tmp_path / "card", "size=64m")
    folders = [card / "100NIKON", card / "101NIKON"]
    raws = []
    for n, folder in enumerate(folders):
        folder.mkdir()
        raws += [small_nef.write(folder / f"DSC_{n}{i:03d}.NEF", tag=n * 10 + i) for i in range(3)]
    _remount(card, "ro")
    daemon = daemon_factory([card], workers=1, max_retries=1, retry_backoff_seconds=0.1)
    daemon.start("--catch-up")

    def all_tried() -> bool:
        rows = daemon.rows()
        return all(str(p) in rows and rows[str(p)].reason for p in raws)

    daemon.wait_for(all_tried, 60, "every file tried once")
    time.sleep(1.5)  # far longer than max_retries x backoff: nothing may fail meanwhile
    rows = daemon.rows()
    for raw in raws:
        row = rows[str(raw)]
        assert row.status == "pending" and row.attempts == 0, (raw.name, row.status)
        assert "not writable" in row.reason
    log = without_time(daemon.log())
    reported = [line for line in log.splitlines() if "read-only" in line]
    assert len(reported) == len(folders), reported
    assert {line.split(":")[0] for line in reported} == {str(f) for f in folders}
    assert "failed:" not in log and "retrying in" not in log

    _remount(card, "rw")
    daemon.wait_for(lambda: all(sidecar_of(p).exists() for p in raws), 30, "sidecars")
    assert daemon.stop()[0] == 0
    assert_rated_once(daemon, raws)
    assert daemon.log().count("sidecars can be written again") == len(folders)


def test_disk_full_keeps_the_old_sidecar_and_the_file_queued_until_there_is_space(
    daemon_factory, tmp_path, small_nef, mounts
):
    disk = mounts(tmp_path / "disk", "size=8m")
    raws = [small_nef.write(disk / f"DSC_{i:04d}.NEF", tag=300 + i) for i in range(2)]
    sidecar = sidecar_of(raws[0])
    shutil.copy(DATA / "lightroom_sidecar.xmp", sidecar)
    before = sidecar.read_bytes()
    develop = {k: v for k, v in read_sidecar(sidecar).items() if k.startswith("Xmp.crs.")}
    assert develop
    filler = disk / "filler"
    _fill(filler)
    daemon = daemon_factory([disk], workers=1, max_retries=1, retry_backoff_seconds=0.1)
    daemon.start("--catch-up")

    def all_tried() -> bool:
        rows = daemon.rows()
        return all(str(p) in rows and rows[str(p)].reason for p in raws)

    daemon.wait_for(all_tried, 60, "both files tried")
    time.sleep(1.5)  # longer than the retries would take
    rows = daemon.rows()
    for raw in raws:
        assert rows[str(raw)].status == "pending" and rows[str(raw)].attempts == 0
        assert "disk full" in rows[str(raw)].reason
    assert sidecar.read_bytes() == before  # the old sidecar, byte for byte
    assert sorted(p.name for p in disk.iterdir()) == sorted(
        [r.name for r in raws] + [sidecar.name, "filler"]
    )
    full_lines = [line for line in daemon.log().splitlines() if "disk is full" in line]
    assert len(full_lines) == 1, full_lines
    assert "failed:" not in daemon.log()

    filler.unlink()
    daemon.wait_for(lambda: all(sidecar_of(p).exists() for p in raws), 30, "sidecars")
    daemon.wait_for(lambda: _row(daemon, raws[0]).status == "rated", 10, "journal")
    assert daemon.stop()[0] == 0
    assert_rated_once(daemon, raws)
    merged = read_sidecar(sidecar)
    assert "Xmp.postselect.KeeperProbability" in merged
    assert {k: merged.get(k) for k in develop} == develop  # the develop settings survived


def test_a_full_disk_under_the_journal_pauses_rating_until_there_is_space(
    daemon_factory, tmp_path, small_nef, mounts
):
    # Issue #19: the state folder's disk (the journal's) full. The daemon stays up, says
    # so once, writes no sidecar it cannot record, and rates everything once there is
    # space again; the journal is whole.
    mounts(tmp_path / "state", "size=4m")
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = daemon_factory([watch], workers=1)
    daemon.start()
    first = small_nef.write(watch / "DSC_0001.NEF", tag=501)
    daemon.wait_for(lambda: daemon.rated() == 1, 60, "the first photo rated")
    filler = tmp_path / "state" / "filler"
    _fill(filler)
    raws = [small_nef.write(watch / f"DSC_{i:04d}.NEF", tag=501 + i) for i in range(2, 6)]
    daemon.wait_for(lambda: "the journal cannot be written" in daemon.log(), 30, "one line")
    time.sleep(3)  # the daemon keeps going: nothing rated, nothing written
    assert daemon.proc.poll() is None, daemon.log()
    assert not any(sidecar_of(raw).exists() for raw in raws)

    filler.unlink()
    daemon.wait_for(lambda: daemon.rated() == 1 + len(raws), 60, "every photo rated")
    assert daemon.stop()[0] == 0
    log = daemon.log()
    assert log.count("the journal cannot be written") == 1, log
    assert "rating resumes" in log
    assert_rated_once(daemon, [first, *raws])
    with sqlite3.connect(daemon.state_dir / "journal.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- file system oddities ----------------------------------------------------------------


def test_odd_names_are_rated_and_logged_on_one_line_each(daemon_factory, tmp_path, small_nef):
    watch = tmp_path / "odd names"
    watch.mkdir()
    deep = watch.joinpath(*["d" * 60] * 30)  # a path of ~1,900 bytes
    deep.mkdir(parents=True)
    daemon = daemon_factory([watch], workers=1)
    daemon.start()
    names = [
        "with space.NEF",
        unicodedata.normalize("NFC", "Café_ü.NEF"),
        unicodedata.normalize("NFD", "Zoë_NFD.NEF"),  # as macOS writes it
        "new\nline.NEF",
        "x" * 200 + ".NEF",
    ]
    raws = [small_nef.write(watch / name, tag=400 + i) for i, name in enumerate(names)]
    raws.append(small_nef.write(deep / "deep.NEF", tag=499))
    daemon.wait_for(lambda: all(sidecar_of(p).exists() for p in raws), 60, "all sidecars")
    assert daemon.stop()[0] == 0
    assert_rated_once(daemon, raws)  # journal rows under the exact (NFD) names
    log = without_time(daemon.log())
    assert "new\\x0aline.NEF: " in log  # escaped: a name cannot split or forge a log line
    assert not re.search(r"^line\.NEF", log, re.M)
    logged = re.findall(r"^(.+?): (?:\d\*|reject) \S+ keeper_probability=", log, re.M)
    shown = [f"odd names/{n}".replace("\n", "\\x0a") for n in names]
    assert sorted(logged) == sorted([*shown, deep.relative_to(tmp_path).as_posix() + "/deep.NEF"])


def test_files_deleted_or_renamed_before_they_are_rated_get_one_clear_line(
    daemon_factory, tmp_path, small_nef
):
    watch = tmp_path / "in"
    watch.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    # Hardlinks arrive as Created only, so each waits the full settle time: time enough
    # to delete or rename it first.
    daemon = daemon_factory([watch], workers=1, settle_seconds=2.0)
    daemon.start()

    def arrive(name: str, tag: int) -> Path:
        source = small_nef.write(outside / f"src_{name}", tag=tag)
        os.link(source, watch / name)
        daemon.wait_for(lambda: _row(daemon, watch / name) is not None, 10, f"{name} queued")
        return watch / name

    deleted = arrive("DELETED.NEF", 600)
    deleted.unlink()
    renamed = arrive("RENAMED.NEF", 601)
    os.rename(renamed, watch / "NEW_NAME.NEF")
    moved_out = arrive("MOVED_OUT.NEF", 602)
    os.rename(moved_out, outside / "MOVED_OUT.NEF")
    kept = arrive("KEPT.NEF", 603)
    daemon.wait_for(
        lambda: sidecar_of(kept).exists() and sidecar_of(watch / "NEW_NAME.NEF").exists(),
        30,
        "the files that stayed",
    )
    daemon.wait_for(
        lambda: _statuses(daemon, [deleted, moved_out]) == ["skipped", "skipped"], 10, "skips"
    )
    # A reload naming a folder that does not exist is refused; the daemon goes on.
    daemon.write_config([watch, tmp_path / "typo"])
    daemon.send(signal.SIGHUP)
    daemon.wait_for(lambda: "config reload refused" in daemon.log(), 10, "the refusal")
    assert daemon.proc.poll() is None
    assert daemon.stop()[0] == 0

    log = without_time(daemon.log())
    assert "Traceback" not in log
    for gone in (deleted, moved_out):
        lines = [line for line in log.splitlines() if line.startswith(f"in/{gone.name}: ")]
        assert lines == [
            f"in/{gone.name}: gone before it was rated (deleted, renamed or its card pulled)"
        ], lines
        assert not sidecar_of(gone).exists()
    assert not (outside / "MOVED_OUT.xmp").exists()
    assert not sidecar_of(renamed).exists() and str(renamed) not in daemon.rows()
    assert_rated_once(daemon, [kept, watch / "NEW_NAME.NEF"])
    assert "typo does not exist" in log


def test_a_card_unmounted_with_photos_queued_and_mounted_again_loses_none(
    daemon_factory, tmp_path, small_nef
):
    """A real unmount (test_daemon's card test renames the folder): photos that were
    queued when the card went are "gone" (one line each, no crash), and rated when the
    same card is mounted again."""
    store = tmp_path / "card-contents"  # what is on the card; bind-mounted at /media/...
    store.mkdir()
    card = tmp_path / "media" / "NIKON D7100"
    card.mkdir(parents=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to bind-mount a card")
    bound = subprocess.run(["mount", "--bind", str(store), str(card)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bound.stderr.decode().strip()}")
    daemon = daemon_factory([card], workers=1, settle_seconds=3.0)
    daemon.start()
    first = small_nef.write(card / "DSC_0001.NEF", tag=1100)
    daemon.wait_for(lambda: sidecar_of(first).exists(), 30, "a photo before the pull")
    # Two more arrive as a `mv` would (Created only: the full settle time) ...
    queued = []
    for i in (2, 3):
        source = small_nef.write(tmp_path / f"src{i}.NEF", tag=1100 + i)
        os.link(source, store / f"DSC_000{i}.NEF")
        queued.append(card / f"DSC_000{i}.NEF")
        os.utime(queued[-1])  # an event on the mounted path
    daemon.wait_for(lambda: all(_row(daemon, q) for q in queued), 10, "both queued")
    subprocess.run(["umount", str(card)], check=True)  # ... and the card is pulled
    daemon.wait_for(
        lambda: _statuses(daemon, queued) == ["skipped", "skipped"], 15, "gone while queued"
    )
    subprocess.run(["mount", "--bind", str(store), str(card)], check=True)  # back
    try:
        daemon.wait_for(lambda: all(sidecar_of(q).exists() for q in queued), 30, "rated")
        assert daemon.stop()[0] == 0
        assert_rated_once(daemon, [first, *queued])
    finally:
        subprocess.run(["umount", "-l", str(card)], check=False)
    log = daemon.log()
    assert "Traceback" not in log
    for q in queued:
        assert log.count(f"{q.name}: gone before it was rated") == 1


def test_a_symlink_loop_in_a_watched_tree_neither_hangs_nor_rates_twice(
    daemon_factory, tmp_path, small_nef
):
    watch = tmp_path / "shoots"
    shoot = watch / "2026-05-01"
    shoot.mkdir(parents=True)
    old = small_nef.write(shoot / "DSC_0001.NEF", tag=700)
    (shoot / "loop").symlink_to(watch)  # back up the tree
    (watch / "self").symlink_to(watch / "self")  # ELOOP when followed
    daemon = daemon_factory([watch], workers=1)
    daemon.start("--catch-up")
    daemon.wait_for(lambda: sidecar_of(old).exists(), 30, "the scanned file")
    (shoot / "loop2").symlink_to(shoot)  # a new loop while watching
    new = small_nef.write(shoot / "DSC_0002.NEF", tag=701)
    daemon.wait_for(lambda: sidecar_of(new).exists(), 30, "a new file after the loop")
    daemon.send(signal.SIGHUP)  # ... and a rescan through the loops
    time.sleep(2.0)
    assert daemon.stop()[0] == 0
    assert_rated_once(daemon, [old, new])
    assert sorted(daemon.rows()) == sorted([str(old), str(new)])  # no aliases via the links
    assert len(list(shoot.glob("*.xmp"))) == 2


@pytest.mark.slow
def test_100000_files_scanned_at_start_up_with_bounded_memory(daemon_factory, tmp_path, small_nef):
    """An archive of 100,000 photos under a watched folder: the start-up scan walks them
    all (it rates none: they were there before the watch began), the daemon's memory does
    not grow with their number, and new photos are rated meanwhile."""
    archive = tmp_path / "archive"
    count = 0
    for folder in range(100):
        sub = archive / f"{folder:03d}"
        sub.mkdir(parents=True)
        for i in range(1000):
            (sub / f"DSC_{i:04d}.NEF").write_bytes(b"old")  # tiny stand-ins of old photos
            count += 1
    daemon = daemon_factory([archive], workers=1)
    daemon.start("--log-level", "debug", wait=False)  # debug: the scan's count
    pid = daemon.proc.pid
    base_kb = peak_kb = 0
    deadline = time.monotonic() + 120
    while "photos looked at" not in daemon.log():
        rss = status_kb(pid, "VmRSS")
        if " started (pid " in daemon.log():
            base_kb = base_kb or rss
            peak_kb = max(peak_kb, rss)
        assert daemon.proc.poll() is None, daemon.log()[-2000:]
        assert time.monotonic() < deadline, "the start-up scan did not finish"
        time.sleep(0.02)
    new = [small_nef.write(archive / "000" / f"NEW_{i}.NEF", tag=800 + i) for i in range(3)]
    daemon.wait_for(lambda: all(sidecar_of(p).exists() for p in new), 60, "new photos")
    assert daemon.stop()[0] == 0
    scanned = re.search(r"start-up scan of \S+: (\d+) photos looked at", daemon.log())
    assert scanned and int(scanned.group(1)) >= count
    assert len(daemon.rows()) == 3  # nothing of the archive is queued
    growth_mb = (peak_kb - base_kb) / 1024
    print(f"100,000-file scan: main process {base_kb / 1024:.0f} MB, +{growth_mb:.1f} MB peak")
    assert growth_mb < 25, f"the scan grew the daemon by {growth_mb:.0f} MB"


# --- bad configuration and models at start-up ----------------------------------------------


def _broken_models(tmp_path: Path, case: str) -> Path:
    """A copy of the shipped models (for POSTSELECTD_MODELS) with one of them broken."""
    models = tmp_path / "models"
    shutil.copytree(
        ROOT / "models", models, ignore=shutil.ignore_patterns("*.py", "*.md", "LICENSES")
    )
    if case == "missing model":
        (models / "iris_landmark.onnx").unlink()
    elif case == "corrupt model":
        (models / "keeper_head.onnx").write_bytes(b"not a model")
    elif case == "wrong input shape":
        shutil.copy(models / "face_detection_short.onnx", models / "efficientnet_lite0.onnx")
    return models


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing model", "iris_landmark.onnx: model file is missing"),
        ("corrupt model", "keeper_head.onnx: cannot load model"),
        ("wrong input shape", "efficientnet_lite0.onnx"),
        ("config is a folder", "cannot read config (Is a directory)"),
        ("config not text", "config is not UTF-8 text"),
        ("config unreadable", "cannot read config (Permission denied)"),
        ("watch folder missing", "watch.0.path: "),
        ("watch folder is a file", "is not a folder"),
    ],
)
def test_bad_config_or_models_stop_the_daemon_at_start_with_one_line_and_exit_2(
    tmp_path, case, expected
):
    watch = tmp_path / "in"
    watch.mkdir()
    config = tmp_path / "config.yaml"
    settings = {"watch": [{"path": str(watch)}], "state_dir": str(tmp_path / "state")}
    env = dict(
        os.environ,
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
    )
    env.pop("NOTIFY_SOCKET", None)
    if case in ("missing model", "corrupt model", "wrong input shape"):
        env["POSTSELECTD_MODELS"] = str(_broken_models(tmp_path, case))
    if case == "watch folder missing":
        settings["watch"] = [{"path": str(tmp_path / "Pictures" / "Imprt")}]
        expected += f"{tmp_path / 'Pictures' / 'Imprt'} does not exist"
    if case == "watch folder is a file":
        (tmp_path / "file.NEF").write_bytes(b"x")
        settings["watch"] = [{"path": str(tmp_path / "file.NEF")}]
    config.write_text(yaml.safe_dump(settings))
    if case == "config is a folder":
        config.unlink()
        config.mkdir()
    elif case == "config not text":
        config.write_bytes(b"watch: [\xff\xfe]\n")
    popen = {}
    if case == "config unreadable":
        as_user = Unprivileged()
        as_user.lock(config, 0o600)
        popen = as_user.popen
    result = subprocess.run(
        [sys.executable, "-m", "postselectd", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        **popen,
    )
    said = without_time(result.stdout + result.stderr)  # a log line, where it is logged
    lines = [line for line in said.splitlines() if line.strip()]
    assert result.returncode == 2, lines
    assert len(lines) == 1 and expected in lines[0], lines
    assert lines[0].startswith("postselectd: ") and "Traceback" not in lines[0]
    if case.startswith(("watch", "config")):  # refused before it touched anything
        assert not (tmp_path / "state").exists()


def test_a_removable_folder_may_be_absent_at_start_and_doctor_fails_a_missing_one(tmp_path):
    card = tmp_path / "media" / "NIKON D7100"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "watch": [{"path": str(card), "removable": True}, {"path": str(tmp_path / "x")}],
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    env = dict(os.environ, HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    result = subprocess.run(
        [sys.executable, "-m", "postselectd", "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"WARN  watch {card}" in result.stdout and "removable" in result.stdout
    assert f"FAIL  watch {tmp_path / 'x'}" in result.stdout
    assert "will not start" in result.stdout


# --- no way in ---------------------------------------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _net_inodes(pid: int, table: str) -> dict[int, str]:
    """inode -> the table's line, for /proc/PID/net/{tcp,tcp6,udp,udp6,raw,raw6,unix}."""
    try:
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
    except OSError:
        return {}
    column = 6 if table == "unix" else 9
    found = {}
    for line in lines:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit():
            found[int(fields[column])] = line
    return found


def _process_tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def _snapshot(root: Path) -> dict[str, int]:
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                found[path] = os.lstat(path).st_mtime_ns
            except OSError:
                pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_port_no_foreign_writes_and_the_users_umask(tmp_path, small_nef):
    """The daemon and its workers open no TCP/UDP/raw socket and listen on nothing (the
    sd_notify datagram is a Unix socket they send from); every file it creates lies in a
    watched folder, its state folder, its config folder or its cache folder (onnxruntime's
    optimized models), with the user's umask."""
    own = tmp_path / "test-own"  # the test's own files: log, notify socket, sources
    own.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    config_dir = tmp_path / "xdg-config" / "postselectd"
    config_dir.mkdir(parents=True)
    state_dir = tmp_path / "xdg-data" / "postselectd"  # the default: not configured
    watch = home / "Pictures" / "Import"
    watch.mkdir(parents=True)
    (config_dir / "config.yaml").write_text(
        yaml.safe_dump({"watch": [{"path": str(watch)}], "daemon": {"settle_seconds": 0.5}})
    )
    (tmp_path / "tmp").mkdir()
    env = dict(
        os.environ,
        HOME=str(home),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
        TMPDIR=str(tmp_path / "tmp"),
        PYTHONDONTWRITEBYTECODE="1",
        NOTIFY_SOCKET=str(own / "notify.sock"),
    )
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the daemon must turn it off by itself
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(own / "notify.sock"))
    notify.settimeout(60)
    before = _snapshot(tmp_path)
    sources = [small_nef.write(own / f"src{i}.NEF", tag=900 + i) for i in range(2)]
    log_path = own / "daemon.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            preexec_fn=lambda: os.umask(0o027),
        )
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        raws = [shutil.copyfile(s, watch / f"DSC_{i:04d}.NEF") for i, s in enumerate(sources)]
        deadline = time.monotonic() + 60
        while not all(sidecar_of(p).exists() for p in raws):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGHUP)  # a reload too
        time.sleep(1.0)

        pids = _process_tree(proc.pid)
        assert len(pids) >= 3, pids  # the daemon and its workers
        network = {}
        for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "udplite", "udplite6"):
            network.update(_net_inodes(proc.pid, table))
        unix = _net_inodes(proc.pid, "unix")
        for pid in pids:
            for inode in _socket_inodes(pid):
                assert inode not in network, f"pid {pid} has a network socket: {network[inode]}"
                if inode in unix:
                    flags = int(unix[inode].split()[3], 16)
                    assert not flags & 0x10000, f"pid {pid} listens: {unix[inode]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        notify.close()
    assert code == 0, log_path.read_text()

    allowed = [watch, state_dir, config_dir, tmp_path / "xdg-cache" / "postselectd", own]

    def inside_allowed(path: Path) -> bool:
        if any(path == a or a in path.parents for a in allowed):
            return True
        # The folders leading to them (the state folder's parents are created with it).
        return path.is_dir() and any(path in a.parents for a in allowed)

    after = _snapshot(tmp_path)
    written = [p for p, mtime in after.items() if before.get(p) != mtime]
    strays = [p for p in written if not inside_allowed(Path(p))]
    assert strays == [], f"written outside the watched, state and config folders: {strays}"
    umask = 0o027
    created = [p for p in after if p not in before and Path(p) not in raws]  # by the daemon
    assert len(created) >= 3  # sidecars, the journal, ...
    for path in created:
        if own in Path(path).parents:
            continue
        mode = os.lstat(path).st_mode & 0o777
        assert mode & umask == 0, f"{path}: mode {mode:o} ignores the umask {umask:03o}"
    for raw in raws:
        assert os.stat(sidecar_of(raw)).st_mode & 0o777 == 0o640
    assert os.stat(state_dir / "journal.sqlite3").st_mode & 0o777 == 0o640
