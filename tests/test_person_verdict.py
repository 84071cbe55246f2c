"""Issue #20, points 3 and 4, end to end: the real `score` and `report` commands over the
13 sample NEFs, a person's edits made with real exiftool.

3. A person's verdict wins whole: once they set the rating or the label, postselectd's
   reject label and keywords go (its numbers stay), and the report shows theirs.
4. No rewrite without a change: a re-run leaves every sidecar's bytes and mtime alone;
   a changed verdict is written, with a new RatedAt.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import copy_file, need_tool, run_cli, shared_path

REASONS = ("out of focus", "motion blur", "eyes closed", "overexposed", "underexposed")


def _score(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    done = run_cli("score", "--json", *args, str(folder))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done, {Path(r["path"]).name: r for r in records}


def _exiftool(*args: str) -> dict:
    done = subprocess.run(
        [need_tool("exiftool"), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0] if args[0] == "-j" else {}


def _read(sidecar: Path) -> dict:
    """What an editor reads, as exiftool reads it (lists stay lists)."""
    return _exiftool("-j", "-struct", "-XMP:all", str(sidecar))


def _keywords(tags: dict) -> list[str]:
    value = tags.get("HierarchicalSubject", [])
    return value if isinstance(value, list) else [value]


def _sidecar_states(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.xmp"))}


@pytest.fixture(scope="module")
def rated_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 13 sample NEFs rated once by the real command line (defaults: lightroom profile)."""
    folder = tmp_path_factory.mktemp("rated") / "shoot"
    for nef in sorted(shared_path("samples", "nef").glob("*.NEF")):
        copy_file(nef, folder)
    _score(folder)
    return folder


@pytest.fixture
def shoot(rated_once: Path, tmp_path: Path) -> Path:
    """A private copy of the rated shoot, sidecars with their mtimes."""
    folder = tmp_path / "shoot"
    shutil.copytree(rated_once, folder)
    return folder


