"""The Pi camera through picamera2: its H.264 encoder's output as access units.

A thin adapter. picamera2 and libcamera come from Raspberry Pi OS's apt packages
and exist only on a Pi, so they are imported when a camera is opened, never when
this module is; picamera2 is untyped and stays `Any` at this boundary.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from fractions import Fraction
from types import ModuleType
from typing import Any

from doorbell.capture.snapshot import SnapshotError, jpeg_from_yuv420
from doorbell.capture.source import AccessUnit, SourceError, StreamFormat, keyframe_interval

log = logging.getLogger(__name__)

# picamera2 stamps encoded frames with the sensor's time in microseconds.
MICROSECONDS = Fraction(1, 1_000_000)
_POLL_SECONDS = 0.5
# An event must not wait on a stalled camera for its snapshot: it goes without one.
SNAPSHOT_TIMEOUT_SECONDS = 2.0


def camera_present() -> bool:
    """Whether picamera2 is installed and libcamera sees at least one camera."""
    try:
        return bool(_import("picamera2").Picamera2.global_camera_info())
    except Exception:  # no picamera2, no libcamera, no /dev/media*: all mean "no camera"
        return False


class Picamera2Source:
    """The Pi camera module, H.264-encoded by picamera2 (the Pi's hardware encoder
    up to the Pi 4; libx264 in software on a Pi 5, where `H264Encoder` is libav's).

    The encoder's thread hands every frame to a bounded queue that `frames()`
    drains; it never waits for us. When the consumer falls `queue_frames` behind,
    the oldest frame is dropped and counted, the frames that depended on it are
    skipped, and a keyframe is requested to resume from. Snapshots come from the
    small `lores` stream, so no H.264 is decoded for them.

    `rotation` is 0 or 180 (a sensor mounted upside down); `hflip`/`vflip` mirror.
    `stall_seconds` without a frame ends `frames()` with a SourceError.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: int = 30,
        bitrate: int = 2_000_000,
        keyframe_seconds: float = 2.0,
        rotation: int = 0,
        hflip: bool = False,
        vflip: bool = False,
        snapshot_width: int = 640,
        *,
        queue_frames: int | None = None,
        stall_seconds: float = 10.0,
    ) -> None:
        if rotation not in (0, 180):
            raise ValueError(f"rotation {rotation} is not supported: use 0 or 180")
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"camera size {width}x{height} must be positive and even")
        if bitrate <= 0:
            raise ValueError(f"bitrate {bitrate} must be positive")
        if not 2 <= snapshot_width <= width:
            raise ValueError(f"snapshot_width {snapshot_width} must be from 2 to {width}")
        iperiod = keyframe_interval(keyframe_seconds, fps)
        self._frame_us = round(1_000_000 / fps)
        # None in the queue is close() waking the consumer.
        self._queue: queue.Queue[tuple[int, AccessUnit] | None] = queue.Queue(
            maxsize=queue_frames or max(2, 2 * fps)
        )
        self._stall_seconds = stall_seconds
        self._dropped = 0
        self._sequence = 0
        self._stop = threading.Event()
        self._running = False
        self._lock = threading.Lock()

        picamera2 = _import("picamera2")
        encoders = _import("picamera2.encoders")
        outputs = _import("picamera2.outputs")
        libcamera = _import("libcamera")
        try:
            cameras = picamera2.Picamera2.global_camera_info()
        except Exception as exc:
            raise SourceError(f"libcamera could not list the cameras: {exc}") from exc
        if not cameras:
            raise SourceError(
                "no camera found by libcamera: check the ribbon cable and that "
                "'rpicam-hello --list-cameras' lists it"
            )
        try:
            self._camera: Any = picamera2.Picamera2()
        except Exception as exc:
            raise SourceError(f"the camera could not be opened (is it in use?): {exc}") from exc
        try:
            # A half turn is both mirrors at once, on top of any the user asked for.
            upside_down = rotation == 180
            transform = libcamera.Transform(hflip=hflip != upside_down, vflip=vflip != upside_down)
            snapshot_height = max(2, round(height * snapshot_width / width / 2) * 2)
            config = self._camera.create_video_configuration(
                main={"size": (width, height), "format": "YUV420"},
                lores={"size": (snapshot_width, snapshot_height), "format": "YUV420"},
                controls={"FrameRate": fps},
                transform=transform,
            )
            self._camera.configure(config)
            main = self._camera.stream_configuration("main")
            lores = self._camera.stream_configuration("lores")
            self._lores: tuple[int, int, int] = (*lores["size"], lores["stride"])
            self._format = StreamFormat(width=main["size"][0], height=main["size"][1], fps=fps)
            # framerate matters on a Pi 5, whose software encoder would assume 30 fps.
            self._encoder: Any = encoders.H264Encoder(
                bitrate=bitrate, repeat=True, iperiod=iperiod, framerate=fps
            )
            self._output = _unit_output(outputs.Output, self._push)
        except Exception:
            self._camera.close()
            raise
        log.info(
            "camera %s: %dx%d at %d fps, keyframe every %d frames, %d bit/s, snapshots %dx%d",
            cameras[0].get("Model", "?"),
            self._format.width,
            self._format.height,
            fps,
            iperiod,
            bitrate,
            self._lores[0],
            self._lores[1],
        )

    @property
    def format(self) -> StreamFormat:
        return self._format

    @property
    def dropped(self) -> int:
        """Frames dropped because the consumer fell behind, since the camera opened."""
        return self._dropped

    def frames(self) -> Iterator[AccessUnit]:
        """Start recording; the units run until `close()` (from any thread)."""
        with self._lock:
            if self._stop.is_set():
                raise SourceError("the camera is closed")
            if self._running:
                raise RuntimeError("the camera is already recording: one frames() at a time")
            self._camera.start_recording(self._encoder, self._output)
            self._running = True
        return self._drain()

    def snapshot(self, max_width: int = 640) -> bytes | None:
        """The lores stream's next picture as a JPEG; SnapshotError if the camera stalls."""
        with self._lock:
            if not self._running:
                return None
        try:
            request = self._camera.capture_request(wait=SNAPSHOT_TIMEOUT_SECONDS)
        except TimeoutError:
            # The job would otherwise stay queued and take a buffer when it completes.
            self._camera.cancel_all_and_flush()
            raise SnapshotError(
                f"the camera gave no picture within {SNAPSHOT_TIMEOUT_SECONDS} s"
            ) from None
        except Exception as exc:
            raise SnapshotError(f"the camera gave no picture: {exc}") from exc
        try:
            picture = request.make_array("lores")
        except Exception as exc:
            raise SnapshotError(f"the lores stream gave no picture: {exc}") from exc
        finally:
            request.release()
        width, height, stride = self._lores
        data = memoryview(picture).tobytes()
        return jpeg_from_yuv420(data, width, height, stride, max_width=max_width)

    def close(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
            try:
                if self._running:
                    self._camera.stop_recording()
            finally:
                self._running = False
                self._camera.close()
                with contextlib.suppress(queue.Full):  # full: the consumer is not waiting
                    self._queue.put_nowait(None)
        if self._dropped:
            log.warning("camera closed; %d frame(s) were dropped on the way", self._dropped)

    def _push(self, data: bytes, keyframe: bool, timestamp: int | None) -> None:
        """On the encoder's thread: queue one frame, never waiting for the consumer."""
        self._sequence += 1
        unit = AccessUnit(
            data=data,
            keyframe=keyframe,
            pts=timestamp if timestamp is not None else self._sequence * self._frame_us,
            time_base=MICROSECONDS,
            duration=self._frame_us,
        )
        item = (self._sequence, unit)
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._dropped += 1
                except queue.Empty:
                    pass

    def _drain(self) -> Generator[AccessUnit, None, None]:
        expected: int | None = None
        resyncing = False
        skipped = 0
        poll = min(_POLL_SECONDS, self._stall_seconds)
        waited = 0.0
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=poll)
            except queue.Empty:
                waited += poll
                if waited >= self._stall_seconds and not self._stop.is_set():
                    raise SourceError(f"the camera delivered no frame for {waited:.1f} s") from None
                continue
            if item is None:
                return
            sequence, unit = item
            waited = 0.0
            if expected is not None and sequence != expected:
                # P-frames after a dropped one would decode into garbage until the next IDR.
                if not resyncing:
                    self._encoder.force_key_frame()
                resyncing = True
            expected = sequence + 1
            if resyncing and not unit.keyframe:
                skipped += 1
                continue
            if resyncing:
                log.warning(
                    "the consumer fell behind the camera: %d frame(s) dropped so far, "
                    "%d skipped until this keyframe",
                    self._dropped,
                    skipped,
                )
                resyncing, skipped = False, 0
            yield unit


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SourceError(
            f"{name} is not installed: on Raspberry Pi OS, 'apt install python3-picamera2' "
            f"and create the venv with --system-site-packages ({exc})"
        ) from exc


def _unit_output(base: type[Any], push: Callable[[bytes, bool, int | None], None]) -> Any:
    """An instance of picamera2's `Output` that hands each encoded frame to `push`."""

    class AccessUnitOutput(base):  # type: ignore[misc]
        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if audio or frame is None:
                return
            push(bytes(frame), keyframe, timestamp)

    return AccessUnitOutput()
