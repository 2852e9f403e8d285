"""Capture: the synthetic source and the CMAF segmenter, on real libx264 output."""

from __future__ import annotations

import dataclasses
import io
import logging
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import pytest

from doorbell.capture import (
    AccessUnit,
    InitSegment,
    MediaSegment,
    Segmenter,
    StreamFormat,
    SyntheticSource,
    VideoSource,
)

FPS = 30
FORMAT = StreamFormat(width=320, height=240, fps=FPS)


def _encode(keyframe_seconds: float, seconds: float) -> list[AccessUnit]:
    source = SyntheticSource(
        320, 240, fps=FPS, keyframe_seconds=keyframe_seconds, seconds=seconds, realtime=False
    )
    try:
        return list(source.frames())
    finally:
        source.close()


@pytest.fixture(scope="module")
def gop_1s() -> list[AccessUnit]:
    return _encode(keyframe_seconds=1.0, seconds=6.0)


@pytest.fixture(scope="module")
def gop_2s() -> list[AccessUnit]:
    return _encode(keyframe_seconds=2.0, seconds=5.0)


def _segment(
    units: Sequence[AccessUnit], segment_seconds: float, fmt: StreamFormat = FORMAT
) -> tuple[InitSegment, list[MediaSegment]]:
    segmenter = Segmenter(fmt, segment_seconds=segment_seconds)
    outputs = [out for unit in units for out in segmenter.feed(unit)]
    outputs += segmenter.flush()
    init, *rest = outputs
    media = [segment for segment in rest if isinstance(segment, MediaSegment)]
    assert isinstance(init, InitSegment)
    assert len(media) == len(rest)
    return init, media


def _box_types(data: bytes) -> list[str]:
    types = []
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        assert size >= 8, f"box {kind!r} at {offset} has size {size}"
        types.append(kind.decode())
        offset += size
    assert offset == len(data), "boxes overrun the data"
    return types


def _decode(data: bytes) -> list[tuple[Fraction, bool]]:
    """(presentation time, keyframe) of every frame PyAV decodes from an MP4 in memory."""
    with av.open(io.BytesIO(data)) as container:
        return [
            (frame.pts * frame.time_base, frame.key_frame) for frame in container.decode(video=0)
        ]


def _times(units: Sequence[AccessUnit]) -> list[Fraction]:
    return [unit.pts * unit.time_base for unit in units]


def _nal_types(data: bytes) -> list[int]:
    return [nal[0] & 0x1F for nal in data.split(b"\x00\x00\x01")[1:] if nal]


def _nal_units(data: bytes, keep: bool, types: tuple[int, ...] = (7, 8)) -> bytes:
    """The Annex-B units of `data` whose type is (keep=True) or is not in `types`."""
    nals = [nal.rstrip(b"\x00") for nal in data.split(b"\x00\x00\x01")[1:]]
    chosen = [nal for nal in nals if ((nal[0] & 0x1F) in types) == keep]
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in chosen)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- synthetic source ---------------------------------------------------------


def test_synthetic_source_yields_the_requested_frames_in_pts_order(gop_1s):
    assert len(gop_1s) == 6 * FPS
    assert [unit.pts for unit in gop_1s] == list(range(6 * FPS))
    assert {unit.time_base for unit in gop_1s} == {Fraction(1, FPS)}
    assert {unit.duration for unit in gop_1s} == {1}


def test_synthetic_source_puts_a_keyframe_with_sps_pps_exactly_every_keyframe_seconds(
    gop_1s, gop_2s
):
    assert [i for i, unit in enumerate(gop_1s) if unit.keyframe] == list(range(0, 180, 30))
    assert [i for i, unit in enumerate(gop_2s) if unit.keyframe] == [0, 60, 120]
    for unit in gop_1s:
        types = _nal_types(unit.data)
        assert (7 in types and 8 in types and 5 in types) == unit.keyframe


def test_synthetic_source_describes_its_stream():
    source = SyntheticSource(320, 240, fps=15, realtime=False)
    assert isinstance(source, VideoSource)
    assert source.format == StreamFormat(width=320, height=240, fps=15, codec="h264")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fps": 25, "keyframe_seconds": 0.5}, "whole number of frames"),
        ({"width": 321}, "even"),
        ({"seconds": -1.0}, "seconds"),
    ],
)
def test_synthetic_source_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticSource(**{"width": 320, "height": 240, **kwargs})


