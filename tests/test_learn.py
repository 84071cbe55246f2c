"""The learning loop (learn.py): corrections noticed, a retrain compared on held-out shoots,
swapped in or refused, rolled back; and the real daemon doing it by itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, shared_path
from PIL import Image, ImageFilter
from test_daemon import DaemonProcess
from test_train import XMP

from postselectd import learn
from postselectd.config import Config, parse_config
from postselectd.sidecar import SidecarContent, write_sidecars
from postselectd.state import Journal, Row, Signature

PERSON_EDITS = (
    "import json, sys, pyexiv2\n"
    "for path, rating in json.loads(sys.argv[1]).items():\n"
    "    image = pyexiv2.Image(path)\n"
    "    image.modify_xmp({'Xmp.xmp.Rating': rating})\n"
    "    image.close()\n"
)


def person_rates(ratings: dict[Path, str]) -> None:
    """{photo: rating}: the photographer changes ratings in an exiv2-based editor (real
    pyexiv2 writes, in a process of their own: exiv2's namespace table is per process)."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            PERSON_EDITS,
            json.dumps({str(k.with_suffix(".xmp")): v for k, v in ratings.items()}),
        ],
        check=True,
    )


def frames_of(folder: Path, photos: list[Path], rated: bool = False) -> dict[Path, bool]:
    """Each photo once sharp and once blurred, as JPEGs 800 px long (the daemon judges
    from 640 px): {path: sharp}. ``rated``: with the photographer's sidecar (4 stars for
    sharp, 1 for blurred), else none."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for source in photos:
        with Image.open(source) as img:
            img = img.convert("RGB")
            scale = 800 / max(img.size)
            img = img.resize((round(img.width * scale), round(img.height * scale)))
            for state, stars, image in (
                ("sharp", 4, img),
                ("blurred", 1, img.filter(ImageFilter.GaussianBlur(6))),
            ):
                path = folder / f"{source.stem}-{state}.jpg"
                image.save(path, quality=90)
                if rated:
                    path.with_suffix(".xmp").write_text(XMP.format(stars=stars))
                made[path] = state == "sharp"
    return made


def models(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "personal").glob("personal-*.onnx"))


def sidecar_says(photo: Path) -> dict:
    """The rating and the model version in a photo's sidecar, read as text (XML)."""
    sidecar = photo.with_suffix(".xmp")
    text = sidecar.read_text() if sidecar.exists() else ""
    version = re.search(r'postselect:ModelVersion="([^"]*)"', text)
    rating = re.search(r'xmp:Rating="([^"]*)"', text)
    return {
        "rating": rating.group(1) if rating else None,
        "version": version.group(1) if version else "",
    }


def model_version(photo: Path) -> str:
    return sidecar_says(photo)["version"]


def config_for(tmp_path: Path, **learn_settings) -> Config:
    return parse_config(
        {"state_dir": str(tmp_path / "state"), "model": "personal", "learn": learn_settings}
    )


def rated_photo(journal: Journal, photo: Path, content: SidecarContent) -> Row:
    """A photo the daemon rated (a while ago) with ``content`` in its sidecar."""
    photo.write_bytes(b"not really a photo")
    write_sidecars(photo, content, ["lightroom"])
    then = time.time() - 60
    journal.touch(photo, Signature.of(photo.stat()), then, 0)
    journal.claim(photo, "fp", then)
    journal.rated(
        photo,
        stars=content.stars,
        label=content.label,
        result=None,
        elapsed_ms=1.0,
        now=time.time(),
    )
    return journal.get(photo)


REJECT = SidecarContent(
    stars=1,
    label="Red",
    keywords=("reject", "out of focus"),
    keyword_parent="PostSelect",
    keeper_probability=0.08,
    reasons=("out of focus",),
    model_version="personal-1",
)


def test_a_rating_changed_from_ours_is_a_correction_and_changing_it_back_undoes_it(tmp_path):
    config = config_for(tmp_path)
    with Journal(config.resolved_state_dir()) as journal:
        photo = tmp_path / "DSC_0001.JPG"
        row = rated_photo(journal, photo, REJECT)
        assert learn.owners(journal, photo.with_suffix(".xmp")) == [row]
        # Only what postselectd wrote: nothing to learn.
        assert learn.look(journal, row, config, time.time()) == ""
        time.sleep(0.01)
        person_rates({photo: "4"})
        assert learn.look(journal, row, config, time.time()) == "new"
        [(path, verdict, why, _)] = journal.corrections()
        assert (path, verdict, why) == (photo, "select", "4 stars")
        assert learn.look(journal, row, config, time.time()) == ""  # counted once
        person_rates({photo: "1"})  # back to what postselectd wrote
        assert learn.look(journal, row, config, time.time()) == "undone"
        assert journal.corrections() == []


