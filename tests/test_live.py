"""Live view end to end (docs/FORMAT.md section 11): the real daemon, a real Mosquitto,
``doorbell-phone live`` writing a fragmented MP4 that decodes; refusals; injected
fragments; a session that ends by itself; a ring during live view."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from daemon_harness import DaemonRig, wait_for

from doorbell.phone.home import PhoneHome
from doorbell.phone.manage import Access, Remote
from doorbell.sealing import PhoneSigningKey, live, load_device_key
from doorbell.sealing import commands as proto

pytest.register_assert_rewrite("mqtt_fixture", "enrol_harness")
from enrol_harness import join, owned_doorbell, phone_command  # noqa: E402
from mqtt_fixture import Listener, Mosquitto  # noqa: E402

pytest_plugins = ["mqtt_fixture"]


@pytest.fixture
def doorbell(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[DaemonRig]:
    """A doorbell whose first phone, ``owner``, joined over the network."""
    for running in owned_doorbell(tmp_path, mosquitto):
        running.wait_preroll()
        yield running


def _watch(home: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "--home", str(home), "live", "--json",
         *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _summary(process: subprocess.Popen[str], where: str = "stdout") -> dict[str, object]:
    out, err = process.communicate(timeout=60)
    text = out if where == "stdout" else err
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, (out, err)
    summary = lines[-1]["live"]
    assert isinstance(summary, dict)
    return summary


def _decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_a_phone_watches_live_and_the_file_plays(doorbell: DaemonRig, tmp_path: Path) -> None:
    out = tmp_path / "live.mp4"
    watching = _watch(tmp_path / "owner", "--out", str(out), "--seconds", "3", "--stats")
    summary = _summary(watching)
    assert watching.returncode == 0
    frames = _decode(out)
    # ffmpeg itself, as a player would, reads it without a single error.
    check = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0 and check.stderr == "", check.stderr
    # 3 s of the 15 fps test camera, from the GOP's keyframe on.
    assert len(frames) >= 25 and summary["frames"] == len(frames)
    assert summary["rejected"] == {} and summary["first_frame_s"] < 3
    assert 0 < summary["latency_ms_p50"] <= summary["latency_ms_p99"] < 2000  # type: ignore[operator]
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    wait_for(lambda: doorbell.status()["live_sessions"] == 0, 10, "the session to end")


def test_the_video_goes_to_stdout_for_a_player(doorbell: DaemonRig, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "doorbell.phone", "--home", str(tmp_path / "owner"), "live",
         "--out", "-", "--seconds", "2"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    piped = tmp_path / "piped.mp4"
    piped.write_bytes(run.stdout)
    assert len(_decode(piped)) >= 15
    assert b"live:" in run.stderr


def test_strangers_and_removed_phones_are_refused(
    doorbell: DaemonRig, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # A phone invited, then removed, asks to watch.
    join(doorbell, tmp_path / "bob", "--name", "bob")
    code, _, _ = phone_command(tmp_path / "owner", "revoke", "bob", "--json")
    assert code == 0
    watching = _watch(tmp_path / "bob", "--seconds", "2")
    out, err = watching.communicate(timeout=60)
    assert watching.returncode == 1
    assert out == ""  # no video: the refusal goes where messages go with video on stdout
    assert json.loads(err) == {
        "refused": "refused: the signing key is not enrolled on this doorbell"
    }
    # A key the doorbell never saw.
    device = load_device_key(doorbell.state)[0].public_key
    prefix = f"doorbell/{device.device_id.hex()[:16]}"
    listener = Listener(mosquitto, f"{prefix}/answer/#")
    try:
        payload, nonce = proto.sign_command(
            PhoneSigningKey.generate(), device.device_id, "live", {}, time.time()
        )
        listener.publish(f"{prefix}/command", payload)
        [answer] = listener.wait_on(f"{prefix}/answer/{nonce.hex()}", 1, 10)
        owner = PhoneHome(tmp_path / "owner").identity()
        body = proto.open_answer(answer.payload, device, nonce, owner)
        assert body["reason"] == "refused: the signing key is not enrolled on this doorbell"
    finally:
        listener.close()
    assert doorbell.status()["live_sessions"] == 0


def test_fragments_injected_on_the_topic_are_rejected_and_counted(
    doorbell: DaemonRig, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Anyone on the broker sees the live topic: what they publish there (garbage, and
    real fragments of another session, signed by the doorbell) is refused, never shown."""
    join(doorbell, tmp_path / "eve", "--name", "eve")
    device = load_device_key(doorbell.state)[0].public_key
    prefix = f"doorbell/{device.device_id.hex()[:16]}"
    spy = Listener(mosquitto, f"{prefix}/live/#")
    try:
        out = tmp_path / "owner.mp4"
        watching = _watch(tmp_path / "owner", "--out", str(out), "--seconds", "4")
        spy.wait("the owner's fragments", bool, 20)
        owners_topic = spy.messages[0].topic
        # Eve, an enrolled member, opens her own session and replays its fragments and
        # garbage onto the owner's topic.
        eve = PhoneHome(tmp_path / "eve")
        with Remote(eve, Access(), max_payload=live.MAX_FRAGMENT) as remote:
            nonce = os.urandom(16)
            topic = f"{remote.prefix}/live/{nonce.hex()}"
            remote.subscribe(topic)
            remote.call("live", {}, nonce=nonce)
            deadline = time.monotonic() + 10
            injected = 0
            while injected < 5 and time.monotonic() < deadline:
                received = remote.next_message(deadline)
                if received is not None and received[0] == topic:
                    spy.publish(owners_topic, received[1])
                    injected += 1
            spy.publish(owners_topic, b"\x00" * 100)
        summary = _summary(watching)
    finally:
        spy.close()
    assert watching.returncode == 0
    assert summary["rejected"] == {"foreign": 5, "malformed": 1}
    assert len(_decode(out)) == summary["frames"]


