"""Bursts: frames shot in quick succession of the same scene, judged together.

A burst is a run of frames in one folder whose capture times (with sub-seconds) are at
most ``max_gap`` apart and whose content is alike (EfficientNet-Lite0 embeddings; the
same scene shifted, blurred or cropped scores 0.6-0.97, different photos 0.1-0.35 on the
sample NEFs). The best frame is the one with the highest keeper probability and no
reason against it. Weaker frames are not rejected for being weaker: they keep their own
verdict (a photographer kept 87 of 100 frames that a peer tool demoted).

A burst is a property of the frames alone, never of when their files arrived: ``score
DIR`` groups a folder's frames with ``group_bursts``; the daemon keeps every frame of the
folders it rates in a ``BurstBook``, which groups them the same way whatever order and
spacing they arrive in, and says which frames' sidecars must change when a late frame
joins (or a changed file leaves) a burst.

Plain Python and numpy.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

MAX_GAP_SECONDS = 2.0
MIN_SIMILARITY = 0.5
# A sequence longer than this (a time-lapse, a whole sports card shot at 10 fps without
# a pause) is cut into bursts of this many frames: each gets its best frame, and a frame
# arriving at its end never makes hundreds of sidecars change.
MAX_BURST_FRAMES = 200


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


def _frame_number(name: str) -> int | None:
    match = re.search(r"(\d{3,})(?=\D*$)", Path(name).stem)
    return int(match.group(1)) % 10000 if match else None


def _order(frame: Frame) -> tuple:
    return (frame.capture_time, str(frame.key))


def _gap(earlier: Frame, later: Frame) -> float:
    return (later.capture_time - earlier.capture_time).total_seconds()


def _groups(frames: list[Frame], max_gap: float, min_similarity: float) -> Iterator[list[Frame]]:
    """The groups of frames sorted by capture time: each frame joins the group before it
    when it was shot within ``max_gap`` of that group's last frame and looks like any of
    its frames (the most recent first: in a long sequence that is almost always the one)."""
    current: list[Frame] = []
    units: list[np.ndarray | None] = []
    for frame in frames:
        unit = _unit(frame.embedding)
        if current and len(current) < MAX_BURST_FRAMES and _gap(current[-1], frame) <= max_gap:
            if unit is not None and any(
                u is not None and float(u @ unit) >= min_similarity for u in reversed(units)
            ):
                current.append(frame)
                units.append(unit)
                continue
        if current:
            yield current
        current, units = [frame], [unit]
    if current:
        yield current


def _best(group: list[Frame]) -> Hashable | None:
    """Of a group's frames without a reason against them, the one where the fewest blinked;
    then the likeliest keeper. None when every frame has a reason against it."""
    candidates = [f for f in group if not f.has_reason]
    if not candidates:
        return None
    return max(candidates, key=lambda f: (-f.blinks, f.keeper_probability)).key


def _number(group: list[Frame], used_ids: set[int]) -> int:
    """The burst's number: its first frame's (DSC_0104 -> 104), or a fresh one if taken."""
    burst_id = _frame_number(group[0].name)
    if burst_id is None or burst_id in used_ids:
        burst_id = max(used_ids | {0}) + 1
    used_ids.add(burst_id)
    return burst_id


def _members(group: list[Frame], burst_id: int) -> dict[Hashable, BurstInfo]:
    best = _best(group)
    return {
        f.key: BurstInfo(burst_id=burst_id, size=len(group), best_of_burst=f.key == best)
        for f in group
    }


def group_bursts(
    frames: Iterable[Frame],
    max_gap: float = MAX_GAP_SECONDS,
    min_similarity: float = MIN_SIMILARITY,
    used_ids: dict[str, set[int]] | None = None,
) -> dict[Hashable, BurstInfo]:
    """Burst membership for every frame that belongs to a burst of two or more.

    A burst's number is unique in its folder. ``used_ids``: the numbers already given per
    folder (updated here), when a run of files is grouped in parts that no burst can
    cross (``Pipeline.score``).
    """
    by_folder: dict[str, list[Frame]] = {}
    for frame in frames:
        if frame.capture_time is not None:
            by_folder.setdefault(frame.folder, []).append(frame)
    result: dict[Hashable, BurstInfo] = {}
    used_ids = {} if used_ids is None else used_ids
    for folder, folder_frames in by_folder.items():
        folder_frames.sort(key=_order)
        used = used_ids.setdefault(folder, set())
        for group in _groups(folder_frames, max_gap, min_similarity):
            if len(group) >= 2:
                result.update(_members(group, _number(group, used)))
    return result


class _Folder:
    """The frames of one folder in capture order, with their bursts."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []  # sorted by _order
        self.order: list[tuple] = []  # _order of each, for bisect
        self.by_key: dict[Hashable, Frame] = {}
        self.bursts: dict[Hashable, BurstInfo] = {}
        self.written: dict[Hashable, BurstInfo | None] = {}  # what each sidecar says
        self.held: set[Hashable] = set()  # frames whose sidecar waits for their burst
        self.changed_at = 0.0
        # A burst is numbered after the bursts shot before it (its first frame's number
        # was taken, or it has none): every change renumbers the folder.
        self.numbered_in_order = False

    def index(self, key: Hashable) -> int:
        return bisect.bisect_left(self.order, _order(self.by_key[key]))

    def insert(self, frame: Frame) -> int:
        i = bisect.bisect_left(self.order, _order(frame))
        self.frames.insert(i, frame)
        self.order.insert(i, _order(frame))
        self.by_key[frame.key] = frame
        return i

    def delete(self, key: Hashable) -> int:
        i = self.index(key)
        del self.frames[i], self.order[i], self.by_key[key]
        self.bursts.pop(key, None)
        self.written.pop(key, None)
        self.held.discard(key)
        return i

    def chain(self, i: int, max_gap: float) -> tuple[int, int]:
        """[start, end) of the frames around index i that are each within max_gap of the
        next: no burst crosses the ends of such a chain."""
        start, end = i, i + 1
        while start > 0 and _gap(self.frames[start - 1], self.frames[start]) <= max_gap:
            start -= 1
        while end < len(self.frames) and _gap(self.frames[end - 1], self.frames[end]) <= max_gap:
            end += 1
        return start, end


