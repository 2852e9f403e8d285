"""Key types, their self-describing text form, and key files.

A key string is ``<prefix><base32(raw || checksum)>`` where the prefix names the
kind and suite, base32 is RFC 4648 lower case without padding, and the checksum
is the first 4 bytes of SHA-256(prefix || raw). See docs/FORMAT.md, "Key strings".
"""

from __future__ import annotations

import base64
import enum
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

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
        """Bytes of the secret key as phones now keep it: for the hybrid suite, the X-Wing
        seed (32 bytes), which expands into the 96-byte form of version 1."""
        return 32

    @property
    def identity_len(self) -> int:
        """Bytes of a phone identity: this suite's public key and an Ed25519 public key."""
        return self.public_key_len + 32

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
IDENTITY_PREFIX = {suite: f"dbid-{tag}-" for suite, tag in _SUITE_TAGS.items()}
# Phone secret keys: x25519's, the hybrid suite's X-Wing seed, and (read only) the hybrid
# suite's expanded 96-byte form of version 1.
SECRET_PREFIX = {Suite.X25519: "dbsec-x25519-", Suite.MLKEM768_X25519: "dbsec-xwing-"}
EXPANDED_SECRET_PREFIX = "dbsec-mlkem768x25519-"
EXPANDED_SECRET_LEN = 64 + 32
DEVICE_PUBLIC_PREFIX = "dbdev-ed25519-"
DEVICE_SECRET_PREFIX = "dbdevsec-ed25519-"
PHONE_VERIFY_PREFIX = "dbsig-ed25519-"
PHONE_SIGNING_PREFIX = "dbsigsec-ed25519-"
_XWING_SEED_LEN = 32

_KIND_NAMES = {
    **{p: f"phone public key ({s.label})" for s, p in PUBLIC_PREFIX.items()},
    **{p: f"phone identity ({s.label})" for s, p in IDENTITY_PREFIX.items()},
    **{p: f"phone secret key ({s.label})" for s, p in SECRET_PREFIX.items()},
    EXPANDED_SECRET_PREFIX: f"phone secret key ({Suite.MLKEM768_X25519.label}, expanded)",
    DEVICE_PUBLIC_PREFIX: "doorbell device public key",
    DEVICE_SECRET_PREFIX: "doorbell device secret key",
    PHONE_VERIFY_PREFIX: "phone signing public key",
    PHONE_SIGNING_PREFIX: "phone signing secret key",
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
    """A phone's secret key. Only phones hold these; the doorbell never does.

    For the hybrid suite ``raw`` is the 32-byte X-Wing seed, expanded as the X-Wing
    specification says (SHAKE256 to 96 bytes: the ML-KEM-768 seed ``d || z``, then the
    X25519 private key), or that 96-byte expansion itself, as version 1 phones kept it.
    """

    suite: Suite
    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        lengths = {self.suite.private_key_len}
        if self.suite is Suite.MLKEM768_X25519:
            lengths.add(EXPANDED_SECRET_LEN)
        if len(self.raw) not in lengths:
            wanted = " or ".join(str(n) for n in sorted(lengths))
            raise KeyStringError(f"{self.suite.label} secret key must be {wanted} bytes")

    @classmethod
    def generate(cls, suite: Suite) -> RecipientPrivateKey:
        if suite is Suite.X25519:
            return cls(suite, x25519.X25519PrivateKey.generate().private_bytes_raw())
        return cls(suite, os.urandom(_XWING_SEED_LEN))

    @property
    def expanded(self) -> bytes:
        """The hybrid suite's 96 bytes: ML-KEM-768 seed ``d || z``, X25519 private key."""
        if self.suite is not Suite.MLKEM768_X25519:
            raise ValueError(f"{self.suite.label} keys have no expanded form")
        if len(self.raw) == EXPANDED_SECRET_LEN:
            return self.raw
        return hashlib.shake_256(self.raw).digest(EXPANDED_SECRET_LEN)

    def hpke_key(self) -> x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey:
        if self.suite is Suite.X25519:
            return x25519.X25519PrivateKey.from_private_bytes(self.raw)
        expanded = self.expanded
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
            x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
        )

    def public_key(self) -> RecipientPublicKey:
        if self.suite is Suite.X25519:
            pub = x25519.X25519PrivateKey.from_private_bytes(self.raw).public_key()
            return RecipientPublicKey(self.suite, pub.public_bytes_raw())
        expanded = self.expanded
        kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).public_key()
        dh = x25519.X25519PrivateKey.from_private_bytes(expanded[64:]).public_key()
        return RecipientPublicKey(self.suite, kem.public_bytes_raw() + dh.public_bytes_raw())

    def to_string(self) -> str:
        if len(self.raw) == EXPANDED_SECRET_LEN:
            return encode_key_string(EXPANDED_SECRET_PREFIX, self.raw)
        return encode_key_string(SECRET_PREFIX[self.suite], self.raw)

    @classmethod
    def from_string(cls, text: str) -> RecipientPrivateKey:
        expected = {p: s.private_key_len for s, p in SECRET_PREFIX.items()}
        expected[EXPANDED_SECRET_PREFIX] = EXPANDED_SECRET_LEN
        prefix, raw = decode_key_string(text, expected)
        if prefix == EXPANDED_SECRET_PREFIX:
            return cls(Suite.MLKEM768_X25519, raw)
        suite = next(s for s, p in SECRET_PREFIX.items() if p == prefix)
        return cls(suite, raw)


