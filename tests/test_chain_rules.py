"""Every chain, notice and keyring rule of FORMAT.md, broken on purpose by a device key made
here (as a stolen doorbell could), written to a real folder and run through the real
``doorbell-phone verify`` and ``sync``: each broken rule fails with exit 1 and names what
broke; the honest version of each passes with exit 0."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chain_builder import (
    ADDED,
    TIME_US,
    Forger,
    clip_end_meta,
    event_meta,
    init_meta,
    new_id,
    quota_meta,
    restart_meta,
    segment_meta,
)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from doorbell.phone.cli import main
from doorbell.phone.memory import PhoneMemory
from doorbell.sealing import Keyring, Kind, RecipientPrivateKey, Suite
from doorbell.sealing.format import ZERO_PREV, parse_envelope, signed_message
from doorbell.sealing.keys import DEVICE_PUBLIC_PREFIX, encode_key_string
from doorbell.sealing.reader import ED25519_L

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def forger(tmp_path: Path) -> Iterator[Forger]:
    yield Forger(tmp_path)


def verify(forger: Forger, capsys: Capture, *, skip: tuple[int, ...] = ()) -> tuple[int, str]:
    forger.write(skip=skip)
    code = forger.verify()
    return code, capsys.readouterr().out


def sync(forger: Forger, capsys: Capture, out: str = "copy") -> tuple[int, str]:
    home = str(forger.home.directory)
    code = main(["--home", home, "sync", str(forger.bucket), "--out", str(forger.root / out)])
    return code, capsys.readouterr().out


def in_subprocess(forger: Forger, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process, with a deadline: a stalled reader fails the test."""
    code = "import sys; from doorbell.phone.cli import main; sys.exit(main(sys.argv[1:]))"
    home = ["--home", str(forger.home.directory)]
    return subprocess.run(
        [sys.executable, "-c", code, *home, *argv], capture_output=True, text=True, timeout=60
    )


# --- the honest chain ---------------------------------------------------------------------


def test_an_honest_chain_verifies_and_verify_remembers_nothing(
    forger: Forger, capsys: Capture
) -> None:
    forger.start(3)
    code, out = verify(forger, capsys)
    assert code == 0, out
    assert out.splitlines() == [f"ok: 4 object(s) verified in {forger.bucket}"]
    assert not (forger.home.directory / "seen.json").exists()


# --- links: reordered, spliced, replaced, forked, renamed (section 6) ----------------------


@pytest.mark.parametrize("n_present", [False, True], ids=["N-absent", "N-present"])
def test_reordered_at_the_head_of_the_chain(
    forger: Forger, capsys: Capture, n_present: bool
) -> None:
    """Seq N+1 whose prev names N-3: the device signed a link §6 calls reordered."""
    forger.start(4)  # 0..4: N = 4
    forger.seal(5, forger.hash(1), Kind.EVENT, event_meta(stream=""))
    code, out = verify(forger, capsys, skip=() if n_present else (4,))
    assert code == 1
    assert (
        f"FAIL   {forger.name(5)}: chain: seq 5 names seq 1 as its predecessor, not seq 4 "
        "(reordered or spliced)" in out
    )


def test_replaced_predecessor(forger: Forger, capsys: Capture) -> None:
    forger.start(3)
    forger.seal(4, os.urandom(32), Kind.EVENT, event_meta(stream=""))
    code, out = verify(forger, capsys)
    assert code == 1
    assert f"{forger.name(4)}: chain: seq 4 does not follow seq 3 (one was replaced)" in out


def test_seq_zero_must_start_the_chain_and_no_other_object_may(
    forger: Forger, capsys: Capture
) -> None:
    forger.seal(0, os.urandom(32), Kind.KEYRING, {"epoch": 1}, forger.keyring.to_json())
    forger.append(Kind.EVENT, event_meta(stream=""))
    forger.seal(2, ZERO_PREV, Kind.EVENT, event_meta(stream=""))
    code, out = verify(forger, capsys)
    assert code == 1
    assert "chain: seq 0 must start the chain (prev all zero)" in out
    assert "chain: seq 2 claims to start the chain but is not seq 0" in out


def test_renamed_object(forger: Forger, capsys: Capture) -> None:
    forger.start(2)
    forger.write()
    (forger.bucket / forger.name(2)).rename(forger.bucket / forger.name(7))
    assert forger.verify() == 1
    out = capsys.readouterr().out
    assert f"{forger.name(7)}: holds seq 2 of device {forger.short}" in out


def test_fork_against_an_object_the_phone_verified_before(forger: Forger, capsys: Capture) -> None:
    forger.start(3)
    forger.write()
    assert sync(forger, capsys)[0] == 0
    forger.seal(3, forger.hash(2), Kind.EVENT, event_meta("motion", stream=""))  # same seq
    code, out = verify(forger, capsys)
    assert code == 1
    assert (
        f"{forger.name(3)}: fork: seq 3 differs from the object with that seq this phone "
        "verified before" in out
    )


# --- restart notices (section 6) ------------------------------------------------------------


def restart_run(forger: Forger, notice: int, meta: dict[str, object], prev: bytes) -> None:
    forger.seal(notice, prev, Kind.NOTICE, meta)
    forger.keyring_object()
    forger.append(Kind.EVENT, event_meta(stream=""))


