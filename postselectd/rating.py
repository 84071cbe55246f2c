"""The policy: keeper probability and reasons -> stars, color label, keywords.

This is the part photographers will argue about, so it is one pure function of the
analysis and the config, short enough to read in a minute. Defaults follow the original
work: a select needs p >= 0.90, and recall comes first: a frame is only rejected for a
concrete reason (closed eyes, blur, bad exposure), never for a middling score alone.

    4 stars  select (p >= 0.90)
    3 stars  0.60 <= p < 0.90
    2 stars  0.30 <= p < 0.60
    1 star   p < 0.30, or a hard reason (reject)
    +1 star  best frame of its burst (not for a reject; 5 at most)
"""

from __future__ import annotations

from dataclasses import dataclass

from postselectd.config import RatingPolicy

SELECT = "select"
REJECT = "reject"
BEST_OF_BURST = "best of burst"


@dataclass(frozen=True)
class Rating:
    stars: int  # 1..5, or -1 for a reject when the policy asks for it
    label: str | None  # xmp:Label text, None for no label
    verdict: str  # "select", "reject" or "" (keep, undecided)
    keywords: tuple[str, ...]  # leaves under the PostSelect parent, e.g. "select", "motion blur"


def rate(
    keeper_probability: float,
    reasons: tuple[str, ...],
    policy: RatingPolicy,
    *,
    best_of_burst: bool = False,
    burst_id: int | None = None,
) -> Rating:
    p = keeper_probability
    if reasons or p < policy.two_stars_from:
        verdict, stars = REJECT, 1
    elif p >= policy.select_threshold:
        verdict, stars = SELECT, 4
    elif p >= policy.three_stars_from:
        verdict, stars = "", 3
    else:
        verdict, stars = "", 2
    if best_of_burst and policy.best_of_burst_bonus and verdict != REJECT:
        stars = min(5, stars + 1)

    if verdict == REJECT and policy.reject_rating:
        stars = -1
    label = {SELECT: policy.labels.select, REJECT: policy.labels.reject}.get(verdict)

    keywords = [verdict] if verdict else []
    keywords += list(reasons)
    if best_of_burst:
        keywords.append(BEST_OF_BURST)
    if burst_id is not None:
        keywords.append(f"burst {burst_id:04d}")
    return Rating(stars=stars, label=label, verdict=verdict, keywords=tuple(keywords))
