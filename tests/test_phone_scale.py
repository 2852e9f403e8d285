"""A phone's memory does not grow with the footage: the real ``doorbell-phone`` verifying,
syncing and exporting ten times the objects peaks at the same resident size.

Each run is a subprocess of its own, measured by the kernel (``getrusage`` of the only
child of a small launcher), so nothing else this test process ran is counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chain_builder import Forger, clip_end_meta, event_meta, init_meta, segment_meta

from doorbell.sealing import Kind

OBJECT_BYTES = 200_000  # about one second of 1080p video
SMALL, LARGE = 60, 600
# What the larger folder may add to the peak: records of 540 more objects take well under
# 1 MB; holding their bytes would take over 100 MB.
GROWTH_LIMIT = 12 * 1024 * 1024


def footage(root: Path, count: int) -> Forger:
    """A keyring, then ring clips of 19 objects each: init, event, 16 segments, clip-end."""
    door = Forger(root)
    door.keyring_object()
    body = bytes(OBJECT_BYTES)
    while len(door.objects) < count:
        stream, clip = os.urandom(16).hex(), os.urandom(16).hex()
        door.append(Kind.INIT, init_meta(stream), b"ftyp+moov")
        door.append(Kind.EVENT, event_meta(clip=clip, stream=stream), b"\xff\xd8jpeg")
        for index in range(16):
            door.append(Kind.SEGMENT, segment_meta(stream, index), body)
        door.append(Kind.NOTICE, clip_end_meta(clip, stream, 15))
    door.write()
    return door


# Run from a fresh interpreter of its own: a child started straight from this test process
# would be credited with this process's own peak, which exec carries over to the new image.
_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def phone_measured(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the real ``doorbell-phone`` with ``argv``: how it ended, and its peak resident
    set in bytes."""
    command = [str(Path(sys.executable).parent / "doorbell-phone"), *argv]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    return done, int(done.stderr.split()[-1]) * 1024  # Linux reports kilobytes


def run(door: Forger, command: str, out: Path) -> tuple[int, str]:
    argv = ["--home", str(door.home.directory), command, str(door.bucket)]
    done, peak = phone_measured(argv + ([] if command == "verify" else ["--out", str(out)]))
    assert done.returncode == 0, done.stdout + done.stderr
    return peak, done.stdout


@pytest.mark.parametrize("command", ["verify", "sync", "export"])
def test_peak_memory_does_not_grow_with_the_number_of_objects(tmp_path: Path, command: str) -> None:
    small = footage(tmp_path / "small", SMALL)
    large = footage(tmp_path / "large", LARGE)
    small_peak, small_output = run(small, command, tmp_path / "small-out")
    large_peak, large_output = run(large, command, tmp_path / "large-out")

    if command == "verify":
        assert f"ok: {len(small.objects)} object(s) verified" in small_output
        assert f"ok: {len(large.objects)} object(s) verified" in large_output
    else:
        clips = (len(large.objects) - 1) // 19
        assert len(list((tmp_path / "large-out").rglob("*.mp4"))) == clips, large_output
    extra = (len(large.objects) - len(small.objects)) * OBJECT_BYTES
    assert large_peak - small_peak < GROWTH_LIMIT, (
        f"{command}: peak {small_peak / 2**20:.0f} MiB for {len(small.objects)} objects, "
        f"{large_peak / 2**20:.0f} MiB for {len(large.objects)} ({extra / 2**20:.0f} MiB more "
        "footage)"
    )
