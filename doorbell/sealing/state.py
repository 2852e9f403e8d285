"""The doorbell's state directory: its device key, its keyring and its sequence counter."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from doorbell.common.locks import hold_lock
from doorbell.sealing.durable import sync_directory, write_atomic
from doorbell.sealing.errors import KeyFileError, SealingError
from doorbell.sealing.format import RESERVATION_BLOCK
from doorbell.sealing.keyring import Keyring, KeyringFile, Role
from doorbell.sealing.keys import (
    DeviceSigningKey,
    PhoneVerifyKey,
    RecipientPublicKey,
    read_key_file,
    save_key_file,
)

DEVICE_KEY = "device.key"
KEYRING = "keyring.json"
SEQUENCE = "sequence.json"
HEAD = "head.bin"


def prepare_state_dir(directory: Path, *, create: bool = True) -> Path:
    """Check (and create, 0700) a state directory, naming the problem if it is unusable."""
    directory = Path(directory)
    if not directory.exists():
        if not create:
            raise KeyFileError(f"state directory {directory} does not exist")
        try:
            directory.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise KeyFileError(
                f"cannot create state directory {directory}: {exc.strerror}"
            ) from None
    if not directory.is_dir():
        raise KeyFileError(f"state directory {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise KeyFileError(f"state directory {directory} is not writable by this user")
    return directory


def match_owner(path: Path, directory: Path) -> None:
    """Give a file root just wrote to the owner of its state directory.

    ``sudo doorbell keys add`` must leave files the service user can still read.
    """
    if os.geteuid() != 0:
        return
    st = directory.stat()
    if st.st_uid != 0 or st.st_gid != 0:
        os.chown(path, st.st_uid, st.st_gid)


def load_device_key(directory: Path, *, create: bool = True) -> tuple[DeviceSigningKey, bool]:
    """The device key, generated on first use. Returns (key, created)."""
    path = directory / DEVICE_KEY
    if not path.exists() and create:
        # Under a lock: `doorbell keys show` racing the daemon's first start must not
        # leave the daemon signing with a key other than the one phones pin.
        try:
            lock = hold_lock(directory / ".device-key.lock", wait=True)
        except OSError as exc:
            raise KeyFileError(f"cannot lock {directory}: {exc.strerror}") from None
        with lock:
            if not path.exists():
                key = DeviceSigningKey.generate()
                save_key_file(path, key.to_string())
                match_owner(path, directory)
                return key, True
    try:
        return DeviceSigningKey.from_string(read_key_file(path)), False
    except SealingError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


class KeyringStore:
    """``keyring.json`` in the state directory, edited under a lock, replaced atomically.

    The file is the keyring the device publishes, plus the owner's consent to classical
    phones, which stays on the device (``KeyringFile``).
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / KEYRING
        self._lock_path = directory / ".keyring.lock"

    def load(self) -> Keyring:
        return self.load_file().keyring

    def load_file(self) -> KeyringFile:
        try:
            raw: bytes | None = self.path.read_bytes()
        except FileNotFoundError:
            raw = None
        except OSError as exc:
            raise KeyFileError(f"cannot read {self.path}: {exc.strerror}") from None
        return self.parse(raw)

    def add(
        self,
        name: str,
        key: RecipientPublicKey,
        now: datetime,
        *,
        allow_classical: bool = False,
        role: Role = Role.OWNER,
        signing: PhoneVerifyKey | None = None,
        expires: datetime | None = None,
    ) -> KeyringFile:
        """Enrol a phone as ``doorbell keys add`` does (``KeyringFile.add``): a refused
        enrolment leaves the file as it was."""
        with self._editing_file() as box:
            box[0] = box[0].add(
                name,
                key,
                now,
                allow_classical=allow_classical,
                role=role,
                signing=signing,
                expires=expires,
            )
            return box[0]

    def parse(self, raw: bytes | None) -> KeyringFile:
        """The file's bytes as ``load_file`` reads them; None when there is no file."""
        if raw is None:
            return KeyringFile()
        return KeyringFile.from_json(raw, str(self.path))

    @contextlib.contextmanager
    def editing(self) -> Iterator[list[Keyring]]:
        """Yield ``[keyring]``; whatever the caller leaves in the list is saved on exit.

        The owner's consent to a classical phone stays recorded while that phone does."""
        with self._editing_file() as files:
            box = [files[0].keyring]
            yield box
            files[0] = files[0].with_keyring(box[0])

    @contextlib.contextmanager
    def _editing_file(self) -> Iterator[list[KeyringFile]]:
        try:
            lock = hold_lock(self._lock_path, wait=True)
        except OSError as exc:
            raise KeyFileError(f"cannot lock {self._lock_path}: {exc.strerror}") from None
        with lock:
            box = [self.load_file()]
            yield box
            try:
                write_atomic(self.path, box[0].to_json(), mode=0o600)
                match_owner(self.path, self.path.parent)
            except OSError as exc:
                raise KeyFileError(f"cannot write {self.path}: {exc.strerror}") from None


