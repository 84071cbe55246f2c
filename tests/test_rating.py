"""The policy: stars, label and keywords from a keeper probability and reasons."""

from __future__ import annotations

import pytest

from postselectd.config import Labels, RatingPolicy
from postselectd.rating import rate
from postselectd.reasons import Finding

POLICY = RatingPolicy()


@pytest.mark.parametrize(
    ("p", "stars", "label", "verdict"),
    [
        (0.95, 4, "Green", "select"),
        (0.90, 4, "Green", "select"),
        (0.89, 3, None, ""),
        (0.60, 3, None, ""),
        (0.59, 2, None, ""),
        (0.30, 2, None, ""),
        # A low score with no sure reason is a frame to look at, never a reject.
        (0.29, 2, None, ""),
        (0.0, 2, None, ""),
    ],
)
def test_stars_follow_the_keeper_probability(p, stars, label, verdict):
    rating = rate(p, (), POLICY)
    assert (rating.stars, rating.label, rating.verdict) == (stars, label, verdict)


def test_a_hard_reason_rejects_even_a_confident_frame():
    rating = rate(0.97, ("eyes closed",), POLICY)
    assert (rating.stars, rating.label) == (1, "Red")
    assert rating.keywords == ("reject", "eyes closed")


def test_best_of_burst_select_gets_five_stars_and_its_burst_keyword():
    rating = rate(0.93, (), POLICY, best_of_burst=True, burst_id=7)
    assert rating.stars == 5
    assert rating.keywords == ("select", "best of burst", "burst 0007")


def test_best_of_burst_at_four_stars_is_green_like_any_four_star_frame():
    # Issue #20: DSC_0102 (p 0.85, best of its burst) got 4 stars and no label, DSC_0108
    # (p 0.95) 4 stars Green: a Green filter missed the best of the burst.
    promoted, selected = rate(0.85, (), POLICY, best_of_burst=True), rate(0.95, (), POLICY)
    assert promoted.stars == selected.stars == 4
    assert (promoted.label, promoted.verdict) == (selected.label, selected.verdict)
    assert (promoted.label, promoted.verdict) == ("Green", "select")
    assert promoted.keywords == ("select", "best of burst")


FINDINGS = ((), ("eyes closed",), (Finding("motion blur", 0.5),), (Finding("overexposed", 0.3),))


@pytest.mark.parametrize("best_of_burst", [False, True])
@pytest.mark.parametrize("findings", FINDINGS)
def test_the_label_follows_the_stars(findings, best_of_burst):
    """Green on every frame of 4 stars and more, Red on every reject, none otherwise:
    never Green on a check, never a 4-star frame without it."""
    for p in (0.0, 0.2, 0.3, 0.45, 0.6, 0.75, 0.89, 0.9, 0.99):
        rating = rate(p, findings, POLICY, best_of_burst=best_of_burst)
        if rating.verdict == "reject":
            expected = "Red"
        else:
            expected = "Green" if rating.stars >= 4 else None
        assert rating.label == expected, (p, rating)
        assert (rating.verdict == "select") == (rating.label == "Green"), (p, rating)
        assert not (rating.checks and rating.label), (p, rating)


def test_best_of_burst_gets_one_more_star_but_never_lifts_a_reject():
    assert rate(0.7, (), POLICY, best_of_burst=True).stars == 4
    assert rate(0.4, (), POLICY, best_of_burst=True).stars == 3
    assert rate(0.1, ("out of focus",), POLICY, best_of_burst=True).stars == 1
    assert rate(0.7, (), RatingPolicy(best_of_burst_bonus=False), best_of_burst=True).stars == 3


def test_reject_rating_minus_one_only_when_asked():
    assert rate(0.1, ("motion blur",), POLICY).stars == 1
    assert rate(0.1, ("motion blur",), RatingPolicy(reject_rating=True)).stars == -1


def test_label_names_are_configurable_and_can_be_off():
    policy = RatingPolicy(labels=Labels(select="Keep", reject=None))
    assert rate(0.95, (), policy).label == "Keep"
    assert rate(0.05, ("underexposed",), policy).label is None


def test_custom_select_threshold():
    policy = RatingPolicy(select_threshold=0.8)
    assert rate(0.85, (), policy).stars == 4


def test_a_low_score_alone_asks_for_a_look():
    rating = rate(0.12, (), POLICY)
    assert (rating.stars, rating.label, rating.verdict) == (2, None, "")
    assert rating.keywords == ("check|low score",)


def test_a_doubtful_reason_asks_for_a_check_never_a_reject():
    rating = rate(0.95, (Finding("eyes closed", 0.6, "1 of 24"),), POLICY)
    assert (rating.stars, rating.label, rating.verdict) == (2, None, "")
    assert rating.keywords == ("check|eyes",)
    assert rating.reasons == () and rating.checks == ("eyes",)


def test_a_confident_reason_rejects():
    rating = rate(0.95, (Finding("out of focus", 0.8),), POLICY)
    assert (rating.stars, rating.label, rating.verdict) == (1, "Red", "reject")
    assert rating.keywords == ("reject", "out of focus")


def test_a_faint_reason_changes_nothing():
    assert rate(0.95, (Finding("overexposed", 0.3),), POLICY) == rate(0.95, (), POLICY)


def test_a_check_is_two_stars_at_most_even_for_the_best_of_burst():
    rating = rate(0.7, (Finding("motion blur", 0.5),), POLICY, best_of_burst=True, burst_id=3)
    assert rating.stars == 2
    assert rating.keywords == ("check|focus", "best of burst", "burst 0003")


@pytest.mark.parametrize(
    ("strictness", "confidence", "verdict"),
    [
        ("off", 1.0, "keep"),
        ("gentle", 0.85, "check"),
        ("gentle", 0.65, "keep"),
        ("normal", 0.85, "reject"),
        ("normal", 0.5, "check"),
        ("strict", 0.55, "reject"),
        ("strict", 0.3, "check"),
    ],
)
def test_strictness_moves_the_lines(strictness, confidence, verdict):
    policy = RatingPolicy(strictness=strictness)
    rating = rate(0.7, (Finding("out of focus", confidence),), policy)
    said = "reject" if rating.verdict == "reject" else "check" if rating.checks else "keep"
    assert said == verdict


def test_strictness_is_per_family():
    policy = RatingPolicy(strictness={"eyes": "off", "focus": "strict"})
    findings = (Finding("eyes closed", 1.0), Finding("motion blur", 0.6))
    rating = rate(0.8, findings, policy)
    assert rating.reasons == ("motion blur",)
    assert policy.strictness.exposure == "normal"


def test_a_preview_too_small_to_judge_gets_no_stars_no_label_and_a_check():
    # A 160x120 thumbnail reads as a crisp frame: no select, and no reject either, even
    # for a reason the analysis is sure of on so few pixels.
    for p, findings in ((0.95, ()), (0.95, ("eyes closed",)), (0.1, ())):
        rating = rate(p, findings, POLICY, best_of_burst=True, preview_size=(160, 120))
        assert (rating.stars, rating.label, rating.verdict) == (0, None, "")
        assert rating.keywords == ("check|preview too small",)
        assert rating.checks == ("preview too small",) and rating.reasons == ()
    # From the smallest preview a camera embeds (640x424) a frame is judged as usual.
    assert rate(0.95, (), POLICY, preview_size=(640, 424)).verdict == "select"
    assert rate(0.95, (), POLICY, preview_size=(424, 640)).stars == 4
