"""The chain tells the truth after kills, power cuts and long idle runs of the real daemon.

Each test runs the daemon as a subprocess (tests/daemon_harness.py) with the local
folder sink standing in for the bucket, and judges the result with the phone's own
verifier: an unexplained gap is a problem, exactly as a deletion in the bucket would be.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_harness import FPS, DaemonRig, wait_for

from doorbell.sealing import Kind
from doorbell.sealing.state import SequenceFile

POWERCUT_MODULE = Path(__file__).parent / "powercut"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[DaemonRig]:
    rig = DaemonRig(tmp_path)
    yield rig
    rig.kill()


def _rings(rig: DaemonRig) -> list[int]:
    result, _ = rig.verify()
    return [
        e.seq
        for e in result.entries
        if e.contents is not None
        and e.contents.kind is Kind.EVENT
        and e.contents.meta.get("type") == "ring"
    ]


def test_an_idle_doorbell_delivers_only_its_start_up_objects(tmp_path: Path) -> None:
    # As fast as the encoder goes: ten minutes of footage, ten times past the
    # once-a-minute notice an idle doorbell used to seal for discarded pre-roll.
    rig = DaemonRig(tmp_path, extra={"camera": {"realtime": False}})
    try:
        rig.start()
        wait_for(lambda: rig.status().get("frames", 0) >= FPS * 600, 240, "ten minutes of video")
        status = rig.status()
        assert status["objects_sealed"] == 2, status
        assert rig.process is not None
        # Plaintext pre-roll is in its memory: no core dump may write it to disk.
        assert resource.prlimit(rig.process.pid, resource.RLIMIT_CORE) == (0, 0)
        assert rig.stop() == 0
    finally:
        rig.kill()
    result, _ = rig.verify()
    assert result.ok, [str(f) for f in result.problems]
    kinds = [(e.seq, e.contents.kind if e.contents else None) for e in result.entries]
    assert sorted(kinds) == [(0, Kind.KEYRING), (1, Kind.INIT)]


def test_kill_9_at_random_moments_during_rings_leaves_no_unexplained_gap(
    rig: DaemonRig,
) -> None:
    # DOORBELL_TORTURE_KILLS=25 runs the full torture; the suite runs a short one.
    kills = int(os.environ.get("DOORBELL_TORTURE_KILLS", "5"))
    seed = int(os.environ.get("DOORBELL_TORTURE_SEED", str(random.randrange(2**32))))
    chaos = random.Random(seed)
    acknowledged = 0
    for _ in range(kills):
        rig.start()
        rig.wait_ready()
        if chaos.random() < 0.7:
            rig.wait_preroll()
        for _ in range(chaos.randint(1, 3)):
            reply = rig.command("ring")
            assert reply.get("ok"), reply
            acknowledged += 1
            # The kill falls at a random moment of the clip: not a wait for anything.
            time.sleep(chaos.uniform(0.0, 1.5))
        rig.stop(signal.SIGKILL)
    rig.start()
    rig.wait_ready()
    assert rig.stop() == 0, rig.log_text()

    result, _ = rig.verify()
    problems = [str(f) for f in result.problems]
    assert result.ok, f"seed {seed}: {problems}"
    assert len(_rings(rig)) == acknowledged, f"seed {seed}: a ring the daemon confirmed is lost"
    restarts = [
        e
        for e in result.entries
        if e.contents is not None
        and e.contents.kind is Kind.NOTICE
        and e.contents.meta.get("notice") == "restart"
    ]
    assert len(restarts) == kills, f"seed {seed}: one restart notice per kill"
    # Shown with -s: what the torture did, to quote in a report.
    print(f"\nseed {seed}: {kills} kills, {acknowledged} rings, {len(result.entries)} objects")


def _snapshot_files(root: Path) -> dict[int, bytes]:
    """Content by inode of every regular file under ``root``: what is on disk for good."""
    return {
        path.stat().st_ino: path.read_bytes()
        for path in root.rglob("*")
        if stat.S_ISREG(path.lstat().st_mode)
    }


def _cut_power(root: Path, durable: dict[int, bytes], shadow: Path) -> list[str]:
    """Put every file under ``root`` back to its last fsynced content (or the content it
    had before the run); a file never fsynced loses its data. Renames and links are kept:
    the daemon fsyncs its directories, and this test is about file contents."""
    changed = []
    for path in root.rglob("*"):
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            continue
        synced = shadow / str(info.st_ino)
        content = synced.read_bytes() if synced.exists() else durable.get(info.st_ino, b"")
        if path.read_bytes() != content:
            changed.append(str(path.relative_to(root)))
            path.write_bytes(content)
    return changed


def _ring_with_power_to_cut(rig: DaemonRig, tmp_path: Path) -> Callable[[], None]:
    """Start the daemon remembering what it fsyncs and ring once; returns the power cut:
    a kill, then every file put back to what the disk held for good."""
    shadow = tmp_path / "fsynced"
    shadow.mkdir()
    durable = _snapshot_files(rig.state)
    rig.start(
        env={
            "PYTHONPATH": os.pathsep.join(
                [str(POWERCUT_MODULE), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "DOORBELL_TEST_FSYNC_SHADOW": str(shadow),
        }
    )
    rig.wait_ready()
    rig.wait_preroll()
    assert rig.command("ring")["ok"]

    def cut() -> None:
        assert any(shadow.iterdir()), "the instrumentation saw no fsync"
        rig.stop(signal.SIGKILL)
        _cut_power(rig.state, durable, shadow)

    return cut


def _bucket(rig: DaemonRig) -> list[str]:
    return sorted(p.name for p in rig.bucket.glob("*.sealed"))


def test_after_a_power_cut_the_restart_notice_names_the_last_object_every_sink_took(
    rig: DaemonRig, tmp_path: Path
) -> None:
    cut_power = _ring_with_power_to_cut(rig, tmp_path)

    def all_taken() -> bool:
        status = rig.status()
        if status.get("clips") != 1 or status["clip"] is not None:
            return False
        sealed = status["objects_sealed"]
        queues = status["spool"]["sinks"].values()
        return all(q["pending"] == 0 for q in queues) and len(_bucket(rig)) == sealed

    wait_for(all_taken, 60, "every object of the clip in the bucket")
    result, _ = rig.verify()
    last = max(result.entries, key=lambda e: e.seq)
    cut_power()
    # The head record was never synced: it lost every head of the run.
    recorded = SequenceFile(rig.state).read_head()
    assert recorded is None or recorded.seq < last.seq, recorded
    # Every sink took every object: only the newest one's file is left in the spool.
    spooled = [p.name for p in (rig.state / "spool" / "objects").iterdir()]
    assert len(spooled) == 1 and spooled[0].endswith(_bucket(rig)[-1]), spooled

    rig.start()
    rig.wait_ready()
    assert rig.stop() == 0, rig.log_text()
    result, _ = rig.verify()
    assert result.ok, [str(f) for f in result.problems]
    [restart] = [
        e.contents.meta
        for e in result.entries
        if e.contents is not None and e.contents.meta.get("notice") == "restart"
    ]
    assert restart["previous"] == {"seq": last.seq, "hash": last.chain_hash.hex()}, restart
    assert restart["skipped"]["first"] == last.seq + 1


def test_a_power_cut_cannot_hide_the_deletion_of_what_was_uploaded_before_it(
    rig: DaemonRig, tmp_path: Path
) -> None:
    cut_power = _ring_with_power_to_cut(rig, tmp_path)
    wait_for(lambda: rig.status()["clips"] == 1 and rig.status()["clip"] is None, 30, "clip 1")
    assert rig.command("ring")["ok"]
    # The second ring's event and its pre-roll reached the bucket; then the power goes.
    wait_for(lambda: len(_rings(rig)) == 2, 30, "the second ring in the bucket")
    uploaded = {p.name for p in rig.bucket.glob("*.sealed")}
    cut_power()

    rig.start()
    rig.wait_ready()
    rig.wait_preroll()
    assert rig.command("ring")["ok"]
    wait_for(lambda: rig.status()["clips"] == 1 and rig.status()["clip"] is None, 30, "clip 3")
    assert rig.stop() == 0

    result, _ = rig.verify()
    assert result.ok, [str(f) for f in result.problems]
    assert len(_rings(rig)) == 3

    # Now the bucket deletes the second ring: uploaded seconds before the cut.
    second = max(_rings(rig)[:2])
    victims = sorted(name for name in uploaded if int(name.split("-")[1][:20]) >= second)
    assert victims
    for name in victims:
        (rig.bucket / name).unlink()
    result, _ = rig.verify()
    assert not result.ok, "deleting footage uploaded before a power cut went unnoticed"
    messages = " ".join(str(f) for f in result.problems)
    assert "missing" in messages or "hides" in messages, messages
