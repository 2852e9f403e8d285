"""Key types, their self-describing text form, and key files.

A key string is ``<prefix><base32(raw || checksum)>`` where the prefix names the
kind and suite, base32 is RFC 4648 lower case without padding, and the checksum
is the first 4 bytes of SHA-256(prefix || raw). See docs/FORMAT.md, "Key strings".
"""

from __future__ import annotations

import base64
import enum
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from doorbell.sealing.durable import write_atomic
from doorbell.sealing.errors import BadSignature, KeyFileError, KeyStringError

CHECKSUM_LEN = 4
_B32_ALPHABET = set("abcdefghijklmnopqrstuvwxyz234567")


class Suite(enum.IntEnum):
    """HPKE suites a recipient can use; the value is the suite byte on the wire."""

    X25519 = 1
    MLKEM768_X25519 = 2

    @property
    def label(self) -> str:
        """The name users type: ``x25519`` or ``mlkem768-x25519``."""
        return _SUITE_LABELS[self]

    @classmethod
    def from_label(cls, label: str) -> Suite:
        for suite, name in _SUITE_LABELS.items():
            if name == label:
                return suite
        known = ", ".join(_SUITE_LABELS.values())
        raise KeyStringError(f"unknown suite {label!r}; expected one of: {known}")

    @property
    def post_quantum(self) -> bool:
        """Whether a data key wrapped with this suite stays safe from a quantum computer
        that recorded it: X25519 alone falls to Shor's algorithm, ML-KEM-768 does not."""
        return self is Suite.MLKEM768_X25519

    @property
    def public_key_len(self) -> int:
        return 32 if self is Suite.X25519 else 1184 + 32

    @property
    def private_key_len(self) -> int:
        return 32 if self is Suite.X25519 else 64 + 32

    @property
    def stanza_len(self) -> int:
        """Bytes of HPKE output for a wrapped 32-byte data key: enc || ct || tag."""
        return (32 if self is Suite.X25519 else 1120) + 32 + 16

    def hpke(self) -> hpke.Suite:
        kem = hpke.KEM.X25519 if self is Suite.X25519 else hpke.KEM.MLKEM768_X25519
        return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


_SUITE_LABELS = {Suite.X25519: "x25519", Suite.MLKEM768_X25519: "mlkem768-x25519"}
_SUITE_TAGS = {Suite.X25519: "x25519", Suite.MLKEM768_X25519: "mlkem768x25519"}

PUBLIC_PREFIX = {suite: f"dbpub-{tag}-" for suite, tag in _SUITE_TAGS.items()}
SECRET_PREFIX = {suite: f"dbsec-{tag}-" for suite, tag in _SUITE_TAGS.items()}
DEVICE_PUBLIC_PREFIX = "dbdev-ed25519-"
DEVICE_SECRET_PREFIX = "dbdevsec-ed25519-"

_KIND_NAMES = {
    **{p: f"phone public key ({s.label})" for s, p in PUBLIC_PREFIX.items()},
    **{p: f"phone secret key ({s.label})" for s, p in SECRET_PREFIX.items()},
    DEVICE_PUBLIC_PREFIX: "doorbell device public key",
    DEVICE_SECRET_PREFIX: "doorbell device secret key",
}


def encode_key_string(prefix: str, raw: bytes) -> str:
    checksum = hashlib.sha256(prefix.encode() + raw).digest()[:CHECKSUM_LEN]
    return prefix + base64.b32encode(raw + checksum).decode().rstrip("=").lower()