def test_realtime_source_sleeps_until_each_frame_is_due_on_the_injected_clock():
    clock = FakeClock()
    source = SyntheticSource(
        320, 240, fps=10, seconds=0.5, realtime=True, clock=clock, sleep=clock.sleep
    )
    consumer_work = iter([0.03, 0.15, 0.03, 0.03, 0.03])
    units = []
    for unit in source.frames():
        units.append(unit)
        clock.now += next(consumer_work)
    # Frame 1 waits out its 0.1 s slot; frame 2 is already late and goes at once;
    # frames 3 and 4 fall back onto the original schedule instead of drifting.
    assert len(units) == 5
    assert clock.sleeps == pytest.approx([0.07, 0.02, 0.07])


def test_close_stops_an_endless_source():
    source = SyntheticSource(320, 240, realtime=False)
    frames = source.frames()
    first = [next(frames) for _ in range(3)]
    source.close()
    assert [unit.pts for unit in first] == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(frames)


# --- segmenter ----------------------------------------------------------------


def test_first_output_is_one_init_segment_describing_the_stream(gop_2s):
    segmenter = Segmenter(FORMAT)
    first = segmenter.feed(gop_2s[0])
    assert len(first) == 1
    init = first[0]
    assert isinstance(init, InitSegment)
    assert _box_types(init.data) == ["ftyp", "moov"]
    assert b"avcC" in init.data
    assert _nal_types(init.format.extradata) == [7, 8]
    later = [out for unit in gop_2s[1:] for out in segmenter.feed(unit)] + segmenter.flush()
    assert not any(isinstance(out, InitSegment) for out in later)


def test_media_segments_are_moof_mdat_pairs_with_consecutive_indexes(gop_1s):
    _, media = _segment(gop_1s, segment_seconds=2.0)
    assert [segment.index for segment in media] == [0, 1, 2]
    for segment in media:
        types = _box_types(segment.data)
        assert types[0] == "moof"
        # With a keyframe every second, a 2 s segment is two fragments.
        assert types == ["moof", "mdat", "moof", "mdat"]


@pytest.mark.parametrize(
    ("units", "segment_seconds", "durations", "frames"),
    [
        ("gop_2s", 2.0, [2.0, 2.0, 1.0], [60, 60, 30]),
        ("gop_1s", 2.0, [2.0, 2.0, 2.0], [60, 60, 60]),
        ("gop_1s", 1.0, [1.0] * 6, [30] * 6),
        # 1.5 s falls inside a GOP: the cut waits for the next keyframe.
        ("gop_1s", 1.5, [2.0, 2.0, 2.0], [60, 60, 60]),
    ],
)
def test_segments_are_cut_at_the_first_keyframe_after_segment_seconds(
    request, units, segment_seconds, durations, frames
):
    units = request.getfixturevalue(units)
    _, media = _segment(units, segment_seconds=segment_seconds)
    assert [segment.duration for segment in media] == pytest.approx(durations)
    assert [segment.frames for segment in media] == frames
    starts = [sum(durations[:i]) for i in range(len(durations))]
    assert [segment.start for segment in media] == pytest.approx(starts)


def test_init_plus_all_segments_decodes_every_encoded_frame(gop_1s):
    init, media = _segment(gop_1s, segment_seconds=2.0)
    decoded = _decode(init.data + b"".join(segment.data for segment in media))
    assert [time for time, _ in decoded] == _times(gop_1s)
    assert [key for _, key in decoded] == [unit.keyframe for unit in gop_1s]


def test_init_plus_a_middle_run_decodes_exactly_the_frames_of_that_run(gop_1s):
    init, media = _segment(gop_1s, segment_seconds=1.0)
    run = media[2:4]
    decoded = _decode(init.data + b"".join(segment.data for segment in run))
    assert [time for time, _ in decoded] == _times(gop_1s[60:120])
    assert decoded[0] == (Fraction(run[0].start), True)


