"""The recorder: decides when a clip starts, which media segments it keeps and when it ends.

Pure logic: no hardware, no I/O. The clock (monotonic seconds, the same time
base as segment start times) and the random source for clip ids are injected.
Every call returns a list of actions for the daemon to carry out, in order.

States: IDLE, RECORDING (a clip is open), COOLDOWN (a clip just ended).

Triggers, ``trigger("ring" | "motion")`` at the clock's ``now``:

- IDLE: either trigger opens a clip -> ``ClipStarted(clip_id, trigger)``. The
  clip starts at ``now``; its post-roll deadline is ``now + post_roll_seconds``.
- RECORDING: -> ``EventInClip(clip_id, trigger)``. The deadline moves to
  ``now + post_roll_seconds``, capped at ``start + max_clip_seconds`` so no clip
  is longer than that (pre-roll footage before the start is not counted). A
  ring turns a motion clip into a ring clip (``clip_type``). A ring that the
  open clip cannot cover for a full post-roll before that cap instead ends the
  clip (``ClipEnded(..., "max-length")``) and opens a new one: every ring gets
  its post-roll.
- COOLDOWN: a ring opens a new clip (a ring is never suppressed); motion
  -> ``TriggerIgnored(trigger, "cooldown")``.

Every ``ClipStarted`` and ``EventInClip`` is one accepted trigger: the daemon
seals one event object for each.

Segments, ``segment_complete(start, duration)`` when a media segment is
finished, ``start`` being the time of its first frame. Exactly one routing
action per segment: ``KeepSegment(clip_id)`` while a clip is open,
``BufferSegment()`` otherwise (into the pre-roll ring), or in continuous mode
always ``DeliverSegment(clip_id or None)``. After the routing action comes
``ClipEnded(clip_id, reason, clip_type)`` when the segment reaches the clip's
deadline (``start + duration >= deadline``); ``reason`` is ``"max-length"``
when the deadline is the length cap, ``"post-roll"`` otherwise. A segment that
begins at or after the deadline (a gap in the footage) ends the clip before it
is routed, so it does not join the clip.

A clip end starts COOLDOWN for ``cooldown_seconds`` (straight to IDLE when
that is 0); every call, ``state`` included, returns COOLDOWN to IDLE once the
time is up. ``stop()`` ends an open clip with reason ``"shutdown"`` and leaves
the recorder IDLE.
"""

from __future__ import annotations

import enum
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias, get_args

Trigger: TypeAlias = Literal["ring", "motion"]
EndReason: TypeAlias = Literal["post-roll", "max-length", "shutdown"]

CLIP_ID_BYTES = 16


class RecorderState(enum.Enum):
    IDLE = "idle"
    RECORDING = "recording"
    COOLDOWN = "cooldown"


