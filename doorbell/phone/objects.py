"""Where a phone reads sealed objects from: a directory of ``*.sealed`` files."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from doorbell.sealing import MAX_OBJECT


class ObjectUnreadable(Exception):
    """One object could not be fetched; the others can still be processed."""


class ObjectSource(Protocol):
    """Named sealed objects, listed in name order, read one at a time."""

    def names(self) -> list[str]: ...

    def read(self, name: str) -> bytes: ...

    def describe(self, name: str) -> str: ...


class DirectorySource:
    """A local folder (the demo bucket, a NAS or USB mount, a synced copy)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise NotADirectoryError(f"{self.directory} is not a directory")
        self.ignored: list[str] = []

    def names(self) -> list[str]:
        names = []
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix == ".sealed" and path.is_file():
                names.append(path.name)
            else:
                self.ignored.append(path.name)
        return names

    def read(self, name: str) -> bytes:
        path = self.directory / name
        try:
            size = path.stat().st_size
            if size > MAX_OBJECT:
                raise ObjectUnreadable(f"{size} bytes, larger than any sealed object")
            return path.read_bytes()
        except OSError as exc:
            raise ObjectUnreadable(f"cannot read: {exc.strerror}") from None

    def describe(self, name: str) -> str:
        return str(self.directory / name)
