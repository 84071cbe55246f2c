"""What `train` learns from: the rated frames with their features, grouped into shoots,
and whether there are enough of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postselectd.ratings_sources import CORRECTION, SELECT, Verdict, shoot_folder

MIN_PER_CLASS = 8  # fewer selects or rejects than this teach nothing reliable
MIN_SHOOTS = 4  # fewer: consecutive blocks of frames stand in for shoots
BLOCK = 20  # frames per stand-in shoot
CORRECTION_WEIGHT = 3.0


class TrainError(Exception):
    """Training cannot give a useful model; str() says why and what to do."""


@dataclass(frozen=True)
class Frame:
    """One rated photo with its features."""

    path: Path
    verdict: Verdict
    taste: np.ndarray  # TASTE_FEATURES
    embedding: np.ndarray  # 1280
    mirrored: np.ndarray  # embedding of the horizontally flipped preview
    capture_day: str  # YYYY-MM-DD, "" when unknown


@dataclass
class Dataset:
    X: np.ndarray  # taste features
    E: np.ndarray  # embeddings
    M: np.ndarray  # embeddings of the mirrored previews
    y: np.ndarray  # 1 select, 0 reject
    weight: np.ndarray  # 1, or CORRECTION_WEIGHT for a person's correction of our rating
    shoot: np.ndarray  # shoot index per frame
    shoot_names: list[str]  # the groups the split keeps whole: shoots, or blocks of frames
    stand_in_shoots: bool = False  # too few real shoots: blocks of consecutive frames
    real_shoots: int = 0  # folders and capture days, whether or not blocks stood in

    def __len__(self) -> int:
        return len(self.y)


def build_dataset(frames: list[Frame]) -> Dataset:
    keys = [(str(shoot_folder(f.path)), f.capture_day) for f in frames]
    names = sorted(set(keys))
    real_shoots = len(names)
    stand_in = False
    if len(names) < MIN_SHOOTS:
        # One or two shoots: consecutive frames (a burst stays together) stand in.
        stand_in = True
        order = sorted(range(len(frames)), key=lambda i: (keys[i], frames[i].path.name))
        keys = [("", "")] * len(frames)
        for rank, i in enumerate(order):
            keys[i] = (f"frames {rank // BLOCK * BLOCK + 1}-", "")
        names = sorted(set(keys))
    index = {k: i for i, k in enumerate(names)}
    return Dataset(
        X=np.stack([f.taste for f in frames]),
        E=np.stack([f.embedding for f in frames]),
        M=np.stack([f.mirrored for f in frames]),
        y=np.array([f.verdict.verdict == SELECT for f in frames], dtype=np.int64),
        weight=np.array(
            [CORRECTION_WEIGHT if f.verdict.source == CORRECTION else 1.0 for f in frames]
        ),
        shoot=np.array([index[k] for k in keys]),
        shoot_names=[" ".join(p for p in k if p) for k in names],
        stand_in_shoots=stand_in,
        real_shoots=real_shoots,
    )


@dataclass(frozen=True)
class Readiness:
    """Whether there are enough ratings to train a personal model, and what is missing
    (cold start: `train` and, later, the daemon's `status` and `learn` say it)."""

    selects: int
    rejects: int

    @property
    def more_selects(self) -> int:
        return max(0, MIN_PER_CLASS - self.selects)

    @property
    def more_rejects(self) -> int:
        return max(0, MIN_PER_CLASS - self.rejects)

    @property
    def ready(self) -> bool:
        return not (self.more_selects or self.more_rejects)

    def todo(self) -> str:
        """What to rate before a model can be made ("" when ready)."""
        more = [
            f"{n} more {kind}{'s' if n != 1 else ''}"
            for n, kind in ((self.more_selects, "select"), (self.more_rejects, "reject"))
            if n
        ]
        if not more:
            return ""
        return (
            f"rate {' and '.join(more)} (at least {MIN_PER_CLASS} of each: the model learns "
            "what you keep from what you leave out)"
        )


def readiness(verdicts: Iterable[Verdict]) -> Readiness:
    """The selects and rejects among ``verdicts`` against the minimum to train."""
    selects = rejects = 0
    for verdict in verdicts:
        if verdict.verdict == SELECT:
            selects += 1
        else:
            rejects += 1
    return Readiness(selects, rejects)


def check_classes(selects: int, rejects: int, where: str) -> None:
    if selects == 0 and rejects == 0:
        raise TrainError(f"no rated photos {where}")
    ready = Readiness(selects, rejects)
    if ready.ready:
        return
    if selects == 0 or rejects == 0:
        have = "selects" if rejects == 0 else "rejects"
        raise TrainError(f"all {selects + rejects} rated photos {where} are {have}: {ready.todo()}")
    raise TrainError(f"only {selects} selects and {rejects} rejects {where}: {ready.todo()}")
