"""The sealer spends a sequence number only on an object that was delivered, and records
the chain head durably before anyone else can see that object."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import pytest

from doorbell.sealing import ChainHead, Kind, Reader, SealedObject, Sealer, SealingError
from doorbell.sealing import format as fmt
from doorbell.sealing.state import SequenceFile

Enrol = Callable[..., object]


def _hash(sealed: SealedObject) -> bytes:
    return fmt.chain_hash(bytes(sealed.data[-fmt.SIGNATURE_LEN :]))


class Outbox:
    """A deliver callback that keeps what it commits and can be told to fail."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.kept: list[SealedObject] = []
        self.fail_kinds: set[Kind] = set()
        self.skip_kinds: set[Kind] = set()
        self.heads_at_commit: list[ChainHead | None] = []

    def __call__(self, sealed: SealedObject, commit: Callable[[], None]) -> None:
        if sealed.kind in self.fail_kinds:
            raise OSError(28, "No space left on device")
        if sealed.kind in self.skip_kinds:
            return
        commit()
        # What a restarted sealer would read: the head is recorded by the time commit returns.
        self.heads_at_commit.append(SequenceFile(self.state_dir).read_head())
        self.kept.append(sealed)


def test_a_failed_delivery_spends_nothing_and_the_next_object_takes_its_number(
    state_dir: Path, enrol: Enrol
) -> None:
    enrol("alice")
    outbox = Outbox(state_dir)
    with Sealer(state_dir) as sealer:
        sealer.seal(Kind.EVENT, {"n": 1}, b"one", deliver=outbox)
        outbox.fail_kinds = {Kind.SEGMENT}
        with pytest.raises(OSError, match="No space"):
            sealer.seal(Kind.SEGMENT, {"n": 2}, b"lost", deliver=outbox)
        outbox.fail_kinds = set()
        sealer.seal(Kind.EVENT, {"n": 3}, b"three", deliver=outbox)
    assert [(o.seq, o.kind) for o in outbox.kept] == [
        (0, Kind.KEYRING),
        (1, Kind.EVENT),
        (2, Kind.EVENT),
    ]
    # Dense and linked: seq 2 follows seq 1, the failed segment never existed.
    assert fmt.parse_envelope(outbox.kept[2].data).prev == _hash(outbox.kept[1])


def test_the_head_is_recorded_before_commit_returns(state_dir: Path, enrol: Enrol) -> None:
    enrol("alice")
    outbox = Outbox(state_dir)
    with Sealer(state_dir) as sealer:
        for n in range(3):
            sealer.seal(Kind.EVENT, {"n": n}, b"x", deliver=outbox)
    assert outbox.heads_at_commit == [ChainHead(o.seq, _hash(o)) for o in outbox.kept]


@pytest.mark.parametrize(
    ("failing", "kept_before_retry"),
    [(Kind.KEYRING, []), (Kind.EVENT, [(0, Kind.KEYRING)])],
    ids=["announcement-fails-and-is-offered-again", "announcement-delivered-stays"],
)
def test_a_failure_in_the_middle_keeps_what_was_delivered_and_retries_the_rest(
    state_dir: Path, enrol: Enrol, failing: Kind, kept_before_retry: list[tuple[int, Kind]]
) -> None:
    enrol("alice")
    outbox = Outbox(state_dir)
    with Sealer(state_dir) as sealer:
        outbox.fail_kinds = {failing}
        with pytest.raises(OSError):
            sealer.seal(Kind.EVENT, {}, b"ring", deliver=outbox)
        assert [(o.seq, o.kind) for o in outbox.kept] == kept_before_retry
        outbox.fail_kinds = set()
        sealer.seal(Kind.EVENT, {}, b"ring", deliver=outbox)
    assert [(o.seq, o.kind) for o in outbox.kept] == [(0, Kind.KEYRING), (1, Kind.EVENT)]


def test_an_object_nobody_commits_is_neither_spent_nor_returned(
    state_dir: Path, enrol: Enrol
) -> None:
    enrol("alice")
    outbox = Outbox(state_dir)
    with Sealer(state_dir) as sealer:
        sealer.seal(Kind.EVENT, {}, b"a", deliver=outbox)
        outbox.skip_kinds = {Kind.SEGMENT}
        assert sealer.seal(Kind.SEGMENT, {}, b"unwanted", deliver=outbox) == []
        outbox.skip_kinds = set()
        returned = sealer.seal(Kind.EVENT, {}, b"b", deliver=outbox)
    assert [o.seq for o in returned] == [2]


