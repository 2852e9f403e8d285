"""The running doorbell: one main loop that owns the recorder, the sealer and the sinks.

Frames (from the capture thread), triggers (from gpiozero's threads and the
control socket) and signals all arrive in one queue and are handled on the main
thread, so nothing below needs a lock. Plaintext video exists only between the
source and ``Sealer.seal``; what leaves this module is sealed.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import math
import queue
import resource
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
from doorbell.daemon.commands import PhoneCommands
from doorbell.daemon.control import SOCKET_NAME, ControlServer, Mailbox
from doorbell.daemon.enrolment import Broker, Enrolments
from doorbell.daemon.live import LiveSessions
from doorbell.daemon.notify import SystemdNotifier
from doorbell.events.recorder import RecorderRules
from doorbell.events.routing import ClipRouter, Delivery, Retention
from doorbell.events.sensors import Sensors, make_pin_factory
from doorbell.sealing import (
    KeyringStore,
    Kind,
    NoRecipients,
    SealedObject,
    Sealer,
    SealingError,
    load_device_key,
)

if TYPE_CHECKING:
    from doorbell.transport.mqtt import MqttLink
from doorbell.transport.local import LocalDirectorySink
from doorbell.transport.sink import Sink
from doorbell.transport.spool import Eviction, ObjectClass, Spool
from doorbell.transport.uploader import Uploader

log = logging.getLogger(__name__)

# Events and notices that could not be spooled (a full disk with nothing left to
# evict) wait in RAM, unsealed, and are retried; beyond this many the oldest go.
BACKLOG_MAX = 256
# ... and at most this many bytes of them (snapshots), so a long full disk cannot
# grow the daemon's memory past what a 512 MB Pi can hold.
BACKLOG_MAX_BYTES = 16 * 1024 * 1024
BACKLOG_RETRY_SECONDS = 1.0
PR_SET_DUMPABLE = 4  # <linux/prctl.h>
# Header, 64 hybrid stanzas and a keyring object sealed ahead of it, with room to spare.
OBJECT_HEADROOM = 512 * 1024
# Without a frame for this long the watchdog stops being fed and systemd restarts us.
FRAME_TIMEOUT_SECONDS = 10.0
# At shutdown the sinks get this long to take what is spooled; the rest waits for
# the next start (systemd's TimeoutStopSec is 30 s).
UPLOAD_DRAIN_SECONDS = 10.0


def _forbid_core_dumps() -> None:
    """Plaintext video lives in this process's memory: no core dump may put it on disk."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:  # a sandbox may deny it; the unit sets it too
        log.debug("cannot lower the core size limit: %s", exc)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_DUMPABLE) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log.debug("cannot mark the process non-dumpable: %s", exc)


def _room_for(delivery: Delivery) -> int:
    """Bytes to make free before sealing ``delivery``: its padded body (Padme's few
    percent for a segment; other kinds go to the next doubling of their size class, at
    most twice the body), the stanzas, and the notices the sealer may put first."""
    body = len(delivery.body)
    padded = body + body // 16 if delivery.kind is Kind.SEGMENT else 2 * body
    return padded + OBJECT_HEADROOM


