"""The rules every object a phone uses must pass, whether it came in a folder or live.

`doorbell.phone.chain` applies them to a set of objects, `doorbell.phone.watch` to each
message from the broker: one implementation of FORMAT.md sections 4.1 and 7 for both.
"""

from __future__ import annotations

from doorbell.phone.memory import KnownKeyring
from doorbell.sealing import Envelope, Keyring, Kind, Opened, SealingError
from doorbell.sealing.format import check_meta, recipient_tag


class ObjectRejected(SealingError):
    """An authentic object that breaks a payload rule: no part of it may be used."""


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


def stanza_mismatch(envelope: Envelope, keyring: Keyring) -> str | None:
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