def test_an_honest_restart_is_announced(forger: Forger, capsys: Capture) -> None:
    forger.start(3)  # head: seq 3
    restart_run(forger, 10, restart_meta((3, forger.hash(3)), 4, 9), forger.hash(3))
    code, out = verify(forger, capsys)
    assert code == 0, out
    assert f"note   device {forger.short}: seq 4..9 announced as restart" in out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("prev-not-previous-hash", "restart notice seq 10: its prev is not previous.hash"),
        ("first-not-after-previous", "skipped is 6..9, must be 4..9"),
        ("last-not-before-notice", "skipped is 4..8, must be 4..9"),
        ("more-than-a-block", "more than one reservation block (1024)"),
        ("null-with-older-objects", "says no chain head was recorded (previous: null)"),
        ("previous-hash-wrong", "previous.hash is not the chain hash of seq 3"),
        ("hides-delivered", "but seq 4 was delivered (in this set): notice hides a delivered"),
    ],
)
def test_a_restart_notice_that_breaks_a_rule_fails(
    forger: Forger, capsys: Capture, case: str, message: str
) -> None:
    forger.start(3)
    head = (3, forger.hash(3))
    notice, prev, meta = 10, forger.hash(3), restart_meta(head, 4, 9)
    if case == "prev-not-previous-hash":
        prev = forger.hash(2)
    elif case == "first-not-after-previous":
        meta = restart_meta(head, 6, 9)
    elif case == "last-not-before-notice":
        meta = restart_meta(head, 4, 8)
    elif case == "more-than-a-block":
        notice = 3 + 1 + 2000
        meta = restart_meta(head, 4, notice - 1)
    elif case == "null-with-older-objects":
        prev, meta = ZERO_PREV, restart_meta(None, 0, 9)
    elif case == "previous-hash-wrong":
        fake = os.urandom(32)
        prev, meta = fake, restart_meta((3, fake), 4, 9)
    else:  # the stale head a power cut used to leave: 4 and 5 were delivered
        forger.append(Kind.EVENT, event_meta(stream=""))
        forger.append(Kind.EVENT, event_meta(stream=""))
    restart_run(forger, notice, meta, prev)
    code, out = verify(forger, capsys)
    assert code == 1, out
    assert message in out, out


def test_power_cut_deletion_of_what_the_phone_saw_is_reported(
    forger: Forger, capsys: Capture
) -> None:
    """Objects 4 and 5 were uploaded and seen by the phone; the bucket deletes them and a
    restart notice (signed with the device key) claims the head was 3."""
    forger.start(5)
    forger.write()
    assert sync(forger, capsys)[0] == 0  # the phone remembers seq 5
    restart_run(forger, 10, restart_meta((3, forger.hash(3)), 4, 9), forger.hash(3))
    code, out = verify(forger, capsys, skip=(4, 5))
    assert code == 1
    assert (
        "restart notice seq 10 skips 4..9, but seq 4 was delivered (earlier (remembered)): "
        "notice hides a delivered object" in out
    )


def test_previous_null_is_refused_when_the_phone_remembers_older_objects(
    forger: Forger, capsys: Capture
) -> None:
    forger.start(3)
    forger.write()
    assert sync(forger, capsys)[0] == 0
    restart_run(forger, 10, restart_meta(None, 0, 9), ZERO_PREV)
    code, out = verify(forger, capsys, skip=(0, 1, 2, 3))
    assert code == 1
    assert "says no chain head was recorded (previous: null), but this phone knows seq 0" in out


# --- discarded notices (section 6) ------------------------------------------------------------


def quota_run(forger: Forger, meta: dict[str, object] | None = None) -> None:
    """0 keyring, 1 event, 2..5 continuous segments, 6 a quota notice for 2..3."""
    forger.start(1)
    stream = new_id()
    for index in range(4):
        forger.append(Kind.SEGMENT, segment_meta(stream, index), b"moof")
    forger.append(Kind.NOTICE, meta or quota_meta((2, 3, forger.hash(3))))


def test_an_honest_quota_eviction_is_announced(forger: Forger, capsys: Capture) -> None:
    quota_run(forger)
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 0, out
    assert f"note   device {forger.short}: seq 2..3 announced as quota" in out


def test_an_evicted_object_a_faster_sink_took_is_a_note(forger: Forger, capsys: Capture) -> None:
    quota_run(forger)
    code, out = verify(forger, capsys, skip=(2,))
    assert code == 0, out
    assert "1 object(s) in 2..3 (first seq 3) are here although notice seq 6" in out


@pytest.mark.parametrize(
    ("ranges", "reason", "message"),
    [
        ([(2, 3)], "pre-roll", "reason 'pre-roll'; only 'quota' and 'damaged' discards exist"),
        ([(2, 6)], "quota", "range 2..6 is not first <= last < the notice's seq"),
        ([(3, 2)], "quota", "range 3..2 is not first <= last < the notice's seq"),
        ([(2, 3), (3, 3)], "quota", "discarded notice seq 6: its ranges 2..3 and 3..3 overlap"),
    ],
    ids=["pre-roll", "past-the-notice", "reversed", "overlap"],
)
def test_a_discarded_notice_that_breaks_a_rule_fails(
    forger: Forger, capsys: Capture, ranges: list[tuple[int, int]], reason: str, message: str
) -> None:
    quota_run(forger, {"notice": "discarded"})  # replaced below, once the hashes exist
    meta = quota_meta(*[(a, b, forger.hash(3)) for a, b in ranges], reason=reason)
    forger.seal(6, forger.hash(5), Kind.NOTICE, meta)
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 1
    assert message in out, out


