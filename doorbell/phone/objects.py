"""Where a phone reads sealed objects from: a directory of ``*.sealed`` files.

Names come from whoever wrote the folder or the bucket, so they are hostile input: only
the names FORMAT.md section 8 defines are ever read or turned into paths, and every
other name is shown escaped (`shown`), never as the raw characters a terminal would obey.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from doorbell.sealing import MAX_OBJECT

# FORMAT.md section 8: the first 16 hex digits of the device id, and the seq in 20 digits.
OBJECT_NAME = re.compile(r"(?P<device>[0-9a-f]{16})-[0-9]{20}\.sealed")
CHUNK = 1 << 20
NOT_AN_OBJECT_NAME = "not the name of a sealed object"


class ObjectUnreadable(Exception):
    """One object could not be fetched; the others can still be processed."""


class ObjectSource(Protocol):
    """Named sealed objects, listed in name order, read one at a time."""

    def names(self) -> list[str]: ...

    def read(self, name: str) -> bytes: ...

    def describe(self, name: str) -> str: ...


class Readable(Protocol):
    """Where fetched bytes come from: a file, or a response from the bucket."""

    def read(self, size: int, /) -> bytes: ...


class Writer(Protocol):
    """Where fetched bytes go: a file, or a `Digest`."""

    def write(self, data: bytes, /) -> object: ...


class Guarded:
    """Reads from ``source``, turning its ``failures`` into `ObjectUnreadable` (the object
    cannot be had), so that what fails while writing where it is copied keeps its type."""

    def __init__(
        self,
        source: Readable,
        failures: tuple[type[Exception], ...],
        reason: Callable[[Exception], str],
    ) -> None:
        self._source = source
        self._failures = failures
        self._reason = reason

    def read(self, size: int, /) -> bytes:
        try:
            return self._source.read(size)
        except self._failures as exc:
            raise ObjectUnreadable(self._reason(exc)) from None


def is_object_name(name: str) -> bool:
    """Whether ``name`` is exactly a FORMAT.md section 8 name."""
    return OBJECT_NAME.fullmatch(name) is not None


def shown(name: str) -> str:
    """``name`` safe to print: every character that is not printable (control bytes such
    as ESC, bidirectional and other format characters, undecodable bytes) and the
    backslash are escaped as Python writes them in a string literal."""
    if name.isprintable() and "\\" not in name:
        return name
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in name)


def copy_bounded(source: Readable, out: Writer) -> int:
    """Copy ``source`` into ``out`` in chunks; refuse, having read at most one byte more,
    anything larger than the largest sealed object. Returns the bytes copied."""
    copied = 0
    while chunk := source.read(min(CHUNK, MAX_OBJECT + 1 - copied)):
        copied += len(chunk)
        if copied > MAX_OBJECT:
            raise ObjectUnreadable("larger than any sealed object")
        out.write(chunk)
    return copied


class Digest:
    """Keeps only the SHA-256 of what is written to it: compares an object being fetched
    with a copy without holding both."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self._hash.update(data)
        return len(data)

    def matches(self, data: bytes) -> bool:
        return self._hash.digest() == hashlib.sha256(data).digest()


class DirectorySource:
    """A local folder (the demo bucket, a NAS or USB mount, a synced copy)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise NotADirectoryError(f"{self.directory} is not a directory")
        self.ignored: list[str] = []  # escaped names of the other files, for reports
        self._prefix = os.path.join(self.directory, "")  # joined to a name per object read

    def names(self) -> list[str]:
        names = []
        self.ignored.clear()
        # Directory entries, not paths: a year of footage is tens of thousands of names,
        # and an entry knows its name and type without a stat of its own.
        with os.scandir(self.directory) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if is_object_name(entry.name) and _is_file(entry):
                names.append(entry.name)
            else:
                self.ignored.append(shown(entry.name))
        return names

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            size = os.fstat(handle.fileno()).st_size
            # One byte more than the size tells a file still growing from a whole one.
            data = Guarded(handle, (OSError,), _cannot_read).read(size + 1)
        if len(data) > size:
            raise ObjectUnreadable("changed while it was read")
        return data

    def copy(self, name: str, out: Writer) -> int:
        """Write object ``name`` into ``out``, bounded like `read`; returns its size."""
        with self.open(name) as handle:
            return copy_bounded(Guarded(handle, (OSError,), _cannot_read), out)

    def open(self, name: str) -> BinaryIO:
        """Open an object of this folder for reading: a regular file no larger than any
        sealed object. Never blocks: a name swapped for a pipe or a device after the
        listing is refused, not waited on."""
        if not is_object_name(name):
            raise ObjectUnreadable(NOT_AN_OBJECT_NAME)
        try:
            fd = os.open(self._prefix + name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ObjectUnreadable(_cannot_read(exc)) from None
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "not a regular file"
        elif info.st_size > MAX_OBJECT:
            problem = f"{info.st_size} bytes, larger than any sealed object"
        if problem is not None:
            os.close(fd)
            raise ObjectUnreadable(problem)
        return os.fdopen(fd, "rb")

    def describe(self, name: str) -> str:
        return str(self.directory / shown(name))


def _is_file(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a regular file, or a link to one; a link that loops or cannot
    be followed is not."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _cannot_read(exc: Exception) -> str:
    return f"cannot read: {getattr(exc, 'strerror', None) or exc}"
