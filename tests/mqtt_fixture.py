"""A real Mosquitto broker on a free loopback port, a plain client to watch it, a
doorbell that seals real events to feed it, and ``doorbell-phone watch`` to read them.

Import the fixtures into a test module to use them. A missing broker is a failure,
not a skip: scripts/test installs the Debian package ``mosquitto``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from daemon_harness import wait_for
from paho.mqtt.enums import CallbackAPIVersion

from doorbell.capture.snapshot import jpeg_from_yuv420
from doorbell.config.settings import HomeAssistantSettings, MqttSettings
from doorbell.phone.home import PhoneHome
from doorbell.sealing import KeyringStore, Kind, SealedObject, Sealer, Suite, prepare_state_dir
from doorbell.transport.mqtt import MqttLink

MOSQUITTO = Path("/usr/sbin/mosquitto")
PHONE = Path(sys.executable).parent / "doorbell-phone"
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
START_TIMEOUT = 10.0
USER, PASSWORD = "doorbell", "correct horse battery staple"


class Mosquitto:
    """One broker process at a time on a fixed port, so clients can find it again:
    ``stop`` then ``start`` is a broker outage, and the same broker back on the same port.

    ``secure``: TLS with a CA made here (``ca_file``) and one user, ``USER`` with the
    password in ``password_file``; anonymous clients are refused. ``persistent``: the
    broker saves sessions, queued messages and retained messages when it stops and
    loads them when it starts again, as Debian's default configuration does.
    """

    host = "127.0.0.1"

    def __init__(self, directory: Path, *, secure: bool = False, persistent: bool = False) -> None:
        self.directory = directory
        self.port = _free_port()
        self.config = directory / "mosquitto.conf"
        lines = [f"listener {self.port} {self.host}"]
        if persistent:
            lines += ["persistence true", f"persistence_location {directory}/"]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            # Started as root, mosquitto becomes the user "mosquitto", who cannot read
            # the password file in this test's private temporary directory.
            lines.append("user root")
        if secure:
            self.ca_file, certificate, key = _certificates(directory, self.host)
            users = directory / "users"
            subprocess.run(
                [str(MOSQUITTO_PASSWD), "-c", "-b", str(users), USER, PASSWORD], check=True
            )
            self.password_file = directory / "password"
            self.password_file.write_text(PASSWORD + "\n")
            lines += [
                f"cafile {self.ca_file}",
                f"certfile {certificate}",
                f"keyfile {key}",
                f"password_file {users}",
                "allow_anonymous false",
            ]
        else:
            # mosquitto 2.0 refuses anonymous clients unless a listener is configured so.
            lines.append("allow_anonymous true")
        self.config.write_text("\n".join(lines) + "\n")
        self.log = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> None:
        assert self.process is None, "the broker is already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepts():
            if self.process.poll() is not None:
                self.process = None
                pytest.fail(f"mosquitto exited at start:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mosquitto did not listen on {self.port} within {START_TIMEOUT} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Terminate the broker: every client sees its connection drop."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=0.5):
                return True
        except OSError:
            return False


def _certificates(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``host`` signed by it, as PEM files."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doorbell test CA")])
    ca = (
        _certificate(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_signing_only(), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    certificate = (
        _certificate(name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _certificate(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _signing_only() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _running(directory: Path, *, secure: bool, persistent: bool = False) -> Iterator[Mosquitto]:
    if not MOSQUITTO.exists():
        pytest.fail(
            f"{MOSQUITTO} is missing: the MQTT tests need a real broker. scripts/test "
            "installs it (Debian package 'mosquitto'), or run: apt-get install mosquitto"
        )
    directory.mkdir()
    broker = Mosquitto(directory, secure=secure, persistent=persistent)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker for anonymous clients, without TLS."""
    yield from _running(tmp_path / "mosquitto", secure=False)


@pytest.fixture
def persistent_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker for anonymous clients that keeps sessions across a restart."""
    yield from _running(tmp_path / "persistent-mosquitto", secure=False, persistent=True)


@pytest.fixture
def secure_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that speaks only TLS and knows one user, ``USER``."""
    yield from _running(tmp_path / "secure-mosquitto", secure=True)


# The largest packet MQTT can describe (its remaining length is at most 2**28 - 1 bytes),
# so the bridge never refuses a message the broker would take.
MQTT_MAX_PACKET = 2**28 + 5


