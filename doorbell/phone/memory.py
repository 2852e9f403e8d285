"""What a phone remembers of each doorbell across runs: the newest object and keyring it saw.

Objects alone cannot show that the newest ones were deleted, that an old event is replayed
as new, or that a keyring was rolled back: a phone that remembers what it has already seen
can. ``seen.json`` in the phone's home keeps, per device, the highest sequence number whose
signature it verified (with its chain hash) and the newest keyring object it read. Updates
only ever move forward, are merged under a lock (``watch`` and ``sync`` may run at the same
time) and are written atomically and durably.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from doorbell.sealing import KeyFileError, Keyring, SealingError, write_atomic
from doorbell.sealing.format import loads_strict

MEMORY = "seen.json"
LOCK = ".seen.lock"
VERSION = 1
_DEVICE = re.compile(r"[0-9a-f]{64}")
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Head:
    """The highest sequence number seen from a device, and that object's chain hash."""

    seq: int
    hash: bytes


@dataclass(frozen=True)
class KnownKeyring:
    """The newest keyring object seen from a device: its seq and its document."""

    seq: int
    keyring: Keyring

    @property
    def epoch(self) -> int:
        return self.keyring.epoch


@dataclass(frozen=True)
class Remembered:
    """Everything a phone remembers of one device."""

    head: Head | None = None
    keyring: KnownKeyring | None = None

    def merged(self, head: Head | None, keyring: KnownKeyring | None) -> Remembered:
        """Move forward only: a lower seq or an older keyring never replaces a newer one."""
        out = self
        if head is not None and (self.head is None or head.seq > self.head.seq):
            out = replace(out, head=head)
        if keyring is not None and (
            self.keyring is None
            or (keyring.seq > self.keyring.seq and keyring.epoch >= self.keyring.epoch)
        ):
            out = replace(out, keyring=keyring)
        return out


NOTHING = Remembered()


class PhoneMemory:
    """``seen.json`` in the phone's home."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / MEMORY

    def load(self) -> dict[bytes, Remembered]:
        """Every device remembered, by device id. A damaged file is an error, never empty:
        forgetting silently would switch off exactly the checks this file exists for."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise KeyFileError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return _parse(raw, self.path)

    def update(self, seen: Mapping[bytes, Remembered]) -> None:
        """Merge ``seen`` into the file (forward only) under the lock; durable on return."""
        if not seen:
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyFileError(f"cannot create {self.directory}: {exc.strerror}") from None
        with self._locked():
            devices = self.load()
            changed = False
            for device_id, item in seen.items():
                before = devices.get(device_id, NOTHING)
                after = before.merged(item.head, item.keyring)
                if after != before:
                    devices[device_id] = after
                    changed = True
            if not changed:
                return
            try:
                write_atomic(self.path, _encode(devices), mode=0o600)
            except OSError as exc:
                raise KeyFileError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            handle = open(self.directory / LOCK, "ab")  # noqa: SIM115 - held for the update
        except OSError as exc:
            raise KeyFileError(f"cannot open {self.directory / LOCK}: {exc.strerror}") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _encode(devices: Mapping[bytes, Remembered]) -> bytes:
    document: dict[str, Any] = {"version": VERSION, "devices": {}}
    for device_id, item in sorted(devices.items()):
        entry: dict[str, Any] = {}
        if item.head is not None:
            entry["head"] = {"seq": item.head.seq, "hash": item.head.hash.hex()}
        if item.keyring is not None:
            entry["keyring"] = {
                "seq": item.keyring.seq,
                "document": item.keyring.keyring.to_json().decode(),
            }
        document["devices"][device_id.hex()] = entry
    return json.dumps(document, indent=1, ensure_ascii=False).encode() + b"\n"


def _parse(raw: bytes, path: Path) -> dict[bytes, Remembered]:
    def damaged(reason: str) -> KeyFileError:
        return KeyFileError(
            f"{path} is damaged ({reason}); repair or remove it "
            "(removed, this phone forgets which objects and keyrings it has seen)"
        )

    document = loads_strict(raw, damaged)
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise damaged(f"expected an object with version {VERSION}")
    if set(document) != {"version", "devices"} or not isinstance(document["devices"], dict):
        raise damaged("expected exactly the keys 'version' and 'devices' (an object)")
    out: dict[bytes, Remembered] = {}
    for device, entry in document["devices"].items():
        where = f"device {device[:16]!r}"
        if not _DEVICE.fullmatch(device):
            raise damaged(f"{where}: not a device id of 64 lower-case hex digits")
        if not isinstance(entry, dict) or not set(entry) <= {"head", "keyring"}:
            raise damaged(f"{where}: expected an object with 'head' and 'keyring'")
        out[bytes.fromhex(device)] = Remembered(
            _head(entry.get("head"), where, damaged),
            _keyring(entry.get("keyring"), where, damaged, path),
        )
    return out


_Damaged = Callable[[str], KeyFileError]


def _seq(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**64


def _head(value: Any, where: str, damaged: _Damaged) -> Head | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"seq", "hash"}
        or not _seq(value["seq"])
        or not isinstance(value["hash"], str)
        or not _HASH.fullmatch(value["hash"])
    ):
        raise damaged(f"{where}: head must be {{'seq': u64, 'hash': 64 hex digits}}")
    return Head(value["seq"], bytes.fromhex(value["hash"]))


def _keyring(value: Any, where: str, damaged: _Damaged, path: Path) -> KnownKeyring | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"seq", "document"}
        or not _seq(value["seq"])
        or not isinstance(value["document"], str)
    ):
        raise damaged(f"{where}: keyring must be {{'seq': u64, 'document': string}}")
    try:
        keyring = Keyring.from_json(value["document"].encode(), f"{path}: {where}: keyring")
    except SealingError as exc:
        raise damaged(str(exc)) from None
    return KnownKeyring(value["seq"], keyring)
