"""A disk that fails one photo fails that photo, never the process (issue 21, items 1, 2, 8).

An unreadable sidecar (another user's 0600 file, a folder of that name, EIO on a failing
card, ESTALE on NFS) is the error of its one photo: `score` writes every other sidecar and
exits 1, the real daemon retries it with backoff, marks it failed with its reason and goes
on rating the folder. Whatever ends the daemon, its workers end with it, within seconds.
Root reads every file, so as root the processes run without root's power over file
permissions, and the unreadable sidecar is ``nobody``'s, mode 0600.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_daemon
from conftest import ROOT, Unprivileged, copy_file, run_cli, shared_path
from test_daemon import DaemonProcess, assert_rated_once, sidecar_of

from postselectd.config import Config
from postselectd.sidecar import SidecarContent, SidecarError, read_sidecar, write_sidecars
from postselectd.stages import analyze_file, finish, withdraw_second_truths

daemon_factory = test_daemon.daemon_factory

FOREIGN = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5" xmp:Label="Red"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
CONTENT = SidecarContent(
    stars=3,
    label=None,
    keywords=("keeper",),
    keyword_parent="PostSelect",
    keeper_probability=0.8,
    reasons=(),
    model_version="test",
)


class FaultDaemon(DaemonProcess):
    """tests/test_daemon.py's real daemon, started so file permissions apply to it
    (``as_user``), or through a small script (``launcher``, run with python -c) that
    injects a fault."""

    def __init__(
        self,
        tmp_path: Path,
        watches: list[Path],
        *,
        as_user: Unprivileged | None = None,
        launcher: str | None = None,
        **settings,
    ):
        super().__init__(tmp_path, watches, **settings)
        self.popen = as_user.popen if as_user else {}
        self.launcher = launcher

    def start(self, *args: str, env: dict | None = None, wait: bool = True) -> None:
        log = self.tmp / f"daemon-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self._log_file = open(log, "w")
        entry = ["-c", self.launcher] if self.launcher else ["-m", "postselectd"]
        self.proc = subprocess.Popen(
            [sys.executable, *entry, "run", "--config", str(self.config_path)]
            + ["--log-level", "info", *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**self.env, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
            cwd=ROOT,
            **self.popen,
        )
        if wait:
            self.wait_for(lambda: " started (pid " in self.log(), 90, "the start-up line")


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found += children
                todo += children
        except (OSError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _settled(daemon: DaemonProcess, photos: list[Path]):
    """For wait_for: every one of ``photos`` is in the journal and none is pending (each
    rated, skipped or failed after its retries)."""

    def settled() -> bool:
        rows = daemon.rows()
        return all(str(p) in rows and rows[str(p)].status != "pending" for p in photos)

    return settled


def _status(daemon: DaemonProcess) -> str:
    shown = run_cli("status", "--config", str(daemon.config_path), env=daemon.env)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


# --- item 1: an unreadable sidecar is its photo's failure ---------------------------------


@pytest.mark.parametrize("code", [errno.EIO, errno.ESTALE])
def test_a_sidecar_read_error_is_that_photos_sidecar_error(tmp_path, monkeypatch, code):
    """EIO (a failing card) or ESTALE (NFS) while reading the existing sidecar: a
    SidecarError naming the file and the reason, the sidecar as it was, no temp left."""
    folder = tmp_path / "card"
    folder.mkdir()
    photo = folder / "DSC_0001.NEF"
    photo.write_bytes(b"raw")
    sidecar = folder / "DSC_0001.xmp"
    sidecar.write_bytes(FOREIGN)
    real_read = Path.read_bytes

    def failing_read(self: Path) -> bytes:
        if self.name == sidecar.name:
            raise OSError(code, os.strerror(code), str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    with pytest.raises(SidecarError) as caught:
        write_sidecars(photo, CONTENT, ["lightroom"])
    assert str(caught.value) == (
        f"DSC_0001.xmp: existing sidecar cannot be read ({os.strerror(code)}); left untouched"
    )
    monkeypatch.undo()
    assert sidecar.read_bytes() == FOREIGN
    assert sorted(p.name for p in folder.iterdir()) == ["DSC_0001.NEF", "DSC_0001.xmp"]


def test_finish_turns_any_os_error_into_the_files_error(tmp_path, monkeypatch):
    """Pipeline.finish (the daemon's and `score`'s one place a sidecar is written): an
    EIO on one photo's sidecar is that result's error; the next photo is written."""
    folder = tmp_path / "card"
    first = copy_file(shared_path("samples", "nef", "DSC_0101.NEF"), folder)
    second = copy_file(shared_path("samples", "nef", "DSC_0103.NEF"), folder)
    sidecar_of(first).write_bytes(FOREIGN)
    config = Config()
    scored = [analyze_file(first), analyze_file(second)]
    real_read = Path.read_bytes

    def failing_read(self: Path) -> bytes:
        if self.name == sidecar_of(first).name:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    results = [finish(s, config) for s in scored]
    monkeypatch.undo()
    assert results[0].error == (
        "DSC_0101.xmp: existing sidecar cannot be read (Input/output error); left untouched"
    )
    assert results[1].error is None and results[1].sidecars == (sidecar_of(second),)
    assert sidecar_of(first).read_bytes() == FOREIGN


def test_a_jpegs_sidecar_that_cannot_be_looked_at_is_left_when_its_raw_is_rated(
    tmp_path, monkeypatch
):
    """DSC_0001.JPG was rated (darktable: DSC_0001.JPG.xmp) before DSC_0001.NEF arrived;
    once the raw is rated its verdict is withdrawn from the JPEG's sidecar. A stat of that
    sidecar failing with EIO leaves it as it is instead of escaping (after the raw's
    rating: the daemon stopped)."""
    folder = tmp_path / "card"
    raw = copy_file(shared_path("samples", "nef", "DSC_0101.NEF"), folder, "DSC_0001.NEF")
    jpeg = copy_file(shared_path("samples", "nef", "DSC_0103.NEF"), folder, "DSC_0001.JPG")
    config = Config.model_validate({"sidecar": {"profiles": ["darktable"]}})
    assert finish(analyze_file(jpeg), config).error is None
    jpeg_sidecar = folder / "DSC_0001.JPG.xmp"
    before = jpeg_sidecar.read_bytes()
    real_stat = os.stat

    def failing_stat(path, *args, **kwargs):
        if os.fsdecode(path).endswith(jpeg_sidecar.name):
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    assert withdraw_second_truths(raw, config) == [jpeg]
    monkeypatch.undo()
    assert jpeg_sidecar.read_bytes() == before


def test_score_writes_every_other_sidecar_and_reports_the_unreadable_ones(unprivileged, tmp_path):
    """Four photos; the first's sidecar is another user's 0600 file, the second's name is
    a folder: `score` says so for each, writes the other two and exits 1."""
    folder = tmp_path / "shoot"
    names = ["DSC_0101.NEF", "DSC_0102.NEF", "DSC_0103.NEF", "DSC_0104.NEF"]
    raws = [copy_file(shared_path("samples", "nef", n), folder) for n in names]
    unprivileged.unreadable_file(sidecar_of(raws[0]), FOREIGN)
    sidecar_of(raws[1]).mkdir()
    env = dict(os.environ)
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "no-config"))
    result = subprocess.run(
        [sys.executable, "-m", "postselectd", "score", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        **unprivileged.popen,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert (
        "DSC_0101.xmp: existing sidecar cannot be read (Permission denied); left untouched"
    ) in result.stderr
    assert "DSC_0102.xmp: is a folder, not a sidecar; left untouched" in result.stderr
    for raw in raws[2:]:
        assert "Xmp.postselect.KeeperProbability" in read_sidecar(sidecar_of(raw))
    unprivileged.release(sidecar_of(raws[0]))
    assert sidecar_of(raws[0]).read_bytes() == FOREIGN
    assert sidecar_of(raws[1]).is_dir() and not any(sidecar_of(raws[1]).iterdir())


def test_daemon_fails_only_the_photos_whose_sidecar_it_cannot_read(unprivileged, tmp_path):
    """The real daemon (as root, without root's power over file permissions): a sidecar
    of another user's, mode 0600, and a folder named like a sidecar each fail their photo
    after the retries, with the reason in the journal and the log; the daemon stays up
    and rates the folder's other photos, before and after a restart."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = FaultDaemon(
        tmp_path, [watch], as_user=unprivileged, max_retries=2, retry_backoff_seconds=0.2
    )
    try:
        daemon.start()
        names = ["DSC_0101.NEF", "DSC_0102.NEF", "DSC_0103.NEF", "DSC_0104.NEF"]
        unreadable, folder_named = watch / "DSC_0101.xmp", watch / "DSC_0102.xmp"
        unprivileged.unreadable_file(unreadable, FOREIGN)
        folder_named.mkdir()
        raws = [copy_file(shared_path("samples", "nef", n), watch) for n in names]

        daemon.wait_for(_settled(daemon, raws), 120, "every photo rated or failed")
        assert daemon.proc.poll() is None
        rows = daemon.rows()
        assert_rated_once(daemon, raws[2:])
        first, second = rows[str(raws[0])], rows[str(raws[1])]
        assert (first.status, first.attempts) == ("failed", 3)
        assert first.reason == (
            "DSC_0101.xmp: existing sidecar cannot be read (Permission denied); left untouched"
        )
        assert (second.status, second.reason) == (
            "failed",
            "DSC_0102.xmp: is a folder, not a sidecar; left untouched",
        )
        log = daemon.log()
        assert "Traceback" not in log, log[-3000:]
        assert log.count("DSC_0101.NEF: DSC_0101.xmp: existing sidecar cannot be read") == 2
        assert "DSC_0101.NEF: failed: DSC_0101.xmp: existing sidecar" in log
        shown = _status(daemon)
        assert (
            f"{raws[0]}: DSC_0101.xmp: existing sidecar cannot be read (Permission denied); "
            "left untouched (3 attempts)"
        ) in shown
        assert f"{raws[1]}: DSC_0102.xmp: is a folder, not a sidecar; left untouched" in shown

        # The next photo after a restart is rated too: nothing is left to crash-loop on.
        assert daemon.stop()[0] == 0
        daemon.start()
        later = copy_file(shared_path("samples", "nef", "DSC_0105.NEF"), watch)
        daemon.wait_for(lambda: daemon.rated() == 3, 60, "the photo after the restart")
        assert_rated_once(daemon, [*raws[2:], later])
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()
    owner = unreadable.stat().st_uid
    unprivileged.release(unreadable)
    assert unreadable.read_bytes() == FOREIGN
    assert owner == (65534 if unprivileged.root else os.getuid())
    assert folder_named.is_dir() and not any(folder_named.iterdir())