@contextlib.contextmanager
def websocket_bridge(broker: Mosquitto) -> Iterator[str]:
    """A WebSocket front for ``broker``, as a broker's own ``protocol websockets``
    listener is: its URL, ``ws://127.0.0.1:PORT/``, on a free loopback port.

    Each WebSocket client (subprotocol "mqtt") gets its own TCP connection to the
    broker, and binary frames are piped both ways as they come; when either side
    closes, the bridge closes the other. Debian's mosquitto is built without
    websockets, so this is how a browser reaches the real broker in tests.
    """
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def pipe(client: ServerConnection) -> None:
        try:
            reader, writer = await asyncio.open_connection(broker.host, broker.port)
        except OSError:
            await client.close(1011, "the broker is down")
            return

        async def upstream() -> None:
            async for message in client:
                if isinstance(message, str):  # MQTT over WebSocket is binary frames only
                    await client.close(1003, "MQTT needs binary frames")
                    return
                writer.write(message)
                await writer.drain()

        async def downstream() -> None:
            while data := await reader.read(65536):
                await client.send(data)

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            with contextlib.suppress(OSError, ConnectionClosed):
                await writer.wait_closed()
            await client.close()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="websocket-bridge", daemon=True)
    thread.start()

    async def start() -> Any:
        return await serve(pipe, "127.0.0.1", 0, subprotocols=["mqtt"], max_size=MQTT_MAX_PACKET)

    async def stop(server: Any) -> None:
        server.close()
        await server.wait_closed()

    try:
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(START_TIMEOUT)
        try:
            port = server.sockets[0].getsockname()[1]
            yield f"ws://127.0.0.1:{port}/"
        finally:
            asyncio.run_coroutine_threadsafe(stop(server), loop).result(START_TIMEOUT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT)
        loop.close()


@pytest.fixture
def ws_mosquitto(mosquitto: Mosquitto) -> Iterator[str]:
    """The ``mosquitto`` fixture's broker behind a WebSocket listener: its ws:// URL."""
    with websocket_bridge(mosquitto) as url:
        yield url


class Listener:
    """A plain paho client that records every message on its subscriptions."""

    def __init__(self, broker: Mosquitto, *topics: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._changed = threading.Condition()
        ready = threading.Event()

        def connected(client: paho.Client, *_: object) -> None:
            if topics:
                client.subscribe([(t, 1) for t in topics])
            else:
                ready.set()

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex}")
        client.on_connect = connected
        client.on_subscribe = lambda *_: ready.set()
        client.on_message = self._record
        client.connect(*broker.address)
        client.loop_start()
        self.client = client
        assert ready.wait(5), f"no CONNACK or SUBACK for {topics}"

    def _record(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def on(self, topic: str) -> list[paho.MQTTMessage]:
        with self._changed:
            return [m for m in self.messages if m.topic == topic]

    def wait(
        self, what: str, found: Callable[[list[paho.MQTTMessage]], bool], timeout: float = 5.0
    ) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: found(self.messages), timeout):
                seen = [(m.topic, m.payload[:60], m.retain) for m in self.messages]
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {seen}")

    def wait_on(self, topic: str, count: int = 1, timeout: float = 5.0) -> list[paho.MQTTMessage]:
        """At least `count` messages on `topic`; returns them all."""
        self.wait(
            f"{count} message(s) on {topic}",
            lambda ms: sum(m.topic == topic for m in ms) >= count,
            timeout,
        )
        return self.on(topic)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published(), f"the broker did not acknowledge a publish on {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listen(mosquitto: Mosquitto) -> Iterator[Callable[..., Listener]]:
    """``listen(*topics)``: a subscribed plain client, closed at the end of the test."""
    listeners: list[Listener] = []

    def listen(*topics: str) -> Listener:
        listener = Listener(mosquitto, *topics)
        listeners.append(listener)
        return listener

    yield listen
    for listener in listeners:
        listener.close()


def mqtt_settings(broker: Mosquitto, *, discovery: bool = False, **options: Any) -> MqttSettings:
    return MqttSettings(
        enabled=True,
        host=broker.host,
        port=broker.port,
        keepalive=5,
        homeassistant=HomeAssistantSettings(discovery=discovery),
        **options,
    )


@pytest.fixture
def link(mosquitto: Mosquitto) -> Iterator[Callable[..., MqttLink]]:
    """``link(discovery=False, device=..., start=True, **settings)``: an MqttLink to the
    broker, connected unless ``start`` is False, closed at the end of the test."""
    links: list[MqttLink] = []

    def make(
        *,
        discovery: bool = False,
        device: str = "0123456789abcdef",
        start: bool = True,
        **options: Any,
    ) -> MqttLink:
        settings = mqtt_settings(mosquitto, discovery=discovery, **options)
        made = MqttLink(settings, device, "Front door")
        links.append(made)
        if start:
            made.start()
            wait_for(lambda: made.connected, 10, "the link to connect")
        return made

    yield make
    for made in links:
        made.close()


