"""The daemon in a subprocess on the synthetic camera: clips, signals, crashes, secrecy."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import av
import pytest
from daemon_harness import FPS, POST_ROLL, PRE_ROLL, SEGMENT, DaemonRig, mp4_boxes, wait_for

from doorbell.daemon.control import SOCKET_NAME
from doorbell.phone.home import PhoneHome
from doorbell.sealing import KeyringStore, Kind, NotARecipient, Reader, Suite


def _ring_and_wait_for_clip(rig: DaemonRig) -> None:
    rig.wait_ready()
    rig.wait_preroll()
    reply = rig.command("ring")
    assert reply["triggered"] == "ring" and reply["clip"]
    wait_for(
        lambda: (s := rig.status()).get("clips") == 1 and s.get("clip") is None,
        60,
        "the clip to end",
    )


def test_ring_records_a_clip_with_its_pre_roll(rig: DaemonRig) -> None:
    rig.start()
    _ring_and_wait_for_clip(rig)
    assert rig.stop() == 0

    result, report = rig.export()
    assert result.ok, [str(f) for f in result.problems]
    assert report.skipped == []
    [clip] = report.clips
    assert clip.label == "ring"
    assert clip.pre_roll is not None and clip.pre_roll >= PRE_ROLL - SEGMENT
    expected = clip.pre_roll + POST_ROLL
    assert expected - SEGMENT <= clip.seconds <= expected + SEGMENT
    with av.open(str(clip.path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == round(clip.seconds * FPS)
    assert clip.snapshot is not None
    with av.open(str(clip.snapshot)) as container:
        assert next(container.decode(video=0)).width == 160
    # Pre-roll nobody claimed was never sealed: the chain is dense, with no gap to explain.
    seqs = sorted(entry.seq for entry in result.entries)
    assert seqs == list(range(len(seqs)))
    assert not any("announced" in f.message for f in result.findings)
    _assert_no_plaintext(rig, clip.path)


def _assert_no_plaintext(rig: DaemonRig, clip: Path) -> None:
    """No file the daemon could have written holds media: not state, bucket, log or temp."""
    media = clip.read_bytes()
    step = max(1, len(media) // 300)
    samples = [media[i : i + 32] for i in range(0, len(media) - 32, step)]
    assert not list(rig.tmp.iterdir()), "the daemon created temporary files"
    scanned = 0
    for path in rig.root.rglob("*"):
        if not path.is_file() or path.is_relative_to(rig.root / "clips"):
            continue
        content = path.read_bytes()
        scanned += 1
        assert not mp4_boxes(content), f"{path} holds MP4 boxes"
        for sample in samples:
            assert sample not in content, f"{path} holds decrypted media"
    assert scanned > 5


def test_sigterm_mid_clip_seals_a_complete_clip(rig: DaemonRig) -> None:
    rig.start()
    rig.wait_ready()
    rig.command("ring")
    segments = rig.status()["segments"]
    wait_for(lambda: rig.status()["segments"] >= segments + 1, 30, "a segment of the clip")
    assert rig.status()["clip"] is not None
    assert rig.stop(signal.SIGTERM) == 0

    result, report = rig.export()
    assert result.ok, [str(f) for f in result.problems]
    assert report.skipped == [], report.skipped
    [clip] = report.clips
    with av.open(str(clip.path)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 0
    assert "finishing the open clip" in rig.log_text()


def test_sigkill_mid_clip_then_restart_continues_the_chain(rig: DaemonRig) -> None:
    rig.start()
    rig.wait_ready()
    rig.command("ring")
    segments = rig.status()["segments"]
    wait_for(lambda: rig.status()["segments"] >= segments + 1, 30, "a segment of the clip")
    rig.stop(signal.SIGKILL)
    before = {p.name for p in rig.bucket.glob("*.sealed")}
    assert before

    rig.start()
    _ring_and_wait_for_clip(rig)
    assert rig.stop() == 0

    result, _ = rig.verify()
    assert result.ok, [str(f) for f in result.problems]
    seqs = [entry.seq for entry in result.entries]
    assert len(seqs) == len(set(seqs)), "a sequence number was reused"
    old = [e.seq for e in result.entries if e.name in before]
    new = [e for e in result.entries if e.name not in before]
    assert min(e.seq for e in new) > max(old)
    notices = [e for e in new if e.contents and e.contents.kind is Kind.NOTICE]
    restart = [e for e in notices if e.contents and e.contents.meta.get("notice") == "restart"]
    assert len(restart) == 1
    assert restart[0].contents is not None
    assert restart[0].contents.meta["previous"]["seq"] <= max(old)
    # The killed clip has no end marker; export says so and still exports what exists.
    _, report = rig.export()
    assert any("no end marker" in line for line in report.skipped)
    assert len(report.clips) == 2


def test_without_an_enrolled_phone_it_runs_but_records_nothing(tmp_path: Path) -> None:
    rig = DaemonRig(tmp_path, enrol=False)
    try:
        rig.start()
        rig.wait_ready()
        status = rig.status()
        assert status["recording_enabled"] is False
        rig.command("ring")
        wait_for(lambda: rig.status()["events"] == 1, 30, "the ring to be handled")
        assert rig.stop() == 0
    finally:
        rig.kill()
    assert not list(rig.bucket.glob("*"))
    assert "no phone is enrolled" in rig.log_text()


def test_a_phone_added_while_running_can_open_the_next_objects(rig: DaemonRig) -> None:
    rig.start()
    rig.wait_ready()
    late = PhoneHome(rig.root / "late-phone")
    identity = late.init(Suite.MLKEM768_X25519)
    with KeyringStore(rig.state).editing() as box:
        box[0] = box[0].add("late-phone", identity.public_key(), datetime.now(UTC))
    rig.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: "SIGHUP" in rig.log_text(), 30, "the reload to be logged")
    rig.command("ring")
    wait_for(lambda: rig.status()["objects_delivered"] >= 3, 30, "the event to be sealed")
    assert rig.stop() == 0
    result, source = rig.verify()
    reader = Reader([identity], [k.key for k in rig.home.trusted()])
    opened = []
    for entry in result.entries:
        try:
            opened.append(reader.open(source.read(entry.name)))
        except NotARecipient:
            continue
    kinds = {o.kind for o in opened}
    assert Kind.EVENT in kinds and Kind.KEYRING in kinds


def test_bad_control_requests_get_errors_and_the_daemon_keeps_running(rig: DaemonRig) -> None:
    rig.start()
    rig.wait_ready()
    path = rig.runtime / SOCKET_NAME
    for request in (b"not json\n", b'{"command": "explode"}\n', b"[1,2]\n", b"x" * 10000 + b"\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(request)
            reply = json.loads(sock.makefile("rb").readline())
        assert reply["ok"] is False and reply["error"]
    assert rig.status()["ready"] is True
    assert rig.stop() == 0


def test_systemd_notify_and_journal_priorities(rig: DaemonRig) -> None:
    notify = rig.root / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(30)
        rig.start(
            env={
                "NOTIFY_SOCKET": str(notify),
                "WATCHDOG_USEC": "1000000",
                "JOURNAL_STREAM": "8:1234",
            }
        )
        messages: list[str] = []

        def received(text: str) -> bool:
            while not any(text in m for m in messages):
                messages.append(sock.recv(4096).decode())
            return True

        assert received("READY=1")
        assert received("WATCHDOG=1")
        rig.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert received("STOPPING=1")
        assert rig.process.wait(timeout=60) == 0  # type: ignore[union-attr]
    lines = [line for line in rig.log_text().splitlines() if line]
    assert lines and all(line[0] == "<" and line[2] == ">" for line in lines), lines[:5]
    assert "<6>doorbell.daemon.service: camera delivers frames: ready" in lines
    assert any(line.startswith("<7>") for line in lines)  # debug from the segmenter


def _doorbell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doorbell", *args], capture_output=True, text=True, timeout=120
    )


def test_status_ring_and_doctor_from_the_command_line(rig: DaemonRig) -> None:
    down = _doorbell("status", "-c", str(rig.config))
    assert down.returncode == 2 and "is doorbell running" in down.stderr
    assert "Traceback" not in down.stderr
    rig.start()
    rig.wait_ready()
    human = _doorbell("status", "-c", str(rig.config))
    assert human.returncode == 0 and "recording  yes" in human.stdout
    machine = json.loads(_doorbell("status", "--json", "-c", str(rig.config)).stdout)
    assert machine["ready"] is True and machine["keyring"]["phones"] == ["test-phone"]
    rung = _doorbell("ring", "-c", str(rig.config))
    assert rung.returncode == 0 and "recording clip" in rung.stdout
    doctor = _doorbell("doctor", "-c", str(rig.config))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    names = ("config", "state", "phones", "aes", "sealing", "camera", "gpio", "clock", "space")
    for name in (*names, "s3", "mqtt"):
        assert any(line.split()[1:2] == [name] for line in doctor.stdout.splitlines()), name
    assert rig.stop() == 0


def test_a_broken_keyring_edit_while_running_does_not_stop_recording(rig: DaemonRig) -> None:
    rig.start()
    rig.wait_ready()
    (rig.state / "keyring.json").write_text("{ half an edit")
    rig.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    rig.command("ring")
    wait_for(lambda: rig.status()["events"] == 1, 30, "the ring")
    assert rig.status()["ready"] is True
    assert rig.stop() == 0
    assert "edited file is unusable" in rig.log_text()
    result, _ = rig.verify()
    assert result.ok, [str(f) for f in result.problems]
    opened = [e for e in result.entries if e.contents and e.contents.kind is Kind.EVENT]
    assert len(opened) == 1  # sealed to the last good keyring: the phone still opens it


def test_a_storm_of_signals_then_sigterm_stops_cleanly(tmp_path: Path) -> None:
    # Many frames a second keep the main loop inside its queue when the signals land.
    rig = DaemonRig(tmp_path, extra={"camera": {"fps": 60}})
    try:
        rig.start()
        rig.wait_ready()
        assert rig.process is not None
        for _ in range(150):
            for _ in range(2000):
                os.kill(rig.process.pid, signal.SIGHUP)
            # Under queue.Queue the handler could deadlock the main loop inside get().
            assert rig.status().get("ready") is True, "the daemon stopped answering"
        assert rig.stop(timeout=30) == 0
        assert "SIGTERM: finishing the open clip and stopping" in rig.log_text()
    finally:
        rig.kill()


@pytest.mark.parametrize("events", [None, False, True], ids=["default", "off", "on"])
def test_rings_reach_the_log_only_when_asked(tmp_path: Path, events: bool | None) -> None:
    extra = {} if events is None else {"logging": {"events": events}}
    rig = DaemonRig(tmp_path, extra=extra)
    try:
        rig.start()
        rig.wait_ready()
        rig.command("ring")
        wait_for(lambda: rig.status().get("events") == 1, 30, "the ring")
        assert rig.stop() == 0
    finally:
        rig.kill()
    lines = rig.log_text().splitlines()
    # Any line that says a ring happened, or names the clip it started.
    mentions = [line for line in lines if re.search(r"\bring\b|\bclip [0-9a-f]{8}\b", line)]
    if events:
        assert any(line.endswith("ring (control socket)") for line in mentions), lines
        assert any(re.search(r"clip [0-9a-f]{8} started by ring", line) for line in mentions)
    else:
        assert mentions == [], mentions
