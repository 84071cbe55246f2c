"""`postselectd status` shows what the journal holds, whatever the photos are called."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import run_cli

from postselectd.state import Journal, Signature

NOW = 1_800_000_000.0
# Names a card, a download or a hostile share can carry: an escape that clears the
# screen, a newline that forges a line, C1's one-byte CSI, a right-to-left override.
NASTY = ("clear\x1b[2J\x1b[HDSC_0001.NEF", "two\nlines.NEF", "csi\x9b31mred.NEF", "\u202egpj.NEF")


def test_status_escapes_control_characters_in_file_names(tmp_path: Path):
    state, shoot = tmp_path / "state", tmp_path / "shoot"
    with Journal(state) as journal:
        for i, name in enumerate(NASTY):
            path = shoot / name
            journal.touch(path, Signature(100 + i, 1), NOW, 0)
            if i % 2:
                journal.attempt_failed(
                    path, "bad\x1b]0;title\x07 file", NOW, max_retries=0, backoff=1
                )
            else:
                journal.rated(path, stars=3, label=None, result=None, elapsed_ms=1.0, now=NOW)
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: '{state}'\n")

    shown = run_cli("status", "--config", str(config), "--last", "10")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert not any(c in text for c in "\x1b\x9b\x07\u202e"), repr(text)
    lines = text.splitlines()
    assert f"{shoot}/clear\\x1b[2J\\x1b[HDSC_0001.NEF" in text
    assert any(
        line.endswith(f"{shoot}/two\\x0alines.NEF: bad\\x1b]0;title\\x07 file (1 attempts)")
        for line in lines
    )
    assert "csi\\x9b31mred.NEF" in text and "\\u202egpj.NEF" in text
    assert not any(line.startswith("lines.NEF") for line in lines)  # no forged line

    as_json = run_cli("status", "--config", str(config), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert not any(c in as_json.stdout for c in "\x1b\x9b\x07\u202e")
    report = json.loads(as_json.stdout)  # one line, and the names come back exactly
    names = {Path(item["path"]).name for item in report["last"] + report["failures"]}
    assert names == set(NASTY)


def test_status_reads_the_journal_despite_a_config_with_a_typo(tmp_path: Path):
    # Issue #20: `status` refused to say anything while the config had a typo, though it
    # only needs the journal (the daemon may well be running on the config before it).
    state, shoot = tmp_path / "state", tmp_path / "shoot"
    with Journal(state) as journal:
        journal.touch(shoot / "DSC_0001.NEF", Signature(100, 1), NOW, 0)
        journal.rated(
            shoot / "DSC_0001.NEF", stars=4, label=None, result=None, elapsed_ms=1.0, now=NOW
        )
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: '{state}'\nsidecar:\n  profile: [darktable]\n")

    shown = run_cli("status", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.splitlines() == [
        f"postselectd: bad config (status read anyway): {config}: sidecar.profile: "
        "unknown key (did you mean 'profiles'?)"
    ]
    assert f"{state}/journal.sqlite3" in shown.stdout
    assert f"4*  -       {shoot}/DSC_0001.NEF" in shown.stdout

    as_json = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
    assert as_json["rated"] == 1 and "did you mean 'profiles'" in as_json["config_error"]


def test_status_of_a_config_that_is_not_yaml_reads_the_default_journal(tmp_path: Path):
    data = tmp_path / "xdg-data"
    with Journal(data / "postselectd") as journal:
        journal.touch(tmp_path / "DSC_0001.NEF", Signature(100, 1), NOW, 0)
    config = tmp_path / "c.yaml"
    config.write_text("watch: [unclosed\n")

    shown = run_cli("status", "--config", str(config), env={"XDG_DATA_HOME": str(data)})
    assert shown.returncode == 0, shown.stderr
    assert "not valid YAML" in shown.stderr and len(shown.stderr.splitlines()) == 1
    assert f"{data}/postselectd/journal.sqlite3" in shown.stdout
    assert re.search(r"^queue\s+1$", shown.stdout, re.M), shown.stdout


def test_status_counts_the_photos_waiting_for_space_or_write_access_with_their_folder(
    tmp_path: Path,
):
    # Issue #19: photos held back by a full disk or a read-only folder were only "queue".
    state, full, locked = tmp_path / "state", tmp_path / "full card", tmp_path / "locked"
    with Journal(state) as journal:
        for i in range(3):
            path = full / f"DSC_{i:04d}.NEF"
            journal.touch(path, Signature(100 + i, 1), NOW, 0)
            journal.wait(path, f"{path.stem}.xmp: disk full, sidecar not written", NOW + 60, NOW)
        path = locked / "DSC_0009.NEF"
        journal.touch(path, Signature(7, 1), NOW, 0)
        journal.wait(path, f"{locked}: folder is not writable, sidecar not written", NOW, NOW)
        journal.touch(tmp_path / "other" / "DSC_0010.NEF", Signature(8, 1), NOW, 0)
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: '{state}'\n")

    text = run_cli("status", "--config", str(config)).stdout
    assert f"waiting       3 in {full} for space" in text, text
    assert f"waiting       1 in {locked} for write access" in text, text
    report = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
    assert sorted((w["folder"], w["photos"]) for w in report["waiting"]) == [
        (str(full), 3),
        (str(locked), 1),
    ]


def test_what_a_photo_waits_for_is_read_back_from_the_writers_own_reason(tmp_path: Path):
    # The journal keeps only the reason's text; status must name the same want the writer
    # typed (SidecarError.waits_for) for every failure that makes a photo wait, and none
    # for a failure that is the file's own.
    import errno
    import os

    from postselectd.sidecar import _os_error, waits_for

    path = tmp_path / "card" / "DSC_0001.xmp"
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO):
        error = _os_error(OSError(code, os.strerror(code)), path)
        assert waits_for(str(error)) == error.waits_for, (code, str(error))
    assert waits_for(str(_os_error(OSError(errno.EROFS, "x"), path))) == "write access"
    assert waits_for(str(_os_error(OSError(errno.ENOSPC, "x"), path))) == "space"
