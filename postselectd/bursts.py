"""Bursts: frames shot in quick succession of the same scene, judged together.

A burst is a run of frames in one folder whose capture times (with sub-seconds) are at
most ``max_gap`` apart and whose content is alike (EfficientNet-Lite0 embeddings; the
same scene shifted, blurred or cropped scores 0.6-0.97, different photos 0.1-0.35 on the
sample NEFs). The best frame is the one with the highest keeper probability and no
reason against it. Weaker frames are not rejected for being weaker: they keep their own
verdict (a photographer kept 87 of 100 frames that a peer tool demoted).

Plain Python and numpy; the daemon holds frames in a ``BurstHold`` until a burst cannot
grow any more.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

MAX_GAP_SECONDS = 2.0
MIN_SIMILARITY = 0.5
# The same picture twice (a copy, a re-import): a duplicate, not a burst. Burst frames of
# one scene measure 0.6-0.97.
DUPLICATE_SIMILARITY = 0.995


@dataclass(frozen=True)
class Frame:
    key: Hashable  # the file's path
    folder: str
    capture_time: datetime | None
    embedding: np.ndarray | None = field(repr=False, compare=False)
    keeper_probability: float
    has_reason: bool  # a hard reason against it (blur, eyes closed, exposure)
    name: str = ""  # file name, for a readable burst number
    blinks: int = 0  # faces whose eyes are closed (judged big enough to tell)


@dataclass(frozen=True)
class BurstInfo:
    burst_id: int
    size: int
    best_of_burst: bool


def _unit(vector: np.ndarray | None) -> np.ndarray | None:
    if vector is None:
        return None
    norm = float(np.linalg.norm(vector))
    return None if norm == 0 else np.asarray(vector, dtype=np.float32) / norm


def similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    ua, ub = _unit(a), _unit(b)
    if ua is None or ub is None:
        return 0.0
    return float(ua @ ub)


def _frame_number(name: str) -> int | None:
    match = re.search(r"(\d{3,})(?=\D*$)", Path(name).stem)
    return int(match.group(1)) % 10000 if match else None


def group_bursts(
    frames: Iterable[Frame],
    max_gap: float = MAX_GAP_SECONDS,
    min_similarity: float = MIN_SIMILARITY,
    used_ids: set[int] | None = None,
) -> dict[Hashable, BurstInfo]:
    """Burst membership for every frame that belongs to a burst of two or more.

    ``used_ids``: burst numbers already given (updated here), when a run of files is
    grouped in parts that no burst can cross (``Pipeline.score``).
    """
    by_folder: dict[str, list[Frame]] = {}
    for frame in frames:
        if frame.capture_time is not None:
            by_folder.setdefault(frame.folder, []).append(frame)
    result: dict[Hashable, BurstInfo] = {}
    used_ids = set() if used_ids is None else used_ids
    for folder_frames in by_folder.values():
        folder_frames.sort(key=lambda f: (f.capture_time, str(f.key)))
        groups: list[list[Frame]] = []
        for frame in folder_frames:
            current = groups[-1] if groups else None
            if current is not None:
                gap = (frame.capture_time - current[-1].capture_time).total_seconds()
                alike = any(
                    similarity(frame.embedding, m.embedding) >= min_similarity for m in current
                )
                if gap <= max_gap and alike:
                    current.append(frame)
                    continue
            groups.append([frame])
        for group in groups:
            if len(group) < 2:
                continue
            burst_id = _frame_number(group[0].name)
            if burst_id is None or burst_id in used_ids:
                burst_id = max(used_ids | {0}) + 1
            used_ids.add(burst_id)
            candidates = [f for f in group if not f.has_reason]
            # Of a group's frames, the one where the fewest blinked; then the likeliest keeper.
            best = (
                max(candidates, key=lambda f: (-f.blinks, f.keeper_probability)).key
                if candidates
                else None
            )
            for f in group:
                result[f.key] = BurstInfo(
                    burst_id=burst_id, size=len(group), best_of_burst=f.key == best
                )
    return result


class BurstHold:
    """Holds analysed frames until their burst is complete (daemon use).

    A frame is released once no later frame can join its burst: a frame of the same folder
    shot more than ``max_gap`` after it has arrived, or ``hold_seconds`` passed since it
    arrived (the card copy paused or the shoot ended). Frames released together are
    grouped together, so a burst's frames get their verdicts at the same time.

    A run of frames each shot within ``max_gap`` of the next can go on for as long as
    files keep arriving (a time-lapse, the copy of a whole sports card): once it holds
    more than ``max_frames``, its older part is judged without waiting for the end, so
    the hold (and the time each release takes) stays bounded.
    """

    def __init__(
        self, max_gap: float = MAX_GAP_SECONDS, hold_seconds: float = 3.0, max_frames: int = 200
    ):
        self.max_gap = max_gap
        self.hold_seconds = hold_seconds
        self.max_frames = max_frames
        self._held: dict[str, list[tuple[Frame, float]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._held.values())

    def add(self, frame: Frame, now: float) -> None:
        self._held.setdefault(frame.folder, []).append((frame, now))

    def release(
        self, now: float, everything: bool = False, busy: frozenset[str] = frozenset()
    ) -> list[tuple[list[Frame], dict[Hashable, BurstInfo]]]:
        """Frames whose bursts are complete, grouped, with their burst membership.

        ``busy``: folders with files still queued or being analysed. Their frames are not
        released for quiet time alone (a slow analysis is not the end of a burst), only
        once a later shot has arrived.
        """
        released = []
        for folder, held in list(self._held.items()):
            ready = self._ready(held, now, everything, waiting=folder in busy)
            if not ready:
                continue
            ready_ids = {id(f) for f in ready}
            remaining = [(f, t) for f, t in held if id(f) not in ready_ids]
            if remaining:
                self._held[folder] = remaining
            else:
                del self._held[folder]
            released.append((ready, group_bursts(ready, self.max_gap)))
        return released

    def _ready(
        self, held: list[tuple[Frame, float]], now: float, everything: bool, waiting: bool = False
    ) -> list[Frame]:
        """The held frames of one folder that no later frame can join, in arrival order."""
        frames = [f for f, _ in held]
        newest_arrival = max(arrived for _, arrived in held)
        if everything or (not waiting and now - newest_arrival >= self.hold_seconds):
            return frames
        timed = sorted(
            (f for f in frames if f.capture_time is not None), key=lambda f: f.capture_time
        )
        if not timed:
            return frames  # untimed frames can never join a burst
        # The last run of frames shot within max_gap of each other may still grow; every
        # run before it is complete, since a frame shot more than max_gap after its end
        # has arrived. (Sorting once: a long run must not cost more than n log n.)
        first = len(timed) - 1
        while first > 0 and self._gap(timed[first - 1], timed[first]) <= self.max_gap:
            first -= 1
        still_open = timed[first:]
        if len(still_open) > self.max_frames:
            latest = timed[-1]
            still_open = [f for f in still_open if self._gap(f, latest) <= self.max_gap]
        keep = {id(f) for f in still_open}
        return [f for f in frames if id(f) not in keep]

    @staticmethod
    def _gap(earlier: Frame, later: Frame) -> float:
        return (later.capture_time - earlier.capture_time).total_seconds()
