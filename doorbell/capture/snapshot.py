"""Snapshots: a JPEG of the picture at a keyframe, decoded from the H.264 stream in RAM."""

from __future__ import annotations

from fractions import Fraction

import av

from doorbell.capture.source import AccessUnit


class SnapshotError(Exception):
    """The access unit did not decode into a picture."""


def jpeg_from_keyframe(unit: AccessUnit, *, max_width: int = 640, quality: int = 5) -> bytes:
    """Decode one keyframe (SPS/PPS in band) and encode it as a JPEG of at most max_width.

    Works for any source, the camera's hardware encoder included, because it only
    needs the encoded stream. ``quality`` is the MJPEG qscale: 2 (best) to 31.
    """
    if not unit.keyframe:
        raise SnapshotError("a snapshot needs a keyframe")
    decoder = av.CodecContext.create("h264", "r")
    try:
        frames = decoder.decode(av.Packet(unit.data))
        frames += decoder.decode(None)
    except av.error.FFmpegError as exc:
        raise SnapshotError(f"keyframe does not decode: {exc}") from None
    if not frames:
        raise SnapshotError("keyframe decoded into no picture")
    frame = frames[0]
    width, height = frame.width, frame.height
    if width > max_width:
        height = max(2, round(height * max_width / width / 2) * 2)
        width = max_width
    picture = frame.reformat(width=width, height=height, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    encoder.options = {"qscale": str(quality)}
    encoder.qmin = encoder.qmax = quality
    packets = encoder.encode(picture) + encoder.encode(None)
    return b"".join(bytes(p) for p in packets)