# A failing card or a stale NFS handle, in the daemon's own process (its workers read the
# photos as usual): every look at one of the files named in POSTSELECTD_TEST_FAIL
# ("EIO:DSC_0104.NEF,...") fails with that error, as stat and open do on a bad inode.
FAILING_FILES = """
import builtins, errno, io, os, sys
from postselectd import cli

FAIL = dict(
    (name, getattr(errno, code))
    for code, name in (item.split(":") for item in os.environ["POSTSELECTD_TEST_FAIL"].split(","))
)

def failing(call):
    def look(path, *args, **kwargs):
        try:
            code = FAIL.get(os.path.basename(os.fsdecode(path)))
        except TypeError:  # a file descriptor
            code = None
        if code:
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return call(path, *args, **kwargs)
    return look

os.stat, os.lstat, os.open = failing(os.stat), failing(os.lstat), failing(os.open)
builtins.open = io.open = failing(io.open)

class Entry:  # a folder listing's entry, whose stat fails like os.stat's
    def __init__(self, entry):
        self._entry = entry
    def __getattr__(self, name):
        return getattr(self._entry, name)
    def stat(self, *args, **kwargs):
        return failing(lambda path, *a, **k: self._entry.stat(*a, **k))(self.path, *args, **kwargs)

class Listing:  # what os.scandir gives: an iterator, and a context manager
    def __init__(self, entries):
        self._entries = iter(list(entries))
    def __iter__(self):
        return self
    def __next__(self):
        return next(self._entries)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False
    def close(self):
        pass

scandir = os.scandir
os.scandir = lambda path=".": Listing(Entry(e) for e in scandir(path))
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("code", ["EIO", "ESTALE"])
def test_a_photo_the_daemon_cannot_look_at_fails_alone_with_its_reason(tmp_path, code):
    """A photo whose every stat and open fails (EIO on a failing card, ESTALE on NFS) from
    the moment it arrives: it is queued, retried with backoff and failed with the reason,
    `status` says so, and the folder's other photos are rated."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = FaultDaemon(
        tmp_path, [watch], launcher=FAILING_FILES, max_retries=2, retry_backoff_seconds=0.2
    )
    try:
        daemon.start(env={"POSTSELECTD_TEST_FAIL": f"{code}:DSC_0104.NEF"})
        names = ["DSC_0104.NEF", "DSC_0102.NEF", "DSC_0103.NEF"]
        raws = [copy_file(shared_path("samples", "nef", n), watch) for n in names]

        daemon.wait_for(_settled(daemon, raws), 90, "every photo rated or failed")
        assert daemon.proc.poll() is None
        reason = f"cannot read file ({os.strerror(getattr(errno, code))})"
        row = daemon.rows()[str(raws[0])]
        assert (row.status, row.attempts, row.reason) == ("failed", 3, reason)
        assert_rated_once(daemon, raws[1:])
        log = daemon.log()
        assert "Traceback" not in log, log[-3000:]
        assert log.count(f"card/DSC_0104.NEF: {reason}; retrying in") == 2
        assert f"card/DSC_0104.NEF: failed: {reason}" in log
        assert f"{raws[0]}: {reason} (3 attempts)" in _status(daemon)
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()
    assert not sidecar_of(raws[0]).exists()


