"""Advisory file locks: one process at a time per state directory, spool or phone home."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class LockBusy(Exception):
    """Another process holds the lock and the caller chose not to wait."""


def hold_lock(path: Path, *, wait: bool) -> IO[bytes]:
    """Open ``path`` (created 0600 if missing) and take an exclusive lock on it.

    The lock lasts until the returned file is closed, or the process ends. With
    ``wait=False`` a held lock raises `LockBusy` at once; a file that cannot be opened
    raises `OSError`. Callers turn both into their own error naming what is locked.
    """
    handle = open(path, "ab")  # noqa: SIM115 - the caller holds it as long as the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LockBusy(str(path)) from None
    except BaseException:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def locked(path: Path, *, wait: bool) -> Iterator[None]:
    """`hold_lock` for the length of a ``with`` block."""
    with hold_lock(path, wait=wait):
        yield
