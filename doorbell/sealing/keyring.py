"""The keyring: which phones can open what the doorbell seals, versioned by epoch."""

from __future__ import annotations

import difflib
import enum
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from doorbell.sealing.errors import KeyringError, KeyStringError
from doorbell.sealing.format import loads_strict
from doorbell.sealing.keys import PhoneVerifyKey, RecipientPublicKey, Suite

KEYRING_FORMAT = "doorbell-keyring"
KEYRING_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_RECIPIENTS = 64
MAX_NAME_LEN = 64
MAX_KEYRING_BYTES = 256 * 1024
# The part of keyring.json that only the device reads and that is never published.
DEVICE_ONLY = "device_only"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Characters that reorder or hide text: a name must look the same to every phone that shows it.
_INVISIBLE = frozenset(
    [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF]
)


class Role(enum.StrEnum):
    """What an enrolled key may do (FORMAT.md section 7)."""

    OWNER = "owner"  # reads footage; approves, invites and revokes phones
    MEMBER = "member"  # reads footage
    GUEST = "guest"  # reads footage until it expires
    RECOVERY = "recovery"  # a key on paper: reads footage, and acts as an owner once restored

    @property
    def manages(self) -> bool:
        """Whether a command signed by this key may change the keyring."""
        return self in (Role.OWNER, Role.RECOVERY)


