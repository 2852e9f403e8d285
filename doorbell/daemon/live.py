"""Live view on the doorbell (docs/FORMAT.md section 11, docs/PROTOCOL.md section 7):
sessions started by signed requests, each sealed to the one phone that asked, fed
every frame as its own fragment, from the keyframe of the current GOP on, and ended a
few seconds after the phone stops renewing or at ``live.max_seconds``.

Runs on the daemon's main loop, beside recording: a session only reads the frames the
recorder gets as well, so clips and rings go on as before."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from doorbell.capture import InitSegment
from doorbell.capture.live import LiveFragmenter
from doorbell.capture.source import AccessUnit
from doorbell.config.settings import LiveSettings
from doorbell.sealing import DeviceSigningKey, Recipient
from doorbell.sealing import live as proto

log = logging.getLogger(__name__)

RENEW_SECONDS = 5.0  # a session ends this long after its viewer's last request or renewal
MAX_GOP_FRAMES = 600  # the most frames kept for a viewer's instant start

Publisher = Callable[[str, bytes], None]


class LiveRefused(Exception):
    """A live request that cannot be served; the text says why."""


@dataclass
class _Session:
    viewer: str
    topic: str
    sealer: proto.LiveSealer
    ends: float  # monotonic: the renewal deadline
    hard_end: float  # monotonic: live.max_seconds after the start
    sent: int = 0
    started: float = field(default_factory=time.monotonic)


class LiveSessions:
    def __init__(
        self,
        device: DeviceSigningKey,
        settings: LiveSettings,
        publish: Publisher,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._device = device
        self._settings = settings
        self._publish = publish
        self._clock = clock
        self._sessions: dict[bytes, _Session] = {}
        self._init: InitSegment | None = None
        self._fragmenter: LiveFragmenter | None = None
        # The frames since the last keyframe, with their capture time (µs) and number.
        self._gop: list[tuple[AccessUnit, int, int]] = []
        self._number = 0  # frames of the stream so far: each fragment's sequence number
        self.counts = {"sessions": 0, "fragments": 0}

    @property
    def active(self) -> int:
        return len(self._sessions)

    def new_stream(self, init: InitSegment) -> None:
        """The camera started a stream: sessions of the old one end, new ones use this."""
        for session_id in list(self._sessions):
            self._end(session_id, "the camera's stream changed")
        self._init = init
        self._fragmenter = LiveFragmenter(init.data)
        self._gop.clear()
        self._number = 0

    def frame(self, unit: AccessUnit, capture_us: int) -> None:
        self._number += 1
        if unit.keyframe:
            self._gop.clear()
        if (self._gop or unit.keyframe) and len(self._gop) < MAX_GOP_FRAMES:
            self._gop.append((unit, capture_us, self._number))
        if not self._sessions or self._fragmenter is None:
            return
        fragment = self._fragmenter.fragment(unit, self._number)
        for session in self._sessions.values():
            self._send(session, fragment, capture_us, unit.keyframe)

    def start(self, viewer: Recipient, topic: str) -> dict[str, Any]:
        """A session for ``viewer``, published on ``topic``: its session object (for the
        answer), then at once the current GOP from its keyframe on."""
        self.tick()
        if self._init is None or self._fragmenter is None or not self._gop:
            raise LiveRefused("refused: the camera has no picture yet; try again in a moment")
        if len(self._sessions) >= self._settings.max_viewers:
            raise LiveRefused(
                f"refused: {len(self._sessions)} live viewer(s) already, the most "
                f"live.max_viewers allows"
            )
        fmt = self._init.format
        details = {
            "started_us": int(time.time() * 1_000_000),
            "codec": "h264",
            "width": fmt.width,
            "height": fmt.height,
            "fps": fmt.fps,
            "init": base64.b64encode(self._init.data).decode(),
            "viewers": [viewer.name],
            "renew_seconds": RENEW_SECONDS,
            "max_seconds": self._settings.max_seconds,
        }
        data, sealer = proto.start_session(self._device, [viewer.key], details)
        now = self._clock()
        session = _Session(
            viewer.name, topic, sealer, now + RENEW_SECONDS, now + self._settings.max_seconds
        )
        self._sessions[sealer.session] = session
        self.counts["sessions"] += 1
        log.info("live view for %r started (%d watching)", viewer.name, len(self._sessions))
        # The viewer subscribed to ``topic`` before it asked: the GOP goes out at once.
        for unit, capture_us, number in self._gop:
            fragment = self._fragmenter.fragment(unit, number)
            self._send(session, fragment, capture_us, unit.keyframe)
        return {"session": sealer.session.hex(), "session_object": base64.b64encode(data).decode()}

    def renew(self, session_hex: Any, viewer: Recipient) -> dict[str, Any]:
        session_id, session = self._own(session_hex, viewer)
        session.ends = min(self._clock() + RENEW_SECONDS, session.hard_end)
        return {"session": session_id.hex(), "renewed": True}

    def stop(self, session_hex: Any, viewer: Recipient) -> dict[str, Any]:
        session_id, _ = self._own(session_hex, viewer)
        self._end(session_id, "the viewer stopped")
        return {"session": session_id.hex(), "stopped": True}

    def tick(self) -> None:
        now = self._clock()
        for session_id, session in list(self._sessions.items()):
            if now >= session.hard_end:
                self._end(session_id, "live.max_seconds reached")
            elif now >= session.ends:
                self._end(session_id, "no renewal from the viewer")

    def _own(self, session_hex: Any, viewer: Recipient) -> tuple[bytes, _Session]:
        try:
            session_id = bytes.fromhex(str(session_hex))
        except ValueError:
            raise LiveRefused("refused: not a session id") from None
        session = self._sessions.get(session_id)
        if session is None or session.viewer != viewer.name:
            raise LiveRefused("refused: no such live session of this phone (it ended)")
        return session_id, session

    def _send(self, session: _Session, fragment: bytes, capture_us: int, keyframe: bool) -> None:
        sealed = session.sealer.seal(fragment, capture_us, keyframe)
        session.sent += 1
        self.counts["fragments"] += 1
        try:
            self._publish(session.topic, sealed)
        except (OSError, RuntimeError, ValueError) as exc:
            log.debug("live fragment not sent: %s", exc)

    def _end(self, session_id: bytes, why: str) -> None:
        session = self._sessions.pop(session_id)
        try:
            self._publish(session.topic, session.sealer.end())
        except (OSError, RuntimeError, ValueError) as exc:
            log.debug("live end not sent: %s", exc)
        log.info(
            "live view for %r ended: %s (%d fragments, %.0f s)",
            session.viewer,
            why,
            session.sent,
            self._clock() - session.started,
        )
