"""The spool and its uploaders: durability, crash recovery, per-sink queues, quota eviction,
retries with backoff, sinks that are slow, down or broken, and the check of the files an
earlier run left, which nothing but their delivery waits for.

Crashes are real where it is cheap (a child process that dies with ``os._exit`` in the
middle of ``put``) and hand-made on-disk states elsewhere. Threads are synchronised on
events and conditions with timeouts, never on sleeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_harness import wait_for
from stalled_file import StalledFile

from doorbell.sealing import ChainHead, Kind, RecipientPrivateKey, SealedObject, Sealer
from doorbell.transport.sink import SinkUnavailable
from doorbell.transport.spool import Eviction, ObjectClass, Spool, SpoolError
from doorbell.transport.uploader import Uploader

CONT, CLIP, ESS = ObjectClass.CONTINUOUS, ObjectClass.CLIP, ObjectClass.ESSENTIAL
BIG = 1 << 30
TIMEOUT = 10.0


@pytest.fixture
def sealer(state_dir: Path, enrol: Callable[..., RecipientPrivateKey]) -> Iterator[Sealer]:
    enrol("phone")
    with Sealer(state_dir) as sealer:
        yield sealer


@pytest.fixture
def seal(sealer: Sealer) -> Callable[..., SealedObject]:
    """``seal(size=1000, kind=Kind.SEGMENT)``: a real sealed object with a body of that size."""

    def seal(size: int = 1000, kind: Kind = Kind.SEGMENT) -> SealedObject:
        meta = {"type": "ring"} if kind is Kind.EVENT else {}
        return sealer.seal(kind, meta, os.urandom(size))[-1]

    return seal


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def chain_hash(sealed: SealedObject) -> str:
    # docs/FORMAT.md section 6: SHA-256 of the signature, the object's last 64 bytes.
    return hashlib.sha256(bytes(sealed.data[-64:])).hexdigest()


def names(objs: list[SealedObject]) -> list[str]:
    return [o.name for o in objs]


def pending_names(spool: Spool, sink: str) -> list[str]:
    return [o.name for o in spool.pending(sink)]


def spool_files(spool_dir: Path) -> dict[str, set[str]]:
    """Every file in the spool, by directory: what a restart would find."""
    found: dict[str, set[str]] = {}
    for path in spool_dir.rglob("*"):
        if path.is_file() and path.name != ".lock":
            found.setdefault(str(path.parent.relative_to(spool_dir)), set()).add(path.name)
    return found


def anchored(sealed: SealedObject, cls: ObjectClass) -> dict[str, set[str]]:
    """What a spool whose sinks took everything still holds: the newest object put."""
    return {"objects": {f"{sealed.seq:020d}.{int(sealed.kind)}.{cls.value}.{sealed.name}"}}


def without_free_space(stats: dict[str, object]) -> dict[str, object]:
    """``stats()`` without the file system's free space, which every other writer moves."""
    return {key: value for key, value in stats.items() if key != "free_bytes"}


def on_disk(spool_dir: Path, sealed: SealedObject) -> set[str]:
    """Where ``sealed`` has a file in the spool (its object file and its queue links)."""
    return {
        str(path.parent.relative_to(spool_dir))
        for path in spool_dir.rglob(f"*{sealed.name}*")
        if path.is_file()
    }


# -- durability ---------------------------------------------------------------------------


def test_put_is_durable_in_the_commit_order(
    spool_dir: Path, seal: Callable[..., SealedObject], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_dir = spool_dir.resolve()  # compared with the kernel's view of open files
    spool = Spool(spool_dir, BIG, ["a", "b"])
    sealed = seal()
    trace: list[tuple[str, ...]] = []
    real_fsync, real_link, real_rename = os.fsync, os.link, os.rename

    def fsync(fd: int) -> None:
        trace.append(("fsync", str(Path(os.readlink(f"/proc/self/fd/{fd}")))))
        real_fsync(fd)

    def link(src: str | Path, dst: str | Path) -> None:
        trace.append(("link", str(src), str(dst)))
        real_link(src, dst)

    def rename(src: str | Path, dst: str | Path) -> None:
        trace.append(("rename", str(src), str(dst)))
        real_rename(src, dst)

    def durable() -> None:
        # Committed, yet no uploader can see it: the head it records is on disk first.
        trace.append(("durable",))
        assert spool.pending("a") == spool.pending("b") == []
        assert spool.wait("a", 0) is False
        assert spool.count == 0

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "rename", rename)
    assert spool.put(sealed, CLIP, ["a", "b"], durable=durable) == []
    monkeypatch.undo()

    [obj] = spool.pending("a")
    tmp = str(obj.path.with_name(f".{obj.path.name}.tmp"))
    queue_a, queue_b = spool_dir / "queues" / "a", spool_dir / "queues" / "b"
    assert trace == [
        ("fsync", tmp),  # the bytes are on disk
        ("link", tmp, str(queue_a / obj.path.name)),
        ("link", tmp, str(queue_b / obj.path.name)),
        ("fsync", str(queue_a)),  # every link is on disk ...
        ("fsync", str(queue_b)),
        ("rename", tmp, str(obj.path)),  # ... before the commit can be
        ("fsync", str(spool_dir / "objects")),
        ("durable",),  # committed and on disk, not yet queued in memory
    ]
    assert obj.read() == bytes(sealed.data)
    assert (obj.name, obj.seq, obj.kind, obj.cls, obj.size) == (
        sealed.name,
        sealed.seq,
        Kind.SEGMENT,
        CLIP,
        len(sealed.data),
    )
    inode = obj.path.stat().st_ino
    assert (queue_a / obj.path.name).stat().st_ino == inode
    assert (queue_b / obj.path.name).stat().st_ino == inode
    assert spool_files(spool_dir) == {
        "objects": {obj.path.name},
        "queues/a": {obj.path.name},
        "queues/b": {obj.path.name},
    }
    assert (spool.count, spool.size_bytes) == (1, len(sealed.data))
    assert spool.stats()["sinks"] == {
        "a": {"pending": 1, "bytes": len(sealed.data)},
        "b": {"pending": 1, "bytes": len(sealed.data)},
    }
    spool.close()