def test_a_wrong_last_hash_breaks_the_bridge(forger: Forger, capsys: Capture) -> None:
    quota_run(forger)
    forger.seal(6, forger.hash(5), Kind.NOTICE, quota_meta((2, 3, os.urandom(32))))
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 1
    assert "chain: seq 4 does not follow the gap notice seq 6 announced" in out


def test_a_malformed_last_hash_is_rejected(forger: Forger, capsys: Capture) -> None:
    quota_run(forger)
    meta = {"notice": "discarded", "reason": "quota", "ranges": [{"first": 2, "last": 3}]}
    meta["ranges"][0]["last_hash"] = "not hex"
    forger.seal(6, forger.hash(5), Kind.NOTICE, meta)
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 1
    assert "rejected: discarded notice meta: range 0: 'last_hash' is \"not hex\"" in out
    assert "missing seq 2..3" in out  # a rejected notice announces nothing


def test_an_eviction_hiding_an_object_the_phone_saw_fails(forger: Forger, capsys: Capture) -> None:
    """Any remembered object the device never evicts, not only the newest: a ring at seq 2
    that a stolen key deletes and covers with a quota notice."""
    forger.start(1)
    forger.append(Kind.EVENT, event_meta(stream=""))  # seq 2: the ring of the theft
    forger.append(Kind.EVENT, event_meta(kind="motion", stream=""))  # seq 3
    forger.write()
    assert sync(forger, capsys)[0] == 0  # remembers 0..3, not only the head
    forger.append(Kind.NOTICE, quota_meta((2, 2, forger.hash(2))))
    code, out = verify(forger, capsys, skip=(2,))
    assert code == 1
    assert (
        "saw seq 2 earlier, of a kind the device never evicts, and it is absent: notice hides "
        "a delivered object" in out
    )


def test_a_segment_one_sink_took_may_be_evicted_from_another(
    forger: Forger, capsys: Capture
) -> None:
    """The local folder took segments 2..3; the bucket's queue lost them to quota."""
    forger.start(1)
    stream = new_id()
    forger.append(Kind.SEGMENT, segment_meta(stream, 0))
    forger.append(Kind.SEGMENT, segment_meta(stream, 1))  # seq 3
    forger.write()
    assert sync(forger, capsys, "local-copy")[0] == 0  # remembers 0..3
    forger.append(Kind.NOTICE, quota_meta((2, 3, forger.hash(3))))
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 0, out
    assert "seq 2..3 announced as quota" in out


# --- eviction order: continuous recording first ---------------------------------------------


def clip_with_continuous(forger: Forger, *, continuous: int) -> tuple[str, str]:
    """0 keyring, 1 init, 2 ring, 3..5 the clip's segments 0..2, 6 clip-end, then
    ``continuous`` continuous segments (index 3..)."""
    stream, clip = new_id(), new_id()
    forger.keyring_object()
    forger.append(Kind.INIT, init_meta(stream), b"ftyp")
    forger.append(Kind.EVENT, event_meta(clip=clip, stream=stream))
    for index in range(3):
        forger.append(Kind.SEGMENT, segment_meta(stream, index), b"clip")
    forger.append(Kind.NOTICE, clip_end_meta(clip, stream, 2))
    for index in range(3, 3 + continuous):
        forger.append(Kind.SEGMENT, segment_meta(stream, index), b"continuous")
    return stream, clip


def test_evicting_a_clip_while_continuous_recording_survives_fails(
    forger: Forger, capsys: Capture
) -> None:
    _, clip = clip_with_continuous(forger, continuous=2)  # continuous: seq 7, 8
    notice = forger.append(Kind.NOTICE, quota_meta((4, 4, forger.hash(4))))  # clip index 1
    code, out = verify(forger, capsys, skip=(4,))
    assert code == 1
    assert (
        f"{forger.name(notice)}: quota notice seq 9 evicted segment(s) 1 of clip {clip[:8]} "
        "while continuous recording seq 7, sealed after them and before the eviction, "
        "survived: eviction order violated" in out
    )


def test_evicting_continuous_recording_first_passes(forger: Forger, capsys: Capture) -> None:
    clip_with_continuous(forger, continuous=2)
    forger.append(Kind.NOTICE, quota_meta((7, 7, forger.hash(7))))
    code, out = verify(forger, capsys, skip=(7,))
    assert code == 0, out


def test_evicting_a_clip_when_only_the_forcing_segment_is_continuous_passes(
    forger: Forger, capsys: Capture
) -> None:
    """Seq 7 is the continuous segment whose spooling forced the eviction: never evictable."""
    clip_with_continuous(forger, continuous=1)
    forger.append(Kind.NOTICE, quota_meta((4, 4, forger.hash(4))))
    code, out = verify(forger, capsys, skip=(4,))
    assert code == 0, out


# --- ranges are ranges -------------------------------------------------------------------


def test_a_notice_claiming_2_to_the_63_numbers_does_not_stall_the_reader(
    forger: Forger,
) -> None:
    forger.start(1)
    big = 2**62
    bridge = os.urandom(32)
    forger.seal(big, bridge, Kind.NOTICE, quota_meta((2, big - 1, bridge)))
    head = (big, forger.hash(big))
    forger.seal(2**63, forger.hash(big), Kind.NOTICE, restart_meta(head, big + 1, 2**63 - 1))
    forger.seal(2**63 + 1, forger.hash(2**63), Kind.EVENT, event_meta(stream=""))
    forger.write()
    run = in_subprocess(forger, "verify", str(forger.bucket))
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"seq 2..{big - 1} announced as quota" in run.stdout
    assert "skipped covers 4611686018427387903 numbers, more than one reservation block" in (
        run.stdout
    )


