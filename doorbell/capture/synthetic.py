"""A synthetic camera: lavfi's moving test picture, encoded with libx264 through PyAV."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator

import av
from av.video.frame import VideoFrame

from doorbell.capture.paced import PacedSource
from doorbell.capture.source import AccessUnit, StreamFormat, keyframe_interval
from doorbell.capture.x264 import X264Encoder

log = logging.getLogger(__name__)


class SyntheticSource(PacedSource):
    """A camera stand-in for machines without one: same access units, no hardware.

    Keyframes come exactly every `keyframe_seconds` (closed GOPs, no B-frames) and
    each carries its SPS/PPS, as picamera2's encoder does with `repeat=True`.
    `seconds=None` runs until closed. `realtime=True` releases each frame at its
    wall-clock due time measured with `clock` and waited for with `sleep`;
    `realtime=False` encodes as fast as the CPU allows.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: int = 30,
        keyframe_seconds: float = 2.0,
        bitrate: int = 2_000_000,
        seconds: float | None = None,
        realtime: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(realtime=realtime, clock=clock, sleep=sleep)
        self._format = StreamFormat(width=width, height=height, fps=fps)
        if width % 2 or height % 2:
            # 4:2:0 chroma is subsampled by two in both directions.
            raise ValueError(f"synthetic size {width}x{height} must be even in both directions")
        self._gop_frames = keyframe_interval(keyframe_seconds, fps)
        if bitrate <= 0:
            raise ValueError(f"bitrate {bitrate} must be positive")
        if seconds is not None and seconds < 0:
            raise ValueError(f"seconds {seconds} must not be negative")
        self._bitrate = bitrate
        self._frame_count = None if seconds is None else round(seconds * fps)

    @property
    def format(self) -> StreamFormat:
        return self._format

    def _units(self) -> Generator[tuple[AccessUnit, VideoFrame | None], None, None]:
        fmt = self._format
        encoder = X264Encoder(fmt.width, fmt.height, fmt.fps, self._bitrate, self._gop_frames)
        picture = av.open(f"testsrc2=size={fmt.width}x{fmt.height}:rate={fmt.fps}", format="lavfi")
        try:
            for frame in picture.decode(video=0):
                if self._frame_count is not None and encoder.count >= self._frame_count:
                    break
                for unit in encoder.encode(frame):
                    yield unit, frame
            for unit in encoder.flush():
                yield unit, None
            log.debug("synthetic source ended after %d frames", encoder.count)
        finally:
            picture.close()
