"""Files in a stopped doorbell's spool that are not its objects, through the real path.

The daemon records a clip while the bucket is unreachable, so it stops with the clip in
its spool. Then the spool is tampered with as a failing SD card, a crash or an intruder
would: one real object cut short, garbage under the next object's name, another
device's object under the name after that, a file of no object's name and a temporary
file. The real daemon restarts with a real (moto) bucket; the phone's own CLI then syncs
and verifies what reached it.

Those files are checked beside recording, not before it: with the oldest of them slow to
read (a file lease holds every open() of it), the restarted daemon records a ring while
the check waits, and delivers nothing until it has gone on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import DaemonRig, wait_for
from s3_fixture import (  # noqa: F401
    S3_ENV,
    S3Server,
    closed_port,
    daemon_s3_config,
    moto_server,
    s3_server,
)
from stalled_file import StalledFile

from doorbell.sealing import Kind, Sealer

PREFIX = "doorbells/"


def _phone(rig: DaemonRig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doorbell.phone", "--home", str(rig.home.directory), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **S3_ENV},
    )


def _seq(file_name: str) -> int:
    return int(file_name.split(".", 1)[0])


def _spool_a_clip_offline(rig: DaemonRig) -> None:
    """Record one ring's clip while the bucket is unreachable, then stop cleanly."""
    try:
        rig.start(env=S3_ENV)
        rig.wait_ready()
        rig.wait_preroll()
        rig.command("ring")
        wait_for(
            lambda: (s := rig.status()).get("clips") == 1 and s.get("clip") is None,
            60,
            "the clip to end",
        )
        assert rig.stop() == 0
    finally:
        rig.kill()


def _reach_the_bucket(rig: DaemonRig, server: S3Server) -> None:
    """Point the stopped daemon's config at the real bucket."""
    config = json.loads(rig.config.read_text())
    config["sinks"]["s3"]["endpoint"] = server.endpoint
    rig.config.write_text(json.dumps(config))


def _sync(rig: DaemonRig, server: S3Server, out: Path) -> str:
    """Sync the bucket into ``out`` with the phone's CLI; what it printed."""
    sync = _phone(
        rig,
        "sync",
        f"s3://{server.bucket}/{PREFIX}",
        "--endpoint",
        server.endpoint,
        "--insecure",
        "--out",
        str(out),
    )
    assert sync.returncode == 0, sync.stdout + sync.stderr
    return sync.stdout


@pytest.fixture
def foreign_object(tmp_path: Path, rig: DaemonRig) -> bytes:
    """A valid object of another doorbell, sealed to the same phone."""
    other = tmp_path / "other-state"
    other.mkdir(mode=0o700)
    (other / "keyring.json").write_bytes((rig.state / "keyring.json").read_bytes())
    with Sealer(other) as sealer:
        return bytes(sealer.seal(Kind.SEGMENT, {}, os.urandom(2000))[-1].data)


@pytest.fixture
def rig(tmp_path: Path, s3_server: S3Server) -> DaemonRig:  # noqa: F811
    unreachable = daemon_s3_config(f"127.0.0.1:{closed_port()}", s3_server.bucket)
    return DaemonRig(tmp_path, extra=unreachable)