# --- keyrings and stanzas (section 7) -------------------------------------------------------


def test_a_stanza_for_a_key_not_in_the_keyring_fails(forger: Forger, capsys: Capture) -> None:
    forger.start(1)
    stranger = RecipientPrivateKey.generate(Suite.X25519).public_key()
    extra = forger.keyring.add("mallory", stranger, forger.keyring.recipients[0].added)
    same_epoch = dataclasses.replace(extra, epoch=forger.keyring.epoch)
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=same_epoch)
    code, out = verify(forger, capsys)
    assert code == 1
    assert (
        f"{forger.name(2)}: keyring epoch 1: seq 2: stanzas are not exactly the keyring: "
        "1 stanza(s) for keys not in the keyring" in out
    )


def test_a_listed_recipient_without_a_stanza_fails(forger: Forger, capsys: Capture) -> None:
    bob = RecipientPrivateKey.generate(Suite.MLKEM768_X25519).public_key()
    both = forger.keyring.add("bob", bob, forger.keyring.recipients[0].added)
    forger.keyring_object(both)  # epoch 2: the phone and bob
    alone = dataclasses.replace(forger.keyring, epoch=both.epoch)
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=alone)
    code, out = verify(forger, capsys)
    assert code == 1
    assert "seq 1: stanzas are not exactly the keyring: no stanza for 'bob'" in out


def test_an_object_this_phone_cannot_open_is_checked_between_two_of_its_epoch(
    forger: Forger, capsys: Capture
) -> None:
    forger.start(1)
    stranger = RecipientPrivateKey.generate(Suite.X25519).public_key()
    others = dataclasses.replace(
        Keyring().add("other", stranger, forger.keyring.recipients[0].added),
        epoch=forger.keyring.epoch,
    )
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=others)  # seq 2: not for us
    forger.append(Kind.EVENT, event_meta(stream=""))
    code, out = verify(forger, capsys)
    assert code == 1
    assert (
        "keyring epoch 1 (the objects around it were sealed under it): seq 2: stanzas are "
        "not exactly the keyring: 1 stanza(s) for keys not in the keyring; no stanza for "
        "'test-phone'" in out
    )


@pytest.mark.parametrize(
    ("body", "meta_epoch", "message"),
    [
        (None, 5, "meta epoch 5, payload epoch 1 and document epoch 1 must be the same"),
        (b"duplicate", 1, "not a JSON keyring: duplicate key 'recipients'"),
        (b"nan", 1, "not a JSON keyring: NaN is not a JSON number"),
    ],
)
def test_a_keyring_object_that_breaks_a_rule_is_rejected(
    forger: Forger, capsys: Capture, body: bytes | None, meta_epoch: int, message: str
) -> None:
    document = forger.keyring.to_json()
    if body == b"duplicate":
        document = document.replace(b'"recipients"', b'"recipients": [], "recipients"', 1)
    elif body == b"nan":
        document = document.replace(b'"epoch": 1', b'"epoch": 1, "x": NaN', 1)
    forger.seal(0, ZERO_PREV, Kind.KEYRING, {"epoch": meta_epoch}, document)
    forger.append(Kind.EVENT, event_meta(stream=""))
    code, out = verify(forger, capsys)
    assert code == 1
    assert f"FAIL   {forger.name(0)}: rejected: " in out
    assert message in out, out


def test_epochs_never_go_back_within_a_set(forger: Forger, capsys: Capture) -> None:
    bob = RecipientPrivateKey.generate(Suite.X25519).public_key()
    newer = forger.keyring.add("bob", bob, forger.keyring.recipients[0].added)
    forger.keyring_object(newer)
    forger.keyring_object()  # epoch 1 again: a restored keyring file
    code, out = verify(forger, capsys)
    assert code == 1
    assert "keyring rollback: seq 1 is sealed under epoch 1, but seq 0 was already" in out


def test_a_keyring_older_than_the_one_the_phone_saw_is_a_rollback(
    forger: Forger, capsys: Capture
) -> None:
    bob = RecipientPrivateKey.generate(Suite.X25519).public_key()
    newer = forger.keyring.add("bob", bob, forger.keyring.recipients[0].added)
    forger.keyring_object(newer)
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=newer)
    forger.write()
    assert sync(forger, capsys)[0] == 0
    assert PhoneMemory(forger.home.directory).load()[forger.device_id].keyring.epoch == 2  # type: ignore[union-attr]
    forger.keyring_object()  # seq 2, epoch 1
    code, out = verify(forger, capsys, skip=(0, 1))
    assert code == 1
    assert (
        "keyring rollback: seq 2 is sealed under epoch 1, but this phone has already seen "
        "keyring epoch 2 (seq 0)" in out
    )


