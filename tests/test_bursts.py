"""Bursts: quick succession + alike content; the best frame is marked, none is demoted."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from postselectd.bursts import BurstHold, Frame, group_bursts

T0 = datetime(2026, 5, 1, 14, 3, 22, 100000)
RNG = np.random.default_rng(7)
SCENE_A = RNG.normal(size=64)
SCENE_B = RNG.normal(size=64)


def frame(
    name: str,
    seconds: float,
    scene: np.ndarray,
    p: float,
    reason: bool = False,
    folder: str = "/shoot",
    blinks: int = 0,
) -> Frame:
    return Frame(
        key=Path(folder) / name,
        folder=folder,
        capture_time=T0 + timedelta(seconds=seconds),
        embedding=scene + RNG.normal(scale=0.3, size=scene.shape),
        keeper_probability=p,
        has_reason=reason,
        name=name,
        blinks=blinks,
    )


def test_quick_alike_frames_form_one_burst_with_its_best_frame():
    frames = [
        frame("DSC_0101.NEF", 0.0, SCENE_A, 0.2, reason=True),
        frame("DSC_0102.NEF", 0.3, SCENE_A, 0.95),
        frame("DSC_0103.NEF", 0.6, SCENE_A, 0.97, reason=True),  # higher p, but blurred
        frame("DSC_0104.NEF", 60.0, SCENE_B, 0.9),
    ]
    bursts = group_bursts(frames)
    assert set(bursts) == {f.key for f in frames[:3]}
    assert {b.burst_id for b in bursts.values()} == {101}
    assert [bursts[f.key].best_of_burst for f in frames[:3]] == [False, True, False]


def test_different_scenes_shot_quickly_are_not_a_burst():
    frames = [frame("a_0001.NEF", 0.0, SCENE_A, 0.9), frame("a_0002.NEF", 0.4, SCENE_B, 0.9)]
    assert group_bursts(frames) == {}


def test_frames_in_different_folders_are_never_grouped():
    frames = [
        frame("DSC_0001.NEF", 0.0, SCENE_A, 0.9, folder="/cam1"),
        frame("DSC_0001.NEF", 0.2, SCENE_A, 0.9, folder="/cam2"),
    ]
    assert group_bursts(frames) == {}


def test_the_best_of_a_group_burst_is_the_frame_where_fewest_blinked():
    frames = [
        frame("DSC_0201.NEF", 0.0, SCENE_A, 0.95, blinks=2),
        frame("DSC_0202.NEF", 0.3, SCENE_A, 0.80, blinks=0),
        frame("DSC_0203.NEF", 0.6, SCENE_A, 0.90, blinks=1),
    ]
    bursts = group_bursts(frames)
    assert [bursts[f.key].best_of_burst for f in frames] == [False, True, False]


def test_a_burst_with_only_rejects_has_no_best_frame():
    frames = [frame(f"DSC_{n}.NEF", n * 0.3, SCENE_A, 0.1, reason=True) for n in range(3)]
    assert not any(b.best_of_burst for b in group_bursts(frames).values())


def test_hold_releases_a_burst_only_when_it_is_complete():
    hold = BurstHold(max_gap=2.0, hold_seconds=3.0)
    first = [frame("DSC_0101.NEF", 0.0, SCENE_A, 0.5), frame("DSC_0102.NEF", 0.3, SCENE_A, 0.9)]
    for f in first:
        hold.add(f, now=100.0)
    assert hold.release(now=100.5) == []  # a third frame may still come
    hold.add(frame("DSC_0103.NEF", 0.6, SCENE_A, 0.4), now=100.6)
    hold.add(frame("DSC_0104.NEF", 30.0, SCENE_B, 0.9), now=100.7)  # a later shot closes it
    [(released, bursts)] = hold.release(now=100.8)
    assert [f.name for f in released] == ["DSC_0101.NEF", "DSC_0102.NEF", "DSC_0103.NEF"]
    assert bursts[released[1].key].best_of_burst
    assert len(hold) == 1
    # The last frame goes after the hold time with nothing newer.
    [(last, _)] = hold.release(now=104.0)
    assert [f.name for f in last] == ["DSC_0104.NEF"] and len(hold) == 0


def test_a_run_that_never_ends_is_judged_in_pieces_and_the_hold_stays_bounded():
    """A time-lapse (or a sports card copied at 10 files/s): every frame within max_gap
    of the next, so no burst ever ends while files keep coming. The hold must not grow
    without bound, and releasing must not take longer as it grows (it once took 30 s a
    call with 1,000 frames held, stalling the daemon)."""
    import time

    hold = BurstHold(max_gap=2.0, hold_seconds=3.0, max_frames=200)
    released = 0
    slowest = 0.0
    for i in range(3000):
        hold.add(frame(f"DSC_{i:04d}.NEF", 0.5 * i, SCENE_A, 0.5), now=100.0 + 0.1 * i)
        start = time.perf_counter()
        for frames, _ in hold.release(now=100.0 + 0.1 * i):
            released += len(frames)
        slowest = max(slowest, time.perf_counter() - start)
        assert len(hold) <= 200 + 5
    assert released >= 3000 - 205
    assert slowest < 0.5, f"a release took {slowest:.2f} s"


def test_grouping_in_parts_that_share_burst_numbers_gives_distinct_numbers():
    # Two bursts whose first frames carry the same number (a counter that wrapped), grouped
    # in two calls as Pipeline.score does: the second gets a fresh number, as in one call.
    used: set[int] = set()
    first = group_bursts(
        [frame("DSC_0001.NEF", 0, SCENE_A, 0.9), frame("DSC_0002.NEF", 0.4, SCENE_A, 0.5)],
        used_ids=used,
    )
    second = group_bursts(
        [
            frame("DSC_0001.NEF", 60, SCENE_B, 0.9, folder="/shoot/b"),
            frame("DSC_0002.NEF", 60.4, SCENE_B, 0.5, folder="/shoot/b"),
        ],
        used_ids=used,
    )
    ids = {info.burst_id for info in first.values()} | {i.burst_id for i in second.values()}
    assert len(ids) == 2 and used == ids
