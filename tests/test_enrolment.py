"""Enrolment over the network (docs/PROTOCOL.md), end to end: the real daemon, a real
Mosquitto, ``doorbell enroll`` and ``doorbell-phone enroll`` as the owner and the new
phone run them, and hostile messages published on the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonRig, wait_for

from doorbell.phone.home import PhoneHome
from doorbell.sealing import DeviceSigningKey, KeyringStore, Kind, Role, Suite, recovery
from doorbell.sealing import enrolment as proto
from doorbell.sealing import format as fmt

pytest.register_assert_rewrite("mqtt_fixture", "enrol_harness")
from enrol_harness import broker_rig, enroll, finish, new_phone, started  # noqa: E402
from mqtt_fixture import Listener, Mosquitto  # noqa: E402

pytest_plugins = ["mqtt_fixture"]


@pytest.fixture
def doorbell(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[DaemonRig]:
    yield from started(broker_rig(tmp_path / "doorbell", mosquitto))


def _ring_and_wait(rig: DaemonRig) -> None:
    rig.wait_preroll()
    before = rig.status().get("clips", 0)
    rig.command("ring")
    wait_for(
        lambda: (s := rig.status()).get("clips") == before + 1 and s.get("clip") is None,
        60,
        "the clip to end",
    )


def test_a_phone_joins_with_the_link_and_reads_the_next_ring(
    doorbell: DaemonRig, tmp_path: Path
) -> None:
    owner, said = enroll(doorbell, "--name", "alice-phone")
    link = said.wait_for("link")["link"]
    assert link.startswith("doorbell:enroll?v=1&")
    assert len(link) < 300
    home = tmp_path / "alice"
    phone, shown = new_phone(home, link, "--name", "whatever-the-phone-says")
    phone_code = shown.wait_for("code")["code"]
    doorbell_code = said.wait_for("code")
    assert doorbell_code["code"] == phone_code
    assert doorbell_code["phone"] == "alice-phone"  # the owner's name wins
    assert owner.stdin is not None
    owner.stdin.write("yes\n")
    owner.stdin.flush()
    assert said.wait_for("enrolled")["enrolled"] == "alice-phone"
    assert shown.wait_for("enrolled")["enrolled"] == "alice-phone"
    assert not any("words" in line for line in shown.lines)  # a member makes no recovery key
    assert finish(owner) == 0 and finish(phone) == 0

    keyring = KeyringStore(doorbell.state).load()
    [alice] = [r for r in keyring.recipients if r.name == "alice-phone"]
    identity = PhoneHome(home).public_identity()
    assert (alice.key, alice.signing, alice.role) == (identity.key, identity.signing, Role.MEMBER)
    # No trust step: the phone pinned the doorbell from the link.
    reader = PhoneHome(home).reader()
    _ring_and_wait(doorbell)
    opened = [reader.open(p.read_bytes()) for p in sorted(doorbell.bucket.glob("*.sealed"))
              if reader.can_open(_envelope(p))]  # fmt: skip
    assert any(o.kind is Kind.EVENT and o.meta.get("type") == "ring" for o in opened)
    assert any(o.kind is Kind.SEGMENT for o in opened)
    # The stream began before the phone joined: its init segment was sealed again for it,
    # so the clip plays.
    from doorbell.phone.chain import verify_source
    from doorbell.phone.export import export_clips
    from doorbell.phone.objects import DirectorySource

    source = DirectorySource(doorbell.bucket)
    result = verify_source(source, reader)
    report = export_clips(source, reader, result, tmp_path / "clips")
    assert len(report.clips) == 1 and not report.skipped, report.skipped
    # The secret never reached the log.
    secret = proto.Link.parse(link).secret
    assert proto._b32(secret) not in doorbell.log_text()


def _envelope(path: Path) -> Any:
    return fmt.parse_envelope(path.read_bytes())


def test_a_classical_phone_beside_hybrid_ones_is_refused_before_any_code(
    doorbell: DaemonRig, tmp_path: Path
) -> None:
    before = (doorbell.state / "keyring.json").read_bytes()
    owner, said = enroll(doorbell)
    link = said.wait_for("link")["link"]
    PhoneHome(tmp_path / "old").init(Suite.X25519)
    phone, shown = new_phone(tmp_path / "old", link, "--name", "old-tablet")
    reason = shown.wait_for("refused")["refused"]
    assert reason.startswith("'old-tablet' uses x25519, which a quantum computer can break")
    assert said.wait_for("refused")["refused"] == reason
    assert "code" not in str(shown.lines) and finish(owner) == 1 and finish(phone) == 1
    assert (doorbell.state / "keyring.json").read_bytes() == before


def test_refusing_the_code_enrols_nobody(doorbell: DaemonRig, tmp_path: Path) -> None:
    before = (doorbell.state / "keyring.json").read_bytes()
    owner, said = enroll(doorbell)
    link = said.wait_for("link")["link"]
    phone, shown = new_phone(tmp_path / "eve", link, "--name", "eve")
    shown.wait_for("code")
    said.wait_for("code")
    assert owner.stdin is not None
    owner.stdin.write("no\n")
    owner.stdin.flush()
    assert said.wait_for("refused")["refused"] == "cancelled at the doorbell"
    assert shown.wait_for("refused")["refused"] == "cancelled at the doorbell"
    assert finish(owner) == 1 and finish(phone) == 1
    assert (doorbell.state / "keyring.json").read_bytes() == before
    assert not (tmp_path / "eve" / "trusted.json").exists()


def test_a_second_phone_with_the_same_link_is_refused(doorbell: DaemonRig, tmp_path: Path) -> None:
    owner, said = enroll(doorbell)
    link = said.wait_for("link")["link"]
    first, first_said = new_phone(tmp_path / "first", link, "--name", "first")
    first_said.wait_for("code")
    second, second_said = new_phone(tmp_path / "second", link, "--name", "second")
    assert second_said.wait_for("refused")["refused"] == "this link was used already"
    assert finish(second) == 1
    assert owner.stdin is not None
    owner.stdin.write("yes\n")
    owner.stdin.flush()
    assert first_said.wait_for("enrolled")["enrolled"] == "first"
    assert finish(owner) == 0 and finish(first) == 0
    names = [r.name for r in KeyringStore(doorbell.state).load().recipients]
    assert names == ["test-phone", "first"]


def test_a_used_link_does_not_work_again(doorbell: DaemonRig, tmp_path: Path) -> None:
    owner, said = enroll(doorbell)
    link = said.wait_for("link")["link"]
    phone, shown = new_phone(tmp_path / "a", link, "--name", "a")
    shown.wait_for("code")
    assert owner.stdin is not None
    owner.stdin.write("yes\n")
    owner.stdin.flush()
    assert finish(owner) == 0 and finish(phone) == 0
    epoch = KeyringStore(doorbell.state).load().epoch
    # The window closed with the enrolment: a new phone with the same link hears nothing
    # and gives up when the link expires (shortened here by the test's own window).
    later, _ = new_phone(tmp_path / "b", link, "--name", "b")
    wait_for(lambda: "a message for no open window" in doorbell.log_text(), 10, "the hello")
    later.kill()
    later.wait()
    assert KeyringStore(doorbell.state).load().epoch == epoch


def test_wrong_secret_bad_and_flooding_messages_change_nothing(
    doorbell: DaemonRig, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Messages under a wrong secret, garbage, and a valid hello signed by another key go
    through the real broker to the window's topic: each is refused, nothing is enrolled,
    and after five failures the window closes for good."""
    before = (doorbell.state / "keyring.json").read_bytes()
    owner, said = enroll(doorbell)
    link = proto.Link.parse(said.wait_for("link")["link"])
    up = link.topic(proto.PHONE_LEAF)
    intruder = Listener(mosquitto, link.topic(proto.DOORBELL_LEAF))
    try:
        wrong_key = proto.WindowKeys.derive(os.urandom(16), link.device.device_id, link.expires)
        intruder.publish(up, proto.seal_message(wrong_key.phone_to_doorbell, up, {"type": "hello"}))
        intruder.publish(up, b"\x00" * 40)
        intruder.publish(up, os.urandom(20_000))  # larger than any enrolment message
        home = PhoneHome(tmp_path / "mallory")
        home.init(Suite.MLKEM768_X25519)
        hello = proto.Hello.make(link, home.public_identity(), home.signing_key(), "mallory")
        forged = {**hello.to_message(), "name": "someone-else"}  # the signature no longer fits
        intruder.publish(up, proto.seal_message(link.keys.phone_to_doorbell, up, forged))
        [answer] = intruder.wait_on(link.topic(proto.DOORBELL_LEAF), 1, 10)
        refused = proto.open_message(
            link.keys.doorbell_to_phone, link.topic(proto.DOORBELL_LEAF), answer.payload,
            proto.MAX_ANSWER,
        )  # fmt: skip
        assert refused["type"] == "refused"
        assert "not signed by the phone's signing key" in refused["reason"]
        # Failures so far: the wrong secret, the zeros, the forged hello (the oversized
        # message never reached the window: the link drops it by size). Two more close it.
        for _ in range(2):
            intruder.publish(up, proto.seal_message(wrong_key.phone_to_doorbell, up, {"type": "x"}))
        assert said.wait_for("refused")["refused"].startswith("too many failed attempts")
        assert finish(owner) == 1
        # Closed for good: even the real secret gets nowhere now.
        intruder.publish(
            up, proto.seal_message(link.keys.phone_to_doorbell, up, hello.to_message())
        )
        wait_for(lambda: "too many failed attempts" in doorbell.log_text(), 5, "the log")
    finally:
        intruder.close()
    assert (doorbell.state / "keyring.json").read_bytes() == before
    assert doorbell.status()["ready"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda link: link.replace("doorbell:enroll", "https://example"), "not an enrolment link"),
        (lambda link: link.replace("v=1", "v=2"), "version '2'"),
        (lambda link: link[: link.index("&s=")], "lacks s, e: it is cut short"),
        (lambda link: link.replace("&p=", "&p=99999"), "outside 1..65535"),
        (lambda link: link + "&s=aaaa", "repeats a field"),
        (lambda link: link.replace("&t=", "&t=%23"), "topic prefix"),
    ],
    ids=["scheme", "version", "cut", "port", "repeated", "prefix"],
)
def test_a_bad_link_is_a_clear_error(tmp_path: Path, change: Any, message: str) -> None:
    link = proto.Link.new(
        DeviceSigningKey.generate().public_key, "127.0.0.1", 1883, False, "doorbell", 2**33
    ).to_string()
    run = subprocess.run(
        [sys.executable, "-m", "doorbell.phone", "--home", str(tmp_path / "p"), "enroll",
         change(link)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "p").exists()


def test_an_expired_link_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    link = proto.Link.new(
        DeviceSigningKey.generate().public_key, "127.0.0.1", 1, False, "doorbell", 1_000_000
    )
    run = subprocess.run(
        [sys.executable, "-m", "doorbell.phone", "--home", str(tmp_path / "p"), "enroll",
         link.to_string(), "--json"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert json.loads(run.stdout) == {"refused": "the link expired"}


def test_a_press_of_the_doorbell_button_confirms(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """``--confirm button``: the real daemon's button (gpiozero's MockFactory in its own
    process) confirms the code, and that press rings nobody."""
    mqtt = {"enabled": True, "host": mosquitto.host, "port": mosquitto.port, "keepalive": 5}
    rig = DaemonRig(tmp_path / "doorbell", suite=Suite.MLKEM768_X25519, extra={"mqtt": mqtt})
    presses = tmp_path / "presses"
    os.mkfifo(presses)
    harness = str(Path(__file__).with_name("button_daemon.py"))
    rig.start(entry=[harness, str(presses)])
    hand = None
    try:
        rig.wait_ready()
        wait_for(lambda: rig.status()["mqtt"]["connected"], 20, "the daemon's MQTT link")
        hand = open(presses, "w")  # noqa: SIM115
        owner, said = enroll(rig, "--confirm", "button", "--name", "bob")
        link = said.wait_for("link")["link"]
        phone, shown = new_phone(tmp_path / "bob", link)
        assert shown.wait_for("code")["code"] == said.wait_for("code")["code"]
        events = rig.status()["events"]
        hand.write("press\n")
        hand.flush()
        assert said.wait_for("enrolled")["enrolled"] == "bob"
        assert shown.wait_for("enrolled")["enrolled"] == "bob"
        assert finish(owner) == 0 and finish(phone) == 0
        assert rig.status()["events"] == events  # the press rang nobody, recorded nothing
        assert rig.status()["clip"] is None
        # The next press is a ring again.
        hand.write("press\n")
        hand.flush()
        wait_for(lambda: rig.status()["events"] == events + 1, 10, "the next press to ring")
    finally:
        if hand is not None:
            hand.close()
        rig.kill()


def test_the_first_phone_joins_a_doorbell_that_records_nothing_yet(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A doorbell with no phone seals nothing, not even its stream's init segment; the
    first phone, enrolled over the network, becomes the owner and its first clip plays."""
    from doorbell.phone.chain import verify_source
    from doorbell.phone.export import export_clips
    from doorbell.phone.objects import DirectorySource

    mqtt = {"enabled": True, "host": mosquitto.host, "port": mosquitto.port, "keepalive": 5}
    rig = DaemonRig(tmp_path / "doorbell", enrol=False, extra={"mqtt": mqtt})
    rig.start()
    try:
        rig.wait_ready()
        wait_for(lambda: rig.status()["mqtt"]["connected"], 20, "the daemon's MQTT link")
        assert not list(rig.bucket.glob("*.sealed"))
        owner, said = enroll(rig)
        phone, shown = new_phone(tmp_path / "first", said.wait_for("link")["link"], "--name", "me")
        shown.wait_for("code")
        assert owner.stdin is not None
        owner.stdin.write("yes\n")
        owner.stdin.flush()
        assert shown.wait_for("enrolled") == {
            "enrolled": "me",
            "role": "owner",
            "device": shown.wait_for("enrolled")["device"],
        }
        assert finish(owner) == 0 and finish(phone) == 0
        # The first owner's phone made the recovery key: its words shown once, before
        # the end, and the key enrolled as the doorbell's recovery key.
        words = shown.wait_for("words")
        keys = [next(iter(line)) for line in shown.lines]
        assert keys.index("words") < keys.index("enrolled")
        paper = recovery.RecoveryKey.from_words(" ".join(words["words"]))
        [listed] = [r for r in KeyringStore(rig.state).load().recipients if r.role is Role.RECOVERY]
        assert (listed.key, listed.signing) == (paper.identity.key, paper.identity.signing)
        for path in (tmp_path / "first").iterdir():
            assert words["words"][0] + " " + words["words"][1] not in path.read_text()
        _ring_and_wait(rig)
        assert rig.stop() == 0
    finally:
        rig.kill()
    home = PhoneHome(tmp_path / "first")
    source = DirectorySource(rig.bucket)
    result = verify_source(source, home.reader())
    assert result.ok, [f.message for f in result.problems]
    report = export_clips(source, home.reader(), result, tmp_path / "clips")
    assert len(report.clips) == 1 and not report.skipped, report.skipped


def test_a_replayed_hello_a_malformed_key_and_a_taken_name(
    doorbell: DaemonRig, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Through the real broker, under the real secret: the same hello twice is answered
    once; a hello whose identity is malformed, or whose name is taken, is refused."""
    before = (doorbell.state / "keyring.json").read_bytes()
    home = PhoneHome(tmp_path / "p")
    home.init(Suite.MLKEM768_X25519)

    def window() -> tuple[Any, proto.Link, Listener]:
        owner, said = enroll(doorbell)
        link = proto.Link.parse(said.wait_for("link")["link"])
        return owner, link, Listener(mosquitto, link.topic(proto.DOORBELL_LEAF))

    def answers(link: proto.Link, listener: Listener, count: int) -> list[dict[str, Any]]:
        down = link.topic(proto.DOORBELL_LEAF)
        got = listener.wait_on(down, count, 10)
        key = link.keys.doorbell_to_phone
        return [proto.open_message(key, down, m.payload, proto.MAX_ANSWER) for m in got]

    owner, link, listener = window()
    up = link.topic(proto.PHONE_LEAF)
    try:
        hello = proto.Hello.make(link, home.public_identity(), home.signing_key(), "new-one")
        sealed = proto.seal_message(link.keys.phone_to_doorbell, up, hello.to_message())
        listener.publish(up, sealed)
        listener.publish(up, sealed)  # the same bytes again: a replay
        [code] = answers(link, listener, 1)
        assert code["type"] == "code"
        wait_for(lambda: "a replayed hello, ignored" in doorbell.log_text(), 10, "the replay")
        assert len(listener.on(link.topic(proto.DOORBELL_LEAF))) == 1
    finally:
        listener.close()
        owner.kill()
        owner.wait()

    owner, link, listener = window()
    up = link.topic(proto.PHONE_LEAF)
    try:
        broken = {**hello.to_message(), "identity": "dbid-mlkem768x25519-aaaa"}
        listener.publish(up, proto.seal_message(link.keys.phone_to_doorbell, up, broken))
        [refused] = answers(link, listener, 1)
        assert refused["type"] == "refused"
        assert (
            "the phone's identity: phone identity (mlkem768-x25519) is truncated"
            in (refused["reason"])
        )
        taken = proto.Hello.make(link, home.public_identity(), home.signing_key(), "test-phone")
        listener.publish(
            up, proto.seal_message(link.keys.phone_to_doorbell, up, taken.to_message())
        )
        refusals = answers(link, listener, 2)
        assert refusals[1]["reason"] == (
            "a phone named 'test-phone' is enrolled already; choose another name"
        )
    finally:
        listener.close()
        owner.kill()
        owner.wait()
    assert (doorbell.state / "keyring.json").read_bytes() == before