# --- strict JSON in meta (section 4) -------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (b'{"type":"ring","type":"motion"}', "duplicate key 'type'"),
        (b'{"position":NaN}', "NaN is not a JSON number"),
        (b'{"position":-Infinity}', "-Infinity is not a JSON number"),
        (b'{"position":1e999}', "number 1e999 does not fit a double"),
        (b'{"position":1' + b"0" * 400 + b"}", "an integer of 401 digits does not fit a double"),
        (b'{"position":%d}' % 2**1024, "an integer of 309 digits does not fit a double"),
        (b'{"type":"\xff"}', "not UTF-8: byte 9"),
        (b'\xef\xbb\xbf{"type":"ring"}', "starts with a byte-order mark"),
        (b'{"type":"\\ud800"}', "holds an unpaired surrogate"),
    ],
    ids=[
        "duplicate",
        "nan",
        "infinity",
        "overflow",
        "huge-integer",
        "2^1024",
        "utf8",
        "bom",
        "surrogate",
    ],
)
def test_meta_that_is_not_strict_json_is_rejected(
    forger: Forger, capsys: Capture, meta: bytes, message: str
) -> None:
    forger.start(1)
    forger.seal_raw_meta(2, forger.hash(1), Kind.EVENT, meta)
    code, out = verify(forger, capsys)
    assert code == 1
    assert f"FAIL   {forger.name(2)}: signed but does not open: payload: metadata: " in out
    assert message in out, out


@pytest.mark.parametrize(
    ("kind", "meta", "message"),
    [
        (Kind.EVENT, {"type": "ring"}, "event meta: 'clip' is missing"),
        (Kind.SEGMENT, {**segment_meta("a" * 32, 0), "index": -1}, "'index' is -1, must be"),
        (Kind.INIT, {**init_meta("a" * 32), "fps": "30"}, "'fps' is \"30\", must be a number"),
        (Kind.NOTICE, {"notice": "pre-roll"}, "'notice' is \"pre-roll\", must be clip-end or"),
        (Kind.KEYRING, {"epoch": True}, "keyring meta: 'epoch' is true"),
    ],
    ids=["event", "segment", "init", "notice", "keyring"],
)
def test_meta_missing_a_required_key_is_rejected(
    forger: Forger, capsys: Capture, kind: Kind, meta: dict[str, object], message: str
) -> None:
    forger.start(1)
    forger.append(kind, meta)
    code, out = verify(forger, capsys)
    assert code == 1
    assert f"FAIL   {forger.name(2)}: rejected: " in out
    assert message in out, out


# --- signatures: strict Ed25519 (section 5) ------------------------------------------------


def test_a_non_canonical_signature_is_rejected(forger: Forger, capsys: Capture) -> None:
    forger.start(1)
    data = forger.objects[1]
    s_plus_l = int.from_bytes(data[-32:], "little") + ED25519_L
    forged = data[:-32] + s_plus_l.to_bytes(32, "little")
    forger.objects[1] = forged
    # OpenSSL itself refuses S >= L (this pins that); the reader checks it first anyway.
    public = ed25519.Ed25519PublicKey.from_public_bytes(forger.device.public_key.raw)
    envelope = parse_envelope(forged)
    with pytest.raises(InvalidSignature):
        public.verify(forged[-64:], signed_message(forged[: envelope.signed_len]))
    code, out = verify(forger, capsys)
    assert code == 1
    assert (
        f"FAIL   {forger.name(1)}: tampered or forged: device signature is not canonical "
        "(S is not below the group order)" in out
    )


def test_a_non_canonical_device_key_cannot_be_trusted(tmp_path: Path, capsys: Capture) -> None:
    # y = p + 1 encodes the identity point: OpenSSL verifies (R = identity, S = 0) under it.
    identity_in_disguise = (2**255 - 19 + 1).to_bytes(32, "little")
    text = encode_key_string(DEVICE_PUBLIC_PREFIX, identity_in_disguise)
    home = str(tmp_path / "phone")
    assert main(["--home", home, "trust", text]) == 2
    assert capsys.readouterr().err == (
        "doorbell-phone: device public key is not a canonical Ed25519 encoding\n"
    )


# --- sync: the bucket must hold the newest object the phone has seen -------------------------


def test_sync_reports_newest_objects_missing_from_the_bucket(
    forger: Forger, capsys: Capture
) -> None:
    forger.start(3)
    forger.write()
    code, out = sync(forger, capsys)
    assert code == 0, out
    (forger.bucket / forger.name(3)).unlink()
    (forger.bucket / forger.name(2)).unlink()
    code, out = sync(forger, capsys, out="fresh-copy")
    assert code == 1
    assert (
        f"FAIL     device {forger.short}: newest objects not in the bucket yet, or deleted: "
        "this phone has seen seq 3 (live, or in another copy), but the bucket ends at seq 1; "
        "sync again once the doorbell has uploaded: still missing then, they were deleted"
    ) in out
    # The copy made before fetched them from this bucket: deleted, certainly.
    code, out = sync(forger, capsys)
    assert code == 1
    assert "not in the bucket yet" not in out
    for seq in (2, 3):
        assert f"{forger.name(seq)}: seq {seq} was fetched by an earlier sync" in out


# --- the phone's files are strict JSON too -------------------------------------------------


@pytest.mark.parametrize("file", ["trusted.json", "seen.json"])
def test_phone_files_with_duplicate_keys_are_refused(
    forger: Forger, capsys: Capture, file: str
) -> None:
    forger.start(1)
    forger.write()
    assert sync(forger, capsys)[0] == 0
    path = forger.home.directory / file
    text = path.read_text()
    empty = "{}" if file == "seen.json" else "[]"
    path.write_text(text.replace("{\n", '{"devices": ' + empty + ", ", 1))
    assert forger.verify() == 2
    err = capsys.readouterr().err
    assert err.startswith(f"doorbell-phone: {path}")
    assert "duplicate key 'devices'" in err
    assert err.count("\n") == 1


