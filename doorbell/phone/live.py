"""``doorbell-phone live``: ask the doorbell for live view, check and decrypt its
fragments, and write a playable fragmented MP4 to a file or to standard output
(docs/FORMAT.md section 11, docs/PROTOCOL.md section 7)."""

from __future__ import annotations

import base64
import contextlib
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from doorbell.phone.home import PhoneHome
from doorbell.phone.manage import Access, ManageError, Refused, Remote, Screen
from doorbell.sealing import SealingError
from doorbell.sealing import live as proto

RENEW_EVERY = 2.0  # seconds between renewals; the doorbell ends a session after 5 without
EXIT_OK, EXIT_REFUSED = 0, 1


@dataclass
class LiveStats:
    started: float  # perf_counter when the command started
    first_frame_s: float | None = None
    frames: int = 0
    dropped: int = 0  # counters skipped: fragments the broker did not deliver
    rejected: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    catch_up: int = 0  # frames from before the session began (the GOP it starts with)
    skipped: int = 0  # frames not shown while waiting for a keyframe after a loss
    ended_by: str = ""

    def percentile(self, share: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "first_frame_s": self.first_frame_s,
            "latency_ms_p50": self.percentile(0.5),
            "latency_ms_p99": self.percentile(0.99),
            "catch_up_frames": self.catch_up,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "rejected": dict(self.rejected),
            "ended": self.ended_by,
        }


def watch_live(
    home: PhoneHome,
    access: Access,
    out: Path | None,
    seconds: float | None,
    screen: Screen,
    *,
    show_stats: bool = False,
) -> int:
    stats = LiveStats(time.perf_counter())
    identity = home.identity()
    with Remote(home, access, max_payload=proto.MAX_FRAGMENT) as remote:
        nonce = os.urandom(16)
        topic = f"{remote.prefix}/live/{nonce.hex()}"
        remote.subscribe(topic)  # before asking: the first fragments come at once
        try:
            answer = remote.call("live", {}, nonce=nonce)
        except Refused as exc:
            screen.say({"refused": str(exc)}, str(exc))
            return EXIT_REFUSED
        try:
            session = proto.open_session(
                base64.b64decode(answer["session_object"]), remote.device, identity
            )
            init = base64.b64decode(session.details["init"])
        except (SealingError, KeyError, ValueError) as exc:
            raise ManageError(f"the doorbell's session object does not check out: {exc}") from None
        sink = _open(out)
        try:
            sink.write(init)
            _stream(remote, session, topic, sink, seconds, stats)
        except BrokenPipeError:
            stats.ended_by = "the player stopped reading"
        finally:
            if sink is not sys.stdout.buffer:
                sink.close()
        if stats.ended_by != "the doorbell ended the session":
            # Without renewals it ends by itself anyway.
            with contextlib.suppress(Refused, ManageError):
                remote.call("live-stop", {"session": session.session.hex()})
    summary = stats.summary()
    line = (
        f"live: {stats.frames} frame(s), {stats.dropped} dropped, "
        f"{sum(stats.rejected.values())} rejected; {stats.ended_by}"
    )
    if show_stats and stats.first_frame_s is not None:
        line += (
            f"; first frame {stats.first_frame_s:.2f} s, latency p50 "
            f"{summary['latency_ms_p50']:.0f} ms, p99 {summary['latency_ms_p99']:.0f} ms"
        )
    screen.say({"live": summary}, line)
    return EXIT_OK if stats.frames else EXIT_REFUSED


def _open(out: Path | None) -> IO[bytes]:
    if out is None or str(out) == "-":
        return sys.stdout.buffer
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # plaintext video: only its owner reads it
    return os.fdopen(fd, "wb")


def _stream(
    remote: Remote,
    session: proto.ViewerSession,
    topic: str,
    sink: IO[bytes],
    seconds: float | None,
    stats: LiveStats,
) -> None:
    end = None if seconds is None else time.monotonic() + seconds
    started_us = int(session.details.get("started_us", 0))
    next_renewal = time.monotonic() + RENEW_EVERY
    keyframed = False
    while True:
        now = time.monotonic()
        if end is not None and now >= end:
            stats.ended_by = f"stopped after {seconds:g} s"
            return
        if now >= next_renewal:
            next_renewal = now + RENEW_EVERY
            try:
                remote.call("live-renew", {"session": session.session.hex()})
            except Refused as exc:
                stats.ended_by = f"the doorbell refused to go on: {exc}"
                return
        deadline = min(next_renewal, end if end is not None else next_renewal)
        received = remote.next_message(deadline)
        if received is None:
            continue
        got, raw = received
        if got != topic:
            continue
        before = session.last
        try:
            fragment = session.open(raw)
        except proto.LiveError as exc:
            stats.rejected[str(exc).split(":")[0]] += 1
            continue
        lost = fragment.counter - before - 1
        stats.dropped += lost
        if fragment.end:
            stats.ended_by = "the doorbell ended the session"
            return
        if lost:
            # Frames after a lost one would decode into garbage: wait for the next
            # keyframe, which repairs the picture.
            keyframed = False
        if not keyframed and not fragment.keyframe:
            stats.skipped += 1
            continue  # a player needs a keyframe first
        keyframed = True
        try:
            sink.write(fragment.data)
            sink.flush()
        except BrokenPipeError:
            stats.ended_by = "the player stopped reading"
            return
        stats.frames += 1
        if stats.first_frame_s is None:
            stats.first_frame_s = time.perf_counter() - stats.started
        if fragment.capture_us < started_us:
            # The GOP the session starts with was captured before anyone asked: how old
            # it is says nothing about how late live frames arrive.
            stats.catch_up += 1
        else:
            stats.latencies_ms.append((time.time_ns() // 1000 - fragment.capture_us) / 1000)
