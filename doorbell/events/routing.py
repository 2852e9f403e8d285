"""Clip routing: turns the camera's segments and the triggers into what gets delivered, in order.

One way through: capture -> pre-roll -> the recorder decides -> this router
says what to seal -> the daemon seals and spools exactly that. Media segments
wait unsealed in the pre-roll ring until a clip (or continuous recording)
claims them, so a sequence number is spent only on footage that is delivered
and an idle doorbell delivers nothing. Pure logic: no hardware, no I/O; the
clock, the randomness and the snapshot are injected, so it is tested without
starting the daemon.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from doorbell.events.preroll import PreRoll
from doorbell.events.recorder import (
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
    Trigger,
    TriggerIgnored,
)
from doorbell.sealing import Kind

if TYPE_CHECKING:
    from doorbell.capture.segmenter import InitSegment, MediaSegment

log = logging.getLogger(__name__)

STREAM_ID_BYTES = 16


class Retention(enum.Enum):
    """How hard the spool should keep an object when space runs out (evicted last to first)."""

    ESSENTIAL = "essential"
    CLIP = "clip"
    CONTINUOUS = "continuous"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One object to seal and spool: a payload of docs/FORMAT.md section 4."""

    kind: Kind
    meta: dict[str, Any]
    body: bytes = b""
    retention: Retention = Retention.ESSENTIAL


@dataclass
class _Clip:
    first_index: int
    last_index: int


@dataclass
class RouterCounts:
    events: int = 0
    clips: int = 0
    segments: int = 0
    last_event: dict[str, Any] | None = None