def test_seen_json_records_head_and_keyring(forger: Forger, capsys: Capture) -> None:
    forger.start(2)
    forger.write()
    assert sync(forger, capsys)[0] == 0
    document = json.loads((forger.home.directory / "seen.json").read_text())
    entry = document["devices"][forger.device_id.hex()]
    assert entry["head"] == {"seq": 2, "hash": forger.hash(2).hex()}
    assert entry["keyring"]["seq"] == 0
    assert json.loads(entry["keyring"]["document"])["epoch"] == 1


def test_a_clip_end_naming_index_2_to_the_63_does_not_stall_export(forger: Forger) -> None:
    stream, clip = new_id(), new_id()
    forger.keyring_object()
    forger.append(Kind.INIT, init_meta(stream), b"ftyp")
    forger.append(Kind.EVENT, event_meta(clip=clip, stream=stream))
    forger.append(Kind.SEGMENT, segment_meta(stream, 0), b"moof")
    forger.append(Kind.NOTICE, clip_end_meta(clip, stream, 2**63))
    forger.write()
    run = in_subprocess(forger, "export", str(forger.bucket), "--out", str(forger.root / "clips"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"segments 1..{2**63} are missing; the clip has a gap" in run.stdout


def test_sync_enforces_the_same_rules_as_verify(forger: Forger, capsys: Capture) -> None:
    """The stale-head forgery through ``sync``: the copy fails exactly as ``verify`` does."""
    forger.start(5)
    restart_run(forger, 10, restart_meta((3, forger.hash(3)), 4, 9), forger.hash(3))
    forger.write()
    code, out = sync(forger, capsys)
    assert code == 1
    assert "restart notice seq 10 skips 4..9, but seq 4 was delivered (in this set)" in out
    assert out.splitlines()[-1].startswith("FAILED: ")


def test_a_sync_state_file_with_duplicate_keys_exits_2(forger: Forger, capsys: Capture) -> None:
    forger.start(1)
    forger.write()
    copy = forger.root / "copy"
    copy.mkdir()
    (copy / "sync-state.json").write_text('{"version": 1, "clips": {}, "clips": {}}')
    home = str(forger.home.directory)
    assert main(["--home", home, "sync", str(forger.bucket), "--out", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"doorbell-phone: {copy / 'sync-state.json'} is damaged (duplicate key 'clips'); "
        "remove it to export every clip again\n"
    )


# --- the hostile review: what an unopenable object, memory and sync may not hide ---------


def stranger_keyring() -> Keyring:
    stranger = RecipientPrivateKey.generate(Suite.X25519).public_key()
    return Keyring().add("stranger", stranger, ADDED)


def test_an_object_withheld_from_this_phone_does_not_excuse_a_gap(
    forger: Forger, capsys: Capture
) -> None:
    """Rings 2..3 deleted without a notice; seq 5 is sealed to a stranger, between objects
    of keyring epochs 1 and 2, both listing this phone: it cannot be a notice for others."""
    forger.start(4)
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=stranger_keyring())  # 5
    forger.keyring = dataclasses.replace(forger.keyring, epoch=forger.keyring.epoch + 1)
    forger.keyring_object()  # 6
    forger.append(Kind.EVENT, event_meta(stream=""))
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 1
    assert (
        f"FAIL   {forger.name(5)}: seq 5 lacks this phone's stanza, but lies between objects "
        "sealed under keyring epochs 1 and 2, and every keyring from one to the other lists "
        "this phone (withheld from it, or forged)" in out
    )
    assert f"FAIL   device {forger.short}: missing seq 2..3 (deleted or never delivered)" in out


def test_remembered_rings_behind_an_object_for_a_stranger_are_missing(
    forger: Forger, capsys: Capture
) -> None:
    forger.start(4)
    forger.write()
    assert sync(forger, capsys)[0] == 0  # remembers 0..4
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=stranger_keyring())  # 5
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 1
    assert (
        f"FAIL   device {forger.short}: missing seq 2..3 (deleted or never delivered; this "
        "phone saw seq 2 earlier)" in out
    )


def test_a_late_enrolled_phone_cannot_confirm_gaps_before_it_and_says_so(
    forger: Forger, capsys: Capture
) -> None:
    """Honest: 0..5 sealed before this phone was enrolled, 2..3 evicted and announced in a
    notice it cannot read; the keyring object at 6 enrols it."""
    before = stranger_keyring()
    stream = new_id()
    forger.keyring_object(before)
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=before)
    forger.append(Kind.SEGMENT, segment_meta(stream, 0), keyring=before)
    forger.append(Kind.SEGMENT, segment_meta(stream, 1), keyring=before)
    forger.append(Kind.NOTICE, quota_meta((2, 3, forger.hash(3))), keyring=before)
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=before)
    recipient = forger.keyring.recipients[0]
    forger.keyring = before.add(recipient.name, recipient.key, ADDED)
    forger.keyring_object()  # 6
    forger.append(Kind.EVENT, event_meta(stream=""))
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 0, out
    assert (
        f"note   device {forger.short}: seq 2..3 absent, followed by objects not sealed to this "
        "phone (seq 5 the newest): cannot confirm whether a notice among them announced it"
    ) in out


def test_a_revoked_phone_cannot_confirm_gaps_announced_after_it_and_says_so(
    forger: Forger, capsys: Capture
) -> None:
    """Honest: segments 2..3 of this phone's time are evicted, and announced only after the
    keyring object at 5 revoked it."""
    stream = new_id()
    forger.start(1)
    for index in range(3):
        forger.append(Kind.SEGMENT, segment_meta(stream, index))  # 2..4
    revoked = stranger_keyring()
    forger.keyring = dataclasses.replace(revoked, epoch=forger.keyring.epoch + 1)
    forger.keyring_object()  # 5, not sealed to this phone
    forger.append(Kind.NOTICE, quota_meta((2, 3, forger.hash(3))))  # 6
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 0, out
    assert f"note   device {forger.short}: seq 2..3 absent, followed by objects" in out


