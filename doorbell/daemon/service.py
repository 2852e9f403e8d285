"""The running doorbell: one main loop that owns the recorder, the sealer and the sinks.

Frames (from the capture thread), triggers (from gpiozero's threads and the
control socket) and signals all arrive in one queue and are handled on the main
thread, so nothing below needs a lock. Plaintext video exists only between the
source and ``Sealer.seal``; what leaves this module is sealed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from doorbell.capture import InitSegment, MediaSegment, Segmenter, open_source
from doorbell.capture.source import AccessUnit, VideoSource
from doorbell.config import Settings
from doorbell.daemon.control import SOCKET_NAME, ControlServer, Mailbox
from doorbell.daemon.notify import SystemdNotifier
from doorbell.events.preroll import PreRoll
from doorbell.events.recorder import (
    Action,
    BufferSegment,
    ClipEnded,
    ClipStarted,
    DeliverSegment,
    EventInClip,
    KeepSegment,
    Recorder,
    RecorderRules,
    TriggerIgnored,
)
from doorbell.events.sensors import Sensors, make_pin_factory
from doorbell.sealing import Kind, NoRecipients, SealedObject, Sealer, SealingError

if TYPE_CHECKING:
    from doorbell.transport.mqtt import MqttLink
from doorbell.transport.local import LocalDirectorySink
from doorbell.transport.sink import Sink
from doorbell.transport.spool import ObjectClass, Spool
from doorbell.transport.uploader import Uploader

log = logging.getLogger(__name__)

# Discarded pre-roll is announced at least this often, so a crash leaves at most
# this much of it unexplained to the phones.
DISCARD_NOTICE_SECONDS = 60.0
# Without a frame for this long the watchdog stops being fed and systemd restarts us.
FRAME_TIMEOUT_SECONDS = 10.0
# At shutdown the sinks get this long to take what is spooled; the rest waits for
# the next start (systemd's TimeoutStopSec is 30 s).
UPLOAD_DRAIN_SECONDS = 10.0


@dataclass
class _Counters:
    frames: int = 0
    segments: int = 0
    sealed: int = 0
    delivered: int = 0
    events: int = 0
    clips: int = 0
    last_event: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)


class Doorbell:
    """The daemon. ``run()`` returns the process exit code."""

    def __init__(
        self,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._queue_lock = threading.Lock()
        self._queued_frames = 0
        # At most this many frames (two seconds) wait between the camera and the sealer.
        self._max_queued_frames = 2 * settings.camera.fps
        self._notifier = SystemdNotifier(environ, clock)
        self._counters = _Counters(started=clock())
        self._stopping = False
        self._exit_code = 0
        self._ready = False
        self._last_frame = -math.inf
        self._last_discard_notice = clock()
        self._stream = ""
        self._last_unit: AccessUnit | None = None
        self._next_index = 0
        self._clip_first_index: dict[str, int] = {}
        self._clip_last_index: dict[str, int] = {}
        self._recording_enabled = True
        rec = settings.recording
        self._recorder = Recorder(
            RecorderRules(
                pre_roll_seconds=rec.pre_roll_seconds,
                post_roll_seconds=rec.post_roll_seconds,
                max_clip_seconds=rec.max_clip_seconds,
                cooldown_seconds=rec.cooldown_seconds,
                continuous=rec.continuous,
            ),
            clock=clock,
        )
        # In continuous mode the ring only decides what a clip claims as its pre-roll;
        # what leaves it is delivered as continuous recording, not discarded.
        self._preroll = PreRoll(rec.pre_roll_seconds, discard=not rec.continuous)
        self._sealer: Sealer | None = None
        self._source: VideoSource | None = None
        self._segmenter: Segmenter | None = None
        self._sensors: Sensors | None = None
        self._control: ControlServer | None = None
        self._sinks: list[Sink] = []
        self._spool: Spool | None = None
        self._uploaders: list[Uploader] = []
        self._mqtt: MqttLink | None = None
        self.source_warning: str | None = None
        self.pin_factory_warning: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._start()
            self._loop()
        finally:
            self._shutdown()
        return self._exit_code

    def _start(self) -> None:
        settings = self.settings
        self._sealer = Sealer(settings.state_dir)
        keyring = self._sealer.keyring
        log.info(
            "device %s, keyring epoch %d, %d phone(s)",
            self._sealer.device_key.fingerprint,
            keyring.epoch,
            len(keyring),
        )
        if not keyring.recipients:
            log.warning(
                "no phone is enrolled: the doorbell rings and reports events, but records "
                "nothing, because nobody could ever open it ('doorbell keys add')"
            )
        self._start_delivery()
        self._install_signals()
        gpio = settings.gpio
        factory, self.pin_factory_warning = make_pin_factory(gpio.pin_factory)
        if self.pin_factory_warning:
            log.warning("%s", self.pin_factory_warning)
        self._sensors = Sensors(
            pin_factory=factory,
            button_pin=gpio.button.pin,
            pull_up=gpio.button.pull_up,
            bounce_time=gpio.button.bounce_seconds,
            hold_time=gpio.button.hold_seconds,
            motion_pin=gpio.motion.pin,
            motion_queue_len=gpio.motion.queue_len,
            motion_threshold=gpio.motion.threshold,
            motion_sample_rate=gpio.motion.sample_rate,
            chime_pin=gpio.chime.pin,
            chime_active_high=gpio.chime.active_high,
            chime_pulse_seconds=gpio.chime.pulse_seconds,
            led_pin=gpio.status_led.pin,
            on_ring=lambda: self._inbox.put(("trigger", "ring", "button")),
            on_motion=lambda: self._inbox.put(("trigger", "motion", "pir")),
        )
        settings.runtime_dir.mkdir(parents=True, exist_ok=True)
        self._control = ControlServer(settings.runtime_dir / SOCKET_NAME, self._from_control)
        self._control.start()
        cam = settings.camera
        self._source, self.source_warning = open_source(
            cam.source,
            width=cam.width,
            height=cam.height,
            fps=cam.fps,
            bitrate=cam.bitrate,
            keyframe_seconds=cam.keyframe_seconds,
            rotation=cam.rotation,
            hflip=cam.hflip,
            vflip=cam.vflip,
            snapshot_width=cam.snapshot_width,
            file=cam.file,
            realtime=cam.realtime,
        )
        if self.source_warning:
            log.warning("%s", self.source_warning)
        self._segmenter = Segmenter(self._source.format, settings.recording.segment_seconds)
        threading.Thread(target=self._capture, name="capture", daemon=True).start()

    def _start_delivery(self) -> None:
        """The spool and one uploader per sink: capture never waits for the network."""
        settings = self.settings
        assert self._sealer is not None
        if settings.sinks.local.enabled:
            self._sinks.append(LocalDirectorySink(settings.sinks.local.directory))
        if settings.sinks.s3.enabled:
            from doorbell.transport.s3 import S3Sink

            self._sinks.append(S3Sink(settings.sinks.s3))
        if settings.mqtt.enabled:
            from doorbell.transport.mqtt import MqttLink

            self._mqtt = MqttLink(
                settings.mqtt, self._sealer.device_id.hex()[:16], settings.device_name
            )
            self._mqtt.start()
            self._sinks.append(self._mqtt)
        self._spool = Spool(
            settings.state_dir / "spool",
            settings.spool.quota_mb * 1024 * 1024,
            [sink.name for sink in self._sinks],
        )
        for sink in self._sinks:
            uploader = Uploader(self._spool, sink)
            uploader.start()
            self._uploaders.append(uploader)

    def _install_signals(self) -> None:
        def forward(signum: int, frame: FrameType | None) -> None:
            self._inbox.put(("signal", signum))

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)

    def _capture(self) -> None:
        source = self._source
        assert source is not None
        behind = False
        dropped = 0
        try:
            for unit in source.frames():
                if self._stopping:
                    break
                # Plaintext waits in RAM only briefly: when the main loop falls behind,
                # frames are dropped up to the next keyframe rather than piling up
                # (where the kernel could swap them to the SD card).
                if self._queued_frames >= self._max_queued_frames or (behind and not unit.keyframe):
                    behind = True
                    dropped += 1
                    if dropped in (1, 100) or dropped % 1000 == 0:
                        log.warning("sealing is behind the camera: %d frame(s) dropped", dropped)
                    continue
                behind = False
                with self._queue_lock:
                    self._queued_frames += 1
                self._inbox.put(("frame", unit))
        except Exception as exc:  # the camera failing must stop us visibly, not silently
            log.exception("the camera source failed")
            self._inbox.put(("source-ended", f"camera source failed: {exc}"))
            return
        self._inbox.put(("source-ended", None))

    def _loop(self) -> None:
        while not self._stopping:
            try:
                item = self._inbox.get(timeout=0.5)
            except queue.Empty:
                item = None
            if item is not None:
                self._dispatch(item)
            now = self._clock()
            if now - self._last_frame < FRAME_TIMEOUT_SECONDS:
                self._notifier.watchdog()
            if now - self._last_discard_notice >= DISCARD_NOTICE_SECONDS:
                self._announce_discarded()

    def _dispatch(self, item: tuple[Any, ...]) -> None:
        try:
            self._handle(item)
        except (SealingError, OSError, ValueError) as exc:
            # One bad frame, keyring file or full disk must not stop the doorbell.
            log.error("could not handle %s: %s", item[0], exc)
            if item[0] == "command":
                item[2].reply({"ok": False, "error": str(exc)})

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "frame":
            with self._queue_lock:
                self._queued_frames -= 1
            self._on_frame(item[1])
        elif kind == "trigger":
            self._on_trigger(item[1], item[2])
        elif kind == "command":
            item[2].reply(self._on_command(item[1]))
        elif kind == "signal":
            self._on_signal(item[1])
        elif kind == "source-ended":
            if item[1]:
                log.error("%s", item[1])
                self._exit_code = 1
            else:
                log.info("the camera source ended")
            self._stopping = True

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            assert self._sealer is not None
            changed = self._sealer.reload_keyring()
            log.info("SIGHUP: keyring %s", "reloaded" if changed else "unchanged")
            return
        log.info("%s: finishing the open clip and stopping", signal.Signals(signum).name)
        self._stopping = True

    def _shutdown(self) -> None:
        self._stopping = True
        self._notifier.stopping()
        # Each step runs even when an earlier one failed: a half-done shutdown would
        # leave the sequence file unclosed and the spool undrained.
        self._step("stopping the camera", self._stop_source)
        self._step("sealing the last segment", self._seal_the_rest)
        if self._sealer is not None:
            self._step("closing the sealer", self._sealer.close)
        if self._control is not None:
            self._step("closing the control socket", self._control.close)
        self._step("draining uploads", lambda: self._drain_uploads(UPLOAD_DRAIN_SECONDS))
        if self._sensors is not None:
            self._step("releasing the pins", self._sensors.close)
        log.info(
            "stopped: %d frames, %d segments, %d objects delivered",
            self._counters.frames,
            self._counters.segments,
            self._counters.delivered,
        )

    def _step(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception:
            log.exception("shutdown: %s failed", what)

    def _stop_source(self) -> None:
        if self._source is not None:
            self._source.close()
        self._drain_frames()

    def _seal_the_rest(self) -> None:
        if self._sealer is None:
            return
        if self._segmenter is not None:
            for segment in self._segmenter.flush():
                self._on_segment(segment)
        self._apply(self._recorder.stop())
        if self._preroll.discard:
            # Buffered pre-roll already spent sequence numbers: announce it as discarded.
            self._preroll.discard_all()
        else:
            for item in self._preroll.drain():
                self._deliver(item.sealed, ObjectClass.CONTINUOUS)
        self._announce_discarded()

    def _drain_uploads(self, seconds: float) -> None:
        """Give the sinks a moment to take what the last clip left; the spool keeps the rest."""
        deadline = time.monotonic() + seconds
        if self._spool is not None:
            for sink in self._sinks:
                self._spool.wait_drained(sink.name, timeout=max(0.0, deadline - time.monotonic()))
        for uploader in self._uploaders:
            uploader.stop(timeout=max(0.5, deadline + 5 - time.monotonic()))
        for sink in self._sinks:
            sink.close()
        if self._spool is not None:
            if self._spool.count:
                log.info("%d object(s) stay in the spool for the next start", self._spool.count)
            self._spool.close()

    def _drain_frames(self) -> None:
        """Frames already captured still belong to the clip: seal them before exiting."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item[0] == "frame" and self._segmenter is not None:
                self._on_frame(item[1])
            elif item[0] == "command":
                item[2].reply({"ok": False, "error": "the daemon is stopping"})

    # -- media -----------------------------------------------------------------------------

    def _on_frame(self, unit: AccessUnit) -> None:
        self._counters.frames += 1
        self._last_frame = self._clock()
        self._last_unit = unit
        if not self._ready:
            self._ready = True
            self._notifier.ready("recording" if self._recording_enabled else "no phone enrolled")
            if self._sensors is not None and self._sensors.led is not None:
                self._sensors.led.ready()
            log.info("camera delivers frames: ready")
        assert self._segmenter is not None
        for segment in self._segmenter.feed(unit):
            self._on_segment(segment)

    def _on_segment(self, segment: InitSegment | MediaSegment) -> None:
        if isinstance(segment, InitSegment):
            self._stream = secrets.token_hex(16)
            fmt = segment.format
            meta = {
                "stream": self._stream,
                "codec": fmt.codec,
                "width": fmt.width,
                "height": fmt.height,
                "fps": fmt.fps,
                "camera": self.settings.device_name,
            }
            for sealed in self._seal(Kind.INIT, meta, segment.data):
                self._deliver(sealed)
            return
        self._counters.segments += 1
        self._next_index = segment.index + 1
        meta = {
            "stream": self._stream,
            "index": segment.index,
            "start": segment.start,
            "duration": segment.duration,
            "frames": segment.frames,
        }
        sealed_list = self._seal(Kind.SEGMENT, meta, segment.data)
        actions = self._recorder.segment_complete(
            self._clock() - segment.duration, segment.duration
        )
        media = [s for s in sealed_list if s.kind is Kind.SEGMENT]
        for sealed in sealed_list:
            if sealed.kind is not Kind.SEGMENT:
                self._deliver(sealed)
        for action in actions:
            if isinstance(action, KeepSegment | DeliverSegment) and action.clip_id is not None:
                self._clip_last_index[action.clip_id] = segment.index
                for sealed in media:
                    self._deliver(sealed, ObjectClass.CLIP)
            elif isinstance(action, BufferSegment | DeliverSegment):
                # Idle, or continuous outside a clip: the newest segments wait in the ring
                # so that a clip can still claim them (and the spool keeps them longer).
                for sealed in media:
                    for released in self._preroll.push(sealed, segment.duration, segment.index):
                        self._deliver(released.sealed, ObjectClass.CONTINUOUS)
            else:
                self._apply([action])

    # -- events ----------------------------------------------------------------------------

    def _on_trigger(self, trigger: str, origin: str) -> None:
        log.info("%s (%s)", trigger, origin)
        if trigger == "ring" and self._sensors is not None and self._sensors.chime is not None:
            self._sensors.chime.ring()
        if self._mqtt is not None:
            # Home Assistant's cleartext states: only sent with discovery turned on.
            if trigger == "ring":
                self._mqtt.ring()
            else:
                self._mqtt.motion(True)
        self._apply(self._recorder.trigger(trigger))  # type: ignore[arg-type]

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ClipStarted):
                self._start_clip(action.clip_id, action.trigger)
            elif isinstance(action, EventInClip):
                self._seal_event(action.trigger, action.clip_id)
            elif isinstance(action, ClipEnded):
                self._end_clip(action.clip_id, action.reason)
            elif isinstance(action, TriggerIgnored):
                log.info("%s ignored: %s", action.trigger, action.reason)
            if self._sensors is not None and self._sensors.led is not None:
                self._sensors.led.recording(self._recorder.clip_id is not None)

    def _start_clip(self, clip_id: str, trigger: str) -> None:
        self._counters.clips += 1
        buffered = self._preroll.drain()
        first_index = buffered[0].index if buffered else self._next_index
        self._clip_first_index[clip_id] = first_index
        # The event first: it is what the phones are waiting for.
        self._seal_event(trigger, clip_id)
        self._announce_discarded()
        for item in buffered:
            self._deliver(item.sealed, ObjectClass.CLIP)
        log.info(
            "clip %s started by %s with %d pre-roll segment(s)", clip_id[:8], trigger, len(buffered)
        )

    def _seal_event(self, trigger: str, clip_id: str) -> None:
        snapshot = b""
        if self._source is not None:
            try:
                snapshot = self._source.snapshot(self.settings.camera.snapshot_width) or b""
            except Exception as exc:  # a missing snapshot must not lose the event
                log.warning("no snapshot for this %s: %s", trigger, exc)
        meta = {
            "type": trigger,
            "clip": clip_id,
            "stream": self._stream,
            "first_index": self._clip_first_index.get(clip_id, self._next_index),
            # Stream time of the last frame: computed here, not per frame (Fractions are slow).
            "position": 0.0
            if self._last_unit is None
            else float(self._last_unit.pts * self._last_unit.time_base),
            "camera": self.settings.device_name,
        }
        self._counters.events += 1
        self._counters.last_event = {"type": trigger, "clip": clip_id, "time": time.time()}
        for sealed in self._seal(Kind.EVENT, meta, snapshot):
            self._deliver(sealed)

    def _end_clip(self, clip_id: str, reason: str) -> None:
        if self._mqtt is not None:
            self._mqtt.motion(False)
        first = self._clip_first_index.pop(clip_id, self._next_index)
        last = self._clip_last_index.pop(clip_id, first - 1)
        meta = {
            "notice": "clip-end",
            "clip": clip_id,
            "stream": self._stream,
            "last_index": last,
            "reason": reason,
        }
        for sealed in self._seal(Kind.NOTICE, meta, b""):
            self._deliver(sealed)
        log.info("clip %s ended (%s)", clip_id[:8], reason)

    def _announce_discarded(self) -> None:
        self._last_discard_notice = self._clock()
        ranges = self._preroll.take_discarded()
        if not ranges:
            return
        meta = {"notice": "discarded", "reason": "pre-roll", "ranges": ranges}
        for sealed in self._seal(Kind.NOTICE, meta, b""):
            self._deliver(sealed)

    # -- sealing and delivery ----------------------------------------------------------------

    def _seal(self, kind: Kind, meta: dict[str, Any], body: bytes) -> list[SealedObject]:
        assert self._sealer is not None
        try:
            sealed = self._sealer.seal(kind, meta, body)
        except NoRecipients:
            if self._recording_enabled:
                log.warning("no phone is enrolled: recording nothing")
            self._recording_enabled = False
            return []
        if not self._recording_enabled:
            log.info("a phone is enrolled now: recording")
            self._recording_enabled = True
        self._counters.sealed += len(sealed)
        return sealed

    def _deliver(self, sealed: SealedObject, cls: ObjectClass = ObjectClass.ESSENTIAL) -> None:
        """Into the spool (durable when this returns); the uploaders take it from there."""
        assert self._spool is not None
        sinks = [sink.name for sink in self._sinks if sink.wants(sealed.kind)]
        try:
            evictions = self._spool.put(sealed, cls, sinks)
        except OSError as exc:
            # A full or failing SD card: the object is lost; say so loudly, keep ringing.
            log.error("could not spool %s: %s", sealed.name, exc)
            return
        self._counters.delivered += 1
        if evictions:
            ranges = [
                {"first": e.first, "last": e.last, "last_hash": e.last_hash} for e in evictions
            ]
            meta = {"notice": "discarded", "reason": "quota", "ranges": ranges}
            for notice in self._seal(Kind.NOTICE, meta, b""):
                self._deliver(notice)

    # -- control -----------------------------------------------------------------------------

    def _from_control(self, command: str) -> dict[str, Any]:
        mailbox = Mailbox()
        self._inbox.put(("command", command, mailbox))
        return mailbox.wait(timeout=10)

    def _on_command(self, command: str) -> dict[str, Any]:
        if command in ("ring", "motion"):
            self._on_trigger(command, "control socket")
            return {"ok": True, "triggered": command, "clip": self._recorder.clip_id}
        return {"ok": True, "status": self.status()}

    def status(self) -> dict[str, Any]:
        counters = self._counters
        sealer = self._sealer
        now = self._clock()
        return {
            "ready": self._ready,
            "recording_enabled": self._recording_enabled
            and bool(sealer and sealer.keyring.recipients),
            "recorder": self._recorder.state.name.lower(),
            "clip": self._recorder.clip_id,
            "preroll_seconds": self._preroll.seconds_buffered,
            "frames": counters.frames,
            "segments": counters.segments,
            "objects_sealed": counters.sealed,
            "objects_delivered": counters.delivered,
            "events": counters.events,
            "clips": counters.clips,
            "last_event": counters.last_event,
            "last_frame_age": None if self._last_frame == -math.inf else now - self._last_frame,
            "uptime": now - counters.started,
            "device": None if sealer is None else sealer.device_key.fingerprint,
            "keyring": None
            if sealer is None
            else {
                "epoch": sealer.keyring.epoch,
                "phones": [r.name for r in sealer.keyring.recipients],
            },
            "source": self.settings.camera.source,
            "source_warning": self.source_warning,
            "pin_factory_warning": self.pin_factory_warning,
            "spool": None if self._spool is None else self._spool.stats(),
            "sinks": {u.sink.name: dataclasses.asdict(u.status()) for u in self._uploaders},
            "mqtt": None if self._mqtt is None else self._mqtt.status(),
        }
