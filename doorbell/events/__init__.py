"""Events: the recorder state machine, the pre-roll ring, clip routing and the GPIO sensors.

Only the pure-logic names are exported here. The GPIO devices live in
``doorbell.events.sensors``, the one module that imports gpiozero: import it by
name where the hardware is wired (the daemon), so nothing else pulls gpiozero in.
"""

from doorbell.events.preroll import PreRoll
from doorbell.events.recorder import (
    Action,
    BufferSegment,
    ClipEnded,
    ClipStarted,
    DeliverSegment,
    EndReason,
    EventInClip,
    KeepSegment,
    Recorder,
    RecorderRules,
    RecorderState,
    Trigger,
    TriggerIgnored,
)
from doorbell.events.routing import ClipRouter, Delivery, Retention

__all__ = [
    "Action",
    "BufferSegment",
    "ClipEnded",
    "ClipRouter",
    "ClipStarted",
    "DeliverSegment",
    "Delivery",
    "EndReason",
    "EventInClip",
    "KeepSegment",
    "PreRoll",
    "Recorder",
    "RecorderRules",
    "RecorderState",
    "Retention",
    "Trigger",
    "TriggerIgnored",
]