def test_objects_under_a_keyring_never_published_fail(forger: Forger, capsys: Capture) -> None:
    """A stolen key adds an eavesdropper under a new epoch and never publishes it."""
    forger.start(2)
    spy = RecipientPrivateKey.generate(Suite.X25519).public_key()
    spied = forger.keyring.add("spy", spy, ADDED)
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=spied)
    code, out = verify(forger, capsys)
    assert code == 1
    assert (
        f"FAIL   {forger.name(3)}: seq 3 is sealed under keyring epoch 2, but no keyring object "
        "of epoch 2 comes before it (present or remembered): a keyring never published" in out
    )


def test_a_restart_notice_precedes_the_keyring_object_of_its_run(
    forger: Forger, capsys: Capture
) -> None:
    """Honest: the keyring changed while the device was down; its restart notice, sealed
    first, is under the new epoch and the keyring object follows it at once."""
    forger.start(3)
    partner = RecipientPrivateKey.generate(Suite.X25519).public_key()
    forger.keyring = forger.keyring.add("partner", partner, ADDED)
    forger.seal(10, forger.hash(3), Kind.NOTICE, restart_meta((3, forger.hash(3)), 4, 9))
    forger.keyring_object()  # 11
    forger.append(Kind.EVENT, event_meta(stream=""))
    code, out = verify(forger, capsys)
    assert code == 0, out


def test_a_restart_notice_under_an_epoch_whose_keyring_does_not_follow_fails(
    forger: Forger, capsys: Capture
) -> None:
    forger.start(3)
    partner = RecipientPrivateKey.generate(Suite.X25519).public_key()
    changed = forger.keyring.add("partner", partner, ADDED)
    meta = restart_meta((3, forger.hash(3)), 4, 9)
    forger.seal(10, forger.hash(3), Kind.NOTICE, meta, keyring=changed)
    forger.append(Kind.EVENT, event_meta(stream=""), keyring=changed)
    code, out = verify(forger, capsys)
    assert code == 1
    assert f"{forger.name(10)}: seq 10 is sealed under keyring epoch 2, but no keyring" in out
    assert f"{forger.name(11)}: seq 11 is sealed under keyring epoch 2, but no keyring" in out


def test_sync_reports_objects_deleted_from_the_bucket_since_an_earlier_sync(
    forger: Forger, capsys: Capture
) -> None:
    """No key needed: the bucket deletes a ring the phone fetched; the copy keeps it. With
    a stolen key the quota notice covering it changes nothing."""
    forger.start(3)
    forger.write()
    assert sync(forger, capsys)[0] == 0
    forger.append(Kind.EVENT, event_meta(kind="motion", stream=""))  # 4
    forger.append(Kind.NOTICE, quota_meta((2, 2, forger.hash(2))))  # 5
    forger.write(skip=(2,))
    code, out = sync(forger, capsys)
    assert code == 1
    assert (
        f"FAIL     {forger.bucket / forger.name(2)}: seq 2 was fetched by an earlier sync and "
        "is no longer there: deleted from the bucket since an earlier sync (this copy keeps it)"
    ) in out
    assert (forger.root / "copy" / "objects" / forger.name(2)).exists()


