"""The policy: stars, label and keywords from a keeper probability and reasons."""

from __future__ import annotations

import pytest

from postselectd.config import Labels, RatingPolicy
from postselectd.rating import rate

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
        (0.29, 1, "Red", "reject"),
        (0.0, 1, "Red", "reject"),
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


def test_best_of_burst_gets_one_more_star_but_never_lifts_a_reject():
    assert rate(0.7, (), POLICY, best_of_burst=True).stars == 4
    assert rate(0.4, (), POLICY, best_of_burst=True).stars == 3
    assert rate(0.1, (), POLICY, best_of_burst=True).stars == 1
    assert rate(0.7, (), RatingPolicy(best_of_burst_bonus=False), best_of_burst=True).stars == 3


def test_reject_rating_minus_one_only_when_asked():
    assert rate(0.1, (), POLICY).stars == 1
    assert rate(0.1, (), RatingPolicy(reject_rating=True)).stars == -1


def test_label_names_are_configurable_and_can_be_off():
    policy = RatingPolicy(labels=Labels(select="Keep", reject=None))
    assert rate(0.95, (), policy).label == "Keep"
    assert rate(0.05, (), policy).label is None


def test_custom_select_threshold():
    policy = RatingPolicy(select_threshold=0.8)
    assert rate(0.85, (), policy).stars == 4
