"""The rules every object a phone uses must pass, whether it came in a folder or live.

`doorbell.phone.chain` applies them to a set of objects, `doorbell.phone.watch` to each
message from the broker: one implementation of FORMAT.md sections 4.1 and 7 for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from doorbell.phone.memory import KnownKeyring
from doorbell.sealing import (
    Keyring,
    Kind,
    Opened,
    SealingError,
    Suite,
    check_meta,
    recipient_tag,
)


class ObjectRejected(SealingError):
    """An authentic object that breaks a payload rule: no part of it may be used."""


# FORMAT.md section 4.1: why a ``discarded`` notice may let numbers go, and how a phone
# reports the numbers of its ranges. "quota": evicted to stay within the spool's quota;
# "damaged": the spooled file was found damaged, so it never reached this copy.
DISCARD_REASONS = {"quota": "announced as quota", "damaged": "announced: damaged on the doorbell"}


def discard_reason_problem(reason: str) -> str | None:
    """Why a ``discarded`` notice's ``reason`` is not one a device gives, or None."""
    if reason in DISCARD_REASONS:
        return None
    known = " and ".join(repr(r) for r in DISCARD_REASONS)
    return f"reason {reason!r}; only {known} discards exist"


def announced_as(reason: str) -> str:
    """How a phone reports a range announced for ``reason`` (a discard, or a restart)."""
    return DISCARD_REASONS.get(reason, f"announced as {reason}")


def check_contents(opened: Opened) -> Keyring | None:
    """Check an opened object's meta for its kind, and parse a keyring object's document.

    Returns the keyring of a keyring object (None for other kinds). A keyring object's
    meta ``epoch``, payload epoch and document ``epoch`` must all be the same number."""
    try:
        check_meta(opened.kind, opened.meta)
    except SealingError as exc:
        raise ObjectRejected(str(exc)) from None
    if opened.kind is not Kind.KEYRING:
        return None
    try:
        keyring = Keyring.from_json(opened.body, f"keyring object {opened.seq}")
    except SealingError as exc:
        raise ObjectRejected(str(exc)) from None
    epochs = (opened.meta["epoch"], opened.epoch, keyring.epoch)
    if len(set(epochs)) != 1:
        raise ObjectRejected(
            f"keyring object {opened.seq}: meta epoch {epochs[0]}, payload epoch {epochs[1]} "
            f"and document epoch {epochs[2]} must be the same"
        )
    return keyring


class Addressed(Protocol):
    """What the stanza rule reads of an object: an `Envelope`, or the phone's record of one."""

    @property
    def device_id(self) -> bytes: ...

    @property
    def seq(self) -> int: ...

    @property
    def stanzas(self) -> Sequence[AddressedStanza]: ...


class AddressedStanza(Protocol):
    """What the stanza rule reads of one stanza: its suite and recipient tag."""

    @property
    def suite(self) -> Suite: ...

    @property
    def tag(self) -> bytes: ...


def stanza_mismatch(envelope: Addressed, keyring: Keyring) -> str | None:
    """Why the object's stanzas are not exactly one per recipient of ``keyring``, or None.

    Every phone has every recipient's public key, so it can compute every recipient's
    tag for this object (FORMAT.md section 3.2) and compare (suite, tag) sets."""
    expected = {
        (r.key.suite, recipient_tag(envelope.device_id, envelope.seq, r.key.suite, r.key.raw)): (
            r.name
        )
        for r in keyring.recipients
    }
    actual = [(stanza.suite, stanza.tag) for stanza in envelope.stanzas]
    reasons = []
    strangers = sum(1 for pair in actual if pair not in expected)
    if strangers:
        reasons.append(f"{strangers} stanza(s) for keys not in the keyring")
    if len(set(actual)) != len(actual):
        reasons.append("the same recipient has two stanzas")
    absent = [name for pair, name in expected.items() if pair not in actual]
    if absent:
        listed = ", ".join(repr(name) for name in absent[:5])
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        reasons.append(f"no stanza for {listed}{more}, listed in the keyring")
    if not reasons:
        return None
    return f"seq {envelope.seq}: stanzas are not exactly the keyring: " + "; ".join(reasons)


def epoch_rollback(
    seq: int,
    epoch: int,
    newest: tuple[int, int] | None,
    remembered: KnownKeyring | None,
) -> str | None:
    """Why sealing ``seq`` under ``epoch`` is a keyring rollback, or None.

    ``newest`` is (seq, epoch) of the highest epoch among earlier objects; ``remembered``
    the newest keyring object this phone saw before. Epochs never go back along seq."""
    if newest is not None and seq > newest[0] and epoch < newest[1]:
        return (
            f"keyring rollback: seq {seq} is sealed under epoch {epoch}, but seq {newest[0]} "
            f"was already sealed under epoch {newest[1]}"
        )
    if remembered is not None and seq > remembered.seq and epoch < remembered.epoch:
        return (
            f"keyring rollback: seq {seq} is sealed under epoch {epoch}, but this phone has "
            f"already seen keyring epoch {remembered.epoch} (seq {remembered.seq})"
        )
    return None
