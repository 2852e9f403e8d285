"""A real, small file system for full-disk tests: a size-limited tmpfs, mounted as root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(mount: Path, size: int) -> Iterator[Path]:
    """Mount an empty tmpfs of ``size`` bytes on ``mount`` (created), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mount.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        # Lazy: a test that failed with a file still open must not leave the mount behind.
        subprocess.run(["umount", "--lazy", str(mount)], check=True, capture_output=True)
