"""A synthetic camera: lavfi's moving test picture, encoded with libx264 through PyAV."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from fractions import Fraction

import av
from av.container import InputContainer
from av.stream import Stream
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from doorbell.capture.source import AccessUnit, StreamFormat

log = logging.getLogger(__name__)


class SyntheticSource:
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
        self._format = StreamFormat(width=width, height=height, fps=fps)
        if width % 2 or height % 2:
            # 4:2:0 chroma is subsampled by two in both directions.
            raise ValueError(f"synthetic size {width}x{height} must be even in both directions")
        gop = keyframe_seconds * fps
        if gop < 1 or gop != round(gop):
            raise ValueError(
                f"keyframe_seconds {keyframe_seconds} at {fps} fps is {gop} frames; "
                "it must be a whole number of frames, at least one"
            )
        if bitrate <= 0:
            raise ValueError(f"bitrate {bitrate} must be positive")
        if seconds is not None and seconds < 0:
            raise ValueError(f"seconds {seconds} must not be negative")
        self._gop = round(gop)
        self._bitrate = bitrate
        self._frame_count = None if seconds is None else round(seconds * fps)
        self._realtime = realtime
        self._clock = clock
        self._sleep = sleep
        self._running: Generator[AccessUnit, None, None] | None = None

    @property
    def format(self) -> StreamFormat:
        return self._format

    def frames(self) -> Iterator[AccessUnit]:
        """Start the picture from frame 0; a previous run of this source is stopped."""
        self.close()
        self._running = self._generate()
        return self._running

    def close(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None

    def _generate(self) -> Generator[AccessUnit, None, None]:
        fmt = self._format
        time_base = Fraction(1, fmt.fps)
        picture = av.open(f"testsrc2=size={fmt.width}x{fmt.height}:rate={fmt.fps}", format="lavfi")
        try:
            epoch: float | None = None
            for packet in self._encode(picture, self._open_encoder(time_base)):
                unit = _access_unit(packet, time_base)
                if self._realtime:
                    if epoch is None:
                        epoch = self._clock()
                    self._wait_until(epoch + float(unit.pts * time_base))
                yield unit
        finally:
            picture.close()

    def _encode(
        self, picture: InputContainer, encoder: VideoCodecContext
    ) -> Iterator[av.Packet[Stream]]:
        count = 0
        for frame in picture.decode(video=0):
            if self._frame_count is not None and count >= self._frame_count:
                break
            frame.pts = count
            frame.time_base = encoder.time_base
            # lavfi marks every test frame as an I picture and libx264 obeys that
            # as a forced keyframe; only the GOP setting may place keyframes.
            frame.pict_type = PictureType.NONE
            count += 1
            yield from encoder.encode(frame)
        # zerolatency holds no frames back, but an encoder must still be drained.
        yield from encoder.encode(None)
        log.debug("synthetic source ended after %d frames", count)

    def _open_encoder(self, time_base: Fraction) -> VideoCodecContext:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width = self._format.width
        encoder.height = self._format.height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = time_base
        encoder.framerate = Fraction(self._format.fps)
        encoder.bit_rate = self._bitrate
        encoder.gop_size = self._gop
        encoder.max_b_frames = 0
        encoder.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": "main",
            # scenecut=0 keeps x264 from adding keyframes of its own; repeat-headers puts
            # SPS/PPS before every IDR so any segment can start a decoder.
            "x264-params": (
                f"keyint={self._gop}:scenecut=0:bframes=0:open-gop=0:repeat-headers=1:annexb=1"
            ),
        }
        encoder.open()
        return encoder

    def _wait_until(self, due: float) -> None:
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)


def _access_unit(packet: av.Packet[Stream], time_base: Fraction) -> AccessUnit:
    if packet.pts is None:
        raise RuntimeError("libx264 returned a packet without a pts")
    # libx264 leaves packet durations at 0; every synthetic frame lasts one tick.
    return AccessUnit(
        data=bytes(packet),
        keyframe=packet.is_keyframe,
        pts=packet.pts,
        time_base=time_base,
        duration=1,
    )
