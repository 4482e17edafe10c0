"""The sampler picks, for each target on a fixed time grid, the nearest frame: any frame rate, no drift."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core.values import Frame
from edge.stages.sampler import Sampler

START = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
PIXEL = np.zeros((2, 2, 3), np.uint8)


def frame(ts: float) -> Frame:
    return Frame(PIXEL, ts, START + timedelta(seconds=ts))


def run(timestamps: list[float], interval: float) -> list[float]:
    sampler = Sampler(interval)
    picked = []
    for ts in timestamps:
        out = sampler.offer(frame(ts))
        if out is not None:
            picked.append(out.ts)
    return picked


def nearest(timestamps: list[float], target: float) -> float:
    return min(timestamps, key=lambda t: (abs(t - target), t))


@pytest.mark.parametrize("fps", [7.0, 15.0, 25.0, 29.97, 30.0, 60.0])
def test_regular_camera_faster_than_interval_is_sampled_on_the_grid(fps: float) -> None:
    interval = 0.25
    timestamps = [i / fps for i in range(int(fps * 60))]
    picked = run(timestamps, interval)
    # One frame per target over a minute (the last target may still be waiting for its successor).
    assert abs(len(picked) - 60 / interval) <= 1
    # Each pick is the frame nearest its grid target: no drift after a minute of frames.
    for k, ts in enumerate(picked):
        assert ts == nearest(timestamps, k * interval)
    assert abs(picked[-1] - (len(picked) - 1) * interval) <= 0.5 / fps


def test_camera_slower_than_interval_takes_every_frame_once() -> None:
    timestamps = [i * 0.4 for i in range(50)]  # 2.5 fps against a 0.25 s interval
    picked = run(timestamps, 0.25)
    assert picked == timestamps[: len(picked)]
    assert len(picked) >= len(timestamps) - 1


def test_frame_before_the_target_wins_when_nearer_and_is_returned_one_frame_late() -> None:
    sampler = Sampler(1.0)
    assert sampler.offer(frame(0.0)).ts == 0.0
    assert sampler.offer(frame(0.95)) is None  # might be the nearest to 1.0; wait for the next frame
    assert sampler.offer(frame(1.3)).ts == 0.95  # it was
    assert sampler.offer(frame(1.9)) is None
    assert sampler.offer(frame(2.02)).ts == 2.02  # the frame after the target is nearer


def test_a_frame_can_serve_only_one_target_then_the_next_frame_is_used() -> None:
    sampler = Sampler(1.0)
    sampler.offer(frame(0.0))
    sampler.offer(frame(0.9))
    # 0.9 serves target 1.0; 2.1 is the first frame after target 2.0 and has no rival before it.
    assert sampler.offer(frame(2.1)).ts == 0.9
    assert sampler.offer(frame(2.2)).ts == 2.1
    assert sampler.offer(frame(2.3)) is None


def test_gap_in_the_stream_skips_targets_without_repeating_frames() -> None:
    timestamps = [0.0, 0.25, 0.5, 5.0, 5.25, 5.5, 5.75]
    # Frames exactly on a target need no look-ahead, so every one is returned at once.
    assert run(timestamps, 0.25) == timestamps


def test_timestamps_that_do_not_advance_are_ignored_and_counted() -> None:
    sampler = Sampler(0.5)
    sampler.offer(frame(1.0))
    assert sampler.offer(frame(1.0)) is None
    assert sampler.offer(frame(0.5)) is None
    assert sampler.out_of_order == 2


def test_reset_anchors_a_new_grid_on_the_next_frame() -> None:
    sampler = Sampler(1.0)
    sampler.offer(frame(10.0))
    sampler.offer(frame(10.6))
    sampler.reset()
    assert sampler.offer(frame(3.3)).ts == 3.3  # earlier timestamps are fine after a reset
    assert sampler.offer(frame(4.0)) is None
    assert sampler.offer(frame(4.4)).ts == 4.4


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Sampler(0.0)


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.001, max_value=0.6), min_size=2, max_size=400),
    interval=st.floats(min_value=0.05, max_value=1.0),
)
def test_variable_rate_camera_properties(gaps: list[float], interval: float) -> None:
    timestamps = list(np.cumsum(gaps))
    picked = run(timestamps, interval)
    assert picked[0] == timestamps[0]
    assert all(b > a for a, b in pairwise(picked))  # never the same frame twice, in order
    assert set(picked) <= set(timestamps)
    # A target is missed only when its nearest frame already served the previous target:
    # so the number of picks is about the duration over the interval, never more.
    duration = timestamps[-1] - timestamps[0]
    assert len(picked) <= duration / interval + 2
    if max(gaps[1:]) <= interval / 2:  # camera at least twice as fast: every target gets its own frame
        assert len(picked) >= duration / interval - 1
        for k, ts in enumerate(picked):
            assert abs(ts - (timestamps[0] + k * interval)) <= interval / 4 + 1e-9


# Any interval and rate, timestamps that may go back, a reset anywhere or nowhere: what a source can send.
TIMELINES = given(
    gaps=st.lists(st.floats(min_value=-0.05, max_value=0.6), min_size=2, max_size=300),
    interval=st.floats(min_value=0.05, max_value=1.0),
    reset_at=st.integers(min_value=0, max_value=300),
)


@settings(max_examples=200, deadline=None)
@TIMELINES
def test_could_take_says_which_frames_will_be_returned(gaps: list[float], interval: float, reset_at: int) -> None:
    """Asked before each frame with the next frame's timestamp, the answer is exactly whether that frame is
    ever returned; when the next one settles nothing (None, a timestamp that does not follow, a reset between),
    every frame that will be returned is among the yes answers. Any rate, timestamps that go back, a reset."""
    timestamps = [float(t) for t in np.cumsum(gaps)]
    sampler = Sampler(interval)
    said, said_unknown, returned = {}, {}, set()
    for i, ts in enumerate(timestamps):
        if i == reset_at:
            sampler.reset()
        upcoming = timestamps[i + 1] if i + 1 < len(timestamps) and i + 1 != reset_at else None
        said[i] = sampler.could_take(ts, upcoming)
        said_unknown[i] = sampler.could_take(ts, None)
        frame = Frame(PIXEL, ts, START, model_image=np.full(1, i))
        out = sampler.offer(frame)
        if out is not None:
            assert out.model_image is not None
            returned.add(int(out.model_image[0]))
    # Exact where the next frame is known and settles this one: it follows it, with no reset between.
    known = {i for i in range(len(timestamps) - 1) if timestamps[i + 1] > timestamps[i] and i + 1 != reset_at}
    assert {i for i in known if said[i]} == returned & known
    assert returned <= {i for i, yes in said.items() if yes} & {i for i, yes in said_unknown.items() if yes}


@settings(max_examples=200, deadline=None)
@TIMELINES
def test_frames_it_passes_over_need_not_be_offered(gaps: list[float], interval: float, reset_at: int) -> None:
    """A source that does not offer the frames ``passes_over`` names gets exactly the frames, in the same calls
    relative to the frames it does offer, as one that offers every frame. Any rate, timestamps that go back,
    a reset; the frames passed over are never ones ``could_take`` says yes to."""
    timestamps = [float(t) for t in np.cumsum(gaps)]
    every, some = Sampler(interval), Sampler(interval)
    skipped = 0
    for i, ts in enumerate(timestamps):
        if i == reset_at:
            every.reset()
            some.reset()
        following = timestamps[i + 1] if i + 1 < len(timestamps) and i + 1 != reset_at else None
        frame = Frame(PIXEL, ts, START, model_image=np.full(1, i))
        out = every.offer(frame)
        if following is not None and some.passes_over(ts, following):
            assert out is None and not some.could_take(ts, following)
            skipped += 1
            continue
        again = some.offer(frame)
        assert (out is None and again is None) or (out is not None and again is out)
    if max(gaps) <= interval / 4 and min(gaps) > 0 and reset_at >= len(timestamps):
        assert skipped > len(timestamps) / 2 - 4  # a camera much faster than the interval: most are passed over
