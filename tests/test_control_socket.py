"""The control socket under hostile clients: bytes on the real socket of the real daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonRig, wait_for
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from doorbell.daemon.control import (
    MAX_REQUEST,
    REQUEST_SECONDS,
    SOCKET_NAME,
    ControlError,
    Mailbox,
    send_command,
)
from doorbell.sealing import KeyringStore, RecipientPrivateKey, Suite

# How a hostile client ends its message: a newline, half-closing, or hanging up.
ENDINGS = ("newline", "shutdown", "close")
VALID = b'{"command": "status"}'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonRig]:
    rig = DaemonRig(tmp_path_factory.mktemp("control"))
    rig.start()
    rig.wait_ready()
    yield rig
    try:
        assert rig.stop() == 0, rig.log_text()
    finally:
        rig.kill()


def _socket(rig: DaemonRig) -> Path:
    return rig.runtime / SOCKET_NAME


def _connect(rig: DaemonRig) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.connect(str(_socket(rig)))
    return sock


def _reply(sock: socket.socket) -> dict[str, Any] | None:
    """The one-line reply, or None when the daemon hung up on a client it had stopped reading."""
    try:
        line = sock.makefile("rb").readline()
    except ConnectionResetError:
        return None
    if not line:
        return None
    reply = json.loads(line)
    assert isinstance(reply, dict)
    return reply


def _status_answers(rig: DaemonRig) -> None:
    assert send_command(_socket(rig), "status", timeout=10)["status"]["ready"] is True


nested = st.builds(
    lambda opener, depth: opener * depth,
    st.sampled_from([b"[", b"{", b'{"a":', b'[{"command":']),
    st.integers(1, 100_000),
)
huge = st.integers(MAX_REQUEST - 2, 3_000_000).map(lambda size: b"x" * size)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
odd_requests = st.builds(
    lambda command, deadline, extra: json.dumps(
        {"command": command, "deadline": deadline, **extra}
    ).encode(),
    st.one_of(st.sampled_from(["ring ", "STATUS", "", "status\0"]), json_values),
    json_values,
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
half_written = st.integers(0, len(VALID) - 1).map(lambda cut: VALID[:cut])


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    payload=st.one_of(nested, huge, st.binary(max_size=6000), odd_requests, half_written),
    ending=st.sampled_from(ENDINGS),
)
@example(payload=b"[" * 3000, ending="newline")
@example(payload=b"{" * 4000, ending="newline")
@example(payload=b"x" * 10_000, ending="newline")
@example(payload=b"\xff\xfe\x00garbage", ending="newline")
@example(payload=b'{"command": "status", "deadline": NaN}', ending="newline")
@example(payload=b'{"command": "sta', ending="shutdown")
@example(payload=b'{"command": "ring"}', ending="shutdown")
def test_hostile_requests_are_refused_and_status_still_answers(
    daemon: DaemonRig, payload: bytes, ending: str
) -> None:
    with _connect(daemon) as sock:
        try:
            sock.sendall(payload + (b"\n" if ending == "newline" else b""))
            if ending == "shutdown":
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent: the reply below says why
        if ending != "close":
            reply = _reply(sock)
            if reply is not None and not reply["ok"]:
                assert isinstance(reply["error"], str) and reply["error"]
            if ending == "shutdown" or payload.startswith(b"["):
                assert reply is None or reply["ok"] is False  # never run half-written
    _status_answers(daemon)


def test_deep_nesting_gets_a_clear_error(daemon: DaemonRig) -> None:
    with _connect(daemon) as sock:
        sock.sendall(b"[" * 3000 + b"\n")
        reply = _reply(sock)
    assert reply is not None and reply["ok"] is False
    assert "nests too deeply" in reply["error"]
    _status_answers(daemon)


def test_a_hundred_clients_at_once(daemon: DaemonRig) -> None:
    clients = [_connect(daemon) for _ in range(100)]
    try:
        # All connected and silent: a request from one more still gets through at once.
        started = time.monotonic()
        _status_answers(daemon)
        assert time.monotonic() - started < REQUEST_SECONDS
        for sock in clients:
            sock.sendall(VALID + b"\n")
        replies = [_reply(sock) for sock in clients]
    finally:
        for sock in clients:
            sock.close()
    assert all(reply is not None for reply in replies)
    answered = [reply for reply in replies if reply and reply["ok"]]
    refused = [reply for reply in replies if reply and not reply["ok"]]
    assert answered
    # Clients beyond what is answered at once are told to come back, never left waiting.
    assert all("try again" in reply["error"] for reply in refused), refused[:3]
    _status_answers(daemon)


def test_a_silent_client_is_hung_up_on_after_its_deadline(daemon: DaemonRig) -> None:
    with _connect(daemon) as sock:
        started = time.monotonic()
        sock.sendall(b'{"command": ')
        reply = _reply(sock)
        waited = time.monotonic() - started
    assert reply is not None and reply["ok"] is False
    assert f"not complete within {REQUEST_SECONDS:g} s" in reply["error"]
    assert REQUEST_SECONDS - 1 < waited < REQUEST_SECONDS + 5
    _status_answers(daemon)


class _Trickler(threading.Thread):
    """A client that sends its request one byte every half second, as a slow attacker would."""

    def __init__(self, rig: DaemonRig) -> None:
        super().__init__(daemon=True)
        self.sock = _connect(rig)
        self.sent = 0
        self.started = threading.Event()
        self.reply: dict[str, Any] | None = None
        self.hung_up_after = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        with self.sock:
            try:
                for byte in VALID * 10:
                    self.sock.sendall(bytes([byte]))
                    self.sent += 1
                    if self.sent == 2:
                        self.started.set()
                    # Pacing, the behaviour under test: not a wait for anything.
                    if self._halt.wait(0.5):
                        return
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.hung_up_after = time.monotonic() - began
            self.reply = _reply(self.sock)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def test_a_slow_client_does_not_hold_up_a_ring_from_the_command_line(rig: DaemonRig) -> None:
    rig.start()
    rig.wait_ready()
    trickler = _Trickler(rig)
    trickler.start()
    try:
        assert trickler.started.wait(10)
        started = time.monotonic()
        rung = subprocess.run(
            [sys.executable, "-m", "doorbell", "ring", "-c", str(rig.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
        assert rung.returncode == 0, rung.stderr
        assert "ring sent" in rung.stdout
        # Well inside the command's own 10 s: it was never queued behind the slow client.
        assert took < 8, took
        assert rig.status()["events"] == 1
        trickler.join(timeout=REQUEST_SECONDS + 20)
        assert not trickler.is_alive()
    finally:
        trickler.stop()
    # The slow client itself was hung up on once its request was overdue.
    assert trickler.reply is not None and trickler.reply["ok"] is False
    assert "not complete within" in trickler.reply["error"]
    assert trickler.hung_up_after < REQUEST_SECONDS + 5
    assert rig.stop() == 0


def test_a_ring_whose_client_gave_up_is_never_run(rig: DaemonRig) -> None:
    rig.start()
    rig.wait_ready()
    assert rig.process is not None
    # A daemon that cannot answer (stopped here; swapping or a stalled disk in the wild):
    # the client gives up, and the daemon must not ring later when it resumes.
    rig.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(ControlError) as gave_up:
            send_command(_socket(rig), "ring", timeout=1.5)
    finally:
        rig.process.send_signal(signal.SIGCONT)
    refused = "arrived after its client gave up"
    wait_for(
        lambda: refused in rig.log_text() or rig.status().get("events", 0) > 0,
        30,
        "the daemon to refuse the late ring (or ring)",
    )
    status = rig.status()
    assert status["events"] == 0 and status["clips"] == 0, "a ghost ring"
    assert refused in rig.log_text()
    # What the person who typed 'doorbell ring' was told is true: it did not ring.
    assert "did not answer within 1.5 s" in str(gave_up.value)
    assert "never run" in str(gave_up.value)
    # A ring with time to be answered still rings.
    assert rig.command("ring")["triggered"] == "ring"
    assert rig.status()["events"] == 1
    assert rig.stop() == 0


def test_a_command_the_main_loop_took_too_long_for_is_never_run() -> None:
    mailbox = Mailbox()
    reply = mailbox.wait(timeout=0.1)
    assert reply["ok"] is False and "did not run" in reply["error"]
    ran: list[str] = []

    def ring() -> dict[str, Any]:
        ran.append("ring")
        return {"ok": True}

    mailbox.answer(ring)
    assert ran == []


def test_a_command_the_main_loop_took_up_is_answered() -> None:
    mailbox = Mailbox()
    replies: list[dict[str, Any]] = []
    waiting = threading.Thread(target=lambda: replies.append(mailbox.wait(timeout=10)))
    waiting.start()
    mailbox.answer(lambda: {"ok": True, "triggered": "ring"})
    waiting.join(timeout=10)
    assert replies == [{"ok": True, "triggered": "ring"}]


def test_the_socket_is_for_the_daemon_and_its_group(daemon: DaemonRig) -> None:
    mode = stat.S_IMODE(os.stat(_socket(daemon)).st_mode)
    assert mode == 0o660


def test_a_long_status_reply_is_read_whole(rig: DaemonRig) -> None:
    # As many phones as a keyring holds, with long names: more than the request limit.
    with KeyringStore(rig.state).editing() as box:
        for number in range(63):
            phone = RecipientPrivateKey.generate(Suite.X25519).public_key()
            box[0] = box[0].add(f"phone {number:02} " + "n" * 55, phone, datetime.now(UTC))
    rig.start()
    rig.wait_ready()
    for form in ((), ("--json",)):
        shown = subprocess.run(
            [sys.executable, "-m", "doorbell", "status", *form, "-c", str(rig.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert len(shown.stdout) > MAX_REQUEST
        assert "phone 62 " in shown.stdout
    assert rig.stop() == 0
