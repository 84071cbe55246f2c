"""Bursts: quick succession + alike content; the best frame is marked, none is demoted."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from postselectd.bursts import MAX_BURST_FRAMES, BurstBook, Frame, group_bursts

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


def a_shoot(seed: int) -> list[Frame]:
    """Bursts of 2-6 frames of one scene, single frames, a wrapped frame counter and a
    frame without a number, in two folders."""
    rng = np.random.default_rng(seed)
    frames, t, n = [], 0.0, 9990
    for _ in range(25):
        scene = rng.normal(size=64)
        for _ in range(int(rng.integers(1, 7))):
            n = n + 1 if n < 9999 else 1
            name = f"DSC_{n:04d}.NEF" if rng.random() > 0.05 else "untitled.NEF"
            folder = "/shoot/a" if rng.random() > 0.3 else "/shoot/b"
            frames.append(
                Frame(
                    key=Path(folder) / f"{len(frames):03d}_{name}",
                    folder=folder,
                    capture_time=T0 + timedelta(seconds=t),
                    embedding=scene + rng.normal(scale=0.3, size=64),
                    keeper_probability=float(rng.random()),
                    has_reason=bool(rng.random() < 0.3),
                    name=name,
                    blinks=int(rng.integers(0, 2)),
                )
            )
            t += float(rng.choice([0.2, 0.5, 1.5]))
        t += float(rng.choice([2.5, 10, 60]))
    return frames


def test_a_book_groups_frames_as_the_whole_folder_is_grouped_whatever_their_order():
    # Issue #20: a burst is a property of capture times and content, never of arrival.
    for seed in range(20):
        frames = a_shoot(seed)
        expected = group_bursts(frames)
        assert len(expected) > 10
        arrival = frames[:]
        random.Random(seed).shuffle(arrival)
        book = BurstBook()
        for i, f in enumerate(arrival):
            book.place(f, now=float(i))
            book.wrote(f.key)
        assert {f.key: book.burst_of(f.key) for f in frames if book.burst_of(f.key)} == expected


def test_a_late_frame_holds_the_frames_whose_burst_it_changes():
    book = BurstBook(hold_seconds=3.0)
    early = [frame("DSC_0101.NEF", 0.0, SCENE_A, 0.5), frame("DSC_0103.NEF", 0.6, SCENE_A, 0.4)]
    for f in early:
        book.place(f, now=0.0)
        book.wrote(f.key)
    later = frame("DSC_0110.NEF", 60.0, SCENE_B, 0.9)
    assert book.place(later, now=1.0) == []  # far from the burst: nothing changes
    book.wrote(later.key)
    late = frame("DSC_0102.NEF", 0.3, SCENE_A, 0.95)
    changed = book.place(late, now=2.0, hold=True)
    assert set(changed) == {early[0].key, early[1].key}
    # A frame shot 60 s later is in: the burst is complete unless a file on its way
    # (capture time known or not) could still join it.
    assert book.ready(now=2.1, on_the_way={"/shoot": [T0 + timedelta(seconds=1.5)]}) == []
    assert book.ready(now=2.1, on_the_way={"/shoot": [None]}) == []
    ready = book.ready(now=2.1, on_the_way={"/shoot": [T0 + timedelta(seconds=30)]})
    assert ready == [early[0].key, late.key, early[1].key]
    assert book.burst_of(late.key).best_of_burst and book.burst_of(late.key).size == 3


def test_the_newest_burst_is_ready_after_the_folder_has_been_quiet():
    book = BurstBook(hold_seconds=3.0)
    frames = [frame("DSC_0101.NEF", 0.0, SCENE_A, 0.5), frame("DSC_0102.NEF", 0.3, SCENE_A, 0.9)]
    for f in frames:
        book.place(f, now=100.0, hold=True)
    assert book.ready(now=100.5) == []  # a third frame may still come
    assert book.ready(now=103.5, on_the_way={"/shoot": [None]}) == []  # one is on its way
    assert book.ready(now=103.5) == [f.key for f in frames]
    for f in frames:
        book.wrote(f.key)
    assert book.held() == 0 and book.ready(now=200.0) == []


def test_a_frame_analysed_again_replaces_its_earlier_analysis():
    # A file written in pieces: its first analysis (of part of it) is superseded, never a
    # member of a burst with its own later self.
    book = BurstBook()
    partial = frame("DSC_0113.NEF", 0.0, SCENE_A, 0.2)
    book.place(partial, now=0.0)
    book.place(frame("DSC_0113.NEF", 0.0, SCENE_A, 0.9), now=1.0)
    assert len(book) == 1 and book.burst_of(partial.key) is None


def test_a_frame_that_leaves_its_burst_makes_the_others_change():
    book = BurstBook()
    frames = [frame(f"DSC_010{n}.NEF", 0.4 * n, SCENE_A, 0.5 + n / 10) for n in range(3)]
    for f in frames:
        for key in [f.key, *book.place(f, now=0.0)]:
            book.wrote(key)  # what the daemon does: every sidecar says its burst
    assert book.burst_of(frames[0].key).size == 3
    assert set(book.remove(frames[2].key, now=1.0)) == {frames[0].key, frames[1].key}
    assert book.burst_of(frames[0].key).size == 2 and book.burst_of(frames[1].key).best_of_burst


def test_a_sequence_that_never_pauses_is_cut_into_bursts_of_bounded_size():
    """A time-lapse (or a sports card shot without a pause): every frame within max_gap of
    the next. Bursts stop at MAX_BURST_FRAMES, so a frame arriving at the end of a long
    sequence changes one burst's sidecars, not thousands, and grouping stays linear."""
    frames = [frame(f"DSC_{i:04d}.NEF", 0.5 * i, SCENE_A, 0.5) for i in range(1000)]
    bursts = group_bursts(frames)
    sizes = sorted({b.burst_id: b.size for b in bursts.values()}.values())
    assert sizes == [MAX_BURST_FRAMES] * (1000 // MAX_BURST_FRAMES)
    book = BurstBook()
    for i, f in enumerate(frames):
        changed = book.place(f, now=float(i))
        for key in [f.key, *changed]:
            book.wrote(key)
        assert len(changed) < MAX_BURST_FRAMES
    assert {f.key: book.burst_of(f.key) for f in frames} == bursts


def test_folders_left_idle_leave_memory():
    book = BurstBook()
    book.place(frame("DSC_0101.NEF", 0.0, SCENE_A, 0.5), now=0.0)
    book.place(frame("DSC_0001.NEF", 0.0, SCENE_A, 0.5, folder="/other"), now=500.0)
    assert book.unload_idle(now=700.0, idle_seconds=600.0) == ["/shoot"]
    assert len(book) == 1 and book.is_loaded("/other") and not book.is_loaded("/shoot")


def test_grouping_in_parts_that_share_burst_numbers_gives_distinct_numbers():
    # Two bursts of one folder whose first frames carry the same number (a counter that
    # wrapped), grouped in two calls as Pipeline.score does: the second gets a fresh
    # number, as in one call. Another folder's bursts may carry the same numbers.
    used: dict[str, set[int]] = {}
    first = group_bursts(
        [frame("DSC_0001.NEF", 0, SCENE_A, 0.9), frame("DSC_0002.NEF", 0.4, SCENE_A, 0.5)],
        used_ids=used,
    )
    second = group_bursts(
        [frame("DSC_10001.NEF", 60, SCENE_B, 0.9), frame("DSC_10002.NEF", 60.4, SCENE_B, 0.5)],
        used_ids=used,
    )
    ids = {info.burst_id for info in first.values()} | {i.burst_id for i in second.values()}
    assert len(ids) == 2 and used == {"/shoot": ids}
    elsewhere = group_bursts(
        [
            frame("DSC_0001.NEF", 0, SCENE_A, 0.9, folder="/shoot/b"),
            frame("DSC_0002.NEF", 0.4, SCENE_A, 0.5, folder="/shoot/b"),
        ],
        used_ids=used,
    )
    assert {info.burst_id for info in elsewhere.values()} == {1}


def test_in_a_sequence_still_coming_in_the_groups_before_the_last_are_ready():
    # A card copy of a sequence with no pause of max_gap: the scene changed at 1.0 s, so
    # the first group is final once nothing shot before the second group is on its way.
    book = BurstBook(hold_seconds=3.0)
    frames = [
        frame("DSC_0101.NEF", 0.0, SCENE_A, 0.5),
        frame("DSC_0102.NEF", 0.5, SCENE_A, 0.9),
        frame("DSC_0103.NEF", 1.0, SCENE_B, 0.5),
        frame("DSC_0104.NEF", 1.5, SCENE_B, 0.6),
    ]
    for f in frames:
        book.place(f, now=10.0, hold=True)
    early = T0 + timedelta(seconds=0.8)  # could still join the first group
    assert book.ready(now=10.1, on_the_way={"/shoot": [early]}) == []
    later = T0 + timedelta(seconds=2.0)
    assert book.ready(now=10.1, on_the_way={"/shoot": [later]}) == [frames[0].key, frames[1].key]
