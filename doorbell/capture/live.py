"""Live view's fragments: one access unit in, one ``moof`` + ``mdat`` out, at once.

The recording segmenter hands out a GOP when the next keyframe arrives, up to a
keyframe interval late. Live view cannot wait: this writes each frame's fragment
itself, for the track the stream's init segment describes (its track id and
timescale are read from that init segment), so ``init || fragment || fragment || …``
from any keyframe on is a playable fragmented MP4. Everything stays in RAM.
"""

from __future__ import annotations

import struct
from fractions import Fraction

from doorbell.capture.source import AccessUnit

_START_CODE = b"\x00\x00\x01"
# ISO/IEC 14496-12 sample flags: a sync sample depends on no other; any other sample
# depends on others and is not a sync sample.
_SYNC_FLAGS = 0x02000000
_DELTA_FLAGS = 0x01010000
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400  # offset, duration, size, flags


class LiveFragmenter:
    """Writes each access unit of one stream as its own fMP4 fragment."""

    def __init__(self, init: bytes) -> None:
        self.track_id, self.timescale = _track_of(init)

    def fragment(self, unit: AccessUnit, sequence: int) -> bytes:
        """``moof`` + ``mdat`` holding ``unit``, its time in the init's timescale;
        ``sequence`` (from 1, increasing) is the fragment's number in the stream."""
        scale = Fraction(self.timescale) * unit.time_base
        decode_time = int(unit.pts * scale)
        duration = max(1, int(unit.duration * scale))
        sample = _length_prefixed(unit.data)
        flags = _SYNC_FLAGS if unit.keyframe else _DELTA_FLAGS
        mfhd = _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
        tfhd = _full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", self.track_id))
        tfdt = _full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time))

        def trun(data_offset: int) -> bytes:
            entry = struct.pack(">IiIII", 1, data_offset, duration, len(sample), flags)
            return _full_box(b"trun", 0, _TRUN_FLAGS, entry)

        # The data offset counts from the moof's first byte to the sample, past the
        # mdat's 8-byte header; the moof's size does not depend on the offset's value.
        moof_size = 8 + len(mfhd) + 8 + len(tfhd) + len(tfdt) + len(trun(0))
        moof = _box(b"moof", mfhd + _box(b"traf", tfhd + tfdt + trun(moof_size + 8)))
        return moof + _box(b"mdat", sample)


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, body: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + body)


def _length_prefixed(annex_b: bytes) -> bytes:
    """Annex-B NAL units (start codes) as the 4-byte length-prefixed units of an avc1
    sample."""
    out = []
    for nal in _nal_units(annex_b):
        out.append(struct.pack(">I", len(nal)) + nal)
    return b"".join(out)


def _nal_units(data: bytes) -> list[bytes]:
    units = []
    start = data.find(_START_CODE)
    while start >= 0:
        begin = start + len(_START_CODE)
        end = data.find(_START_CODE, begin)
        nal = data[begin:] if end < 0 else data[begin:end]
        # A four-byte start code leaves a zero byte behind the previous unit.
        units.append(nal.rstrip(b"\x00") if end >= 0 else nal)
        start = end
    return [nal for nal in units if nal]


def _children(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    boxes: dict[bytes, tuple[int, int]] = {}
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < 8 or offset + size > end:
            raise ValueError(f"init segment: box {kind!r} at {offset} runs past its parent")
        boxes.setdefault(kind, (offset + 8, offset + size))
        offset += size
    return boxes


def _track_of(init: bytes) -> tuple[int, int]:
    """The video track's id (``tkhd``) and timescale (``mdhd``) of an init segment."""
    moov = _children(init, 0, len(init)).get(b"moov")
    if moov is None:
        raise ValueError("init segment has no moov")
    trak = _children(init, *moov).get(b"trak")
    if trak is None:
        raise ValueError("init segment has no trak")
    parts = _children(init, *trak)
    tkhd, mdia = parts.get(b"tkhd"), parts.get(b"mdia")
    if tkhd is None or mdia is None:
        raise ValueError("init segment's trak lacks tkhd or mdia")
    mdhd = _children(init, *mdia).get(b"mdhd")
    if mdhd is None:
        raise ValueError("init segment's mdia lacks mdhd")
    version = init[tkhd[0]]
    track_id = struct.unpack_from(">I", init, tkhd[0] + (20 if version == 1 else 12))[0]
    version = init[mdhd[0]]
    timescale = struct.unpack_from(">I", init, mdhd[0] + (20 if version == 1 else 12))[0]
    return track_id, timescale
