"""Byte layout of a sealed object (docs/FORMAT.md): building and hostile-input parsing.

Nothing here touches a key; the sealer and reader add the cryptography.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from doorbell.sealing.errors import MalformedObject
from doorbell.sealing.keys import Suite

MAGIC = b"\x89DBELL\r\n"
VERSION = 1
NONCE_LEN = 12
TAG_LEN = 16
SIGNATURE_LEN = 64
DIGEST_LEN = 32
RECIPIENT_TAG_LEN = 16
MAX_STANZAS = 64
MAX_META = 16 * 1024
MAX_BODY = 64 * 1024 * 1024

# magic, version, flags, device id, seq, prev, nonce, stanza count
_FIXED = struct.Struct(">8sBB32sQ32s12sB")
FIXED_HEADER_LEN = _FIXED.size
_STANZA_HEAD = struct.Struct(">B16s")
_CT_LEN = struct.Struct(">Q")
# kind, reserved, keyring epoch, time (µs since the Unix epoch), meta length
_INNER = struct.Struct(">BBIqH")
_BODY_LEN = struct.Struct(">I")
MIN_INNER = _INNER.size + _BODY_LEN.size

SIGNATURE_CONTEXT = b"doorbell/v1 object signature\x00"
RECIPIENT_CONTEXT = b"doorbell/v1 recipient\x00"
HPKE_INFO_CONTEXT = b"doorbell/v1 data key\x00"
ZERO_PREV = bytes(DIGEST_LEN)


class Kind(enum.IntEnum):
    """What a sealed object carries. Encrypted: only recipients learn it."""

    INIT = 1
    SEGMENT = 2
    EVENT = 3
    KEYRING = 4
    NOTICE = 5


def padme(length: int) -> int:
    """Padded length (Padmé): leaks O(log log n) bits of the size for at most 12% overhead."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    mantissa_bits = exponent.bit_length()
    mask = (1 << (exponent - mantissa_bits)) - 1
    return (length + mask) & ~mask


MAX_CIPHERTEXT = padme(MIN_INNER + MAX_META + MAX_BODY) + TAG_LEN
MAX_OBJECT = (
    _FIXED.size
    + MAX_STANZAS * (_STANZA_HEAD.size + max(s.stanza_len for s in Suite))
    + _CT_LEN.size
    + MAX_CIPHERTEXT
    + SIGNATURE_LEN
)


def recipient_tag(device_id: bytes, seq: int, suite: Suite, public_key: bytes) -> bytes:
    """Per-object recipient id: unlinkable across objects without the public key."""
    material = RECIPIENT_CONTEXT + device_id + seq.to_bytes(8, "big") + bytes([suite]) + public_key
    return hashlib.sha256(material).digest()[:RECIPIENT_TAG_LEN]


def hpke_info(device_id: bytes, seq: int, suite: Suite, tag: bytes) -> bytes:
    """HPKE info: binds a wrapped data key to this format, device, object and stanza."""
    return HPKE_INFO_CONTEXT + device_id + seq.to_bytes(8, "big") + bytes([suite]) + tag


def signed_message(signed_bytes: bytes | memoryview) -> bytes:
    """What Ed25519 signs: a context string and SHA-256 of every byte before the signature."""
    return SIGNATURE_CONTEXT + hashlib.sha256(signed_bytes).digest()


def chain_hash(signature: bytes) -> bytes:
    """The ``prev`` value the next object carries."""
    return hashlib.sha256(signature).digest()


