"""The pre-roll ring: the newest sealed media segments, in RAM, waiting for a clip to start.

Segments are sealed before they are buffered, so each one has spent a sequence
number. One that is evicted (or dropped at shutdown) is a deliberate gap the
phones must be told about with a ``discarded`` notice (docs/FORMAT.md section
4.1): the ring records evicted sequence numbers as contiguous ranges with the
chain hash of each range's last object, so the phones can follow the chain
across the gap. Nothing here writes anywhere.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

from doorbell.sealing import SealedObject
from doorbell.sealing.format import SIGNATURE_LEN, chain_hash


@dataclass(frozen=True, slots=True)
class BufferedSegment:
    sealed: SealedObject
    duration: float
    index: int


@dataclass(frozen=True, slots=True)
class _Range:
    first: int
    last: int
    last_hash: bytes


class PreRoll:
    """Keeps the shortest run of newest segments lasting at least ``seconds``.

    With ``seconds == 0`` it keeps nothing: every segment is discarded at once.
    With ``discard=False`` (continuous recording) segments that leave the ring are
    returned by ``push`` for delivery instead of being discarded: the ring then only
    decides which segments a clip claims as its pre-roll.
    """

    def __init__(self, seconds: float, *, discard: bool = True) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"pre-roll seconds must be a finite number >= 0, got {seconds!r}")
        self.seconds = seconds
        self.discard = discard
        self._segments: deque[BufferedSegment] = deque()
        self._discarded: list[_Range] = []

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def seconds_buffered(self) -> float:
        return math.fsum(segment.duration for segment in self._segments)

    def push(self, sealed: SealedObject, duration: float, index: int) -> list[BufferedSegment]:
        """Buffer a segment; returns the ones that left the ring when not discarding."""
        if not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f"segment {index}: bad duration {duration!r}")
        self._segments.append(BufferedSegment(sealed, duration, index))
        released = []
        while self._segments and self._covered_without_oldest():
            oldest = self._segments.popleft()
            if self.discard:
                self._record_discarded(oldest.sealed)
            else:
                released.append(oldest)
        return released

    def drain(self) -> list[BufferedSegment]:
        """Everything buffered, oldest first; the ring is empty afterwards."""
        segments = list(self._segments)
        self._segments.clear()
        return segments

    def discard_all(self) -> None:
        """Drop everything buffered as discarded (at shutdown: the phones still hear of it)."""
        for segment in self.drain():
            self._record_discarded(segment.sealed)

    def take_discarded(self) -> list[dict[str, int | str]]:
        """The ``ranges`` of a ``discarded`` notice for everything evicted so far; clears them."""
        ranges: list[dict[str, int | str]] = [
            {"first": r.first, "last": r.last, "last_hash": r.last_hash.hex()}
            for r in self._discarded
        ]
        self._discarded.clear()
        return ranges

    def _covered_without_oldest(self) -> bool:
        # Summed afresh (not a running total) so float drift cannot shave a
        # segment off the minimal suffix.
        newer = itertools.islice(self._segments, 1, None)
        return math.fsum(segment.duration for segment in newer) >= self.seconds

    def _record_discarded(self, sealed: SealedObject) -> None:
        last_hash = chain_hash(bytes(sealed.data[-SIGNATURE_LEN:]))
        if self._discarded and self._discarded[-1].last + 1 == sealed.seq:
            self._discarded[-1] = _Range(self._discarded[-1].first, sealed.seq, last_hash)
        else:
            self._discarded.append(_Range(sealed.seq, sealed.seq, last_hash))
