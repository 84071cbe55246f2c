"""Hostile files, broken disks, odd names: photos untouched, sidecars whole, runs finish."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from conftest import DATA, ROOT, copy_file, run_cli, shared_path

from postselectd.sidecar import (
    SidecarContent,
    SidecarError,
    read_sidecar,
    validate_xmp,
    write_sidecars,
)
from postselectd.workers import tree_rss_kb

FUZZ_CORPUS = DATA / "fuzz"


def corpus_files() -> list[Path]:
    return sorted(p for p in FUZZ_CORPUS.iterdir() if p.suffix != ".md")


def _mutations(source: Path, count: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """Truncations, byte flips, zeroed IFD-sized runs and a swapped extension."""
    data = source.read_bytes()
    if len(data) > 1_500_000:
        # Keep the small previews (NEF: 640 px and 1620 px JPEGs) but not 4 MB per copy.
        data = data[:1_300_000]
    out = []
    for index in range(count):
        kind = index % 4
        blob = bytearray(data)
        if kind == 0:
            blob = blob[: rng.randrange(1, len(blob))]
        elif kind == 1:
            for _ in range(rng.randrange(1, 40)):
                blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        elif kind == 2:
            # Zero 12-byte runs (a TIFF IFD entry's size) in the first 64 KB, where the
            # directories live.
            for _ in range(rng.randrange(1, 8)):
                at = rng.randrange(min(len(blob), 65536))
                blob[at : at + 12] = bytes(min(12, len(blob) - at))
        else:
            for _ in range(3):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
        out.append((f"{kind}", bytes(blob)))
    return out


@pytest.mark.slow
def test_fuzzed_raws_never_crash_hang_or_get_a_sidecar_without_a_preview(tmp_path: Path):
    rng = random.Random(20261127)
    sources = sorted(shared_path("samples", "raw", "good").iterdir())
    sources += sorted(shared_path("samples", "raw", "broken").iterdir())
    sources += [
        shared_path("samples", "nef", "DSC_0102.NEF"),
        shared_path("samples", "nef", "DSC_0108.NEF"),
    ]
    folder = tmp_path / "fuzz"
    folder.mkdir()
    suffixes = [".NEF", ".CR2", ".CR3", ".ARW", ".DNG", ".RAF", ".ORF", ".RW2", ".JPG"]
    count = 0
    for source in sources:
        # Mutated NEFs mostly keep a decodable preview and cost a full analysis each; the
        # small broken raws are cheap and exercise the parsers just as hard.
        per_source = 40 if "DSC" in source.name else 95
        for kind, blob in _mutations(source, per_source, rng):
            # Every fourth keeps a wrong extension: the bytes decide, not the name.
            suffix = rng.choice(suffixes) if count % 4 == 3 else source.suffix
            (folder / f"f{count:05d}_{kind}{suffix}").write_bytes(blob)
            count += 1
    for corpus_file in corpus_files():
        # Prefixed: the corpus came from this very generator, so its names recur above.
        shutil.copy(corpus_file, folder / f"corpus_{corpus_file.name}")
        count += 1
    assert count >= 2000

    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "noconfig"))
    # Output to files: a pipe nobody drains while we watch memory would block the run.
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "postselectd", "score", "--json", str(folder)],
            stdout=out,
            stderr=err,
            env=env,
            cwd=ROOT,
        )
    peak = 0
    deadline = time.monotonic() + 900
    while process.poll() is None:
        peak = max(peak, tree_rss_kb(process.pid))
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("score hung on the fuzzed corpus")
        time.sleep(0.5)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    assert process.returncode in (0, 1), stderr[-3000:]
    assert "Traceback" not in stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    assert len(records) == count
    for record in records:
        sidecar = Path(record["path"]).with_suffix(".xmp")
        if record["error"]:
            assert not sidecar.exists(), record
            assert "internal error" not in record["error"], record
        else:
            assert sidecar.exists(), record
            validate_xmp(sidecar.read_bytes(), sidecar.name)
    # Two workers with their models and one preview each, plus the main process.
    assert peak < 1_500_000, f"peak RSS {peak / 1024:.0f} MB"
    refused = sum(1 for r in records if r["error"])
    print(f"fuzz: {count} files, {refused} refused, peak RSS {peak / 1024:.0f} MB")


def test_regression_corpus_is_refused_or_rated_cleanly(tmp_path: Path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for corpus_file in corpus_files():
        shutil.copy(corpus_file, folder / corpus_file.name)
    result = run_cli("score", "--json", str(folder))
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stdout
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(corpus_files())


# --- sidecars stay whole ----------------------------------------------------------------

CONTENT = SidecarContent(
    stars=4,
    label="Green",
    keywords=("select",),
    keyword_parent="PostSelect",
    keeper_probability=0.95,
    reasons=(),
    model_version="test",
)


WRITER = r"""
import sys
from pathlib import Path
from postselectd.sidecar import SidecarContent, write_sidecars
photo = Path(sys.argv[1])
n = 0
while True:
    n += 1
    stars = 1 + n % 5
    content = SidecarContent(
        stars=stars, label=None, keywords=("k%d" % n,), keyword_parent="PostSelect",
        keeper_probability=0.5, reasons=(), model_version="kill-test",
        details=(("Counter", str(n)),),
    )
    write_sidecars(photo, content, ["lightroom"], force=True)
    print(n, flush=True)