def test_flush_returns_the_last_partial_segment_and_nothing_after(gop_2s):
    segmenter = Segmenter(FORMAT, segment_seconds=2.0)
    fed = [out for unit in gop_2s[:130] for out in segmenter.feed(unit)]
    assert [out.index for out in fed if isinstance(out, MediaSegment)] == [0, 1]
    (last,) = segmenter.flush()
    assert isinstance(last, MediaSegment)
    assert (last.index, last.start, last.frames) == (2, 4.0, 10)
    assert last.duration == pytest.approx(10 / FPS)
    assert segmenter.flush() == []
    with pytest.raises(RuntimeError, match="flushed"):
        segmenter.feed(gop_2s[130])


def test_units_before_the_first_keyframe_are_dropped(gop_1s, caplog):
    caplog.set_level(logging.DEBUG, logger="doorbell.capture.segmenter")
    segmenter = Segmenter(FORMAT, segment_seconds=2.0)
    assert [segmenter.feed(unit) for unit in gop_1s[10:30]] == [[]] * 20
    init, media = _segment(gop_1s[10:], segment_seconds=2.0)
    assert media[0].start == 1.0
    assert sum(segment.frames for segment in media) == 150
    decoded = _decode(init.data + b"".join(segment.data for segment in media))
    assert [time for time, _ in decoded] == _times(gop_1s[30:])
    assert "after 20 units without a keyframe" in caplog.text


@pytest.mark.parametrize("repeat", [1, 0])
def test_pts_that_do_not_increase_are_rejected(gop_1s, repeat):
    segmenter = Segmenter(FORMAT)
    segmenter.feed(gop_1s[0])
    segmenter.feed(gop_1s[1])
    with pytest.raises(ValueError, match=r"pts \d+ .* is not after the previous"):
        segmenter.feed(gop_1s[repeat])


def test_a_change_of_time_base_is_rejected(gop_1s):
    segmenter = Segmenter(FORMAT)
    segmenter.feed(gop_1s[0])
    changed = dataclasses.replace(gop_1s[1], pts=3_000, time_base=Fraction(1, 90_000))
    with pytest.raises(ValueError, match="time_base 1/90000 differs"):
        segmenter.feed(changed)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: StreamFormat(320, 240, 30, codec="hevc"), "'hevc' is not supported"),
        (lambda: StreamFormat(0, 240, 30), "0x240"),
        (lambda: AccessUnit(b"", True, 0, Fraction(1, 30), -1), "duration -1"),
        (lambda: Segmenter(FORMAT, segment_seconds=0), "segment_seconds 0"),
    ],
)
def test_bad_values_are_rejected_with_a_message_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_keyframe_up_to_half_a_frame_early_still_cuts(gop_1s):
    # picamera2-style microsecond timestamps put the keyframe at 1.99998 s, not 2 s.
    microseconds = Fraction(1, 1_000_000)
    retimed = [
        dataclasses.replace(unit, pts=i * 33_333, time_base=microseconds, duration=33_333)
        for i, unit in enumerate(gop_1s)
    ]
    init, media = _segment(retimed, segment_seconds=2.0)
    assert [segment.frames for segment in media] == [60, 60, 60]
    assert media[1].start == pytest.approx(1.99998)
    decoded = _decode(init.data + media[1].data)
    assert [time for time, _ in decoded] == _times(retimed[60:120])


def test_format_extradata_stands_in_for_missing_in_band_sps_pps(gop_2s):
    first, *rest = gop_2s
    stripped = [dataclasses.replace(first, data=_nal_units(first.data, keep=False)), *rest]
    assert 7 not in _nal_types(stripped[0].data)
    with pytest.raises(ValueError, match="no SPS/PPS"):
        Segmenter(FORMAT).feed(stripped[0])
    fmt = dataclasses.replace(FORMAT, extradata=_nal_units(first.data, keep=True))
    init, media = _segment(stripped, segment_seconds=2.0, fmt=fmt)
    assert len(_decode(init.data + b"".join(segment.data for segment in media))) == len(gop_2s)


def test_segmenting_writes_no_file(gop_2s, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    _segment(gop_2s, segment_seconds=2.0)
    assert list(Path(tmp_path).iterdir()) == []
