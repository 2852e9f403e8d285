"""The pre-roll ring: the newest encoded media segments, in RAM, waiting for a clip to start.

Segments wait here as plaintext H.264, before anything is sealed: a segment is
sealed only when a clip (or continuous recording) delivers it, so one that
leaves the ring unclaimed spent no sequence number and leaves no gap for the
phones to explain. The ring is bounded by its length in seconds; nothing here
writes anywhere (the daemon's unit forbids swap, so it stays in RAM).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only the type: the events package stays free of PyAV.
    from doorbell.capture.segmenter import MediaSegment


class PreRoll:
    """Keeps the shortest run of newest segments lasting at least ``seconds``.

    With ``seconds == 0`` it keeps nothing: every segment leaves at once.
    ``push`` returns the segments that left the ring, oldest first: continuous
    recording delivers them, an idle doorbell just lets them go.
    """

    def __init__(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"pre-roll seconds must be a finite number >= 0, got {seconds!r}")
        self.seconds = seconds
        self._segments: deque[MediaSegment] = deque()

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def seconds_buffered(self) -> float:
        return math.fsum(segment.duration for segment in self._segments)

    def push(self, segment: MediaSegment) -> list[MediaSegment]:
        """Buffer a segment; returns the ones that left the ring."""
        if not (math.isfinite(segment.duration) and segment.duration >= 0):
            raise ValueError(f"segment {segment.index}: bad duration {segment.duration!r}")
        self._segments.append(segment)
        released = []
        while self._segments and self._covered_without_oldest():
            released.append(self._segments.popleft())
        return released

    def drain(self) -> list[MediaSegment]:
        """Everything buffered, oldest first; the ring is empty afterwards."""
        segments = list(self._segments)
        self._segments.clear()
        return segments

    def _covered_without_oldest(self) -> bool:
        # Summed afresh (not a running total) so float drift cannot shave a
        # segment off the minimal suffix.
        newer = itertools.islice(self._segments, 1, None)
        return math.fsum(segment.duration for segment in newer) >= self.seconds
