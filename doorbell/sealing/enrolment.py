"""Enrolment over MQTT, both sides' share of it (docs/PROTOCOL.md sections 1 to 4): the
link, the keys derived from its one-time secret, the sealed messages and the
confirmation code. The device and the phone hold the state machines; nothing here
touches the network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from doorbell.sealing.errors import BadSignature, KeyStringError, SealingError
from doorbell.sealing.format import loads_strict
from doorbell.sealing.keyring import check_name
from doorbell.sealing.keys import DevicePublicKey, PhoneIdentity, PhoneSigningKey

LINK_SCHEME = "doorbell:enroll"
LINK_VERSION = 1
SECRET_LEN = 16  # 128 bits
NONCE_LEN = 16
WINDOW_ID_LEN = 8
AEAD_NONCE_LEN = 12
MAX_MESSAGE = 16 * 1024  # the largest message a doorbell reads from a phone
MAX_ANSWER = 1024 * 1024  # the largest a phone reads: the answer carries a keyring object
MAX_LINK = 600
_SALT = b"doorbell enroll v1"
_B32 = re.compile(r"[a-z2-7]+")
_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,253}")

# Message types (PROTOCOL.md section 3).
HELLO, CODE, WELCOME, REFUSED = "hello", "code", "welcome", "refused"
PHONE_LEAF, DOORBELL_LEAF = "phone", "doorbell"


class EnrolmentError(SealingError):
    """A link or message that is not a valid part of an enrolment; the text says why."""


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def _unb32(text: str, length: int, what: str) -> bytes:
    if not _B32.fullmatch(text) or len(text) != -(-length * 8 // 5):
        raise EnrolmentError(f"the link's {what} is not {length} bytes of base32")
    raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    if _b32(raw) != text:
        raise EnrolmentError(f"the link's {what} is not canonical base32")
    return raw


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unb64(value: Any, what: str, length: int | None = None, limit: int = MAX_MESSAGE) -> bytes:
    if not isinstance(value, str) or len(value) > limit * 2:
        raise EnrolmentError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise EnrolmentError(f"{what} is not valid base64") from None
    if length is not None and len(raw) != length:
        raise EnrolmentError(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Link:
    """What a phone needs to enrol (PROTOCOL.md section 1). Only ``secret`` is secret."""

    device: DevicePublicKey
    host: str
    port: int
    tls: bool
    prefix: str
    secret: bytes
    expires: int  # Unix seconds

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_LEN:
            raise EnrolmentError(f"the one-time secret must be {SECRET_LEN} bytes")

    @classmethod
    def new(cls, device: DevicePublicKey, host: str, port: int, tls: bool, prefix: str,
            expires: int) -> Link:  # fmt: skip
        return cls(device, host, port, tls, prefix, os.urandom(SECRET_LEN), expires)

    def to_string(self) -> str:
        query = urlencode(
            [
                ("v", str(LINK_VERSION)),
                ("k", _b32(self.device.raw)),
                ("h", self.host),
                ("p", str(self.port)),
                ("tls", "1" if self.tls else "0"),
                ("t", self.prefix),
                ("s", _b32(self.secret)),
                ("e", str(self.expires)),
            ],
            quote_via=quote,
            safe="/",
        )
        return f"{LINK_SCHEME}?{query}"

    @classmethod
    def parse(cls, text: str) -> Link:
        """The link as a phone reads it, every field checked; EnrolmentError says which."""
        text = text.strip()
        if len(text) > MAX_LINK:
            raise EnrolmentError(f"not an enrolment link: {len(text)} characters, limit {MAX_LINK}")
        scheme, _, query = text.partition("?")
        if scheme != LINK_SCHEME:
            raise EnrolmentError(f"not an enrolment link: it must start with {LINK_SCHEME}?")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise EnrolmentError("the enrolment link's fields are garbled") from None
        fields = dict(pairs)
        if len(fields) != len(pairs):
            raise EnrolmentError("the enrolment link repeats a field")
        missing = [key for key in ("v", "k", "h", "p", "tls", "t", "s", "e") if key not in fields]
        if missing:
            raise EnrolmentError(f"the enrolment link lacks {', '.join(missing)}: it is cut short")
        if fields["v"] != str(LINK_VERSION):
            raise EnrolmentError(f"enrolment link version {fields['v']!r}; this phone reads 1")
        try:
            device = DevicePublicKey(_unb32(fields["k"], 32, "device key"))
        except KeyStringError as exc:
            raise EnrolmentError(f"the link's device key: {exc}") from None
        host = fields["h"]
        if not _HOST.fullmatch(host):
            raise EnrolmentError("the link's broker host is not a host name or address")
        port = _number(fields["p"], "broker port", 1, 65535)
        if fields["tls"] not in ("0", "1"):
            raise EnrolmentError("the link's tls field must be 0 or 1")
        prefix = fields["t"]
        if (
            not prefix
            or len(prefix) > 128
            or any(c in prefix for c in "#+\0")
            or (prefix.startswith("/") or prefix.endswith("/"))
        ):
            raise EnrolmentError("the link's topic prefix is not a valid MQTT topic prefix")
        secret = _unb32(fields["s"], SECRET_LEN, "one-time secret")
        expires = _number(fields["e"], "expiry", 0, 2**40)
        return cls(device, host, port, fields["tls"] == "1", prefix, secret, expires)

    @property
    def keys(self) -> WindowKeys:
        return WindowKeys.derive(self.secret, self.device.device_id, self.expires)

    def topic(self, leaf: str) -> str:
        """The window's topic for messages from the phone or from the doorbell."""
        device = self.device.device_id.hex()[:16]
        return f"{self.prefix}/{device}/enroll/{self.keys.window_id.hex()}/{leaf}"


