"""The test broker's WebSocket front, as the web phone uses it: the npm ``mqtt`` client
over ws:// on one side, a plain paho client over TCP on the other, the real Mosquitto
between them."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytest.register_assert_rewrite("mqtt_fixture")
from mqtt_fixture import Listener, Mosquitto, websocket_bridge  # noqa: E402

pytest_plugins = ["mqtt_fixture"]

WEB = Path(__file__).resolve().parent.parent / "web"
ROUNDTRIP = WEB / "e2e" / "ws-roundtrip.mjs"
TIMEOUT = 20.0


class RoundTrip:
    """``ws-roundtrip.mjs`` connected through the bridge: its JSON lines as they come."""

    def __init__(self, url: str, topic: str) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is missing: scripts/test installs it (apt-get install nodejs npm)")
        if not (WEB / "node_modules" / "mqtt").is_dir():
            pytest.fail("web/node_modules has no mqtt: run scripts/web-build")
        self.process = subprocess.Popen(
            [node, str(ROUNDTRIP), url, topic], cwd=WEB, stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"ws-roundtrip said nothing for {TIMEOUT} s") from None
        assert line is not None, f"ws-roundtrip exited with {self.process.wait()}"
        return line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def roundtrip(ws_mosquitto: str) -> Iterator[Callable[[str], RoundTrip]]:
    started: list[RoundTrip] = []

    def start(topic: str) -> RoundTrip:
        made = RoundTrip(ws_mosquitto, topic)
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()


def topic() -> str:
    return f"bridge/{uuid.uuid4().hex[:12]}"


def test_messages_cross_the_bridge_both_ways_intact(
    listen: Callable[..., Listener], roundtrip: Callable[[str], RoundTrip]
) -> None:
    name = topic()
    tcp = listen(f"{name}/out")
    web = roundtrip(name)
    assert web.next() == {"ready": True}
    [hello] = tcp.wait_on(f"{name}/out", timeout=TIMEOUT)
    assert hello.payload == b"hello over websocket"

    big = os.urandom(1 << 20)  # 1 MiB: larger than a WebSocket library's default frame limit
    for count, payload in enumerate((b"ring", big), start=2):
        tcp.publish(f"{name}/in", payload)
        assert web.next() == {
            "received": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        echoed = tcp.wait_on(f"{name}/out", count, timeout=TIMEOUT)[-1]
        assert echoed.payload == payload


def test_a_web_client_that_drops_is_dropped_at_the_broker(
    listen: Callable[..., Listener], roundtrip: Callable[[str], RoundTrip]
) -> None:
    name = topic()
    tcp = listen(f"{name}/will")
    web = roundtrip(name)
    assert web.next() == {"ready": True}
    web.process.send_signal(signal.SIGKILL)
    # No DISCONNECT was sent: the broker publishes the will only because the bridge
    # closed its TCP side when the WebSocket went.
    [will] = tcp.wait_on(f"{name}/will", timeout=TIMEOUT)
    assert will.payload == b"gone"


def test_a_broker_that_stops_closes_the_web_client(
    mosquitto: Mosquitto, roundtrip: Callable[[str], RoundTrip]
) -> None:
    web = roundtrip(topic())
    assert web.next() == {"ready": True}
    mosquitto.stop()
    assert web.next() == {"closed": True}
    assert web.process.wait(timeout=TIMEOUT) == 0


def test_mqtt_goes_in_binary_frames_only(ws_mosquitto: str) -> None:
    with connect(ws_mosquitto, subprotocols=["mqtt"], open_timeout=TIMEOUT) as client:
        assert client.subprotocol == "mqtt"
        client.send("CONNECT, as text")
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1003


def test_a_web_client_is_told_when_the_broker_is_down(tmp_path: Path) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = Mosquitto(directory)  # never started: nothing listens on its port
    with (
        websocket_bridge(broker) as url,
        connect(url, subprotocols=["mqtt"]) as client,
        pytest.raises(ConnectionClosed) as closed,
    ):
        client.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
