"""`postselectd status` shows what the journal holds, whatever the photos are called."""

from __future__ import annotations

import json
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