"""


def test_sigkill_at_random_moments_never_tears_a_sidecar(tmp_path: Path):
    photo = tmp_path / "DSC_0001.NEF"
    photo.write_bytes(b"raw bytes that must never change")
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "lightroom_sidecar.xmp", sidecar)
    foreign = {k: v for k, v in read_sidecar(sidecar).items() if k.startswith("Xmp.crs.")}
    rng = random.Random(5)
    writes = kills = 0
    while writes < 300:  # a few hundred writes, each writer killed at a random moment
        kills += 1
        assert kills <= 300, f"only {writes} writes in {kills} runs"
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(photo)], stdout=subprocess.PIPE, cwd=ROOT, text=True
        )
        # Let it get going (import + a first write), then kill it at a random moment.
        writer.stdout.readline()
        time.sleep(rng.uniform(0, 0.3))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writes += 1 + len(writer.stdout.read().split())
        data = sidecar.read_bytes()
        validate_xmp(data, sidecar.name)  # parses: never torn, never empty
        xmp = read_sidecar(sidecar)
        counter = int(xmp["Xmp.postselect.Counter"])  # the old or the new version, whole
        assert xmp["Xmp.xmp.Rating"] == str(1 + counter % 5)
        assert xmp["Xmp.lr.hierarchicalSubject"] == [
            "Events|wedding",
            "People|Anna",
            f"PostSelect|k{counter}",
        ]
        for key, value in foreign.items():
            assert xmp[key] == value
        # At most the temp of the writer just killed; earlier ones were cleaned up.
        assert len(list(tmp_path.glob(".DSC_0001.xmp.postselectd-*.tmp"))) <= 1
    write_sidecars(photo, CONTENT, ["lightroom"], force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DSC_0001.NEF", "DSC_0001.xmp"]
    assert photo.read_bytes() == b"raw bytes that must never change"


def _mount_tmpfs(target: Path, size: str) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a size-limited tmpfs")
    target.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")


def _fill(path: Path) -> None:
    """Write zeros until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_disk_full_leaves_the_old_sidecar_intact(tmp_path: Path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "64k")
    try:
        photo = disk / "DSC_0001.NEF"
        photo.write_bytes(b"x" * 1000)
        sidecar = photo.with_suffix(".xmp")
        shutil.copy(DATA / "lightroom_sidecar.xmp", sidecar)
        before = sidecar.read_bytes()
        filler = disk / "filler"
        _fill(filler)
        with pytest.raises(SidecarError, match="disk full"):
            write_sidecars(photo, CONTENT, ["lightroom"])
        assert sidecar.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["DSC_0001.NEF", "DSC_0001.xmp", "filler"]
        filler.unlink()
        write_sidecars(photo, CONTENT, ["lightroom"])  # space again: it goes through
        assert read_sidecar(sidecar)["Xmp.xmp.Rating"] == "4"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_over_quota_is_like_a_full_disk_the_photo_waits_for_space(tmp_path: Path, monkeypatch):
    # Issue #19: EDQUOT (a user's quota on a NAS share) is no fault of the photo: like
    # ENOSPC it waits for space, the old sidecar intact, instead of failing after retries.
    from postselectd.daemon import folder_trouble

    photo = tmp_path / "DSC_0001.NEF"
    photo.write_bytes(b"x" * 1000)
    sidecar = photo.with_suffix(".xmp")
    shutil.copy(DATA / "lightroom_sidecar.xmp", sidecar)
    before = sidecar.read_bytes()

    def over_quota(fd: int, data) -> int:  # the fault: every write is over quota
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "write", over_quota)
    with pytest.raises(SidecarError, match="quota exceeded") as caught:
        write_sidecars(photo, CONTENT, ["lightroom"])
    monkeypatch.undo()
    assert caught.value.waits_for == "space"
    assert sidecar.read_bytes() == before
    assert folder_trouble(tmp_path, caught.value.waits_for) == "full"  # it waits for space
    assert folder_trouble(tmp_path, None) is None  # a file's own failure still counts


