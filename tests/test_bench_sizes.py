"""bench/eval_sizes.py on two real photographs: what it counts is what its table means."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import shared_path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "eval_sizes.py"


def test_eval_sizes_rates_each_photo_at_each_smaller_size_and_its_blurred_copies(tmp_path):
    data = tmp_path / "trust"
    data.mkdir()
    rows = ["file\tcategory"]
    # Storm: 1920 px, blurred at 1620 px; DarkestHour: its preview is 1280 px (too small to
    # blur at 1620 px, shrunk to 1000 px only).
    for name, category in (("Storm.jpg", "sky"), ("DarkestHour_2560x1600.jpg", "night")):
        shutil.copy(shared_path("eval", "natural", name), data / name)
        rows.append(f"{name}\t{category}")
    (data / "labels.tsv").write_text("\n".join(rows) + "\n")

    run = subprocess.run(
        [sys.executable, str(BENCH), "--data", str(data), "--sizes", "1620,1000"]
        + ["--every", "1", "--workers", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    table = {row["size"]: row for row in json.loads(run.stdout)["sizes"]}
    assert table[1620]["good"] == 1 and table[1000]["good"] == 2  # never enlarged
    for row in table.values():
        for kind in ("lens", "shake"):
            counts = row[kind]
            assert counts["n"] == 1  # Storm only
            assert counts["rejected"] + counts["checked"] + counts["missed"] == 1
        focus = row["good_rejected_focus"]
        assert focus == len(row["good_rejected_files"]) <= row["good_rejected"]
    # A storm's streaks read as motion blur at 1000 px (MODELS.md, keeper head).
    assert table[1000]["good_rejected_files"] == ["Storm.jpg"]


def test_eval_sizes_says_where_the_known_good_set_is_missing(tmp_path):
    run = subprocess.run(
        [sys.executable, str(BENCH), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "fetch_trust.py" in run.stderr
