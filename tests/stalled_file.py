"""A file whose readers wait until the test lets them: a slow read, without a clock.

A write lease (``fcntl`` ``F_SETLEASE``, Linux) makes the kernel hold every open() of
the file, by any thread or process, until the holder lets go; ``/proc/locks`` shows the
lease breaking while someone waits. The kernel gives up waiting after
``/proc/sys/fs/lease-break-time`` seconds (45 by default) and lets the reader through,
leaving the holder a read lease: ``held`` tells whether it has not.
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any


class StalledFile:
    """``with StalledFile(path) as stalled:`` every open() of ``path`` waits until the end
    of the block. Nothing may have the file open when it starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._sigio: Callable[[int, FrameType | None], Any] | int | None = None

    def __enter__(self) -> StalledFile:
        # The kernel tells the holder of a lease someone waits with SIGIO, whose default
        # action ends the process.
        self._sigio = signal.signal(signal.SIGIO, signal.SIG_IGN)
        self._fd = os.open(self.path, os.O_RDONLY)
        fcntl.fcntl(self._fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        return self

    def _state(self) -> str:
        """The lease as ``/proc/locks`` shows it: ``ACTIVE WRITE``, ``BREAKING READ`` while
        someone waits, ``ACTIVE READ`` once the kernel gave up waiting."""
        assert self._fd is not None
        inode = f":{os.fstat(self._fd).st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if fields[1] == "LEASE" and int(fields[4]) == os.getpid() and fields[5].endswith(inode):
                return f"{fields[2]} {fields[3]}"
        return ""

    def reader_waiting(self) -> bool:
        """Someone is stuck opening the file."""
        return self._state() == "BREAKING READ"

    def held(self) -> bool:
        """Nobody has opened the file yet: the kernel has not given up waiting."""
        return self._state() in ("ACTIVE WRITE", "BREAKING READ")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._fd is not None
        fcntl.fcntl(self._fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(self._fd)
        self._fd = None
        signal.signal(signal.SIGIO, signal.SIG_DFL if self._sigio is None else self._sigio)