def test_score_on_a_full_disk_reports_each_file_and_keeps_going(tmp_path: Path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "8m")
    try:
        copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), disk)
        copy_file(shared_path("samples", "nef", "DSC_0104.NEF"), disk)
        _fill(disk / "filler")
        result = run_cli("score", "--json", str(disk))
        assert result.returncode == 1
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(records) == 2 and all("disk full" in r["error"] for r in records)
        assert not list(disk.glob("*.xmp")) and not list(disk.glob(".*tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# --- names and links --------------------------------------------------------------------


def test_odd_names_are_rated_and_get_their_own_sidecars(tmp_path: Path):
    nef = shared_path("samples", "nef", "DSC_0102.NEF")
    folder = tmp_path / "odd names"
    names = [
        "with space.NEF",
        unicodedata.normalize("NFC", "Café_ü.NEF"),
        unicodedata.normalize("NFD", "Zoë_NFD.NEF"),
        "new\nline.NEF",
        "x" * 200 + ".NEF",
    ]
    for name in names:
        copy_file(nef, folder, name)
    deep = folder.joinpath(*["a" * 50] * 40)  # a path longer than 2,000 bytes
    copy_file(nef, deep, "deep.NEF")
    result = run_cli("score", "--json", str(folder))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(names) + 1
    for record in records:
        assert Path(record["sidecar"][0]).exists()
        assert Path(record["sidecar"][0]).name == Path(record["path"]).stem + ".xmp"


def test_sidecar_goes_next_to_the_link_the_user_sees(tmp_path: Path):
    store = tmp_path / "store"
    real = copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), store)
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    (shoot / "DSC_0102.NEF").symlink_to(real)
    (shoot / "loop").symlink_to(shoot)  # a symlink loop must not hang the scan
    result = run_cli("score", "--json", str(shoot))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["path"]).name for r in records] == ["DSC_0102.NEF"]
    assert (shoot / "DSC_0102.xmp").exists()
    assert not (store / "DSC_0102.xmp").exists()


def test_file_deleted_before_it_is_rated_is_one_clear_error(tmp_path: Path):
    from postselectd.stages import analyze_file

    missing = tmp_path / "DSC_0009.NEF"
    scored = analyze_file(missing)
    assert scored.analysis is None and "gone" in scored.error


def test_corrupt_model_is_one_message_and_exit_2(tmp_path: Path):
    models = tmp_path / "models"
    shutil.copytree(
        ROOT / "models", models, ignore=shutil.ignore_patterns("*.py", "*.md", "LICENSES")
    )
    (models / "keeper_head.onnx").write_bytes(b"not a model")
    photo = copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), tmp_path / "shoot")
    result = run_cli("score", str(photo), env={"POSTSELECTD_MODELS": str(models)})
    assert result.returncode == 2
    assert "keeper_head.onnx: cannot load model" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "swap", [("efficientnet_lite0.onnx", "face_detection_short.onnx"), ("iris_landmark.onnx", None)]
)
def test_wrong_or_missing_model_fails_at_start(tmp_path: Path, swap):
    models = tmp_path / "models"
    shutil.copytree(
        ROOT / "models", models, ignore=shutil.ignore_patterns("*.py", "*.md", "LICENSES")
    )
    target, replacement = swap
    if replacement:
        shutil.copy(models / replacement, models / target)
    else:
        (models / target).unlink()
    photo = copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), tmp_path / "shoot")
    result = run_cli("score", str(photo), env={"POSTSELECTD_MODELS": str(models)})
    assert result.returncode == 2
    assert target in result.stderr and "Traceback" not in result.stderr


# --- decoder isolation --------------------------------------------------------------------


def misbehaving_worker(worker_id, tasks, results, config):
    """A worker that crashes on files named *crash*, hangs on *hang*, else works normally.

    Fault injection only: the real worker (postselectd.workers._worker_main) does the rest.
    """
    from postselectd import workers

    real_tasks_recv = tasks.recv

    def recv():
        task = real_tasks_recv()
        if task is not None:
            name = Path(task[1]).name
            if "crash" in name:
                os.kill(os.getpid(), signal.SIGSEGV)
            if "hang" in name:
                time.sleep(3600)
        return task

    tasks.recv = recv
    workers._worker_main(worker_id, tasks, results, config)


