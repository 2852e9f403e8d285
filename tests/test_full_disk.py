"""A ring is never lost to a full disk: the real daemon on a small real file system.

The state directory (and so the spool) is a 6 MiB tmpfs, the bucket is unreachable,
and continuous recording at a high bitrate fills the disk within seconds. Every ring
the daemon confirms must reach the phones over a real Mosquitto and stay in the spool
for the bucket; old footage makes room instead, announced in sealed notices.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonRig, wait_for
from mqtt_fixture import Listener, Mosquitto, listen, mosquitto  # noqa: F401
from s3_fixture import closed_port
from small_disk import small_disk

from doorbell.sealing import Kind

DISK = 6 * 1024 * 1024
RINGS = 8


@pytest.fixture
def full_disk_rig(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[DaemonRig]:  # noqa: F811
    with small_disk(tmp_path / "state", DISK):
        rig = DaemonRig(
            tmp_path,
            continuous=True,
            extra={
                "camera": {"width": 640, "height": 480, "bitrate": 6_000_000},
                "spool": {"quota_mb": 1024, "reserve_mb": 2},
                "sinks": {
                    "local": {"enabled": False},
                    "s3": {
                        "enabled": True,
                        "endpoint": f"127.0.0.1:{closed_port()}",
                        "bucket": "down",
                        "secure": False,
                    },
                },
                "mqtt": {"enabled": True, "host": mosquitto.host, "port": mosquitto.port},
            },
        )
        try:
            yield rig
        finally:
            rig.kill()


def test_every_ring_reaches_the_phone_and_the_spool_while_the_disk_is_full(
    full_disk_rig: DaemonRig,
    listen,  # noqa: F811
) -> None:
    rig = full_disk_rig
    events: Listener = listen("doorbell/+/event")
    rig.start(env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    rig.wait_ready()
    wait_for(lambda: "below the reserve" in rig.log_text(), 120, "a full disk")
    for ring in range(1, RINGS + 1):
        segments = rig.status()["segments"]
        reply = rig.command("ring")
        assert reply.get("ok"), reply
        events.wait(f"{ring} event(s)", lambda m, n=ring: len(m) >= n, timeout=30)
        # Footage keeps coming between rings, so every ring meets a disk with no room.
        wait_for(lambda s=segments: rig.status()["segments"] > s, 30, "the next segment")
    status = rig.status()
    assert status["essential_dropped"] == 0
    assert status["waiting_for_room"] == 0
    assert status["sinks"]["s3"]["failures"] > 0, "the bucket was down all along"
    assert rig.stop() == 0
    log = rig.log_text()
    assert "could not spool" not in log, log[-3000:]

    # What the bucket will get once it is back: everything still in the spool.
    bucket = rig.root / "from-spool"
    bucket.mkdir()
    for path in (rig.state / "spool" / "objects").iterdir():
        if not path.name.startswith("."):
            shutil.copyfile(path, bucket / path.name.split(".", 3)[3])
    rig.bucket = bucket
    result, _ = rig.verify()
    assert result.ok, [str(f) for f in result.problems]
    rings = [
        e
        for e in result.entries
        if e.contents and e.contents.kind is Kind.EVENT and e.contents.meta["type"] == "ring"
    ]
    assert len(rings) == RINGS, "a ring the daemon confirmed is not in the spool"
    announced = [f for f in result.findings if "announced as quota" in f.message]
    assert announced, "the disk never filled: the test proved nothing"
    pushed = {bytes(m.payload) for m in events.messages}
    assert len(pushed) == RINGS


def test_a_ring_that_finds_no_room_at_all_waits_in_memory_and_is_spooled_once_there_is(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "state", DISK):
        rig = DaemonRig(tmp_path, extra={"spool": {"reserve_mb": 1}})
        try:
            rig.start()
            rig.wait_ready()
            rig.wait_preroll()
            # Something else fills the disk: nothing of the spool's could make room.
            ballast = rig.state / "ballast"
            with open(ballast, "wb") as out:
                try:
                    while True:
                        out.write(bytes(64 * 1024))
                        out.flush()
                except OSError:
                    pass
            reply = rig.command("ring")
            assert reply["ok"] and reply["waiting_for_room"] >= 1, reply
            status = rig.status()
            assert status["spool_error"], status
            assert status["spool"]["full"], status["spool"]
            human = subprocess.run(
                [sys.executable, "-m", "doorbell", "status", "-c", str(rig.config)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert "spool      FULL" in human.stdout, human.stdout
            assert "wait in memory for spool room" in human.stdout, human.stdout
            assert _rings_in(rig) == 0

            ballast.unlink()
            wait_for(lambda: rig.status()["waiting_for_room"] == 0, 30, "room for the event")
            wait_for(lambda: _rings_in(rig) == 1, 30, "the ring in the bucket")
            assert rig.stop() == 0
        finally:
            rig.kill()
    result, _ = rig.verify()
    assert result.ok, [str(f) for f in result.problems]
    seqs = sorted(e.seq for e in result.entries)
    assert seqs == list(range(len(seqs))), "what could not be spooled spent no number"


def _rings_in(rig: DaemonRig) -> int:
    result, _ = rig.verify()
    return sum(
        1
        for e in result.entries
        if e.contents and e.contents.kind is Kind.EVENT and e.contents.meta["type"] == "ring"
    )
