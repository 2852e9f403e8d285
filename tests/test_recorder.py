"""The recorder state machine, driven by a fake clock and fake segment times."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doorbell.events import (
    Action,
    BufferSegment,
    ClipEnded,
    ClipStarted,
    DeliverSegment,
    EventInClip,
    KeepSegment,
    Recorder,
    RecorderRules,
    RecorderState,
    TriggerIgnored,
)

RULES = RecorderRules(
    pre_roll_seconds=4.0,
    post_roll_seconds=10.0,
    max_clip_seconds=30.0,
    cooldown_seconds=5.0,
)


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _counting_random() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def _recorder(clock: FakeClock, **changes: Any) -> Recorder:
    return Recorder(replace(RULES, **changes), clock=clock, random=_counting_random())


def _state(recorder: Recorder) -> RecorderState:
    # A call, not the bare property: mypy would carry a narrowed property past
    # the trigger that changes it.
    return recorder.state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder(clock: FakeClock) -> Recorder:
    return _recorder(clock)


def _segment(recorder: Recorder, clock: FakeClock, start: float, duration: float) -> list[Action]:
    """A segment finishing now: the clock moves to its end, as it would for real."""
    clock.now = start + duration
    return recorder.segment_complete(start, duration)


def _end_clip(recorder: Recorder, clock: FakeClock) -> ClipEnded:
    """Feed 2 s segments from now until the open clip ends."""
    start = clock.now
    for _ in range(100):
        actions = _segment(recorder, clock, start, 2.0)
        start += 2.0
        if isinstance(actions[-1], ClipEnded):
            return actions[-1]
    raise AssertionError("the clip never ended")


@pytest.mark.parametrize("kind", ["ring", "motion"])
def test_trigger_from_idle_starts_a_clip(recorder: Recorder, kind: str) -> None:
    assert _state(recorder) is RecorderState.IDLE
    assert recorder.clip_id is None
    actions = recorder.trigger(kind)  # type: ignore[arg-type]
    assert actions == [ClipStarted(f"{1:032x}", kind)]  # type: ignore[arg-type]
    assert _state(recorder) is RecorderState.RECORDING
    assert recorder.clip_id == f"{1:032x}"
    assert recorder.clip_type == kind


def test_clip_ids_are_32_hex_digits_from_the_random_source(clock: FakeClock) -> None:
    recorder = Recorder(RULES, clock=clock, random=lambda n: b"\xab" * n)
    [started] = recorder.trigger("ring")
    assert isinstance(started, ClipStarted)
    assert started.clip_id == "ab" * 16


def test_ring_during_motion_clip_makes_it_a_ring_clip(recorder: Recorder, clock: FakeClock) -> None:
    [started] = recorder.trigger("motion")
    assert isinstance(started, ClipStarted)
    clock.now += 3
    assert recorder.trigger("ring") == [EventInClip(started.clip_id, "ring")]
    assert recorder.clip_id == started.clip_id
    assert recorder.clip_type == "ring"
    clock.now += 1
    assert recorder.trigger("motion") == [EventInClip(started.clip_id, "motion")]
    assert recorder.clip_type == "ring", "a later motion must not demote a ring clip"
    assert _end_clip(recorder, clock).clip_type == "ring"


def test_post_roll_expiry_ends_the_clip_at_the_right_segment(
    recorder: Recorder, clock: FakeClock
) -> None:
    clock.now = 101.0
    [started] = recorder.trigger("motion")  # deadline 111
    assert isinstance(started, ClipStarted)
    clip = started.clip_id
    for start in (100.0, 102.0, 104.0, 106.0):
        assert _segment(recorder, clock, start, 2.0) == [KeepSegment(clip)]
    assert _segment(recorder, clock, 108.0, 2.5) == [KeepSegment(clip)]
    ended = _segment(recorder, clock, 110.5, 0.5)
    assert ended == [KeepSegment(clip), ClipEnded(clip, "post-roll", "motion")]
    assert _state(recorder) is RecorderState.COOLDOWN
    assert recorder.clip_id is None
    assert recorder.clip_type is None
    assert _segment(recorder, clock, 111.0, 2.0) == [BufferSegment()]


def test_retrigger_extends_the_post_roll(recorder: Recorder, clock: FakeClock) -> None:
    [started] = recorder.trigger("motion")  # at 100: deadline 110
    assert isinstance(started, ClipStarted)
    clip = started.clip_id
    assert _segment(recorder, clock, 100.0, 4.0) == [KeepSegment(clip)]
    clock.now = 105.0
    assert recorder.trigger("motion") == [EventInClip(clip, "motion")]  # deadline 115
    assert _segment(recorder, clock, 104.0, 6.0) == [KeepSegment(clip)], "ended at the old deadline"
    assert _segment(recorder, clock, 110.0, 4.0) == [KeepSegment(clip)]
    assert _segment(recorder, clock, 114.0, 2.0) == [
        KeepSegment(clip),
        ClipEnded(clip, "post-roll", "motion"),
    ]


def test_max_length_ends_the_clip_despite_continuous_retriggers(
    recorder: Recorder, clock: FakeClock
) -> None:
    [started] = recorder.trigger("motion")  # at 100: capped at 130
    assert isinstance(started, ClipStarted)
    clip = started.clip_id
    ended_at = None
    for start in range(100, 140):
        assert recorder.trigger("motion") == [EventInClip(clip, "motion")]
        actions = _segment(recorder, clock, float(start), 1.0)
        assert actions[0] == KeepSegment(clip)
        if actions[1:]:
            assert actions[1:] == [ClipEnded(clip, "max-length", "motion")]
            ended_at = clock.now
            break
    assert ended_at == 130.0, "the clip must end with the segment reaching 30 s"
    assert _state(recorder) is RecorderState.COOLDOWN


def test_ring_the_clip_cannot_cover_starts_a_new_clip(recorder: Recorder, clock: FakeClock) -> None:
    [first] = recorder.trigger("motion")  # at 100: capped at 130
    assert isinstance(first, ClipStarted)
    clock.now = 120.0
    assert recorder.trigger("ring") == [EventInClip(first.clip_id, "ring")]  # 120 + 10 <= 130
    clock.now = 121.0
    ended, second = recorder.trigger("ring")  # 121 + 10 > 130: would lose a second of footage
    assert ended == ClipEnded(first.clip_id, "max-length", "ring")
    assert isinstance(second, ClipStarted)
    assert second.trigger == "ring"
    assert second.clip_id != first.clip_id
    assert recorder.clip_id == second.clip_id
    assert _segment(recorder, clock, 120.0, 2.0) == [KeepSegment(second.clip_id)]


def test_cooldown_ignores_motion_but_never_a_ring(recorder: Recorder, clock: FakeClock) -> None:
    recorder.trigger("motion")
    ended = _end_clip(recorder, clock)
    assert ended.reason == "post-roll"
    assert _state(recorder) is RecorderState.COOLDOWN
    clock.now += 1
    assert recorder.trigger("motion") == [TriggerIgnored("motion", "cooldown")]
    assert _state(recorder) is RecorderState.COOLDOWN
    [started] = recorder.trigger("ring")
    assert isinstance(started, ClipStarted)
    assert started.clip_id != ended.clip_id
    assert _state(recorder) is RecorderState.RECORDING
    assert recorder.clip_type == "ring"


def test_cooldown_expiry_returns_to_idle(recorder: Recorder, clock: FakeClock) -> None:
    recorder.trigger("motion")
    _end_clip(recorder, clock)
    ended_at = clock.now
    clock.now = ended_at + 4.999
    assert _state(recorder) is RecorderState.COOLDOWN
    assert recorder.trigger("motion") == [TriggerIgnored("motion", "cooldown")]
    clock.now = ended_at + 5.0
    assert _state(recorder) is RecorderState.IDLE
    [started] = recorder.trigger("motion")
    assert isinstance(started, ClipStarted)


def test_cooldown_zero_goes_straight_to_idle(clock: FakeClock) -> None:
    recorder = _recorder(clock, cooldown_seconds=0.0)
    recorder.trigger("motion")
    _end_clip(recorder, clock)
    assert _state(recorder) is RecorderState.IDLE
    [started] = recorder.trigger("motion")
    assert isinstance(started, ClipStarted)


def test_idle_segments_go_to_the_pre_roll(recorder: Recorder, clock: FakeClock) -> None:
    assert _segment(recorder, clock, 90.0, 2.0) == [BufferSegment()]
    assert _state(recorder) is RecorderState.IDLE


def test_segment_in_progress_at_the_trigger_belongs_to_the_clip(
    recorder: Recorder, clock: FakeClock
) -> None:
    [started] = recorder.trigger("ring")
    assert isinstance(started, ClipStarted)
    assert _segment(recorder, clock, 99.0, 2.0) == [KeepSegment(started.clip_id)]


def test_segment_after_a_gap_does_not_join_the_clip(recorder: Recorder, clock: FakeClock) -> None:
    [started] = recorder.trigger("motion")  # deadline 110
    assert isinstance(started, ClipStarted)
    assert _segment(recorder, clock, 100.0, 2.0) == [KeepSegment(started.clip_id)]
    assert _segment(recorder, clock, 150.0, 2.0) == [
        ClipEnded(started.clip_id, "post-roll", "motion"),
        BufferSegment(),
    ]


def test_continuous_mode_delivers_every_segment(clock: FakeClock) -> None:
    recorder = _recorder(clock, continuous=True)
    assert _segment(recorder, clock, 96.0, 2.0) == [DeliverSegment(None)]
    [started] = recorder.trigger("motion")
    assert isinstance(started, ClipStarted)
    clip = started.clip_id
    assert _segment(recorder, clock, 98.0, 2.0) == [DeliverSegment(clip)]
    ended = [*_segment(recorder, clock, 100.0, 10.0)]
    assert ended == [DeliverSegment(clip), ClipEnded(clip, "post-roll", "motion")]
    assert _segment(recorder, clock, 110.0, 2.0) == [DeliverSegment(None)]
    assert recorder.trigger("motion") == [TriggerIgnored("motion", "cooldown")]


def test_stop_during_a_clip_ends_it(recorder: Recorder, clock: FakeClock) -> None:
    recorder.trigger("motion")
    recorder.trigger("ring")
    clip = recorder.clip_id
    assert clip is not None
    assert recorder.stop() == [ClipEnded(clip, "shutdown", "ring")]
    assert _state(recorder) is RecorderState.IDLE
    assert recorder.stop() == []


@pytest.mark.parametrize("in_cooldown", [False, True])
def test_stop_without_a_clip_does_nothing(
    recorder: Recorder, clock: FakeClock, in_cooldown: bool
) -> None:
    if in_cooldown:
        recorder.trigger("motion")
        _end_clip(recorder, clock)
    assert recorder.stop() == []
    assert _state(recorder) is RecorderState.IDLE


def test_unknown_trigger_is_refused(recorder: Recorder) -> None:
    with pytest.raises(ValueError, match="unknown trigger 'knock'"):
        recorder.trigger("knock")  # type: ignore[arg-type]
    assert _state(recorder) is RecorderState.IDLE


def test_bad_segment_timing_is_refused(recorder: Recorder) -> None:
    with pytest.raises(ValueError, match="duration -1"):
        recorder.segment_complete(0.0, -1.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"post_roll_seconds": -1.0}, "post_roll_seconds must be"),
        ({"cooldown_seconds": float("nan")}, "cooldown_seconds must be"),
        ({"max_clip_seconds": 0.0}, "max_clip_seconds must be"),
        ({"post_roll_seconds": 40.0}, r"post_roll_seconds \(40.0\) exceeds max_clip_seconds"),
    ],
)
def test_rules_are_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(RULES, **changes)


_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["ring", "motion", "segment"]),
        st.floats(min_value=0.0, max_value=8.0),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS, continuous=st.booleans(), cooldown=st.sampled_from([0.0, 5.0]))
def test_invariants_hold_for_any_sequence(
    steps: list[tuple[str, float]], continuous: bool, cooldown: float
) -> None:
    clock = FakeClock()
    recorder = _recorder(clock, continuous=continuous, cooldown_seconds=cooldown)
    segment_start = clock.now
    seen_ids: set[str] = set()
    clip_start: float | None = None
    for step, wait in steps:
        clock.now += wait
        if step == "segment":
            open_since = clip_start
            actions = recorder.segment_complete(segment_start, clock.now - segment_start)
            routes = [
                a for a in actions if isinstance(a, KeepSegment | BufferSegment | DeliverSegment)
            ]
            assert len(routes) == 1
            if isinstance(routes[0], KeepSegment):
                assert open_since is not None
                assert segment_start < open_since + RULES.max_clip_seconds
            segment_start = clock.now
        else:
            actions = recorder.trigger(step)  # type: ignore[arg-type]
            if step == "ring":
                assert any(isinstance(a, ClipStarted | EventInClip) for a in actions)
        for action in actions:
            if isinstance(action, ClipStarted):
                assert action.clip_id not in seen_ids
                seen_ids.add(action.clip_id)
                clip_start = clock.now
            elif isinstance(action, ClipEnded):
                assert clip_start is not None
                clip_start = None
        if clip_start is not None:
            assert _state(recorder) is RecorderState.RECORDING
    ended = recorder.stop()
    assert (clip_start is None) == (ended == [])
