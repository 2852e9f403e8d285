"""The keyring: which phones can open what the doorbell seals, versioned by epoch."""

from __future__ import annotations

import difflib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from doorbell.sealing.errors import KeyringError, KeyStringError
from doorbell.sealing.format import loads_strict
from doorbell.sealing.keys import RecipientPublicKey, Suite

KEYRING_FORMAT = "doorbell-keyring"
KEYRING_VERSION = 1
MAX_RECIPIENTS = 64
MAX_NAME_LEN = 64
MAX_KEYRING_BYTES = 256 * 1024
# Characters that reorder or hide text: a name must look the same to every phone that shows it.
_INVISIBLE = frozenset(
    [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF]
)


@dataclass(frozen=True)
class Recipient:
    """One enrolled phone (or the offline recovery key)."""

    name: str
    key: RecipientPublicKey
    added: datetime


@dataclass(frozen=True)
class Keyring:
    """The recipients every new object is sealed to. Each edit bumps the epoch."""

    epoch: int = 0
    recipients: tuple[Recipient, ...] = ()

    def __len__(self) -> int:
        return len(self.recipients)

    def add(self, name: str, key: RecipientPublicKey, now: datetime) -> Keyring:
        check_name(name)
        for existing in self.recipients:
            if existing.name == name:
                raise KeyringError(f"a phone named {name!r} is already enrolled")
            if existing.key == key:
                raise KeyringError(f"this key is already enrolled as {existing.name!r}")
        if len(self.recipients) >= MAX_RECIPIENTS:
            raise KeyringError(f"the keyring is full ({MAX_RECIPIENTS} recipients)")
        added = Recipient(name, key, now.astimezone(UTC).replace(microsecond=0))
        return replace(self, epoch=self.epoch + 1, recipients=(*self.recipients, added))

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
        document = {
            "format": KEYRING_FORMAT,
            "version": KEYRING_VERSION,
            "epoch": self.epoch,
            "recipients": [
                {
                    "name": r.name,
                    "suite": r.key.suite.label,
                    "key": r.key.to_string(),
                    "added": r.added.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                for r in self.recipients
            ],
        }
        return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes | memoryview, where: str) -> Keyring:
        """Parse a keyring document; ``where`` names its source in every error."""
        if len(raw) > MAX_KEYRING_BYTES:
            raise KeyringError(f"{where}: keyring is {len(raw)} bytes, limit {MAX_KEYRING_BYTES}")
        document = loads_strict(
            raw, lambda reason: KeyringError(f"{where}: not a JSON keyring: {reason}")
        )
        if not isinstance(document, dict) or document.get("format") != KEYRING_FORMAT:
            raise KeyringError(f"{where}: not a Doorbell keyring (format field)")
        version = document.get("version")
        if type(version) is not int or version != KEYRING_VERSION:
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
            recipients.append(_parse_recipient(entry, f"{where}: recipient {index}"))
        _unique(where, "names", [r.name for r in recipients])
        _unique(where, "keys", [r.key.raw for r in recipients])
        return replace(keyring, recipients=tuple(recipients))


def _unique(where: str, label: str, values: Sequence[str | bytes]) -> None:
    first: dict[str | bytes, int] = {}
    for index, value in enumerate(values):
        earlier = first.setdefault(value, index)
        if earlier != index:
            raise KeyringError(
                f"{where}: duplicate recipient {label}: recipients {earlier} and {index}"
            )


def _parse_recipient(entry: Any, where: str) -> Recipient:
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
    try:
        when = datetime.strptime(added, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise KeyringError(f"{where}: added {added!r} is not YYYY-MM-DDTHH:MM:SSZ") from None
    return Recipient(name, public, when)


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
