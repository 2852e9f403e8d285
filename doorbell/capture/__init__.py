"""Camera sources and the CMAF segmenter: encoded H.264 in, fragmented MP4 out."""

from doorbell.capture.segmenter import InitSegment, MediaSegment, Segment, Segmenter
from doorbell.capture.source import AccessUnit, StreamFormat, VideoSource
from doorbell.capture.synthetic import SyntheticSource

__all__ = [
    "AccessUnit",
    "InitSegment",
    "MediaSegment",
    "Segment",
    "Segmenter",
    "StreamFormat",
    "SyntheticSource",
    "VideoSource",
]