def test_a_commit_for_an_object_out_of_turn_is_refused(state_dir: Path, enrol: Enrol) -> None:
    enrol("alice")
    stale: list[Callable[[], None]] = []

    def keep_commit(sealed: SealedObject, commit: Callable[[], None]) -> None:
        stale.append(commit)

    with Sealer(state_dir) as sealer:
        sealer.seal(Kind.EVENT, {}, b"a", deliver=keep_commit)
        sealer.seal(Kind.EVENT, {}, b"b", deliver=lambda s, commit: commit())
        with pytest.raises(SealingError, match="not the next in the chain"):
            stale[0]()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_crash_continues_from_the_newest_delivered_object(state_dir: Path, enrol: Enrol) -> None:
    alice = enrol("alice")
    outbox = Outbox(state_dir)
    sealer = Sealer(state_dir, block=16)
    device = sealer.device_key
    for n in range(4):
        sealer.seal(Kind.EVENT, {"n": n}, b"x", deliver=outbox)
    del sealer  # killed: no close
    gc.collect()
    run2 = Outbox(state_dir)
    with Sealer(state_dir, block=16) as sealer:
        sealer.seal(Kind.EVENT, {}, b"after", deliver=run2)
    notice = Reader([alice], [device]).open(bytes(run2.kept[0].data))  # type: ignore[list-item]
    last = outbox.kept[-1]
    assert notice.meta == {
        "notice": "restart",
        "previous": {"seq": last.seq, "hash": _hash(last).hex()},
        "skipped": {"first": last.seq + 1, "last": 15},
    }
    assert notice.seq == 16
    assert notice.prev == _hash(last)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_newer_object_in_the_outbox_is_adopted_as_the_head(state_dir: Path, enrol: Enrol) -> None:
    alice = enrol("alice")
    sealer = Sealer(state_dir, block=16)
    device = sealer.device_key
    objects = sealer.seal(Kind.EVENT, {}, b"a") + sealer.seal(Kind.EVENT, {}, b"b")
    del sealer
    gc.collect()
    # The head of the last object never reached the disk (a crash between the outbox's
    # commit and the head's fsync): the durable head is the object before it.
    (state_dir / "head.bin").unlink()
    SequenceFile(state_dir).record(ChainHead(objects[-2].seq, _hash(objects[-2])), sync=True)
    with Sealer(state_dir, block=16) as sealer:
        newest = objects[-1]
        sealer.adopt_head(ChainHead(newest.seq, _hash(newest)))
        run2 = sealer.seal(Kind.EVENT, {}, b"after")
        with pytest.raises(SealingError, match="before the first seal"):
            sealer.adopt_head(ChainHead(newest.seq, _hash(newest)))
    notice = Reader([alice], [device]).open(bytes(run2[0].data))  # type: ignore[list-item]
    assert notice.meta["previous"] == {"seq": newest.seq, "hash": _hash(newest).hex()}
    assert notice.meta["skipped"] == {"first": newest.seq + 1, "last": 15}
    assert notice.prev == _hash(newest)


def test_adopting_an_older_head_changes_nothing(state_dir: Path, enrol: Enrol) -> None:
    enrol("alice")
    with Sealer(state_dir) as sealer:
        first = sealer.seal(Kind.EVENT, {}, b"a")
    with Sealer(state_dir) as sealer:
        sealer.adopt_head(ChainHead(first[0].seq, _hash(first[0])))
        run2 = sealer.seal(Kind.EVENT, {}, b"b")
    assert [o.kind for o in run2] == [Kind.KEYRING, Kind.EVENT], "a clean restart: no notice"


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_two_crashes_in_a_row_never_skip_more_than_one_block(state_dir: Path, enrol: Enrol) -> None:
    alice = enrol("alice")
    outbox = Outbox(state_dir)
    sealer = Sealer(state_dir)
    device = sealer.device_key
    sealer.seal(Kind.EVENT, {}, b"delivered", deliver=outbox)  # seq 0, 1
    del sealer  # the first crash
    gc.collect()
    # The second run reserves its block, then dies before delivering anything.
    second = Sealer(state_dir)
    outbox.fail_kinds = {Kind.NOTICE}
    with pytest.raises(OSError):
        second.seal(Kind.EVENT, {}, b"never delivered", deliver=outbox)
    assert second._sequence.reserved_until == 2 * fmt.RESERVATION_BLOCK
    del second
    gc.collect()
    outbox.fail_kinds = set()
    third = Outbox(state_dir)
    with Sealer(state_dir) as sealer:
        sealer.seal(Kind.EVENT, {}, b"after", deliver=third)
    notice = Reader([alice], [device]).open(bytes(third.kept[0].data))  # type: ignore[list-item]
    head = outbox.kept[-1]
    assert notice.meta["previous"] == {"seq": head.seq, "hash": _hash(head).hex()}
    assert notice.meta["skipped"] == {"first": 2, "last": fmt.RESERVATION_BLOCK + 1}
    assert notice.seq == fmt.RESERVATION_BLOCK + 2


def test_a_keyring_object_still_waiting_is_replaced_by_the_newer_keyring(
    state_dir: Path, enrol: Enrol
) -> None:
    alice = enrol("alice")
    outbox = Outbox(state_dir)
    with Sealer(state_dir) as sealer:
        device = sealer.device_key
        sealer.seal(Kind.EVENT, {}, b"a", deliver=outbox)  # keyring epoch 1, event
        enrol("bob")
        outbox.fail_kinds = {Kind.KEYRING}
        with pytest.raises(OSError):
            sealer.seal(Kind.EVENT, {}, b"b", deliver=outbox)
        enrol("carol")
        outbox.fail_kinds = set()
        sealer.seal(Kind.EVENT, {}, b"c", deliver=outbox)
    reader = Reader([alice], [device])
    opened = [reader.open(bytes(o.data)) for o in outbox.kept]  # type: ignore[list-item]
    keyrings = [o for o in opened if o.kind is Kind.KEYRING]
    assert [(k.seq, k.epoch, k.meta["epoch"]) for k in keyrings] == [(0, 1, 1), (2, 3, 3)]
    assert [o.epoch for o in opened] == [1, 1, 3, 3]
