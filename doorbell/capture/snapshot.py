"""Snapshots: a JPEG of the current picture, made in RAM from H.264 or raw YUV."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from fractions import Fraction

import av
from av.video.frame import VideoFrame

from doorbell.capture.source import AccessUnit


class SnapshotError(Exception):
    """The stream or buffer did not make a picture."""


class GopSnapshot:
    """The access units since the last keyframe, kept to picture the stream's present.

    `feed` runs on the capture thread and `take` on whichever thread wants the
    picture, so the units are swapped under a lock and decoded outside it. Holds
    at most one GOP in RAM; units before the first keyframe are not kept.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gop: list[AccessUnit] = []

    def feed(self, unit: AccessUnit) -> None:
        with self._lock:
            if unit.keyframe:
                # A new list, not clear(): a take() in progress keeps its own copy.
                self._gop = [unit]
            elif self._gop:
                self._gop.append(unit)

    def clear(self) -> None:
        with self._lock:
            self._gop = []

    def take(self, max_width: int = 640, *, quality: int = 5) -> bytes | None:
        """A JPEG of the last unit fed, or None before the first keyframe."""
        with self._lock:
            units = list(self._gop)
        if not units:
            return None
        return jpeg_from_units(units, max_width=max_width, quality=quality)


def jpeg_from_units(
    units: Sequence[AccessUnit], *, max_width: int = 640, quality: int = 5
) -> bytes:
    """Decode a keyframe and the units after it; JPEG-encode the last picture.

    Works for any source, the camera's hardware encoder included, because it only
    needs the encoded stream. ``quality`` is the MJPEG qscale: 2 (best) to 31.
    """
    if not units or not units[0].keyframe:
        raise SnapshotError("a snapshot needs a keyframe to start decoding from")
    decoder = av.CodecContext.create("h264", "r")
    picture: VideoFrame | None = None
    try:
        for unit in [*units, None]:
            for frame in decoder.decode(None if unit is None else av.Packet(unit.data)):
                picture = frame
    except av.error.FFmpegError as exc:
        raise SnapshotError(f"the stream does not decode: {exc}") from None
    if picture is None:
        raise SnapshotError(f"{len(units)} access unit(s) decoded into no picture")
    return jpeg_from_picture(picture, max_width=max_width, quality=quality)


def jpeg_from_yuv420(
    data: bytes, width: int, height: int, stride: int, *, max_width: int = 640, quality: int = 5
) -> bytes:
    """JPEG-encode a planar YUV 4:2:0 buffer whose rows are `stride` bytes apart.

    This is libcamera's YUV420 layout: a Y plane of `height` rows, then U and V
    planes of `height / 2` rows of `stride / 2` bytes; the bytes past each row's
    picture are padding.
    """
    if width % 2 or height % 2 or stride < width or stride % 2:
        raise SnapshotError(f"YUV420 buffer {width}x{height}, stride {stride}: not 4:2:0 shaped")
    expected = stride * height * 3 // 2
    if len(data) < expected:
        raise SnapshotError(
            f"YUV420 buffer {width}x{height}, stride {stride}: {len(data)} bytes, "
            f"expected {expected}"
        )
    picture = VideoFrame(width, height, "yuv420p")
    offset = 0
    for plane, scale in zip(picture.planes, (1, 2, 2), strict=True):
        rows, row_bytes, source_stride = height // scale, width // scale, stride // scale
        target = memoryview(plane)
        for row in range(rows):
            start = offset + row * source_stride
            target[row * plane.line_size : row * plane.line_size + row_bytes] = data[
                start : start + row_bytes
            ]
        offset += rows * source_stride
    return jpeg_from_picture(picture, max_width=max_width, quality=quality)


def jpeg_from_picture(picture: VideoFrame, *, max_width: int = 640, quality: int = 5) -> bytes:
    """Scale a decoded picture to at most `max_width` (keeping its shape) and JPEG it."""
    if max_width < 2:
        raise ValueError(f"snapshot max_width {max_width} must be at least 2")
    width, height = picture.width, picture.height
    if width > max_width:
        height = max(2, round(height * max_width / width / 2) * 2)
        width = max_width
    scaled = picture.reformat(width=width, height=height, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    encoder.options = {"qscale": str(quality)}
    encoder.qmin = encoder.qmax = quality
    packets = encoder.encode(scaled) + encoder.encode(None)
    return b"".join(bytes(p) for p in packets)
