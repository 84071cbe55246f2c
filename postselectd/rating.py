"""The policy: keeper probability and reasons -> stars, color label, keywords.

This is the part photographers will argue about, so it is one pure function of the
analysis and the config, short enough to read in a minute. Defaults follow the original
work: 4 stars need p >= 0.90, and recall comes first: a frame is only rejected for a
concrete reason (closed eyes, blur, bad exposure) the analysis is sure of, never for a
middling score alone; a reason it is unsure of asks the photographer to check.

Two things, each defined once. The keeper probability ``p`` is the analysis's (the model's);
the policy only reads it, and the sidecar, ``--json``, the log and the report show it as
it is, whatever the verdict. The verdict is the stars and what they mean:

    4 stars  select (p >= 0.90)
    3 stars  0.60 <= p < 0.90
    2 stars  0.30 <= p < 0.60; at most 2 with a doubtful reason (check|<family>);
             p < 0.30 with no confident reason (check|low score)
    1 star   a confident reason (reject)
    +1 star  best frame of its burst (not for a reject; 5 at most; 2 at most for a check)
    0 stars  the preview is too small to judge (check|preview too small): no verdict

    select   4 stars or more (SELECT_STARS), however reached: the select label (Green)
    reject   a confident reason: the reject label (Red)
    -        2 or 3 stars, a check, not judged: no label

so a filter on the select color shows every frame the stars call a keeper (the best of a
burst raised to 4 too) and never a check. Where the stars say less than ``p`` would, a
reason or a check keyword says why.

A reason's confidence (0..1) is weighed against the line of its family's
``rating.strictness`` (``LINES``): at or above the reject line it rejects, at or above the
check line it asks for a check, below that it is only recorded under ``postselect:``.
"""

from __future__ import annotations

from dataclasses import dataclass

from postselectd.config import Labels, RatingPolicy
from postselectd.dialects import REJECT, SELECT
from postselectd.reasons import Finding, as_finding

CHECK = "check"
LOW_SCORE = "low score"  # the check of a frame the keeper head scores low for no sure reason
BEST_OF_BURST = "best of burst"
BURST_KEYWORD = "burst "  # "burst 0104": the burst's first frame's number
# strictness -> (confidence from which a reason rejects, from which it asks for a check)
LINES = {
    "off": (2.0, 2.0),
    "gentle": (0.90, 0.70),
    "normal": (0.75, 0.45),
    "strict": (0.50, 0.25),
}
SELECT_STARS = 4  # from these stars on a frame is a select
CHECK_MOST_STARS = 2
# The smallest preview (long side, px) postselectd judges at all. Below it blur is not seen
# and the keeper head reads a thumbnail as a crisp frame: a 160x120 IFD0 thumbnail got
# 4 stars Green at p=0.95 (issue #20). Measured (bench/eval_preview_size.py, the 11 blurred
# frames of eval/blur and samples/nef shrunk): a blurred frame is neither rejected nor sent
# to a check for 11 of 11 at 160 px, 5 at 320, 2 at 480, none from 640 (measured
# 2026-12-07; the analysis of issue #20's day missed blur-0010, a whole-frame motion blur
# whose own photo is 800 px, at 640 px too); no sharp frame is rejected at any size.
# 640 is also the smallest preview real cameras embed (a D7100's MakerNote JPEG is
# 640x424); a raw with only a smaller one is decoded from its sensor data instead
# (preview.py), so only a raw whose sensor data is unreadable ends up here.
SMALLEST_JUDGED_PREVIEW = 640
PREVIEW_TOO_SMALL = "preview too small"  # the check of a frame that was not judged


@dataclass(frozen=True)
class Rating:
    stars: int  # 1..5, -1 for a reject when the policy asks for it, 0 not judged
    label: str | None  # xmp:Label text, None for no label
    verdict: str  # "select", "reject" or "" (keep, undecided; a check when ``checks``)
    keywords: tuple[str, ...]  # leaves under the PostSelect parent, e.g. "select", "motion blur"
    reasons: tuple[str, ...] = ()  # the reasons that reject
    checks: tuple[str, ...] = ()  # families to look at: "eyes", "focus", "exposure"

    @property
    def burst_keywords(self) -> tuple[str, ...]:
        """The keywords that are facts of the burst, not a judgement of the frame: they
        stay when a person's own verdict replaces this one."""
        return tuple(k for k in self.keywords if k == BEST_OF_BURST or k.startswith(BURST_KEYWORD))