@dataclass(frozen=True)
class Recipient:
    """One enrolled key: a phone, or the recovery key."""

    name: str
    key: RecipientPublicKey
    added: datetime
    role: Role = Role.OWNER
    signing: PhoneVerifyKey | None = None
    expires: datetime | None = None  # guests only, and always for them

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True)
class Keyring:
    """The recipients every new object is sealed to. Each edit bumps the epoch."""

    epoch: int = 0
    recipients: tuple[Recipient, ...] = ()

    def __len__(self) -> int:
        return len(self.recipients)

    @property
    def classical(self) -> tuple[Recipient, ...]:
        """Phones on a suite a quantum computer breaks. Every object wraps its one data key
        for every phone, so while any of these is enrolled no object is post-quantum
        protected, whatever the other phones use."""
        return tuple(r for r in self.recipients if not r.key.suite.post_quantum)

    @property
    def post_quantum(self) -> bool:
        """Whether what is sealed to this keyring stays closed to a future quantum computer."""
        return bool(self.recipients) and not self.classical

    def add(
        self,
        name: str,
        key: RecipientPublicKey,
        now: datetime,
        *,
        role: Role = Role.OWNER,
        signing: PhoneVerifyKey | None = None,
        expires: datetime | None = None,
    ) -> Keyring:
        check_name(name)
        added = _second(now)
        if (role is Role.GUEST) != (expires is not None):
            raise KeyringError("a guest needs an expiry time, and only a guest has one")
        if expires is not None and _second(expires) <= added:
            raise KeyringError("a guest's expiry time must be in the future")
        for existing in self.recipients:
            if existing.name == name:
                raise KeyringError(f"a phone named {name!r} is already enrolled")
            if existing.key == key:
                raise KeyringError(f"this key is already enrolled as {existing.name!r}")
            if signing is not None and existing.signing == signing:
                raise KeyringError(f"this signing key is already enrolled as {existing.name!r}")
        if len(self.recipients) >= MAX_RECIPIENTS:
            raise KeyringError(f"the keyring is full ({MAX_RECIPIENTS} recipients)")
        recipient = Recipient(
            name, key, added, role, signing, None if expires is None else _second(expires)
        )
        return replace(self, epoch=self.epoch + 1, recipients=(*self.recipients, recipient))

    def get(self, name: str) -> Recipient | None:
        return next((r for r in self.recipients if r.name == name), None)

    def signed_by(self, signing: PhoneVerifyKey) -> Recipient | None:
        """The recipient whose signing key this is, if any."""
        return next((r for r in self.recipients if r.signing == signing), None)

    @property
    def owners(self) -> tuple[Recipient, ...]:
        return tuple(r for r in self.recipients if r.role is Role.OWNER)

    def expired(self, now: datetime) -> tuple[Recipient, ...]:
        """Guests whose time is up at ``now``: nothing may be sealed to them any more."""
        return tuple(r for r in self.recipients if r.expired(now))

    def next_expiry(self) -> datetime | None:
        """When the next guest expires, if any guest is enrolled."""
        return min((r.expires for r in self.recipients if r.expires is not None), default=None)

    def without_expired(self, now: datetime) -> Keyring:
        """This keyring without the guests expired at ``now`` (a new epoch if any were)."""
        kept = tuple(r for r in self.recipients if not r.expired(now))
        if len(kept) == len(self.recipients):
            return self
        return replace(self, epoch=self.epoch + 1, recipients=kept)

    def revoke(self, name: str) -> Keyring:
        kept = tuple(r for r in self.recipients if r.name != name)
        if len(kept) == len(self.recipients):
            names = [r.name for r in self.recipients]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            listed = ", ".join(repr(n) for n in names) or "none"
            raise KeyringError(f"no phone named {name!r} is enrolled{hint} (enrolled: {listed})")
        return replace(self, epoch=self.epoch + 1, recipients=kept)

    def to_json(self) -> bytes:
        """The keyring document of FORMAT.md section 7, as the device publishes it."""
        return _dumps(self._document())

    def _document(self) -> dict[str, Any]:
        return {
            "format": KEYRING_FORMAT,
            "version": KEYRING_VERSION,
            "epoch": self.epoch,
            "recipients": [_recipient_document(r) for r in self.recipients],
        }

    @classmethod
    def from_json(cls, raw: bytes | memoryview, where: str) -> Keyring:
        """Parse a keyring document; ``where`` names its source in every error."""
        return cls._from_document(_loads(raw, where), where)

    @classmethod
    def _from_document(cls, document: Any, where: str) -> Keyring:
        """A keyring from a parsed keyring document (strict JSON, FORMAT.md section 7)."""
        if not isinstance(document, dict) or document.get("format") != KEYRING_FORMAT:
            raise KeyringError(f"{where}: not a Doorbell keyring (format field)")
        version = document.get("version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise KeyringError(f"{where}: unsupported keyring version {version!r}")
        epoch = document.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**32:
            raise KeyringError(f"{where}: epoch must be an integer in 0..2^32-1")
        entries = document.get("recipients")
        if not isinstance(entries, list) or len(entries) > MAX_RECIPIENTS:
            raise KeyringError(f"{where}: recipients must be a list of at most {MAX_RECIPIENTS}")
        keyring = cls(epoch=epoch)
        recipients = []
        for index, entry in enumerate(entries):
            recipients.append(_parse_recipient(entry, f"{where}: recipient {index}", version))
        _unique(where, "names", [r.name for r in recipients])
        _unique(where, "keys", [r.key.raw for r in recipients])
        _unique(where, "signing keys", [r.signing.raw for r in recipients if r.signing])
        return replace(keyring, recipients=tuple(recipients))


class MixedSuites(KeyringError):
    """An enrolment would put a classical phone beside a post-quantum one without the
    owner's consent."""


@dataclass(frozen=True)
class ClassicalConsent:
    """The owner's explicit go-ahead (``doorbell keys add --allow-classical``) for one
    classical phone to be enrolled beside post-quantum phones."""

    name: str
    fingerprint: str
    given: datetime


@dataclass(frozen=True)
class KeyringFile:
    """``keyring.json`` as the device keeps it: the keyring it publishes, and under
    ``device_only`` the owner's consent to each classical phone.

    The consent stays on the device. It is the device's rule for enrolling, not
    something a phone could check or act on: every phone already reads each
    recipient's suite in the published keyring, which tells it whether footage is
    post-quantum protected, and a stolen device key could sign any consent at all.
    Kept in the same file, a keyring edit and its consent are one atomic write.
    """

    keyring: Keyring = Keyring()
    classical_allowed: tuple[ClassicalConsent, ...] = ()

    def consent(self, recipient: Recipient) -> ClassicalConsent | None:
        """The owner's consent to this enrolled classical phone, if it was given."""
        fingerprint = recipient.key.fingerprint
        for given in self.classical_allowed:
            if given.name == recipient.name and given.fingerprint == fingerprint:
                return given
        return None

    def add(
        self,
        name: str,
        key: RecipientPublicKey,
        now: datetime,
        *,
        allow_classical: bool = False,
        role: Role = Role.OWNER,
        signing: PhoneVerifyKey | None = None,
        expires: datetime | None = None,
    ) -> KeyringFile:
        """Enrol a phone, refusing to mix suites without the owner's consent.

        A keyring may hold a classical phone beside a post-quantum one only when the
        owner allowed that classical phone: one data key is wrapped for every phone, so
        a single classical stanza opens every object to a future quantum computer, the
        post-quantum phones' footage included. With ``allow_classical`` the consent is
        recorded for every classical phone the keyring then holds.
        """
        keyring = self.keyring.add(name, key, now, role=role, signing=signing, expires=expires)
        updated = self.with_keyring(keyring)
        if allow_classical:
            when = _second(now)
            new = tuple(
                ClassicalConsent(r.name, r.key.fingerprint, when)
                for r in keyring.classical
                if updated.consent(r) is None
            )
            updated = replace(updated, classical_allowed=updated.classical_allowed + new)
        post_quantum = [r.name for r in keyring.recipients if r.key.suite.post_quantum]
        unallowed = [r for r in keyring.classical if updated.consent(r) is None]
        if post_quantum and unallowed:
            raise MixedSuites(_mixing_refused(name, key, post_quantum, unallowed))
        return updated

    def with_keyring(self, keyring: Keyring) -> KeyringFile:
        """This file holding ``keyring``: a consent goes with the phone it was given for."""
        enrolled = {(r.name, r.key.fingerprint) for r in keyring.classical}
        kept = tuple(c for c in self.classical_allowed if (c.name, c.fingerprint) in enrolled)
        return KeyringFile(keyring, kept)

    def to_json(self) -> bytes:
        document = self.keyring._document()
        if self.classical_allowed:
            allowed = [
                {"name": c.name, "fingerprint": c.fingerprint, "allowed": _time(c.given)}
                for c in self.classical_allowed
            ]
            document[DEVICE_ONLY] = {"classical_allowed": allowed}
        return _dumps(document)

    @classmethod
    def from_json(cls, raw: bytes | memoryview, where: str) -> KeyringFile:
        document = _loads(raw, where)
        keyring = Keyring._from_document(document, where)
        if DEVICE_ONLY not in document:
            return cls(keyring)
        local = document[DEVICE_ONLY]
        entries = local.get("classical_allowed") if isinstance(local, dict) else None
        if not isinstance(entries, list):
            raise KeyringError(f"{where}: {DEVICE_ONLY}.classical_allowed must be a list")
        allowed = tuple(
            _parse_consent(entry, f"{where}: {DEVICE_ONLY}.classical_allowed {index}")
            for index, entry in enumerate(entries)
        )
        return cls(keyring, allowed)


def _mixing_refused(
    name: str, key: RecipientPublicKey, post_quantum: list[str], unallowed: list[Recipient]
) -> str:
    classical = ", ".join(f"{r.name!r}" for r in unallowed)
    if not key.suite.post_quantum:
        return (
            f"refused: {name!r} uses {key.suite.label}, which a quantum computer can break; "
            "every object wraps its data key for every phone, so with it enrolled nothing "
            "sealed would be post-quantum protected, not even what "
            f"{', '.join(repr(n) for n in post_quantum)} read. Enrol it with an "
            f"{Suite.MLKEM768_X25519.label} key, or add it with --allow-classical to accept "
            "this; the keyring is unchanged"
        )
    return (
        f"refused: footage would not be post-quantum protected for {name!r}: {classical} "
        f"{'uses' if len(unallowed) == 1 else 'use'} {Suite.X25519.label}, which a quantum "
        "computer can break, and every object wraps its data key for every phone. Revoke "
        f"{classical} or enrol {'it' if len(unallowed) == 1 else 'them'} again with an "
        f"{Suite.MLKEM768_X25519.label} key, or add {name!r} with --allow-classical to "
        "accept this; the keyring is unchanged"
    )


def _parse_consent(entry: Any, where: str) -> ClassicalConsent:
    if not isinstance(entry, dict):
        raise KeyringError(f"{where}: not an object")
    name, fingerprint, allowed = (entry.get(k) for k in ("name", "fingerprint", "allowed"))
    if not isinstance(name, str) or not isinstance(fingerprint, str):
        raise KeyringError(f"{where}: name and fingerprint must be strings")
    if not isinstance(allowed, str):
        raise KeyringError(f"{where}: allowed must be a string")
    return ClassicalConsent(name, fingerprint, _parse_time(allowed, where, "allowed"))


def _loads(raw: bytes | memoryview, where: str) -> Any:
    if len(raw) > MAX_KEYRING_BYTES:
        raise KeyringError(f"{where}: keyring is {len(raw)} bytes, limit {MAX_KEYRING_BYTES}")
    return loads_strict(raw, lambda reason: KeyringError(f"{where}: not a JSON keyring: {reason}"))


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"


def _time(when: datetime) -> str:
    return when.strftime(_TIME_FORMAT)


def _second(when: datetime) -> datetime:
    """``when`` in UTC, to the second: as the keyring document writes it."""
    return when.astimezone(UTC).replace(microsecond=0)


def _parse_time(text: str, where: str, field: str) -> datetime:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise KeyringError(f"{where}: {field} {text!r} is not YYYY-MM-DDTHH:MM:SSZ") from None


def _unique(where: str, label: str, values: Sequence[str | bytes]) -> None:
    first: dict[str | bytes, int] = {}
    for index, value in enumerate(values):
        earlier = first.setdefault(value, index)
        if earlier != index:
            raise KeyringError(
                f"{where}: duplicate recipient {label}: recipients {earlier} and {index}"
            )


def _recipient_document(recipient: Recipient) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": recipient.name,
        "role": recipient.role.value,
        "suite": recipient.key.suite.label,
        "key": recipient.key.to_string(),
    }
    if recipient.signing is not None:
        document["signing_key"] = recipient.signing.to_string()
    document["added"] = _time(recipient.added)
    if recipient.expires is not None:
        document["expires"] = _time(recipient.expires)
    return document