def decode_key_string(text: str, expected: dict[str, int]) -> tuple[str, bytes]:
    """Parse a key string whose prefix is one of ``expected`` (prefix -> raw length).

    Whitespace anywhere is ignored (pasted keys wrap) and case does not matter.
    """
    compact = "".join(text.split()).lower()
    if not compact:
        raise KeyStringError("empty key string")
    by_length = sorted(_KIND_NAMES, key=len, reverse=True)
    prefix = next((p for p in by_length if compact.startswith(p)), None)
    wanted = " or ".join(_KIND_NAMES[p] for p in expected)
    if prefix is None:
        shown = compact[:24] + ("..." if len(compact) > 24 else "")
        raise KeyStringError(f"{shown!r} is not a Doorbell key string; expected a {wanted}")
    if prefix not in expected:
        raise KeyStringError(f"this is a {_KIND_NAMES[prefix]}, expected a {wanted}")
    body = compact[len(prefix) :]
    for position, char in enumerate(body):
        if char not in _B32_ALPHABET:
            raise KeyStringError(
                f"invalid character {char!r} at position {len(prefix) + position + 1} "
                f"of the {_KIND_NAMES[prefix]}"
            )
    raw_len = expected[prefix]
    want_chars = -(-(raw_len + CHECKSUM_LEN) * 8 // 5)
    if len(body) != want_chars:
        state = "truncated" if len(body) < want_chars else "too long"
        raise KeyStringError(
            f"{_KIND_NAMES[prefix]} is {state}: {len(prefix) + len(body)} characters, "
            f"expected {len(prefix) + want_chars}"
        )
    padded = body.upper() + "=" * (-len(body) % 8)
    try:
        decoded = base64.b32decode(padded)
    except ValueError as exc:
        raise KeyStringError(f"{_KIND_NAMES[prefix]} is not valid base32: {exc}") from None
    # b32decode ignores the unused low bits of the last character: re-encoding
    # catches a mistyped last character that only changed those bits.
    if base64.b32encode(decoded).decode().rstrip("=").lower() != body:
        raise KeyStringError(
            f"{_KIND_NAMES[prefix]} is not canonical base32: the last character is mistyped"
        )
    raw, checksum = decoded[:raw_len], decoded[raw_len:]
    if hashlib.sha256(prefix.encode() + raw).digest()[:CHECKSUM_LEN] != checksum:
        raise KeyStringError(
            f"{_KIND_NAMES[prefix]} checksum does not match: a character is mistyped"
        )
    return prefix, raw


@dataclass(frozen=True)
class RecipientPublicKey:
    """An enrolled phone's public key: what the doorbell wraps data keys to."""

    suite: Suite
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != self.suite.public_key_len:
            raise KeyStringError(
                f"{self.suite.label} public key must be {self.suite.public_key_len} bytes, "
                f"got {len(self.raw)}"
            )
        # A trial wrap refuses what from_public_bytes lets through, such as low-order
        # X25519 points: a key every seal would fail on must not reach the keyring.
        try:
            self.suite.hpke().encrypt(bytes(32), self.hpke_key(), info=b"doorbell key check")
        except ValueError:
            raise KeyStringError(
                f"{self.suite.label} public key is not a usable key (a degenerate point)"
            ) from None

    def hpke_key(self) -> x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey:
        if self.suite is Suite.X25519:
            return x25519.X25519PublicKey.from_public_bytes(self.raw)
        try:
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(self.raw[:1184]),
                x25519.X25519PublicKey.from_public_bytes(self.raw[1184:]),
            )
        except ValueError as exc:
            raise KeyStringError(f"invalid mlkem768-x25519 public key: {exc}") from None

    def to_string(self) -> str:
        return encode_key_string(PUBLIC_PREFIX[self.suite], self.raw)

    @classmethod
    def from_string(cls, text: str) -> RecipientPublicKey:
        expected = {p: s.public_key_len for s, p in PUBLIC_PREFIX.items()}
        prefix, raw = decode_key_string(text, expected)
        suite = next(s for s, p in PUBLIC_PREFIX.items() if p == prefix)
        return cls(suite, raw)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)