def test_files_that_are_not_objects_never_reach_the_bucket_and_the_hole_is_announced(
    tmp_path: Path,
    rig: DaemonRig,
    s3_server: S3Server,  # noqa: F811
    foreign_object: bytes,
) -> None:
    _spool_a_clip_offline(rig)
    objects = rig.state / "spool" / "objects"
    queue = rig.state / "spool" / "queues" / "s3"
    spooled = sorted(p.name for p in objects.iterdir())
    assert len(spooled) >= 5, spooled
    seqs = [_seq(name) for name in spooled]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a dense chain in the spool"
    prefix = spooled[0].split(".", 3)[3].split("-")[0]

    # A media segment in the middle, cut short: object N+1 is spooled and intact.
    victim = next(n for n in spooled[1:-1] if n.split(".")[1] == str(int(Kind.SEGMENT)))
    damaged_seq = _seq(victim)
    original = (objects / victim).read_bytes()
    truncated = original[: len(original) // 2]
    (objects / victim).write_bytes(truncated)  # the queue link is the same inode
    # Garbage under the next name, and another doorbell's object under the one after:
    # both queued, as a put would have left them.
    planted: dict[str, bytes] = {}
    for seq, data in ((seqs[-1] + 1, os.urandom(5000)), (seqs[-1] + 2, foreign_object)):
        name = f"{seq:020d}.{int(Kind.SEGMENT)}.clip.{prefix}-{seq:020d}.sealed"
        (objects / name).write_bytes(data)
        os.link(objects / name, queue / name)
        planted[name] = data
    stray = "x7Gq2 not an object.bin"
    (objects / stray).write_bytes(os.urandom(3000))
    leftover = f".{spooled[-1]}.tmp"
    (objects / leftover).write_bytes(original[:100])

    _reach_the_bucket(rig, s3_server)
    try:
        rig.start(env=S3_ENV)
        rig.wait_ready()
        wait_for(
            lambda: (
                (s := rig.status())["spool"]["sinks"]["s3"]["pending"] == 0
                and s["objects_sealed"] >= 2
            ),
            90,
            "the spool to drain, the notice included",
        )
        status = rig.status()
        assert status["quarantined"] == 4, status["spool"]
        assert status["spool"]["quarantined"]["objects"] == 4
        frames = status["frames"]
        wait_for(lambda: rig.status()["frames"] > frames + 15, 30, "capture to go on")
        assert rig.stop() == 0
    finally:
        rig.kill()

    log = rig.log_text()
    assert f"{victim!r} is damaged (truncated: object is {len(truncated)} bytes" in log
    for name in planted:
        assert f"quarantined {name!r}: " in log
    assert f"quarantined {stray!r}: not a spooled object's file name" in log
    assert not (objects / leftover).exists()
    quarantined = sorted(
        p.name.split("-", 1)[1] for p in (rig.state / "spool" / "quarantine").iterdir()
    )
    assert quarantined == sorted([victim, *planted, stray])

    keys = s3_server.keys(PREFIX)
    stored = {key: s3_server.get(key) for key in keys}
    damaged_name = victim.split(".", 3)[3]
    assert f"{PREFIX}{damaged_name}" not in stored
    assert not any(stray in key for key in keys)
    for data in stored.values():
        assert data not in (truncated, original, foreign_object, *planted.values())
    # The chain went on at the planted names with the doorbell's own objects.
    for name in planted:
        assert f"{PREFIX}{name.split('.', 3)[3]}" in stored

    out = tmp_path / "synced"
    synced = _sync(rig, s3_server, out)
    announced = f"seq {damaged_seq} announced: damaged on the doorbell"
    assert f"gap      device {prefix}: {announced}" in synced, synced
    assert "FAIL" not in synced and "malformed" not in synced, synced
    assert "missing seq" not in synced and "0 unexplained" in synced, synced
    # The clip is exported around the hole, which it names.
    assert "is missing; the clip has a gap" in synced, synced

    verify = _phone(rig, "verify", str(out / "objects"))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"note   device {prefix}: {announced}" in verify.stdout, verify.stdout
    assert "FAIL" not in verify.stdout and "missing seq" not in verify.stdout, verify.stdout


def test_the_daemon_records_a_ring_while_the_files_of_its_last_run_wait_to_be_checked(
    tmp_path: Path,
    rig: DaemonRig,
    s3_server: S3Server,  # noqa: F811
) -> None:
    _spool_a_clip_offline(rig)
    objects = rig.state / "spool" / "objects"
    earlier = sorted(p.name for p in objects.iterdir())
    assert len(earlier) >= 5, earlier
    _reach_the_bucket(rig, s3_server)

    def ring_event() -> str | None:
        """The object name of the event this run spooled, once it has (no temporary file)."""
        for path in objects.iterdir():
            seq, kind, _, name = path.name.split(".", 3)
            if seq.isdigit() and int(seq) > _seq(earlier[-1]) and kind == str(int(Kind.EVENT)):
                return name
        return None

    try:
        # Every open() of the oldest file waits for the test, as on an SD card slow to read.
        with StalledFile(objects / earlier[0]) as stalled:
            rig.start(env=S3_ENV)
            wait_for(stalled.reader_waiting, 60, "the check to open the oldest file")
            rig.wait_ready()
            assert rig.command("ring")["ok"]
            wait_for(lambda: ring_event() is not None, 30, "the ring's event in the spool")
            event = ring_event()
            status = rig.status()
            assert stalled.held(), "someone waited lease-break-time for the oldest file"
            # Start-up read the newest file alone: the others wait for their check, and
            # with them everything queued after them, the ring's event included.
            assert status["spool"]["unchecked"]["objects"] == len(earlier) - 1, status["spool"]
            assert status["events"] == 1
            assert s3_server.keys(PREFIX) == []
        wait_for(
            lambda: (
                (s := rig.status())["clips"] == 1
                and s["clip"] is None
                and s["spool"]["unchecked"]["objects"] == 0
                and s["spool"]["sinks"]["s3"]["pending"] == 0
            ),
            90,
            "the clip to end and the spool to drain",
        )
        assert rig.stop() == 0
    finally:
        rig.kill()

    keys = set(s3_server.keys(PREFIX))
    assert {f"{PREFIX}{name.split('.', 3)[3]}" for name in earlier} <= keys
    assert f"{PREFIX}{event}" in keys
    synced = _sync(rig, s3_server, tmp_path / "synced")
    assert "FAIL" not in synced and "missing seq" not in synced, synced
    assert "0 unexplained" in synced, synced
