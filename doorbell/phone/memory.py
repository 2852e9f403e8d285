"""What a phone remembers of each doorbell across runs: the objects and keyring it saw.

Objects alone cannot show that the newest ones were deleted, that one the phone already
saw is now "evicted" by a signed notice, that an old event is replayed as new, or that a
keyring was rolled back: a phone that remembers what it has already seen can.
``seen.json`` in the phone's home keeps, per device, the highest sequence number whose
signature it verified (with its chain hash), every sequence number it verified as runs
of consecutive numbers (the chain is dense, so they are few), and the newest keyring
object it read. Updates only ever add, are merged under a lock (``watch`` and ``sync``
may run at the same time) and are written atomically and durably.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from doorbell.common.locks import hold_lock
from doorbell.sealing import KeyFileError, Keyring, SealingError, loads_strict, write_atomic

MEMORY = "seen.json"
LOCK = ".seen.lock"
VERSION = 2
READS = (1, 2)  # version 1 had no "seen": its head is the only seq it remembers
# At most this many runs of seen numbers per device; beyond it the oldest are forgotten
# (forgetting only makes later checks weaker, never raises a false alarm). A phone that
# syncs sees runs broken only by evictions and restarts; one that only watches keeps one
# run per ring: years of rings.
MAX_RUNS = 4096
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


Runs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Remembered:
    """Everything a phone remembers of one device. ``seen`` holds the sequence numbers it
    verified as sorted, disjoint, non-adjacent runs (first, last); ``kept`` those of them
    it opened and found to be of a kind the device never evicts (all but media segments)."""

    head: Head | None = None
    keyring: KnownKeyring | None = None
    seen: Runs = ()
    kept: Runs = ()

    def merged(self, other: Remembered) -> Remembered:
        """Move forward only: a lower seq or an older keyring never replaces a newer one;
        seen numbers are added."""
        out = self
        head, keyring = other.head, other.keyring
        if head is not None and (self.head is None or head.seq > self.head.seq):
            out = replace(out, head=head)
        if keyring is not None and (
            self.keyring is None
            or (keyring.seq > self.keyring.seq and keyring.epoch >= self.keyring.epoch)
        ):
            out = replace(out, keyring=keyring)
        seen = runs_of([*self.seen, *other.seen, *_head_run(head)])
        kept = runs_of([*self.kept, *other.kept])
        if (seen, kept) != (self.seen, self.kept):
            out = replace(out, seen=seen, kept=kept)
        return out

    def seen_in(self, first: int, last: int) -> int | None:
        """The lowest remembered seq in first..last, or None."""
        return first_in(self.seen, first, last)


def first_in(runs: Runs, first: int, last: int) -> int | None:
    """The lowest number of ``runs`` in first..last, or None."""
    at = bisect.bisect_right(runs, (first, 2**64)) - 1
    if at >= 0 and runs[at][1] >= first:
        return first
    at += 1
    if at < len(runs) and runs[at][0] <= last:
        return runs[at][0]
    return None


def runs_of(runs: Iterable[tuple[int, int]]) -> Runs:
    """Sorted, merged runs, at most `MAX_RUNS` of them (the newest kept)."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged[-MAX_RUNS:])


def seqs_as_runs(seqs: Iterable[int]) -> Runs:
    """Runs of consecutive numbers, from any seqs."""
    return runs_of((seq, seq) for seq in seqs)


def _head_run(head: Head | None) -> Runs:
    return () if head is None else ((head.seq, head.seq),)


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
                after = before.merged(item)
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
            handle = hold_lock(self.directory / LOCK, wait=True)
        except OSError as exc:
            raise KeyFileError(f"cannot open {self.directory / LOCK}: {exc.strerror}") from None
        with handle:
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
        if item.seen:
            entry["seen"] = [[first, last] for first, last in item.seen]
        if item.kept:
            entry["kept"] = [[first, last] for first, last in item.kept]
        document["devices"][device_id.hex()] = entry
    return json.dumps(document, indent=1, ensure_ascii=False).encode() + b"\n"


def _parse(raw: bytes, path: Path) -> dict[bytes, Remembered]:
    def damaged(reason: str) -> KeyFileError:
        return KeyFileError(
            f"{path} is damaged ({reason}); repair or remove it "
            "(removed, this phone forgets which objects and keyrings it has seen)"
        )

    document = loads_strict(raw, damaged)
    if not isinstance(document, dict) or document.get("version") not in READS:
        raise damaged(f"expected an object with version {' or '.join(map(str, READS))}")
    keys = {"head", "keyring"} if document["version"] == 1 else {"head", "keyring", "seen", "kept"}
    if set(document) != {"version", "devices"} or not isinstance(document["devices"], dict):
        raise damaged("expected exactly the keys 'version' and 'devices' (an object)")
    out: dict[bytes, Remembered] = {}
    for device, entry in document["devices"].items():
        where = f"device {device[:16]!r}"
        if not _DEVICE.fullmatch(device):
            raise damaged(f"{where}: not a device id of 64 lower-case hex digits")
        if not isinstance(entry, dict) or not set(entry) <= keys:
            raise damaged(f"{where}: expected an object with keys among {sorted(keys)}")
        head = _head(entry.get("head"), where, damaged)
        out[bytes.fromhex(device)] = Remembered(
            head,
            _keyring(entry.get("keyring"), where, damaged, path),
            runs_of([*_runs(entry.get("seen", []), "seen", where, damaged), *_head_run(head)]),
            # Version 1 knew only its head, and held quota notices to it whatever its kind.
            runs_of(_runs(entry.get("kept", []), "kept", where, damaged))
            if document["version"] != 1
            else _head_run(head),
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


def _runs(value: Any, key: str, where: str, damaged: _Damaged) -> list[tuple[int, int]]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_RUNS
        or not all(
            isinstance(run, list) and len(run) == 2 and all(map(_seq, run)) and run[0] <= run[1]
            for run in value
        )
    ):
        raise damaged(f"{where}: {key} must be at most {MAX_RUNS} [first, last] u64 pairs")
    return [(first, last) for first, last in value]


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
