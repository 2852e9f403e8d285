"""The durable outbox: every sealed object waits on disk until each of its sinks has taken it.

Layout under the spool directory (the daemon uses ``<state_dir>/spool``)::

    .lock                                      held by the one process using the spool
    objects/<seq>.<kind>.<class>.<name>        one file per spooled object
    objects/.<file>.tmp                        an object being written; never delivered
    queues/<sink>/<file>                       a hard link per object that sink still has to take
    quarantine/<n>-<file>                      a file that is not an intact object; never delivered

``<seq>`` is 20 zero-padded digits, ``<kind>`` the ``Kind`` number, ``<class>`` an
``ObjectClass`` value and ``<name>`` the object name (``<device>-<seq>.sealed``): the
file name alone tells a restarted spool everything it needs, without parsing ciphertext.

Crash safety. ``put`` writes ``objects/.<file>.tmp`` and fsyncs it, hard-links it into
each target queue under the final name, fsyncs those queue directories, and only then
renames it to ``objects/<file>`` and fsyncs ``objects/``. That rename is the commit: a
queue link counts only if ``objects/`` holds a committed file of the same name and inode.
On open the spool therefore removes temporary files and every queue link without its
committed object (a put that did not finish: not spooled for any sink), and deletes every
committed object no queue links to any more (all its sinks confirmed) but the anchor
(below). Because the links are durable before the rename can be, a committed object
always has all its links: it is spooled for every one of its sinks, and stays until each
of them confirmed. ``done`` unlinks without an fsync: if a power cut undoes the unlink,
the object is delivered again, which sinks must tolerate.

The caller's ``durable`` callback runs after the commit and before the object enters any
queue in memory, so nothing can be uploaded before it returned: the daemon records the
sealer's chain head there. If it raises, the object is removed again.

The anchor. The sealer records its chain head without a sync (an fdatasync per object
costs a tenth of the sealing time), so the spool keeps the file of the newest object
put, the anchor, on disk after every sink took it: until a newer object is committed,
or the caller says its head is durable (``release_anchor``). After a crash the newer of
the sealer's head record and ``newest`` is then the newest object anyone could have
received, and the restart notice is exact. On open the newest committed file (of the
device, with a device key) is the anchor again, linked or not. An anchor no sink owes
is not spooled: it is in no queue, never evicted, and not counted in ``size_bytes``,
``count`` or the quota (its bytes are on the disk, which ``make_room`` sees).

Eviction, by the quota (``put``) or for free space (``make_room``), takes objects out of
the queues at once, so no uploader starts on them, but deletes their files only when the
caller says the ``discarded`` notice for them is durable (``announced``). A crash before
that can never leave a gap the phones were not told about: the evicted objects are still
on disk with their queue links, and a restarted spool delivers them (or evicts them
again, and they are announced then).

A queue whose sink is no longer configured is handed over on open: each of its objects
gets a link in every configured sink that takes its kind (``wants``) and lacks one, then
loses its old link. Objects no configured sink takes stay in the old queue, untouched and
reported at every start, until the sink comes back, they are evicted and announced, or
the owner removes the directory by hand.

Damaged files. Opened with the device's public key, the spool delivers no file of an
earlier run before checking it: a complete object (docs/FORMAT.md section 3), its name the
object name (section 8) of the seq and device in its header, its signature valid under
that key. A crash cannot produce anything else (writes become visible only by the
rename), but a failing SD card, a hand-made copy or a planted file can, and uploading it
would make the phones report a malformed object. Temporary files are removed; anything
else is moved to ``quarantine/``, bounded and never delivered or counted as queued. A
damaged file named as one of this device's objects may be a hole in the chain: it
becomes an eviction with reason ``"damaged"``, which the caller announces like the
quota's, and its file stays in place, still linked, until ``announced``, so a crash in
between announces it again rather than never.

Checking reads every byte, and after a long outage the spool may hold a gigabyte, which
a cold SD card takes tens of seconds to read: the device must record meanwhile. So
opening reads names and links only. ``newest`` checks the files it names as the chain
head, newest first, until one is intact (usually the newest, the only file it reads);
``check`` checks the rest on a thread of its own, oldest first, since sinks take objects
in that order and can start as soon as the oldest are checked. Until a file is checked
no sink is offered it, nor anything queued after it (sinks take objects in seq order);
an eviction that picks one checks it first, since its notice names the object's chain
hash. Files ``put`` in this run are never checked: this process wrote them from memory.

Requires a file system with hard links (ext4 on the SD card, not FAT).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import itertools
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from doorbell.common.locks import LockBusy, hold_lock
from doorbell.sealing import (
    MAX_OBJECT,
    SIGNATURE_LEN,
    ZERO_PREV,
    ChainHead,
    DevicePublicKey,
    Kind,
    Reader,
    SealedObject,
    SealingError,
    UntrustedDevice,
    chain_hash,
    object_name,
    sync_directory,
)

log = logging.getLogger(__name__)

_SINK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TMP_SUFFIX = ".tmp"

# Free space kept for what must be written when the disk is nearly full: the
# ``discarded`` notice that lets old footage go and a ring's event with its JPEG
# snapshot (64 KiB each: events, notices and keyrings are padded to one size class;
# an event with a snapshot over 64 KiB, up to about 1 MiB at the 1920 px maximum,
# goes to the next doubling),
# keyring objects (at most 256 KiB), the sealer's state files, and the file-system
# metadata for all of them. 8 MiB holds several rings and their notices while eviction
# catches up, and is well under 0.1 % of any SD card a Pi boots from.
DEFAULT_RESERVE_BYTES = 8 * 1024 * 1024

# What forced an eviction, for the log and the status. The ``discarded`` notice says
# ``"quota"`` for both (docs/FORMAT.md 6.1): the order of eviction is the same. A
# spooled file found damaged is announced with ``"damaged"``.
QUOTA, DISK_FULL, DAMAGED = "quota", "disk-full", "damaged"

# Files that are not intact objects of this device are moved to ``quarantine/``, where
# the owner can look at them (they are ciphertext, or not ours at all); it keeps at most
# this many files and bytes, the oldest going first, so a flood cannot fill the disk.
# 64 files and 16 MiB hold a few dozen segments, a small fraction of any spool quota.
QUARANTINE_MAX_FILES = 64
QUARANTINE_MAX_BYTES = 16 * 1024 * 1024

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class SpoolError(Exception):
    """The spool cannot be used (another process holds it, or it was closed)."""


class ObjectClass(enum.Enum):
    """What an object is worth keeping for, which decides the order eviction takes it in."""

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
        """The sealed bytes. Raises FileNotFoundError once the object was deleted."""
        return self.path.read_bytes()


@dataclass(frozen=True)
class Eviction:
    """A run of consecutive sequence numbers evicted together, all of one class.

    ``last_hash`` is the hex chain hash of object ``last`` (docs/FORMAT.md section 6),
    so the phones can follow the chain across the gap; ``reason`` is ``"quota"``,
    ``"disk-full"`` or ``"damaged"``.
    """

    first: int
    last: int
    last_hash: str
    cls: ObjectClass
    reason: str = QUOTA

    def as_range(self) -> dict[str, int | str]:
        """This eviction as one of the ``ranges`` of a ``discarded`` notice."""
        return {"first": self.first, "last": self.last, "last_hash": self.last_hash}

    @property
    def notice_reason(self) -> str:
        """The ``reason`` of the ``discarded`` notice that announces it."""
        return DAMAGED if self.reason == DAMAGED else QUOTA


@dataclass(frozen=True)
class _Suspect:
    """A file of an earlier run that is not intact, with the queues still linking it and
    what is wrong with it."""

    obj: SpooledObject
    holders: tuple[str, ...]
    problem: str


# Objects are ordered by sequence number; the name breaks ties between devices (a
# reset device starts again at 0) so two objects never share a key.
_Key = tuple[int, str]
# An object taken off the books, and the queues (configured or removed sinks) whose
# links to it are deleted with it.
_Victim = tuple[SpooledObject, tuple[str, ...]]


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


def _quarantine_number(path: Path) -> int:
    number = path.name.split("-", 1)[0]
    return int(number) if len(number) == 6 and number.isdigit() else 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        # Left behind, the file is cleaned up (or delivered again) at the next start.
        log.error("spool: cannot remove %s: %s", path, exc.strerror)


def _on_disk(size: int, block: int) -> int:
    """What a file of ``size`` bytes occupies: whole blocks."""
    return -(-size // block) * block


def _every_sink_takes_everything(sink: str, kind: Kind) -> bool:
    return True


class Spool:
    """The on-disk outbox with one queue per sink, so a slow sink holds back only itself.

    ``put``, ``make_room``, ``newest``, ``check``, ``damaged``, ``announced`` and
    ``release_anchor`` are called by one thread (the daemon's main loop); each sink's
    uploader thread calls ``pending``, ``claim``, ``release``, ``done`` and ``wait`` for
    its own sink; the spool's own thread checks the files of earlier runs (``check``).

    ``reserve_bytes`` is the free space ``make_room`` keeps on the file system for
    small essential objects; ``wants(sink, kind)`` says whether a configured sink
    takes objects of that kind (default: all of them), for handing over the queue of a
    sink removed from the configuration. ``device`` is the public key of the device
    whose objects the spool holds: every file of an earlier run must be one of its
    objects, complete, under its own name and with a valid signature, or it is never
    delivered; none is delivered before ``check`` has checked it. Without it the spool
    trusts its files' names. ``when_checked`` is called, on the spool's thread, once
    that check is done and ``damaged`` has what it found.

    ``quota_slack`` is how far below the quota an eviction for the quota goes. Every
    eviction is announced in a notice, an essential object padded to the size class of
    events, which is never evicted itself: evicting one segment at a time would seal a
    notice for every segment of a long outage and fill the spool with notices. With a
    slack, one notice covers that many bytes of footage.
    """

    def __init__(
        self,
        directory: Path,
        quota_bytes: int,
        sinks: Iterable[str],
        *,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        wants: Callable[[str, Kind], bool] | None = None,
        device: DevicePublicKey | None = None,
        when_checked: Callable[[], None] | None = None,
        quota_slack: int = 0,
    ) -> None:
        if quota_bytes <= 0:
            raise ValueError(f"spool quota must be positive, got {quota_bytes}")
        if reserve_bytes < 0:
            raise ValueError(f"spool reserve cannot be negative, got {reserve_bytes}")
        if not 0 <= quota_slack < quota_bytes:
            raise ValueError(f"spool quota slack must be in 0..quota, got {quota_slack}")
        self.directory = Path(directory)
        self.quota_bytes = quota_bytes
        self.reserve_bytes = reserve_bytes
        self.quota_slack = quota_slack
        self.sinks: tuple[str, ...] = tuple(dict.fromkeys(sinks))
        for sink in self.sinks:
            if not _SINK_NAME.fullmatch(sink):
                raise ValueError(
                    f"sink name {sink!r} cannot name a queue directory "
                    "(letters, digits, '_', '.', '-'; at most 64; not starting with a dot)"
                )
        self._wants = wants if wants is not None else _every_sink_takes_everything
        self._objects = self.directory / "objects"
        self._queues_dir = self.directory / "queues"
        self._quarantine = self.directory / "quarantine"
        self._device = device
        self._reader = Reader([], [] if device is None else [device])
        self._when_checked = when_checked
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Serialises puts and evictions: an object is judged against one state of the disk.
        self._put_lock = threading.Lock()
        self._index: dict[_Key, SpooledObject] = {}
        self._by_class: dict[ObjectClass, dict[_Key, SpooledObject]] = {c: {} for c in ObjectClass}
        self._queues: dict[str, dict[_Key, SpooledObject]] = {s: {} for s in self.sinks}
        self._queue_bytes = dict.fromkeys(self.sinks, 0)
        self._interrupted = dict.fromkeys(self.sinks, False)
        # The object each sink's uploader is handing over right now: never evicted, so a
        # notice cannot announce as discarded what a sink is in the middle of storing.
        self._in_flight: dict[str, _Key] = {}
        # Objects only the queues of removed sinks still link to (see the module docstring).
        self._kept: dict[_Key, tuple[str, ...]] = {}
        self._size = 0
        # Evicted, files still on disk until ``announced`` (see the module docstring).
        self._evicted: dict[_Key, _Victim] = {}
        self._unannounced: dict[Eviction, list[_Key]] = {}
        # The newest object put, kept on disk after its sinks took it (see the module
        # docstring).
        self._anchor: SpooledObject | None = None
        # Files of earlier runs not checked yet, by file name (see ``check``): those in
        # ``_index`` wait in their queues, the others (no sink owed them) are deleted once
        # found intact.
        self._unchecked: dict[str, SpooledObject] = {}
        self._check_thread: threading.Thread | None = None
        self._finished = 0  # intact files of earlier runs no sink owed: deleted
        # Damaged files named as this device's objects, by file name, and the other files
        # that failed, until the check is settled; the ``prev`` of each intact file of an
        # earlier run, by seq; then the runs of damaged objects waiting for their notice,
        # their files still in place until ``announced``, and the evictions for them the
        # caller has not taken yet (``damaged``).
        self._suspects: dict[str, _Suspect] = {}
        self._strays: list[_Suspect] = []
        self._prevs: dict[int, bytes] = {}
        self._damaged: dict[Eviction, list[_Suspect]] = {}
        self._found: list[Eviction] = []
        self._quarantined = (0, 0)  # files and bytes in quarantine/
        self._over_quota_reported = False
        self._short_of_space_reported = False
        self._no_space = False  # the last put failed for want of space
        self._put_failures = 0
        self._last_put_error: str | None = None
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
        try:
            return hold_lock(self.directory / ".lock", wait=False)
        except LockBusy:
            raise SpoolError(f"another process is using the spool {self.directory}") from None

    def _recover(self) -> None:
        """Bring the directory back to a committed state after whatever stopped the last run.

        Names, links and inodes only: no file is read here (see ``check``).
        """
        self._objects.mkdir(mode=0o700, exist_ok=True)
        self._queues_dir.mkdir(mode=0o700, exist_ok=True)
        self._quarantine.mkdir(mode=0o700, exist_ok=True)
        for sink in self.sinks:
            # A new sink starts with an empty queue: it gets only objects put from now on
            # (and what a removed sink hands over below).
            (self._queues_dir / sink).mkdir(mode=0o700, exist_ok=True)
        leftovers = 0
        committed: dict[str, tuple[SpooledObject, int]] = {}
        strays: list[tuple[Path, str]] = []
        for path in self._objects.iterdir():
            if path.name.startswith(".") and path.name.endswith(_TMP_SUFFIX):
                _unlink(path)
                leftovers += 1
                continue
            st = path.lstat()
            obj = _parse_file_name(self._objects, path.name, st.st_size)
            if obj is None or not stat.S_ISREG(st.st_mode):
                strays.append((path, "not a spooled object's file name"))
                continue
            committed[path.name] = (obj, st.st_ino)

        queued: dict[str, list[SpooledObject]] = {}
        for queue_dir in sorted(self._queues_dir.iterdir()):
            if queue_dir.is_symlink() or not queue_dir.is_dir():
                log.warning("spool: ignoring %s: not a queue directory", queue_dir)
                continue
            objs = queued.setdefault(queue_dir.name, [])
            for link in queue_dir.iterdir():
                entry = committed.get(link.name)
                if entry is None or link.lstat().st_ino != entry[1]:
                    # A put that never reached its commit, or an object deleted after
                    # its last confirmation: the link must not be delivered.
                    _unlink(link)
                    leftovers += 1
                    continue
                objs.append(entry[0])
        removed = {sink: objs for sink, objs in queued.items() if sink not in self._queues}
        for sink, objs in removed.items():
            self._hand_over(sink, objs, queued)

        kept: dict[str, list[str]] = {}
        for sink, objs in removed.items():
            for obj in objs:
                kept.setdefault(obj.path.name, []).append(sink)
        linked = {obj.path.name for objs in queued.values() for obj in objs}
        device = self._device
        self._anchor = max(
            (
                obj
                for obj, _ in committed.values()
                if device is None or obj.name == object_name(device.device_id, obj.seq)
            ),
            key=_key,
            default=None,
        )
        finished = 0
        for file_name, (obj, _) in sorted(committed.items()):
            if self._device is not None:
                # Neither delivered nor deleted before it is checked.
                self._unchecked[file_name] = obj
            if file_name in linked:
                self._index[_key(obj)] = obj
                self._by_class[obj.cls][_key(obj)] = obj
                self._size += obj.size
                if file_name in kept:
                    self._kept[_key(obj)] = tuple(kept[file_name])
            elif self._device is None and obj is not self._anchor:
                _unlink(obj.path)
                finished += 1
        for sink in self.sinks:
            for obj in sorted(queued.get(sink, ()), key=_key):
                self._queues[sink][_key(obj)] = obj
                self._queue_bytes[sink] += obj.size
        sync_directory(self._queues_dir)
        self._quarantine_files(strays)
        log.info(
            "spool %s: %d object(s), %d bytes waiting; removed %d file(s) of interrupted "
            "writes or deletions and %d object(s) no sink owed any more",
            self.directory,
            len(self._index),
            self._size,
            leftovers,
            finished,
        )
        if self._unchecked:
            log.info(
                "spool %s: %d file(s) of earlier runs are delivered once checked",
                self.directory,
                len(self._unchecked),
            )

    def _check(self, obj: SpooledObject) -> tuple[str | None, bytes | None]:
        """Why ``obj``'s file is not a complete, authentic object of this device under its
        own name (None when it is one), and the object's ``prev`` when it is.

        Without a device key (a spool opened for its queues alone) names are all it has.
        """
        if self._device is None:
            return None, None
        if obj.size > MAX_OBJECT:
            return f"{obj.size} bytes, more than any object can be", None
        try:
            data = obj.path.read_bytes()
        except OSError as exc:
            return f"unreadable: {exc.strerror}", None
        try:
            envelope = self._reader.verify(data)
        except UntrustedDevice:
            return "signed by another device", None
        except SealingError as exc:
            return str(exc), None
        if obj.name != object_name(envelope.device_id, envelope.seq) or obj.seq != envelope.seq:
            return f"its header says seq {envelope.seq}, not the seq of its name", None
        return None, envelope.prev

    def check(self, head: ChainHead | None) -> None:
        """Check the files of earlier runs ``newest`` did not check, on a thread of its own.

        ``head`` is the chain head the device continues from, taken after ``newest``: it
        tells which damaged objects are holes in the chain (see ``damaged``). The files go
        oldest first, the order sinks take them in, so each sink starts as soon as its
        oldest file is checked; once all are, and what failed is settled,
        ``when_checked`` is called.

        A thread of the spool's own rather than each uploader checking the file it is
        about to send: with a sink down nothing would be checked, and damaged objects
        would go unannounced until it came back; with several sinks every file would be
        read once per sink. The thread reads each file once, whatever the sinks do.
        """
        with self._lock:
            if self._closed:
                raise SpoolError(f"the spool {self.directory} is closed")
            if self._check_thread is not None:
                raise SpoolError(f"the spool {self.directory} is checked already")
            thread = threading.Thread(
                target=self._check_all, args=(head,), name="spool-check", daemon=True
            )
            self._check_thread = thread
        thread.start()

    def damaged(self) -> list[Eviction]:
        """The holes in the chain the check found, each returned once: none before it is done.

        A damaged object the chain holds (seq at most the head given to ``check``) and
        that some sink was still owed leaves a hole the phones must be told about: the
        runs of them whose chain hash is known (the ``prev`` of the intact object after
        the run, or the head itself) are returned as evictions with reason
        ``"damaged"``, for a ``discarded`` notice; ``announced`` then moves their files
        to the quarantine. Every other file that failed went to the quarantine, logged:
        past the head it was never part of the chain, a copy every sink took leaves no
        hole, and a hole whose chain hash nobody knows cannot be announced honestly
        (phones report it as missing).
        """
        with self._lock:
            found, self._found = self._found, []
            return found

    def _check_all(self, head: ChainHead | None) -> None:
        with self._lock:
            todo = sorted(self._unchecked.values(), key=_key)
        try:
            for obj in todo:
                if self.closed:
                    return  # the rest is checked at the next start
                self._check_earlier(obj)
            with self._put_lock:
                if self.closed:
                    return
                self._settle(head, len(todo))
        except Exception:
            # What is left unchecked waits for the next start; recording goes on.
            log.exception("spool %s: checking the files of earlier runs failed", self.directory)
            return
        if self._when_checked is not None:
            self._when_checked()

    def _check_earlier(self, obj: SpooledObject) -> None:
        """Check ``obj``, a file of an earlier run, unless that was done already.

        Intact, it may be delivered (or, owed to no sink, it is deleted). Otherwise it
        leaves every queue at once, its file and links staying until ``_settle``.
        """
        with self._lock:
            if obj.path.name not in self._unchecked:
                return
        problem, prev = self._check(obj)
        with self._changed:
            if self._unchecked.pop(obj.path.name, None) is None:
                return  # another thread's verdict came first
            owed = self._index.get(_key(obj)) is obj
            finished = problem is None and not owed and not self._is_anchor(obj)
            if problem is None:
                if prev is not None:
                    self._prevs[obj.seq] = prev
                if finished:
                    self._finished += 1
            else:
                if self._is_anchor(obj):
                    # It names no head: ``newest`` looks further back.
                    self._anchor = None
                failed = _Suspect(obj, self._forget(obj) if owed else (), problem)
                assert self._device is not None  # nothing is unchecked without it
                if obj.name == object_name(self._device.device_id, obj.seq):
                    # Named as one of this device's objects: it may leave a hole in the
                    # chain, which only the chain head tells (``_settle``).
                    self._suspects[obj.path.name] = failed
                else:
                    self._strays.append(failed)
            # A sink's oldest object may be deliverable now.
            self._changed.notify_all()
        if finished:
            _unlink(obj.path)

    def _settle(self, head: ChainHead | None, checked: int) -> None:
        """Quarantine the files the check found not intact, or keep those that are holes
        in the chain for ``damaged`` (caller holds the put lock; see ``damaged``).
        ``checked`` files were checked after ``newest``."""
        with self._lock:
            suspects = sorted(self._suspects.values(), key=lambda s: s.obj.seq)
            self._suspects.clear()
            strays, self._strays = self._strays, []
            intact = set(self._index) | set(self._evicted)
        settled: list[tuple[Path, str]] = []
        for stray in strays:
            settled.append((stray.obj.path, stray.problem))
            self._unlink_links(stray.obj.path.name, stray.holders)
        runs: list[list[_Suspect]] = []
        for suspect in suspects:
            obj = suspect.obj
            why = None
            if head is None or obj.seq > head.seq:
                why = "past the chain head: never delivered, no hole"
            elif not suspect.holders:
                why = "every sink had taken it: no hole"
            elif _key(obj) in intact:
                why = "an intact copy is spooled"
            if why is not None:
                settled.append((obj.path, f"{suspect.problem}; {why}"))
                self._unlink_links(obj.path.name, suspect.holders)
            elif runs and obj.seq <= runs[-1][-1].obj.seq + 1:
                runs[-1].append(suspect)  # the next seq, or another file of the same
            else:
                runs.append([suspect])
        damaged: dict[Eviction, list[_Suspect]] = {}
        for run in runs:
            first, last = run[0].obj, run[-1].obj
            if head is not None and last.seq == head.seq:
                bridge: bytes | None = head.hash
            else:
                bridge = self._prevs.get(last.seq + 1)
            if bridge is None or bridge == ZERO_PREV:
                # Zeros: the next object starts a chain of its own, naming nothing.
                log.error(
                    "spool: seq %d..%d damaged, and no intact object names its chain "
                    "hash: it cannot be announced, phones will report it missing",
                    first.seq,
                    last.seq,
                )
                for suspect in run:
                    settled.append((suspect.obj.path, suspect.problem))
                    self._unlink_links(suspect.obj.path.name, suspect.holders)
                continue
            for suspect in run:
                log.error(
                    "spool: %r is damaged (%s): it is not delivered, and a notice "
                    "announces it to the phones",
                    suspect.obj.path.name,
                    suspect.problem,
                )
            damaged[Eviction(first.seq, last.seq, bridge.hex(), last.cls, DAMAGED)] = run
        self._quarantine_files(settled)
        with self._changed:
            self._damaged.update(damaged)
            self._found += damaged
            self._prevs.clear()
            finished = self._finished
            self._changed.notify_all()
        if checked or strays or suspects:
            log.info(
                "spool %s: checked the files of earlier runs: %d not intact, %d intact that "
                "no sink owed any more (deleted)",
                self.directory,
                len(strays) + len(suspects),
                finished,
            )

    def _unlink_links(self, file_name: str, holders: Iterable[str]) -> None:
        for sink in holders:
            _unlink(self._queues_dir / sink / file_name)

    def _quarantine_files(self, files: list[tuple[Path, str]]) -> None:
        """Move ``files`` (path, why) into the quarantine, never to be delivered, and keep
        the quarantine within its bounds by deleting its oldest files."""
        number = max((_quarantine_number(p) for p in self._quarantine_entries()), default=0)
        for path, why in files:
            number += 1
            target = self._quarantine / f"{number:06d}-{path.name[:200]}"
            try:
                os.rename(path, target)
            except OSError as exc:
                log.error("spool: cannot quarantine %r (%s): %s", path.name, why, exc.strerror)
                continue
            log.error("spool: quarantined %r: %s", path.name, why)
        if files:
            self._sync_objects()
        entries = [(p, p.lstat().st_size) for p in self._quarantine_entries()]
        total = sum(size for _, size in entries)
        dropped = 0
        while entries and (len(entries) > QUARANTINE_MAX_FILES or total > QUARANTINE_MAX_BYTES):
            path, size = entries.pop(0)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                _unlink(path)
            total -= size
            dropped += 1
        if dropped:
            log.warning(
                "spool: the quarantine keeps at most %d file(s) and %d bytes: deleted its "
                "%d oldest",
                QUARANTINE_MAX_FILES,
                QUARANTINE_MAX_BYTES,
                dropped,
            )
        with self._lock:
            self._quarantined = (len(entries), total)

    def _quarantine_entries(self) -> list[Path]:
        """What the quarantine holds, oldest first (by the number its names start with;
        anything put there by hand counts as oldest)."""
        return sorted(self._quarantine.iterdir(), key=lambda p: (_quarantine_number(p), p.name))

    def _hand_over(
        self, removed: str, objs: list[SpooledObject], queued: dict[str, list[SpooledObject]]
    ) -> None:
        """Give the objects queued for a sink no longer configured to the configured sinks.

        ``objs`` is left holding what no configured sink takes: those links stay.
        """
        held = {sink: {o.path.name for o in queued.get(sink, ())} for sink in self.sinks}
        moved: list[SpooledObject] = []
        takers_used: set[str] = set()
        for obj in objs:
            holders = [s for s in self.sinks if obj.path.name in held[s]]
            takers = [s for s in self.sinks if s not in holders and self._wants(s, obj.kind)]
            if not holders and not takers:
                continue
            try:
                for sink in takers:
                    os.link(obj.path, self._queues_dir / sink / obj.path.name)
                    queued.setdefault(sink, []).append(obj)
                    held[sink].add(obj.path.name)
                    takers_used.add(sink)
            except OSError as exc:
                log.error(
                    "spool: cannot hand %s over from removed sink %r: %s; it stays queued there",
                    obj.name,
                    removed,
                    exc,
                )
                continue
            moved.append(obj)
        # The new links are durable before the old ones go: a crash in between leaves an
        # object queued twice (handed over again at the next start), never not at all.
        for sink in sorted(takers_used):
            sync_directory(self._queues_dir / sink)
        queue_dir = self._queues_dir / removed
        for obj in moved:
            _unlink(queue_dir / obj.path.name)
        moved_names = {obj.path.name for obj in moved}
        objs[:] = [obj for obj in objs if obj.path.name not in moved_names]
        if moved:
            log.warning(
                "spool: sink %r is no longer configured: handed %d object(s) of its queue "
                "over to the configured sinks",
                removed,
                len(moved),
            )
        if objs:
            kinds = sorted({obj.kind.name.lower() for obj in objs})
            log.warning(
                "spool: sink %r is no longer configured and no configured sink takes %d "
                "object(s) of its queue (%s): keeping %s; configure the sink again to deliver "
                "them, or remove that directory by hand to drop them (the phones will see a gap)",
                removed,
                len(objs),
                ", ".join(kinds),
                queue_dir,
            )
            sync_directory(queue_dir)
            return
        try:
            queue_dir.rmdir()
        except OSError as exc:
            log.error("spool: cannot remove the empty queue %s: %s", queue_dir, exc.strerror)

    # -- the main thread -------------------------------------------------------------

    def put(
        self,
        sealed: SealedObject,
        cls: ObjectClass,
        sinks: Iterable[str],
        *,
        durable: Callable[[], None] | None = None,
    ) -> list[Eviction]:
        """Spool ``sealed`` for ``sinks``; it is durable when this returns.

        ``durable`` is called once the object is committed on disk and before any
        uploader can see it; if it raises, the object is removed again and the
        exception propagates. Returns the evictions the quota forced (oldest continuous
        objects first, then the oldest clip objects; never essential ones, never
        ``sealed`` itself): the caller puts a ``discarded`` notice for them, then calls
        ``announced``. An object for no sink is not stored (and ``durable`` not called).
        Raises OSError (with nothing left behind) when the object cannot be written; the
        reserve is never a reason to refuse.
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
                duplicate = _key(obj) in self._index or _key(obj) in self._evicted
            if duplicate:
                log.warning("spool: %s is already spooled; not spooling it again", sealed.name)
                return []
            try:
                self._commit(obj, sealed.data, targets)
                if durable is not None:
                    try:
                        durable()
                    except BaseException:
                        self._remove_uncounted(obj, targets)
                        raise
            except Exception as exc:
                with self._lock:
                    self._put_failures += 1
                    self._last_put_error = f"{sealed.name}: {type(exc).__name__}: {exc}"
                    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
                        self._no_space = True
                raise
            with self._changed:
                self._no_space = False
                self._add(obj, targets)
                # Durable now, so the old anchor names no head any more.
                stale = self._reanchor(obj)
                self._changed.notify_all()
            if stale is not None:
                _unlink(stale.path)
            return self._evictions(self._evict_for_quota(obj), QUOTA)

    def release_anchor(self) -> None:
        """The caller's chain head is on stable storage (the sealer synced it): the newest
        object's file need not outlive its sinks any more. A later ``put`` anchors again."""
        with self._lock:
            stale = self._reanchor(None)
        if stale is not None:
            _unlink(stale.path)

    def _reanchor(self, anchor: SpooledObject | None) -> SpooledObject | None:
        """Make ``anchor`` the anchor (caller holds the lock); returns the old one when
        nothing else needs its file any more (no queue, eviction or check): the caller
        deletes it."""
        old, self._anchor = self._anchor, anchor
        if old is None or old == anchor:
            return None
        key = _key(old)
        needed = (
            self._index.get(key) == old
            or self._evicted.get(key, (None, ()))[0] == old
            or old.path.name in self._unchecked
        )
        return None if needed else old

    def _is_anchor(self, obj: SpooledObject) -> bool:
        return self._anchor is not None and self._anchor.path == obj.path

    def make_room(self, nbytes: int) -> list[Eviction]:
        """Evict until the file system has room for ``nbytes`` plus the reserve.

        Free space counts what evicted, not yet announced objects will free. Evicts
        the oldest continuous objects first, then the oldest clip objects, never
        essential ones; returns the evictions, to be announced like the quota's.
        """
        if nbytes < 0:
            raise ValueError(f"cannot make room for {nbytes} bytes")
        with self._put_lock:
            space = self._statvfs()
            if space is None:
                return []
            free, block = space

            def choose() -> tuple[list[SpooledObject], int]:
                if self._closed:
                    raise SpoolError(f"the spool {self.directory} is closed")
                shortfall = nbytes + self.reserve_bytes - free - self._evicted_bytes(block)
                chosen: list[SpooledObject] = []
                for obj in self._evictable():
                    if shortfall <= 0:
                        break
                    chosen.append(obj)
                    shortfall -= _on_disk(obj.size, block)
                return chosen, shortfall

            evicted, shortfall = self._evict(choose)
            if shortfall <= 0:
                self._short_of_space_reported = False
            elif not self._short_of_space_reported:
                self._short_of_space_reported = True
                log.warning(
                    "spool %s: %d bytes free, %d more needed for %d bytes and the reserve "
                    "of %d, and nothing left to evict",
                    self.directory,
                    free,
                    shortfall,
                    nbytes,
                    self.reserve_bytes,
                )
            return self._evictions(evicted, DISK_FULL)

    def announced(self, evictions: Iterable[Eviction]) -> None:
        """The ``discarded`` notice for ``evictions`` is durable: delete their files.

        Evictions announced before (or unknown to this run) are ignored.
        """
        victims: list[_Victim] = []
        damaged: list[_Suspect] = []
        with self._lock:
            for eviction in evictions:
                for key in self._unannounced.pop(eviction, ()):
                    victim = self._evicted.pop(key, None)
                    if victim is not None:
                        victims.append(victim)
                damaged += self._damaged.pop(eviction, ())
            anchor = self._anchor
        for obj, holders in victims:
            if obj == anchor:
                # Its notice usually replaced it as the anchor; if not, it stays one.
                self._unlink_links(obj.path.name, holders)
            else:
                self._delete_files(obj, holders)
        if victims:
            # Durable, or a power cut could bring back objects a delivered notice announced
            # as discarded, and the phones would see both.
            self._sync_objects()
        if damaged:
            with self._put_lock:
                for suspect in damaged:
                    self._unlink_links(suspect.obj.path.name, suspect.holders)
                self._quarantine_files(
                    [(s.obj.path, f"{s.problem}; announced as damaged") for s in damaged]
                )

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
        except BaseException:
            # Not known to be on disk: the caller must not take it as spooled.
            self._remove_uncounted(obj, sinks)
            raise

    def _remove_uncounted(self, obj: SpooledObject, sinks: Iterable[str]) -> None:
        """Undo a commit the put then failed: the object must not reappear after a crash."""
        self._delete_files(obj, sinks)
        self._sync_objects()

    def _sync_objects(self) -> None:
        try:
            sync_directory(self._objects)
        except OSError as exc:
            log.error("spool: cannot sync %s: %s", self._objects, exc.strerror)

    def _add(self, obj: SpooledObject, sinks: tuple[str, ...]) -> None:
        key = _key(obj)
        self._index[key] = obj
        _insert(self._by_class[obj.cls], obj)
        self._size += obj.size
        for sink in sinks:
            _insert(self._queues[sink], obj)
            self._queue_bytes[sink] += obj.size

    def _evictable(self) -> Iterable[SpooledObject]:
        """Eviction candidates in eviction order (caller holds the lock)."""
        in_flight = set(self._in_flight.values())
        for cls in _EVICTION_ORDER:
            for key, obj in self._by_class[cls].items():
                if key not in in_flight:
                    yield obj

    def _evict_for_quota(self, kept: SpooledObject) -> list[_Victim]:
        """Take objects off the books until the spool fits its quota (caller holds the put lock)."""

        def choose() -> tuple[list[SpooledObject], int]:
            excess = self._size - self.quota_bytes
            if excess <= 0:
                return [], excess
            # Over the quota: down to the slack below it, as far as evictable objects go.
            wanted = excess + self.quota_slack
            chosen: list[SpooledObject] = []
            for obj in self._evictable():
                if wanted <= 0:
                    break
                if _key(obj) != _key(kept):
                    chosen.append(obj)
                    excess -= obj.size
                    wanted -= obj.size
            return chosen, excess

        evicted, excess = self._evict(choose)
        if excess <= 0:
            self._over_quota_reported = False
        elif not self._over_quota_reported:
            self._over_quota_reported = True
            log.warning(
                "spool over quota (%d > %d bytes) with nothing left it may evict: "
                "essential objects and the newest object stay until their sinks take them",
                self.quota_bytes + excess,
                self.quota_bytes,
            )
        return evicted

    def _evict(
        self, choose: Callable[[], tuple[list[SpooledObject], int]]
    ) -> tuple[list[_Victim], int]:
        """Take what ``choose`` picks (called with the lock held, returning the objects and
        the bytes still missing) off the books (caller holds the put lock).

        A file of an earlier run among them is checked first, outside the lock, and the
        choice made again: its notice names its chain hash, which only an intact object
        has, and a damaged one is not evicted but announced as damaged. Only the files
        chosen are read, a few at most, never the whole spool.
        """
        while True:
            with self._changed:
                chosen, missing = choose()
                unchecked = [obj for obj in chosen if not self._is_checked(obj)]
                if not unchecked:
                    evicted = [(obj, self._forget(obj)) for obj in chosen]
                    self._evicted.update((_key(obj), (obj, holders)) for obj, holders in evicted)
                    self._changed.notify_all()
                    return evicted, missing
            for obj in unchecked:
                self._check_earlier(obj)

    def _forget(self, obj: SpooledObject) -> tuple[str, ...]:
        """Drop ``obj`` from memory; returns the queues (of any sink) still linking it."""
        key = _key(obj)
        del self._index[key]
        del self._by_class[obj.cls][key]
        self._size -= obj.size
        holders = list(self._kept.pop(key, ()))
        for sink, queue in self._queues.items():
            if queue.pop(key, None) is not None:
                self._queue_bytes[sink] -= obj.size
                holders.append(sink)
        return tuple(holders)

    def _evicted_bytes(self, block: int) -> int:
        return sum(_on_disk(obj.size, block) for obj, _ in self._evicted.values())

    def _delete_files(self, obj: SpooledObject, sinks: Iterable[str]) -> None:
        # Object first: a crash in between leaves links without an object, which the
        # next start removes, never an object that looks owed.
        _unlink(obj.path)
        for sink in sinks:
            _unlink(self._queues_dir / sink / obj.path.name)

    def _evictions(self, evicted: list[_Victim], reason: str) -> list[Eviction]:
        runs: list[list[SpooledObject]] = []
        for obj, _ in evicted:
            if runs and runs[-1][-1].cls is obj.cls and runs[-1][-1].seq + 1 == obj.seq:
                runs[-1].append(obj)
            else:
                runs.append([obj])
        evictions = []
        why = (
            f"spool quota of {self.quota_bytes} bytes reached"
            if reason == QUOTA
            else f"free space below the reserve of {self.reserve_bytes} bytes"
        )
        for run in runs:
            last = run[-1]
            eviction = Eviction(run[0].seq, last.seq, self._chain_hash(last), last.cls, reason)
            log.warning(
                "%s: evicted %s seq %d..%d (%d object(s), %d bytes)",
                why,
                last.cls.value,
                eviction.first,
                eviction.last,
                len(run),
                sum(o.size for o in run),
            )
            evictions.append(eviction)
            with self._lock:
                self._unannounced[eviction] = [_key(o) for o in run]
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

    def newest(self, device_id: bytes) -> ChainHead | None:
        """The chain head of the newest intact object of ``device_id`` still on disk here.

        An object is on disk from its commit until every sink took it, and the newest
        (the anchor) until a newer one is committed, so after a crash this and the
        sealer's recorded head together name the true head. Files of earlier runs are
        checked here, newest first, until one is intact: usually the newest is, and it
        is the only file read.
        """
        with self._lock:
            spooled = itertools.chain(
                self._index.values(),
                (obj for obj, _ in self._evicted.values()),
                () if self._anchor is None else (self._anchor,),
            )
            candidates = {
                obj.path: obj for obj in spooled if obj.name == object_name(device_id, obj.seq)
            }
        for obj in sorted(candidates.values(), key=_key, reverse=True):
            self._check_earlier(obj)
            with self._lock:
                intact = (
                    self._index.get(_key(obj)) is obj
                    or _key(obj) in self._evicted
                    or self._is_anchor(obj)
                )
            head = self._chain_hash(obj) if intact else ""
            if head:
                return ChainHead(obj.seq, bytes.fromhex(head))
        return None

    # -- the uploader threads --------------------------------------------------------

    def pending(self, sink: str, limit: int | None = None) -> list[SpooledObject]:
        """What ``sink`` may take now, oldest (lowest seq) first: its queue up to the first
        file of an earlier run not checked yet (see ``check``)."""
        with self._lock:
            ready = itertools.takewhile(self._is_checked, self._queue(sink).values())
            return list(ready if limit is None else itertools.islice(ready, limit))

    def claim(self, sink: str, obj: SpooledObject) -> bool:
        """``sink``'s uploader starts handing ``obj`` over; False when it was evicted (or
        confirmed) meanwhile and must not be sent. Until ``done`` or ``release`` it
        cannot be evicted."""
        with self._lock:
            if _key(obj) not in self._queue(sink):
                return False
            self._in_flight[sink] = _key(obj)
            return True

    def release(self, sink: str) -> None:
        """``sink`` did not take its claimed object: it may be evicted again."""
        with self._lock:
            self._in_flight.pop(sink, None)

    def done(self, sink: str, obj: SpooledObject) -> None:
        """``sink`` confirmed ``obj``; the file goes once no sink owes it any more."""
        key = _key(obj)
        with self._lock:
            if self._in_flight.get(sink) == key:
                del self._in_flight[sink]
            held = self._queue(sink).pop(key, None)
            delete = False
            if held is not None:
                self._queue_bytes[sink] -= held.size
                if (
                    key in self._index
                    and key not in self._kept
                    and not any(key in q for q in self._queues.values())
                ):
                    self._forget(held)
                    delete = not self._is_anchor(held)
                self._changed.notify_all()
        _unlink(self._queues_dir / sink / obj.path.name)
        if delete:
            _unlink(obj.path)

    def backlog(self, sink: str) -> tuple[int, int]:
        """How many objects, and how many bytes, ``sink`` still has to take."""
        with self._lock:
            return len(self._queue(sink)), self._queue_bytes[sink]

    def wait(self, sink: str, timeout: float | None = None) -> bool:
        """Block until ``sink`` has something pending (True), or the timeout passed, the
        spool was closed or ``interrupt(sink)`` was called (False, unless pending)."""
        with self._changed:
            queue = self._queue(sink)

            def ready() -> bool:
                oldest = next(iter(queue.values()), None)
                return oldest is not None and self._is_checked(oldest)

            self._changed.wait_for(
                lambda: ready() or self._interrupted[sink] or self._closed, timeout
            )
            self._interrupted[sink] = False
            return ready()

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

    def _is_checked(self, obj: SpooledObject) -> bool:
        return obj.path.name not in self._unchecked

    # -- status ----------------------------------------------------------------------

    def _statvfs(self) -> tuple[int, int] | None:
        """Bytes this process may still write on the spool's file system, and its block size."""
        try:
            st = os.statvfs(self._objects)
        except OSError as exc:
            log.error("spool: cannot tell the free space of %s: %s", self._objects, exc.strerror)
            return None
        return st.f_bavail * st.f_frsize, max(st.f_frsize, 1)

    @property
    def size_bytes(self) -> int:
        """Bytes of all spooled objects (evicted ones no longer count, nor an anchor no
        sink owes)."""
        with self._lock:
            return self._size

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._index)

    def stats(self) -> dict[str, Any]:
        """The spool at a glance, for the daemon's status.

        ``full`` is true when the last put failed for want of space, or when free space
        (counting what announced evictions will free) is below the reserve and nothing
        is left to evict: then new events may be lost.
        """
        space = self._statvfs()
        with self._lock:
            evicted_bytes = self._evicted_bytes(1 if space is None else space[1])
            free = None if space is None else space[0]
            starved = (
                free is not None
                and free + evicted_bytes < self.reserve_bytes
                and next(iter(self._evictable()), None) is None
            )
            kept: dict[str, dict[str, int]] = {}
            for key, sinks in self._kept.items():
                for sink in sinks:
                    entry = kept.setdefault(sink, {"objects": 0, "bytes": 0})
                    entry["objects"] += 1
                    entry["bytes"] += self._index[key].size
            waiting = [s.obj for s in itertools.chain(self._suspects.values(), self._strays)]
            waiting += [s.obj for run in self._damaged.values() for s in run]
            return {
                "objects": len(self._index),
                "bytes": self._size,
                "quarantined": {
                    "objects": self._quarantined[0] + len(waiting),
                    "bytes": self._quarantined[1] + sum(obj.size for obj in waiting),
                },
                # Files of earlier runs not checked yet: neither they nor what is queued
                # after them is delivered until they are.
                "unchecked": {
                    "objects": len(self._unchecked),
                    "bytes": sum(obj.size for obj in self._unchecked.values()),
                },
                "quota_bytes": self.quota_bytes,
                "free_bytes": free,
                "reserve_bytes": self.reserve_bytes,
                "full": self._no_space or starved,
                "put_failures": self._put_failures,
                "last_put_error": self._last_put_error,
                "unannounced": {
                    "objects": len(self._evicted),
                    "bytes": sum(obj.size for obj, _ in self._evicted.values()),
                },
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
                "removed_sinks": kept,
            }

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def close(self) -> None:
        """Wake every waiter and let another process open the spool. Nothing is lost:
        objects evicted but not yet announced are delivered (or evicted) next run, and
        files not checked yet are checked then."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            checking = self._check_thread
        if checking is not None and checking is not threading.current_thread():
            # It stops after the file it is reading: nothing may touch the directory once
            # another process can open the spool.
            checking.join()
        self._lock_file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC, 0o600)