@dataclass(frozen=True)
class RecipientPrivateKey:
    """A phone's secret key. Only phones hold these; the doorbell never does."""

    suite: Suite
    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != self.suite.private_key_len:
            raise KeyStringError(
                f"{self.suite.label} secret key must be {self.suite.private_key_len} bytes"
            )

    @classmethod
    def generate(cls, suite: Suite) -> RecipientPrivateKey:
        if suite is Suite.X25519:
            return cls(suite, x25519.X25519PrivateKey.generate().private_bytes_raw())
        seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
        return cls(suite, seed + x25519.X25519PrivateKey.generate().private_bytes_raw())

    def hpke_key(self) -> x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey:
        if self.suite is Suite.X25519:
            return x25519.X25519PrivateKey.from_private_bytes(self.raw)
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(self.raw[:64]),
            x25519.X25519PrivateKey.from_private_bytes(self.raw[64:]),
        )

    def public_key(self) -> RecipientPublicKey:
        if self.suite is Suite.X25519:
            pub = x25519.X25519PrivateKey.from_private_bytes(self.raw).public_key()
            return RecipientPublicKey(self.suite, pub.public_bytes_raw())
        kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(self.raw[:64]).public_key()
        dh = x25519.X25519PrivateKey.from_private_bytes(self.raw[64:]).public_key()
        return RecipientPublicKey(self.suite, kem.public_bytes_raw() + dh.public_bytes_raw())

    def to_string(self) -> str:
        return encode_key_string(SECRET_PREFIX[self.suite], self.raw)

    @classmethod
    def from_string(cls, text: str) -> RecipientPrivateKey:
        expected = {p: s.private_key_len for s, p in SECRET_PREFIX.items()}
        prefix, raw = decode_key_string(text, expected)
        suite = next(s for s, p in SECRET_PREFIX.items() if p == prefix)
        return cls(suite, raw)


@dataclass(frozen=True)
class DevicePublicKey:
    """A doorbell's Ed25519 public key, which phones pin at enrolment."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise KeyStringError(f"device public key must be 32 bytes, got {len(self.raw)}")

    @property
    def device_id(self) -> bytes:
        """SHA-256 of the raw public key: the device id in every object header."""
        return hashlib.sha256(self.raw).digest()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            raise BadSignature("device signature does not verify") from None

    def to_string(self) -> str:
        return encode_key_string(DEVICE_PUBLIC_PREFIX, self.raw)

    @classmethod
    def from_string(cls, text: str) -> DevicePublicKey:
        return cls(decode_key_string(text, {DEVICE_PUBLIC_PREFIX: 32})[1])


class DeviceSigningKey:
    """The doorbell's Ed25519 key: signs every object it seals. Never leaves the device."""

    __slots__ = ("_key", "_public")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise KeyStringError("device secret key must be 32 bytes")
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        self._public = DevicePublicKey(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> DeviceSigningKey:
        return cls(ed25519.Ed25519PrivateKey.generate().private_bytes_raw())

    @property
    def public_key(self) -> DevicePublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def to_string(self) -> str:
        return encode_key_string(DEVICE_SECRET_PREFIX, self._key.private_bytes_raw())

    @classmethod
    def from_string(cls, text: str) -> DeviceSigningKey:
        return cls(decode_key_string(text, {DEVICE_SECRET_PREFIX: 32})[1])

    def __repr__(self) -> str:
        return f"DeviceSigningKey(public={self._public.fingerprint})"


def fingerprint(raw_public_key: bytes) -> str:
    """A short, readable fingerprint: 16 bytes of SHA-256 as colon-grouped hex."""
    digest = hashlib.sha256(raw_public_key).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def save_key_file(path: Path, key_string: str) -> None:
    """Write a key string atomically, mode 0600."""
    try:
        write_atomic(path, (key_string + "\n").encode(), mode=0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from None


def read_key_file(path: Path) -> str:
    """Read a key file's text, naming the file in any error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(data) > 16384:
        raise KeyFileError(f"key file {path} is {len(data)} bytes, too large for a key")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not a text key file") from None
