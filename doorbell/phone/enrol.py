"""``doorbell-phone enroll LINK``: join a doorbell through the link its owner showed
(docs/PROTOCOL.md). The phone sends its identity, shows the confirmation code, and once
the owner confirmed at the doorbell receives the new keyring, signed by the device key
the link named, and pins that key: no separate ``trust`` step."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from doorbell.phone.client import BrokerSession, ClientSetupError
from doorbell.phone.home import Broker, PhoneHome
from doorbell.phone.manage import Screen, show_words
from doorbell.phone.rules import check_contents
from doorbell.sealing import (
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
    try:
        # The subscription stands before the hello goes out: the answer is not retained.
        channel = BrokerSession(
            link.host,
            link.port,
            tls=link.tls or options.ca_file is not None,
            username=options.username,
            password_file=options.password_file,
            ca_file=options.ca_file,
            topics=[link.topic(proto.DOORBELL_LEAF)],
            max_payload=proto.MAX_ANSWER,
        )
        channel.open(CONNECT_SECONDS)
    except ClientSetupError as exc:
        raise EnrolError(str(exc)) from None
    try:
        up = link.topic(proto.PHONE_LEAF)
        channel.publish(up, proto.seal_message(link.keys.phone_to_doorbell, up, hello.to_message()))
        return _converse(home, link, hello, channel, screen, paper)
    finally:
        channel.close()


def _converse(
    home: PhoneHome,
    link: proto.Link,
    hello: proto.Hello,
    channel: BrokerSession,
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
        received = channel.next(deadline)
        if received is None:
            why = "the doorbell did not answer before the link expired"
            if coded:
                why = "the doorbell did not confirm in time"
            screen.say({"refused": why}, f"refused: {why}")
            return EXIT_REFUSED
        payload = received[1]
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
