"""Checks a set of sealed objects as a whole: signatures, then each device's chain.

Everything a bucket operator could do to footage without the device key shows up
here: altered or forged objects, deleted ones (gaps), reordered or renamed ones,
duplicates, forks, and objects replayed from another device.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from doorbell.phone.objects import ObjectSource, ObjectUnreadable
from doorbell.sealing import (
    ZERO_PREV,
    Envelope,
    Kind,
    MalformedObject,
    NotARecipient,
    Reader,
    SealingError,
    UntrustedDevice,
    object_name,
)


@dataclass(frozen=True)
class Finding:
    """One thing verification found. ``problem`` findings make verification fail."""

    where: str
    message: str
    problem: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Contents:
    """What an opened object holds, minus its body (bodies are re-read on demand)."""

    kind: Kind
    time_us: int
    epoch: int
    meta: dict[str, Any]


@dataclass
class Entry:
    name: str
    envelope: Envelope
    contents: Contents | None  # None: authentic, but not sealed to this phone

    @property
    def seq(self) -> int:
        return self.envelope.seq


@dataclass
class Verification:
    entries: list[Entry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.problem for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    def add(self, where: str, message: str, *, problem: bool = True) -> None:
        self.findings.append(Finding(where, message, problem))


def verify_source(source: ObjectSource, reader: Reader) -> Verification:
    """Verify and open every object in ``source``; keep metadata only, never bodies."""
    result = Verification()
    for name in source.names():
        try:
            data = source.read(name)
            envelope = reader.verify(data)
        except ObjectUnreadable as exc:
            result.add(name, f"unreadable: {exc}")
            continue
        except MalformedObject as exc:
            result.add(name, f"malformed: {exc}")
            continue
        except UntrustedDevice as exc:
            result.add(name, f"not from a trusted doorbell: {exc} (foreign or replayed object)")
            continue
        except SealingError as exc:
            result.add(name, f"tampered or forged: {exc}")
            continue
        try:
            opened = reader.open_envelope(envelope)
            contents: Contents | None = Contents(
                opened.kind, opened.time_us, opened.epoch, opened.meta
            )
        except NotARecipient:
            contents = None
        except SealingError as exc:
            result.add(name, f"signed but does not open: {exc}")
            continue
        del data
        result.entries.append(Entry(name, envelope, contents))
    unreadable = sum(1 for e in result.entries if e.contents is None)
    if unreadable:
        result.add(
            "keys",
            f"{unreadable} authentic object(s) are not sealed to this phone "
            "(sealed before it was enrolled or after it was revoked)",
            problem=False,
        )
    by_device: dict[bytes, list[Entry]] = defaultdict(list)
    for entry in result.entries:
        by_device[entry.envelope.device_id].append(entry)
    for entries in by_device.values():
        _check_chain(entries, result)
    return result


@dataclass(frozen=True)
class _Gap:
    first: int
    last: int
    reason: str
    bridge: bytes | None  # chain hash of the last object in the gap, when announced


def _announcements(entries: list[Entry]) -> tuple[list[_Gap], dict[int, int | None]]:
    """Gaps the device announced, and restart notices (seq -> the seq it resumes after)."""
    gaps: list[_Gap] = []
    restarts: dict[int, int | None] = {}
    for entry in entries:
        contents = entry.contents
        if contents is None or contents.kind is not Kind.NOTICE:
            continue
        meta = contents.meta
        try:
            if meta.get("notice") == "restart":
                skipped = meta["skipped"]
                gaps.append(_Gap(int(skipped["first"]), int(skipped["last"]), "restart", None))
                previous = meta.get("previous")
                restarts[entry.seq] = None if previous is None else int(previous["seq"])
            elif meta.get("notice") == "discarded":
                for item in meta["ranges"]:
                    bridge = bytes.fromhex(item["last_hash"]) if item.get("last_hash") else None
                    gaps.append(_Gap(int(item["first"]), int(item["last"]), meta["reason"], bridge))
        except (KeyError, TypeError, ValueError):
            # Signed by the device, so this is a device bug, not an attack: report it.
            continue
    return gaps, restarts


def _check_chain(entries: list[Entry], result: Verification) -> None:
    device = entries[0].envelope.device_id.hex()[:16]
    by_seq: dict[int, list[Entry]] = defaultdict(list)
    for entry in entries:
        expected = object_name(entry.envelope.device_id, entry.seq)
        if entry.name != expected:
            result.add(
                entry.name,
                f"holds seq {entry.seq} of device {device}, whose name is {expected} "
                "(renamed or reordered)",
            )
        by_seq[entry.seq].append(entry)
    for seq, same in sorted(by_seq.items()):
        first = same[0]
        for other in same[1:]:
            if other.envelope.data == first.envelope.data:
                result.add(other.name, f"duplicate of {first.name} (seq {seq})")
            else:
                result.add(
                    other.name,
                    f"fork: a different object than {first.name} with the same seq {seq} "
                    "(device state rolled back or device key compromised)",
                )
    unique = {seq: same[0] for seq, same in by_seq.items()}
    by_hash = {e.envelope.chain_hash: e for e in unique.values()}
    gaps, restarts = _announcements(list(unique.values()))

    def announced(seq: int) -> _Gap | None:
        return next((g for g in gaps if g.first <= seq <= g.last), None)

    for seq, entry in sorted(unique.items()):
        prev = entry.envelope.prev
        if prev == ZERO_PREV:
            if seq != 0 and not (seq in restarts and restarts[seq] is None):
                if entry.contents is None:
                    # Only a restart after a lost chain head does this, and its notice is
                    # not sealed to this phone: it can neither confirm nor refute it.
                    result.add(
                        entry.name,
                        f"seq {seq} restarts the chain; its notice is not sealed to this phone",
                        problem=False,
                    )
                else:
                    result.add(entry.name, f"seq {seq} claims to start the chain but is not seq 0")
            continue
        before = unique.get(seq - 1)
        if before is not None and before.envelope.chain_hash == prev:
            continue
        linked = by_hash.get(prev)
        if linked is not None and linked.seq < seq - 1:
            # The device signed "I follow seq M": only a restart after an unclean stop
            # does that, so the skipped numbers are announced by the chain itself,
            # even to a phone that cannot open the restart notice.
            if seq not in restarts:
                gaps.append(_Gap(linked.seq + 1, seq - 1, "skipped at a restart", None))
            continue
        if linked is not None:
            result.add(
                entry.name,
                f"chain: seq {seq} names seq {linked.seq} as its predecessor (reordered or forged)",
            )
        elif before is not None:
            result.add(
                entry.name, f"chain: seq {seq} does not follow seq {seq - 1} (one was replaced)"
            )
        else:
            gap = announced(seq - 1)
            if gap is not None and gap.bridge is not None and gap.bridge != prev:
                result.add(entry.name, f"chain: seq {seq} does not follow the announced gap")

    present = sorted(unique)
    # A gap followed by an object this phone cannot open (sealed before it was enrolled)
    # may have been announced in a notice it cannot read either: it cannot be confirmed.
    unreadable = [seq for seq, entry in unique.items() if entry.contents is None]
    unreadable_until = max(unreadable, default=-1)
    expected_seq = 0
    for seq in [*present, None]:
        stop = present[-1] + 1 if seq is None else seq
        missing = _uncovered(expected_seq, stop - 1, gaps)
        for first, last, gap in missing:
            span = f"seq {first}" if first == last else f"seq {first}..{last}"
            if gap is None and last < unreadable_until:
                result.add(
                    f"device {device}",
                    f"{span} absent among objects not sealed to this phone: "
                    "cannot confirm whether it was announced",
                    problem=False,
                )
            elif gap is None:
                result.add(f"device {device}", f"missing {span} (deleted or never delivered)")
            else:
                result.add(f"device {device}", f"{span} announced as {gap.reason}", problem=False)
        if seq is None:
            break
        expected_seq = seq + 1


def _uncovered(first: int, last: int, gaps: list[_Gap]) -> list[tuple[int, int, _Gap | None]]:
    """Split first..last into runs, each announced by a gap or not."""
    runs: list[tuple[int, int, _Gap | None]] = []
    seq = first
    while seq <= last:
        gap = next((g for g in gaps if g.first <= seq <= g.last), None)
        if gap is not None:
            end = min(gap.last, last)
        else:
            starts = [g.first for g in gaps if seq < g.first <= last]
            end = min(starts) - 1 if starts else last
        runs.append((seq, end, gap))
        seq = end + 1
    return runs
