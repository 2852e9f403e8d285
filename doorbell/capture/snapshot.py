"""Snapshots: a JPEG of the present picture, made in RAM from H.264, raw YUV or a kept picture."""

from __future__ import annotations

import threading
from fractions import Fraction

import av
from av.codec.context import Flags
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame

from doorbell.capture.source import AccessUnit


class SnapshotError(Exception):
    """The stream or buffer did not make a picture."""


class GopSnapshot:
    """The stream's present picture, decoded from its access units as they arrive.

    For sources that only have the encoded stream (a file passed through). `feed`
    runs on the capture thread and only queues the unit; a background thread keeps
    one H.264 decoder across units and decodes each soon after it is fed; `take`
    (any thread) decodes whatever that thread has not reached yet itself, usually
    nothing, so it costs about one JPEG wherever in the GOP it falls (the GOP so
    far, at worst, if the thread was starved of CPU). The picture is the last unit
    fed, exactly: the decoder runs in low-delay mode, so with no B-frames (which the
    sources never pass through) each unit decodes into its own picture at once.

    The price is decoding every unit in the background: 1.5 to 2 ms of CPU per
    720p frame on a desktop x86 core, 0.06 of a core at 30 fps. A Pi never pays
    it: its camera pictures the present in its `lores` stream. RAM holds at most
    one GOP of queued units (a keyframe drops the undecoded ones before it:
    decoding restarts there), one decoder and one picture. Units before the first
    keyframe are not kept. `close()` stops the thread and forgets everything;
    later feeds are ignored.
    """

    def __init__(self) -> None:
        # Lock order: _decoding, then _state; feed() takes only _state.
        self._state = threading.Condition()
        self._decoding = threading.Lock()
        self._pending: list[AccessUnit] = []  # guarded by _state
        self._started = False  # a keyframe was fed; guarded by _state
        self._closed = False  # guarded by _state
        self._worker: threading.Thread | None = None  # guarded by _state
        self._decoder: VideoCodecContext | None = None  # guarded by _decoding
        self._picture: VideoFrame | None = None  # guarded by _decoding
        self._failure: str | None = None  # guarded by _decoding

    def feed(self, unit: AccessUnit) -> None:
        with self._state:
            if self._closed or not (unit.keyframe or self._started):
                return
            if unit.keyframe:
                self._pending = [unit]
                self._started = True
            else:
                self._pending.append(unit)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._decode_in_background, name="snapshot-decoder", daemon=True
                )
                self._worker.start()
            self._state.notify()

    def take(self, max_width: int = 640, *, quality: int = 5) -> bytes | None:
        """A JPEG of the last unit fed, or None before the first keyframe."""
        with self._decoding:
            self._decode_pending()
            picture, failure = self._picture, self._failure
            with self._state:
                started = self._started
        if picture is None:
            if not started:
                return None
            raise SnapshotError(failure or "the stream since its last keyframe made no picture")
        return jpeg_from_picture(picture, max_width=max_width, quality=quality)

    def close(self) -> None:
        with self._state:
            self._closed = True
            self._started = False
            self._pending = []
            worker, self._worker = self._worker, None
            self._state.notify_all()
        if worker is not None:
            worker.join()
        with self._decoding:
            self._decoder = self._picture = self._failure = None

    def _decode_in_background(self) -> None:
        while True:
            with self._state:
                while not self._pending and not self._closed:
                    self._state.wait()
                if self._closed:
                    return
            with self._decoding:
                self._decode_pending()

    def _decode_pending(self) -> None:
        """Decode the queued units in feed order; the caller holds `_decoding`."""
        with self._state:
            units, self._pending = self._pending, []
        for unit in units:
            if unit.keyframe:
                self._picture = self._failure = None
                if self._decoder is None:
                    self._decoder = _low_delay_decoder()
            elif self._decoder is None:
                continue  # a unit failed since the keyframe: the rest of the GOP cannot decode
            packet = av.Packet(unit.data)
            packet.pts = unit.pts
            try:
                pictures = self._decoder.decode(packet)
            except av.error.FFmpegError as exc:
                self._decoder = self._picture = None
                self._failure = f"the access unit at pts {unit.pts} does not decode: {exc}"
                continue
            if pictures:
                self._picture = pictures[-1]


class LatestPicture:
    """The picture a source last encoded, kept to picture the stream's present.

    For sources that make their stream from raw pictures (the synthetic picture, a
    re-encoded file): they `show` each picture once its access unit has left the
    encoder, so the snapshot is the last unit's own picture (libx264 with
    zerolatency holds no frames back) and nothing is decoded. Holds one picture,
    which nothing writes to any more; `take` may run on any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._picture: VideoFrame | None = None

    def show(self, picture: VideoFrame) -> None:
        with self._lock:
            self._picture = picture

    def take(self, max_width: int = 640, *, quality: int = 5) -> bytes | None:
        """A JPEG of the last picture shown, or None before the first."""
        with self._lock:
            picture = self._picture
        if picture is None:
            return None
        return jpeg_from_picture(picture, max_width=max_width, quality=quality)

    def close(self) -> None:
        with self._lock:
            self._picture = None


def _low_delay_decoder() -> VideoCodecContext:
    decoder = av.CodecContext.create("h264", "r")
    assert isinstance(decoder, VideoCodecContext)
    # One thread: it runs beside the capture thread already, and frame threads would
    # hold pictures back. Low delay: without B-frames no picture waits for a later one.
    decoder.thread_count = 1
    decoder.flags |= Flags.low_delay
    return decoder


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