@dataclass(frozen=True, slots=True)
class Stanza:
    suite: Suite
    tag: bytes
    wrapped: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed, not yet verified, sealed object. Slices refer to ``data``."""

    data: bytes | bytearray
    device_id: bytes
    seq: int
    prev: bytes
    nonce: bytes
    stanzas: tuple[Stanza, ...]
    header_len: int
    signed_len: int

    @property
    def header(self) -> memoryview:
        return memoryview(self.data)[: self.header_len]

    @property
    def ciphertext(self) -> memoryview:
        return memoryview(self.data)[self.header_len : self.signed_len]

    @property
    def signature(self) -> bytes:
        return bytes(self.data[self.signed_len :])

    @property
    def chain_hash(self) -> bytes:
        return chain_hash(self.signature)


def build_header(
    device_id: bytes,
    seq: int,
    prev: bytes,
    nonce: bytes,
    stanzas: list[Stanza],
    ciphertext_len: int,
) -> bytes:
    if not 1 <= len(stanzas) <= MAX_STANZAS:
        raise ValueError(f"an object needs 1 to {MAX_STANZAS} recipients, got {len(stanzas)}")
    parts = [_FIXED.pack(MAGIC, VERSION, 0, device_id, seq, prev, nonce, len(stanzas))]
    for stanza in stanzas:
        if len(stanza.wrapped) != stanza.suite.stanza_len:
            raise ValueError(f"{stanza.suite.label} stanza must be {stanza.suite.stanza_len} bytes")
        parts.append(_STANZA_HEAD.pack(stanza.suite, stanza.tag))
        parts.append(stanza.wrapped)
    parts.append(_CT_LEN.pack(ciphertext_len))
    return b"".join(parts)


def parse_envelope(data: bytes | bytearray | memoryview) -> Envelope:
    """Parse the cleartext structure, checking every length and bound. No cryptography."""
    if not isinstance(data, bytes | bytearray):
        data = bytes(data)
    _check_magic(data)
    if len(data) < FIXED_HEADER_LEN:
        raise MalformedObject(f"truncated header: {len(data)} bytes, need {FIXED_HEADER_LEN}")
    _, version, flags, device_id, seq, prev, nonce, count = _FIXED.unpack_from(data)
    if version != VERSION:
        raise MalformedObject(f"unsupported version {version} (this reader knows {VERSION})")
    if flags != 0:
        raise MalformedObject(f"reserved flags byte is {flags:#04x}, must be 0")
    if not 1 <= count <= MAX_STANZAS:
        raise MalformedObject(f"stanza count {count} is outside 1..{MAX_STANZAS}")
    offset = FIXED_HEADER_LEN
    stanzas = []
    for index in range(count):
        if offset + _STANZA_HEAD.size > len(data):
            raise MalformedObject(f"stanza {index}: truncated at byte {offset}")
        suite_byte, tag = _STANZA_HEAD.unpack_from(data, offset)
        try:
            suite = Suite(suite_byte)
        except ValueError:
            raise MalformedObject(f"stanza {index}: unknown suite {suite_byte}") from None
        offset += _STANZA_HEAD.size
        end = offset + suite.stanza_len
        if end > len(data):
            raise MalformedObject(f"stanza {index}: truncated at byte {offset}")
        stanzas.append(Stanza(suite, tag, bytes(data[offset:end])))
        offset = end
    if offset + _CT_LEN.size > len(data):
        raise MalformedObject(f"ciphertext length: truncated at byte {offset}")
    (ct_len,) = _CT_LEN.unpack_from(data, offset)
    offset += _CT_LEN.size
    if not MIN_INNER + TAG_LEN <= ct_len <= MAX_CIPHERTEXT:
        raise MalformedObject(
            f"ciphertext length {ct_len} is outside {MIN_INNER + TAG_LEN}..{MAX_CIPHERTEXT}"
        )
    expected = offset + ct_len + SIGNATURE_LEN
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing bytes"
        raise MalformedObject(f"{problem}: object is {len(data)} bytes, header says {expected}")
    return Envelope(
        data=data,
        device_id=bytes(device_id),
        seq=seq,
        prev=prev,
        nonce=nonce,
        stanzas=tuple(stanzas),
        header_len=offset,
        signed_len=offset + ct_len,
    )


def _check_magic(data: bytes | bytearray) -> None:
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise MalformedObject(f"truncated: {len(data)} bytes, shorter than the magic")
    if data[: len(MAGIC)] != MAGIC:
        raise MalformedObject("not a Doorbell sealed object (bad magic)")


@dataclass(frozen=True, slots=True)
class Inner:
    """The decrypted payload's fields."""

    kind: Kind
    epoch: int
    time_us: int
    meta: dict[str, Any]
    body: memoryview


def encode_meta(meta: dict[str, Any]) -> bytes:
    """Compact JSON; NaN and infinities are not JSON, so they are refused."""
    encoded = json.dumps(
        meta, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode()
    if len(encoded) > MAX_META:
        raise ValueError(f"metadata is {len(encoded)} bytes, limit {MAX_META}")
    return encoded


def check_payload(epoch: int, time_us: int, body_len: int) -> None:
    """Raise ValueError for a payload that cannot be encoded, before anything is spent."""
    if body_len > MAX_BODY:
        raise ValueError(f"body is {body_len} bytes, limit {MAX_BODY}")
    if not -(2**63) <= time_us < 2**63:
        raise ValueError(f"time {time_us} does not fit a signed 64-bit integer")
    if not 0 <= epoch < 2**32:
        raise ValueError(f"keyring epoch {epoch} does not fit 32 bits")


def inner_prefix(kind: Kind, epoch: int, time_us: int, meta: bytes, body_len: int) -> bytes:
    """Everything of the plaintext before the body."""
    check_payload(epoch, time_us, body_len)
    return _INNER.pack(kind, 0, epoch, time_us, len(meta)) + meta + _BODY_LEN.pack(body_len)


def padded_inner_len(prefix_len: int, body_len: int) -> int:
    return padme(prefix_len + body_len)


def decode_inner(plaintext: bytes | bytearray) -> Inner:
    """Parse a decrypted payload. It is authenticated, but parse it as strictly anyway."""
    if len(plaintext) < MIN_INNER:
        raise MalformedObject(f"payload is {len(plaintext)} bytes, shorter than {MIN_INNER}")
    kind_byte, reserved, epoch, time_us, meta_len = _INNER.unpack_from(plaintext)
    try:
        kind = Kind(kind_byte)
    except ValueError:
        raise MalformedObject(f"payload: unknown kind {kind_byte}") from None
    if reserved:
        raise MalformedObject("payload: reserved byte is not 0")
    if meta_len > MAX_META:
        raise MalformedObject(f"payload: metadata length {meta_len} exceeds {MAX_META}")
    offset = _INNER.size
    if offset + meta_len + _BODY_LEN.size > len(plaintext):
        raise MalformedObject("payload: metadata runs past the end")
    meta = _decode_meta(bytes(plaintext[offset : offset + meta_len]))
    offset += meta_len
    (body_len,) = _BODY_LEN.unpack_from(plaintext, offset)
    offset += _BODY_LEN.size
    if body_len > MAX_BODY or offset + body_len > len(plaintext):
        raise MalformedObject(f"payload: body length {body_len} runs past the end")
    view = memoryview(plaintext)
    padding = view[offset + body_len :]
    if padding.nbytes and padding.tobytes().count(0) != padding.nbytes:
        raise MalformedObject("payload: padding is not all zero")
    return Inner(kind, epoch, time_us, meta, view[offset : offset + body_len])


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _decode_meta(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        meta = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise MalformedObject(f"payload: metadata is not UTF-8 JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise MalformedObject("payload: metadata is not a JSON object")
    return meta