@dataclass
class _Counters:
    frames: int = 0
    sealed: int = 0
    delivered: int = 0
    # Segments that could not be spooled even after eviction: never sealed, no gap.
    segments_dropped: int = 0
    # Events and notices given up on after the backlog overflowed.
    essential_dropped: int = 0
    spool_error: str | None = None
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
        # SimpleQueue: its put is safe in a signal handler, which may run while the main
        # thread is inside a get (queue.Queue's lock is not reentrant and would deadlock).
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
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
        self._last_unit: AccessUnit | None = None
        self._recording_enabled = True
        rec = settings.recording
        self._router = ClipRouter(
            RecorderRules(
                pre_roll_seconds=rec.pre_roll_seconds,
                post_roll_seconds=rec.post_roll_seconds,
                max_clip_seconds=rec.max_clip_seconds,
                cooldown_seconds=rec.cooldown_seconds,
                continuous=rec.continuous,
            ),
            camera=settings.device_name,
            snapshot=self._snapshot,
            clock=clock,
            log_events=settings.logging.events,
        )
        # Unsealed events and notices waiting for room in the spool, oldest first.
        self._backlog: list[Delivery] = []
        self._next_retry = -math.inf
        # Evictions not yet announced in a spooled notice: their files stay until they are.
        self._unannounced: list[Eviction] = []
        self._sealer: Sealer | None = None
        self._source: VideoSource | None = None
        self._segmenter: Segmenter | None = None
        self._sensors: Sensors | None = None
        self._control: ControlServer | None = None
        self._sinks: list[Sink] = []
        self._spool: Spool | None = None
        self._uploaders: list[Uploader] = []
        self._mqtt: MqttLink | None = None
        self._enrolments: Enrolments | None = None
        self._commands: PhoneCommands | None = None
        self._live: LiveSessions | None = None
        # The current stream's init segment, and the phones (raw keys) it was sealed to:
        # sealed again before anything else of the stream once the keyring gains a phone.
        self._stream_init: Delivery | None = None
        self._init_readers: frozenset[bytes] = frozenset()
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
        _forbid_core_dumps()
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
        broker = None
        if self._mqtt is not None:
            mqtt = settings.mqtt
            broker = Broker(mqtt.host, mqtt.port, mqtt.tls, mqtt.topic_prefix)
        self._enrolments = Enrolments(
            self._sealer.device_key,
            KeyringStore(settings.state_dir),
            broker,
            self._mqtt.publish if self._mqtt is not None else _nowhere,
            self._publish_keyring,
        )
        if self._mqtt is not None:
            link = self._mqtt
            device = load_device_key(settings.state_dir)[0]
            self._live = LiveSessions(
                device,
                settings.live,
                lambda topic, payload: link.publish(topic, payload, qos=0),
            )
            self._commands = PhoneCommands(
                device,
                KeyringStore(settings.state_dir),
                self._enrolments,
                link.publish,
                self._publish_keyring,
                link.topics.answer,
                live=self._live,
                live_topic=link.topics.live,
                allow_guests=settings.live.allow_guests,
            )
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
            self._mqtt.on_enrolment = lambda window, payload: self._inbox.put(
                ("enrolment", window, payload)
            )
            self._mqtt.on_command = lambda payload: self._inbox.put(("phone-command", payload))
            self._mqtt.start()
            self._sinks.append(self._mqtt)
        wanted = {sink.name: sink for sink in self._sinks}
        self._spool = Spool(
            settings.state_dir / "spool",
            settings.spool.quota_mb * 1024 * 1024,
            list(wanted),
            reserve_bytes=settings.spool.reserve_mb * 1024 * 1024,
            wants=lambda name, kind: wanted[name].wants(kind),
            device=self._sealer.device_key,
            when_checked=lambda: self._inbox.put(("spool-checked",)),
            # A notice per sixteenth of the quota, not per segment, in a long outage.
            quota_slack=settings.spool.quota_mb * 1024 * 1024 // 16,
        )
        self._adopt_spooled_head()
        # The files of earlier runs are checked in the background: recording starts now.
        self._spool.check(self._sealer.head)
        for sink in self._sinks:
            uploader = Uploader(self._spool, sink)
            if self._mqtt is not None and sink is self._mqtt:
                # What waits out a backoff goes as soon as the broker is back.
                self._mqtt.when_connected = uploader.retry_now
            uploader.start()
            self._uploaders.append(uploader)

    def _adopt_spooled_head(self) -> None:
        """The newest object still spooled (the spool's anchor) may be newer than the
        recorded chain head, which is written without a sync: continue the chain from it."""
        assert self._sealer is not None and self._spool is not None
        newest = self._spool.newest(self._sealer.device_id)
        if newest is not None:
            self._sealer.adopt_head(newest)

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
                # When the frame left the encoder, for live view's latency figures.
                self._inbox.put(("frame", unit, time.time_ns() // 1000))
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
            if self._sealer is not None and self._sealer.expiry_due():
                self._dispatch(("guest-expired",))
            if self._enrolments is not None and self._enrolments.open_windows:
                self._enrolments.tick()
            if self._live is not None and self._live.active:
                self._live.tick()
            if (self._backlog or self._unannounced) and now >= self._next_retry:
                # At most once a second: each try costs a seal and a write.
                self._next_retry = now + BACKLOG_RETRY_SECONDS
                self._retry_backlog()

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
            self._on_frame(item[1], item[2])
        elif kind == "trigger":
            self._on_trigger(item[1], item[2])
        elif kind == "command":
            # Not run at all when its client has stopped waiting: no ghost rings.
            item[2].answer(lambda: self._on_command(item[1], item[3]))
        elif kind == "signal":
            self._on_signal(item[1])
        elif kind == "guest-expired":
            self._publish_keyring()
        elif kind == "enrolment":
            if self._enrolments is not None:
                self._enrolments.message(item[1], item[2])
        elif kind == "phone-command":
            if self._commands is not None:
                self._commands.message(item[1])
        elif kind == "spool-checked":
            # Damaged spooled objects the chain holds are announced like evictions.
            assert self._spool is not None
            self._unannounced += self._spool.damaged()
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
            self._step("closing the sealer", self._close_sealer)
        if self._control is not None:
            self._step("closing the control socket", self._control.close)
        self._step("draining uploads", lambda: self._drain_uploads(UPLOAD_DRAIN_SECONDS))
        if self._sensors is not None:
            self._step("releasing the pins", self._sensors.close)
        log.info(
            "stopped: %d frames, %d segments, %d objects delivered",
            self._counters.frames,
            self._router.counts.segments,
            self._counters.delivered,
        )

    def _close_sealer(self) -> None:
        assert self._sealer is not None
        self._sealer.close()
        if self._spool is not None:
            # The chain head is durable now: the newest object may go once its sinks took it.
            self._spool.release_anchor()

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
        if self._sealer is None or self._spool is None:
            return
        if self._segmenter is not None:
            for segment in self._segmenter.flush():
                self._on_segment(segment)
        self._deliver_all(self._router.stop())
        if self._backlog or self._unannounced:
            self._retry_backlog()
        if self._backlog:
            log.error(
                "%d event(s) or notice(s) could not be spooled before stopping: %s",
                len(self._backlog),
                self._counters.spool_error,
            )

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
                self._on_frame(item[1], item[2])
            elif item[0] == "trigger":
                # A press just before the stop is a ring like any other: its event and
                # clip-end are sealed before the daemon exits.
                self._on_trigger(item[1], item[2])
            elif item[0] == "command":
                item[2].reply({"ok": False, "error": "the daemon is stopping"})

    # -- media -----------------------------------------------------------------------------

    def _on_frame(self, unit: AccessUnit, capture_us: int) -> None:
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
        if self._live is not None:
            self._live.frame(unit, capture_us)

    def _on_segment(self, segment: InitSegment | MediaSegment) -> None:
        if isinstance(segment, InitSegment):
            if self._live is not None:
                self._live.new_stream(segment)
            self._deliver_all(self._router.new_stream(segment))
        else:
            self._deliver_all(self._router.segment(segment))

    def _snapshot(self) -> bytes | None:
        if self._source is None:
            return None
        return self._source.snapshot(self.settings.camera.snapshot_width)

    # -- events ----------------------------------------------------------------------------

    def _on_trigger(self, trigger: str, origin: str) -> None:
        if origin == "button" and self._enrolments is not None and self._enrolments.press():
            return  # the press confirmed an enrolment waiting for it: no ring
        if self.settings.logging.events:
            # Off by default: the journal on the SD card would tell who came when.
            log.info("%s (%s)", trigger, origin)
        if trigger == "ring" and self._sensors is not None and self._sensors.chime is not None:
            self._sensors.chime.ring()
        if self._mqtt is not None:
            # Home Assistant's cleartext states: only sent with discovery turned on.
            if trigger == "ring":
                self._mqtt.ring()
            else:
                self._mqtt.motion(True)
        # Stream time of the last frame: computed here, not per frame (Fractions are slow).
        unit = self._last_unit
        position = 0.0 if unit is None else float(unit.pts * unit.time_base)
        self._deliver_all(self._router.trigger(trigger, position))  # type: ignore[arg-type]

    # -- sealing and delivery ----------------------------------------------------------------

    def _deliver_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            clip_end = delivery.kind is Kind.NOTICE and delivery.meta.get("notice") == "clip-end"
            if clip_end and self._mqtt is not None:
                self._mqtt.motion(False)
            self._deliver(delivery)
        if self._sensors is not None and self._sensors.led is not None:
            self._sensors.led.recording(self._router.clip_id is not None)

    def _deliver(self, delivery: Delivery) -> None:
        """Seal and spool one delivery; durable on disk when this returns, or kept for later.

        A sequence number is spent only on an object the spool committed, so a failure
        here leaves no gap in the chain. When the disk is full the spool first evicts
        continuous recording and clips (announced in a sealed notice); an event or
        notice that still does not fit waits in RAM, unsealed, and is retried.
        """
        essential = delivery.retention is Retention.ESSENTIAL
        if essential and self._backlog:
            # Keep events and notices in order behind the ones already waiting.
            self._queue_backlog(delivery)
            return
        try:
            self._seal_and_spool(delivery)
        except OSError as exc:
            self._counters.spool_error = f"{exc.strerror or exc}"
            if essential:
                log.error("could not spool a %s, keeping it to retry: %s", delivery.kind.name, exc)
                self._queue_backlog(delivery)
            else:
                self._counters.segments_dropped += 1
                log.error(
                    "could not spool segment %s: %s (not sealed, so the chain has no gap)",
                    delivery.meta.get("index"),
                    exc,
                )

    def _seal_and_spool(self, delivery: Delivery) -> None:
        assert self._spool is not None
        # Room first: the notice for whatever this evicts is sealed before the object.
        self._unannounced += self._spool.make_room(_room_for(delivery))
        self._announce_evictions()
        try:
            self._seal(delivery)
        except OSError:
            # A full disk the free-space estimate missed: evict what the object needs
            # twice over and try once more.
            freed = self._spool.make_room(2 * _room_for(delivery))
            if not freed:
                raise
            self._unannounced += freed
            self._announce_evictions()
            self._seal(delivery)
        self._counters.spool_error = None
        try:
            self._announce_evictions()
        except OSError as exc:
            # The delivery itself is spooled: it must not be sealed again. The notice
            # waits with the evicted files, and is retried before the next object.
            self._counters.spool_error = f"{exc.strerror or exc}"
            log.error("could not spool the notice for evicted objects, will retry: %s", exc)

    def _seal(self, delivery: Delivery) -> bool:
        """Seal ``delivery`` (and whatever the sealer puts first) into the spool.

        Returns False when no phone is enrolled. Quota evictions the puts caused are
        added to ``_unannounced``; the caller announces them.
        """
        assert self._sealer is not None
        if delivery.kind is Kind.INIT:
            self._stream_init, self._init_readers = delivery, frozenset()
        elif not self._init_for_newcomers():
            return False
        put = self._putter(delivery.kind, ObjectClass(delivery.retention.value))
        try:
            sealed = self._sealer.seal(delivery.kind, delivery.meta, delivery.body, deliver=put)
        except NoRecipients:
            self._nobody_enrolled()
            return False
        if delivery.kind is Kind.INIT and sealed and sealed[-1].kind is Kind.INIT:
            self._init_readers = frozenset(r.key.raw for r in self._sealer.keyring.recipients)
        self._sealed(sealed)
        return True

    def _init_for_newcomers(self) -> bool:
        """Seal the stream's init segment again when the keyring gained a phone since it
        was last sealed (or no phone could open it then): without it, a phone enrolled
        while the stream runs could open its media segments and never play them."""
        assert self._sealer is not None
        init = self._stream_init
        if init is None:
            return True
        self._sealer.reload_keyring()
        readers = frozenset(r.key.raw for r in self._sealer.keyring.recipients)
        if readers <= self._init_readers:
            return True
        return self._seal(init)

    def _publish_keyring(self) -> list[SealedObject]:
        """Seal the changed keyring now, not with the next event: a guest's time is up,
        or a phone was enrolled and waits for it."""
        assert self._sealer is not None
        try:
            sealed = self._sealer.publish_keyring(deliver=self._putter(None, ObjectClass.ESSENTIAL))
        except NoRecipients:
            self._nobody_enrolled()
            return []
        except OSError as exc:
            # The keyring file says it already; the keyring object is sealed again with
            # the next object.
            self._counters.spool_error = f"{exc.strerror or exc}"
            log.error("could not spool the changed keyring: %s", exc)
            return []
        self._sealed(sealed)
        self._init_for_newcomers()  # a phone just joined: its clips must play
        return sealed

    def _putter(
        self, kind: Kind | None, cls: ObjectClass
    ) -> Callable[[SealedObject, Callable[[], None]], None]:
        """The sealer's ``deliver``: into the spool, as ``cls`` for objects of ``kind``."""
        assert self._spool is not None
        spool = self._spool

        def put(sealed: SealedObject, commit: Callable[[], None]) -> None:
            # Keyring and restart objects the sealer adds before this one are essential.
            kind_cls = cls if sealed.kind is kind else ObjectClass.ESSENTIAL
            sinks = [sink.name for sink in self._sinks if sink.wants(sealed.kind)]
            self._unannounced += spool.put(sealed, kind_cls, sinks, durable=commit)

        return put

    def _nobody_enrolled(self) -> None:
        if self._recording_enabled:
            log.warning("no phone is enrolled: recording nothing")
        self._recording_enabled = False

    def _sealed(self, sealed: list[SealedObject]) -> None:
        if not self._recording_enabled:
            log.info("a phone is enrolled now: recording")
            self._recording_enabled = True
        self._counters.sealed += len(sealed)
        self._counters.delivered += len(sealed)

    def _announce_evictions(self) -> None:
        """Seal the ``discarded`` notice for what was evicted; the files go once it is spooled.

        Until then the evicted objects stay on disk, and a restart delivers them.
        """
        assert self._spool is not None
        while self._unannounced:
            # One notice per reason: "quota" for evictions, "damaged" for damaged files.
            reason = self._unannounced[0].notice_reason
            evictions = [e for e in self._unannounced if e.notice_reason == reason]
            meta = {
                "notice": "discarded",
                "reason": reason,
                "ranges": [e.as_range() for e in evictions],
            }
            # Not through make_room: the notice is small and lives in the spool's reserve.
            if not self._seal(Delivery(Kind.NOTICE, meta)):
                return
            # Spooling the notice may itself have evicted more: those come next round.
            self._unannounced = [e for e in self._unannounced if e not in evictions]
            self._spool.announced(evictions)

    def _queue_backlog(self, delivery: Delivery) -> None:
        self._backlog.append(delivery)
        while len(self._backlog) > 1 and (
            len(self._backlog) > BACKLOG_MAX
            or sum(len(d.body) for d in self._backlog) > BACKLOG_MAX_BYTES
        ):
            lost = self._backlog.pop(0)
            self._counters.essential_dropped += 1
            log.error(
                "the spool has had no room for a while: gave up on a %s (never sealed)",
                lost.kind.name,
            )

    def _retry_backlog(self) -> None:
        try:
            self._announce_evictions()
            while self._backlog:
                self._seal_and_spool(self._backlog[0])
                waited = self._backlog.pop(0)
                log.info("spooled a %s that had waited for room", waited.kind.name.lower())
        except OSError as exc:
            self._counters.spool_error = f"{exc.strerror or exc}"
        except (SealingError, ValueError) as exc:
            # Kept for the next try: a broken keyring edit must not stop the main loop.
            log.error("could not seal what waits for room: %s", exc)

    # -- control -----------------------------------------------------------------------------

    def _from_control(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        mailbox = Mailbox()
        self._inbox.put(("command", command, mailbox, args))
        return mailbox.wait(timeout=10)

    def _on_command(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        if command.startswith("enroll-"):
            assert self._enrolments is not None
            enrolments = self._enrolments
            if command == "enroll-open":
                return {"ok": True, **enrolments.open(args)}
            act = {
                "enroll-state": enrolments.state,
                "enroll-confirm": enrolments.confirm,
                "enroll-cancel": enrolments.cancel,
            }[command]
            return {"ok": True, **act(args.get("window"))}
        if command in ("ring", "motion"):
            self._on_trigger(command, "control socket")
            return {
                "ok": True,
                "triggered": command,
                "clip": self._router.clip_id,
                # Events that found no room in the spool: kept in RAM, spooled when there is.
                "waiting_for_room": len(self._backlog),
            }
        return {"ok": True, "status": self.status()}

    def status(self) -> dict[str, Any]:
        counters = self._counters
        sealer = self._sealer
        now = self._clock()
        spool = None if self._spool is None else self._spool.stats()
        return {
            "ready": self._ready,
            "recording_enabled": self._recording_enabled
            and bool(sealer and sealer.keyring.recipients),
            "recorder": self._router.state.name.lower(),
            "clip": self._router.clip_id,
            "preroll_seconds": self._router.preroll.seconds_buffered,
            "frames": counters.frames,
            "segments": self._router.counts.segments,
            "segments_dropped": counters.segments_dropped,
            "essential_dropped": counters.essential_dropped,
            "waiting_for_room": len(self._backlog),
            "spool_error": counters.spool_error,
            "objects_sealed": counters.sealed,
            "objects_delivered": counters.delivered,
            "events": self._router.counts.events,
            "clips": self._router.counts.clips,
            "last_event": self._router.counts.last_event,
            "last_frame_age": None if self._last_frame == -math.inf else now - self._last_frame,
            "uptime": now - counters.started,
            "device": None if sealer is None else sealer.device_key.fingerprint,
            "keyring": None
            if sealer is None
            else {
                "epoch": sealer.keyring.epoch,
                "phones": [r.name for r in sealer.keyring.recipients],
                # Phones on x25519: with any of them, no object is post-quantum protected.
                "classical": [r.name for r in sealer.keyring.classical],
                "post_quantum": sealer.keyring.post_quantum,
            },
            "source": self.settings.camera.source,
            "source_warning": self.source_warning,
            "pin_factory_warning": self.pin_factory_warning,
            "spool": spool,
            # Spooled files that are not intact objects of this device: never delivered.
            "quarantined": 0 if spool is None else spool["quarantined"]["objects"],
            "sinks": {u.sink.name: dataclasses.asdict(u.status()) for u in self._uploaders},
            "mqtt": None if self._mqtt is None else self._mqtt.status(),
            "enrolment_windows": 0 if self._enrolments is None else self._enrolments.open_windows,
            "live_sessions": 0 if self._live is None else self._live.active,
            "live_fragments": 0 if self._live is None else self._live.counts["fragments"],
        }


def _nowhere(topic: str, payload: bytes) -> None:
    """Enrolment without a broker: ``Enrolments.open`` refuses before anything is sent."""
