"""The doorbell's state directory: its device key, its keyring and its sequence counter."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from doorbell.sealing.durable import sync_directory, write_atomic
from doorbell.sealing.errors import KeyFileError, SealingError
from doorbell.sealing.format import RESERVATION_BLOCK
from doorbell.sealing.keyring import Keyring
from doorbell.sealing.keys import DeviceSigningKey, read_key_file, save_key_file

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
            lock = open(directory / ".device-key.lock", "ab")  # noqa: SIM115 - held below
        except OSError as exc:
            raise KeyFileError(f"cannot lock {directory}: {exc.strerror}") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
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
    """``keyring.json`` in the state directory, edited under a lock, replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / KEYRING
        self._lock_path = directory / ".keyring.lock"

    def load(self) -> Keyring:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Keyring()
        except OSError as exc:
            raise KeyFileError(f"cannot read {self.path}: {exc.strerror}") from None
        return Keyring.from_json(raw, str(self.path))

    def stamp(self) -> bytes | None:
        """The file's digest: a few kilobytes read before every seal is cheap, and unlike
        inode and mtime it cannot miss two quick edits."""
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyFileError(f"cannot read {self.path}: {exc.strerror}") from None

    @contextlib.contextmanager
    def editing(self) -> Iterator[list[Keyring]]:
        """Yield ``[keyring]``; whatever the caller leaves in the list is saved on exit."""
        try:
            lock: IO[bytes] = open(self._lock_path, "ab")  # noqa: SIM115 - held across the yield
        except OSError as exc:
            raise KeyFileError(f"cannot lock {self._lock_path}: {exc.strerror}") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            box = [self.load()]
            yield box
            try:
                write_atomic(self.path, box[0].to_json(), mode=0o600)
                match_owner(self.path, self.path.parent)
            except OSError as exc:
                raise KeyFileError(f"cannot write {self.path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: bytes


class SequenceFile:
    """Durable sequence numbers without an fsync of the sequence file per object.

    ``sequence.json`` holds the first number not yet promised to anyone. Numbers are
    reserved in blocks (one fsync per block), so after a crash the next run starts
    past every number the previous run could have used. ``head.bin`` remembers the
    last object's chain hash in two checksummed slots written alternately in place,
    so a torn write leaves the other slot valid. ``record(..., sync=True)`` makes the
    head durable before the caller lets the object leave the device: after a power
    cut the head then names the newest object anyone could have received, and the
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
            raw = self._head_path.read_bytes()
        except OSError:
            return None
        heads = []
        for offset in (0, _HEAD_SLOT.size):
            slot = raw[offset : offset + _HEAD_SLOT.size]
            if len(slot) != _HEAD_SLOT.size:
                continue
            seq, digest, check = _HEAD_SLOT.unpack(slot)
            if hashlib.sha256(slot[:40]).digest()[:8] == check:
                heads.append(ChainHead(seq, digest))
        return max(heads, key=lambda h: h.seq, default=None)

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
        """Write ``head``; with ``sync`` it is on stable storage when this returns."""
        if self._head_fd is None:
            created = not self._head_path.exists()
            self._head_fd = os.open(self._head_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if created:
                # The file's name must survive a power cut as well as its bytes.
                sync_directory(self._head_path.parent)
        body = head.seq.to_bytes(8, "big") + head.hash
        slot = body + hashlib.sha256(body).digest()[:8]
        os.pwrite(self._head_fd, slot, (head.seq % 2) * _HEAD_SLOT.size)
        if sync:
            # fdatasync also flushes the file size when this write grew the file.
            os.fdatasync(self._head_fd)

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
