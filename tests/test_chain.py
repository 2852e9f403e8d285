"""Verifying a directory of sealed objects as a whole: what a bucket operator can do to
footage without the device key (delete, reorder, rename, duplicate, replay, tamper) and
what a device's own history looks like (restarts, rollbacks), as a phone reports it."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chain_builder import event_meta, segment_meta

from doorbell.phone.chain import Entry, Verification, verify_source
from doorbell.phone.objects import DirectorySource
from doorbell.sealing import (
    MAX_OBJECT,
    KeyringStore,
    Kind,
    Reader,
    RecipientPrivateKey,
    SealedObject,
    Sealer,
    Suite,
    object_name,
)
from doorbell.transport.local import LocalDirectorySink

STREAM = "5" * 32

Enrol = Callable[..., RecipientPrivateKey]


@dataclass
class Stream:
    bucket: Path
    state: Path
    reader: Reader
    phone: RecipientPrivateKey
    device_id: bytes
    names: list[str]  # by seq

    def path(self, seq: int) -> Path:
        return self.bucket / self.names[seq]

    def verify(self) -> Verification:
        return verify_source(DirectorySource(self.bucket), self.reader)

    def deliver(self, objects: list[SealedObject]) -> None:
        sink = LocalDirectorySink(self.bucket)
        for sealed in objects:
            sink.deliver(sealed.name, sealed.data, sealed.kind)
            if sealed.seq >= len(self.names):
                self.names.append(sealed.name)


@pytest.fixture
def stream(state_dir: Path, enrol: Enrol, tmp_path: Path) -> Stream:
    """Seq 0 (keyring) .. 5, delivered by the local sink, from a cleanly stopped device."""
    phone = enrol("alice")
    with Sealer(state_dir) as sealer:
        objects = sealer.seal(Kind.EVENT, event_meta(stream=STREAM), b"snapshot")
        for index in range(4):
            objects += sealer.seal(Kind.SEGMENT, segment_meta(STREAM, index), b"moof")
        device = sealer.device_key
    reader = Reader([phone], [device])
    result = Stream(tmp_path / "bucket", state_dir, reader, phone, device.device_id, [])
    result.deliver(objects)
    assert [o.seq for o in objects] == list(range(6))
    return result


def _messages(result: Verification, where: str | None = None) -> list[str]:
    return [f.message for f in result.problems if where is None or f.where == where]


def _device(stream: Stream) -> str:
    return f"device {stream.device_id.hex()[:16]}"


def test_clean_stream_verifies(stream: Stream) -> None:
    assert sorted(os.listdir(stream.bucket)) == stream.names
    assert stream.names[3] == f"{stream.device_id.hex()[:16]}-{3:020d}.sealed"
    result = stream.verify()
    assert result.ok
    assert result.findings == []
    assert [e.seq for e in result.entries] == list(range(6))
    assert all(e.contents is not None for e in result.entries)


def test_deleted_middle_object_is_missing(stream: Stream) -> None:
    stream.path(3).unlink()
    result = stream.verify()
    assert not result.ok
    assert [(f.where, f.message) for f in result.problems] == [
        (_device(stream), "missing seq 3 (deleted or never delivered)")
    ]


def test_deleted_run_is_reported_as_a_range(stream: Stream) -> None:
    stream.path(2).unlink()
    stream.path(3).unlink()
    stream.path(4).unlink()
    assert _messages(stream.verify()) == ["missing seq 2..4 (deleted or never delivered)"]


def test_deleted_first_object_is_missing(stream: Stream) -> None:
    stream.path(0).unlink()
    result = stream.verify()
    assert _messages(result, _device(stream)) == ["missing seq 0 (deleted or never delivered)"]


def test_swapped_names_are_reported_for_both_files(stream: Stream) -> None:
    two, three = stream.path(2), stream.path(3)
    swap = stream.bucket / "swap"
    two.rename(swap)
    three.rename(two)
    swap.rename(three)
    result = stream.verify()
    assert not result.ok
    assert {f.where for f in result.problems} == {stream.names[2], stream.names[3]}
    assert _messages(result, stream.names[2]) == [
        f"holds seq 3 of device {stream.device_id.hex()[:16]}, whose name is {stream.names[3]} "
        "(renamed or reordered)"
    ]
    assert "holds seq 2" in _messages(result, stream.names[3])[0]


def test_duplicate_under_another_name(stream: Stream) -> None:
    copy = stream.bucket / object_name(stream.device_id, 99)
    shutil.copy(stream.path(2), copy)
    result = stream.verify()
    messages = _messages(result, copy.name)
    assert f"duplicate of {stream.names[2]} (seq 2)" in messages
    assert any("renamed" in m for m in messages)
    assert not any("fork" in m or "missing" in m for m in _messages(result))


def test_files_not_named_as_objects_are_not_read_and_are_shown_escaped(stream: Stream) -> None:
    """Only FORMAT.md section 8 names are objects; any other name is listed, escaped: a
    name is written by whoever wrote the folder and must not drive the terminal."""
    names = {
        "zz-copy.sealed": "zz-copy.sealed",
        "\x1b[2J\x1b]0;owned\x07.sealed": "\\x1b[2J\\x1b]0;owned\\x07.sealed",
        "a\u202eslaes.txt": "a\\u202eslaes.txt",
        f"{stream.names[2][:-7]}\t.sealed": f"{stream.names[2][:-7]}\\t.sealed",
    }
    for name in names:
        shutil.copy(stream.path(2), stream.bucket / name)
    source = DirectorySource(stream.bucket)
    result = verify_source(source, stream.reader)
    assert result.ok, result.problems
    assert [e.seq for e in result.entries] == list(range(6))
    assert sorted(source.ignored) == sorted(names.values())


def test_object_from_another_doorbell_is_not_trusted(stream: Stream, tmp_path: Path) -> None:
    other_state = tmp_path / "neighbour"
    other_state.mkdir()
    with KeyringStore(other_state).editing() as box:
        box[0] = box[0].add("alice", stream.phone.public_key(), datetime.now(UTC))
    with Sealer(other_state) as other:
        replayed = other.seal(Kind.EVENT, event_meta(), b"someone else's door")
    LocalDirectorySink(stream.bucket).deliver(
        replayed[-1].name, replayed[-1].data, replayed[-1].kind
    )
    result = stream.verify()
    assert [f.where for f in result.problems] == [replayed[-1].name]
    assert _messages(result)[0].startswith("not from a trusted doorbell")
    assert [e.seq for e in result.entries] == list(range(6))


def test_tampered_byte_names_the_file(stream: Stream) -> None:
    path = stream.path(3)
    data = bytearray(path.read_bytes())
    data[len(data) - 100] ^= 0x01  # inside the ciphertext
    path.write_bytes(bytes(data))
    result = stream.verify()
    assert _messages(result, stream.names[3]) == [
        "tampered or forged: device signature does not verify"
    ]
    assert [e.seq for e in result.entries] == [0, 1, 2, 4, 5]


def test_rolled_back_state_dir_forks(stream: Stream, tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    shutil.copytree(stream.state, backup)
    with Sealer(stream.state) as sealer:
        original = sealer.seal(Kind.EVENT, event_meta("motion"), b"first future")
    stream.deliver(original)
    shutil.rmtree(stream.state)
    shutil.copytree(backup, stream.state)
    with Sealer(stream.state) as sealer:
        rolled_back = sealer.seal(Kind.EVENT, event_meta(), b"second future")
    assert [o.seq for o in rolled_back] == [o.seq for o in original] == [6, 7]

    # A bucket keeping both histories (e.g. two uploads) holds two objects per seq.
    elsewhere = [object_name(stream.device_id, o.seq + 100) for o in rolled_back]
    for sealed, name in zip(rolled_back, elsewhere, strict=True):
        (stream.bucket / name).write_bytes(sealed.data)
    result = stream.verify()
    forks = [f for f in result.problems if "fork" in f.message]
    assert {f.where for f in forks} == set(elsewhere)
    assert f"a different object than {stream.names[6]} with the same seq 6" in forks[0].message


def test_replaced_object_breaks_the_chain(stream: Stream, tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    shutil.copytree(stream.state, backup)
    with Sealer(stream.state) as sealer:
        stream.deliver(sealer.seal(Kind.EVENT, event_meta(), b"a"))  # seq 6, 7
    shutil.rmtree(stream.state)
    shutil.copytree(backup, stream.state)
    with Sealer(stream.state) as sealer:
        other_six = sealer.seal(Kind.EVENT, event_meta(), b"b")[0]
    stream.path(6).write_bytes(other_six.data)
    assert _messages(stream.verify(), stream.names[7]) == [
        "chain: seq 7 does not follow seq 6 (one was replaced)"
    ]


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_unclean_restart_is_announced_not_a_problem(stream: Stream) -> None:
    sealer = Sealer(stream.state)
    stream.deliver(sealer.seal(Kind.EVENT, event_meta(), b"before the crash"))  # 6, 7
    del sealer
    gc.collect()
    with Sealer(stream.state) as sealer:
        after = sealer.seal(Kind.EVENT, event_meta(), b"after the crash")
    assert [(o.seq, o.kind) for o in after] == [
        (1030, Kind.NOTICE),
        (1031, Kind.KEYRING),
        (1032, Kind.EVENT),
    ]
    stream.deliver(after)
    result = stream.verify()
    assert result.ok, result.problems
    assert [(f.where, f.message, f.problem) for f in result.findings] == [
        (_device(stream), "seq 8..1029 announced as restart", False)
    ]


def test_bad_files_are_named_and_the_rest_still_verifies(stream: Stream) -> None:
    truncated = stream.path(2)
    truncated.write_bytes(truncated.read_bytes()[:150])
    junk, huge = object_name(stream.device_id, 7), object_name(stream.device_id, 8)
    (stream.bucket / junk).write_bytes(os.urandom(300))
    (stream.bucket / "notes.txt").write_text("not footage")
    with open(stream.bucket / huge, "wb") as sparse:
        sparse.truncate(MAX_OBJECT + 1)  # sparse: costs no disk
    source = DirectorySource(stream.bucket)
    result = verify_source(source, stream.reader)

    assert source.ignored == ["notes.txt"]
    by_where = {f.where: f.message for f in result.problems}
    assert by_where[stream.names[2]].startswith("malformed: stanza 0: truncated")
    assert by_where[junk] == "malformed: not a Doorbell sealed object (bad magic)"
    assert by_where[huge].startswith("unreadable: ")
    assert "larger than any sealed object" in by_where[huge]
    assert by_where[_device(stream)] == "missing seq 2 (deleted or never delivered)"
    assert len(result.problems) == 4
    assert [e.seq for e in result.entries] == [0, 1, 3, 4, 5]
    assert all(e.contents is not None for e in result.entries)


def test_revoked_phone_sees_authentic_objects_it_cannot_open(stream: Stream, enrol: Enrol) -> None:
    enrol("bob", Suite.MLKEM768_X25519)
    with KeyringStore(stream.state).editing() as box:
        box[0] = box[0].revoke("alice")
    with Sealer(stream.state) as sealer:
        stream.deliver(sealer.seal(Kind.EVENT, event_meta(), b"not for alice"))
    result = stream.verify()
    assert result.ok
    assert [(f.where, f.problem) for f in result.findings] == [("keys", False)]
    assert "2 authentic object(s) are not sealed to this phone" in result.findings[0].message
    assert [e.contents is None for e in result.entries] == [False] * 6 + [True] * 2


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_phone_enrolled_after_an_unclean_restart_verifies_the_stream(
    stream: Stream, enrol: Enrol
) -> None:
    """The restart notice is sealed to the phones enrolled at the time; a phone enrolled
    later cannot read it, but the stream is still untouched and must not FAIL for it.

    The skip is provable without the notice: the first object of the new run is signed by
    the device and its ``prev`` names seq 7, so only the device could have jumped."""
    sealer = Sealer(stream.state)
    stream.deliver(sealer.seal(Kind.EVENT, event_meta(), b"before the crash"))  # 6, 7
    del sealer
    gc.collect()
    with Sealer(stream.state) as sealer:
        stream.deliver(sealer.seal(Kind.EVENT, event_meta(), b"after the crash"))  # 1030..1032
    late_phone = enrol("carol")
    with Sealer(stream.state) as sealer:
        stream.deliver(sealer.seal(Kind.EVENT, event_meta(), b"for carol too"))  # 1033, 1034

    assert stream.verify().ok  # the phone enrolled all along
    device = stream.reader.device(stream.device_id)
    late = verify_source(DirectorySource(stream.bucket), Reader([late_phone], [device]))
    assert [e.seq for e in late.entries if e.contents is not None] == [1033, 1034]
    assert late.ok, [str(f) for f in late.problems]


def test_a_gap_announced_before_a_phone_was_enrolled_is_a_note_for_it(
    stream: Stream, enrol: Enrol
) -> None:
    from doorbell.sealing.format import chain_hash

    with Sealer(stream.state) as sealer:
        *keyring, dropped = sealer.seal(Kind.SEGMENT, segment_meta(STREAM, 9), b"evicted")
        stream.deliver(keyring)  # a new run announces its keyring first
        last_hash = chain_hash(bytes(dropped.data[-64:])).hex()
        ranges = [{"first": dropped.seq, "last": dropped.seq, "last_hash": last_hash}]
        # The notice is sealed to alice only: carol is enrolled after it.
        stream.deliver(
            sealer.seal(Kind.NOTICE, {"notice": "discarded", "reason": "quota", "ranges": ranges})
        )
        carol = enrol("carol")
        later = sealer.seal(Kind.EVENT, event_meta(), b"for carol too")
        stream.deliver(later)
        device = sealer.device_key

    def carol_view() -> Verification:
        return verify_source(DirectorySource(stream.bucket), Reader([carol], [device]))

    alice_view = stream.verify()
    assert alice_view.ok, [str(f) for f in alice_view.problems]
    # Carol cannot read the notice: she cannot confirm the gap, but it is no deletion.
    view = carol_view()
    assert view.ok, [str(f) for f in view.problems]
    assert any("cannot confirm" in f.message for f in view.findings)
    # A deletion after the objects she can open is still a problem for her.
    (stream.bucket / later[0].name).unlink()
    assert not carol_view().ok


class KeptBodies:
    """What a `BodyKeeper` is handed during verification: (name, body) in order."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, bytes]] = []

    def keep(self, entry: Entry, body: memoryview) -> None:
        self.kept.append((entry.name, bytes(body)))


def test_a_keeper_is_handed_the_body_of_every_object_that_opened(
    stream: Stream, enrol: Enrol
) -> None:
    """Export takes bodies while verification reads each object: it is handed those that
    opened, in order, and never one that is forged or sealed to someone else."""
    enrol("bob")
    with KeyringStore(stream.state).editing() as box:
        box[0] = box[0].revoke("alice")
    with Sealer(stream.state) as sealer:
        stream.deliver(sealer.seal(Kind.SEGMENT, segment_meta(STREAM, 4), b"for bob"))
    path = stream.path(3)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))

    kept = KeptBodies()
    result = verify_source(DirectorySource(stream.bucket), stream.reader, keeper=kept)
    assert [e.seq for e in result.entries] == [0, 1, 2, 4, 5, 6, 7]
    assert [name for name, _ in kept.kept] == [stream.names[seq] for seq in (0, 1, 2, 4, 5)]
    bodies = dict(kept.kept)
    assert bodies[stream.names[1]] == b"snapshot"
    assert bodies[stream.names[2]] == bodies[stream.names[5]] == b"moof"