class BurstBook:
    """Every frame of the folders the daemon is rating, grouped into bursts exactly as
    ``group_bursts`` groups the whole folder (``score DIR``), whatever the order and the
    spacing in which the frames arrive.

    Placing a frame (a new file, or a changed file's new analysis, which supersedes the
    old one) regroups only the chain of frames it can touch. Frames whose burst changed
    while their sidecar says otherwise are *held*, as is a new frame that should wait (a
    dump is still coming in): ``ready`` gives them back once no frame still on its way can
    join their burst, so a burst's frames are written once, with the burst's verdict.
    Only frames with a capture time are placed: others can never join a burst.
    """

    def __init__(
        self,
        max_gap: float = MAX_GAP_SECONDS,
        min_similarity: float = MIN_SIMILARITY,
        hold_seconds: float = 3.0,
    ):
        self.max_gap = max_gap
        self.min_similarity = min_similarity
        self.hold_seconds = hold_seconds
        self._folders: dict[str, _Folder] = {}
        self._where: dict[Hashable, str] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def held(self) -> int:
        return sum(len(f.held) for f in self._folders.values())

    def is_loaded(self, folder: str) -> bool:
        return folder in self._folders

    def load(self, folder: str, frames: Iterable[Frame], now: float) -> None:
        """The frames of a folder rated before (in an earlier run): their sidecars say the
        bursts they form together."""
        book = self._folders.setdefault(folder, _Folder())
        for frame in frames:
            if frame.key not in self._where and frame.capture_time is not None:
                book.insert(frame)
                self._where[frame.key] = folder
        self._renumber(book)
        for frame in book.frames:
            book.written.setdefault(frame.key, book.bursts.get(frame.key))
        book.changed_at = now

    def unload_idle(self, now: float, idle_seconds: float) -> list[str]:
        """Forget the folders where nothing happened for ``idle_seconds`` (loaded again
        when a frame arrives there): the memory of a long-running daemon stays bounded."""
        idle = [
            name
            for name, book in self._folders.items()
            if not book.held and now - book.changed_at >= idle_seconds
        ]
        for name in idle:
            for key in self._folders.pop(name).by_key:
                self._where.pop(key, None)
        return idle

    def burst_of(self, key: Hashable) -> BurstInfo | None:
        folder = self._where.get(key)
        return None if folder is None else self._folders[folder].bursts.get(key)

    def written(self, key: Hashable) -> BurstInfo | None:
        """The burst the frame's sidecar says it is in."""
        folder = self._where.get(key)
        return None if folder is None else self._folders[folder].written.get(key)

    def place(self, frame: Frame, now: float, *, hold: bool = False) -> list[Hashable]:
        """Add a frame (replacing an earlier analysis of the same file). Returns the other
        frames whose sidecars no longer say their burst; they are held. ``hold``: the new
        frame waits too (see ``ready``); otherwise the caller writes it now (``wrote``)."""
        assert frame.capture_time is not None
        affected = set(self._take_out(frame.key))
        book = self._folders.setdefault(frame.folder, _Folder())
        i = book.insert(frame)
        self._where[frame.key] = frame.folder
        start, end = book.chain(i, self.max_gap)
        affected.update(f.key for f in book.frames[start:end])
        affected |= self._regroup(book, start, end)
        affected.discard(frame.key)
        if hold:
            book.held.add(frame.key)
        book.changed_at = now
        return self._hold_changed(book, affected)

    def remove(self, key: Hashable, now: float) -> list[Hashable]:
        """Take a frame out (its file changed, left, or can no longer be judged). Returns
        the frames whose sidecars no longer say their burst; they are held."""
        folder = self._where.get(key)
        affected = self._take_out(key)
        if folder is None:
            return []
        book = self._folders[folder]
        book.changed_at = now
        return self._hold_changed(book, affected)

    def wrote(self, key: Hashable) -> None:
        """The frame's sidecar now says its current burst."""
        folder = self._where.get(key)
        if folder is not None:
            book = self._folders[folder]
            book.written[key] = book.bursts.get(key)
            book.held.discard(key)

    def let_go(self, key: Hashable) -> None:
        """Stop holding a frame whose sidecar could not be written: tried again when its
        burst next changes, not at every turn."""
        folder = self._where.get(key)
        if folder is not None:
            self._folders[folder].held.discard(key)

    def ready(
        self,
        now: float,
        on_the_way: dict[str, list[datetime | None]] | None = None,
        everything: bool = False,
    ) -> list[Hashable]:
        """Held frames whose burst can no longer change, in capture order per folder.

        ``on_the_way``: per folder, the capture times of files being analysed (None where
        not known). A held frame is ready when a frame shot more than ``max_gap`` after
        its chain is in the book and nothing on the way could join the chain; or when its
        folder has nothing on the way and no frame came for ``hold_seconds``.
        """
        on_the_way = on_the_way or {}
        ready: list[Hashable] = []
        for name, book in self._folders.items():
            if not book.held:
                continue
            coming = on_the_way.get(name, [])
            if everything or (not coming and now - book.changed_at >= self.hold_seconds):
                ready.extend(f.key for f in book.frames if f.key in book.held)
                continue
            done_to = -1
            for i in sorted(book.index(key) for key in book.held):
                if i < done_to:
                    continue
                start, end = book.chain(i, self.max_gap)
                done_to = end
                first, last = book.frames[start].capture_time, book.frames[end - 1].capture_time
                may_join = any(
                    when is None
                    or (
                        (when - first).total_seconds() >= -self.max_gap
                        and (when - last).total_seconds() <= self.max_gap
                    )
                    for when in coming
                )
                if end < len(book.frames) and not may_join:
                    ready.extend(f.key for f in book.frames[start:end] if f.key in book.held)
                    continue
                # The chain may still grow (a long sequence being copied): its groups
                # before the last one are final unless a frame shot before that group's
                # start is still to come.
                settled = self._last_group_start(book, start, end)
                opening = book.frames[settled].capture_time
                if settled > start and all(when is not None and when > opening for when in coming):
                    ready.extend(f.key for f in book.frames[start:settled] if f.key in book.held)
        return ready

    @staticmethod
    def _last_group_start(book: _Folder, start: int, end: int) -> int:
        """Where the last group of the chain frames[start:end] begins: its frames share
        the last frame's burst (a frame in no burst is a group of its own)."""
        last = book.bursts.get(book.frames[end - 1].key)
        j = end - 1
        if last is None:
            return j
        while j > start:
            before = book.bursts.get(book.frames[j - 1].key)
            if before is None or before.burst_id != last.burst_id:
                break
            j -= 1
        return j

    def _take_out(self, key: Hashable) -> set[Hashable]:
        """Remove a frame and regroup its chain; the keys whose burst may have changed."""
        folder = self._where.pop(key, None)
        if folder is None:
            return set()
        book = self._folders[folder]
        start, end = book.chain(book.index(key), self.max_gap)
        neighbours = {f.key for f in book.frames[start:end]} - {key}
        book.delete(key)
        return neighbours | self._regroup(book, start, end - 1)

    def _regroup(self, book: _Folder, start: int, end: int) -> set[Hashable]:
        """Group frames[start:end], a whole chain (or chains). Returns the keys outside it
        whose burst changed: only when burst numbers had to be given again."""
        chain = book.frames[start:end]
        for frame in chain:
            book.bursts.pop(frame.key, None)
        groups = [g for g in _groups(chain, self.max_gap, self.min_similarity) if len(g) >= 2]
        numbers = [_frame_number(g[0].name) for g in groups]
        taken = {b.burst_id for b in book.bursts.values()}
        if (
            not book.numbered_in_order
            and None not in numbers
            and len(set(numbers)) == len(numbers)
            and not set(numbers) & taken
        ):
            for group, number in zip(groups, numbers, strict=True):
                book.bursts.update(_members(group, number))
            return set()
        # Two bursts would share a number (a counter that wrapped) or a frame has none:
        # number the whole folder in capture order, as group_bursts does.
        before = dict(book.bursts)
        self._renumber(book)
        return {
            k for k in before.keys() | book.bursts.keys() if before.get(k) != book.bursts.get(k)
        }

    def _renumber(self, book: _Folder) -> None:
        book.bursts.clear()
        book.numbered_in_order = False
        used: set[int] = set()
        for group in _groups(book.frames, self.max_gap, self.min_similarity):
            if len(group) >= 2:
                number = _number(group, used)
                book.numbered_in_order |= number != _frame_number(group[0].name)
                book.bursts.update(_members(group, number))

    @staticmethod
    def _hold_changed(book: _Folder, keys: Iterable[Hashable]) -> list[Hashable]:
        changed = []
        for key in keys:
            if key in book.written and book.written[key] != book.bursts.get(key):
                book.held.add(key)
                changed.append(key)
        return changed
