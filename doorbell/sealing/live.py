"""Live view's bytes (docs/FORMAT.md section 11), both sides' share: a session object that
hands a fresh session key to each viewer and carries the stream's init segment, and the
short fragments sealed under that key and signed by the device.

Every fragment is signed by the device: every viewer holds the session key, so without
the signature one viewer could forge fragments that another would accept."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from doorbell.sealing.errors import BadSignature, SealingError
from doorbell.sealing.format import loads_strict
from doorbell.sealing.keys import (
    DevicePublicKey,
    DeviceSigningKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    Suite,
)

VERSION = 1
SESSION_MAGIC = b"DBLS"
FRAGMENT_MAGIC = b"DBLF"
SESSION_ID_LEN = 16
KEY_LEN = 32
TAG_LEN = 16
SIGNATURE_LEN = 64
MAX_VIEWERS = 16
MAX_SESSION = 1024 * 1024  # a session object, init segment included
MAX_FRAGMENT = 4 * 1024 * 1024  # one ~100 ms chunk; a keyframe of a 1080p stream fits
KEYFRAME = 0x01
END = 0x02  # the session's last fragment: no media, the doorbell ended it
_RECIPIENT_CONTEXT = b"doorbell/v1 live recipient\0"
_HPKE_INFO_CONTEXT = b"doorbell/v1 live key\0"
_SESSION_CONTEXT = b"doorbell live session v1\0"
_FRAGMENT_CONTEXT = b"doorbell live fragment v1\0"
# magic, version, reserved, device id, session id, stanza count
_SESSION_HEAD = struct.Struct(">4sBB32s16sB")
_STANZA_HEAD = struct.Struct(">B16s")
# magic, version, flags (0), session id, counter
_FRAGMENT_HEAD = struct.Struct(">4sBB16sQ")
_INNER = struct.Struct(">BQ")  # flags (keyframe), capture time in microseconds


class LiveError(SealingError):
    """Bytes that are not a valid session object or fragment for this viewer."""


def viewer_tag(device_id: bytes, session: bytes, suite: Suite, public_key: bytes) -> bytes:
    material = _RECIPIENT_CONTEXT + device_id + session + bytes([suite]) + public_key
    return hashlib.sha256(material).digest()[:16]


def _hpke_info(device_id: bytes, session: bytes, suite: Suite, tag: bytes) -> bytes:
    return _HPKE_INFO_CONTEXT + device_id + session + bytes([suite]) + tag


def _nonce(counter: int) -> bytes:
    """Fragment ``counter``'s AES-GCM nonce; counter 0 is the session object's own."""
    return bytes(4) + counter.to_bytes(8, "big")


@dataclass(frozen=True)
class Fragment:
    counter: int
    capture_us: int
    keyframe: bool
    data: bytes
    end: bool = False


class LiveSealer:
    """The device's side of one session: seals fragments in order under its key."""

    def __init__(self, device: DeviceSigningKey, session: bytes, key: bytes) -> None:
        self._device = device
        self.session = session
        self._aead = AESGCM(key)
        self._counter = 0  # the session object used nonce 0

    def seal(self, data: bytes | memoryview, capture_us: int, keyframe: bool) -> bytes:
        return self._seal(KEYFRAME if keyframe else 0, capture_us, data)

    def end(self) -> bytes:
        """The session's last fragment: it says the doorbell ended the session."""
        return self._seal(END, int(time.time() * 1_000_000), b"")

    def _seal(self, flags: int, capture_us: int, data: bytes | memoryview) -> bytes:
        self._counter += 1
        head = _FRAGMENT_HEAD.pack(FRAGMENT_MAGIC, VERSION, 0, self.session, self._counter)
        inner = _INNER.pack(flags, capture_us) + bytes(data)
        body = head + self._aead.encrypt(_nonce(self._counter), inner, head)
        return body + self._device.sign(_FRAGMENT_CONTEXT + hashlib.sha256(body).digest())


def start_session(
    device: DeviceSigningKey,
    viewers: Sequence[RecipientPublicKey],
    details: dict[str, Any],
    *,
    session: bytes | None = None,
    key: bytes | None = None,
) -> tuple[bytes, LiveSealer]:
    """The session object for ``viewers`` and the sealer of its fragments. ``details``
    (stream parameters, init segment, start time, viewer names) is encrypted under the
    session key: the broker learns only how many viewers there are, of which suites."""
    if not 1 <= len(viewers) <= MAX_VIEWERS:
        raise LiveError(f"a session has 1 to {MAX_VIEWERS} viewers")
    session = os.urandom(SESSION_ID_LEN) if session is None else session
    key = os.urandom(KEY_LEN) if key is None else key
    device_id = device.public_key.device_id
    parts = [_SESSION_HEAD.pack(SESSION_MAGIC, VERSION, 0, device_id, session, len(viewers))]
    for viewer in viewers:
        tag = viewer_tag(device_id, session, viewer.suite, viewer.raw)
        info = _hpke_info(device_id, session, viewer.suite, tag)
        wrapped = viewer.suite.hpke().encrypt(key, viewer.hpke_key(), info=info)
        parts += [_STANZA_HEAD.pack(viewer.suite, tag), wrapped]
    head = b"".join(parts)
    plaintext = json.dumps(details, separators=(",", ":"), ensure_ascii=False).encode()
    body = head + AESGCM(key).encrypt(_nonce(0), plaintext, head)
    signed = body + device.sign(_SESSION_CONTEXT + hashlib.sha256(body).digest())
    if len(signed) > MAX_SESSION:
        raise LiveError(f"the session object is {len(signed)} bytes, more than {MAX_SESSION}")
    return signed, LiveSealer(device, session, key)


