"""The durable outbox: every sealed object waits on disk until each of its sinks has taken it.

Layout under the spool directory (the daemon uses ``<state_dir>/spool``)::

    .lock                                      held by the one process using the spool
    objects/<seq>.<kind>.<class>.<name>        one file per spooled object
    objects/.<file>.tmp                        an object being written; never delivered
    queues/<sink>/<file>                       a hard link per object that sink still has to take

``<seq>`` is 20 zero-padded digits, ``<kind>`` the ``Kind`` number, ``<class>`` an
``ObjectClass`` value and ``<name>`` the object name (``<device>-<seq>.sealed``): the
file name alone tells a restarted spool everything it needs, without parsing ciphertext.

Crash safety. ``put`` writes ``objects/.<file>.tmp`` and fsyncs it, hard-links it into
each target queue under the final name, fsyncs those queue directories, and only then
renames it to ``objects/<file>`` and fsyncs ``objects/``. That rename is the commit: a
queue link counts only if ``objects/`` holds a committed file of the same name and inode.
On open the spool therefore removes temporary files and every queue link without its
committed object (a put that did not finish: not spooled for any sink), and deletes every
committed object no queue links to any more (all its sinks confirmed, or the sinks still
owing it were removed from the configuration). Because the links are durable before the
rename can be, a committed object always has all its links: it is spooled for every one of
its sinks, and stays until each of them confirmed. ``done`` unlinks without an fsync: if a
power cut undoes the unlink, the object is delivered again, which sinks must tolerate.

Quota eviction removes objects from the queues at once, but deletes their files only at the
*next* ``put``, after that object is durable. The caller puts the ``discarded`` notice for
the evictions next, so a crash can never leave a gap the phones were not told about: until
the notice is on disk the evicted objects are still there, and a restarted spool delivers
them (or evicts them again, announcing it again).

Requires a file system with hard links (ext4 on the SD card, not FAT).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import itertools
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from doorbell.sealing import Kind, SealedObject
from doorbell.sealing.durable import sync_directory
from doorbell.sealing.format import SIGNATURE_LEN, chain_hash

log = logging.getLogger(__name__)

_SINK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TMP_SUFFIX = ".tmp"


class SpoolError(Exception):
    """The spool cannot be used (another process holds it, or it was closed)."""


class ObjectClass(enum.Enum):
    """What an object is worth keeping for, which decides the order quota eviction takes it in."""

    # Segments recorded outside any clip in continuous mode: evicted first.
    CONTINUOUS = "continuous"
    # Init and media segments of event clips: evicted when no continuous object is left.
    CLIP = "clip"
    # Events, notices, keyring objects: never evicted. They are tiny, and they are
    # what the phones need to explain every gap.
    ESSENTIAL = "essential"


_EVICTION_ORDER = (ObjectClass.CONTINUOUS, ObjectClass.CLIP)


@dataclass(frozen=True)
class SpooledObject:
    """One object in the spool: the sealed bytes live in ``path``, not in memory."""

    name: str
    seq: int
    kind: Kind
    cls: ObjectClass
    size: int
    path: Path

    def read(self) -> bytes:
        """The sealed bytes. Raises FileNotFoundError once the object was evicted or done."""
        return self.path.read_bytes()


@dataclass(frozen=True)
class Eviction:
    """A run of consecutive sequence numbers the quota evicted, all of one class.

    ``last_hash`` is the hex chain hash of object ``last`` (docs/FORMAT.md section 6),
    so the phones can follow the chain across the gap.
    """

    first: int
    last: int
    last_hash: str
    cls: ObjectClass

    def as_range(self) -> dict[str, int | str]:
        """This eviction as one of the ``ranges`` of a ``discarded`` notice."""
        return {"first": self.first, "last": self.last, "last_hash": self.last_hash}


# Objects are ordered by sequence number; the name breaks ties between devices (a
# reset device starts again at 0) so two objects never share a key.
_Key = tuple[int, str]


def _key(obj: SpooledObject) -> _Key:
    return (obj.seq, obj.name)


def _file_name(seq: int, kind: Kind, cls: ObjectClass, name: str) -> str:
    return f"{seq:020d}.{int(kind)}.{cls.value}.{name}"


def _parse_file_name(directory: Path, file_name: str, size: int) -> SpooledObject | None:
    parts = file_name.split(".", 3)
    if len(parts) != 4:
        return None
    seq, kind, cls, name = parts
    if len(seq) != 20 or not seq.isdigit() or not kind.isdigit() or not name:
        return None
    try:
        return SpooledObject(
            name, int(seq), Kind(int(kind)), ObjectClass(cls), size, directory / file_name
        )
    except ValueError:
        return None


def _insert(ordered: dict[_Key, SpooledObject], obj: SpooledObject) -> None:
    """Insert keeping ``ordered`` in key order: appending is the rule, re-sorting the exception."""
    key = _key(obj)
    if ordered and key < next(reversed(ordered)):
        items = sorted([*ordered.items(), (key, obj)])
        ordered.clear()
        ordered.update(items)
    else:
        ordered[key] = obj


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        # Left behind, the file is cleaned up (or delivered again) at the next start.
        log.error("spool: cannot remove %s: %s", path, exc.strerror)


class Spool:
    """The on-disk outbox with one queue per sink, so a slow sink holds back only itself.

    ``put`` is called by one thread (the daemon's main loop); each sink's uploader
    thread calls ``pending``, ``done`` and ``wait`` for its own sink.
    """

    def __init__(self, directory: Path, quota_bytes: int, sinks: Iterable[str]) -> None:
        if quota_bytes <= 0:
            raise ValueError(f"spool quota must be positive, got {quota_bytes}")
        self.directory = Path(directory)
        self.quota_bytes = quota_bytes
        self.sinks: tuple[str, ...] = tuple(dict.fromkeys(sinks))
        for sink in self.sinks:
            if not _SINK_NAME.fullmatch(sink):
                raise ValueError(
                    f"sink name {sink!r} cannot name a queue directory "
                    "(letters, digits, '_', '.', '-'; at most 64; not starting with a dot)"
                )
        self._objects = self.directory / "objects"
        self._queues_dir = self.directory / "queues"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Serialises puts, so the doomed list handed from one put to the next stays exact.
        self._put_lock = threading.Lock()
        self._index: dict[_Key, SpooledObject] = {}
        self._by_class: dict[ObjectClass, dict[_Key, SpooledObject]] = {c: {} for c in ObjectClass}
        self._queues: dict[str, dict[_Key, SpooledObject]] = {s: {} for s in self.sinks}
        self._queue_bytes = dict.fromkeys(self.sinks, 0)
        self._interrupted = dict.fromkeys(self.sinks, False)
        self._size = 0
        # Evicted by the last put, deleted by the next one (see the module docstring).
        self._doomed: list[tuple[SpooledObject, tuple[str, ...]]] = []
        self._over_quota_reported = False
        self._closed = False
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_file = self._lock_exclusive()
        try:
            self._recover()
        except BaseException:
            self._lock_file.close()
            raise

    # -- opening ---------------------------------------------------------------------

    def _lock_exclusive(self) -> IO[bytes]:
        path = self.directory / ".lock"
        handle = open(path, "ab")  # noqa: SIM115 - the lock lives as long as the spool
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SpoolError(f"another process is using the spool {self.directory}") from None
        return handle

    def _recover(self) -> None:
        """Bring the directory back to a committed state after whatever stopped the last run."""
        self._objects.mkdir(mode=0o700, exist_ok=True)
        self._queues_dir.mkdir(mode=0o700, exist_ok=True)
        leftovers = 0
        committed: dict[str, tuple[SpooledObject, int]] = {}
        for path in self._objects.iterdir():
            if path.name.startswith("."):
                if path.name.endswith(_TMP_SUFFIX):
                    _unlink(path)
                    leftovers += 1
                continue
            st = path.lstat()
            obj = _parse_file_name(self._objects, path.name, st.st_size)
            if obj is None or not stat.S_ISREG(st.st_mode):
                log.warning("spool: ignoring %s: not a spooled object's file name", path)
                continue
            committed[path.name] = (obj, st.st_ino)

        queued: dict[str, list[SpooledObject]] = {s: [] for s in self.sinks}
        for queue_dir in self._queues_dir.iterdir():
            if queue_dir.name not in queued:
                owed = sum(1 for _ in queue_dir.iterdir()) if queue_dir.is_dir() else 0
                log.warning(
                    "spool: sink %r is no longer configured: dropping its queue of %d object(s)",
                    queue_dir.name,
                    owed,
                )
                if queue_dir.is_dir() and not queue_dir.is_symlink():
                    shutil.rmtree(queue_dir)
                else:
                    queue_dir.unlink()
                continue
            for link in queue_dir.iterdir():
                entry = committed.get(link.name)
                if entry is None or link.lstat().st_ino != entry[1]:
                    # A put that never reached its commit, or an object deleted after
                    # its last confirmation: the link must not be delivered.
                    _unlink(link)
                    leftovers += 1
                    continue
                queued[queue_dir.name].append(entry[0])

        linked = {obj.path.name for objs in queued.values() for obj in objs}
        finished = 0
        for file_name, (obj, _) in sorted(committed.items()):
            if file_name in linked:
                self._index[_key(obj)] = obj
                self._by_class[obj.cls][_key(obj)] = obj
                self._size += obj.size
            else:
                _unlink(obj.path)
                finished += 1
        for sink, objs in queued.items():
            for obj in sorted(objs, key=_key):
                self._queues[sink][_key(obj)] = obj
                self._queue_bytes[sink] += obj.size
            # A new sink starts with an empty queue: it gets only objects put from now on.
            (self._queues_dir / sink).mkdir(mode=0o700, exist_ok=True)
        sync_directory(self._queues_dir)
        log.info(
            "spool %s: %d object(s), %d bytes waiting; removed %d file(s) of interrupted "
            "writes or deletions and %d object(s) no sink owed any more",
            self.directory,
            len(self._index),
            self._size,
            leftovers,
            finished,
        )

    # -- the main thread -------------------------------------------------------------

    def put(self, sealed: SealedObject, cls: ObjectClass, sinks: Iterable[str]) -> list[Eviction]:
        """Spool ``sealed`` for ``sinks``; it is durable when this returns.

        Returns the evictions the quota forced (oldest continuous objects first, then
        the oldest clip objects; never essential ones, never ``sealed`` itself). The
        caller must put a ``discarded`` notice for them next: their files are deleted
        only once the next object is durable. An object for no sink is not stored.
        Raises OSError (with nothing left behind) when the object cannot be written.
        """
        targets = tuple(dict.fromkeys(sinks))
        for sink in targets:
            if sink not in self._queues:
                raise ValueError(f"sink {sink!r} is not configured for this spool")
        if not targets:
            return []
        file_name = _file_name(sealed.seq, sealed.kind, cls, sealed.name)
        obj = SpooledObject(
            sealed.name, sealed.seq, sealed.kind, cls, len(sealed.data), self._objects / file_name
        )
        with self._put_lock:
            with self._lock:
                if self._closed:
                    raise SpoolError(f"the spool {self.directory} is closed")
                duplicate = _key(obj) in self._index or any(
                    _key(d) == _key(obj) for d, _ in self._doomed
                )
            if duplicate:
                log.warning("spool: %s is already spooled; not spooling it again", sealed.name)
                return []
            self._commit(obj, sealed.data, targets)
            with self._changed:
                self._add(obj, targets)
                deletable, self._doomed = self._doomed, self._evict_for(obj)
                evicted = list(self._doomed)
                self._changed.notify_all()
            for victim, victim_sinks in deletable:
                self._delete_files(victim, victim_sinks)
            return self._evictions(evicted)

    def _commit(self, obj: SpooledObject, data: bytes | bytearray, sinks: tuple[str, ...]) -> None:
        tmp = self._objects / f".{obj.path.name}{_TMP_SUFFIX}"
        created: list[Path] = []
        try:
            # durable.write_atomic renames straight over the final name; the spool must
            # make its queue links between the fsync and the rename.
            with open(tmp, "wb", opener=_private) as out:
                created.append(tmp)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            for sink in sinks:
                link = self._queues_dir / sink / obj.path.name
                with contextlib.suppress(FileNotFoundError):
                    # Only a stale link of a write that failed before its commit.
                    link.unlink()
                os.link(tmp, link)
                created.append(link)
            for sink in sinks:
                sync_directory(self._queues_dir / sink)
            os.rename(tmp, obj.path)
        except BaseException:
            for path in created:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        try:
            sync_directory(self._objects)
        except OSError as exc:
            # The object is in place and gets delivered; only a power cut could lose it.
            log.error("spool: cannot sync %s after spooling %s: %s", self._objects, obj.name, exc)

    def _add(self, obj: SpooledObject, sinks: tuple[str, ...]) -> None:
        key = _key(obj)
        self._index[key] = obj
        _insert(self._by_class[obj.cls], obj)
        self._size += obj.size
        for sink in sinks:
            _insert(self._queues[sink], obj)
            self._queue_bytes[sink] += obj.size

    def _evict_for(self, kept: SpooledObject) -> list[tuple[SpooledObject, tuple[str, ...]]]:
        """Take objects off the books until the spool fits its quota (caller holds the lock)."""
        excess = self._size - self.quota_bytes
        if excess <= 0:
            self._over_quota_reported = False
            return []
        chosen: list[SpooledObject] = []
        for cls in _EVICTION_ORDER:
            for key, obj in self._by_class[cls].items():
                if excess <= 0:
                    break
                if key != _key(kept):
                    chosen.append(obj)
                    excess -= obj.size
        if excess > 0 and not self._over_quota_reported:
            self._over_quota_reported = True
            log.warning(
                "spool over quota (%d > %d bytes) with nothing left it may evict: "
                "essential objects and the newest object stay until their sinks take them",
                self._size - sum(o.size for o in chosen),
                self.quota_bytes,
            )
        return [(obj, self._forget(obj)) for obj in chosen]

    def _forget(self, obj: SpooledObject) -> tuple[str, ...]:
        """Drop ``obj`` from memory; returns the sinks whose queues still held it."""
        key = _key(obj)
        del self._index[key]
        del self._by_class[obj.cls][key]
        self._size -= obj.size
        holders = []
        for sink, queue in self._queues.items():
            if queue.pop(key, None) is not None:
                self._queue_bytes[sink] -= obj.size
                holders.append(sink)
        return tuple(holders)

    def _delete_files(self, obj: SpooledObject, sinks: Iterable[str]) -> None:
        # Object first: a crash in between leaves links without an object, which the
        # next start removes, never an object that looks owed.
        _unlink(obj.path)
        for sink in sinks:
            _unlink(self._queues_dir / sink / obj.path.name)

    def _evictions(self, evicted: list[tuple[SpooledObject, tuple[str, ...]]]) -> list[Eviction]:
        runs: list[list[SpooledObject]] = []
        for obj, _ in evicted:
            if runs and runs[-1][-1].cls is obj.cls and runs[-1][-1].seq + 1 == obj.seq:
                runs[-1].append(obj)
            else:
                runs.append([obj])
        evictions = []
        for run in runs:
            last = run[-1]
            eviction = Eviction(run[0].seq, last.seq, self._chain_hash(last), last.cls)
            log.warning(
                "spool quota of %d bytes reached: evicted %s seq %d..%d (%d object(s), %d bytes)",
                self.quota_bytes,
                last.cls.value,
                eviction.first,
                eviction.last,
                len(run),
                sum(o.size for o in run),
            )
            evictions.append(eviction)
        return evictions

    @staticmethod
    def _chain_hash(obj: SpooledObject) -> str:
        try:
            with open(obj.path, "rb") as f:
                f.seek(-SIGNATURE_LEN, os.SEEK_END)
                signature = f.read(SIGNATURE_LEN)
        except OSError as exc:
            # The notice still announces the gap; phones then cannot bridge the chain.
            log.error("spool: cannot read the signature of %s: %s", obj.name, exc)
            return ""
        return chain_hash(signature).hex()

    # -- the uploader threads --------------------------------------------------------

    def pending(self, sink: str, limit: int | None = None) -> list[SpooledObject]:
        """What ``sink`` still has to take, oldest (lowest seq) first."""
        with self._lock:
            queue = self._queue(sink)
            if limit is None:
                return list(queue.values())
            return list(itertools.islice(queue.values(), limit))

    def done(self, sink: str, obj: SpooledObject) -> None:
        """``sink`` confirmed ``obj``; the file goes once no sink owes it any more."""
        key = _key(obj)
        with self._lock:
            held = self._queue(sink).pop(key, None)
            delete = False
            if held is not None:
                self._queue_bytes[sink] -= held.size
                if key in self._index and not any(key in q for q in self._queues.values()):
                    self._forget(held)
                    delete = True
                self._changed.notify_all()
        _unlink(self._queues_dir / sink / obj.path.name)
        if delete:
            _unlink(obj.path)

    def wait(self, sink: str, timeout: float | None = None) -> bool:
        """Block until ``sink`` has something pending (True), or the timeout passed, the
        spool was closed or ``interrupt(sink)`` was called (False, unless pending)."""
        with self._changed:
            queue = self._queue(sink)
            self._changed.wait_for(
                lambda: bool(queue) or self._interrupted[sink] or self._closed, timeout
            )
            self._interrupted[sink] = False
            return bool(queue)

    def wait_drained(self, sink: str, timeout: float | None = None) -> bool:
        """Block until ``sink`` has taken everything spooled for it (True) or the timeout
        passed or the spool was closed (False, unless drained): for a shutdown that gives
        the sinks a moment."""
        with self._changed:
            queue = self._queue(sink)
            self._changed.wait_for(lambda: not queue or self._closed, timeout)
            return not queue

    def interrupt(self, sink: str) -> None:
        """Make the current (or else the next) ``wait(sink)`` return now: its uploader stops."""
        with self._changed:
            self._queue(sink)
            self._interrupted[sink] = True
            self._changed.notify_all()

    def _queue(self, sink: str) -> dict[_Key, SpooledObject]:
        try:
            return self._queues[sink]
        except KeyError:
            raise ValueError(f"sink {sink!r} is not configured for this spool") from None

    # -- status ----------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes of all spooled objects (evicted ones no longer count)."""
        with self._lock:
            return self._size

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._index)

    def stats(self) -> dict[str, Any]:
        """The spool at a glance, for the daemon's status."""
        with self._lock:
            return {
                "objects": len(self._index),
                "bytes": self._size,
                "quota_bytes": self.quota_bytes,
                "classes": {
                    cls.value: {
                        "objects": len(objs),
                        "bytes": sum(o.size for o in objs.values()),
                    }
                    for cls, objs in self._by_class.items()
                },
                "sinks": {
                    sink: {"pending": len(queue), "bytes": self._queue_bytes[sink]}
                    for sink, queue in self._queues.items()
                },
            }

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def close(self) -> None:
        """Wake every waiter and let another process open the spool. Nothing is lost:
        objects evicted by the last put but not yet deleted are delivered next run."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._lock_file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC, 0o600)