class _VerifyKey:
    """An Ed25519 public key: 32 bytes, with its key string prefix and what it verifies."""

    PREFIX: ClassVar[str]
    SIGNER: ClassVar[str]  # whose signatures it checks, for messages

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise KeyStringError(f"{_KIND_NAMES[self.PREFIX]} must be 32 bytes, got {len(raw)}")
        self.raw = bytes(raw)
        self._key: ed25519.Ed25519PublicKey | None = None

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash((type(self), self.raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fingerprint})"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        if self._key is None:
            try:
                self._key = ed25519.Ed25519PublicKey.from_public_bytes(self.raw)
            except ValueError:
                raise BadSignature(f"{self.SIGNER} public key is not a valid point") from None
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise BadSignature(f"{self.SIGNER} signature does not verify") from None

    def to_string(self) -> str:
        return encode_key_string(self.PREFIX, self.raw)

    @classmethod
    def from_string(cls, text: str) -> Self:
        return cls(decode_key_string(text, {cls.PREFIX: 32})[1])


class PhoneVerifyKey(_VerifyKey):
    """The public half of a phone's signing key: what checks its commands and approvals."""

    PREFIX = PHONE_VERIFY_PREFIX
    SIGNER = "phone"
    __slots__ = ()


@dataclass(frozen=True)
class PhoneIdentity:
    """What a phone shows the doorbell: the key footage is sealed to, and the key its
    commands are signed with. As text, one key string: ``dbid-<suite>-`` over both."""

    key: RecipientPublicKey
    signing: PhoneVerifyKey

    def to_string(self) -> str:
        return encode_key_string(IDENTITY_PREFIX[self.key.suite], self.key.raw + self.signing.raw)

    @classmethod
    def from_string(cls, text: str) -> PhoneIdentity:
        expected = {p: s.identity_len for s, p in IDENTITY_PREFIX.items()}
        prefix, raw = decode_key_string(text, expected)
        suite = next(s for s, p in IDENTITY_PREFIX.items() if p == prefix)
        return cls(RecipientPublicKey(suite, raw[:-32]), PhoneVerifyKey(raw[-32:]))


class DevicePublicKey(_VerifyKey):
    """A doorbell's Ed25519 public key, which phones pin at enrolment."""

    PREFIX = DEVICE_PUBLIC_PREFIX
    SIGNER = "device"
    __slots__ = ()

    @property
    def device_id(self) -> bytes:
        """SHA-256 of the raw public key: the device id in every object header."""
        return hashlib.sha256(self.raw).digest()


class _SigningKey:
    """An Ed25519 secret key that never leaves its holder."""

    PREFIX: ClassVar[str]
    PUBLIC: ClassVar[type[_VerifyKey]]

    __slots__ = ("_key", "_public")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise KeyStringError(f"{_KIND_NAMES[self.PREFIX]} must be 32 bytes")
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        self._public = self.PUBLIC(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> Self:
        return cls(ed25519.Ed25519PrivateKey.generate().private_bytes_raw())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def to_string(self) -> str:
        return encode_key_string(self.PREFIX, self._key.private_bytes_raw())

    @classmethod
    def from_string(cls, text: str) -> Self:
        return cls(decode_key_string(text, {cls.PREFIX: 32})[1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public={self._public.fingerprint})"


class DeviceSigningKey(_SigningKey):
    """The doorbell's Ed25519 key: signs every object it seals. Never leaves the device."""

    PREFIX = DEVICE_SECRET_PREFIX
    PUBLIC = DevicePublicKey
    __slots__ = ()

    @property
    def public_key(self) -> DevicePublicKey:
        assert isinstance(self._public, DevicePublicKey)
        return self._public


class PhoneSigningKey(_SigningKey):
    """A phone's Ed25519 key: signs its enrolment, commands and approvals."""

    PREFIX = PHONE_SIGNING_PREFIX
    PUBLIC = PhoneVerifyKey
    __slots__ = ()

    @property
    def public_key(self) -> PhoneVerifyKey:
        assert isinstance(self._public, PhoneVerifyKey)
        return self._public


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