def test_a_photo_the_scan_cannot_look_at_fails_with_its_reason(tmp_path):
    """Photos copied while the daemon was stopped are found by its scan at the next start;
    one whose stat fails with EIO is not passed over without a word: it fails with its
    reason, and the other is rated."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = FaultDaemon(
        tmp_path, [watch], launcher=FAILING_FILES, max_retries=1, retry_backoff_seconds=0.2
    )
    try:
        daemon.start(env={"POSTSELECTD_TEST_FAIL": "EIO:nothing"})
        assert daemon.stop()[0] == 0
        raws = [
            copy_file(shared_path("samples", "nef", n), watch)
            for n in ("DSC_0104.NEF", "DSC_0102.NEF")
        ]
        daemon.start(env={"POSTSELECTD_TEST_FAIL": "EIO:DSC_0104.NEF"})

        daemon.wait_for(_settled(daemon, raws), 90, "both photos rated or failed")
        reason = f"cannot read file ({os.strerror(errno.EIO)})"
        row = daemon.rows()[str(raws[0])]
        assert (row.status, row.reason) == ("failed", reason)
        assert_rated_once(daemon, raws[1:])
        assert f"card/DSC_0104.NEF: failed: {reason}" in daemon.log()
        assert "Traceback" not in daemon.log(), daemon.log()[-3000:]
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()


def test_a_rated_photo_the_daemon_can_no_longer_look_at_stops_nothing(tmp_path):
    """DSC_0101.NEF is rated; after a restart every look at it fails with EIO (its card
    is failing). The next photo of its folder is rated all the same (its burst is looked
    for among the rated ones), the daemon stays up, and the journal does not take the
    unreadable photo for a deleted one and forget its rating."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = FaultDaemon(tmp_path, [watch], launcher=FAILING_FILES)
    try:
        daemon.start(env={"POSTSELECTD_TEST_FAIL": "EIO:nothing"})
        names = ["DSC_0101.NEF", "DSC_0102.NEF"]
        raws = [copy_file(shared_path("samples", "nef", n), watch) for n in names]
        daemon.wait_for(lambda: daemon.rated() == 2, 90, "the first two photos")
        assert daemon.stop()[0] == 0
        daemon.start(env={"POSTSELECTD_TEST_FAIL": "EIO:DSC_0101.NEF"})
        later = copy_file(shared_path("samples", "nef", "DSC_0103.NEF"), watch)
        daemon.wait_for(lambda: daemon.rated() == 3, 60, "the photo after the restart")
        assert daemon.proc.poll() is None
        assert "Traceback" not in daemon.log(), daemon.log()[-3000:]
        assert_rated_once(daemon, [*raws, later])
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()