def lines(family: str, policy: RatingPolicy) -> tuple[float, float]:
    """(the confidence from which a reason of ``family`` rejects, from which it asks for a
    check) under the photographer's ``rating.strictness`` for that family."""
    return LINES[getattr(policy.strictness, family, "normal")]


def weigh(findings: tuple[str | Finding, ...], policy: RatingPolicy) -> tuple[tuple, tuple]:
    """(reasons that reject, families to check) under the photographer's strictness."""
    rejecting: list[str] = []
    checks: list[str] = []
    for finding in map(as_finding, findings):
        reject_from, check_from = lines(finding.family, policy)
        if finding.confidence >= reject_from:
            rejecting.append(finding.reason)
        elif finding.confidence >= check_from and finding.family not in checks:
            checks.append(finding.family)
    return tuple(rejecting), tuple(checks)


def rate(
    keeper_probability: float,
    findings: tuple[str | Finding, ...],
    policy: RatingPolicy,
    *,
    best_of_burst: bool = False,
    burst_id: int | None = None,
    preview_size: tuple[int, int] | None = None,
) -> Rating:
    """``findings``: the analysis's reasons with their confidence (a bare name is sure).
    ``preview_size``: the analysed preview's width and height, None when unknown."""
    if preview_size is not None and max(preview_size) < SMALLEST_JUDGED_PREVIEW:
        # No verdict from a thumbnail: neither a select nor a reject, no stars (0: the
        # editors' "not rated"), and a keyword that says why the photographer has to look.
        return Rating(
            stars=0,
            label=None,
            verdict="",
            keywords=(f"{CHECK}|{PREVIEW_TOO_SMALL}",),
            checks=(PREVIEW_TOO_SMALL,),
        )
    p = keeper_probability
    reasons, checks = weigh(findings, policy)
    if reasons:
        stars, checks = 1, ()
    elif p < policy.two_stars_from:
        # The head's score alone is no reason to lose a frame (recall first): a look.
        stars = 2
        checks = checks or (LOW_SCORE,)
    elif p >= policy.select_threshold and not checks:
        stars = SELECT_STARS
    elif p >= policy.three_stars_from:
        stars = 3
    else:
        stars = 2
    if best_of_burst and policy.best_of_burst_bonus and not reasons:
        stars = min(5, stars + 1)
    if checks:
        stars = min(stars, CHECK_MOST_STARS)
    verdict = verdict_of(stars, rejected=bool(reasons))
    label = label_of(verdict, policy.labels)
    if verdict == REJECT and policy.reject_rating:
        stars = -1

    keywords = [verdict] if verdict else []
    keywords += list(reasons)
    keywords += [f"{CHECK}|{family}" for family in checks]
    if best_of_burst:
        keywords.append(BEST_OF_BURST)
    if burst_id is not None:
        keywords.append(f"{BURST_KEYWORD}{burst_id:04d}")
    return Rating(
        stars=stars,
        label=label,
        verdict=verdict,
        keywords=tuple(keywords),
        reasons=reasons,
        checks=checks,
    )


def verdict_of(stars: int, *, rejected: bool) -> str:
    """The verdict follows the stars, so the select keyword, the select label and
    digiKam's pick agree with them: a select is every frame with ``SELECT_STARS`` or more,
    however it got there (p >= select_threshold, or the best of its burst)."""
    if rejected:
        return REJECT
    return SELECT if stars >= SELECT_STARS else ""


def label_of(verdict: str, labels: Labels) -> str | None:
    """The color label says the verdict and nothing else: the select label on every select,
    the reject label on every reject, none on the rest (2 and 3 stars, a check, a frame
    not judged). A filter on the select color is then a filter on 4 stars and up."""
    return {SELECT: labels.select, REJECT: labels.reject}.get(verdict)