def test_a_huge_integer_in_meta_is_rejected_and_sync_does_not_trace_back(
    forger: Forger,
) -> None:
    """10^400 is a JSON integer, but no double: a JavaScript reader would read Infinity."""
    stream, clip = new_id(), new_id()
    forger.keyring_object()
    forger.append(Kind.INIT, init_meta(stream), b"ftyp")
    forger.append(Kind.EVENT, {**event_meta(clip=clip, stream=stream), "position": 10**400})
    forger.append(Kind.SEGMENT, {**segment_meta(stream, 0), "start": 10**400}, b"moof")
    forger.append(Kind.SEGMENT, segment_meta(stream, 1), b"moof")
    forger.append(Kind.NOTICE, clip_end_meta(clip, stream, 1))
    forger.write()
    run = in_subprocess(forger, "sync", str(forger.bucket), "--out", str(forger.root / "copy"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert (
        f"FAIL     {forger.name(2)}: signed but does not open: payload: metadata: an integer "
        "of 401 digits does not fit a double"
    ) in run.stdout


def test_a_sync_that_fails_remembers_nothing(forger: Forger, capsys: Capture) -> None:
    stream, clip = new_id(), new_id()
    forger.keyring_object()
    forger.append(Kind.INIT, init_meta(stream), b"ftyp")
    event = forger.append(Kind.EVENT, event_meta(clip=clip, stream=stream))
    forger.append(Kind.SEGMENT, segment_meta(stream, 0), b"moof")
    forger.write()
    # The clip cannot be written: a directory stands where its file goes.
    stamp = datetime.fromtimestamp((TIME_US + event) / 1e6, UTC).strftime("%Y%m%d-%H%M%S")
    (forger.root / "copy" / "clips" / f".{stamp}-ring-{clip[:8]}.mp4.part").mkdir(parents=True)
    home = str(forger.home.directory)
    code = main(["--home", home, "sync", str(forger.bucket), "--out", str(forger.root / "copy")])
    assert code == 2
    assert "Is a directory" in capsys.readouterr().err
    assert not (forger.home.directory / "seen.json").exists()


def test_a_quota_range_announced_again_after_a_restart_is_a_note(
    forger: Forger, capsys: Capture
) -> None:
    """The device stopped after spooling its quota notice and before deleting what it
    evicted: after the restart it evicts and announces the same objects again."""
    quota_run(forger)  # 6 announces 2..3
    forger.seal(7, forger.hash(6), Kind.NOTICE, restart_meta((6, forger.hash(6)), 7, 6))
    forger.keyring_object()  # 8
    forger.append(Kind.NOTICE, quota_meta((2, 3, forger.hash(3))))  # 9
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 0, out
    assert (
        f"note   device {forger.short}: range 2..3 announced by seq 9 overlaps range 2..3 "
        "announced by seq 6 (evicted again after a restart)"
    ) in out


def test_a_restart_skip_overlapping_a_quota_range_fails(forger: Forger, capsys: Capture) -> None:
    quota_run(forger)  # 6 announces 2..3, 4..5 present
    forger.seal(12, forger.hash(6), Kind.NOTICE, restart_meta((6, forger.hash(6)), 7, 11))
    forger.keyring_object()
    forger.append(Kind.NOTICE, quota_meta((7, 8, bytes(32))))
    code, out = verify(forger, capsys, skip=(2, 3))
    assert code == 1
    assert (
        f"FAIL   device {forger.short}: range 7..11 announced by seq 12 overlaps range 7..8 "
        "announced by seq 14\n" in out
    ), out


def test_a_restart_right_after_a_quota_range_must_name_its_last_object(
    forger: Forger, capsys: Capture
) -> None:
    forger.start(1)
    stream = new_id()
    for index in range(3):
        forger.append(Kind.SEGMENT, segment_meta(stream, index), b"moof")  # 2..4
    fake = os.urandom(32)
    forger.seal(5, fake, Kind.NOTICE, restart_meta((4, fake), 5, 4))
    forger.keyring_object()  # 6
    forger.append(Kind.NOTICE, quota_meta((3, 4, forger.hash(4))))  # 7
    code, out = verify(forger, capsys, skip=(3, 4))
    assert code == 1
    assert (
        f"FAIL   {forger.name(5)}: chain: restart notice seq 5 does not follow the gap notice "
        "seq 7 announced (its previous is not seq 4 with the range's last_hash)"
    ) in out


def test_a_clip_ended_twice_or_on_another_stream_fails(forger: Forger, capsys: Capture) -> None:
    stream, clip = new_id(), new_id()
    forger.keyring_object()
    forger.append(Kind.INIT, init_meta(stream), b"ftyp")
    forger.append(Kind.EVENT, event_meta(clip=clip, stream=stream))
    forger.append(Kind.SEGMENT, segment_meta(stream, 0), b"moof")
    forger.append(Kind.NOTICE, clip_end_meta(clip, stream, 0))  # 4
    forger.append(Kind.NOTICE, clip_end_meta(clip, new_id(), 0))  # 5
    code, out = verify(forger, capsys)
    assert code == 1
    assert (
        f"FAIL   {forger.name(5)}: clip-end notice seq 5 ends clip {clip[:8]}, which the "
        "clip-end notice seq 4 already ended" in out
    )
    assert f"FAIL   {forger.name(5)}: clip-end notice seq 5 names stream" in out
    assert f"for clip {clip[:8]}, whose event seq 2 names stream {stream[:8]}" in out


def test_seen_json_version_1_is_read_and_version_2_written(forger: Forger, capsys: Capture) -> None:
    forger.start(3)
    forger.write()
    device = forger.device_id.hex()
    head = {"seq": 1, "hash": forger.hash(1).hex()}
    version_1 = {"version": 1, "devices": {device: {"head": head}}}
    (forger.home.directory / "seen.json").write_text(json.dumps(version_1))
    assert sync(forger, capsys)[0] == 0
    document = json.loads((forger.home.directory / "seen.json").read_text())
    assert document["version"] == 2
    entry = document["devices"][device]
    assert entry["head"] == {"seq": 3, "hash": forger.hash(3).hex()}
    assert entry["seen"] == [[0, 3]]
    assert entry["kept"] == [[0, 3]]  # a keyring and three rings: never evicted


def test_seen_runs_are_merged_and_bounded() -> None:
    from doorbell.phone.memory import MAX_RUNS, Remembered, runs_of, seqs_as_runs

    assert seqs_as_runs([5, 1, 2, 3, 7, 6]) == ((1, 3), (5, 7))
    many = runs_of((2 * i, 2 * i) for i in range(MAX_RUNS + 10))
    assert len(many) == MAX_RUNS and many[0] == (20, 20)  # the oldest are forgotten
    merged = Remembered(seen=((0, 3),)).merged(Remembered(seen=((4, 4), (9, 9))))
    assert merged.seen == ((0, 4), (9, 9))
    assert merged.seen_in(5, 8) is None and merged.seen_in(5, 9) == 9


def test_the_largest_integers_a_double_holds_are_numbers() -> None:
    from doorbell.sealing.format import loads_strict

    def fail(reason: str) -> Exception:
        return ValueError(reason)

    assert loads_strict(b"%d" % (2**1024 - 2**970 - 1), fail) == 2**1024 - 2**970 - 1
    with pytest.raises(ValueError, match="does not fit a double"):
        loads_strict(b"-%d" % (2**1024 - 2**970), fail)  # rounds to -infinity
