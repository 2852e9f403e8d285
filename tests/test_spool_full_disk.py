"""The spool on a real, small file system: a size-limited tmpfs (mounted as root) with the
S3 sink down, filled until it would be full. Rings and notices must always fit; old
continuous and clip footage makes room; a put that meets ENOSPC leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3_fixture import unreachable_s3_sink
from small_disk import small_disk as mounted_small_disk
from test_spool import TIMEOUT, SignallingEvent, on_disk, seal, sealer, spool_files  # noqa: F401

from doorbell.sealing import Kind, SealedObject, Sealer
from doorbell.transport.s3 import S3Sink
from doorbell.transport.spool import Eviction, ObjectClass, Spool
from doorbell.transport.uploader import Uploader

CONT, CLIP, ESS = ObjectClass.CONTINUOUS, ObjectClass.CLIP, ObjectClass.ESSENTIAL
DISK = 8 * 1024 * 1024
RESERVE = 1024 * 1024
NO_QUOTA = 1 << 40  # only the file system limits these spools


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An empty 8 MiB tmpfs, unmounted afterwards."""
    with mounted_small_disk(tmp_path / "small-disk", DISK) as mount:
        yield mount


@pytest.fixture
def s3_down() -> Iterator[S3Sink]:
    sink = unreachable_s3_sink()
    yield sink
    sink.close()


def test_rings_and_notices_always_fit_while_old_footage_makes_room(
    small_disk: Path,
    sealer: Sealer,  # noqa: F811
    s3_down: S3Sink,
) -> None:
    spool = Spool(small_disk / "spool", NO_QUOTA, ["s3"], reserve_bytes=RESERVE)
    backoff = SignallingEvent()
    uploader = Uploader(spool, s3_down, sleep_event=backoff, base_delay=0.01, max_delay=0.05)
    uploader.start()
    essentials: list[SealedObject] = []
    footage: dict[int, ObjectClass] = {}
    announced: set[int] = set()

    def deliver(kind: Kind, meta: dict[str, object], body: bytes, cls: ObjectClass) -> None:
        """What the daemon does with each object: room first, the notice, then the object."""
        [sealed] = sealer.seal(kind, meta, body)[-1:]
        evictions = spool.make_room(len(sealed.data))
        if evictions:
            if any(e.cls is CLIP for e in evictions):
                # Clip footage goes only once no continuous footage is left to evict.
                assert [o for o in spool.pending("s3") if o.cls is CONT] == []
            ranges = [e.as_range() for e in evictions]
            reasons = {e.reason for e in evictions}
            assert reasons == {"disk-full"}
            [notice] = sealer.seal(
                Kind.NOTICE, {"notice": "discarded", "reason": "quota", "ranges": ranges}
            )[-1:]
            spool.put(notice, ESS, ["s3"])
            essentials.append(notice)
            spool.announced(evictions)
            announced.update(s for e in evictions for s in range(e.first, e.last + 1))
        spool.put(sealed, cls, ["s3"])
        if cls is ESS:
            essentials.append(sealed)
        else:
            footage[sealed.seq] = cls

    try:
        # 24 MiB of footage through an 8 MiB disk, a ring every few segments.
        for index in range(80):
            cls = CLIP if index % 10 < 3 else CONT
            deliver(Kind.SEGMENT, {"index": index}, os.urandom(300 * 1024), cls)
            if index % 4 == 0:
                deliver(Kind.EVENT, {"type": "ring"}, os.urandom(40 * 1024), ESS)
        assert backoff.entered.wait(TIMEOUT)  # the sink failed and is backing off
        status = uploader.status()
        assert status.failing_since is not None and "127.0.0.1" in str(status.last_error)

        pending = {o.seq: o for o in spool.pending("s3")}
        # Every ring and every notice is still spooled, byte for byte.
        assert all(pending[e.seq].read() == bytes(e.data) for e in essentials)
        assert len(essentials) > 20 and announced
        # Exactly what is missing was announced; the rest waits for the sink.
        assert announced == {seq for seq in footage if seq not in pending}
        # Continuous footage went first, then clip footage once none was left.
        assert {footage[seq] for seq in announced} == {CONT, CLIP}
        stats = spool.stats()
        assert (stats["full"], stats["put_failures"], stats["unannounced"]["objects"]) == (
            False,
            0,
            0,
        )
        # Announced evictions were deleted: the disk holds only what is queued.
        assert spool_files(small_disk / "spool")["objects"] == {
            o.path.name for o in pending.values()
        }
    finally:
        assert uploader.stop(TIMEOUT)
        spool.close()


