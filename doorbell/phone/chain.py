"""Checks a set of sealed objects as a whole: signatures, then each device's chain.

This is the phone's one rule set (docs/FORMAT.md sections 4.1, 6 and 7). ``verify``,
``sync`` and ``export`` run it over a folder; ``watch`` runs the per-object rules of
`doorbell.phone.rules` that this module also uses. Everything a bucket operator could do
to footage without the device key shows up here: altered or forged objects, deleted ones
(gaps), reordered, replaced or renamed ones, duplicates, forks, objects replayed from
another device. Notices signed by the device are held to the device's own behaviour, so
that even a stolen device key cannot explain a deletion away.

Announced ranges are handled as ranges (bisection over the objects present), never number
by number: a notice claiming 2^63 numbers costs what a notice claiming one costs.
"""

from __future__ import annotations

import bisect
import enum
import itertools
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, Protocol

from doorbell.phone.memory import (
    NOTHING,
    Head,
    KnownKeyring,
    Remembered,
    Runs,
    first_in,
    seqs_as_runs,
)
from doorbell.phone.objects import ObjectSource, ObjectUnreadable
from doorbell.phone.rules import (
    DISCARD_REASONS,
    ObjectRejected,
    announced_as,
    check_contents,
    discard_reason_problem,
    epoch_rollback,
    stanza_mismatch,
)
from doorbell.sealing import (
    RESERVATION_BLOCK,
    ZERO_PREV,
    Keyring,
    Kind,
    MalformedObject,
    NotARecipient,
    Reader,
    Scratch,
    SealingError,
    Suite,
    UntrustedDevice,
    object_name,
)


class Code(enum.StrEnum):
    """What kind of finding: stable names for programs and test vectors."""

    UNREADABLE = "unreadable"
    MALFORMED = "malformed"
    UNTRUSTED = "untrusted"
    FORGED = "forged"
    UNOPENABLE = "unopenable"
    REJECTED = "rejected"  # authentic and opened, but breaks a payload, meta or keyring rule
    NOT_FOR_US = "not-sealed-to-this-phone"
    RENAMED = "renamed"
    DUPLICATE = "duplicate"
    FORK = "fork"
    REORDERED = "reordered"
    REPLACED = "replaced"
    BAD_START = "bad-start"
    RESTART = "restart-mismatch"
    HIDES = "notice-hides-delivered"
    DISCARD = "bad-discard"
    OVERLAP = "overlapping-notices"
    EVICTION_ORDER = "eviction-order"
    EVICTED_PRESENT = "evicted-but-present"
    MISSING = "missing"
    UNCONFIRMED = "unconfirmed-gap"
    UNPUBLISHED = "unpublished-keyring"
    ANNOUNCED = "announced-gap"
    KEYRING = "keyring"
    ROLLBACK = "keyring-rollback"
    STANZAS = "stanzas"
    CLIP = "clip"
    NEWEST_MISSING = "newest-missing"
    DELETED = "deleted-from-bucket"
    OVERLAP_NOTE = "re-announced"


@dataclass(frozen=True)
class Finding:
    """One thing verification found. ``problem`` findings make verification fail."""

    where: str
    message: str
    problem: bool = True
    code: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Contents:
    """What an opened object holds, minus its body (export keeps or re-reads bodies).

    A keyring object's body is small and needed for every other object: it is kept,
    parsed, as ``keyring``."""

    kind: Kind
    time_us: int
    epoch: int
    meta: dict[str, Any]
    keyring: Keyring | None = None


class StanzaTag(NamedTuple):
    """Whom one stanza is for: its suite and recipient tag, without the wrapped key."""

    suite: Suite
    tag: bytes


@dataclass(frozen=True, slots=True)
class Entry:
    """One authentic object, as a small record: what the rules and export need of it, never
    its bytes. Export is handed the body while the object is verified (`BodyKeeper`), or
    reads it again from the source, by ``name``."""

    name: str
    device_id: bytes
    seq: int
    prev: bytes
    chain_hash: bytes
    stanzas: tuple[StanzaTag, ...]
    contents: Contents | None  # None: authentic, but not sealed to this phone (or rejected)
    rejected: bool = False  # authentic, but it breaks a rule: its contents are not used


class BodyKeeper(Protocol):
    """Takes the body of each object as it is opened, before verification lets it go.
    ``body`` is valid only during the call: the next object is opened into its bytes."""

    def keep(self, entry: Entry, body: memoryview) -> None: ...


