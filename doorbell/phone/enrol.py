"""``doorbell-phone enroll LINK``: join a doorbell through the link its owner showed
(docs/PROTOCOL.md). The phone sends its identity, shows the confirmation code, and once
the owner confirmed at the doorbell receives the new keyring, signed by the device key
the link named, and pins that key: no separate ``trust`` step."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from doorbell.common.mqtt_client import TlsSetupError, connect_options, end_session, new_client
from doorbell.common.secrets import SecretFileError, read_secret
from doorbell.phone.home import Broker, PhoneHome
from doorbell.phone.manage import Screen, show_words
from doorbell.phone.rules import check_contents
from doorbell.sealing import (
    KeyFileError,
    Kind,
    Reader,
    Role,
    SealingError,
    Suite,
    check_canonical_ed25519_key,
    recovery,
)
from doorbell.sealing import enrolment as proto

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
CONNECT_SECONDS = 15.0
# After the code is shown the owner has a while to compare and confirm at the doorbell.
ANSWER_SECONDS = 330.0
MAX_STRAY = 1000  # messages that are not ours before this phone gives up on the window


class EnrolError(Exception):
    """Enrolment cannot start: a bad link, no broker, bad options. Exit 2."""


@dataclass(frozen=True)
class EnrolOptions:
    link: str
    name: str | None = None
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    json: bool = False


def enrol(home: PhoneHome, options: EnrolOptions, out: IO[str]) -> int:
    try:
        link = proto.Link.parse(options.link)
        check_canonical_ed25519_key(link.device.raw)
    except SealingError as exc:
        raise EnrolError(str(exc)) from None
    screen = Screen(out, options.json)
    if link.expires <= time.time():
        screen.say({"refused": "the link expired"}, "refused: the link expired; ask for a new one")
        return EXIT_REFUSED
    if not home.identity_path.exists():
        home.init(Suite.MLKEM768_X25519)
    identity = home.public_identity()
    name = options.name or _default_name()
    # Offered to the doorbell, which enrols it only when this phone is its first owner;
    # its words are shown then, once, and kept nowhere.
    paper = recovery.RecoveryKey.generate()
    try:
        hello = proto.Hello.make(link, identity, home.signing_key(), name, paper.identity)
    except SealingError as exc:
        raise EnrolError(f"--name: {exc}") from None
    channel = _Channel(link, options)
    try:
        channel.open(time.monotonic() + CONNECT_SECONDS)
        up = link.topic(proto.PHONE_LEAF)
        channel.publish(up, proto.seal_message(link.keys.phone_to_doorbell, up, hello.to_message()))
        return _converse(home, link, hello, channel, screen, paper)
    finally:
        channel.close()


def _converse(
    home: PhoneHome,
    link: proto.Link,
    hello: proto.Hello,
    channel: _Channel,
    screen: Screen,
    paper: recovery.RecoveryKey,
) -> int:
    down = link.topic(proto.DOORBELL_LEAF)
    key = link.keys.doorbell_to_phone
    mine = proto.b64(hello.nonce)
    deadline = time.monotonic() + max(0.0, link.expires - time.time()) + 5
    stray = 0
    coded = False
    while True:
        payload = channel.next(deadline)
        if payload is None:
            why = "the doorbell did not answer before the link expired"
            if coded:
                why = "the doorbell did not confirm in time"
            screen.say({"refused": why}, f"refused: {why}")
            return EXIT_REFUSED
        try:
            message = proto.open_message(key, down, payload, proto.MAX_ANSWER)
        except proto.EnrolmentError:
            stray += 1  # not from the doorbell: anyone can publish on a broker
            if stray >= MAX_STRAY:
                raise EnrolError("too many stray messages on the enrolment topic") from None
            continue
        if message.get("phone_nonce") != mine:
            continue  # the doorbell's answer to another phone that saw the link
        kind = message["type"]
        if kind == proto.CODE and not coded:
            try:
                doorbell_nonce = proto.unb64(
                    message.get("nonce"), "doorbell nonce", proto.NONCE_LEN
                )
            except proto.EnrolmentError:
                continue
            coded = True
            code = proto.confirmation_code(link, hello, doorbell_nonce)
            deadline = time.monotonic() + ANSWER_SECONDS
            screen.say(
                {"code": code},
                f"The doorbell must show the code   {code}\n"
                "If it does, confirm there (type yes, or press the button); otherwise refuse.",
            )
        elif kind == proto.REFUSED:
            reason = str(message.get("reason", "refused"))[:1000]
            screen.say({"refused": reason}, f"refused: {reason}")
            return EXIT_REFUSED
        elif kind == proto.WELCOME and coded:
            return _welcome(home, link, hello, message, screen, paper)


def _welcome(
    home: PhoneHome,
    link: proto.Link,
    hello: proto.Hello,
    message: dict[str, Any],
    screen: Screen,
    paper: recovery.RecoveryKey,
) -> int:
    """Check the keyring the doorbell sent: sealed by the device the link named, openable
    by this phone, listing it with its identity. Only then pin the device."""
    try:
        raw = proto.unb64(message.get("keyring"), "the keyring", limit=proto.MAX_ANSWER)
        reader = Reader([home.identity()], [link.device])
        opened = reader.open(raw)
        keyring = check_contents(opened) if opened.kind is Kind.KEYRING else None
    except SealingError as exc:
        why = f"the doorbell's keyring does not check out: {exc}"
        screen.say({"refused": why}, f"refused: {why}")
        return EXIT_REFUSED
    me = None
    if keyring is not None:
        me = next(
            (
                r
                for r in keyring.recipients
                if r.key == hello.identity.key and r.signing == hello.identity.signing
            ),
            None,
        )
    if me is None:
        why = "the doorbell's keyring does not list this phone"
        screen.say({"refused": why}, f"refused: {why}")
        return EXIT_REFUSED
    home.trust(link.device, "doorbell")
    home.remember_broker(Broker(link.device, link.host, link.port, link.tls, link.prefix))
    assert keyring is not None
    listed = any(
        r.role is Role.RECOVERY and r.key == paper.identity.key for r in keyring.recipients
    )
    if message.get("recovery") is True and listed:
        show_words(paper, link.device, screen)
    screen.say(
        {"enrolled": me.name, "role": me.role.value, "device": link.device.fingerprint},
        f"enrolled as {me.name!r} ({me.role.value}); doorbell {link.device.fingerprint} pinned",
    )
    return EXIT_OK


def _default_name() -> str:
    name = "".join(c for c in socket.gethostname() if c.isprintable()).strip()[:64]
    return name or "phone"


class _Channel:
    """A paho client subscribed to the window's doorbell topic; messages in a queue."""

    def __init__(self, link: proto.Link, options: EnrolOptions) -> None:
        self.link = link
        self._inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._problem: str | None = None
        password = None
        if options.username and options.password_file is not None:
            try:
                password = read_secret(options.password_file, "--password-file")
            except SecretFileError as exc:
                raise EnrolError(str(exc)) from None
        try:
            client = new_client(
                f"doorbell-phone-{os.urandom(4).hex()}",
                username=options.username,
                password=password,
                tls=link.tls or options.ca_file is not None,
                ca_file=options.ca_file,
            )
        except TlsSetupError as exc:
            raise EnrolError(f"cannot set up TLS: {exc}") from None
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        self.client = client

    @property
    def address(self) -> str:
        return f"{self.link.host}:{self.link.port}"

    def open(self, deadline: float) -> None:
        try:
            self.client.connect(self.link.host, self.link.port, **connect_options(proto.MAX_ANSWER))
        except (OSError, ValueError) as exc:
            raise EnrolError(
                f"cannot reach the doorbell's broker at {self.address}: {exc}"
            ) from None
        self.client.loop_start()
        # The subscription must stand before the hello goes out: the answer is not retained.
        if not self._ready.wait(max(0.0, deadline - time.monotonic())):
            raise EnrolError(f"the doorbell's broker at {self.address} did not answer in time")
        if self._problem is not None:
            raise EnrolError(self._problem)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def next(self, deadline: float) -> bytes | None:
        try:
            return self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.disconnect(properties=end_session())
        self.client.loop_stop()

    def _connected(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:  # fmt: skip
        if reason.is_failure:
            self._problem = f"the broker at {self.address} refused us: {reason}"
            self._ready.set()
            return
        client.subscribe([(self.link.topic(proto.DOORBELL_LEAF), 1)])

    def _subscribed(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:  # fmt: skip
        if any(r.is_failure for r in reasons):
            self._problem = f"the broker at {self.address} refused the enrolment topic"
        self._ready.set()

    def _message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if len(message.payload) <= proto.MAX_ANSWER:
            self._inbox.put(bytes(message.payload))


__all__ = ["EnrolError", "EnrolOptions", "KeyFileError", "enrol"]
