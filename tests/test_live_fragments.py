"""Live view's per-frame fragments (doorbell/capture/live.py): after the stream's init
segment, fragments from any keyframe on decode, frame for frame, with real PyAV."""

from __future__ import annotations

import io
import struct

import av
import pytest

from doorbell.capture import InitSegment, Segmenter
from doorbell.capture.live import LiveFragmenter
from doorbell.capture.source import AccessUnit, StreamFormat
from doorbell.capture.synthetic import SyntheticSource

FPS = 30


@pytest.fixture(scope="module")
def units() -> list[AccessUnit]:
    source = SyntheticSource(320, 240, fps=FPS, keyframe_seconds=1.0, seconds=3.0, realtime=False)
    try:
        return list(source.frames())
    finally:
        source.close()


def _init(units: list[AccessUnit]) -> bytes:
    segmenter = Segmenter(StreamFormat(width=320, height=240, fps=FPS), segment_seconds=2.0)
    [init] = segmenter.feed(units[0])
    assert isinstance(init, InitSegment)
    return init.data


def _decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
        return list(container.decode(video=0))


def test_fragments_from_the_first_keyframe_play_every_frame(units: list[AccessUnit]) -> None:
    init = _init(units)
    fragmenter = LiveFragmenter(init)
    fragments = [fragmenter.fragment(unit, n) for n, unit in enumerate(units, 1)]
    for fragment in fragments:
        first = struct.unpack_from(">I4s", fragment)
        assert first[1] == b"moof"
        assert struct.unpack_from(">4s", fragment, first[0] + 4)[0] == b"mdat"
    frames = _decode(init + b"".join(fragments))
    assert len(frames) == len(units)
    times = [frame.time for frame in frames]
    assert times == sorted(times)
    assert times[0] == pytest.approx(float(units[0].pts * units[0].time_base), abs=1e-3)
    luma = bytes(frames[5].planes[0])
    assert len(set(luma[::97])) > 8  # a picture, not a blank


def test_a_viewer_joining_at_a_later_keyframe_plays_from_there(units: list[AccessUnit]) -> None:
    init = _init(units)
    fragmenter = LiveFragmenter(init)
    fragments = [fragmenter.fragment(unit, n) for n, unit in enumerate(units, 1)]
    join = next(i for i, unit in enumerate(units) if unit.keyframe and i > 0)
    frames = _decode(init + b"".join(fragments[join:]))
    assert len(frames) == len(units) - join
    assert frames[0].time == pytest.approx(float(units[join].pts * units[join].time_base), abs=1e-3)


def test_the_track_comes_from_the_init_segment(units: list[AccessUnit]) -> None:
    fragmenter = LiveFragmenter(_init(units))
    assert fragmenter.track_id == 1
    assert fragmenter.timescale > 0
    with pytest.raises(ValueError, match="no moov"):
        LiveFragmenter(b"\x00\x00\x00\x08free")
