"""libx264 through PyAV, set up the way every software source encodes."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av
from av.stream import Stream
from av.video.frame import PictureType, VideoFrame

from doorbell.capture.source import AccessUnit


class X264Encoder:
    """Pictures in, access units out: what picamera2's encoder gives, made in software.

    Keyframes come exactly every `gop` frames (closed GOPs, no B-frames) and each
    carries its SPS/PPS, as picamera2's encoder does with `repeat=True`. Pictures
    are numbered in arrival order, one `1/fps` tick each.
    """

    def __init__(self, width: int, height: int, fps: int, bitrate: int, gop: int) -> None:
        if width % 2 or height % 2:
            # 4:2:0 chroma is subsampled by two in both directions.
            raise ValueError(f"encoded size {width}x{height} must be even in both directions")
        if bitrate <= 0:
            raise ValueError(f"bitrate {bitrate} must be positive")
        self.time_base = Fraction(1, fps)
        self._count = 0
        self._codec = av.CodecContext.create("libx264", "w")
        self._codec.width = width
        self._codec.height = height
        self._codec.pix_fmt = "yuv420p"
        self._codec.time_base = self.time_base
        self._codec.framerate = Fraction(fps)
        self._codec.bit_rate = bitrate
        self._codec.gop_size = gop
        self._codec.max_b_frames = 0
        self._codec.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": "main",
            # scenecut=0 keeps x264 from adding keyframes of its own; repeat-headers puts
            # SPS/PPS before every IDR so any segment can start a decoder.
            "x264-params": (
                f"keyint={gop}:scenecut=0:bframes=0:open-gop=0:repeat-headers=1:annexb=1"
            ),
        }
        self._codec.open()

    @property
    def count(self) -> int:
        """Pictures encoded so far."""
        return self._count

    def encode(self, picture: VideoFrame) -> Iterator[AccessUnit]:
        """Encode the next picture, scaled and converted to the encoder's size and format."""
        if (picture.width, picture.height, picture.format.name) != (
            self._codec.width,
            self._codec.height,
            "yuv420p",
        ):
            picture = picture.reformat(
                width=self._codec.width, height=self._codec.height, format="yuv420p"
            )
        picture.pts = self._count
        picture.time_base = self.time_base
        # Decoders and lavfi mark pictures as I or P; libx264 obeys an I as a forced
        # keyframe, and only the GOP setting may place keyframes.
        picture.pict_type = PictureType.NONE
        self._count += 1
        for packet in self._codec.encode(picture):
            yield self._access_unit(packet)

    def flush(self) -> Iterator[AccessUnit]:
        """The pictures still inside the encoder (zerolatency holds none, but drain anyway)."""
        for packet in self._codec.encode(None):
            yield self._access_unit(packet)

    def _access_unit(self, packet: av.Packet[Stream]) -> AccessUnit:
        if packet.pts is None:
            raise RuntimeError("libx264 returned a packet without a pts")
        # libx264 leaves packet durations at 0; every picture lasts one tick.
        return AccessUnit(
            data=bytes(packet),
            keyframe=packet.is_keyframe,
            pts=packet.pts,
            time_base=self.time_base,
            duration=1,
        )