# An OS error where no step of the daemon expects one, for one photo: at dispatch (after
# its analysis was sent to a worker) or once its analysis is back (placing it in a burst).
FAILING_STEP = """
import errno, os, sys
from postselectd import cli
from postselectd.daemon import scheduler, verdicts

NAME, STEP = os.environ["POSTSELECTD_TEST_FAIL"].split(":")

def eio(path):
    if os.path.basename(str(path)) == NAME:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

capture_time_of, frame_of = scheduler.capture_time_of, verdicts.frame_of
if STEP == "dispatch":
    scheduler.capture_time_of = lambda path: (eio(path), capture_time_of(path))[1]
else:
    verdicts.frame_of = lambda scored, policy: (eio(scored.path), frame_of(scored, policy))[1]
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("step", ["dispatch", "settle"])
def test_an_os_error_no_step_foresaw_fails_that_photo_alone(tmp_path, step):
    """The backstop: wherever an OS error on one photo comes from, it is that photo's
    failed attempt (retried, then failed with its reason), and the daemon rates the
    folder's other photos and stays up."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = FaultDaemon(
        tmp_path, [watch], launcher=FAILING_STEP, max_retries=1, retry_backoff_seconds=0.2
    )
    try:
        daemon.start(env={"POSTSELECTD_TEST_FAIL": f"DSC_0104.NEF:{step}"})
        names = ["DSC_0104.NEF", "DSC_0102.NEF", "DSC_0103.NEF"]
        raws = [copy_file(shared_path("samples", "nef", n), watch) for n in names]

        daemon.wait_for(_settled(daemon, raws), 90, "two photos rated and the third failed")
        assert daemon.proc.poll() is None
        reason = f"cannot read file ({os.strerror(errno.EIO)})"
        row = daemon.rows()[str(raws[0])]
        assert (row.status, row.attempts, row.reason) == ("failed", 2, reason)
        assert_rated_once(daemon, raws[1:])
        assert f"card/DSC_0104.NEF: failed: {reason}" in daemon.log()
        assert "Traceback" not in daemon.log(), daemon.log()[-3000:]
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()
    assert not sidecar_of(raws[0]).exists()