def test_a_put_that_meets_a_full_disk_leaves_nothing_and_full_comes_and_goes(
    small_disk: Path,
    seal: Callable[..., SealedObject],  # noqa: F811
) -> None:
    spool_dir = small_disk / "spool"
    spool = Spool(spool_dir, NO_QUOTA, ["s3"], reserve_bytes=RESERVE)
    put: list[SealedObject] = []
    full_before_enospc = False
    # Only essential objects: nothing can be evicted, the disk really fills.
    while True:
        ring = seal(150 * 1024, kind=Kind.EVENT)
        assert spool.make_room(len(ring.data)) == []
        try:
            spool.put(ring, ESS, ["s3"])
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            failed = ring
            break
        put.append(ring)
        full_before_enospc = full_before_enospc or spool.stats()["full"]
        assert len(put) < 100, "the 8 MiB disk never filled"
    # Below the reserve with nothing to evict already counted as full, before any loss.
    assert full_before_enospc

    assert on_disk(spool_dir, failed) == set()  # no partial object, no queue link
    assert not [p for p in (spool_dir / "objects").iterdir() if p.name.endswith(".tmp")]
    files = spool_files(spool_dir)
    assert files["objects"] == files["queues/s3"] == {o.path.name for o in spool.pending("s3")}
    assert [o.name for o in spool.pending("s3")] == [o.name for o in put]
    stats = spool.stats()
    assert stats["full"] is True and stats["put_failures"] == 1
    assert failed.name in stats["last_put_error"] and "No space left" in stats["last_put_error"]

    # The sink comes back and takes most of the backlog: space is free again, but the
    # failed put still shows until a put succeeds.
    for obj in spool.pending("s3")[:-2]:
        spool.done("s3", obj)
    assert spool.stats()["free_bytes"] > RESERVE
    assert spool.stats()["full"] is True
    spool.put(failed, ESS, ["s3"])
    stats = spool.stats()
    assert (stats["full"], stats["put_failures"]) == (False, 1)
    spool.close()
    with Spool(spool_dir, NO_QUOTA, ["s3"], reserve_bytes=RESERVE) as spool:
        assert [o.name for o in spool.pending("s3")] == [o.name for o in put[-2:]] + [failed.name]
        assert spool.pending("s3")[-1].read() == bytes(failed.data)


def test_make_room_counts_evicted_files_as_space_to_come(
    small_disk: Path,
    seal: Callable[..., SealedObject],  # noqa: F811
) -> None:
    objs = [seal(100 * 1024) for _ in range(4)]
    with Spool(small_disk / "spool", NO_QUOTA, ["s3"], reserve_bytes=0) as spool:
        for sealed in objs:
            spool.put(sealed, CONT, ["s3"])
        free = spool.stats()["free_bytes"]
        # One byte more than is free: the oldest object is enough, not all four.
        [eviction] = spool.make_room(free + 1)
        assert (eviction.first, eviction.last) == (objs[0].seq, objs[0].seq)
        assert spool.stats()["free_bytes"] == free  # its file is still there ...
        assert spool.make_room(free + 1) == []  # ... but counted as freed already
        spool.announced([eviction])
        assert spool.stats()["free_bytes"] > free
        assert spool.make_room(free + 1) == []
        assert [o.seq for o in spool.pending("s3")] == [o.seq for o in objs[1:]]


def test_evictions_announced_by_the_reserve_are_what_the_notice_needs(
    small_disk: Path,
    seal: Callable[..., SealedObject],  # noqa: F811
) -> None:
    segment = seal(6 * 1024 * 1024)
    with Spool(small_disk / "spool", NO_QUOTA, ["s3"], reserve_bytes=RESERVE) as spool:
        spool.put(segment, CONT, ["s3"])
        ring = seal(1024 * 1024, kind=Kind.EVENT)
        evictions = spool.make_room(len(ring.data))
        assert evictions == [
            Eviction(segment.seq, segment.seq, evictions[0].last_hash, CONT, "disk-full")
        ]
        # The notice is written while the evicted file still takes the disk: the
        # reserve is what makes room for it.
        spool.put(seal(kind=Kind.NOTICE), ESS, ["s3"])
        spool.announced(evictions)
        spool.put(ring, ESS, ["s3"])
        assert spool.stats()["full"] is False


def test_full_while_below_the_reserve_with_nothing_to_evict_and_not_once_space_returns(
    small_disk: Path,
    seal: Callable[..., SealedObject],  # noqa: F811
) -> None:
    with Spool(small_disk / "spool", NO_QUOTA, ["s3"], reserve_bytes=RESERVE) as spool:
        clip = seal(512 * 1024)
        spool.put(clip, CLIP, ["s3"])
        while spool.stats()["free_bytes"] >= RESERVE:  # rings eat into the reserve
            spool.put(seal(256 * 1024, kind=Kind.EVENT), ESS, ["s3"])
        # Below the reserve, but the clip can still go: not full yet.
        assert spool.stats()["full"] is False
        evictions = spool.make_room(0)
        assert [(e.first, e.cls) for e in evictions] == [(clip.seq, CLIP)]
        spool.announced(evictions)
        while spool.stats()["free_bytes"] >= RESERVE:
            spool.put(seal(256 * 1024, kind=Kind.EVENT), ESS, ["s3"])
        stats = spool.stats()
        assert (stats["full"], stats["put_failures"]) == (True, 0)  # before anything is lost
        # A sink takes the rings: space returns and the spool is no longer full.
        for obj in spool.pending("s3")[:4]:
            spool.done("s3", obj)
        stats = spool.stats()
        assert stats["free_bytes"] >= RESERVE and stats["full"] is False