def test_a_session_without_renewals_ends_by_itself_and_says_so(
    doorbell: DaemonRig, tmp_path: Path
) -> None:
    home = PhoneHome(tmp_path / "owner")
    with Remote(home, Access(), max_payload=live.MAX_FRAGMENT) as remote:
        nonce = os.urandom(16)
        topic = f"{remote.prefix}/live/{nonce.hex()}"
        remote.subscribe(topic)
        answer = remote.call("live", {}, nonce=nonce)
        session = live.open_session(
            base64.b64decode(answer["session_object"]), remote.device, home.identity()
        )
        assert doorbell.status()["live_sessions"] == 1
        started = time.monotonic()
        ended = None
        while ended is None and time.monotonic() - started < 20:
            received = remote.next_message(time.monotonic() + 1)
            if received is not None and received[0] == topic:
                fragment = session.open(received[1])
                if fragment.end:
                    ended = time.monotonic() - started
    assert ended is not None and 4 < ended < 8  # five seconds without a renewal
    assert doorbell.status()["live_sessions"] == 0
    assert "no renewal from the viewer" in doorbell.log_text()


def test_a_ring_during_live_view_still_makes_its_clip(doorbell: DaemonRig, tmp_path: Path) -> None:
    watching = _watch(tmp_path / "owner", "--out", str(tmp_path / "l.mp4"), "--seconds", "8")
    wait_for(lambda: doorbell.status()["live_sessions"] == 1, 20, "live view")
    doorbell.command("ring")
    wait_for(lambda: (s := doorbell.status())["clips"] == 1 and s["clip"] is None, 60, "the clip")
    summary = _summary(watching)
    assert watching.returncode == 0 and summary["frames"] > 0
    result, _ = doorbell.verify()
    assert result.ok


def test_a_player_that_goes_away_ends_the_session_cleanly(
    doorbell: DaemonRig, tmp_path: Path
) -> None:
    """`doorbell-phone live --out - | player`: the player closing is the end, no traceback."""
    watching = subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "--home", str(tmp_path / "owner"), "live",
         "--out", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert watching.stdout is not None
    assert watching.stdout.read(1000)  # the player reads a little, then quits
    watching.stdout.close()
    _, err = watching.communicate(timeout=30)
    assert b"the player stopped reading" in err and b"Traceback" not in err
    wait_for(lambda: doorbell.status()["live_sessions"] == 0, 10, "the session to end")


def test_a_flood_of_live_requests_gets_at_most_max_viewers_sessions(
    doorbell: DaemonRig, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """An owner's phone (or whoever holds its key) sends 60 live requests at once: the
    doorbell starts at most live.max_viewers sessions and refuses or drops the rest."""
    home = PhoneHome(tmp_path / "owner")
    device = load_device_key(doorbell.state)[0].public_key
    prefix = f"doorbell/{device.device_id.hex()[:16]}"
    listener = Listener(mosquitto, f"{prefix}/answer/#")
    try:
        nonces = []
        for _ in range(60):
            payload, nonce = proto.sign_command(
                home.signing_key(), device.device_id, "live", {}, time.time()
            )
            listener.client.publish(f"{prefix}/command", payload, qos=1)
            nonces.append(nonce)
        # 30 a signer are answered in 10 s (the rest dropped): 4 sessions, 26 refusals.
        listener.wait("the answers", lambda ms: len(ms) >= 30, 20)
        answers = [
            proto.open_answer(m.payload, device, bytes.fromhex(m.topic.rsplit("/", 1)[1]),
                              home.identity())
            for m in listener.messages
        ]  # fmt: skip
    finally:
        listener.close()
    started = [a for a in answers if a["ok"]]
    refused = [a for a in answers if not a["ok"]]
    assert len(started) == 4  # live.max_viewers, the default
    assert len(refused) == 26
    assert all("the most live.max_viewers allows" in str(a["reason"]) for a in refused)
    assert doorbell.status()["live_sessions"] == 4
    # Nobody renews them: they end by themselves.
    wait_for(lambda: doorbell.status()["live_sessions"] == 0, 15, "the sessions to end")
