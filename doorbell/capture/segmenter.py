"""The CMAF segmenter: H.264 access units in, fragmented-MP4 init and media segments out.

Everything stays in RAM. The muxer writes into a non-seekable in-memory sink that
is emptied at every cut, so plaintext video never reaches a file and at most one
segment (plus the GOP the muxer is still collecting) is held at a time.

The output follows from FFmpeg's mp4 muxer with one fragment per GOP:
- the init segment (ftyp+moov, no samples) is written with the first keyframe,
  whose in-band SPS/PPS PyAV hands to the muxer for the avcC box;
- a GOP's moof+mdat reaches the sink only when the next keyframe is muxed (or at
  close), so a media segment is "everything written before keyframe N";
- tfdt carries the stream's own pts and data offsets are relative to each moof,
  so init + any contiguous run of media segments is a playable file.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from dataclasses import dataclass
from fractions import Fraction

import av
from av.container import OutputContainer
from av.stream import Stream

from doorbell.capture.source import AccessUnit, StreamFormat

log = logging.getLogger(__name__)

_MOVFLAGS = "+".join(
    (
        "frag_keyframe",  # a new fragment at every IDR, so every cut point is a fragment edge
        "empty_moov",  # the init segment describes the track but holds no samples
        "default_base_moof",  # offsets relative to each moof: a segment stands on its own
        "frag_discont",  # first tfdt = first pts, instead of restarting the clock at 0
        "skip_trailer",  # no mfra at close: it would sit between the last and a next segment
    )
)
# Without these, FFmpeg shifts fragmented output to start at zero, and segment
# times would disagree with MediaSegment.start.
_CONTAINER_OPTIONS = {
    "movflags": _MOVFLAGS,
    "use_editlist": "0",
    "avoid_negative_ts": "disabled",
}

_START_CODE = b"\x00\x00\x01"
_NAL_SPS = 7
_NAL_PPS = 8
_NAL_SLICES = range(1, 6)
_PARAMETER_SETS = (_NAL_SPS, _NAL_PPS)


@dataclass(frozen=True, slots=True)
class InitSegment:
    """ftyp+moov: what a player needs once before any media segment of this stream."""

    data: bytes
    format: StreamFormat


@dataclass(frozen=True, slots=True)
class MediaSegment:
    """One or more whole GOPs as moof+mdat pairs, starting at a keyframe."""

    data: bytes
    index: int
    start: float
    duration: float
    frames: int


Segment = InitSegment | MediaSegment


class Segmenter:
    """Cuts one stream's access units into an init segment and ~`segment_seconds` segments.

    A segment is cut at the first keyframe at least `segment_seconds` (less half a
    frame, to absorb timestamp jitter) after the segment's start, so it always holds
    whole GOPs. Units before the first keyframe are dropped.
    """

    def __init__(self, format: StreamFormat, segment_seconds: float = 2.0) -> None:
        if not segment_seconds > 0:
            raise ValueError(f"segment_seconds {segment_seconds} must be positive")
        self._format = format
        self._cut_after = Fraction(segment_seconds) - Fraction(1, 2 * format.fps)
        self._sink = _RamSink()
        self._container: OutputContainer | None = None
        self._stream: Stream | None = None
        # Times are kept as integer pts in the stream's time base: Fraction arithmetic
        # on every frame would cost more than everything else the segmenter does.
        self._time_base: Fraction | None = None
        self._cut_ticks = Fraction(0)
        self._last_pts: int | None = None
        self._end = 0
        self._segment_start = 0
        self._segment_frames = 0
        self._segment_data = bytearray()
        self._index = 0
        self._dropped = 0
        self._flushed = False

    def feed(self, unit: AccessUnit) -> list[Segment]:
        """Take the next access unit; return the init or media segments it completed."""
        if self._flushed:
            raise RuntimeError("segmenter already flushed; use a new one for a new stream")
        pts = self._checked_pts(unit)
        if self._container is None:
            if not unit.keyframe:
                self._dropped += 1
                return []
            return [self._start(unit, pts)]

        cut = unit.keyframe and pts - self._segment_start >= self._cut_ticks
        self._mux(unit, unit.data)
        # Muxing a keyframe releases the previous GOP's fragment, which still belongs
        # to the open segment whether or not this keyframe starts a new one.
        self._segment_data += self._sink.take()
        completed: list[Segment] = []
        if cut:
            completed.append(self._cut(end=pts))
            self._segment_start = pts
        self._count(unit, pts)
        return completed

    def flush(self) -> list[Segment]:
        """End the stream: return the last, possibly short, media segment."""
        if self._flushed:
            return []
        self._flushed = True
        if self._container is None:
            log.debug("stream ended before its first keyframe: %d units dropped", self._dropped)
            return []
        self._container.close()
        self._segment_data += self._sink.take()
        return [self._cut(end=self._end)]

    def _checked_pts(self, unit: AccessUnit) -> int:
        base = self._time_base
        if base is not None and unit.time_base is not base and unit.time_base != base:
            raise ValueError(
                f"access unit time_base {unit.time_base} differs from the stream's {base}"
            )
        if self._last_pts is not None and unit.pts <= self._last_pts:
            raise ValueError(
                f"access unit pts {unit.pts} ({float(unit.pts * unit.time_base):.6f} s) is not "
                f"after the previous unit ({float(self._last_pts * unit.time_base):.6f} s); "
                "pts must strictly increase"
            )
        self._last_pts = unit.pts
        return unit.pts

    def _start(self, unit: AccessUnit, pts: int) -> InitSegment:
        data, parameter_sets = self._with_parameter_sets(unit.data)
        self._time_base = unit.time_base
        self._cut_ticks = self._cut_after / unit.time_base
        self._container = av.open(
            self._sink, mode="w", format="mp4", container_options=_CONTAINER_OPTIONS
        )
        self._stream = self._container.add_mux_stream(
            "h264",
            rate=self._format.fps,
            width=self._format.width,
            height=self._format.height,
            time_base=unit.time_base,
        )
        # PyAV writes the header on the first packet, taking SPS/PPS from it.
        self._mux(unit, data)
        init = self._sink.take()
        _check_init(init)
        self._segment_start = pts
        self._count(unit, pts)
        log.debug(
            "init segment: %d bytes; stream starts at %.3f s after %d units without a keyframe",
            len(init),
            float(pts * unit.time_base),
            self._dropped,
        )
        return InitSegment(
            data=init, format=dataclasses.replace(self._format, extradata=parameter_sets)
        )

    def _with_parameter_sets(self, keyframe: bytes) -> tuple[bytes, bytes]:
        """The first keyframe as muxed, and the Annex-B SPS/PPS the init will describe."""
        in_band = [
            nal
            for nal in _nal_units_before_first_slice(keyframe)
            if (nal[0] & 0x1F) in _PARAMETER_SETS
        ]
        if {nal[0] & 0x1F for nal in in_band} == set(_PARAMETER_SETS):
            return keyframe, b"".join(b"\x00" + _START_CODE + nal for nal in in_band)
        if self._format.extradata:
            return self._format.extradata + keyframe, self._format.extradata
        raise ValueError(
            "first keyframe carries no SPS/PPS and the stream format has no extradata: "
            "the init segment could not describe the stream"
        )

    def _mux(self, unit: AccessUnit, data: bytes) -> None:
        assert self._container is not None and self._stream is not None
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.time_base = unit.time_base
        packet.pts = unit.pts
        packet.dts = unit.pts  # no B-frames: decode order is presentation order
        packet.duration = unit.duration
        packet.is_keyframe = unit.keyframe
        self._container.mux_one(packet)

    def _count(self, unit: AccessUnit, pts: int) -> None:
        self._segment_frames += 1
        self._end = pts + unit.duration

    def _cut(self, end: int) -> MediaSegment:
        base = self._time_base
        assert base is not None
        data = bytes(self._segment_data)
        self._segment_data.clear()
        types = [kind for kind, _, _ in _top_level_boxes(data)]
        if not types or types != ["moof", "mdat"] * (len(types) // 2):
            raise RuntimeError(
                f"muxer wrote {types} for segment {self._index}, not moof/mdat pairs"
            )
        segment = MediaSegment(
            data=data,
            index=self._index,
            start=float(self._segment_start * base),
            duration=float((end - self._segment_start) * base),
            frames=self._segment_frames,
        )
        log.debug(
            "segment %d: %.3f s + %.3f s, %d frames, %d bytes",
            segment.index,
            segment.start,
            segment.duration,
            segment.frames,
            len(data),
        )
        self._index += 1
        self._segment_frames = 0
        return segment


class _RamSink:
    """The muxer's output file: write-only and without seek, so the bytes stay in RAM
    and a muxer trying to rewrite bytes already handed out fails instead of corrupting."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def _nal_units_before_first_slice(data: bytes) -> list[bytes]:
    """The Annex-B NAL units (without start codes) that precede the first picture slice."""
    nals: list[bytes] = []
    start = data.find(_START_CODE)
    while start != -1:
        start += len(_START_CODE)
        end = data.find(_START_CODE, start)
        # A 4-byte start code's leading zero, and trailing_zero_8bits, end the previous
        # unit; real NAL units end in their rbsp stop bit, never in a zero byte.
        nal = (data[start:] if end == -1 else data[start:end]).rstrip(b"\x00")
        if not nal or (nal[0] & 0x1F) in _NAL_SLICES:
            break
        nals.append(nal)
        start = end
    return nals


def _top_level_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """(type, offset, size) of each ISO BMFF box at the top level of `data`."""
    boxes = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 8:
            raise RuntimeError(f"truncated box header at byte {offset} of {len(data)}")
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1:
            if len(data) - offset < 16:
                raise RuntimeError(f"truncated large box header at byte {offset} of {len(data)}")
            (size,) = struct.unpack_from(">Q", data, offset + 8)
        elif size == 0:
            size = len(data) - offset
        if size < 8 or offset + size > len(data):
            raise RuntimeError(f"box {kind!r} at byte {offset}: size {size} overruns {len(data)}")
        boxes.append((kind.decode("latin-1"), offset, size))
        offset += size
    return boxes


def _check_init(data: bytes) -> None:
    types = [kind for kind, _, _ in _top_level_boxes(data)]
    avcc = data.find(b"avcC")
    # An avcC box is 8 bytes of header plus at least 7 of configuration before its SPS.
    if types != ["ftyp", "moov"] or avcc < 4 or struct.unpack_from(">I", data, avcc - 4)[0] <= 15:
        raise RuntimeError(
            f"muxer wrote an init segment of {types} without SPS/PPS in avcC: this PyAV "
            "does not take them from the first packet of a mux-only stream (18.x does)"
        )