def test_a_retrain_is_due_after_enough_corrections_or_a_finished_shoot(tmp_path):
    config = config_for(tmp_path, after_corrections=3, min_corrections=2, after_quiet_minutes=1)
    now = time.time()
    with Journal(config.resolved_state_dir()) as journal:
        assert learn.due(config, journal, now, last_activity=now - 3600) is None
        for n in range(2):
            journal.record_correction(tmp_path / f"{n}.JPG", "select", "4 stars", now - 120)
        assert learn.due(config, journal, now, last_activity=now) is None  # still shooting
        assert "finished shoot" in learn.due(config, journal, now, last_activity=now - 61)
        journal.record_correction(tmp_path / "2.JPG", "reject", "1 star", now)
        assert learn.due(config, journal, now, last_activity=now) == (
            "3 corrections since the last model"
        )


def test_a_candidate_must_keep_as_many_selects_without_keeping_everything():
    current = {"recall": 0.95, "precision": 0.90}
    assert learn.better({"recall": 0.95, "precision": 0.85}, current)
    assert learn.better({"recall": 1.0, "precision": 0.95}, current)
    assert not learn.better({"recall": 0.90, "precision": 1.0}, current)
    # Shuffled labels: a threshold that keeps nearly everything keeps every select too.
    assert not learn.better({"recall": 1.0, "precision": 0.5}, current)