class ViewerSession:
    """A phone's side of one session: opens fragments, each once, in increasing order."""

    def __init__(self, device: DevicePublicKey, session: bytes, key: bytes, details: Any) -> None:
        self.device = device
        self.session = session
        self.details = details
        self._aead = AESGCM(key)
        self.last = 0

    def open(self, data: bytes) -> Fragment:
        """The fragment, or LiveError saying why it is refused: malformed, another
        session's, not signed by the device, altered, or not newer than the last."""
        if not _FRAGMENT_HEAD.size + _INNER.size + TAG_LEN + SIGNATURE_LEN <= len(data):
            raise LiveError("malformed: too short for a fragment")
        if len(data) > MAX_FRAGMENT:
            raise LiveError(f"malformed: a {len(data)}-byte fragment")
        magic, version, flags, session, counter = _FRAGMENT_HEAD.unpack_from(data)
        if magic != FRAGMENT_MAGIC or version != VERSION or flags:
            raise LiveError("malformed: not a version 1 live fragment")
        if session != self.session:
            raise LiveError("foreign: a fragment of another session")
        body, signature = data[:-SIGNATURE_LEN], data[-SIGNATURE_LEN:]
        try:
            self.device.verify(signature, _FRAGMENT_CONTEXT + hashlib.sha256(body).digest())
        except BadSignature:
            raise LiveError("forged: not signed by the doorbell") from None
        if counter <= self.last:
            raise LiveError(f"replayed or late: fragment {counter} after {self.last}")
        head = body[: _FRAGMENT_HEAD.size]
        try:
            inner = self._aead.decrypt(_nonce(counter), body[_FRAGMENT_HEAD.size :], head)
        except InvalidTag:
            raise LiveError("forged: signed, yet does not decrypt") from None
        flags_inner, capture_us = _INNER.unpack_from(inner)
        if flags_inner & ~(KEYFRAME | END):
            raise LiveError("malformed: unknown fragment flags")
        self.last = counter
        return Fragment(
            counter,
            capture_us,
            bool(flags_inner & KEYFRAME),
            inner[_INNER.size :],
            bool(flags_inner & END),
        )


def open_session(
    data: bytes, device: DevicePublicKey, identity: RecipientPrivateKey
) -> ViewerSession:
    """Check a session object's signature and open it with this phone's key."""
    if not _SESSION_HEAD.size + TAG_LEN + SIGNATURE_LEN <= len(data) <= MAX_SESSION:
        raise LiveError("malformed: not a session object")
    magic, version, reserved, device_id, session, count = _SESSION_HEAD.unpack_from(data)
    if magic != SESSION_MAGIC or version != VERSION or reserved:
        raise LiveError("malformed: not a version 1 session object")
    if device_id != device.device_id:
        raise LiveError("foreign: a session of another doorbell")
    body, signature = data[:-SIGNATURE_LEN], data[-SIGNATURE_LEN:]
    try:
        device.verify(signature, _SESSION_CONTEXT + hashlib.sha256(body).digest())
    except BadSignature:
        raise LiveError("forged: the session object is not signed by the doorbell") from None
    offset = _SESSION_HEAD.size
    mine = identity.public_key()
    own_tag = viewer_tag(device_id, session, mine.suite, mine.raw)
    key = None
    for _ in range(count):
        if offset + _STANZA_HEAD.size > len(body):
            raise LiveError("malformed: the stanzas are cut short")
        suite_byte, tag = _STANZA_HEAD.unpack_from(body, offset)
        try:
            suite = Suite(suite_byte)
        except ValueError:
            raise LiveError(f"malformed: unknown suite {suite_byte}") from None
        offset += _STANZA_HEAD.size
        wrapped = body[offset : offset + suite.stanza_len]
        offset += suite.stanza_len
        if key is None and suite is mine.suite and tag == own_tag:
            info = _hpke_info(device_id, session, suite, tag)
            try:
                key = suite.hpke().decrypt(wrapped, identity.hpke_key(), info=info)
            except (InvalidTag, ValueError):
                raise LiveError("forged: this phone's stanza does not open") from None
    if key is None:
        raise LiveError("not for us: this phone is not a viewer of the session")
    try:
        plaintext = AESGCM(key).decrypt(_nonce(0), body[offset:], body[:offset])
    except InvalidTag:
        raise LiveError("forged: the session details do not decrypt") from None
    details = loads_strict(plaintext, lambda why: LiveError(f"malformed details: {why}"))
    return ViewerSession(device, session, key, details)