def _number(text: str, what: str, low: int, high: int) -> int:
    if (
        not text.isascii()
        or not text.isdigit()
        or len(text) > 16
        or (text.startswith("0") and text != "0")
    ):
        raise EnrolmentError(f"the link's {what} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise EnrolmentError(f"the link's {what} {value} is outside {low}..{high}")
    return value


@dataclass(frozen=True)
class WindowKeys:
    """The keys of one enrolment window, all from its one-time secret (PROTOCOL.md 2)."""

    window_id: bytes
    phone_to_doorbell: bytes
    doorbell_to_phone: bytes
    code: bytes

    @classmethod
    def derive(cls, secret: bytes, device_id: bytes, expires: int) -> WindowKeys:
        context = device_id + struct.pack(">Q", expires)

        def key(label: bytes, length: int = 32) -> bytes:
            hkdf = HKDF(hashes.SHA256(), length, _SALT, label + b"\0" + context)
            return hkdf.derive(secret)

        return cls(
            key(b"window", WINDOW_ID_LEN),
            key(b"phone to doorbell"),
            key(b"doorbell to phone"),
            key(b"code"),
        )


def seal_message(
    key: bytes, topic: str, message: dict[str, Any], nonce: bytes | None = None
) -> bytes:
    """``nonce || AES-256-GCM(key, nonce, JSON, aad = topic)`` (PROTOCOL.md section 3)."""
    nonce = os.urandom(AEAD_NONCE_LEN) if nonce is None else nonce
    plaintext = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return nonce + AESGCM(key).encrypt(nonce, plaintext, topic.encode())


def open_message(
    key: bytes, topic: str, payload: bytes, limit: int = MAX_MESSAGE
) -> dict[str, Any]:
    """The message, or EnrolmentError when it is not one sealed under ``key`` for ``topic``."""
    if not AEAD_NONCE_LEN + 16 <= len(payload) <= limit:
        raise EnrolmentError(f"a {len(payload)}-byte message: not an enrolment message")
    nonce, sealed = payload[:AEAD_NONCE_LEN], payload[AEAD_NONCE_LEN:]
    try:
        plaintext = AESGCM(key).decrypt(nonce, sealed, topic.encode())
    except InvalidTag:
        raise EnrolmentError("a message not sealed under this window's secret") from None
    message = loads_strict(plaintext, lambda why: EnrolmentError(f"a garbled message: {why}"))
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise EnrolmentError("a message without a type")
    return message


@dataclass(frozen=True)
class Hello:
    """The phone's first message: who it is, signed with its signing key."""

    nonce: bytes
    identity: PhoneIdentity
    name: str
    signature: bytes
    # A recovery key the phone offers, enrolled when it joins as the first owner.
    recovery: PhoneIdentity | None = None

    @staticmethod
    def signed_bytes(
        link: Link,
        nonce: bytes,
        identity: PhoneIdentity,
        name: str,
        recovery: PhoneIdentity | None = None,
    ) -> bytes:
        parts = [
            b"doorbell enroll v1 hello\0",
            link.device.device_id,
            link.keys.window_id,
            nonce,
            identity.key.raw,
            identity.signing.raw,
            name.encode(),
        ]
        if recovery is not None:
            parts += [b"\0recovery\0", recovery.key.raw, recovery.signing.raw]
        return b"".join(parts)

    @classmethod
    def make(
        cls,
        link: Link,
        identity: PhoneIdentity,
        signing: PhoneSigningKey,
        name: str,
        recovery: PhoneIdentity | None = None,
    ) -> Hello:
        nonce = os.urandom(NONCE_LEN)
        signature = signing.sign(cls.signed_bytes(link, nonce, identity, name, recovery))
        return cls(nonce, identity, name, signature, recovery)

    def to_message(self) -> dict[str, Any]:
        message = {
            "type": HELLO,
            "nonce": b64(self.nonce),
            "identity": self.identity.to_string(),
            "name": self.name,
            "signature": b64(self.signature),
        }
        if self.recovery is not None:
            message["recovery"] = self.recovery.to_string()
        return message

    @classmethod
    def from_message(cls, link: Link, message: dict[str, Any]) -> Hello:
        if message.get("type") != HELLO:
            raise EnrolmentError(f"expected a hello, got {str(message.get('type'))[:20]!r}")
        nonce = unb64(message.get("nonce"), "hello nonce", NONCE_LEN)
        text = message.get("identity")
        if not isinstance(text, str):
            raise EnrolmentError("the hello's identity must be a string")
        try:
            identity = PhoneIdentity.from_string(text)
        except KeyStringError as exc:
            raise EnrolmentError(f"the phone's identity: {exc}") from None
        name = message.get("name")
        if not isinstance(name, str):
            raise EnrolmentError("the hello's name must be a string")
        try:
            check_name(name)
        except SealingError as exc:
            raise EnrolmentError(f"the phone's name: {exc}") from None
        signature = unb64(message.get("signature"), "hello signature", 64)
        recovery = None
        if "recovery" in message:
            try:
                recovery = PhoneIdentity.from_string(str(message["recovery"]))
            except KeyStringError as exc:
                raise EnrolmentError(f"the offered recovery key: {exc}") from None
            if recovery == identity or recovery.key == identity.key:
                raise EnrolmentError("the offered recovery key is the phone's own")
        hello = cls(nonce, identity, name, signature, recovery)
        signed = cls.signed_bytes(link, nonce, identity, name, recovery)
        try:
            identity.signing.verify(signature, signed)
        except BadSignature:
            raise EnrolmentError("the hello is not signed by the phone's signing key") from None
        return hello


def confirmation_code(link: Link, hello: Hello, doorbell_nonce: bytes) -> str:
    """Six digits both sides show (PROTOCOL.md section 4), as ``123 456``."""
    transcript = hashlib.sha256(
        b"".join(
            [
                b"doorbell enroll v1 transcript\0",
                link.device.device_id,
                link.keys.window_id,
                hello.nonce,
                doorbell_nonce,
                hello.identity.key.raw,
                hello.identity.signing.raw,
                hello.name.encode(),
            ]
        )
    ).digest()
    mac = hmac.digest(link.keys.code, transcript, "sha256")
    number = int.from_bytes(mac[:8], "big") % 1_000_000
    return f"{number // 1000:03d} {number % 1000:03d}"
