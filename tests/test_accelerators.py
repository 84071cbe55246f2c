"""`postselectd doctor` names the onnxruntime provider in use; `--bench` measures images/s.

The self-test makes its own frames (postselectd/selftest.py), so it needs neither the
network nor the repository's ../shared samples.
"""

from __future__ import annotations

import re

from conftest import run_cli

from postselectd.selftest import FRAME_SIZE, synthetic_frame


def _line(output: str, what: str) -> str:
    lines = [line for line in output.splitlines() if re.match(rf"\w+\s+{what}\s", line)]
    assert len(lines) == 1, output
    return lines[0]


def test_doctor_names_the_provider_in_use(tmp_path):
    result = run_cli("doctor", env={"HOME": str(tmp_path)})
    line = _line(result.stdout, "provider")
    assert line.startswith("OK") and "CPUExecutionProvider" in line, line
    assert "analysis.providers: " in line and "onnxruntime " in line and " offers " in line
    assert "self-test" not in result.stdout  # only with --bench: it takes seconds


def test_doctor_bench_measures_images_per_second_on_frames_it_makes(tmp_path):
    result = run_cli("doctor", "--bench", env={"HOME": str(tmp_path)})
    line = _line(result.stdout, "self-test")
    found = re.search(r"OK\s+self-test\s+(\d+\.\d) images/s on (\w+), one process", line)
    assert found, line
    assert float(found.group(1)) > 0 and found.group(2) in _line(result.stdout, "provider")
    assert "20 generated 1620x1080 JPEG frames" in line


def test_self_test_frames_are_distinct_camera_preview_sized_pictures():
    first, second = synthetic_frame(0), synthetic_frame(1)
    assert first.size == second.size == FRAME_SIZE and first.mode == "RGB"
    assert first.tobytes() != second.tobytes()
    assert synthetic_frame(0).tobytes() == first.tobytes()  # the same test every time