@dataclass(frozen=True, slots=True)
class RecorderRules:
    """How long clips run. All times in seconds."""

    pre_roll_seconds: float = 5.0
    post_roll_seconds: float = 15.0
    max_clip_seconds: float = 120.0
    cooldown_seconds: float = 10.0
    continuous: bool = False

    def __post_init__(self) -> None:
        for name in ("pre_roll_seconds", "post_roll_seconds", "cooldown_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.max_clip_seconds) and self.max_clip_seconds > 0):
            raise ValueError(
                f"max_clip_seconds must be a finite number > 0, got {self.max_clip_seconds!r}"
            )
        if self.post_roll_seconds > self.max_clip_seconds:
            raise ValueError(
                f"post_roll_seconds ({self.post_roll_seconds}) exceeds "
                f"max_clip_seconds ({self.max_clip_seconds})"
            )


@dataclass(frozen=True, slots=True)
class ClipStarted:
    """A new clip; the daemon seals an event for ``trigger`` and drains the pre-roll into it."""

    clip_id: str
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class EventInClip:
    """A trigger during an open clip; the daemon seals an event for it in that clip."""

    clip_id: str
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class TriggerIgnored:
    trigger: Trigger
    reason: Literal["cooldown"]


@dataclass(frozen=True, slots=True)
class KeepSegment:
    """The segment belongs to the open clip: deliver it."""

    clip_id: str


@dataclass(frozen=True, slots=True)
class BufferSegment:
    """No clip is open: the segment goes into the pre-roll ring."""


@dataclass(frozen=True, slots=True)
class DeliverSegment:
    """Continuous mode: every segment is delivered, with the open clip's id if any."""

    clip_id: str | None


@dataclass(frozen=True, slots=True)
class ClipEnded:
    clip_id: str
    reason: EndReason
    clip_type: Trigger


Action: TypeAlias = (
    ClipStarted
    | EventInClip
    | TriggerIgnored
    | KeepSegment
    | BufferSegment
    | DeliverSegment
    | ClipEnded
)


@dataclass(frozen=True, slots=True)
class _Clip:
    id: str
    type: Trigger
    started: float
    deadline: float


class Recorder:
    """The recorder state machine (see the module docstring for its rules)."""

    def __init__(
        self,
        rules: RecorderRules,
        *,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.rules = rules
        self._clock = clock
        self._random = random
        self._clip: _Clip | None = None
        self._cooldown_until: float | None = None

    @property
    def state(self) -> RecorderState:
        self._expire_cooldown(self._clock())
        if self._clip is not None:
            return RecorderState.RECORDING
        if self._cooldown_until is not None:
            return RecorderState.COOLDOWN
        return RecorderState.IDLE

    @property
    def clip_id(self) -> str | None:
        return None if self._clip is None else self._clip.id

    @property
    def clip_type(self) -> Trigger | None:
        """``"ring"`` if any ring fell in the open clip, else ``"motion"``; None when idle."""
        return None if self._clip is None else self._clip.type

    def trigger(self, kind: Trigger) -> list[Action]:
        if kind not in get_args(Trigger):
            raise ValueError(f"unknown trigger {kind!r}: expected 'ring' or 'motion'")
        now = self._clock()
        self._expire_cooldown(now)
        clip = self._clip
        if clip is None:
            if kind == "motion" and self._cooldown_until is not None:
                return [TriggerIgnored(kind, "cooldown")]
            return [self._start(kind, now)]
        cap = clip.started + self.rules.max_clip_seconds
        wanted = now + self.rules.post_roll_seconds
        if kind == "ring" and wanted > cap:
            return [self._end("max-length", now), self._start(kind, now)]
        clip_type: Trigger = "ring" if kind == "ring" else clip.type
        self._clip = replace(clip, type=clip_type, deadline=min(max(clip.deadline, wanted), cap))
        return [EventInClip(clip.id, kind)]

    def segment_complete(self, start: float, duration: float) -> list[Action]:
        if not (math.isfinite(start) and math.isfinite(duration) and duration >= 0):
            raise ValueError(f"bad segment timing: start {start!r}, duration {duration!r}")
        now = self._clock()
        self._expire_cooldown(now)
        actions: list[Action] = []
        if self._clip is not None and start >= self._clip.deadline:
            actions.append(self._end(self._deadline_reason(self._clip), now))
        actions.append(self._route())
        if self._clip is not None and start + duration >= self._clip.deadline:
            actions.append(self._end(self._deadline_reason(self._clip), now))
        return actions

    def stop(self) -> list[Action]:
        """Shutdown: end the open clip, if any. The recorder is IDLE afterwards."""
        actions: list[Action] = []
        if self._clip is not None:
            actions.append(self._end("shutdown", self._clock()))
        self._cooldown_until = None
        return actions

    def _start(self, kind: Trigger, now: float) -> ClipStarted:
        clip_id = self._random(CLIP_ID_BYTES).hex()
        self._clip = _Clip(clip_id, kind, now, now + self.rules.post_roll_seconds)
        self._cooldown_until = None
        return ClipStarted(clip_id, kind)

    def _route(self) -> KeepSegment | BufferSegment | DeliverSegment:
        clip_id = self.clip_id
        if self.rules.continuous:
            return DeliverSegment(clip_id)
        return BufferSegment() if clip_id is None else KeepSegment(clip_id)

    def _deadline_reason(self, clip: _Clip) -> EndReason:
        capped = clip.deadline >= clip.started + self.rules.max_clip_seconds
        return "max-length" if capped else "post-roll"

    def _end(self, reason: EndReason, now: float) -> ClipEnded:
        assert self._clip is not None
        clip, self._clip = self._clip, None
        self._cooldown_until = now + self.rules.cooldown_seconds
        return ClipEnded(clip.id, reason, clip.type)

    def _expire_cooldown(self, now: float) -> None:
        if self._cooldown_until is not None and now >= self._cooldown_until:
            self._cooldown_until = None