def test_a_durable_callback_that_raises_leaves_nothing_spooled(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    kept, failed = seal(), seal()
    calls: list[str] = []

    def head_not_written() -> None:
        calls.append("durable")
        raise OSError(5, "the chain head could not be written")

    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        spool.put(kept, CLIP, ["a", "b"])
        with pytest.raises(OSError, match="chain head"):
            spool.put(failed, CLIP, ["a", "b"], durable=head_not_written)
        assert calls == ["durable"]
        assert pending_names(spool, "a") == pending_names(spool, "b") == [kept.name]
        assert on_disk(spool_dir, failed) == set()
        stats = spool.stats()
        assert (stats["objects"], stats["put_failures"]) == (1, 1)
        assert failed.name in stats["last_put_error"] and "chain head" in stats["last_put_error"]
        assert stats["full"] is False  # not for want of space
        # Nothing of it counts as spooled: the same object can be put again.
        spool.put(failed, CLIP, ["a"], durable=lambda: calls.append("again"))
        assert calls == ["durable", "again"]
        assert pending_names(spool, "a") == names([kept, failed])
    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        assert pending_names(spool, "b") == [kept.name]


def test_an_object_for_no_sink_is_not_stored_and_not_made_durable(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    with Spool(spool_dir, BIG, ["a"]) as spool:
        assert spool.put(seal(), ESS, [], durable=lambda: pytest.fail("durable called")) == []
        assert spool.count == 0 and spool_files(spool_dir) == {}


def test_newest_names_the_head_of_what_is_still_on_disk(
    spool_dir: Path, sealer: Sealer, seal: Callable[..., SealedObject]
) -> None:
    older, newer = seal(), seal()
    with Spool(spool_dir, len(older.data), ["a"]) as spool:
        assert spool.newest(sealer.device_id) is None
        spool.put(older, CONT, ["a"])
        [eviction] = spool.put(newer, CONT, ["a"])  # older is evicted, not yet announced
        head = spool.newest(sealer.device_id)
        assert head is not None and (head.seq, head.hash.hex()) == (newer.seq, chain_hash(newer))
        assert spool.newest(bytes(32)) is None  # another device's objects only
        spool.done("a", spool.pending("a")[0])
        head = spool.newest(sealer.device_id)  # taken, but the anchor: still on disk
        assert head is not None and (head.seq, head.hash.hex()) == (newer.seq, chain_hash(newer))
        spool.release_anchor()
        head = spool.newest(sealer.device_id)  # the evicted object is still on disk
        assert head is not None and (head.seq, head.hash.hex()) == (older.seq, chain_hash(older))
        spool.announced([eviction])
        assert spool.newest(sealer.device_id) is None


@pytest.mark.parametrize("checked", [False, True], ids=["by-name", "with-device-key"])
def test_the_newest_object_stays_on_disk_after_its_sinks_took_it_until_a_newer_one_is_put(
    checked: bool, spool_dir: Path, sealer: Sealer, seal: Callable[..., SealedObject]
) -> None:
    device = sealer.device_key if checked else None
    first, second, third = seal(), seal(kind=Kind.EVENT), seal()

    def head_of(sealed: SealedObject) -> tuple[int, str]:
        return sealed.seq, chain_hash(sealed)

    def newest(spool: Spool) -> tuple[int, str] | None:
        head = spool.newest(sealer.device_id)
        return None if head is None else (head.seq, head.hash.hex())

    with Spool(spool_dir, BIG, ["a", "b"], device=device) as spool:
        spool.put(first, CLIP, ["a", "b"])
        for sink in ("a", "b"):
            spool.done(sink, spool.pending(sink)[0])
        # Every sink took it, so it is no longer spooled, but its file stays.
        assert spool.count == 0 and spool.size_bytes == 0
        assert spool.stats()["sinks"]["a"] == {"pending": 0, "bytes": 0}
        assert spool_files(spool_dir) == anchored(first, CLIP)
        assert newest(spool) == head_of(first)
        spool.put(second, ESS, ["a"])
        # The newer object is committed: the old anchor goes.
        assert spool_files(spool_dir)["objects"] == anchored(second, ESS)["objects"]
        spool.done("a", spool.pending("a")[0])
        assert spool_files(spool_dir) == anchored(second, ESS)

    # A restart, as after a crash: the file no queue links is the anchor, not deleted.
    with Spool(spool_dir, BIG, ["a", "b"], device=device) as spool:
        assert newest(spool) == head_of(second)
        assert spool.count == 0 and spool.pending("a") == []
        spool.put(third, CLIP, ["b"])
        spool.done("b", spool.pending("b")[0])
    assert spool_files(spool_dir) == anchored(third, CLIP)

    with Spool(spool_dir, BIG, ["a", "b"], device=device) as spool:
        assert newest(spool) == head_of(third)
        # The caller's head is durable now: the anchor may go.
        spool.release_anchor()
        assert spool_files(spool_dir) == {}
        assert newest(spool) is None


def test_an_anchor_of_an_earlier_run_goes_once_checked_when_a_newer_object_came_first(
    spool_dir: Path, sealer: Sealer, seal: Callable[..., SealedObject]
) -> None:
    first, second = seal(), seal()
    with Spool(spool_dir, BIG, ["a"], device=sealer.device_key) as spool:
        spool.put(first, CLIP, ["a"])
        spool.done("a", spool.pending("a")[0])
    checked = threading.Event()
    with Spool(spool_dir, BIG, ["a"], device=sealer.device_key, when_checked=checked.set) as spool:
        # Not read yet: the new anchor cannot delete a file the check has not judged.
        spool.put(second, CLIP, ["a"])
        assert spool_files(spool_dir)["objects"] == {
            *anchored(first, CLIP)["objects"],
            *anchored(second, CLIP)["objects"],
        }
        spool.check(sealer.head)
        assert checked.wait(TIMEOUT)
        assert spool_files(spool_dir)["objects"] == anchored(second, CLIP)["objects"]


def test_restart_sees_the_same_queues(spool_dir: Path, seal: Callable[..., SealedObject]) -> None:
    objs = [seal(), seal(kind=Kind.EVENT), seal(), seal(kind=Kind.INIT)]
    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        spool.put(objs[0], CONT, ["a", "b"])
        spool.put(objs[1], ESS, ["a"])
        spool.put(objs[2], CLIP, ["b"])
        spool.put(objs[3], CLIP, ["a", "b"])
        spool.done("b", spool.pending("b")[0])
        before = {sink: spool.pending(sink) for sink in ("a", "b")}
        stats = without_free_space(spool.stats())

    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        assert {sink: spool.pending(sink) for sink in ("a", "b")} == before
        assert without_free_space(spool.stats()) == stats
        assert pending_names(spool, "a") == names([objs[0], objs[1], objs[3]])
        assert pending_names(spool, "b") == names([objs[2], objs[3]])
        assert [o.kind for o in spool.pending("a")] == [Kind.SEGMENT, Kind.EVENT, Kind.INIT]
        assert [o.read() for o in spool.pending("a")] == [bytes(objs[i].data) for i in (0, 1, 3)]


def test_one_process_at_a_time_and_no_sinks_means_not_stored(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    with Spool(spool_dir, BIG, ["a"]) as spool:
        with pytest.raises(SpoolError, match="another process"):
            Spool(spool_dir, BIG, ["a"])
        assert spool.put(seal(), CLIP, []) == []
        assert spool.count == 0
        assert spool_files(spool_dir) == {}
        with pytest.raises(ValueError, match="not configured"):
            spool.put(seal(), CLIP, ["b"])
    with pytest.raises(ValueError, match="cannot name a queue"):
        Spool(spool_dir, BIG, ["../escape"])


# -- crash recovery -----------------------------------------------------------------------

# Dies (os._exit: no cleanup, like a power cut for everything already written) just
# before the Nth of put's durability steps: fsync(tmp), link a, link b, fsync(queue a),
# fsync(queue b), rename (the commit), fsync(objects).
CHILD = """
import os, sys
from pathlib import Path
from doorbell.sealing import Kind, SealedObject
from doorbell.transport.spool import ObjectClass, Spool

spool_dir, data, device, seq, crash_at = sys.argv[1:]
sealed = SealedObject(bytes.fromhex(device), int(seq), Kind.SEGMENT, Path(data).read_bytes())
spool = Spool(Path(spool_dir), 1 << 30, ["a", "b"])
steps = []

def crashing(real):
    def step(*args):
        if len(steps) == int(crash_at):
            os._exit(77)
        steps.append(real.__name__)
        return real(*args)
    return step

os.fsync, os.link, os.rename = crashing(os.fsync), crashing(os.link), crashing(os.rename)
spool.put(sealed, ObjectClass.CLIP, ["a", "b"])
os._exit(0)
"""
COMMIT_STEP = 5


@pytest.mark.parametrize("crash_at", range(8))
def test_a_crash_anywhere_in_put_spools_all_or_nothing(
    crash_at: int, spool_dir: Path, tmp_path: Path, seal: Callable[..., SealedObject]
) -> None:
    earlier, crashing = seal(), seal()
    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        spool.put(earlier, CLIP, ["a", "b"])
    data = tmp_path / "sealed"
    data.write_bytes(crashing.data)
    args = [str(spool_dir), str(data), crashing.device_id.hex(), str(crashing.seq), str(crash_at)]
    child = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, timeout=30)
    assert child.returncode == (0 if crash_at == 7 else 77), child.stderr.decode()

    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        expected = [earlier, crashing] if crash_at > COMMIT_STEP else [earlier]
        for sink in ("a", "b"):
            assert pending_names(spool, sink) == names(expected)
            assert [o.read() for o in spool.pending(sink)] == [bytes(o.data) for o in expected]
        files = {o.path.name for o in spool.pending("a")}
        # No temporary file and no link to an uncommitted object survives the restart.
        assert spool_files(spool_dir) == {"objects": files, "queues/a": files, "queues/b": files}


def test_recovery_from_hand_made_crash_states(
    spool_dir: Path, seal: Callable[..., SealedObject], caplog: pytest.LogCaptureFixture
) -> None:
    confirmed, evicted, intact, half = seal(), seal(), seal(), seal()
    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        for sealed in (confirmed, evicted, intact):
            spool.put(sealed, CLIP, ["a", "b"])
        by_name = {o.name: o for o in spool.pending("a")}
    objects, queues = spool_dir / "objects", spool_dir / "queues"
    # done() crashed after the last sink's link went, before the object file did.
    for sink in ("a", "b"):
        (queues / sink / by_name[confirmed.name].path.name).unlink()
    # Deleting an evicted object crashed after the object file went, before its links.
    by_name[evicted.name].path.unlink()
    # put() crashed before its commit: a torn temporary file, already linked into one queue.
    half_file = f"{half.seq:020d}.2.clip.{half.name}"
    (objects / f".{half_file}.tmp").write_bytes(bytes(half.data[:100]))
    os.link(objects / f".{half_file}.tmp", queues / "a" / half_file)
    # A stale link whose name matches a committed object but not its inode.
    stale = queues / "b" / by_name[intact.name].path.name
    stale.unlink()
    stale.write_bytes(b"not the object")

    with caplog.at_level(logging.INFO), Spool(spool_dir, BIG, ["a", "b"]) as spool:
        assert pending_names(spool, "a") == [intact.name]
        assert pending_names(spool, "b") == []
        assert spool.pending("a")[0].read() == bytes(intact.data)
        kept = by_name[intact.name].path.name
        assert spool_files(spool_dir) == {"objects": {kept}, "queues/a": {kept}}
        assert (spool.count, spool.size_bytes) == (1, len(intact.data))
    # The temporary file, its link, the deleted object's two links and the stale link.
    assert (
        "removed 5 file(s) of interrupted writes or deletions "
        "and 1 object(s) no sink owed any more" in caplog.text
    )


# -- several sinks ------------------------------------------------------------------------


def test_each_sink_has_its_own_queue_position(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    objs = [seal() for _ in range(3)]
    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        for sealed in objs:
            spool.put(sealed, CLIP, ["a", "b"])
        assert [o.name for o in spool.pending("a", limit=1)] == [objs[0].name]
        for obj in spool.pending("a"):
            spool.done("a", obj)
        assert pending_names(spool, "a") == []
        assert pending_names(spool, "b") == names(objs)
        assert all(o.path.exists() for o in spool.pending("b"))
        assert "queues/a" not in spool_files(spool_dir)

        oldest = spool.pending("b")[0]
        spool.done("b", oldest)
        assert not oldest.path.exists()
        assert pending_names(spool, "b") == names(objs[1:])
        assert spool.count == 2
        spool.done("b", oldest)  # a repeated confirmation is harmless
        assert spool.count == 2


def only(*kinds: Kind) -> Callable[[str, Kind], bool]:
    """``wants`` for a spool whose sink ``m`` (an MQTT link) takes only ``kinds``."""
    return lambda sink, kind: sink != "m" or kind in kinds


def test_a_removed_sinks_queue_is_handed_over_to_the_sinks_that_take_its_kinds(
    spool_dir: Path, seal: Callable[..., SealedObject], caplog: pytest.LogCaptureFixture
) -> None:
    shared, only_b, ring, new = seal(), seal(), seal(kind=Kind.EVENT), seal()
    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        spool.put(shared, CLIP, ["a", "b"])
        spool.put(only_b, CLIP, ["b"])
        spool.put(ring, ESS, ["b"])
    with (
        caplog.at_level(logging.WARNING),
        Spool(spool_dir, BIG, ["a", "m"], wants=only(Kind.EVENT)) as spool,
    ):
        assert "sink 'b' is no longer configured: handed 3 object(s)" in caplog.text
        assert not (spool_dir / "queues" / "b").exists()
        # a already held shared; it gets what only b owed; m gets the event it takes.
        assert pending_names(spool, "a") == names([shared, only_b, ring])
        assert pending_names(spool, "m") == [ring.name]
        assert [o.read() for o in spool.pending("a")] == [
            bytes(o.data) for o in (shared, only_b, ring)
        ]
        assert spool.count == 3 and spool.stats()["removed_sinks"] == {}
        spool.put(new, CLIP, ["a"])
        assert pending_names(spool, "m") == [ring.name]
    caplog.clear()
    with caplog.at_level(logging.WARNING), Spool(spool_dir, BIG, ["a", "m"]) as spool:
        assert caplog.text == ""  # handed over once, durably
        assert pending_names(spool, "a") == names([shared, only_b, ring, new])
        for obj in spool.pending("a"):
            spool.done("a", obj)
        assert pending_names(spool, "m") == [ring.name] and spool.count == 1
        spool.done("m", spool.pending("m")[0])
        assert spool.count == 0 and spool_files(spool_dir) == anchored(new, CLIP)
        spool.release_anchor()
        assert spool_files(spool_dir) == {}


def test_a_removed_sinks_objects_no_sink_takes_are_kept_and_reported_every_start(
    spool_dir: Path, seal: Callable[..., SealedObject], caplog: pytest.LogCaptureFixture
) -> None:
    segment, ring, notice = seal(), seal(kind=Kind.EVENT), seal(kind=Kind.NOTICE)
    with Spool(spool_dir, BIG, ["b"]) as spool:
        spool.put(segment, CLIP, ["b"])
        spool.put(ring, ESS, ["b"])
        spool.put(notice, ESS, ["b"])
    kept = {segment.name, notice.name}
    for _ in range(2):
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING),
            Spool(spool_dir, BIG, ["m"], wants=only(Kind.EVENT)) as spool,
        ):
            assert (
                "sink 'b' is no longer configured and no configured sink takes 2 object(s) "
                "of its queue (notice, segment): keeping" in caplog.text
            )
            queue_b = spool_dir / "queues" / "b"
            assert {p.name.split(".", 3)[3] for p in queue_b.iterdir()} == kept
            assert spool.stats()["removed_sinks"] == {
                "b": {"objects": 2, "bytes": len(segment.data) + len(notice.data)}
            }
            for obj in spool.pending("m"):  # the event, handed over on the first start
                spool.done("m", obj)
            # Neither the kept objects nor their files go when the last configured sink
            # has taken everything.
            assert spool.count == 2
            assert {p.name.split(".", 3)[3] for p in (spool_dir / "objects").iterdir()} == kept
    with Spool(spool_dir, BIG, ["b"]) as spool:  # the sink comes back: it delivers them
        assert pending_names(spool, "b") == names([segment, notice])
        assert [o.read() for o in spool.pending("b")] == [bytes(segment.data), bytes(notice.data)]


def test_a_kept_object_may_be_evicted_and_goes_once_announced(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    segment, ring = seal(), seal(kind=Kind.EVENT)
    with Spool(spool_dir, BIG, ["b"]) as spool:
        spool.put(segment, CONT, ["b"])
    with Spool(spool_dir, len(segment.data), ["m"], wants=only(Kind.EVENT)) as spool:
        [eviction] = spool.put(ring, ESS, ["m"])
        assert (eviction.first, eviction.cls) == (segment.seq, CONT)
        assert on_disk(spool_dir, segment) == {"objects", "queues/b"}  # until announced
        spool.announced([eviction])
        assert on_disk(spool_dir, segment) == set()
        assert spool.stats()["removed_sinks"] == {}
    with Spool(spool_dir, BIG, ["m"]) as spool:
        assert not (spool_dir / "queues" / "b").exists()  # empty: nothing to keep
        assert pending_names(spool, "m") == [ring.name]


# -- quota --------------------------------------------------------------------------------


def test_quota_evicts_continuous_then_clip_never_essential_nor_the_newest(
    spool_dir: Path, seal: Callable[..., SealedObject], caplog: pytest.LogCaptureFixture
) -> None:
    e1, c2, n3, c4, c5, e6, e7, n8, e9 = (seal() for _ in range(9))
    size = len(e1.data)
    assert all(len(o.data) == size for o in (c2, n3, c4, c5, e6, e7, n8, e9))
    spool = Spool(spool_dir, 3 * size, ["a", "b"])

    def put(sealed: SealedObject, cls: ObjectClass) -> list[Eviction]:
        return spool.put(sealed, cls, ["a", "b"])

    def evicted(*objs: SealedObject, cls: ObjectClass) -> list[Eviction]:
        return [Eviction(o.seq, o.seq, chain_hash(o), cls) for o in objs]

    assert put(e1, ESS) == put(c2, CLIP) == put(n3, CONT) == []
    with caplog.at_level(logging.WARNING):
        assert put(c4, CLIP) == evicted(n3, cls=CONT)  # continuous first, though c2 is older
    assert f"evicted continuous seq {n3.seq}..{n3.seq} (1 object(s), {size} bytes)" in caplog.text
    assert put(c5, CLIP) == evicted(c2, cls=CLIP)  # then the oldest clip object
    assert put(e6, ESS) == evicted(c4, cls=CLIP)
    assert put(e7, ESS) == evicted(c5, cls=CLIP)
    assert put(n8, CONT) == []  # only essentials and the object just put: over quota
    assert spool.size_bytes == 4 * size
    assert put(e9, ESS) == evicted(n8, cls=CONT)
    assert spool.size_bytes == 4 * size
    for sink in ("a", "b"):
        assert pending_names(spool, sink) == names([e1, e6, e7, e9])
    assert spool.stats()["classes"]["essential"] == {"objects": 4, "bytes": 4 * size}
    spool.close()


def test_evictions_merge_consecutive_seqs_and_name_the_chain_hash(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    n1, n2, c3, n4 = (seal() for _ in range(4))
    size = len(n1.data)
    big = seal(size * 5 // 2)
    spool = Spool(spool_dir, 4 * size, ["a"])
    for sealed, cls in ((n1, CONT), (n2, CONT), (c3, CLIP), (n4, CONT)):
        assert spool.put(sealed, cls, ["a"]) == []
    assert spool.put(big, ESS, ["a"]) == [
        Eviction(n1.seq, n2.seq, chain_hash(n2), CONT),
        Eviction(n4.seq, n4.seq, chain_hash(n4), CONT),
    ]
    assert pending_names(spool, "a") == [c3.name, big.name]
    # The notice the caller seals from them (docs/FORMAT.md section 4.1).
    assert Eviction(n1.seq, n2.seq, chain_hash(n2), CONT).as_range() == {
        "first": n1.seq,
        "last": n2.seq,
        "last_hash": chain_hash(n2),
    }
    spool.close()


def test_evicted_files_stay_until_announced_and_a_crash_before_redelivers_them(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    n1, n2, ring, notice, n3 = seal(), seal(), seal(kind=Kind.EVENT), seal(kind=Kind.NOTICE), seal()
    size = len(n1.data)
    with Spool(spool_dir, size, ["a"]) as spool:
        spool.put(n1, CONT, ["a"])
        [eviction] = spool.put(n2, CONT, ["a"])
        assert (eviction.first, eviction.last, eviction.reason) == (n1.seq, n1.seq, "quota")
        assert pending_names(spool, "a") == [n2.name]  # no uploader starts on it ...
        assert on_disk(spool_dir, n1) == {"objects", "queues/a"}  # ... but its files stay
        # Other puts (an event, anything but the notice) do not delete them either.
        assert [e.first for e in spool.put(ring, ESS, ["a"])] == [n2.seq]
        assert on_disk(spool_dir, n1) == on_disk(spool_dir, n2) == {"objects", "queues/a"}
        assert spool.put(n1, CONT, ["a"]) == []  # still known: not spooled twice
        assert spool.stats()["unannounced"] == {"objects": 2, "bytes": 2 * size}
        # Crash before the "discarded" notice is spooled: no unexplained gap on disk.
    with Spool(spool_dir, size, ["a"]) as spool:
        assert pending_names(spool, "a") == names([n1, n2, ring])
        assert [o.read() for o in spool.pending("a")[:2]] == [bytes(n1.data), bytes(n2.data)]
        [eviction] = spool.put(notice, ESS, ["a"])  # evicted again, announced this time
        assert (eviction.first, eviction.last) == (n1.seq, n2.seq)
        assert on_disk(spool_dir, n1) == {"objects", "queues/a"}
        spool.announced([eviction])
        assert on_disk(spool_dir, n1) == on_disk(spool_dir, n2) == set()
        assert spool.stats()["unannounced"] == {"objects": 0, "bytes": 0}
        spool.announced([eviction])  # announcing twice is harmless
        spool.put(n3, CONT, ["a"])
        assert pending_names(spool, "a") == names([ring, notice, n3])
    with Spool(spool_dir, size, ["a"]) as spool:
        # Announced evictions stay gone.
        assert pending_names(spool, "a") == names([ring, notice, n3])
        assert spool_files(spool_dir)["objects"] == {o.path.name for o in spool.pending("a")}


def test_make_room_evicts_for_free_space_in_eviction_order_never_essentials(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    ring, c1, n2, c3, n4 = seal(kind=Kind.EVENT), seal(), seal(), seal(), seal()
    # A reserve no disk has: every evictable object must go, and the spool is full.
    with Spool(spool_dir, BIG, ["a"], reserve_bytes=1 << 62) as spool:
        for sealed, cls in ((ring, ESS), (c1, CLIP), (n2, CONT), (c3, CLIP), (n4, CONT)):
            assert spool.put(sealed, cls, ["a"]) == []  # the reserve never refuses a put
        assert spool.stats()["full"] is False  # still something to evict
        evictions = spool.make_room(1000)
        assert [(e.first, e.last, e.cls, e.reason) for e in evictions] == [
            (n2.seq, n2.seq, CONT, "disk-full"),
            (n4.seq, n4.seq, CONT, "disk-full"),
            (c1.seq, c1.seq, CLIP, "disk-full"),
            (c3.seq, c3.seq, CLIP, "disk-full"),
        ]
        assert evictions[0].last_hash == chain_hash(n2)
        assert pending_names(spool, "a") == [ring.name]
        stats = spool.stats()
        assert stats["full"] is True and stats["reserve_bytes"] == 1 << 62
        assert stats["free_bytes"] > 0
        assert spool.make_room(1000) == []
        spool.announced(evictions)
        # n4 was the newest put: evicted and announced, its file stays as the anchor.
        assert spool_files(spool_dir)["objects"] == {
            spool.pending("a")[0].path.name,
            *anchored(n4, CONT)["objects"],
        }
        spool.release_anchor()
        assert spool_files(spool_dir)["objects"] == {spool.pending("a")[0].path.name}
    # Plenty of room: nothing to do.
    with Spool(spool_dir, BIG, ["a"], reserve_bytes=0) as spool:
        spool.put(seal(), CONT, ["a"])
        assert spool.make_room(0) == []
        assert spool.stats()["full"] is False
    with pytest.raises(ValueError, match="negative"):
        Spool(spool_dir, BIG, ["a"], reserve_bytes=-1)


def test_an_object_a_sink_is_storing_is_not_evicted(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    n1, n2, n3 = seal(), seal(), seal()
    with Spool(spool_dir, len(n1.data), ["a"]) as spool:
        spool.put(n1, CONT, ["a"])
        [claimed] = spool.pending("a")
        assert spool.claim("a", claimed)
        # n1 is being handed to the sink: the quota takes the next oldest instead.
        assert spool.put(n2, CONT, ["a"]) == []
        assert [e.first for e in spool.put(n3, CONT, ["a"])] == [n2.seq]
        spool.release("a")  # the sink failed: n1 may go now
        assert [e.first for e in spool.put(seal(kind=Kind.NOTICE), ESS, ["a"])] == [
            n1.seq,
            n3.seq,
        ]
        assert not spool.claim("a", claimed)  # evicted: its uploader must not send it


# -- uploaders ----------------------------------------------------------------------------


class ServiceSink:
    """A stand-in for an external service: fails its first ``failures`` deliveries with
    ``error``, can be held in ``deliver`` by a gate, and records what it stored."""

    def __init__(
        self, name: str, failures: int = 0, error: type[Exception] = SinkUnavailable
    ) -> None:
        self.name = name
        self.failures = failures
        self.error = error
        self.attempts = 0
        self.stored: list[tuple[str, bytes, Kind]] = []
        self.gate: threading.Event | None = None
        self.changed = threading.Condition()

    def wants(self, kind: Kind) -> bool:
        return True

    def deliver(self, name: str, data: bytes | bytearray, kind: Kind) -> None:
        with self.changed:
            self.attempts += 1
            self.changed.notify_all()
            if self.attempts <= self.failures:
                raise self.error(f"service down (attempt {self.attempts})")
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT)
        with self.changed:
            self.stored.append((name, bytes(data), kind))
            self.changed.notify_all()

    def close(self) -> None:
        pass

    def wait_until(self, predicate: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, TIMEOUT)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.stored]


class RecordingEvent(threading.Event):
    """The backoff's sleep: records each requested delay (and what status() said meanwhile)
    and returns at once, so a test sees the exact delays without waiting for them."""

    def __init__(self, observe: Callable[[], object] = lambda: None) -> None:
        super().__init__()
        self.delays: list[float | None] = []
        self.observed: list[object] = []
        self.observe = observe

    def wait(self, timeout: float | None = None) -> bool:
        self.delays.append(timeout)
        self.observed.append(self.observe())
        return self.is_set()


class SignallingEvent(threading.Event):
    """A real backoff sleep that first signals ``entered``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.entered.set()
        return super().wait(timeout)


class HeldEvent(threading.Event):
    """A backoff sleep that signals ``entered`` and then waits for ``release`` (or a stop)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.entered.set()
        self.release.wait(TIMEOUT)
        return self.is_set()


@pytest.mark.parametrize("error", [SinkUnavailable, ConnectionResetError])
def test_uploader_delivers_everything_in_order_exactly_once_after_failures(
    error: type[Exception],
    spool_dir: Path,
    seal: Callable[..., SealedObject],
    caplog: pytest.LogCaptureFixture,
) -> None:
    objs = [seal() for _ in range(3)] + [seal(kind=Kind.EVENT)] + [seal() for _ in range(2)]
    spool = Spool(spool_dir, BIG, ["svc"])
    sink = ServiceSink("svc", failures=3, error=error)
    sleep = RecordingEvent()
    uploader = Uploader(spool, sink, random=lambda: 0.5, sleep_event=sleep)
    for sealed in objs[:3]:
        spool.put(sealed, CLIP, ["svc"])
    with caplog.at_level(logging.INFO, logger="doorbell.transport.uploader"):
        uploader.start()
        assert sink.wait_until(lambda: len(sink.stored) == 3)
        for sealed in objs[3:]:  # the idle uploader wakes for new objects
            spool.put(sealed, ESS if sealed.kind is Kind.EVENT else CLIP, ["svc"])
        assert sink.wait_until(lambda: len(sink.stored) == 6)
        assert uploader.stop(TIMEOUT)

    assert sink.stored == [(o.name, bytes(o.data), o.kind) for o in objs]
    assert sink.attempts == 6 + 3  # the first object, retried three times, then each once
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert spool.pending("svc") == [] and spool.count == 0
    assert spool_files(spool_dir) == anchored(objs[-1], CLIP)
    status = uploader.status()
    assert (status.running, status.delivered, status.failures, status.next_retry) == (
        False,
        6,
        0,
        None,
    )
    assert status.last_error == f"{error.__name__}: service down (attempt 3)"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and objs[0].name in warnings[0].getMessage()
    assert "delivering again after 3 failure(s)" in caplog.text
    spool.close()


def test_backoff_is_full_jitter_capped_and_logged_sparingly(
    spool_dir: Path, seal: Callable[..., SealedObject], caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(spool_dir, BIG, ["svc"])
    spool.put(seal(), CLIP, ["svc"])
    sink = ServiceSink("svc", failures=12)
    draws = [0.1, 0.9, 0.5, 0.25, 0.75, 0.5, 0.3, 0.6, 0.99, 0.0, 0.2, 0.8]
    randoms = iter(draws)
    now = 1000.0
    sleep = RecordingEvent()
    uploader = Uploader(
        spool,
        sink,
        clock=lambda: now,
        random=lambda: next(randoms),
        sleep_event=sleep,
        base_delay=0.5,
        max_delay=10.0,
    )
    sleep.observe = lambda: uploader.status().next_retry
    with caplog.at_level(logging.WARNING, logger="doorbell.transport.uploader"):
        uploader.start()
        assert sink.wait_until(lambda: len(sink.stored) == 1)
        assert uploader.stop(TIMEOUT)

    ceilings = [0.5, 1, 2, 4, 8, 10, 10, 10, 10, 10, 10, 10]
    expected = [r * c for r, c in zip(draws, ceilings, strict=True)]
    assert sleep.delays == pytest.approx(expected)
    # status() during each wait: the fake clock stands still, so exactly the delay remains.
    assert sleep.observed == pytest.approx(expected)
    ceiling = Uploader(spool, sink, random=lambda: 1.0, base_delay=0.5, max_delay=10.0)
    assert [ceiling.backoff_delay(n) for n in (1, 2, 5, 6, 5000)] == [0.5, 1.0, 8.0, 10.0, 10.0]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 2
    assert "1 failure(s) in a row" in logged[0] and "10 failure(s) in a row" in logged[1]
    spool.close()


def test_stop_interrupts_a_backoff_wait_and_an_idle_wait_promptly(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    spool = Spool(spool_dir, BIG, ["down", "idle"])
    spool.put(seal(), CLIP, ["down"])
    down = ServiceSink("down", failures=1_000_000)
    sleep = SignallingEvent()
    backing_off = Uploader(
        spool, down, random=lambda: 1.0, sleep_event=sleep, base_delay=3600, max_delay=3600
    )
    idle = Uploader(spool, ServiceSink("idle"))
    backing_off.start()
    idle.start()
    assert sleep.entered.wait(TIMEOUT)
    retry = backing_off.status().next_retry
    assert retry is not None and retry > 3000

    started = time.monotonic()
    assert backing_off.stop(TIMEOUT)
    assert idle.stop(TIMEOUT)
    assert time.monotonic() - started < 2.0
    assert down.attempts == 1
    assert pending_names(spool, "down") != []  # not delivered, still owed
    spool.close()


def test_a_sink_raising_unexpectedly_does_not_kill_its_uploader(
    spool_dir: Path, seal: Callable[..., SealedObject], caplog: pytest.LogCaptureFixture
) -> None:
    objs = [seal(), seal()]
    spool = Spool(spool_dir, BIG, ["buggy"])
    for sealed in objs:
        spool.put(sealed, CLIP, ["buggy"])
    sink = ServiceSink("buggy", failures=2, error=KeyError)
    uploader = Uploader(spool, sink, random=lambda: 0.0, sleep_event=RecordingEvent())
    with caplog.at_level(logging.ERROR, logger="doorbell.transport.uploader"):
        uploader.start()
        assert sink.wait_until(lambda: len(sink.stored) == 2)
        assert uploader.status().running
        assert uploader.stop(TIMEOUT)
    assert sink.names == names(objs)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(objs[0].name in r.getMessage() and r.exc_info for r in errors)
    spool.close()


def test_a_slow_sink_does_not_hold_back_another(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    objs = [seal() for _ in range(5)]
    spool = Spool(spool_dir, BIG, ["slow", "fast"])
    for sealed in objs:
        spool.put(sealed, CLIP, ["slow", "fast"])
    slow, fast = ServiceSink("slow"), ServiceSink("fast")
    slow.gate = threading.Event()
    uploaders = [Uploader(spool, slow), Uploader(spool, fast)]
    for uploader in uploaders:
        uploader.start()
    try:
        assert slow.wait_until(lambda: slow.attempts == 1)  # held inside its first delivery
        assert fast.wait_until(lambda: len(fast.stored) == 5)
        assert slow.attempts == 1 and slow.stored == []
        assert pending_names(spool, "fast") == []
        assert pending_names(spool, "slow") == names(objs)
        assert all(o.path.exists() for o in spool.pending("slow"))
    finally:
        slow.gate.set()
    assert slow.wait_until(lambda: len(slow.stored) == 5)
    assert all(uploader.stop(TIMEOUT) for uploader in uploaders)
    assert slow.names == fast.names == names(objs)
    assert spool.count == 0 and spool_files(spool_dir) == anchored(objs[-1], CLIP)
    spool.close()


def test_an_object_evicted_while_its_delivery_backs_off_is_skipped(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    n1, n2, notice = seal(), seal(), seal(kind=Kind.NOTICE)
    spool = Spool(spool_dir, len(n1.data) * 3 // 2, ["svc"])
    spool.put(n1, CONT, ["svc"])
    sink = ServiceSink("svc", failures=1)
    sleep = HeldEvent()
    uploader = Uploader(spool, sink, sleep_event=sleep)
    uploader.start()
    try:
        assert sleep.entered.wait(TIMEOUT)  # n1 failed once; its retry is pending
        assert [e.first for e in spool.put(n2, CONT, ["svc"])] == [n1.seq]
        assert [e.first for e in spool.put(notice, ESS, ["svc"])] == [n2.seq]
    finally:
        sleep.release.set()
    assert sink.wait_until(lambda: len(sink.stored) == 1)
    assert uploader.stop(TIMEOUT)
    assert sink.names == [notice.name]
    status = uploader.status()
    assert (status.delivered, status.skipped) == (1, 1)
    spool.close()


def test_an_object_a_sink_is_storing_is_not_evicted_under_it(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    n1, n2, notice = seal(), seal(), seal(kind=Kind.NOTICE)
    spool = Spool(spool_dir, len(n1.data), ["svc"])
    spool.put(n1, CONT, ["svc"])
    sink = ServiceSink("svc")
    sink.gate = threading.Event()
    uploader = Uploader(spool, sink)
    uploader.start()
    try:
        assert sink.wait_until(lambda: sink.attempts == 1)  # n1 is inside deliver()
        assert spool.put(n2, CONT, ["svc"]) == []  # over quota, but n1 is being stored
        assert [(e.first, e.last) for e in spool.put(notice, ESS, ["svc"])] == [(n2.seq, n2.seq)]
    finally:
        sink.gate.set()
    assert sink.wait_until(lambda: len(sink.stored) == 2)
    assert uploader.stop(TIMEOUT)
    # What reached the sink and what a notice calls discarded never overlap.
    assert sink.names == [n1.name, notice.name]
    spool.close()


def test_wait_wakes_on_put_and_on_interrupt(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    spool = Spool(spool_dir, BIG, ["a", "b"])
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(spool.wait("a", TIMEOUT)))
    waiter.start()
    spool.put(seal(), CLIP, ["a"])
    waiter.join(TIMEOUT)
    assert woke == [True]
    assert spool.wait("a", 0) is True
    spool.interrupt("b")
    started = time.monotonic()
    assert spool.wait("b", TIMEOUT) is False  # an interrupt before the wait is not lost
    assert time.monotonic() - started < 1.0
    # ... and it is used up: the next wait waits its full timeout.
    started = time.monotonic()
    assert spool.wait("b", 0.05) is False
    assert time.monotonic() - started >= 0.045

    # Closing the spool wakes an idle uploader, which then ends instead of spinning.
    Uploader(spool, ServiceSink("b")).start()
    [thread] = [t for t in threading.enumerate() if t.name == "uploader-b"]
    spool.close()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_wait_drained_returns_once_the_sink_took_everything(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    spool = Spool(spool_dir, BIG, ["svc"])
    assert spool.wait_drained("svc", 0) is True
    for _ in range(3):
        spool.put(seal(), CLIP, ["svc"])
    assert spool.wait_drained("svc", 0.01) is False
    sink = ServiceSink("svc")
    sink.gate = threading.Event()
    uploader = Uploader(spool, sink)
    uploader.start()
    assert sink.wait_until(lambda: sink.attempts == 1)
    assert spool.wait_drained("svc", 0.01) is False  # held in the first delivery
    sink.gate.set()
    assert spool.wait_drained("svc", TIMEOUT) is True
    assert len(sink.stored) == 3
    assert uploader.stop(TIMEOUT)
    spool.close()


def test_an_object_file_removed_by_hand_is_skipped_not_retried_for_ever(
    spool_dir: Path, seal: Callable[..., SealedObject], caplog: pytest.LogCaptureFixture
) -> None:
    objs = [seal() for _ in range(3)]
    spool = Spool(spool_dir, BIG, ["svc"])
    for sealed in objs:
        spool.put(sealed, CLIP, ["svc"])
    spool.pending("svc")[1].path.unlink()
    sink = ServiceSink("svc")
    uploader = Uploader(spool, sink)
    with caplog.at_level(logging.WARNING, logger="doorbell.transport.uploader"):
        uploader.start()
        assert sink.wait_until(lambda: len(sink.stored) == 2)
        assert uploader.stop(TIMEOUT)
    assert sink.names == [objs[0].name, objs[2].name]
    assert uploader.status().skipped == 1
    assert spool.pending("svc") == [] and spool.count == 0
    assert f"{objs[1].name} is no longer in the spool; skipped" in caplog.text
    spool.close()


def test_uploader_status_says_since_when_a_sink_fails_and_what_waits(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    objs = [seal(), seal()]
    spool = Spool(spool_dir, BIG, ["svc"])
    for sealed in objs:
        spool.put(sealed, CLIP, ["svc"])
    sink = ServiceSink("svc", failures=2)
    wall = [1_700_000_000.0]

    def during_backoff() -> tuple[int, float | None, int, str | None]:
        status = uploader.status()
        wall[0] += 60  # a minute passes in each backoff
        return status.failures, status.failing_since, status.pending, status.last_error

    sleep = RecordingEvent(during_backoff)
    uploader = Uploader(spool, sink, wall_clock=lambda: wall[0], sleep_event=sleep)
    status = uploader.status()
    assert (status.pending, status.pending_bytes) == (2, sum(len(o.data) for o in objs))
    assert (status.failing_since, status.last_delivered) == (None, None)
    uploader.start()
    assert sink.wait_until(lambda: len(sink.stored) == 2)
    assert uploader.stop(TIMEOUT)
    # Failing since the first failure, not the latest; everything still waiting.
    assert sleep.observed == [
        (1, 1_700_000_000.0, 2, "SinkUnavailable: service down (attempt 1)"),
        (2, 1_700_000_000.0, 2, "SinkUnavailable: service down (attempt 2)"),
    ]
    status = uploader.status()
    assert (status.failures, status.failing_since, status.last_delivered) == (
        0,
        None,
        1_700_000_120.0,
    )
    assert (status.pending, status.pending_bytes, status.delivered) == (0, 0, 2)
    spool.close()


# -- files that are not intact objects ------------------------------------------------------


def spool_all(
    sealer: Sealer, spool: Spool, count: int, sinks: tuple[str, ...] = ("a",)
) -> list[SealedObject]:
    """Seal ``count`` segments (and whatever the sealer puts first) into ``spool``."""
    out: list[SealedObject] = []
    for _ in range(count):
        for sealed in sealer.seal(Kind.SEGMENT, {}, os.urandom(600)):
            spool.put(sealed, CLIP, list(sinks))
            out.append(sealed)
    return out


def object_file(spool_dir: Path, sealed: SealedObject) -> Path:
    [path] = (spool_dir / "objects").glob(f"*.{sealed.name}")
    return path


def quarantine(spool_dir: Path) -> list[str]:
    """The quarantined files, by the name they had, oldest first."""
    return [p.name.split("-", 1)[1] for p in sorted((spool_dir / "quarantine").iterdir())]


@contextlib.contextmanager
def checked(
    spool_dir: Path, sinks: list[str], sealer: Sealer, head: ChainHead | None
) -> Iterator[Spool]:
    """A spool of ``sealer``'s device whose check of earlier files, against ``head``, is done."""
    done = threading.Event()
    with Spool(spool_dir, BIG, sinks, device=sealer.device_key, when_checked=done.set) as spool:
        spool.check(head)
        assert done.wait(TIMEOUT)
        yield spool


def test_files_that_are_not_intact_objects_of_this_device_are_never_queued(
    spool_dir: Path,
    sealer: Sealer,
    state_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = sealer.device_key
    with Spool(spool_dir, BIG, ["a"], device=device) as spool:
        objs = spool_all(sealer, spool, 5)  # keyring 0, segments 1..5
    truncated = object_file(spool_dir, objs[3])
    truncated.write_bytes(truncated.read_bytes()[:-100])
    prefix = objs[0].name.split("-")[0]
    garbage = f"{6:020d}.2.clip.{prefix}-{6:020d}.sealed"
    (spool_dir / "objects" / garbage).write_bytes(os.urandom(900))
    other_state = tmp_path / "other-state"
    other_state.mkdir(mode=0o700)
    (other_state / "keyring.json").write_bytes((state_dir / "keyring.json").read_bytes())
    with Sealer(other_state) as other_sealer:
        foreign = other_sealer.seal(Kind.SEGMENT, {}, os.urandom(600))[-1]
    # Another device's object, under this device's next name and under its own.
    impostor = f"{7:020d}.2.clip.{prefix}-{7:020d}.sealed"
    (spool_dir / "objects" / impostor).write_bytes(foreign.data)
    other = f"{foreign.seq:020d}.2.clip.{foreign.name}"
    (spool_dir / "objects" / other).write_bytes(foreign.data)
    (spool_dir / "objects" / "notes.txt").write_bytes(b"hello")
    (spool_dir / "objects" / ".half-written.tmp").write_bytes(b"\x89DBELL")

    done = threading.Event()
    with (
        caplog.at_level(logging.INFO),
        Spool(spool_dir, BIG, ["a"], device=device, when_checked=done.set) as spool,
    ):
        # Opening reads no file: nothing of an earlier run is offered before its check.
        assert pending_names(spool, "a") == []
        assert spool.stats()["unchecked"]["objects"] == len(objs) + 3
        assert sorted(quarantine(spool_dir)) == ["notes.txt"]
        assert "quarantined 'notes.txt': not a spooled object's file name" in caplog.text
        assert not (spool_dir / "objects" / ".half-written.tmp").exists()
        assert spool.damaged() == []

        spool.check(sealer.head)
        assert done.wait(TIMEOUT)
        intact = [o for o in objs if o is not objs[3]]
        assert pending_names(spool, "a") == names(intact)
        assert spool.stats()["unchecked"] == {"objects": 0, "bytes": 0}
        # Named as this device's object and a hole in the chain: waiting for its notice.
        assert spool.stats()["quarantined"]["objects"] == 5
        assert sorted(quarantine(spool_dir)) == sorted(["notes.txt", other, garbage, impostor])
        assert f"quarantined {other!r}: signed by another device" in caplog.text
        assert f"quarantined {garbage!r}: truncated" not in caplog.text
        assert "past the chain head: never delivered, no hole" in caplog.text

        [eviction] = spool.damaged()
        assert spool.damaged() == []  # each is handed over once
        assert (eviction.first, eviction.last, eviction.reason) == (3, 3, "damaged")
        assert eviction.last_hash == chain_hash(objs[3])  # the prev of intact object 4
        assert eviction.notice_reason == "damaged"
        assert f"{truncated.name!r} is damaged (truncated: object is" in caplog.text
        # Until its notice is durable, the damaged file stays where a restart finds it.
        assert truncated.exists() and (spool_dir / "queues" / "a" / truncated.name).exists()
        spool.announced([eviction])
        assert not truncated.exists()
        assert not (spool_dir / "queues" / "a" / truncated.name).exists()
        assert spool.stats()["quarantined"]["objects"] == 5
        assert spool.stats()["objects"] == len(intact)
    assert sorted(quarantine(spool_dir)) == sorted(
        ["notes.txt", other, garbage, impostor, truncated.name]
    )
    with checked(spool_dir, ["a"], sealer, sealer.head) as spool:
        assert pending_names(spool, "a") == names(intact)
        assert spool.damaged() == []
        assert spool.stats()["quarantined"]["objects"] == 5


def test_a_damaged_file_stays_owed_until_announced_even_across_a_crash(
    spool_dir: Path, sealer: Sealer
) -> None:
    device = sealer.device_key
    with Spool(spool_dir, BIG, ["a", "b"], device=device) as spool:
        objs = spool_all(sealer, spool, 3, ("a", "b"))  # 0..3
    # The head itself damaged: its hash is the sealer's durable head, not in any file.
    path = object_file(spool_dir, objs[-1])
    path.write_bytes(b"\x00" * path.stat().st_size)
    head = sealer.head
    assert head is not None and head.seq == objs[-1].seq
    with checked(spool_dir, ["a", "b"], sealer, head) as spool:
        [first] = spool.damaged()
        # Stopped before the notice was spooled: nothing was moved.
    with checked(spool_dir, ["a", "b"], sealer, head) as spool:
        [again] = spool.damaged()
        assert again == first
        assert (again.first, again.last, again.last_hash) == (3, 3, chain_hash(objs[-1]))
        spool.announced([again])
        assert pending_names(spool, "a") == pending_names(spool, "b") == names(objs[:-1])
    assert quarantine(spool_dir) == [path.name]


def test_a_damaged_object_is_not_announced_without_an_honest_chain_hash(
    spool_dir: Path, sealer: Sealer, caplog: pytest.LogCaptureFixture
) -> None:
    device = sealer.device_key
    with Spool(spool_dir, BIG, ["a", "b"], device=device) as spool:
        objs = spool_all(sealer, spool, 4, ("a", "b"))  # 0..4
        # Sink a took everything: object 1's only link left is b's. Object 2 left the
        # spool altogether, so nothing intact names object 1's chain hash.
        for obj in spool.pending("a"):
            spool.done("a", obj)
        [two] = [o for o in spool.pending("b") if o.seq == 2]
        spool.done("b", two)
        [zero] = [o for o in spool.pending("b") if o.seq == 0]
    # Object 0 was taken by every sink (its file left over by a crash in ``done``).
    (spool_dir / "queues" / "b" / zero.path.name).unlink()
    damaged = [object_file(spool_dir, o) for o in objs[:2]]
    for path in damaged:
        path.write_bytes(path.read_bytes()[:200])
    with caplog.at_level(logging.WARNING), checked(spool_dir, ["a", "b"], sealer, sealer.head) as s:
        assert s.damaged() == []
        assert "seq 1..1 damaged, and no intact object names its chain hash" in caplog.text
        assert "every sink had taken it: no hole" in caplog.text
        assert pending_names(s, "b") == names(objs[3:])
    assert quarantine(spool_dir) == [path.name for path in damaged]


def test_the_quarantine_is_bounded_and_keeps_the_newest(
    spool_dir: Path, sealer: Sealer, caplog: pytest.LogCaptureFixture
) -> None:
    from doorbell.transport.spool import QUARANTINE_MAX_BYTES, QUARANTINE_MAX_FILES

    device = sealer.device_key
    Spool(spool_dir, BIG, ["a"], device=device).close()
    for number in range(QUARANTINE_MAX_FILES + 10):
        (spool_dir / "objects" / f"flood-{number:03d}").write_bytes(b"x" * 100)
    with caplog.at_level(logging.WARNING), Spool(spool_dir, BIG, ["a"], device=device) as s:
        assert s.stats()["quarantined"] == {
            "objects": QUARANTINE_MAX_FILES,
            "bytes": 100 * QUARANTINE_MAX_FILES,
        }
        assert "deleted its 10 oldest" in caplog.text
    kept = quarantine(spool_dir)
    assert len(kept) == QUARANTINE_MAX_FILES
    assert set(kept) <= {f"flood-{n:03d}" for n in range(QUARANTINE_MAX_FILES + 10)}
    # A later run's files are newer than every earlier one: the oldest go first.
    (spool_dir / "objects" / "huge").write_bytes(b"y" * (QUARANTINE_MAX_BYTES - 1000))
    with Spool(spool_dir, BIG, ["a"], device=device) as s:
        stats = s.stats()["quarantined"]
        assert stats["bytes"] <= QUARANTINE_MAX_BYTES
    assert quarantine(spool_dir)[-1] == "huge"


# -- the check of earlier files runs beside recording ----------------------------------------


def test_recording_never_waits_for_the_check_of_earlier_files_only_their_delivery_does(
    spool_dir: Path, sealer: Sealer
) -> None:
    with Spool(spool_dir, BIG, ["a", "b"], device=sealer.device_key) as spool:
        earlier = spool_all(sealer, spool, 4, ("a", "b"))  # keyring 0, segments 1..4
    damaged = object_file(spool_dir, earlier[2])
    damaged.write_bytes(damaged.read_bytes()[:-1])
    head = sealer.head
    assert head is not None
    sink = ServiceSink("a")
    done = threading.Event()
    with Spool(
        spool_dir, BIG, ["a", "b"], device=sealer.device_key, when_checked=done.set
    ) as spool:
        uploader = Uploader(spool, sink)
        uploader.start()
        # Every open() of the oldest file waits for the test, as on an SD card slow to read.
        with StalledFile(object_file(spool_dir, earlier[0])) as stalled:
            newest = spool.newest(sealer.device_id)
            assert newest is not None and (newest.seq, newest.hash) == (head.seq, head.hash)
            # The head was the only file read.
            assert spool.stats()["unchecked"]["objects"] == len(earlier) - 1
            spool.check(head)
            wait_for(stalled.reader_waiting, TIMEOUT, "the check to open the oldest file")

            new = spool_all(sealer, spool, 2, ("a", "b"))
            assert stalled.held(), "someone waited lease-break-time for the oldest file"
            assert spool.stats()["unchecked"]["objects"] == len(earlier) - 1
            assert spool.stats()["sinks"]["a"]["pending"] == len(earlier) + len(new)
            # Objects go out in seq order, so what was put behind an unchecked file waits.
            assert spool.pending("a") == spool.pending("b") == []
            assert not spool.wait("b", timeout=0)
            assert sink.stored == [] and not done.is_set()
        assert done.wait(TIMEOUT)
        intact = [o for o in earlier if o is not earlier[2]]
        assert sink.wait_until(lambda: len(sink.stored) == len(intact) + len(new))
        assert sink.names == names(intact + new)
        assert pending_names(spool, "b") == names(intact + new)
        [hole] = spool.damaged()
        assert (hole.first, hole.last, hole.last_hash) == (2, 2, chain_hash(earlier[2]))
        assert uploader.stop(TIMEOUT)


def test_an_eviction_checks_only_the_earlier_files_it_takes_and_never_a_damaged_one(
    spool_dir: Path, sealer: Sealer
) -> None:
    with Spool(spool_dir, BIG, ["a"], device=sealer.device_key) as spool:
        earlier = spool_all(sealer, spool, 4)  # 0..4
    damaged = object_file(spool_dir, earlier[1])
    damaged.write_bytes(b"\x00" * damaged.stat().st_size)
    head = sealer.head
    [new] = sealer.seal(Kind.SEGMENT, {}, os.urandom(600))
    # Room for the newest two earlier objects and the new one: 0, 1 and 2 must go.
    quota = sum(len(o.data) for o in (*earlier[3:], new))
    done = threading.Event()
    with Spool(spool_dir, quota, ["a"], device=sealer.device_key, when_checked=done.set) as spool:
        evictions = spool.put(new, CLIP, ["a"])
        # Its notice names the chain hashes of 0 and 2, read from files found intact; the
        # damaged 1 left the books instead, and 3 and 4 were not read.
        assert [(e.first, e.last, e.last_hash, e.reason) for e in evictions] == [
            (0, 0, chain_hash(earlier[0]), "quota"),
            (2, 2, chain_hash(earlier[2]), "quota"),
        ]
        assert spool.stats()["unchecked"]["objects"] == 2
        assert spool.damaged() == []
        spool.check(head)
        assert done.wait(TIMEOUT)
        [hole] = spool.damaged()
        # Object 2 was evicted, but checked first: its prev names object 1.
        assert (hole.first, hole.last, hole.last_hash) == (1, 1, chain_hash(earlier[1]))
        assert pending_names(spool, "a") == names([*earlier[3:], new])
        spool.announced([*evictions, hole])
    assert quarantine(spool_dir) == [damaged.name]


def test_a_long_outage_seals_a_notice_per_slack_not_per_segment(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    objects = [seal() for _ in range(40)]
    size = len(objects[0].data)
    spool = Spool(spool_dir, 10 * size, ["a"], quota_slack=4 * size)
    batches = []
    for sealed in objects:
        evictions = spool.put(sealed, CONT, ["a"])
        assert spool.size_bytes <= 10 * size
        if evictions:
            batches.append(evictions)
            spool.announced(evictions)
    # Each time the quota is passed, the spool goes 4 objects below it: one notice for
    # every 5 objects put, never one for each.
    assert len(batches) == 6
    assert all(sum(e.last - e.first + 1 for e in batch) == 5 for batch in batches)
    assert pending_names(spool, "a") == names(objects[-10:])
    spool.close()