def test_a_watched_folder_that_cannot_be_looked_at_stops_nothing(tmp_path):
    """A watched folder whose stat fails with EIO when the daemon starts (a failing disk,
    a stale NFS mount): one line says so, and the daemon starts and rates the other
    folders, instead of exiting into a restart loop on the same error."""
    failing, fine = tmp_path / "card", tmp_path / "desk"
    failing.mkdir()
    fine.mkdir()
    daemon = FaultDaemon(tmp_path, [failing, fine], launcher=FAILING_FILES)
    try:
        daemon.start(env={"POSTSELECTD_TEST_FAIL": "EIO:card"})
        raw = copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), fine)
        daemon.wait_for(lambda: daemon.rated() == 1, 60, "the other folder's photo")
        assert_rated_once(daemon, [raw])
        log = daemon.log()
        assert "Traceback" not in log, log[-3000:]
        line = f"{failing} cannot be looked at ({os.strerror(errno.EIO)}); watched once it can be"
        assert log.count(line) == 1, log[-3000:]
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()


# --- item 2: whatever ends the daemon ends its workers ------------------------------------

FAILING_SHUTDOWN = """
import sys
from postselectd import cli, watcher

def stop(self):
    raise RuntimeError("injected fault: the file watcher cannot be stopped")

watcher.Watcher.stop = stop
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_exception_while_stopping_still_ends_the_workers_and_the_process(tmp_path, unprivileged):
    """An exception escapes the daemon's shutdown before the worker pool is closed: the
    process still exits within seconds (the workers ignore SIGTERM, and the interpreter's
    exit would wait for them for ever) and leaves no process behind."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = FaultDaemon(tmp_path, [watch], launcher=FAILING_SHUTDOWN, as_user=unprivileged)
    children: list[int] = []
    try:
        daemon.start()
        children = [c for c in _descendants(daemon.proc.pid) if _alive(c)]
        assert len(children) >= 2, "no worker processes found"
        daemon.send(signal.SIGTERM)
        try:
            code = daemon.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon did not exit within 30 s of SIGTERM:\n" + daemon.log()[-2000:])
        deadline = time.monotonic() + 5
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in children if _alive(c)], "worker processes left behind"
        assert code != 0
        assert "injected fault: the file watcher cannot be stopped" in daemon.log()
    finally:
        daemon.kill()
        for child in children:
            if _alive(child):
                os.kill(child, signal.SIGKILL)


