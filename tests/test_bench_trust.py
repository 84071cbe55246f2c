"""bench/eval_trust.py's verdicts: what it counts as a reject is what the figures mean.

A preview under rating.SMALLEST_JUDGED_PREVIEW gets no verdict (0 stars), which the bench
once counted as a reject, and its catching side, whose eval photos are mostly under 640 px,
then measured nothing: eyes-face 1/149 caught, 2/6 sharp frames "rejected".
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from postselectd.analysis import Analysis
from postselectd.analysis.measure import Exposure, Sharpness
from postselectd.config import RatingPolicy
from postselectd.pipeline import Scored
from postselectd.rating import rate
from postselectd.reasons import Finding
from postselectd.stages import FileResult

BENCH = Path(__file__).resolve().parents[1] / "bench" / "eval_trust.py"
POLICY = RatingPolicy()


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("eval_trust", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def analysis(p: float, *findings: Finding) -> Analysis:
    return Analysis(
        keeper_probability=p,
        reasons=tuple(f.reason for f in findings),
        sharpness=Sharpness(subject=300.0, overall=120.0, anisotropy=0.1),
        exposure=Exposure(
            mean_luminance=120.0, clipped_highlights=0.0, crushed_shadows=0.0, median_luminance=118
        ),
        model_version="test",
        embedding=np.zeros(4, dtype=np.float32),
        findings=findings,
    )


def result_of(rating, p: float) -> FileResult:
    return FileResult(
        path=Path("small.jpg"),
        rating=rating,
        keeper_probability=p,
        reasons=rating.reasons,
        checks=rating.checks,
    )


def test_a_frame_not_judged_is_a_check_never_a_reject(bench):
    for p, findings in ((0.1, ()), (0.95, ("eyes closed",))):
        rating = rate(p, findings, POLICY, preview_size=(500, 333))
        assert rating.stars == 0
        verdict = bench.verdict_of("small.jpg", result_of(rating, p), POLICY)
        assert verdict.kind == "check"
        assert verdict.why == ("check|preview too small",)


def test_a_judged_frame_keeps_its_verdict(bench):
    rejected = rate(0.95, ("eyes closed",), POLICY, preview_size=(1620, 1080))
    assert bench.verdict_of("a.jpg", result_of(rejected, 0.95), POLICY).kind == "reject"
    low = rate(0.1, (), POLICY, preview_size=(1620, 1080))
    assert bench.verdict_of("b.jpg", result_of(low, 0.1), POLICY).kind == "check"
    kept = rate(0.95, (), POLICY, preview_size=(1620, 1080))
    assert bench.verdict_of("c.jpg", result_of(kept, 0.95), POLICY).kind == "keep"


def test_the_catching_side_judges_a_small_eval_crop_as_a_camera_frame(bench):
    # A 480x480 face crop with closed eyes: `postselectd score` gives it no verdict, the
    # catching side must see the reject the policy makes of it at a camera's preview size.
    scored = Scored(
        path=Path("eyes-face-0001.jpg"),
        analysis=analysis(0.8, Finding("eyes closed", 0.97, count=1)),
        preview_size=(480, 480),
    )
    result = bench.judged_anyway(scored, POLICY)
    verdict = bench.verdict_of(scored.path.name, result, POLICY)
    assert verdict.kind == "reject"
    assert bench.flagged_for(verdict, ("eye",))
    assert not result.preview_too_small


def test_the_catching_side_reports_a_file_it_could_not_analyse(bench):
    scored = Scored(path=Path("broken.jpg"), analysis=None, error="broken.jpg: not a photo")
    verdict = bench.verdict_of("broken.jpg", bench.judged_anyway(scored, POLICY), POLICY)
    assert verdict.kind == "error"
