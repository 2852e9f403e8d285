"""The pre-roll ring: what it keeps and what it lets go, before anything is sealed."""

from __future__ import annotations

import pytest

from doorbell.capture import MediaSegment
from doorbell.events import PreRoll


def _segment(index: int, duration: float) -> MediaSegment:
    return MediaSegment(b"moof" + bytes([index % 256]), index, float(index), duration, 15)


def _push(preroll: PreRoll, durations: list[float], first: int = 0) -> list[MediaSegment]:
    """Push one segment per duration, indexes counting from ``first``; returns what left."""
    released = []
    for offset, duration in enumerate(durations):
        released += preroll.push(_segment(first + offset, duration))
    return released


def _indexes(preroll: PreRoll) -> list[int]:
    return [segment.index for segment in preroll.drain()]


def test_keeps_the_shortest_suffix_lasting_at_least_the_pre_roll() -> None:
    preroll = PreRoll(5.0)
    assert _push(preroll, [2.0, 2.0, 2.0]) == []
    assert len(preroll) == 3, "4 s without the oldest is short of 5 s: all three stay"
    assert preroll.seconds_buffered == 6.0
    released = _push(preroll, [2.0], first=3)
    assert [s.index for s in released] == [0]
    assert preroll.seconds_buffered == 6.0
    assert _indexes(preroll) == [1, 2, 3]


def test_an_exact_cover_drops_the_older_segments() -> None:
    preroll = PreRoll(4.0)
    _push(preroll, [1.0, 1.0, 3.0, 1.0])
    assert _indexes(preroll) == [2, 3]


def test_one_long_segment_can_cover_the_pre_roll_alone() -> None:
    preroll = PreRoll(3.0)
    _push(preroll, [1.0, 1.0, 5.0])
    assert _indexes(preroll) == [2]


def test_float_durations_keep_the_minimal_suffix() -> None:
    preroll = PreRoll(0.3)
    _push(preroll, [0.1] * 6)
    assert len(preroll) == 3
    assert preroll.seconds_buffered >= 0.3


def test_zero_seconds_keeps_nothing_and_releases_everything_in_order() -> None:
    preroll = PreRoll(0.0)
    released = _push(preroll, [2.0, 2.0])
    assert [s.index for s in released] == [0, 1]
    assert len(preroll) == 0
    assert preroll.seconds_buffered == 0.0
    assert preroll.drain() == []


def test_drain_returns_oldest_first_and_empties_the_ring() -> None:
    preroll = PreRoll(10.0)
    segments = [_segment(index, 1.5) for index in (40, 41, 42)]
    for segment in segments:
        preroll.push(segment)
    assert preroll.drain() == segments
    assert len(preroll) == 0
    assert preroll.seconds_buffered == 0.0
    assert preroll.drain() == []


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_bad_pre_roll_length_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="pre-roll seconds"):
        PreRoll(seconds)


def test_bad_duration_is_refused() -> None:
    preroll = PreRoll(1.0)
    with pytest.raises(ValueError, match="segment 3: bad duration -2"):
        preroll.push(_segment(3, -2.0))
    assert len(preroll) == 0
