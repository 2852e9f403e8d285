"""The camera source interface: what every source yields and how it describes its stream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, runtime_checkable


class SourceError(Exception):
    """A camera source could not be opened or stopped delivering: the message says which and why."""


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One encoded H.264 picture as the encoder produced it.

    `data` is Annex-B (start-code prefixed); a keyframe is an IDR picture and
    carries its SPS/PPS in front of it. `pts` and `duration` count `time_base` units.
    """

    data: bytes
    keyframe: bool
    pts: int
    time_base: Fraction
    duration: int

    def __post_init__(self) -> None:
        if self.time_base <= 0:
            raise ValueError(f"access unit time_base {self.time_base} must be positive")
        if self.duration < 0:
            raise ValueError(f"access unit duration {self.duration} must not be negative")


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """What a source's access units are, known before the first one arrives.

    `extradata` holds the stream's SPS and PPS as Annex-B NAL units. It may be
    empty when every keyframe carries them in band, which is how the segmenter
    then finds them.
    """

    width: int
    height: int
    fps: int
    codec: str = "h264"
    extradata: bytes = b""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"stream size {self.width}x{self.height} must be positive")
        if self.fps <= 0:
            raise ValueError(f"stream fps {self.fps} must be positive")
        if self.codec != "h264":
            raise ValueError(f"stream codec {self.codec!r} is not supported, only 'h264'")


@runtime_checkable
class VideoSource(Protocol):
    """A camera, real or synthetic, that yields encoded access units in pts order.

    `frames()` runs on a capture thread; `snapshot()` and `close()` may be called
    from another thread while it does.
    """

    @property
    def format(self) -> StreamFormat: ...

    def frames(self) -> Iterator[AccessUnit]: ...

    def snapshot(self, max_width: int = 640) -> bytes | None:
        """A JPEG, at most `max_width` wide, of the picture the camera shows now.

        None before the first picture; `SnapshotError` when one could not be made.
        """
        ...

    def close(self) -> None: ...


def keyframe_interval(keyframe_seconds: float, fps: int) -> int:
    """The number of frames from one keyframe to the next, which must be whole."""
    frames = keyframe_seconds * fps
    if frames < 1 or frames != round(frames):
        raise ValueError(
            f"keyframe_seconds {keyframe_seconds} at {fps} fps is {frames} frames; "
            "it must be a whole number of frames, at least one"
        )
    return round(frames)