class ClipRouter:
    """Owns the recorder and the pre-roll ring of one camera stream.

    Every call returns the deliveries it decided on, oldest first; the caller
    seals and spools them in that order. An event comes before its pre-roll,
    because it is what the phones are waiting for.
    """

    def __init__(
        self,
        rules: RecorderRules,
        *,
        camera: str,
        snapshot: Callable[[], bytes | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
        log_events: bool = False,
    ) -> None:
        self.recorder = Recorder(rules, clock=clock, random=random)
        self.preroll = PreRoll(rules.pre_roll_seconds)
        self.counts = RouterCounts()
        self._continuous = rules.continuous
        self._camera = camera
        self._snapshot = snapshot
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = random
        # Which trigger came when is exactly what a stolen doorbell's journal must not
        # tell: per-event log lines are the owner's choice (logging.events).
        self._log_events = log_events
        self._stream = ""
        self._next_index = 0
        self._clips: dict[str, _Clip] = {}

    @property
    def state(self) -> RecorderState:
        return self.recorder.state

    @property
    def clip_id(self) -> str | None:
        return self.recorder.clip_id

    @property
    def stream(self) -> str:
        return self._stream

    def new_stream(self, init: InitSegment) -> list[Delivery]:
        """A new stream configuration: its init segment, delivered at once."""
        out = self._release_preroll()
        self._stream = self._random(STREAM_ID_BYTES).hex()
        self._next_index = 0
        fmt = init.format
        meta = {
            "stream": self._stream,
            "codec": fmt.codec,
            "width": fmt.width,
            "height": fmt.height,
            "fps": fmt.fps,
            "camera": self._camera,
        }
        out.append(Delivery(Kind.INIT, meta, init.data))
        return out

    def segment(self, segment: MediaSegment) -> list[Delivery]:
        """A finished media segment: delivered, buffered as pre-roll, or let go."""
        self.counts.segments += 1
        self._next_index = segment.index + 1
        actions = self.recorder.segment_complete(self._clock() - segment.duration, segment.duration)
        out: list[Delivery] = []
        for action in actions:
            if isinstance(action, KeepSegment | DeliverSegment) and action.clip_id is not None:
                clip = self._clips.get(action.clip_id)
                if clip is not None:
                    clip.last_index = segment.index
                out.append(self._media(segment, Retention.CLIP))
            elif isinstance(action, BufferSegment | DeliverSegment):
                for released in self.preroll.push(segment):
                    if self._continuous:
                        out.append(self._media(released, Retention.CONTINUOUS))
            else:
                out += self._apply(action, position=segment.start + segment.duration)
        return out

    def trigger(self, kind: Trigger, position: float) -> list[Delivery]:
        """A ring or motion at stream time ``position`` (seconds, the segments' clock)."""
        out: list[Delivery] = []
        for action in self.recorder.trigger(kind):
            out += self._apply(action, position=position)
        return out

    def stop(self) -> list[Delivery]:
        """Shutdown: the open clip ends; continuous recording delivers its ring."""
        out: list[Delivery] = []
        for action in self.recorder.stop():
            out += self._apply(action, position=0.0)
        out += self._release_preroll()
        return out

    def _release_preroll(self) -> list[Delivery]:
        # Unclaimed pre-roll was never sealed: letting it go leaves nothing to announce.
        segments = self.preroll.drain()
        if not self._continuous:
            return []
        return [self._media(segment, Retention.CONTINUOUS) for segment in segments]

    def _apply(self, action: Action, *, position: float) -> list[Delivery]:
        if isinstance(action, ClipStarted):
            return self._start_clip(action.clip_id, action.trigger, position)
        if isinstance(action, EventInClip):
            return [self._event(action.trigger, action.clip_id, position)]
        if isinstance(action, ClipEnded):
            return [self._end_clip(action.clip_id, action.reason)]
        if isinstance(action, TriggerIgnored) and self._log_events:
            log.info("%s ignored: %s", action.trigger, action.reason)
        return []

    def _start_clip(self, clip_id: str, trigger: Trigger, position: float) -> list[Delivery]:
        self.counts.clips += 1
        buffered = self.preroll.drain()
        first = buffered[0].index if buffered else self._next_index
        last = buffered[-1].index if buffered else first - 1
        self._clips[clip_id] = _Clip(first, last)
        out = [self._event(trigger, clip_id, position)]
        out += [self._media(segment, Retention.CLIP) for segment in buffered]
        if self._log_events:
            log.info(
                "clip %s started by %s with %d pre-roll segment(s)",
                clip_id[:8],
                trigger,
                len(buffered),
            )
        return out

    def _event(self, trigger: Trigger, clip_id: str, position: float) -> Delivery:
        try:
            snapshot = self._snapshot() or b""
        except Exception as exc:  # a missing snapshot must not lose the event
            log.warning("no snapshot for an event: %s", exc)
            snapshot = b""
        clip = self._clips.get(clip_id)
        meta = {
            "type": trigger,
            "clip": clip_id,
            "stream": self._stream,
            "first_index": self._next_index if clip is None else clip.first_index,
            "position": position,
            "camera": self._camera,
        }
        self.counts.events += 1
        self.counts.last_event = {"type": trigger, "clip": clip_id, "time": self._wall_clock()}
        return Delivery(Kind.EVENT, meta, snapshot)

    def _end_clip(self, clip_id: str, reason: str) -> Delivery:
        clip = self._clips.pop(clip_id, None)
        first = self._next_index if clip is None else clip.first_index
        last = first - 1 if clip is None else clip.last_index
        meta = {
            "notice": "clip-end",
            "clip": clip_id,
            "stream": self._stream,
            "last_index": last,
            "reason": reason,
        }
        if self._log_events:
            log.info("clip %s ended (%s)", clip_id[:8], reason)
        return Delivery(Kind.NOTICE, meta)

    def _media(self, segment: MediaSegment, retention: Retention) -> Delivery:
        meta = {
            "stream": self._stream,
            "index": segment.index,
            "start": segment.start,
            "duration": segment.duration,
            "frames": segment.frames,
        }
        return Delivery(Kind.SEGMENT, meta, segment.data, retention)
