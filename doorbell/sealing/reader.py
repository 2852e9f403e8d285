"""The reader: verifies a sealed object against a pinned device key, then opens it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from doorbell.sealing import format as fmt
from doorbell.sealing.errors import (
    BadSignature,
    DecryptionFailed,
    NotARecipient,
    UntrustedDevice,
)
from doorbell.sealing.format import Envelope, Kind
from doorbell.sealing.keys import DevicePublicKey, RecipientPrivateKey

# RFC 8032: the group order L and the field prime p of Ed25519.
HpkeSecret = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey

ED25519_L = 2**252 + 27742317777372353535851777893976580429
_P = 2**255 - 19


def require_strict_ed25519(signature: bytes, public_key: bytes) -> None:
    """RFC 8032 section 5.1.7 strictness that OpenSSL does not fully enforce: S < L, and
    a canonical public key A (y < p; x = 0 without the sign bit). OpenSSL rejects S >= L
    itself, but verifies under a non-canonical A such as y = p + 1 (the identity point,
    under which anyone can sign anything)."""
    if int.from_bytes(signature[32:64], "little") >= ED25519_L:
        raise BadSignature("device signature is not canonical (S is not below the group order)")
    check_canonical_ed25519_key(public_key)


def check_canonical_ed25519_key(public_key: bytes) -> None:
    """Raise BadSignature unless ``public_key`` is the one canonical encoding of its point."""
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    sign = public_key[31] >> 7
    if y >= _P or (sign and y in (1, _P - 1)):
        raise BadSignature("device public key is not a canonical Ed25519 encoding")


@dataclass(frozen=True, slots=True)
class Opened:
    """A verified, decrypted object."""

    device_id: bytes
    seq: int
    prev: bytes
    chain_hash: bytes
    kind: Kind
    epoch: int
    time_us: int
    meta: dict[str, Any]
    body: memoryview

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_us / 1_000_000, UTC)


class Scratch:
    """One buffer to open object after object into. A fresh buffer per object costs its
    size in new pages, mapped and zeroed by the kernel, as much again as decrypting them;
    this one grows to the largest object and is then only overwritten."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def view(self, length: int) -> memoryview:
        if len(self._buffer) < length:
            # A new buffer, not a resize: views of the old one may still be alive.
            self._buffer = bytearray(length)
        return memoryview(self._buffer)[:length]


class Reader:
    """What a phone holds: its secret key(s) and the doorbells it has pinned.

    ``verify`` checks structure and the device signature and never touches a
    secret; ``open`` does that first and only then unwraps and decrypts.
    """

    def __init__(
        self,
        identities: Sequence[RecipientPrivateKey],
        trusted: Iterable[DevicePublicKey],
    ) -> None:
        # Each secret expanded once (for the hybrid suite, the ML-KEM key from its seed):
        # per object that would cost more than the HPKE decapsulation itself.
        self._identities = [(key.hpke_key(), key.public_key()) for key in identities]
        self._trusted = {device.device_id: device for device in trusted}

    @property
    def devices(self) -> tuple[DevicePublicKey, ...]:
        """The doorbells this reader trusts."""
        return tuple(self._trusted.values())

    def device(self, device_id: bytes) -> DevicePublicKey:
        try:
            return self._trusted[device_id]
        except KeyError:
            raise UntrustedDevice(
                f"signed by device {device_id.hex()[:16]}, which this phone does not trust"
            ) from None

    def verify(self, data: bytes | bytearray | memoryview) -> Envelope:
        envelope = fmt.parse_envelope(data)
        device = self.device(envelope.device_id)
        require_strict_ed25519(envelope.signature, device.raw)
        with memoryview(envelope.data) as view:
            device.verify(envelope.signature, fmt.signed_message(view[: envelope.signed_len]))
        return envelope

    def open(self, data: bytes | bytearray | memoryview) -> Opened:
        return self.open_envelope(self.verify(data))

    def open_envelope(self, envelope: Envelope, scratch: Scratch | None = None) -> Opened:
        """Open an envelope that ``verify`` returned. With ``scratch``, the payload is
        decrypted into it, and the opened object's body lasts until the next object is
        opened into the same scratch."""
        data_key = self._unwrap(envelope)
        length = envelope.signed_len - envelope.header_len - fmt.TAG_LEN
        plaintext = bytearray(length) if scratch is None else scratch.view(length)
        try:
            AESGCM(data_key).decrypt_into(
                envelope.nonce, envelope.ciphertext, envelope.header, plaintext
            )
        except InvalidTag:
            raise DecryptionFailed(f"object {envelope.seq}: payload does not decrypt") from None
        inner = fmt.decode_inner(plaintext)
        return Opened(
            device_id=envelope.device_id,
            seq=envelope.seq,
            prev=envelope.prev,
            chain_hash=envelope.chain_hash,
            kind=inner.kind,
            epoch=inner.epoch,
            time_us=inner.time_us,
            meta=inner.meta,
            body=inner.body,
        )

    def can_open(self, envelope: Envelope) -> bool:
        """Whether one of this reader's keys has a stanza in ``envelope``."""
        return any(True for _ in self._matches(envelope))

    def _matches(self, envelope: Envelope) -> Iterable[tuple[HpkeSecret, fmt.Stanza]]:
        for secret, public in self._identities:
            tag = fmt.recipient_tag(envelope.device_id, envelope.seq, public.suite, public.raw)
            for stanza in envelope.stanzas:
                if stanza.suite is public.suite and stanza.tag == tag:
                    yield secret, stanza

    def _unwrap(self, envelope: Envelope) -> bytes:
        matched = False
        for secret, stanza in self._matches(envelope):
            matched = True
            info = fmt.hpke_info(envelope.device_id, envelope.seq, stanza.suite, stanza.tag)
            try:
                data_key = stanza.suite.hpke().decrypt(stanza.wrapped, secret, info=info)
            except (InvalidTag, ValueError):
                continue
            if len(data_key) == 32:
                return data_key
        if matched:
            # Signed by the device, addressed to us, yet unopenable: the object is invalid.
            raise DecryptionFailed(
                f"object {envelope.seq}: the stanza for this phone does not open"
            )
        raise NotARecipient(f"object {envelope.seq} is not sealed to this phone's key")