class LiveFile:
    """A small file read again before every use, exactly, with two system calls.

    The file stays open between reads, so the inode it was read from cannot be freed and
    its number given to another file: when the path names a different inode, the file was
    replaced (every ``KeyringStore`` edit renames a new file over it) and is opened again;
    otherwise its bytes are read again through the open descriptor. No timestamp is
    trusted: on a filesystem with coarse timestamps, two quick edits of the same size
    leave size and mtime as they were.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode = (0, 0)

    def read(self) -> bytes | None:
        """The file's bytes; None when there is no file."""
        try:
            st = os.stat(self.path)
            if self._fd is None or (st.st_dev, st.st_ino) != self._inode:
                self.close()
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                self._fd = fd
                opened = os.fstat(fd)
                self._inode = (opened.st_dev, opened.st_ino)
            return _read_all(self._fd, st.st_size)
        except FileNotFoundError:
            self.close()
            return None
        except OSError as exc:
            raise KeyFileError(f"cannot read {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_all(fd: int, size: int) -> bytes:
    """Every byte of an open file; ``size`` is a guess, which only saves a read."""
    data = os.pread(fd, size + 1, 0)
    if len(data) <= size:
        return data
    parts = [data]
    offset = len(data)
    while chunk := os.pread(fd, 65536, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: bytes


class SequenceFile:
    """Durable sequence numbers without an fsync of the sequence file per object.

    ``sequence.json`` holds the first number not yet promised to anyone. Numbers are
    reserved in blocks (one fsync per block), so after a crash the next run starts
    past every number the previous run could have used. ``head.bin`` remembers the
    last object's chain hash in two checksummed slots, each in a block of its own, and
    a head is written over the slot that does not hold the newest durable one: a torn
    write leaves the other slot valid. ``record`` writes without a sync, and
    ``record(..., sync=True)`` makes the head durable: between the two, the caller keeps
    the newest object on stable storage (the spool's anchor), so that after a power cut
    the newer of the two names the newest object anyone could have received, and the
    restart notice skips only numbers nobody ever saw.
    """

    def __init__(self, directory: Path, block: int = RESERVATION_BLOCK) -> None:
        if not 1 <= block <= RESERVATION_BLOCK:
            # Phones refuse a restart that skips more than one block (docs/FORMAT.md 6.1).
            raise ValueError(f"reservation block {block} must be 1..{RESERVATION_BLOCK}")
        self._path = directory / SEQUENCE
        self._head_path = directory / HEAD
        self._block = block
        self._head_fd: int | None = None
        # The block whose slot holds the newest durable head, and that head.
        self._durable_block = 1
        self._durable: ChainHead | None = None
        # A slot and the 48 bytes after it, which in block 0 held the second slot of the
        # old layout: a stale head there must not outlive the first write over it.
        self._head_buffer = bytearray(2 * _HEAD_SLOT.size)
        self.reserved_until = self._read_reserved()
        self.next = self.reserved_until

    def _read_reserved(self) -> int:
        try:
            document = json.loads(self._path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            # Guessing here could reuse a sequence number: refuse instead.
            raise KeyFileError(
                f"{self._path} is unreadable or corrupt ({exc}); restore it, or write "
                '{"next": N} with N above every sequence number this device used'
            ) from None
        value = document.get("next") if isinstance(document, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
            raise KeyFileError(f"{self._path}: 'next' must be an unsigned 64-bit integer")
        return value

    def read_head(self) -> ChainHead | None:
        try:
            with self._head_path.open("rb") as stream:
                raw = stream.read(_HEAD_READ)
        except OSError:
            return None
        newest = _newest_slot(raw)
        return None if newest is None else newest[1]

    def peek(self) -> int:
        """The next sequence number, durably reserved, not yet spent."""
        if self.next >= self.reserved_until:
            self._write_reserved(self.next + self._block)
        return self.next

    def take(self) -> int:
        """Spend the next sequence number."""
        seq = self.peek()
        self.next += 1
        return seq

    def record(self, head: ChainHead, *, sync: bool = False) -> None:
        """Write ``head``; with ``sync`` it is on stable storage when this returns (a head
        already there is not written again). Without, a power cut may lose it: the
        slot written over is never the durable one, so the durable head survives."""
        fd = self._head_fd if self._head_fd is not None else self._open_head()
        if sync and head == self._durable:
            return
        target = 1 - self._durable_block
        body = head.seq.to_bytes(8, "big") + head.hash
        self._head_buffer[: _HEAD_SLOT.size] = body + hashlib.sha256(body).digest()[:8]
        os.pwrite(fd, self._head_buffer, target * HEAD_BLOCK)
        if sync:
            # fdatasync also flushes the file size when this write grew the file.
            os.fdatasync(fd)
            self._durable_block = target
            self._durable = head

    def _open_head(self) -> int:
        created = not self._head_path.exists()
        fd = os.open(self._head_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if created:
                # The file's name must survive a power cut as well as its bytes.
                sync_directory(self._head_path.parent)
            newest = _newest_slot(os.pread(fd, _HEAD_READ, 0))
            if newest is not None and not created:
                # A killed run's last heads may still be in the page cache only: the slot
                # taken as durable must be, or the next write could tear the one that is.
                os.fdatasync(fd)
        except BaseException:
            os.close(fd)
            raise
        if newest is not None:
            self._durable_block, self._durable = newest
        self._head_fd = fd
        return fd

    def close(self) -> None:
        """Give back the unused part of the block so a clean restart leaves no gap."""
        self._write_reserved(self.next)
        if self._head_fd is not None:
            os.close(self._head_fd)
            self._head_fd = None

    def _write_reserved(self, value: int) -> None:
        if value >= 2**64:
            raise SealingError("sequence numbers exhausted")
        write_atomic(self._path, json.dumps({"next": value}).encode(), mode=0o600)
        self.reserved_until = value


# seq, chain hash, first 8 bytes of SHA-256 of the two
_HEAD_SLOT = struct.Struct(">Q32s8s")
# Where head.bin's slots start. Each sits at the start of a block of its own, so no torn
# sector or page can damage both. Files written before this layout held their two slots
# at 0 and 48, in one sector; they still read (both slots count as block 0).
HEAD_BLOCK = 4096
_HEAD_SLOTS = (0, _HEAD_SLOT.size, HEAD_BLOCK)
_HEAD_READ = HEAD_BLOCK + _HEAD_SLOT.size


def _newest_slot(raw: bytes) -> tuple[int, ChainHead] | None:
    """The valid slot of ``raw`` with the highest seq, and the block it is in."""
    newest: tuple[int, ChainHead] | None = None
    for offset in _HEAD_SLOTS:
        slot = raw[offset : offset + _HEAD_SLOT.size]
        if len(slot) != _HEAD_SLOT.size:
            continue
        seq, digest, check = _HEAD_SLOT.unpack(slot)
        if hashlib.sha256(slot[:40]).digest()[:8] != check:
            continue
        if newest is None or seq > newest[1].seq:
            newest = (offset // HEAD_BLOCK, ChainHead(seq, digest))
    return newest