# Startup: the workers are running (their models loaded) when the file watcher fails to
# start; or the pool's third worker cannot be started (fork or spawn: EAGAIN, EMFILE).
FAILING_STARTS = {
    "the watcher": """
import sys
from postselectd import cli, watcher

def start(self, *args, **kwargs):
    raise RuntimeError("injected fault: the file watcher cannot start")

watcher.Watcher.__init__ = start
sys.exit(cli.main(sys.argv[1:]))
""",
    "a worker": """
import errno, sys, time
from pathlib import Path
from postselectd import cli, workers

spawn = workers.WorkerPool._spawn

def ignores_sigterm(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return int(mask, 16) & (1 << 14)  # SIGTERM is 15

def third_fails(self, *how):
    if len(self._workers) < 2:
        return spawn(self, *how)
    # Once the first two ignore SIGTERM, as every worker does from its first instant on.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(ignores_sigterm(w.process.pid) for w in self._workers.values()):
            break
        time.sleep(0.05)
    raise OSError(errno.EAGAIN, "injected fault: Resource temporarily unavailable")

workers.WorkerPool._spawn = third_fails
sys.exit(cli.main(sys.argv[1:]))
""",
}


@pytest.mark.parametrize("what", list(FAILING_STARTS))
def test_an_exception_while_starting_still_ends_the_workers_and_the_process(
    tmp_path, what, unprivileged
):
    """An exception escapes the daemon's start-up once worker processes run: the process
    exits by itself within seconds, non-zero, with the error in its log, and leaves no
    worker behind (left to the interpreter's exit, they would be waited for for ever)."""
    watch = tmp_path / "card"
    watch.mkdir()
    daemon = FaultDaemon(
        tmp_path, [watch], launcher=FAILING_STARTS[what], workers=3, as_user=unprivileged
    )
    daemon.start(wait=False)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while daemon.proc.poll() is None and time.monotonic() < deadline:
            seen.update(_descendants(daemon.proc.pid))
            time.sleep(0.05)
        code = daemon.proc.poll()
        if code is None:
            pytest.fail(f"the daemon did not exit within 90 s:\n{daemon.log()[-2000:]}")
        deadline = time.monotonic() + 5
        while any(_alive(c) for c in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen, "no worker process was seen"
        assert not [c for c in seen if _alive(c)], "worker processes left behind"
        assert code != 0
        assert "injected fault" in daemon.log()
        if what == "a worker":  # the system's refusal: one line, and restarted (exit 1)
            assert code == 1
            assert "Traceback" not in daemon.log(), daemon.log()
            assert (
                "postselectd: cannot start the worker processes: injected fault: "
                "Resource temporarily unavailable"
            ) in daemon.log()
    finally:
        daemon.kill()
        for child in seen:
            if _alive(child):
                os.kill(child, signal.SIGKILL)
