"""What the command line says about itself: each command's --help."""

from __future__ import annotations

import re

import pytest

from postselectd.cli import main

# The exit statuses each command can end with (cli.py's EXIT_* and main()'s handlers).
STATUSES = {
    "score": {0, 1, 2, 3, 130, 141},
    "run": {0, 1, 2},
    "status": {0, 2, 130, 141},
    "train": {0, 1, 2, 130, 141},
    "doctor": {0, 1, 2, 130, 141},
    "report": {0, 1, 2, 130, 141},
    "service": {0, 1, 2, 130, 141},
}


@pytest.mark.parametrize("command", sorted(STATUSES))
def test_each_commands_help_says_what_it_does_and_its_exit_statuses(command, capsys, monkeypatch):
    # Issue #20: `postselectd status --help` showed only its options.
    monkeypatch.setenv("COLUMNS", "80")  # what argparse wraps the options to
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    usage, description, *_ = text.split("\n\n")
    assert usage.startswith(f"usage: postselectd {command}")
    # A sentence of its own, beginning with what it does ("Rates ...", "Shows ...").
    assert re.match(r"[A-Z][a-z]+s ", description) and description.rstrip().endswith(".")
    table = text.split("\nexit status:\n", 1)[1]
    rows = re.findall(r"^  (\d+) +(\S.*)$", table, re.M)
    assert {int(code) for code, _ in rows} == STATUSES[command], table
    assert all(len(line) <= 80 for line in text.splitlines()), text


def test_the_top_level_help_points_to_each_commands_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "`postselectd COMMAND --help` says what a command does" in capsys.readouterr().out
