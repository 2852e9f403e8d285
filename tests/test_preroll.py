"""The pre-roll ring: what it keeps, what it hands over and how it reports what it dropped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from doorbell.events import PreRoll
from doorbell.sealing import (
    DeviceSigningKey,
    Keyring,
    Kind,
    RecipientPrivateKey,
    SealedObject,
    Suite,
)
from doorbell.sealing.format import parse_envelope
from doorbell.sealing.sealer import seal_bytes

Seal = Callable[[int], SealedObject]


@pytest.fixture(scope="module")
def seal() -> Seal:
    """``seal(seq)``: a real sealed segment object with that sequence number."""
    key = DeviceSigningKey.generate()
    phone = RecipientPrivateKey.generate(Suite.X25519)
    keyring = Keyring().add("phone", phone.public_key(), datetime.now(UTC))

    def seal(seq: int) -> SealedObject:
        data = seal_bytes(key, keyring, seq, bytes(32), Kind.SEGMENT, {"index": seq}, b"moof", 0)
        return SealedObject(key.public_key.device_id, seq, Kind.SEGMENT, data)

    return seal


def _push(
    preroll: PreRoll, seal: Seal, durations: list[float], first_seq: int = 0
) -> list[SealedObject]:
    """Push one segment per duration, seqs and indexes counting from ``first_seq``."""
    objects = []
    for offset, duration in enumerate(durations):
        sealed = seal(first_seq + offset)
        preroll.push(sealed, duration, index=first_seq + offset)
        objects.append(sealed)
    return objects


def _indexes(preroll: PreRoll) -> list[int]:
    return [segment.index for segment in preroll.drain()]


def _hash(sealed: SealedObject) -> str:
    return parse_envelope(sealed.data).chain_hash.hex()


def test_keeps_the_shortest_suffix_lasting_at_least_the_pre_roll(seal: Seal) -> None:
    preroll = PreRoll(5.0)
    _push(preroll, seal, [2.0, 2.0, 2.0])
    assert len(preroll) == 3, "4 s without the oldest is short of 5 s: all three stay"
    assert preroll.seconds_buffered == 6.0
    _push(preroll, seal, [2.0], first_seq=3)
    assert len(preroll) == 3
    assert preroll.seconds_buffered == 6.0
    assert _indexes(preroll) == [1, 2, 3]


def test_an_exact_cover_drops_the_older_segments(seal: Seal) -> None:
    preroll = PreRoll(4.0)
    _push(preroll, seal, [1.0, 1.0, 3.0, 1.0])
    assert _indexes(preroll) == [2, 3]


def test_one_long_segment_can_cover_the_pre_roll_alone(seal: Seal) -> None:
    preroll = PreRoll(3.0)
    _push(preroll, seal, [1.0, 1.0, 5.0])
    assert _indexes(preroll) == [2]


def test_float_durations_keep_the_minimal_suffix(seal: Seal) -> None:
    preroll = PreRoll(0.3)
    _push(preroll, seal, [0.1] * 6)
    assert len(preroll) == 3
    assert preroll.seconds_buffered >= 0.3


def test_zero_seconds_keeps_nothing(seal: Seal) -> None:
    preroll = PreRoll(0.0)
    objects = _push(preroll, seal, [2.0, 2.0])
    assert len(preroll) == 0
    assert preroll.seconds_buffered == 0.0
    assert preroll.drain() == []
    assert preroll.take_discarded() == [{"first": 0, "last": 1, "last_hash": _hash(objects[1])}]


def test_drain_returns_oldest_first_and_empties_the_ring(seal: Seal) -> None:
    preroll = PreRoll(10.0)
    objects = [seal(seq) for seq in (7, 9, 12)]
    for index, sealed in enumerate(objects):
        preroll.push(sealed, 1.5, index=40 + index)
    drained = preroll.drain()
    assert [segment.sealed for segment in drained] == objects
    assert [(segment.index, segment.duration) for segment in drained] == [
        (40, 1.5),
        (41, 1.5),
        (42, 1.5),
    ]
    assert len(preroll) == 0
    assert preroll.seconds_buffered == 0.0
    assert preroll.drain() == []
    assert preroll.take_discarded() == [], "a drained segment is delivered, not discarded"


def test_discarded_ranges_merge_adjacent_seqs_and_split_on_gaps(seal: Seal) -> None:
    preroll = PreRoll(1.0)
    # Segment seqs 10, 11, 12, then 14, 15 (13 was an event), then 20, 21.
    objects = [seal(seq) for seq in (10, 11, 12, 14, 15, 20, 21)]
    for index, sealed in enumerate(objects):
        preroll.push(sealed, 1.0, index=index)
    assert [segment.sealed.seq for segment in preroll.drain()] == [21]
    assert preroll.take_discarded() == [
        {"first": 10, "last": 12, "last_hash": _hash(objects[2])},
        {"first": 14, "last": 15, "last_hash": _hash(objects[4])},
        {"first": 20, "last": 20, "last_hash": _hash(objects[5])},
    ]
    assert preroll.take_discarded() == [], "taking the ranges clears them"


def test_ranges_taken_are_not_extended_later(seal: Seal) -> None:
    preroll = PreRoll(1.0)
    objects = [seal(seq) for seq in range(4)]
    for index, sealed in enumerate(objects[:2]):
        preroll.push(sealed, 1.0, index=index)
    assert preroll.take_discarded() == [{"first": 0, "last": 0, "last_hash": _hash(objects[0])}]
    for index, sealed in enumerate(objects[2:], start=2):
        preroll.push(sealed, 1.0, index=index)
    assert preroll.take_discarded() == [{"first": 1, "last": 2, "last_hash": _hash(objects[2])}]


def test_discard_all_reports_what_was_still_buffered(seal: Seal) -> None:
    preroll = PreRoll(10.0)
    objects = _push(preroll, seal, [1.0, 1.0], first_seq=5)
    preroll.discard_all()
    assert len(preroll) == 0
    assert preroll.take_discarded() == [{"first": 5, "last": 6, "last_hash": _hash(objects[1])}]


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_bad_pre_roll_length_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="pre-roll seconds"):
        PreRoll(seconds)


def test_bad_duration_is_refused(seal: Seal) -> None:
    preroll = PreRoll(1.0)
    with pytest.raises(ValueError, match="segment 3: bad duration -2"):
        preroll.push(seal(0), -2.0, index=3)
    assert len(preroll) == 0


def test_without_discarding_the_segments_leaving_the_ring_are_returned_in_order(
    seal: Seal,
) -> None:
    preroll = PreRoll(2.0, discard=False)
    released = []
    for seq in range(5):
        released += preroll.push(seal(seq), 1.0, index=seq)
    # Continuous recording: nothing is lost and nothing is announced as discarded.
    assert [item.index for item in released] == [0, 1, 2]
    assert preroll.take_discarded() == []
    assert _indexes(preroll) == [3, 4]