def noisy_worker(worker_id, tasks, results, config):
    """A worker whose decoder prints to file descriptor 2, as LibRaw and libjpeg do for a
    damaged file, once before its body starts and then with every file."""
    from postselectd import workers

    os.write(2, b"said before the body started\n")
    real_tasks_recv = tasks.recv

    def recv():
        os.write(2, b"Premature end of JPEG file\n")
        return real_tasks_recv()

    tasks.recv = recv
    workers._worker_main(worker_id, tasks, results, config)


def test_what_a_decoder_prints_in_a_worker_stays_out_of_the_output(tmp_path: Path, capfd):
    # The daemon logs one line per file, and score, report and train show progress: stray
    # decoder complaints between them read as errors of some other file.
    from postselectd.config import Config
    from postselectd.pipeline import Pipeline

    folder = tmp_path / "shoot"
    for name in ("a.NEF", "b.NEF"):
        copy_file(shared_path("samples", "nef", "DSC_0102.NEF"), folder, name)
    with Pipeline(Config(), workers=2, worker_target=noisy_worker) as pipeline:
        results = list(pipeline.score(sorted(folder.iterdir())))
    assert [r.error for r in results] == [None, None]
    err = capfd.readouterr().err
    assert "said before the body started" in err  # the workers' stderr is this test's
    assert "Premature end of JPEG file" not in err


def test_a_crashing_or_hanging_decoder_costs_only_its_own_file(tmp_path: Path):
    from postselectd.config import Config
    from postselectd.pipeline import Pipeline

    nef = shared_path("samples", "nef", "DSC_0102.NEF")
    folder = tmp_path / "shoot"
    for name in ("a_good.NEF", "b_crash.NEF", "c_hang.NEF", "d_good.NEF", "e_good.NEF"):
        copy_file(nef, folder, name)
    with Pipeline(
        Config(), workers=2, task_timeout=5, worker_target=misbehaving_worker
    ) as pipeline:
        results = {r.path.name: r for r in pipeline.score(sorted(folder.iterdir()))}
    assert "decoder crashed" in results["b_crash.NEF"].error
    assert "took longer than 5 s" in results["c_hang.NEF"].error
    for name in ("a_good.NEF", "d_good.NEF", "e_good.NEF"):
        assert results[name].error is None and results[name].rating is not None
    assert not (folder / "b_crash.xmp").exists() and not (folder / "c_hang.xmp").exists()


def memory_hungry_worker(worker_id, tasks, results, config):
    """A worker whose decoder asks for 3 GiB on files named *bomb* (a decompression bomb),
    else works normally. Fault injection only: the real worker does the rest."""
    from postselectd import stages, workers

    real_load_preview = stages.load_preview

    def load_preview(path, **kwargs):
        if "bomb" in Path(path).name:
            import numpy as np

            buffer = np.zeros(3 << 30, dtype=np.uint8)  # untouched: costs nothing if allowed
            del buffer
        return real_load_preview(path, **kwargs)

    stages.load_preview = load_preview
    workers._worker_main(worker_id, tasks, results, config)


def test_a_file_that_asks_for_too_much_memory_fails_alone(tmp_path: Path):
    from postselectd.config import Config
    from postselectd.pipeline import Pipeline

    nef = shared_path("samples", "nef", "DSC_0102.NEF")
    folder = tmp_path / "shoot"
    for name in ("a_good.NEF", "b_bomb.NEF", "c_good.NEF", "d_good.NEF"):
        copy_file(nef, folder, name)
    with Pipeline(Config(), workers=1, worker_target=memory_hungry_worker) as pipeline:
        results = {r.path.name: r for r in pipeline.score(sorted(folder.iterdir()))}
    assert "needs more memory than a worker may use" in (results["b_bomb.NEF"].error or "")
    for name in ("a_good.NEF", "c_good.NEF", "d_good.NEF"):
        assert results[name].error is None and results[name].rating is not None
    assert not (folder / "b_bomb.xmp").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/limits")
def test_workers_run_with_an_address_space_limit():
    import queue as queue_module

    from postselectd.config import AnalysisConfig
    from postselectd.stages import worker_body
    from postselectd.workers import WORKER_ADDRESS_SPACE_BYTES, WorkerPool, WorkerReady

    inbox: queue_module.Queue = queue_module.Queue()
    pool = WorkerPool(1, worker_body(AnalysisConfig()), inbox.put)
    try:
        assert isinstance(inbox.get(timeout=120), WorkerReady)
        (pid,) = pool.pids()
        limits = Path(f"/proc/{pid}/limits").read_text()
    finally:
        pool.close()
    line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
    assert line.split()[3] == str(WORKER_ADDRESS_SPACE_BYTES), line  # the soft limit
