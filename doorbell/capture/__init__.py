"""Camera sources and the CMAF segmenter: encoded H.264 in, fragmented MP4 out."""

from __future__ import annotations

from pathlib import Path

from doorbell.capture.file import FileSource
from doorbell.capture.picamera2 import Picamera2Source, camera_present
from doorbell.capture.segmenter import InitSegment, MediaSegment, Segment, Segmenter
from doorbell.capture.snapshot import GopSnapshot, SnapshotError
from doorbell.capture.source import AccessUnit, SourceError, StreamFormat, VideoSource
from doorbell.capture.synthetic import SyntheticSource

SOURCE_KINDS = ("auto", "picamera2", "synthetic", "file")
NO_CAMERA_WARNING = "no Pi camera found: using the synthetic test picture"


def open_source(
    kind: str,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    bitrate: int = 2_000_000,
    keyframe_seconds: float = 2.0,
    rotation: int = 0,
    hflip: bool = False,
    vflip: bool = False,
    snapshot_width: int = 640,
    file: Path | None = None,
    realtime: bool = True,
) -> tuple[VideoSource, str | None]:
    """The configured camera source, and a warning to log when it is not what was asked.

    `auto` is the Pi camera when one is present, else the synthetic picture (with a
    warning); `picamera2` insists on the camera; `file` replays `file`. Size, fps
    and orientation apply to the camera and the synthetic picture; a file keeps its
    own, and `bitrate`/`keyframe_seconds` reach it only if it must be re-encoded.
    """
    if kind not in SOURCE_KINDS:
        raise SourceError(
            f"camera source {kind!r} is unknown: use one of {', '.join(SOURCE_KINDS)}"
        )
    if kind == "file":
        if file is None:
            raise SourceError("camera source 'file' needs a file to replay")
        source = FileSource(
            file, realtime=realtime, keyframe_seconds=keyframe_seconds, bitrate=bitrate
        )
        return source, None
    if kind == "picamera2" or (kind == "auto" and camera_present()):
        camera = Picamera2Source(
            width=width,
            height=height,
            fps=fps,
            bitrate=bitrate,
            keyframe_seconds=keyframe_seconds,
            rotation=rotation,
            hflip=hflip,
            vflip=vflip,
            snapshot_width=snapshot_width,
        )
        return camera, None
    synthetic = SyntheticSource(
        width=width,
        height=height,
        fps=fps,
        keyframe_seconds=keyframe_seconds,
        bitrate=bitrate,
        realtime=realtime,
    )
    return synthetic, NO_CAMERA_WARNING if kind == "auto" else None


__all__ = [
    "NO_CAMERA_WARNING",
    "SOURCE_KINDS",
    "AccessUnit",
    "FileSource",
    "GopSnapshot",
    "InitSegment",
    "MediaSegment",
    "Picamera2Source",
    "Segment",
    "Segmenter",
    "SnapshotError",
    "SourceError",
    "StreamFormat",
    "SyntheticSource",
    "VideoSource",
    "camera_present",
    "open_source",
]