class Watch:
    """``doorbell-phone watch`` in a subprocess, started once it is subscribed.

    Its output is read as it comes, each line with the time it arrived, so a test can
    wait for a line and know when it came.
    """

    def __init__(self, home: PhoneHome, broker: Mosquitto, *options: str) -> None:
        argv = [str(PHONE), "--home", str(home.directory), "watch"]
        argv += ["--host", broker.host, "--port", str(broker.port), "--timeout", "30", *options]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._lines: dict[str, list[tuple[float, str]]] = {"out": [], "err": []}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, name), daemon=True)
            for stream, name in ((self.process.stdout, "out"), (self.process.stderr, "err"))
        ]
        for reader in self._readers:
            reader.start()
        # The first line says it subscribed; --timeout bounds the wait if it never does.
        [first] = self.wait_lines("err", 1, timeout=30)
        assert first.startswith("doorbell-phone: watching doorbell/+/event on "), first

    def _read(self, stream: Any, name: str) -> None:
        for line in stream:
            with self._changed:
                self._lines[name].append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    def timed_lines(self, name: str) -> list[tuple[float, str]]:
        """``(time.monotonic() when it arrived, line)`` for stdout ("out") or stderr ("err")."""
        with self._changed:
            return list(self._lines[name])

    def wait_lines(self, name: str, count: int, timeout: float) -> list[str]:
        """The first ``count`` lines of stdout ("out") or stderr ("err"), once there."""

        def there() -> bool:
            return len(self._lines[name]) >= count or self.process.poll() is not None

        with self._changed:
            self._changed.wait_for(there, timeout)
            lines = [line for _, line in self._lines[name]]
        assert len(lines) >= count, f"{len(lines)} of {count} lines on std{name}: {lines}"
        return lines[:count]

    def finish(self) -> tuple[int, str, str]:
        """Wait for the watch to end: its exit code, its stdout and its stderr after the
        first line."""
        code = self.process.wait(timeout=30)
        for reader in self._readers:
            reader.join(10)
        out, err = ([line for _, line in self.timed_lines(n)] for n in ("out", "err"))
        return code, "".join(f"{line}\n" for line in out), "".join(f"{e}\n" for e in err[1:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(10)


def small_jpeg(width: int = 64, height: int = 48) -> bytes:
    """A real JPEG of a grey ramp, made the way the daemon makes snapshots."""
    luma = bytes((x * 4) % 256 for _ in range(height) for x in range(width))
    chroma = bytes([128]) * (width * height // 2)
    return jpeg_from_yuv420(luma + chroma, width, height, width, max_width=width)


class SealingDoorbell:
    """A device state directory with one enrolled phone, which trusts the device back."""

    def __init__(self, root: Path, *, trusted: bool = True) -> None:
        self.state = prepare_state_dir(root / "state")
        self.home = PhoneHome(root / "phone")
        identity = self.home.init(Suite.X25519)
        with KeyringStore(self.state).editing() as box:
            box[0] = box[0].add("test-phone", identity.public_key(), datetime.now(UTC))
        self.sealer = Sealer(self.state)
        if trusted:
            self.home.trust(self.sealer.device_key, "front door")

    @property
    def device_id(self) -> str:
        """The 16 hex digits that name this doorbell in topics."""
        return self.sealer.device_id.hex()[:16]

    def event(
        self, kind: str = "ring", body: bytes = b"", *, time_us: int | None = None
    ) -> list[SealedObject]:
        """Seal one event: the keyring object comes first the first time."""
        meta = {"type": kind, "clip": uuid.uuid4().hex, "stream": uuid.uuid4().hex}
        return self.sealer.seal(Kind.EVENT, {**meta, "first_index": 0}, body, time_us=time_us)

    def close(self) -> None:
        self.sealer.close()


def only(objects: list[SealedObject], kind: Kind) -> SealedObject:
    [found] = [o for o in objects if o.kind is kind]
    return found


@pytest.fixture
def bell(tmp_path: Path) -> Iterator[SealingDoorbell]:
    """A doorbell that seals real objects for a phone that trusts it."""
    made = SealingDoorbell(tmp_path / "doorbell")
    try:
        yield made
    finally:
        made.close()