def test_the_retrain_process_runs_at_nice_19_and_idle_io(tmp_path):
    probe = (
        "import ctypes, os, platform; from postselectd.learn import lower_priority\n"
        "done = lower_priority()\n"
        "io = None\n"
        "if platform.machine() == 'x86_64':\n"
        "    io = ctypes.CDLL(None).syscall(252, 1, 0) >> 13\n"
        "print(done, os.nice(0), io)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "'nice 19'" in out and " 19 " in out, out
    if sys.platform.startswith("linux") and "x86_64" in os.uname().machine:
        assert out.strip().endswith(" 3") and "'idle I/O'" in out, out


def test_rollback_returns_to_the_previous_model_and_keeps_the_newer(tmp_path):
    config = config_for(tmp_path)
    folder = config.personal_models_dir()
    folder.mkdir(parents=True)
    for stamp in ("20261201-100000", "20261205-100000"):
        for suffix in (".onnx", ".json", ".txt", ".frames.npz"):
            (folder / f"personal-{stamp}{suffix}").write_text("x")
    retired, now = learn.rollback(config)
    assert now == folder / "personal-20261201-100000.onnx"
    assert sorted(p.name for p in (folder / "retired").iterdir()) == [
        f"personal-20261205-100000{s}" for s in (".frames.npz", ".json", ".onnx", ".txt")
    ]
    assert retired == folder / "retired" / "personal-20261205-100000.onnx"
    with pytest.raises(learn.LearnError, match="no earlier personal model"):
        learn.rollback(config)


def test_without_a_model_status_says_what_more_to_rate(tmp_path):
    config = config_for(tmp_path)
    with Journal(config.resolved_state_dir()) as journal:
        for n in range(3):
            journal.record_correction(tmp_path / f"{n}.JPG", "select", "4 stars", time.time())
        said = learn.summary(config, journal)
    assert said["learning"] is False and "no personal model yet" in said["off"]
    assert said["corrections"] == 3
    assert said["cold_start"].startswith("rate 5 more selects and 8 more rejects")


@pytest.fixture
def daemon_of(tmp_path: Path):
    made: list[DaemonProcess] = []

    def make(watch: Path) -> DaemonProcess:
        made.append(DaemonProcess(tmp_path, [watch]))
        return made[-1]

    yield make
    for daemon in made:
        daemon.kill()


@pytest.mark.slow
def test_the_daemon_learns_from_corrections_and_refuses_a_bad_model(tmp_path: Path, daemon_of):
    natural = sorted(shared_path("eval", "natural").glob("*.png"))
    assert len(natural) >= 52, "../shared/eval/natural: too few photos"
    # A personal model from 12 photos rated in 4 shoots (each sharp and blurred).
    for n in range(4):
        frames_of(tmp_path / "rated" / f"shoot-{n}", natural[40 + 3 * n : 43 + 3 * n], rated=True)
    watch = tmp_path / "watch"
    watch.mkdir()
    daemon = daemon_of(watch)
    daemon.write_config(
        [watch],
        {"model": "personal", "learn": {"after_corrections": 60, "after_quiet_minutes": 0}},
    )
    config = str(daemon.config_path)
    made = run_cli("train", "--config", config, str(tmp_path / "rated"))
    assert made.returncode == 0, made.stderr
    [first] = models(daemon.state_dir)

    # The daemon rates 4 shoots of new frames that arrive while it runs.
    staging = tmp_path / "staging"
    frames: dict[Path, bool] = {}
    for n in range(4):
        for path, sharp in frames_of(staging / f"shoot-{n}", natural[8 * n : 8 + 8 * n]).items():
            frames[watch / f"shoot-{n}" / path.name] = sharp
    daemon.start()
    for n in range(4):
        os.rename(staging / f"shoot-{n}", watch / f"shoot-{n}")
    daemon.wait_for(
        lambda: (
            daemon.rated() == len(frames) and all(first.stem in model_version(p) for p in frames)
        ),
        90,
        f"{len(frames)} photos rated with {first.stem}",
    )

    # The photographer corrects 60 of them: sharp ones are selects, blurred ones rejects,
    # each set to a rating that differs from the one postselectd wrote.
    corrected: dict[Path, str] = {}
    for path, sharp in list(frames.items())[:60]:
        ours = sidecar_says(path)["rating"]
        if sharp:
            corrected[path] = "5" if ours != "5" else "3"
        else:
            corrected[path] = "1" if ours != "1" else "-1"
    person_rates(corrected)
    assert {p: sidecar_says(p)["rating"] for p in corrected} == corrected

    # By itself: 60 corrections noticed, a model learnt, compared, and swapped in.
    daemon.wait_for(lambda: "learnt from 60 corrections" in daemon.log(), 120, "the new model")
    daemon.wait_for(lambda: "worker pool restarted" in daemon.log(), 60, "the workers reloaded")
    first_model, second = models(daemon.state_dir)
    assert first_model == first and second.with_suffix(".frames.npz").exists()
    card = json.loads(second.with_suffix(".json").read_text())
    assert card["learnt"]["corrections"] == 60 and card["learnt"]["previous_model"] == first.name
    text = second.with_suffix(".txt").read_text()
    assert "by the daemon from 60 corrections of its ratings" in text and first.name in text
    assert "90% interval" in text and "precision; " in text

    # The next files are rated with it (its name in their sidecars) ...
    later = {}
    for path, sharp in frames_of(staging / "shoot-later", natural[52:54]).items():
        later[watch / "shoot-later" / path.name] = sharp
    os.rename(staging / "shoot-later", watch / "shoot-later")
    daemon.wait_for(
        lambda: daemon.rated() == len(frames) + len(later), 60, "the later photos rated"
    )
    for path in later:
        assert second.stem in model_version(path), path.name
    # ... and no sidecar of a photo rated before is touched: the corrections stand.
    assert {p: sidecar_says(p)["rating"] for p in corrected} == corrected
    assert all(first.stem in model_version(p) for p in corrected)

    status = run_cli("status", "--config", config)
    assert "60 corrections in all" in status.stdout, status.stdout
    assert second.name in status.stdout, status.stdout

    # A bad candidate (trained on shuffled labels) is refused, with the numbers.
    asked = run_cli("learn", "--now", "--shuffled-labels", "--config", config)
    assert asked.returncode == 0 and "asked the running daemon" in asked.stdout, asked.stderr
    daemon.wait_for(lambda: "was refused" in daemon.log(), 120, "the refusal")
    refusal = next(line for line in daemon.log().splitlines() if "was refused" in line)
    assert f"{second.stem} stays" in refusal and "held-out shoots" in refusal, refusal
    assert models(daemon.state_dir) == [first, second]

    # And the photographer can go back to the model before.
    asked = run_cli("learn", "--rollback", "--config", config)
    assert asked.returncode == 0, asked.stderr
    daemon.wait_for(lambda: "rolled back" in daemon.log(), 30, "the rollback")
    assert models(daemon.state_dir) == [first]
    assert (daemon.state_dir / "personal" / "retired" / second.name).exists()
    code, _ = daemon.stop()
    assert code == 0, daemon.log()
