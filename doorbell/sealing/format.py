"""Byte layout of a sealed object (docs/FORMAT.md): building and hostile-input parsing.

Nothing here touches a key; the sealer and reader add the cryptography.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import struct
from collections.abc import Callable
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
# A device durably reserves sequence numbers in blocks of this many; after an unclean
# stop it skips at most the rest of one block, so no restart notice may skip more.
RESERVATION_BLOCK = 1024

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


# Built once: json.dumps with options builds an encoder on every call.
_META_ENCODER = json.JSONEncoder(
    separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
)


def encode_meta(meta: dict[str, Any]) -> bytes:
    """Compact JSON; NaN and infinities are not JSON, so they are refused."""
    encoded = _META_ENCODER.encode(meta).encode()
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


# Doorbell writers pad every payload but a media segment's to this size or a doubling of
# it (FORMAT.md section 4): one size for events, notices, keyrings and init segments, big
# enough for a 640-pixel camera snapshot, so a bucket cannot tell them apart by size.
SIZE_CLASS = 64 * 1024


def padded_payload_len(kind: Kind, length: int) -> int:
    """The length Doorbell pads a payload of ``length`` bytes to; readers accept any."""
    if kind is Kind.SEGMENT:
        return padme(length)
    size = SIZE_CLASS
    while size < length:
        size *= 2
    # A payload near the 64 MiB limit stops at the largest size a reader accepts.
    return min(size, MAX_CIPHERTEXT - TAG_LEN)


def decode_inner(plaintext: bytes | bytearray | memoryview) -> Inner:
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
    if body_len > MAX_BODY:
        raise MalformedObject(f"payload: body length {body_len} exceeds {MAX_BODY}")
    if offset + body_len > len(plaintext):
        raise MalformedObject(f"payload: body length {body_len} runs past the end")
    view = memoryview(plaintext)
    padding = view[offset + body_len :]
    if padding.nbytes and padding.tobytes().count(0) != padding.nbytes:
        raise MalformedObject("payload: padding is not all zero")
    return Inner(kind, epoch, time_us, meta, view[offset : offset + body_len])


def loads_strict(raw: bytes | bytearray | memoryview, fail: Callable[[str], Exception]) -> Any:
    """Parse JSON as every Doorbell reader must (FORMAT.md section 4): strict UTF-8 without a
    byte-order mark, no NaN or infinities, no number that rounds to an infinity as a double
    (1e999, or an integer of 2^1024 or more: a JavaScript reader would read Infinity), no
    duplicate keys, no unpaired surrogates. ``fail(reason)`` makes the error."""
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8: byte {exc.start} ({exc.reason})") from None
    if text.startswith("\ufeff"):
        raise fail("starts with a byte-order mark")
    try:
        document = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_finite_int,
            object_pairs_hook=_unique_keys,
        )
    except _StrictJsonError as exc:
        raise fail(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise fail(f"not JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits; depth
        raise fail(f"not JSON: {exc.__class__.__name__}: {exc}") from None
    _check_strings(document, fail)
    return document


class _StrictJsonError(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise _StrictJsonError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _StrictJsonError(f"number {text[:40]} does not fit a double")
    return value


def _finite_int(text: str) -> int:
    value = int(text)
    if not _fits_double(value):
        raise _StrictJsonError(f"an integer of {len(text)} digits does not fit a double")
    return value


def _fits_double(value: int | float) -> bool:
    """Whether IEEE 754 round-to-nearest makes ``value`` a finite double (FORMAT.md section 4)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _StrictJsonError(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return document


def _check_strings(document: Any, fail: Callable[[str], Exception]) -> None:
    # Escapes such as "\ud800" decode to unpaired surrogates, which are not Unicode text.
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise fail(f"string {item[:40]!r} holds an unpaired surrogate") from None


def _decode_meta(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}

    def fail(reason: str) -> MalformedObject:
        return MalformedObject(f"payload: metadata: {reason}")

    meta = loads_strict(raw, fail)
    if not isinstance(meta, dict):
        raise MalformedObject("payload: metadata is not a JSON object")
    return meta


# --- meta by kind (FORMAT.md section 4.1): what a reader that uses a kind must reject --------

_ID = re.compile(r"[0-9a-f]{32}")
_HASH = re.compile(r"[0-9a-f]{64}")
NOTICES = ("clip-end", "restart", "discarded")


def check_meta(kind: Kind, meta: dict[str, Any]) -> None:
    """Raise MalformedObject naming the key when ``meta`` lacks a key ``kind`` requires or
    holds one of the wrong type. Unknown keys are allowed: readers ignore them."""
    where = f"{kind.name.lower()} meta"
    if kind is not Kind.NOTICE:
        _check_keys(meta, where, _KEYS[kind])
        return
    notice = _field(meta, where, "notice", _NOTICE)
    where = f"{notice} notice meta"
    _check_keys(meta, where, _NOTICE_KEYS[notice])
    if notice == "restart":
        if meta["previous"] is not None:
            _check_keys(
                meta["previous"], f"{where}: previous", (("seq", _U64), ("hash", _HASH_HEX))
            )
        _check_keys(
            meta["skipped"], f"{where}: skipped", (("first", _U64), ("last", _INDEX_OR_BEFORE))
        )
    elif notice == "discarded":
        for number, item in enumerate(meta["ranges"]):
            at = f"{where}: range {number}"
            if not isinstance(item, dict):
                raise MalformedObject(f"{at} is not an object")
            _check_keys(item, at, (("first", _U64), ("last", _U64), ("last_hash", _HASH_HEX)))


# A rule: what a value must satisfy, and how an error message says it.
_Rule = tuple[Callable[[Any], bool], str]


def _check_keys(meta: dict[str, Any], where: str, keys: tuple[tuple[str, _Rule], ...]) -> None:
    for key, rule in keys:
        if key.endswith("?"):
            if key[:-1] in meta:
                _field(meta, where, key[:-1], rule)
        else:
            _field(meta, where, key, rule)


def _field(meta: dict[str, Any], where: str, key: str, rule: _Rule) -> Any:
    if key not in meta:
        raise MalformedObject(f"{where}: {key!r} is missing")
    value = meta[key]
    valid, what = rule
    if not valid(value):
        raise MalformedObject(f"{where}: {key!r} is {json.dumps(value)[:60]}, must be {what}")
    return value


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and _fits_double(value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def _u64(value: Any) -> bool:
    return _is_int(value) and 0 <= value < 2**64


def _u32(value: Any) -> bool:
    return _is_int(value) and 0 <= value < 2**32


def _index_or_before(value: Any) -> bool:
    return _is_int(value) and -1 <= value < 2**64


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _positive_number(value: Any) -> bool:
    return _is_number(value) and value > 0


def _non_negative_number(value: Any) -> bool:
    return _is_number(value) and value >= 0


_ID_HEX: _Rule = (_is_id, "32 lower-case hex digits")
_ID_OR_EMPTY: _Rule = (lambda v: v == "" or _is_id(v), "32 lower-case hex digits or empty")
_HASH_HEX: _Rule = (_is_hash, "64 lower-case hex digits")
_STR: _Rule = (_is_str, "a string")
_NUMBER: _Rule = (_is_number, "a number")
_U64: _Rule = (_u64, "an integer in 0..2^64-1")
_INDEX_OR_BEFORE: _Rule = (_index_or_before, "an integer in -1..2^64-1")
_NOTICE: _Rule = (lambda v: v in NOTICES, " or ".join(NOTICES))
_OBJECT: _Rule = (lambda v: isinstance(v, dict), "an object")

# FORMAT.md section 4.1; a key ending in "?" is optional.
_KEYS: dict[Kind, tuple[tuple[str, _Rule], ...]] = {
    Kind.INIT: (
        ("stream", _ID_HEX),
        ("codec", _STR),
        ("width", (_positive_int, "an integer above 0")),
        ("height", (_positive_int, "an integer above 0")),
        ("fps", (_positive_number, "a number above 0")),
        ("camera?", _STR),
    ),
    Kind.SEGMENT: (
        ("stream", _ID_HEX),
        ("index", _U64),
        ("start", _NUMBER),
        ("duration", (_non_negative_number, "a number of at least 0")),
        ("frames", _U64),
    ),
    Kind.EVENT: (
        ("type", _STR),
        ("clip", _ID_HEX),
        ("stream", _ID_OR_EMPTY),
        ("first_index", _U64),
        ("position?", _NUMBER),
        ("camera?", _STR),
    ),
    Kind.KEYRING: (("epoch", (_u32, "an integer in 0..2^32-1")),),
}
_NOTICE_KEYS: dict[str, tuple[tuple[str, _Rule], ...]] = {
    "clip-end": (
        ("clip", _ID_HEX),
        ("stream", _ID_OR_EMPTY),
        ("last_index", _INDEX_OR_BEFORE),
        ("reason", _STR),
    ),
    "restart": (
        ("previous", (lambda v: v is None or isinstance(v, dict), "null or an object")),
        ("skipped", _OBJECT),
    ),
    "discarded": (
        ("reason", _STR),
        ("ranges", (lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list")),
    ),
}
