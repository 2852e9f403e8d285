"""Clip routing without the daemon: what is delivered, in which order, and what never is."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from doorbell.capture import InitSegment, MediaSegment
from doorbell.capture.source import StreamFormat
from doorbell.events import ClipRouter, Delivery, RecorderRules, Retention
from doorbell.sealing import Kind

SEGMENT = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counter() -> Iterator[bytes]:
    for n in itertools.count():
        yield n.to_bytes(16, "big")


class Rig:
    """A router fed one-second segments on a clock that moves with them."""

    def __init__(self, snapshot: bytes = b"\xff\xd8\xffJPEG", **rules: float | bool) -> None:
        self.clock = Clock()
        ids = _counter()
        self.snapshot = snapshot
        params = {"pre_roll_seconds": 2.0, "post_roll_seconds": 3.0, "cooldown_seconds": 0.0}
        params.update(rules)
        self.router = ClipRouter(
            RecorderRules(**params),  # type: ignore[arg-type]
            camera="front door",
            snapshot=self._snapshot,
            clock=self.clock,
            wall_clock=lambda: 1_700_000_000.0,
            random=lambda n: next(ids)[:n],
        )
        self.index = 0
        fmt = StreamFormat(width=64, height=48, fps=15)
        self.init = self.router.new_stream(InitSegment(b"ftypmoov", fmt))

    def _snapshot(self) -> bytes:
        return self.snapshot

    def segments(self, count: int) -> list[Delivery]:
        out = []
        for _ in range(count):
            self.clock.now += SEGMENT
            segment = MediaSegment(
                f"seg{self.index}".encode(), self.index, float(self.index), SEGMENT, 15
            )
            self.index += 1
            out += self.router.segment(segment)
        return out

    def ring(self) -> list[Delivery]:
        return self.router.trigger("ring", position=float(self.index))


def _describe(deliveries: list[Delivery]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for d in deliveries:
        if d.kind is Kind.SEGMENT:
            out.append((d.retention.value, d.meta["index"]))
        elif d.kind is Kind.EVENT:
            out.append(("event", d.meta["type"]))
        else:
            out.append((d.kind.name.lower(), d.meta.get("notice")))
    return out


def test_an_idle_doorbell_delivers_only_its_init_segment_however_long_it_runs() -> None:
    rig = Rig()
    assert [d.kind for d in rig.init] == [Kind.INIT]
    assert rig.init[0].meta["camera"] == "front door"
    # A day of two-second segments would be 43,200; an hour of one-second ones will do.
    assert rig.segments(3600) == []
    assert rig.router.stop() == [], "unclaimed pre-roll was never sealed: nothing to announce"
    assert rig.router.counts.segments == 3600


def test_a_ring_delivers_its_event_first_then_the_pre_roll_then_the_clip() -> None:
    rig = Rig()
    rig.segments(10)
    started = rig.ring()
    assert _describe(started) == [("event", "ring"), ("clip", 8), ("clip", 9)]
    event = started[0]
    assert event.body == rig.snapshot
    assert event.retention is Retention.ESSENTIAL
    assert event.meta["first_index"] == 8
    assert event.meta["stream"] == rig.init[0].meta["stream"]
    assert started[1].body == b"seg8", "the pre-roll is the camera's bytes, untouched"
    during = rig.segments(5)
    assert _describe(during) == [("clip", 10), ("clip", 11), ("clip", 12), ("notice", "clip-end")]
    end = during[-1]
    assert end.meta["last_index"] == 12
    assert end.meta["reason"] == "post-roll"
    assert end.meta["clip"] == event.meta["clip"]
    assert rig.segments(20) == [], "after the clip the doorbell is idle again"


def test_a_second_ring_in_the_clip_is_an_event_of_the_same_clip() -> None:
    rig = Rig()
    rig.segments(4)
    first = rig.ring()[0]
    rig.segments(1)
    second = rig.ring()
    assert _describe(second) == [("event", "ring")]
    assert second[0].meta["clip"] == first.meta["clip"]
    assert second[0].meta["first_index"] == first.meta["first_index"]


def test_a_clip_ended_before_any_new_segment_names_its_pre_roll_as_its_last() -> None:
    rig = Rig()
    rig.segments(4)
    rig.ring()
    stopped = rig.router.stop()
    assert _describe(stopped) == [("notice", "clip-end")]
    assert stopped[0].meta["last_index"] == 3
    assert stopped[0].meta["reason"] == "shutdown"


def test_a_ring_before_any_segment_has_an_empty_clip() -> None:
    rig = Rig()
    started = rig.ring()
    assert _describe(started) == [("event", "ring")]
    assert started[0].meta["first_index"] == 0
    assert rig.router.stop()[0].meta["last_index"] == -1


def test_a_failing_snapshot_does_not_lose_the_event() -> None:
    rig = Rig()

    def broken() -> bytes:
        raise RuntimeError("camera busy")

    rig.router._snapshot = broken  # the one injected dependency, swapped mid-run
    rig.segments(3)
    event = rig.ring()[0]
    assert event.kind is Kind.EVENT
    assert event.body == b""


def test_continuous_recording_delivers_what_leaves_the_ring_and_a_clip_claims_the_ring() -> None:
    rig = Rig(continuous=True)
    idle = rig.segments(5)
    assert _describe(idle) == [("continuous", 0), ("continuous", 1), ("continuous", 2)]
    started = rig.ring()
    assert _describe(started) == [("event", "ring"), ("clip", 3), ("clip", 4)]
    during = rig.segments(3)
    assert _describe(during) == [("clip", 5), ("clip", 6), ("clip", 7), ("notice", "clip-end")]
    after = rig.segments(3)
    assert _describe(after) == [("continuous", 8)]
    assert _describe(rig.router.stop()) == [("continuous", 9), ("continuous", 10)]


@pytest.mark.parametrize("continuous", [False, True])
def test_every_segment_is_delivered_at_most_once(continuous: bool) -> None:
    rig = Rig(continuous=continuous)
    delivered: list[int] = []
    for step in range(60):
        if step % 7 == 3:
            delivered += [d.meta["index"] for d in rig.ring() if d.kind is Kind.SEGMENT]
        delivered += [d.meta["index"] for d in rig.segments(1) if d.kind is Kind.SEGMENT]
    delivered += [d.meta["index"] for d in rig.router.stop() if d.kind is Kind.SEGMENT]
    assert len(delivered) == len(set(delivered))
    assert delivered == sorted(delivered)
    if continuous:
        assert delivered == list(range(60)), "continuous recording delivers every segment"
