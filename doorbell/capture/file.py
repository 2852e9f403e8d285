"""A recorded video file replayed as a camera, in real time and looping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from doorbell.capture.paced import PacedSource
from doorbell.capture.source import AccessUnit, SourceError, StreamFormat, keyframe_interval
from doorbell.capture.x264 import X264Encoder

log = logging.getLogger(__name__)

# Only local files: a path must never make FFmpeg open a network protocol.
_OPEN_OPTIONS = {"protocol_whitelist": "file"}


class FileSource(PacedSource):
    """A video file as if a camera were filming it, from its first frame, looping.

    H.264 without B-frames passes through as it was encoded: each packet only goes
    from MP4/MKV's length-prefixed form to Annex-B, with SPS/PPS put before every
    IDR that lacks them (FFmpeg's ``h264_mp4toannexb``). Timestamps keep the file's
    time base and run on across loops, each loop shifted by the file's duration.

    Any other video, and H.264 with B-frames (its decode order is not its
    presentation order, which the segmenter needs), is decoded and re-encoded with
    libx264 like the synthetic source, every `keyframe_seconds` at `bitrate`.
    `format.fps` is the stream's average frame rate, rounded; `reencoded` says
    which of the two paths the file takes.
    """

    def __init__(
        self,
        path: Path | str,
        realtime: bool = True,
        loop: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        keyframe_seconds: float = 2.0,
        bitrate: int = 2_000_000,
    ) -> None:
        super().__init__(realtime=realtime, clock=clock, sleep=sleep)
        self._path = Path(path)
        self._loop = loop
        if bitrate <= 0:
            raise ValueError(f"bitrate {bitrate} must be positive")
        self._bitrate = bitrate
        with _reading(self._path) as container:
            stream = _video_stream(container, self._path)
            self._stream_index = stream.index
            rate = stream.average_rate or stream.guessed_rate
            width, height = stream.codec_context.width, stream.codec_context.height
            if not rate or width <= 0 or height <= 0:
                raise SourceError(
                    f"video file {self._path}: its {stream.codec_context.name} stream has no "
                    f"usable size ({width}x{height}) or frame rate ({rate})"
                )
            fps = max(1, round(rate))
            codec = stream.codec_context.name
            self.reencoded = codec != "h264" or stream.has_b_frames
        if self.reencoded:
            why = "has B-frames" if codec == "h264" else f"is {codec}, not H.264"
            log.warning(
                "video file %s %s: re-encoding it with libx264, which costs CPU", self._path, why
            )
            # libx264's 4:2:0 needs even sizes: an odd one is scaled a pixel smaller.
            width, height = width - width % 2, height - height % 2
        self._gop_frames = keyframe_interval(keyframe_seconds, fps) if self.reencoded else 0
        self._format = StreamFormat(width=width, height=height, fps=fps)

    @property
    def format(self) -> StreamFormat:
        return self._format

    def _units(self) -> Generator[tuple[AccessUnit, VideoFrame | None], None, None]:
        return self._reencode() if self.reencoded else self._remux()

    def _remux(self) -> Generator[tuple[AccessUnit, None], None, None]:
        offset = 0  # where this pass over the file starts on the output timeline
        while True:
            with _reading(self._path) as container:
                stream = _stream_at(container, self._stream_index)
                time_base = stream.time_base
                if time_base is None:
                    raise SourceError(f"video file {self._path}: its stream has no time base")
                frame = max(1, round(1 / (self._format.fps * time_base)))
                to_annex_b = av.BitStreamFilterContext("h264_mp4toannexb", stream)
                first: int | None = None
                start = -1  # where the last unit started, relative to the pass
                end = 0  # where it ended
                for packet in _filtered(container.demux(stream), to_annex_b):
                    time = packet.pts if packet.pts is not None else packet.dts
                    if time is None:  # raw .h264 has no timestamps: frames follow each other
                        time = end if first is None else first + end
                    if first is None:
                        first = time
                    if time - first <= start:
                        raise SourceError(
                            f"video file {self._path}: packet pts {time} is not after the "
                            "previous one; its frames are not in presentation order"
                        )
                    start = time - first
                    duration = packet.duration or frame
                    end = start + duration
                    unit = AccessUnit(
                        data=bytes(packet),
                        keyframe=packet.is_keyframe,
                        pts=offset + start,
                        time_base=time_base,
                        duration=duration,
                    )
                    yield unit, None
            if first is None:
                raise SourceError(f"video file {self._path}: its video stream has no packets")
            offset += end
            if not self._loop:
                return

    def _reencode(self) -> Generator[tuple[AccessUnit, VideoFrame | None], None, None]:
        fmt = self._format
        encoder = X264Encoder(fmt.width, fmt.height, fmt.fps, self._bitrate, self._gop_frames)
        while True:
            before = encoder.count
            with _reading(self._path) as container:
                for picture in container.decode(_stream_at(container, self._stream_index)):
                    for unit in encoder.encode(picture):
                        yield unit, picture
            if encoder.count == before:
                raise SourceError(f"video file {self._path}: its video stream has no pictures")
            if not self._loop:
                break
        for unit in encoder.flush():
            yield unit, None


@contextmanager
def _reading(path: Path) -> Iterator[InputContainer]:
    """The file opened for demuxing; FFmpeg's errors become SourceErrors naming it."""
    try:
        container = av.open(str(path), "r", options=_OPEN_OPTIONS)
    except (OSError, av.error.FFmpegError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SourceError(f"video file {path}: cannot be read: {reason}") from None
    try:
        yield container
    except av.error.FFmpegError as exc:
        raise SourceError(f"video file {path}: {exc.strerror or exc}") from None
    finally:
        container.close()


def _video_stream(container: InputContainer, path: Path) -> VideoStream:
    if not container.streams.video:
        kinds = ", ".join(stream.type for stream in container.streams) or "no streams"
        raise SourceError(f"video file {path}: has no video stream ({kinds})")
    return container.streams.video[0]


def _stream_at(container: InputContainer, index: int) -> VideoStream:
    stream = container.streams[index]
    assert isinstance(stream, VideoStream)
    return stream


def _filtered(
    packets: Iterator[Packet[VideoStream]], to_annex_b: av.BitStreamFilterContext
) -> Iterator[Packet[Stream]]:
    """The demuxed packets through the filter, flushed at the end; empty ones dropped."""
    for packet in packets:
        # The demuxer ends with an empty packet: it means "flush", not a picture.
        if packet.size:
            yield from to_annex_b.filter(packet)
    yield from to_annex_b.filter(None)