def _report(folder: Path, tmp_path: Path) -> tuple[str, str]:
    out = tmp_path / "report.html"
    done = run_cli(
        "report",
        str(folder),
        "-o",
        str(out),
        env={"XDG_DATA_HOME": str(tmp_path / "no-journal")},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, out.read_text()


def _card(page: str, name: str) -> str:
    [card] = re.findall(rf'<li class="card [^>]*>(?:(?!</li>).)*{re.escape(name)}.*?</li>', page)
    return card


# --- 3. a person's verdict wins whole ---------------------------------------------------


def test_a_persons_rating_withdraws_the_reject_label_and_keywords(shoot: Path, tmp_path: Path):
    sidecar = shoot / "DSC_0105.xmp"
    before = _read(sidecar)
    # DSC_0105 is the defocused frame of burst B: postselectd rejects it.
    assert before["Rating"] == 1 and before["Label"] == "Red"
    assert "PostSelect|reject" in _keywords(before)
    numbers = {k: v for k, v in before.items() if k in ("KeeperProbability", "Findings")}
    assert len(numbers) == 2

    # The photographer promotes it in their editor (exiftool rewrites the whole file).
    _exiftool("-overwrite_original", "-XMP-xmp:Rating=5", str(sidecar))
    done, records = _score(shoot)

    after = _read(sidecar)
    assert after["Rating"] == 5
    assert "Label" not in after, "postselectd's Red stays beside the person's 5 stars"
    keywords = _keywords(after)
    assert "PostSelect|overruled" in keywords
    assert "PostSelect|reject" not in keywords
    assert not [k for k in keywords if k.split("|")[-1] in REASONS], keywords
    subjects = after.get("Subject", [])
    assert "reject" not in subjects and "out of focus" not in subjects
    assert "PostSelect|burst 0104" in keywords  # the burst is a fact, not a verdict
    for key, value in numbers.items():
        assert after[key] == value, f"postselect:{key} was not kept"
    record = records["DSC_0105.NEF"]
    assert record["overruled"] and record["kept_by_person"] == {"rating": "5"}
    assert "DSC_0105.NEF" in done.stderr and "overruled by a person" in done.stderr

    # The report shows the person's verdict: one reject fewer, 5 stars set by a person.
    stdout, page = _report(shoot, tmp_path)
    assert "13 photos, 3 selects, 6 rejects" in stdout, stdout
    card = _card(page, "DSC_0105.NEF")
    assert 'data-verdict="keep"' in card and "verdict set by a person" in card
    assert 'alt="DSC_0105.NEF: set by a person, 5 stars' in card


def test_a_persons_label_withdraws_the_reject_too(shoot: Path, tmp_path: Path):
    sidecar = shoot / "DSC_0106.xmp"  # burst B's motion-blurred frame: a reject
    assert "PostSelect|reject" in _keywords(_read(sidecar))
    _exiftool("-overwrite_original", "-XMP-xmp:Label=Green", str(sidecar))
    _, records = _score(shoot)

    after = _read(sidecar)
    assert after["Label"] == "Green"
    keywords = _keywords(after)
    assert "PostSelect|overruled" in keywords and "PostSelect|reject" not in keywords
    assert "PostSelect|motion blur" not in keywords
    assert after["KeeperProbability"] is not None
    assert records["DSC_0106.NEF"]["kept_by_person"] == {"label": "Green"}

    stdout, page = _report(shoot, tmp_path)
    assert "6 rejects" in stdout, stdout
    card = _card(page, "DSC_0106.NEF")
    assert 'data-label="Green"' in card and "verdict set by a person" in card


# --- 4. no rewrite without a change ----------------------------------------------------


def test_a_rerun_touches_no_sidecar(shoot: Path):
    before = _sidecar_states(shoot)
    assert len(before) == 13
    done, records = _score(shoot)
    after = _sidecar_states(shoot)
    for name in before:
        assert after[name][0] == before[name][0], f"{name}: content changed"
        assert after[name][1] == before[name][1], f"{name}: rewritten (mtime changed)"
    assert all(r["unchanged"] for r in records.values())
    assert re.search(r"sidecars unchanged\s+13\b", done.stderr), done.stderr


def test_a_changed_verdict_is_rewritten_with_a_new_rated_at(shoot: Path, tmp_path: Path):
    before = _sidecar_states(shoot)
    rated_at = {n: _read(shoot / n)["RatedAt"] for n in ("DSC_0105.xmp", "DSC_0113.xmp")}
    # The photographer stops blur from rejecting: the blurred frames' verdicts change.
    config = tmp_path / "config.yaml"
    config.write_text("rating:\n  strictness:\n    focus: 'off'\n")
    time.sleep(1.1)  # RatedAt is to the second
    _, records = _score(shoot, "--config", str(config))
    after = _sidecar_states(shoot)
    changed = {n for n in before if after[n] != before[n]}
    assert "DSC_0105.xmp" in changed and not records["DSC_0105.NEF"]["unchanged"]
    assert "PostSelect|reject" not in _keywords(_read(shoot / "DSC_0105.xmp"))
    assert _read(shoot / "DSC_0105.xmp")["RatedAt"] != rated_at["DSC_0105.xmp"]
    # A frame whose verdict stayed the same is still not touched.
    unchanged = {Path(n).stem + ".xmp" for n, r in records.items() if r["unchanged"]}
    assert unchanged and not (unchanged & changed)
    assert "DSC_0113.xmp" in unchanged
    assert _read(shoot / "DSC_0113.xmp")["RatedAt"] == rated_at["DSC_0113.xmp"]


def test_a_rerating_removes_the_check_and_burst_it_no_longer_has(tmp_path: Path):
    """postselect:Check, BurstId and BurstSize describe the current verdict: a check that
    no longer applies, or a burst the frame left (its partner deleted), goes."""
    folder = tmp_path / "shoot"
    for name in ("DSC_0101.NEF", "DSC_0102.NEF", "DSC_0112.NEF"):
        copy_file(shared_path("samples", "nef", name), folder)
    _, first = _score(folder)
    assert first["DSC_0112.NEF"]["checks"] == ["exposure"]
    assert first["DSC_0102.NEF"]["burst"] is not None
    tags = _read(folder / "DSC_0112.xmp")
    assert tags.get("Check") == "exposure"
    assert _read(folder / "DSC_0102.xmp").get("BurstSize") == 2

    (folder / "DSC_0101.NEF").unlink()  # the photographer deleted the burst's other frame
    (folder / "DSC_0101.xmp").unlink()
    config = tmp_path / "config.yaml"
    config.write_text("rating:\n  strictness:\n    exposure: 'off'\n")
    _, second = _score(folder, "--config", str(config))
    assert second["DSC_0112.NEF"]["checks"] == [] and second["DSC_0102.NEF"]["burst"] is None
    assert "Check" not in _read(folder / "DSC_0112.xmp")
    tags = _read(folder / "DSC_0102.xmp")
    assert "BurstId" not in tags and "BurstSize" not in tags
    # The best of a burst was 4 stars and a select; alone again it is 3 and no longer Green.
    assert (first["DSC_0102.NEF"]["rating"], first["DSC_0102.NEF"]["label"]) == (4, "Green")
    assert (second["DSC_0102.NEF"]["rating"], tags["Rating"]) == (3, 3)
    assert "Label" not in tags and "PostSelect|select" not in _keywords(tags)