def _parse_recipient(entry: Any, where: str, version: int) -> Recipient:
    if not isinstance(entry, dict):
        raise KeyringError(f"{where}: not an object")
    name, suite, key, added = (entry.get(k) for k in ("name", "suite", "key", "added"))
    if not isinstance(name, str):
        raise KeyringError(f"{where}: name must be a string")
    try:
        check_name(name)
    except KeyringError as exc:
        raise KeyringError(f"{where}: {exc}") from None
    if not isinstance(suite, str) or not isinstance(key, str) or not isinstance(added, str):
        raise KeyringError(f"{where}: suite, key and added must be strings")
    try:
        public = RecipientPublicKey.from_string(key)
        if public.suite is not Suite.from_label(suite):
            raise KeyringError(f"{where}: suite {suite!r} does not match the key")
    except KeyStringError as exc:
        raise KeyringError(f"{where}: {exc}") from None
    when = _parse_time(added, where, "added")
    if version == 1:
        # Version 1 had no roles: every phone was enrolled by the owner at the doorbell.
        return Recipient(name, public, when)
    return Recipient(name, public, when, *_parse_v2_fields(entry, where, when))


def _parse_v2_fields(
    entry: dict[str, Any], where: str, added: datetime
) -> tuple[Role, PhoneVerifyKey | None, datetime | None]:
    role_text = entry.get("role")
    try:
        if not isinstance(role_text, str):
            raise ValueError(role_text)
        role = Role(role_text)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise KeyringError(f"{where}: role must be one of {known}, got {role_text!r}") from None
    signing = None
    if "signing_key" in entry:
        text = entry["signing_key"]
        if not isinstance(text, str):
            raise KeyringError(f"{where}: signing_key must be a string")
        try:
            signing = PhoneVerifyKey.from_string(text)
        except KeyStringError as exc:
            raise KeyringError(f"{where}: signing_key: {exc}") from None
    expires = None
    if "expires" in entry:
        text = entry["expires"]
        if not isinstance(text, str):
            raise KeyringError(f"{where}: expires must be a string")
        expires = _parse_time(text, where, "expires")
    if (role is Role.GUEST) != (expires is not None):
        raise KeyringError(f"{where}: a guest has an expires time, and only a guest")
    if expires is not None and expires <= added:
        raise KeyringError(f"{where}: expires is not after added")
    return role, signing, expires


def check_name(name: str) -> None:
    """Names are shown to every phone: short, printable, no control characters."""
    if not 1 <= len(name) <= MAX_NAME_LEN:
        raise KeyringError(f"name must be 1 to {MAX_NAME_LEN} characters, got {len(name)}")
    for position, char in enumerate(name):
        if ord(char) in _INVISIBLE:
            what = unicodedata.name(char, "a format character")
            raise KeyringError(
                f"name {name!r} has control characters: U+{ord(char):04X} ({what}) "
                f"at position {position} reorders or hides text"
            )
    if name != name.strip() or any(unicodedata.category(c).startswith("C") for c in name):
        raise KeyringError(f"name {name!r} has control characters or surrounding spaces")
