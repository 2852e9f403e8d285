"""The spool and its uploaders: durability, crash recovery, per-sink queues, quota eviction,
retries with backoff, and sinks that are slow, down or broken.

Crashes are real where it is cheap (a child process that dies with ``os._exit`` in the
middle of ``put``) and hand-made on-disk states elsewhere. Threads are synchronised on
events and conditions with timeouts, never on sleeps.
"""

from __future__ import annotations

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

from doorbell.sealing import Kind, RecipientPrivateKey, SealedObject, Sealer
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

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "rename", rename)
    assert spool.put(sealed, CLIP, ["a", "b"]) == []
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


def test_restart_sees_the_same_queues(spool_dir: Path, seal: Callable[..., SealedObject]) -> None:
    objs = [seal(), seal(kind=Kind.EVENT), seal(), seal(kind=Kind.INIT)]
    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        spool.put(objs[0], CONT, ["a", "b"])
        spool.put(objs[1], ESS, ["a"])
        spool.put(objs[2], CLIP, ["b"])
        spool.put(objs[3], CLIP, ["a", "b"])
        spool.done("b", spool.pending("b")[0])
        before = {sink: spool.pending(sink) for sink in ("a", "b")}
        stats = spool.stats()

    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        assert {sink: spool.pending(sink) for sink in ("a", "b")} == before
        assert spool.stats() == stats
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


def test_an_unconfigured_sink_is_dropped_and_a_new_one_gets_only_new_objects(
    spool_dir: Path, seal: Callable[..., SealedObject], caplog: pytest.LogCaptureFixture
) -> None:
    shared, only_b, new = seal(), seal(), seal()
    with Spool(spool_dir, BIG, ["a", "b"]) as spool:
        spool.put(shared, CLIP, ["a", "b"])
        spool.put(only_b, CLIP, ["b"])
    with caplog.at_level(logging.WARNING), Spool(spool_dir, BIG, ["a", "c"]) as spool:
        assert "sink 'b' is no longer configured: dropping its queue of 2 object(s)" in caplog.text
        assert not (spool_dir / "queues" / "b").exists()
        assert pending_names(spool, "a") == [shared.name]
        assert pending_names(spool, "c") == []
        # Nothing else wanted only_b: it no longer takes space.
        assert spool.count == 1
        assert {p.name.split(".", 3)[3] for p in (spool_dir / "objects").iterdir()} == {shared.name}
        spool.put(new, CLIP, ["a", "c"])
        assert pending_names(spool, "c") == [new.name]
        assert pending_names(spool, "a") == [shared.name, new.name]


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


def test_evicted_files_go_only_once_the_next_object_is_durable(
    spool_dir: Path, seal: Callable[..., SealedObject]
) -> None:
    n1, n2, notice, n3 = seal(), seal(), seal(kind=Kind.NOTICE), seal()
    size = len(n1.data)
    with Spool(spool_dir, size, ["a"]) as spool:
        spool.put(n1, CONT, ["a"])
        [eviction] = spool.put(n2, CONT, ["a"])
        assert eviction.first == n1.seq
        assert pending_names(spool, "a") == [n2.name]
        # Crash before the "discarded" notice is spooled: no unexplained gap on disk.
    with Spool(spool_dir, size, ["a"]) as spool:
        assert pending_names(spool, "a") == [n1.name, n2.name]
        [eviction] = spool.put(notice, ESS, ["a"])  # evicts n1 again, n2 next
        assert (eviction.first, eviction.last) == (n1.seq, n2.seq)
        spool.put(n3, CONT, ["a"])
        assert pending_names(spool, "a") == [notice.name, n3.name]
    with Spool(spool_dir, size, ["a"]) as spool:
        # The notice was durable before n1 and n2 were deleted; they stay gone.
        assert pending_names(spool, "a") == [notice.name, n3.name]
        assert spool_files(spool_dir)["objects"] == {o.path.name for o in spool.pending("a")}


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
    assert spool_files(spool_dir) == {}
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
    assert spool.count == 0 and spool_files(spool_dir) == {}
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
