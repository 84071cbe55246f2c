"""The reasons a frame can be held against, as the photographer reads them, each with how
sure postselectd is of it.

A reason only rejects on confident evidence; a doubtful one asks the photographer to
check (recall first: a kept bad frame costs a glance, a lost good one costs the shot).
How confident is confident is the photographer's say, per family of reasons
(``rating.strictness`` in the config); the analysis only reports its confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

EYES_CLOSED = "eyes closed"
OUT_OF_FOCUS = "out of focus"
MOTION_BLUR = "motion blur"
OVEREXPOSED = "overexposed"
UNDEREXPOSED = "underexposed"
REASONS = (EYES_CLOSED, OUT_OF_FOCUS, MOTION_BLUR, OVEREXPOSED, UNDEREXPOSED)

# The families a photographer tunes (rating.strictness) and the `check|...` keywords name.
FAMILY = {
    EYES_CLOSED: "eyes",
    OUT_OF_FOCUS: "focus",
    MOTION_BLUR: "focus",
    OVEREXPOSED: "exposure",
    UNDEREXPOSED: "exposure",
}


@dataclass(frozen=True)
class Finding:
    """One reason with the confidence of its evidence (0..1) and what it counted."""

    reason: str
    confidence: float
    detail: str = ""  # e.g. "2 of 24" for eyes closed in a group
    count: int = 0  # how many: faces that blinked, for eyes closed

    @property
    def family(self) -> str:
        return FAMILY.get(self.reason, self.reason)

    def __str__(self) -> str:
        detail = f" {self.detail}" if self.detail else ""
        return f"{self.reason}{detail} ({self.confidence:.2f})"


def as_finding(reason: str | Finding) -> Finding:
    """A bare reason name is a sure one (a person's or an older analysis's)."""
    return reason if isinstance(reason, Finding) else Finding(reason, 1.0)