@dataclass
class Verification:
    entries: list[Entry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # Per device: the newest authentic object and keyring in this set, for the phone's memory.
    seen: dict[bytes, Remembered] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.problem for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    def add(self, where: str, message: str, *, problem: bool = True, code: str = "") -> None:
        self.findings.append(Finding(where, message, problem, code))


def verify_source(
    source: ObjectSource,
    reader: Reader,
    remembered: Mapping[bytes, Remembered] | None = None,
    keeper: BodyKeeper | None = None,
) -> Verification:
    """Verify and open every object in ``source``, one at a time; keep a small record of
    each (`Entry`), never its bytes, so memory does not grow with the footage.

    ``remembered`` is what this phone saw of each device before (`PhoneMemory.load`):
    objects it saw count as delivered even when absent here, and its newest keyring
    is known. Nothing is written to it here: callers decide what to remember.

    ``keeper`` is handed the body of every object that opened and passed the per-object
    rules, in the order of ``entries``, so that an export needs no second read."""
    result = Verification()
    devices: dict[bytes, bytes] = {}  # one copy of each device id for all its records
    scratch = Scratch()  # each body is used before the next object is opened
    for name in source.names():
        entry = _read(source, reader, scratch, name, result, devices, keeper)
        if entry is not None:
            result.entries.append(entry)
    unreadable = sum(1 for e in result.entries if e.contents is None and not e.rejected)
    if unreadable:
        result.add(
            "keys",
            f"{unreadable} authentic object(s) are not sealed to this phone "
            "(sealed before it was enrolled or after it was revoked)",
            problem=False,
            code=Code.NOT_FOR_US,
        )
    by_device: dict[bytes, list[Entry]] = defaultdict(list)
    for entry in result.entries:
        by_device[entry.device_id].append(entry)
    memory = remembered or {}
    for device_id, entries in by_device.items():
        _DeviceChain(entries, result, memory.get(device_id, NOTHING)).check()
    return result


def _read(
    source: ObjectSource,
    reader: Reader,
    scratch: Scratch,
    name: str,
    result: Verification,
    devices: dict[bytes, bytes],
    keeper: BodyKeeper | None,
) -> Entry | None:
    try:
        envelope = reader.verify(source.read(name))
    except ObjectUnreadable as exc:
        result.add(name, f"unreadable: {exc}", code=Code.UNREADABLE)
        return None
    except MalformedObject as exc:
        result.add(name, f"malformed: {exc}", code=Code.MALFORMED)
        return None
    except UntrustedDevice as exc:
        result.add(
            name,
            f"not from a trusted doorbell: {exc} (foreign or replayed object)",
            code=Code.UNTRUSTED,
        )
        return None
    except SealingError as exc:
        result.add(name, f"tampered or forged: {exc}", code=Code.FORGED)
        return None
    record = partial(
        Entry,
        name,
        devices.setdefault(envelope.device_id, envelope.device_id),
        envelope.seq,
        envelope.prev,
        envelope.chain_hash,
        tuple(StanzaTag(stanza.suite, stanza.tag) for stanza in envelope.stanzas),
    )
    try:
        opened = reader.open_envelope(envelope, scratch)
    except NotARecipient:
        return record(None)
    except SealingError as exc:
        # Signed by the device, so its place in the chain is authentic; its payload is not usable.
        result.add(name, f"signed but does not open: {exc}", code=Code.UNOPENABLE)
        return record(None, rejected=True)
    try:
        keyring = check_contents(opened)
    except ObjectRejected as exc:
        result.add(name, f"rejected: {exc}", code=Code.REJECTED)
        return record(None, rejected=True)
    entry = record(Contents(opened.kind, opened.time_us, opened.epoch, opened.meta, keyring))
    if keeper is not None:
        keeper.keep(entry, opened.body)
    return entry


@dataclass(frozen=True)
class _Gap:
    """Numbers announced as never to appear: a restart's skip or a quota eviction."""

    first: int
    last: int
    reason: str  # "restart", "quota", "damaged" or an unconfirmed restart
    notice: int  # seq of the object that announced it
    bridge: bytes | None = None  # chain hash of object ``last``, for quota ranges
    confirmed: bool = True  # False: implied by an object this phone cannot open


@dataclass(frozen=True)
class _Clip:
    clip_id: str
    stream: str
    first_index: int
    last_index: int | None
    event_seq: int


class _DeviceChain:
    """The chain rules for one device's objects (FORMAT.md section 6)."""

    def __init__(self, entries: list[Entry], result: Verification, memory: Remembered) -> None:
        self.result = result
        self.memory = memory
        self.head: Head | None = memory.head
        self.device_id = entries[0].device_id
        self.device = f"device {self.device_id.hex()[:16]}"
        self.entries = entries
        self.unique: dict[int, Entry] = {}
        self.present: list[int] = []
        self.gaps: list[_Gap] = []
        self.restarts: dict[int, dict[str, Any]] = {}  # restart notices this phone read: meta
        self.forked: set[int] = set()
        # Objects this phone cannot open although every keyring they can have been sealed
        # under lists it: they cannot be a notice sealed to others (FORMAT.md section 7).
        self.withheld: set[int] = set()
        # Remembered runs minus the objects present, computed once: every range a notice
        # announces is then one bisection, however many there are.
        self._absent_seen: Runs | None = None
        self._absent_kept: Runs | None = None

    def add(self, where: str, message: str, code: Code, *, problem: bool = True) -> None:
        self.result.add(where, message, problem=problem, code=code)

    def check(self) -> None:
        self._names_and_forks()
        self._keyrings()
        self._notices()
        self._links()
        self._overlaps()
        self._missing()
        self._eviction_order()
        self._clips()
        self._remember()

    # -- names, duplicates, forks ---------------------------------------------------------

    def _names_and_forks(self) -> None:
        by_seq: dict[int, list[Entry]] = defaultdict(list)
        for entry in self.entries:
            expected = object_name(self.device_id, entry.seq)
            if entry.name != expected:
                self.add(
                    entry.name,
                    f"holds seq {entry.seq} of {self.device}, whose name is {expected} "
                    "(renamed or reordered)",
                    Code.RENAMED,
                )
            by_seq[entry.seq].append(entry)
        for seq, same in sorted(by_seq.items()):
            first = same[0]
            for other in same[1:]:
                # Both signatures verified under one key, and Ed25519 signs deterministically:
                # one chain hash (the hash of the signature) means the same bytes.
                if other.chain_hash == first.chain_hash:
                    self.add(other.name, f"duplicate of {first.name} (seq {seq})", Code.DUPLICATE)
                else:
                    self.forked.add(seq)
                    self.add(
                        other.name,
                        f"fork: a different object than {first.name} with the same seq {seq} "
                        "(device state rolled back or device key compromised)",
                        Code.FORK,
                    )
            self.unique[seq] = first
        self.present = sorted(self.unique)
        head = self.head
        if head is not None and head.seq in self.unique:
            entry = self.unique[head.seq]
            if entry.chain_hash != head.hash:
                self.forked.add(head.seq)
                self.add(
                    entry.name,
                    f"fork: seq {head.seq} differs from the object with that seq this phone "
                    "verified before (device state rolled back or device key compromised)",
                    Code.FORK,
                )

    # -- keyrings, epochs, stanzas (FORMAT.md section 7) ---------------------------------------

    def _known_keyrings(self) -> dict[int, tuple[int, Keyring]]:
        """Every keyring this phone knows, by epoch: (lowest seq that carries it, keyring).

        Each was opened from a keyring object sealed to that keyring, so each lists this phone."""
        known: dict[int, tuple[int, Keyring]] = {}
        remembered = self.memory.keyring
        if remembered is not None:
            known[remembered.epoch] = (remembered.seq, remembered.keyring)
        for seq in self.present:
            entry = self.unique[seq]
            keyring = entry.contents.keyring if entry.contents is not None else None
            if keyring is None:
                continue
            earlier = known.setdefault(keyring.epoch, (seq, keyring))
            if earlier[1] != keyring:
                self.add(
                    entry.name,
                    f"keyring epoch {keyring.epoch} differs from the keyring of the same epoch "
                    f"in seq {earlier[0]}: one epoch, two keyrings",
                    Code.KEYRING,
                )
            elif seq < earlier[0]:
                known[keyring.epoch] = (seq, keyring)
        return known

    def _keyrings(self) -> None:
        known = self._known_keyrings()
        remembered = self.memory.keyring
        newest: tuple[int, int] | None = None  # (seq, epoch) of the highest epoch so far
        opened = [s for s in self.present if self.unique[s].contents is not None]
        for seq in opened:
            contents = self.unique[seq].contents
            assert contents is not None
            rollback = epoch_rollback(seq, contents.epoch, newest, remembered)
            if rollback is not None:
                self.add(self.unique[seq].name, rollback, Code.ROLLBACK)
            if newest is None or contents.epoch > newest[1]:
                newest = (seq, contents.epoch)
        self._published(opened, known)
        for seq, epoch, inferred in self._epochs(opened, known):
            sealed_under = known.get(epoch)
            if sealed_under is None:
                continue  # an opened one is reported by _published; an inferred one cannot be
            entry = self.unique[seq]
            mismatch = stanza_mismatch(entry, sealed_under[1])
            if mismatch is not None:
                if inferred:
                    self.withheld.add(seq)
                how = " (the objects around it were sealed under it)" if inferred else ""
                self.add(entry.name, f"keyring epoch {epoch}{how}: {mismatch}", Code.STANZAS)

    def _published(self, opened: list[int], known: dict[int, tuple[int, Keyring]]) -> None:
        """Every opened object's epoch has a keyring object at or below its seq.

        The device seals a keyring object before the first object under a changed keyring
        and never evicts one. Only a restart notice comes first: it is sealed before the
        keyring object of its run, which must then follow it at once."""
        for seq in opened:
            contents = self.unique[seq].contents
            assert contents is not None
            published = known.get(contents.epoch)
            if published is not None and published[0] <= seq:
                continue
            restart = contents.kind is Kind.NOTICE and contents.meta["notice"] == "restart"
            if restart and self._keyring_epoch(seq + 1) == contents.epoch:
                continue
            self.add(
                self.unique[seq].name,
                f"seq {seq} is sealed under keyring epoch {contents.epoch}, but no keyring "
                f"object of epoch {contents.epoch} comes before it (present or remembered): "
                "a keyring never published",
                Code.UNPUBLISHED,
            )

    def _keyring_epoch(self, seq: int) -> int | None:
        entry = self.unique.get(seq)
        if entry is None or entry.contents is None or entry.contents.keyring is None:
            return None
        return entry.contents.keyring.epoch

    def _epochs(
        self, opened: list[int], known: dict[int, tuple[int, Keyring]]
    ) -> list[tuple[int, int, bool]]:
        """(seq, epoch, inferred) for every object whose keyring epoch is known.

        An object this phone cannot open has an unknown epoch, unless the nearest objects
        it can open before and after it carry the same epoch: epochs never go back, and a
        keyring change bumps the epoch, so it was sealed under that epoch too. When they
        carry different epochs and this phone knows the keyring of every epoch from one to
        the other, it was sealed under one of them, each listing this phone: it is withheld
        (it lacks this phone's stanza)."""
        out = []
        epochs = sorted(known)
        for seq in self.present:
            entry = self.unique[seq]
            if entry.rejected:
                continue
            if entry.contents is not None:
                out.append((seq, entry.contents.epoch, False))
                continue
            before, after = self._opened_around(seq, opened)
            if before is None or after is None:
                continue  # sealed before this phone was enrolled, or after it was revoked?
            if before == after:
                out.append((seq, before, True))
            elif self._all_known(epochs, before, after):
                self.withheld.add(seq)
                self.add(
                    entry.name,
                    f"seq {seq} lacks this phone's stanza, but lies between objects sealed "
                    f"under keyring epochs {before} and {after}, and every keyring from "
                    "one to the other lists this phone (withheld from it, or forged)",
                    Code.STANZAS,
                )
        return out

    def _opened_around(self, seq: int, opened: list[int]) -> tuple[int | None, int | None]:
        """The epochs of the nearest objects this phone opened before and after ``seq``: in
        this set, or the keyring it remembers (opened earlier, live or in a copy)."""
        at = bisect.bisect_left(opened, seq)
        below = [(opened[at - 1], self._epoch_of(opened[at - 1]))] if at > 0 else []
        above = [(opened[at], self._epoch_of(opened[at]))] if at < len(opened) else []
        remembered = self.memory.keyring
        if remembered is not None and remembered.seq != seq:
            side = below if remembered.seq < seq else above
            side.append((remembered.seq, remembered.epoch))
        before, after = max(below, default=None), min(above, default=None)
        return (None if before is None else before[1], None if after is None else after[1])

    def _epoch_of(self, seq: int) -> int:
        contents = self.unique[seq].contents
        assert contents is not None
        return contents.epoch

    @staticmethod
    def _all_known(epochs: list[int], first: int, last: int) -> bool:
        """Whether the sorted ``epochs`` hold every epoch of first..last."""
        if last < first:
            return False
        low = bisect.bisect_left(epochs, first)
        high = bisect.bisect_right(epochs, last)
        return high - low == last - first + 1

    # -- notices (FORMAT.md section 6) -------------------------------------------------------

    def _notices(self) -> None:
        for seq in self.present:
            contents = self.unique[seq].contents
            if contents is None or contents.kind is not Kind.NOTICE:
                continue
            notice = contents.meta["notice"]
            if notice == "restart":
                self._restart(seq, contents.meta)
            elif notice == "discarded":
                self._discarded(seq, contents.meta)

    def _known_in(self, first: int, last: int) -> tuple[int, str] | None:
        """An object with a seq in first..last that this phone has seen, and where."""
        at = bisect.bisect_left(self.present, first)
        if at < len(self.present) and self.present[at] <= last:
            return self.present[at], "in this set"
        remembered = self.memory.seen_in(first, last)
        if remembered is not None:
            return remembered, "earlier (remembered)"
        return None

    def _older_known(self, seq: int) -> int | None:
        known = [self.present[0]] + ([self.memory.seen[0][0]] if self.memory.seen else [])
        below = [s for s in known if s < seq]
        return min(below) if below else None

    def _remembered_absent(self, first: int, last: int, kept: bool = False) -> int | None:
        """The lowest seq in first..last that this phone remembers and that is absent here
        (with ``kept``: only one it opened and that the device never evicts)."""
        absent = self._absent_kept if kept else self._absent_seen
        if absent is None:
            absent = _without(self.memory.kept if kept else self.memory.seen, self.present)
            if kept:
                self._absent_kept = absent
            else:
                self._absent_seen = absent
        return first_in(absent, first, last)

    def _restart(self, seq: int, meta: dict[str, Any]) -> None:
        entry = self.unique[seq]
        self.restarts[seq] = meta
        previous = meta["previous"]
        first, last = meta["skipped"]["first"], meta["skipped"]["last"]
        broken = []
        if previous is None:
            expect_prev, expect_first = ZERO_PREV, 0
            older = self._older_known(seq)
            if older is not None:
                broken.append(
                    f"says no chain head was recorded (previous: null), but this phone "
                    f"knows seq {older} of this device"
                )
        else:
            expect_prev, expect_first = bytes.fromhex(previous["hash"]), previous["seq"] + 1
            if previous["seq"] >= seq:
                broken.append(f"previous.seq {previous['seq']} is not below its own seq")
            head_hash = self._hash_of(previous["seq"])
            if head_hash is not None and head_hash != expect_prev:
                broken.append(
                    f"previous.hash is not the chain hash of seq {previous['seq']} "
                    "(the object at that seq was replaced, or the notice lies)"
                )
        if entry.prev != expect_prev:
            what = "32 zero bytes" if previous is None else "previous.hash"
            broken.append(f"its prev is not {what}")
        if (first, last) != (expect_first, seq - 1):
            broken.append(
                f"skipped is {first}..{last}, must be {expect_first}..{seq - 1} "
                "(from the number after previous.seq to the number before the notice)"
            )
        span = last - first + 1
        if span > RESERVATION_BLOCK:
            broken.append(
                f"skipped covers {span} numbers, more than one reservation block "
                f"({RESERVATION_BLOCK})"
            )
        for reason in broken:
            self.add(entry.name, f"restart notice seq {seq}: {reason}", Code.RESTART)
        if first <= last:
            hidden = self._known_in(first, last)
            if hidden is not None:
                self.add(
                    entry.name,
                    f"restart notice seq {seq} skips {first}..{last}, but seq {hidden[0]} was "
                    f"delivered ({hidden[1]}): notice hides a delivered object",
                    Code.HIDES,
                )
            elif not broken:
                self.gaps.append(_Gap(first, last, "restart", seq))

    def _hash_of(self, seq: int) -> bytes | None:
        entry = self.unique.get(seq)
        if entry is not None:
            return entry.chain_hash
        if self.head is not None and self.head.seq == seq:
            return self.head.hash
        return None

    def _discarded(self, seq: int, meta: dict[str, Any]) -> None:
        entry = self.unique[seq]
        reason = meta["reason"]
        problem = discard_reason_problem(reason)
        if problem is not None:
            self.add(entry.name, f"discarded notice seq {seq}: {problem}", Code.DISCARD)
            return
        ranges = sorted((item["first"], item["last"]) for item in meta["ranges"])
        for (first, last), (after, end) in itertools.pairwise(ranges):
            if after <= last:
                self.add(
                    entry.name,
                    f"discarded notice seq {seq}: its ranges {first}..{last} and {after}..{end} "
                    "overlap",
                    Code.OVERLAP,
                )
        for item in meta["ranges"]:
            first, last = item["first"], item["last"]
            bridge = bytes.fromhex(item["last_hash"])
            if not first <= last < seq:
                self.add(
                    entry.name,
                    f"discarded notice seq {seq}: range {first}..{last} is not "
                    "first <= last < the notice's seq",
                    Code.DISCARD,
                )
                continue
            last_hash = self._hash_of(last)
            if last_hash is not None and last_hash != bridge:
                self.add(
                    entry.name,
                    f"discarded notice seq {seq}: last_hash of range {first}..{last} is not "
                    f"the chain hash of seq {last}",
                    Code.DISCARD,
                )
            if reason == "quota":
                # A damaged file can be of any kind, and a faster sink may hold it.
                self._evicted_but_known(entry, seq, first, last)
            self.gaps.append(_Gap(first, last, reason, seq, bridge))

    def _evicted_but_known(self, entry: Entry, seq: int, first: int, last: int) -> None:
        low = bisect.bisect_left(self.present, first)
        high = bisect.bisect_right(self.present, last)
        if high > low:
            # The device evicts from every sink's queue at once; a faster sink (the local
            # folder) may have taken the object already. Not a deletion: a note.
            self.add(
                self.device,
                f"{high - low} object(s) in {first}..{last} (first seq {self.present[low]}) "
                f"are here although notice seq {seq} announces them evicted by quota "
                "(a sink took them before the eviction)",
                Code.EVICTED_PRESENT,
                problem=False,
            )
        # A media segment this phone saw in one sink may rightly be evicted from another
        # sink's queue; any other kind is never evicted at all.
        hidden = self._remembered_absent(first, last, kept=True)
        if hidden is not None:
            self.add(
                entry.name,
                f"discarded notice seq {seq} announces {first}..{last} evicted, but this phone "
                f"saw seq {hidden} earlier, of a kind the device never evicts, and it is absent: "
                "notice hides a delivered object",
                Code.HIDES,
            )

    # -- links (FORMAT.md section 6) ---------------------------------------------------------

    def _links(self) -> None:
        bridges = {g.last: g for g in self.gaps if g.bridge is not None}
        by_hash = {self.unique[s].chain_hash: s for s in self.present}
        head = self.head
        if head is not None:
            by_hash.setdefault(head.hash, head.seq)
        for seq in self.present:
            if seq in self.restarts:
                # Its prev is held to previous.hash by the restart rules; right after a
                # quota range, previous must be that range's last object.
                gap = bridges.get(seq - 1)
                previous = self.restarts[seq]["previous"]
                if gap is not None and (
                    previous is None
                    or previous["seq"] != gap.last
                    or bytes.fromhex(previous["hash"]) != gap.bridge
                ):
                    self.add(
                        self.unique[seq].name,
                        f"chain: restart notice seq {seq} does not follow the gap notice seq "
                        f"{gap.notice} announced (its previous is not seq {gap.last} with the "
                        "range's last_hash)",
                        Code.REPLACED,
                    )
                continue
            entry = self.unique[seq]
            prev = entry.prev
            if seq == 0:
                if prev != ZERO_PREV:
                    message = "chain: seq 0 must start the chain (prev all zero)"
                    self.add(entry.name, message, Code.BAD_START)
                continue
            if prev == ZERO_PREV:
                self._new_chain(entry)
                continue
            before = self._hash_of(seq - 1)
            if before == prev:
                continue
            linked = by_hash.get(prev)
            if linked is not None and linked < seq - 1 and before is None and self._unknown(entry):
                self._unreadable_restart(entry, linked)
            elif linked is not None:
                self.add(
                    entry.name,
                    f"chain: seq {seq} names seq {linked} as its predecessor, not seq {seq - 1} "
                    "(reordered or spliced)",
                    Code.REORDERED,
                )
            elif before is not None:
                earlier = "" if seq - 1 in self.unique else " this phone verified earlier"
                self.add(
                    entry.name,
                    f"chain: seq {seq} does not follow seq {seq - 1}{earlier} (one was replaced)",
                    Code.REPLACED,
                )
            else:
                gap = bridges.get(seq - 1)
                if gap is not None and gap.bridge != prev:
                    self.add(
                        entry.name,
                        f"chain: seq {seq} does not follow the gap notice seq {gap.notice} "
                        "announced (its prev is not the range's last_hash)",
                        Code.REPLACED,
                    )

    @staticmethod
    def _unknown(entry: Entry) -> bool:
        """Authentic, but this phone cannot see what it is (not sealed to it)."""
        return entry.contents is None and not entry.rejected

    def _new_chain(self, entry: Entry) -> None:
        seq = entry.seq
        older = self._older_known(seq)
        if self._unknown(entry) and older is None:
            # Only a restart after a lost chain head does this, and its notice is not
            # sealed to this phone: it can neither confirm nor refute it.
            self.add(
                entry.name,
                f"seq {seq} restarts the chain; its notice is not sealed to this phone",
                Code.UNCONFIRMED,
                problem=False,
            )
        elif self._unknown(entry):
            self.add(
                entry.name,
                f"chain: seq {seq} starts a new chain (prev all zero) although this phone "
                f"knows seq {older} of this device",
                Code.BAD_START,
            )
        else:
            self.add(
                entry.name,
                f"chain: seq {seq} claims to start the chain but is not seq 0 "
                "(and not a restart notice)",
                Code.BAD_START,
            )

    def _unreadable_restart(self, entry: Entry, linked: int) -> None:
        """An object this phone cannot open names an older object as its predecessor.

        Only a restart notice does that; this phone cannot read it, so the same limits
        apply to what the signed link itself says: at most one reservation block skipped,
        and nothing this phone has seen inside it."""
        seq = entry.seq
        first, last = linked + 1, seq - 1
        span = last - first + 1
        hidden = self._known_in(first, last)
        if span > RESERVATION_BLOCK:
            self.add(
                entry.name,
                f"chain: seq {seq} names seq {linked} as its predecessor, skipping {span} "
                f"numbers: more than a restart may skip ({RESERVATION_BLOCK})",
                Code.REORDERED,
            )
        elif hidden is not None:
            self.add(
                entry.name,
                f"chain: seq {seq} names seq {linked} as its predecessor, skipping seq "
                f"{hidden[0]}, which was delivered ({hidden[1]}): notice hides a delivered object",
                Code.HIDES,
            )
        else:
            self.gaps.append(_Gap(first, last, "restart", seq, confirmed=False))

    # -- ranges ------------------------------------------------------------------------------

    def _overlaps(self) -> None:
        """Announced ranges never share a number, but for quota ranges of two notices.

        A device that stops between spooling a quota notice and deleting what it evicted
        evicts the same objects again after the restart and announces them again: a note.
        Each range was held to its own rules already."""
        ordered = sorted(self.gaps, key=lambda g: (g.first, g.last))
        widest: _Gap | None = None  # of all ranges so far, the one reaching furthest
        widest_other: _Gap | None = None  # the same, among ranges that may not overlap at all
        for gap in ordered:
            strict = gap.reason not in DISCARD_REASONS
            for earlier in (widest_other, widest):
                if earlier is None or gap.first > earlier.last:
                    continue
                again = not strict and earlier.reason in DISCARD_REASONS
                if again and earlier.notice == gap.notice:
                    break  # one notice's own ranges: _discarded reports those
                self.add(
                    self.device,
                    f"range {gap.first}..{gap.last} announced by seq {gap.notice} overlaps "
                    f"range {earlier.first}..{earlier.last} announced by seq {earlier.notice}"
                    + (" (evicted again after a restart)" if again else ""),
                    Code.OVERLAP_NOTE if again else Code.OVERLAP,
                    problem=not again,
                )
                break
            if widest is None or gap.last > widest.last:
                widest = gap
            if strict and (widest_other is None or gap.last > widest_other.last):
                widest_other = gap

    def _missing(self) -> None:
        # A gap followed by an object this phone cannot open (sealed before it was enrolled,
        # or after it was revoked) may have been announced in a notice it cannot read either:
        # it cannot be confirmed. Not when that object should have been sealed to this phone
        # (withheld), nor when the gap holds an object this phone saw and that the device
        # never evicts (no notice may hide that). See FORMAT.md section 6.2, "unconfirmed".
        unreadable = [
            s for s in self.present if self._unknown(self.unique[s]) and s not in self.withheld
        ]
        unreadable_until = max(unreadable, default=-1)
        gaps = _GapIndex(self.gaps)
        expected = 0
        for seq in [*self.present, None]:
            stop = self.present[-1] + 1 if seq is None else seq
            for first, last, gap in _uncovered(expected, stop - 1, gaps):
                span = f"seq {first}" if first == last else f"seq {first}..{last}"
                # Only an object the device never evicts excuses nothing: a media segment
                # this phone saw in another sink's copy may be evicted from this one's queue.
                kept = self._remembered_absent(first, last, kept=True) if gap is None else None
                if gap is None and kept is None and last < unreadable_until:
                    self.add(
                        self.device,
                        f"{span} absent, followed by objects not sealed to this phone (seq "
                        f"{unreadable_until} the newest): cannot confirm whether a notice "
                        "among them announced it",
                        Code.UNCONFIRMED,
                        problem=False,
                    )
                elif gap is None:
                    seen = kept if kept is not None else self._remembered_absent(first, last)
                    saw = "" if seen is None else f"; this phone saw seq {seen} earlier"
                    self.add(
                        self.device,
                        f"missing {span} (deleted or never delivered{saw})",
                        Code.MISSING,
                    )
                elif not gap.confirmed:
                    self.add(
                        self.device,
                        f"{span} skipped by a restart whose notice (seq {gap.notice}) is not "
                        "sealed to this phone: cannot be confirmed",
                        Code.UNCONFIRMED,
                        problem=False,
                    )
                else:
                    self.add(
                        self.device,
                        f"{span} {announced_as(gap.reason)}",
                        Code.ANNOUNCED,
                        problem=False,
                    )
            if seq is None:
                break
            expected = seq + 1

    # -- clips and eviction order (FORMAT.md sections 4.1 and 6) -------------------------------

    def _clip_plan(self) -> tuple[dict[str, _Clip], dict[str, list[tuple[int, int]]]]:
        """Clips by id, and each stream's segments as sorted (index, seq)."""
        events: dict[str, _Clip] = {}
        ends: dict[str, int] = {}
        segments: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for seq in self.present:
            contents = self.unique[seq].contents
            if contents is None:
                continue
            meta = contents.meta
            if contents.kind is Kind.EVENT and meta["stream"]:
                clip = _Clip(meta["clip"], meta["stream"], meta["first_index"], None, seq)
                events.setdefault(clip.clip_id, clip)
            elif contents.kind is Kind.NOTICE and meta["notice"] == "clip-end":
                ends.setdefault(meta["clip"], meta["last_index"])
            elif contents.kind is Kind.SEGMENT:
                segments[meta["stream"]].append((meta["index"], seq))
        for listed in segments.values():
            listed.sort()
        clips = {
            clip_id: _Clip(c.clip_id, c.stream, c.first_index, ends.get(clip_id), c.event_seq)
            for clip_id, c in events.items()
        }
        return clips, segments

    def _clips(self) -> None:
        """Events of one clip agree on its stream and first segment; a clip ends once, on the
        stream of its events."""
        first_event: dict[str, tuple[int, str, int]] = {}
        ends: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for seq in self.present:
            contents = self.unique[seq].contents
            if contents is None:
                continue
            meta = contents.meta
            if contents.kind is Kind.NOTICE and meta["notice"] == "clip-end":
                ends[meta["clip"]].append((seq, meta["stream"]))
                earlier_end = ends[meta["clip"]][0]
                if earlier_end[0] != seq:
                    self.add(
                        self.unique[seq].name,
                        f"clip-end notice seq {seq} ends clip {meta['clip'][:8]}, which the "
                        f"clip-end notice seq {earlier_end[0]} already ended",
                        Code.CLIP,
                    )
            if contents.kind is not Kind.EVENT:
                continue
            claim = (seq, meta["stream"], meta["first_index"])
            earlier = first_event.setdefault(meta["clip"], claim)
            if earlier[1:] != claim[1:]:
                self.add(
                    self.unique[seq].name,
                    f"event seq {seq} of clip {meta['clip'][:8]} names stream "
                    f"{meta['stream'][:8] or '(none)'} from index {meta['first_index']}, but "
                    f"event seq {earlier[0]} of the same clip names stream "
                    f"{earlier[1][:8] or '(none)'} from index {earlier[2]}",
                    Code.CLIP,
                )
        for clip_id, seq, stream in ((c, q, s) for c, listed in ends.items() for q, s in listed):
            event = first_event.get(clip_id)
            if event is not None and event[1] != stream:
                self.add(
                    self.unique[seq].name,
                    f"clip-end notice seq {seq} names stream {stream[:8] or '(none)'} for clip "
                    f"{clip_id[:8]}, whose event seq {event[0]} names stream "
                    f"{event[1][:8] or '(none)'}",
                    Code.CLIP,
                )

    def _eviction_order(self) -> None:
        """A quota eviction may not take clip segments while continuous recording survives.

        See FORMAT.md section 6, "Eviction order", for the rule and why it is exact."""
        quota = sorted((g for g in self.gaps if g.reason == "quota"), key=lambda g: g.first)
        if not quota:
            return
        evicted = Intervals([(g.first, g.last) for g in quota])
        ranges = _GapIndex(quota)
        clips, segments = self._clip_plan()
        continuous = self._continuous(clips, segments, evicted)
        for clip in clips.values():
            listed = segments.get(clip.stream, [])
            for low, high, indexes in self._evicted_runs(clip, listed, evicted):
                survivor = self._survivor(low, high, ranges, continuous)
                if survivor is not None:
                    notice, kept = survivor
                    self.add(
                        self.unique[notice].name,
                        f"quota notice seq {notice} evicted segment(s) {indexes} of clip "
                        f"{clip.clip_id[:8]} while continuous recording seq {kept}, sealed "
                        "after them and before the eviction, survived: eviction order violated "
                        "(continuous recording goes first)",
                        Code.EVICTION_ORDER,
                    )
                    break

    def _continuous(
        self,
        clips: dict[str, _Clip],
        segments: dict[str, list[tuple[int, int]]],
        evicted: Intervals,
    ) -> list[int]:
        """Seqs of present segments in no clip's index range and in no quota range."""
        ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for clip in clips.values():
            listed = segments.get(clip.stream, [])
            last = clip.last_index
            if last is None:
                # A clip with no clip-end notice runs to the newest segment of its stream.
                last = max((i for i, _ in listed), default=clip.first_index)
            ranges[clip.stream].append((clip.first_index, last))
        out: list[int] = []
        for stream, listed in segments.items():
            in_clips = Intervals(ranges.get(stream, []))
            out.extend(seq for index, seq in listed if index not in in_clips and seq not in evicted)
        return sorted(out)

    def _evicted_runs(
        self, clip: _Clip, listed: list[tuple[int, int]], evicted: Intervals
    ) -> list[tuple[int, int, str]]:
        """Runs of the clip's missing segments whose seqs can only lie in quota ranges.

        A missing index lies between the seqs of the stream's nearest present segments
        below and above it (a stream's segments are sealed in index order). If every
        absent number in that interval is inside a quota range, the segment was evicted.
        Returns (low seq, high seq, "i..j") per run; runs are found between present
        segments, so their number is bounded by the segments present."""
        if clip.last_index is None or clip.last_index < clip.first_index:
            return []
        indexes = [i for i, _ in listed]
        out = []
        start = bisect.bisect_left(indexes, clip.first_index)
        want = clip.first_index
        at = start
        while want <= clip.last_index:
            if at < len(indexes) and indexes[at] == want:
                want += 1
                at += 1
                continue
            upto = min(clip.last_index, (indexes[at] - 1) if at < len(indexes) else clip.last_index)
            below = listed[at - 1][1] if at > 0 else -1
            above = listed[at][1] if at < len(indexes) else None
            if above is not None and self._only_evicted_between(below, above, evicted):
                out.append((below, above, f"{want}..{upto}" if upto > want else f"{want}"))
            want = upto + 1
        return out

    def _only_evicted_between(self, below: int, above: int, evicted: Intervals) -> bool:
        """Every absent number strictly between ``below`` and ``above`` is in a quota range,
        and there is at least one."""
        low = bisect.bisect_right(self.present, below)
        high = bisect.bisect_left(self.present, above)
        edges = [below, *self.present[low:high], above]
        absent = False
        for left, right in itertools.pairwise(edges):
            if right - left > 1:
                absent = True
                if not evicted.covers(left + 1, right - 1):
                    return False
        return absent

    def _survivor(
        self, below: int, above: int, quota: _GapIndex, continuous: list[int]
    ) -> tuple[int, int] | None:
        """(notice, continuous seq) proving the order was violated, whichever quota range
        between ``below`` and ``above`` the evicted segment was in; None if any leaves doubt."""
        proof = None
        for gap in quota.overlapping(below + 1, above - 1):
            # The object whose spooling forced the eviction is sealed just before the notice
            # (keyring objects may come between) and was never evictable itself.
            forcing = self._forcing(gap.notice)
            at = bisect.bisect_right(continuous, gap.last)
            if at < len(continuous) and continuous[at] < forcing:
                proof = proof or (gap.notice, continuous[at])
            else:
                return None
        return proof

    def _forcing(self, notice: int) -> int:
        at = bisect.bisect_left(self.present, notice) - 1
        while at >= 0:
            contents = self.unique[self.present[at]].contents
            if contents is None or contents.kind is not Kind.KEYRING:
                return self.present[at]
            at -= 1
        return -1

    # -- memory ------------------------------------------------------------------------------

    def _remember(self) -> None:
        head = None
        for seq in reversed(self.present):
            if seq not in self.forked:
                head = Head(seq, self.unique[seq].chain_hash)
                break
        keyring = None
        for seq in reversed(self.present):
            contents = self.unique[seq].contents
            if contents is not None and contents.keyring is not None:
                keyring = KnownKeyring(seq, contents.keyring)
                break
        kept = [
            seq
            for seq in self.present
            if (contents := self.unique[seq].contents) is not None
            and contents.kind is not Kind.SEGMENT
        ]
        self.result.seen[self.device_id] = Remembered(
            head, keyring, seqs_as_runs(self.present), seqs_as_runs(kept)
        )


class Intervals:
    """A union of integer intervals, queried by bisection: index ranges a signed notice may
    make as wide as 2^64 are never expanded into their members."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for first, last in sorted(r for r in ranges if r[0] <= r[1]):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._firsts = [first for first, _ in merged]
        self._lasts = [last for _, last in merged]

    def __contains__(self, value: int) -> bool:
        return self.covers(value, value)

    def covers(self, first: int, last: int) -> bool:
        """Whether every number of first..last is in the union."""
        at = bisect.bisect_right(self._firsts, first) - 1
        return at >= 0 and last <= self._lasts[at]


class _GapIndex:
    """Announced gaps sorted by first number, for lookups in logarithmic time however many
    there are and however they overlap (overlaps are reported; any covering gap then serves).

    A max-tree over the gaps' last numbers answers "the last gap, in order of first number,
    that starts at or before n and reaches n" without walking the gaps in between."""

    def __init__(self, gaps: list[_Gap]) -> None:
        self._gaps = sorted(gaps, key=lambda g: g.first)
        self._firsts = [g.first for g in self._gaps]
        self._leaves = 1
        while self._leaves < len(self._gaps):
            self._leaves *= 2
        reach = [-1] * (2 * self._leaves)  # node i: the furthest last number below it
        reach[self._leaves : self._leaves + len(self._gaps)] = [g.last for g in self._gaps]
        for node in range(self._leaves - 1, 0, -1):
            reach[node] = max(reach[2 * node], reach[2 * node + 1])
        self._reach = reach

    def covering(self, seq: int) -> _Gap | None:
        """The gap holding ``seq`` that starts last, or None."""
        at = bisect.bisect_right(self._firsts, seq) - 1
        found = self._rightmost(1, 0, self._leaves, at, seq) if at >= 0 else None
        return None if found is None else self._gaps[found]

    def _rightmost(self, node: int, low: int, high: int, at: int, seq: int) -> int | None:
        """The highest gap index up to ``at``, among ``node``'s (``low``..``high`` - 1),
        whose gap reaches ``seq``."""
        if low > at or self._reach[node] < seq:
            return None
        if high - low == 1:
            return low
        middle = (low + high) // 2
        found = self._rightmost(2 * node + 1, middle, high, at, seq)
        return found if found is not None else self._rightmost(2 * node, low, middle, at, seq)

    def overlapping(self, first: int, last: int) -> list[_Gap]:
        """The gaps sharing a number with first..last, in order of first number."""
        upto = bisect.bisect_right(self._firsts, last) - 1
        found: list[int] = []
        self._reaching(1, 0, self._leaves, upto, first, found)
        return [self._gaps[index] for index in found]

    def _reaching(
        self, node: int, low: int, high: int, upto: int, first: int, found: list[int]
    ) -> None:
        if low > upto or self._reach[node] < first:
            return
        if high - low == 1:
            found.append(low)
            return
        middle = (low + high) // 2
        self._reaching(2 * node, low, middle, upto, first, found)
        self._reaching(2 * node + 1, middle, high, upto, first, found)

    def next_first(self, seq: int) -> int | None:
        """The first number of the nearest gap starting after ``seq``."""
        at = bisect.bisect_right(self._firsts, seq)
        return self._firsts[at] if at < len(self._firsts) else None


def _uncovered(first: int, last: int, gaps: _GapIndex) -> list[tuple[int, int, _Gap | None]]:
    """Split first..last into runs, each announced by a gap or not."""
    runs: list[tuple[int, int, _Gap | None]] = []
    seq = first
    while seq <= last:
        gap = gaps.covering(seq)
        if gap is not None:
            end = min(gap.last, last)
        else:
            start = gaps.next_first(seq)
            end = last if start is None or start > last else start - 1
        runs.append((seq, end, gap))
        seq = end + 1
    return runs


def _without(runs: Runs, present: list[int]) -> Runs:
    """``runs`` minus the sorted seqs ``present``: O(len(runs) + len(present))."""
    out = []
    for low, high in runs:
        at = bisect.bisect_left(present, low)
        while low <= high:
            if at < len(present) and present[at] <= high:
                if present[at] > low:
                    out.append((low, present[at] - 1))
                low = present[at] + 1
                at += 1
            else:
                out.append((low, high))
                break
    return tuple(out)
