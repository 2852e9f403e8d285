"""Owner phones manage the doorbell without SSH (docs/PROTOCOL.md sections 7 and 8):
invite, revoke, the recovery key, and every refusal, through the real daemon and a real
Mosquitto; hostile commands are published on the broker like anyone could."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonRig, wait_for

from doorbell.phone.chain import verify_source
from doorbell.phone.export import export_clips
from doorbell.phone.home import PhoneHome
from doorbell.phone.objects import DirectorySource
from doorbell.sealing import KeyringStore, PhoneSigningKey, Role, load_device_key
from doorbell.sealing import commands as proto

pytest.register_assert_rewrite("mqtt_fixture", "enrol_harness")
from enrol_harness import (  # noqa: E402
    Lines,
    finish,
    new_phone,
    owned_doorbell,
    phone_command,
)
from mqtt_fixture import Listener, Mosquitto  # noqa: E402

pytest_plugins = ["mqtt_fixture"]


@pytest.fixture
def doorbell(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[DaemonRig]:
    """A doorbell whose first phone, ``owner``, joined over the network."""
    yield from owned_doorbell(tmp_path, mosquitto)


def _invite(owner: Path, guest: Path, *options: str) -> tuple[int, list[dict[str, object]]]:
    """``doorbell-phone invite`` on the owner phone, the new phone enrolling with its link,
    and the owner typing yes once the code shows."""
    inviting = subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "--home", str(owner), "invite", "--json",
         *options],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert inviting.stdout is not None and inviting.stdin is not None
    said = Lines(inviting.stdout)
    link = said.wait_for("link")["link"]
    joining, shown = new_phone(guest, link)
    phone_code = shown.wait_for("code")["code"]
    assert said.wait_for("code")["code"] == phone_code
    inviting.stdin.write("yes\n")
    inviting.stdin.flush()
    shown.wait_for("enrolled")
    code = finish(inviting)
    assert finish(joining) == 0
    said.wait_for("eof")  # every line read
    return code, said.lines


def test_an_owner_invites_a_guest_then_revokes_it(doorbell: DaemonRig, tmp_path: Path) -> None:
    owner, guest = tmp_path / "owner", tmp_path / "carol"
    code, lines = _invite(owner, guest, "--role", "guest", "--expires", "2h", "--name", "carol")
    assert code == 0
    assert [line for line in lines if "eof" not in line][-1] == {"enrolled": "carol"}
    keyring = KeyringStore(doorbell.state).load()
    carol = keyring.get("carol")
    assert carol is not None and carol.role is Role.GUEST and carol.expires is not None
    assert abs((carol.expires - carol.added).total_seconds() - 7200) <= 2
    assert keyring.get("owner") is not None and keyring.get("owner").role is Role.OWNER  # type: ignore[union-attr]
    # The guest may not manage the doorbell: signed, enrolled, and refused.
    code, lines, _ = phone_command(guest, "revoke", "owner", "--json")
    assert code == 1
    assert lines == [{"refused": "refused: 'carol' is a guest; only an owner may revoke"}]
    epoch = KeyringStore(doorbell.state).load().epoch
    code, lines, _ = phone_command(owner, "revoke", "carol", "--json")
    assert (code, lines) == (0, [{"revoked": "carol", "epoch": epoch + 1}])
    assert KeyringStore(doorbell.state).load().get("carol") is None
    # The only owner cannot revoke itself away.
    code, lines, _ = phone_command(owner, "revoke", "owner", "--json")
    assert code == 1 and "is the only owner" in str(lines)
    # A revoked phone's commands are refused: its key is no longer enrolled.
    code, lines, _ = phone_command(guest, "revoke", "owner", "--json")
    assert code == 1 and "not enrolled on this doorbell" in str(lines)


def _device_id(state: Path) -> str:
    return load_device_key(state)[0].public_key.device_id.hex()


def test_unsigned_forged_foreign_expired_and_replayed_commands_change_nothing(
    doorbell: DaemonRig, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    owner = PhoneHome(tmp_path / "owner")
    device_id = bytes.fromhex(_device_id(doorbell.state))
    prefix = f"doorbell/{device_id.hex()[:16]}"
    listener = Listener(mosquitto, f"{prefix}/answer/#")
    before = (doorbell.state / "keyring.json").read_bytes()
    device = load_device_key(doorbell.state)[0].public_key
    identity = owner.identity()

    def send(payload: bytes, nonce: bytes) -> dict[str, object]:
        listener.publish(f"{prefix}/command", payload)
        [answer] = listener.wait_on(f"{prefix}/answer/{nonce.hex()}", 1, 10)
        return proto.open_answer(answer.payload, device, nonce, identity)

    try:
        now = time.time()
        args = {"name": "owner"}
        # Signed by a key the doorbell does not know.
        stranger = PhoneSigningKey.generate()
        payload, nonce = proto.sign_command(stranger, device_id, "revoke", args, now)
        assert send(payload, nonce)["reason"] == (
            "refused: the signing key is not enrolled on this doorbell"
        )
        # The owner's command with its signature broken.
        payload, nonce = proto.sign_command(owner.signing_key(), device_id, "revoke", args, now)
        outer = json.loads(payload)
        outer["signature"] = proto._b64(bytes(64))
        assert "does not verify" in str(send(json.dumps(outer).encode(), nonce)["reason"])
        # For another doorbell.
        payload, nonce = proto.sign_command(
            owner.signing_key(), os.urandom(32), "revoke", args, now
        )
        assert "another doorbell" in str(send(payload, nonce)["reason"])
        # From ten minutes ago.
        payload, nonce = proto.sign_command(
            owner.signing_key(), device_id, "revoke", args, now - 600
        )
        assert str(send(payload, nonce)["reason"]).startswith("refused: expired")
        # A real command, then the same bytes again.
        payload, nonce = proto.sign_command(
            owner.signing_key(), device_id, "revoke", {"name": "nobody"}, now
        )
        assert "no phone named 'nobody'" in str(send(payload, nonce)["reason"])
        listener.publish(f"{prefix}/command", payload)
        answers = listener.wait_on(f"{prefix}/answer/{nonce.hex()}", 2, 10)
        replayed = proto.open_answer(answers[1].payload, device, nonce, identity)
        assert replayed["reason"] == "refused: replayed (this command was received before)"
        # Garbage is dropped; the doorbell keeps answering.
        listener.publish(f"{prefix}/command", b"\xff" * 100)
        listener.publish(f"{prefix}/command", b"[" * 10_000)
        payload, nonce = proto.sign_command(owner.signing_key(), device_id, "fly", {}, now)
        assert send(payload, nonce)["reason"] == "refused: unknown command 'fly'"
    finally:
        listener.close()
    assert (doorbell.state / "keyring.json").read_bytes() == before
    assert doorbell.status()["ready"]


def test_recovery_words_restore_every_clip_after_the_phone_is_lost(
    doorbell: DaemonRig, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    owner = tmp_path / "owner"
    code, lines, _ = phone_command(owner, "recovery", "create", "--json")
    assert code == 0
    [shown] = lines
    words = shown["words"]
    assert isinstance(words, list) and len(words) == 24
    keyring = KeyringStore(doorbell.state).load()
    [paper] = [r for r in keyring.recipients if r.role is Role.RECOVERY]
    assert paper.name == "recovery" and paper.signing is not None
    # Nothing of the words stays on the phone.
    for path in owner.iterdir():
        assert words[0] + " " + words[1] not in path.read_text(errors="replace")
    wait_for(lambda: doorbell.status()["preroll_seconds"] >= 1, 30, "pre-roll")
    doorbell.command("ring")
    wait_for(lambda: doorbell.status()["clips"] == 1 and doorbell.status()["clip"] is None,
             60, "the clip")  # fmt: skip
    # The phone is lost: a fresh home and the paper.
    text = " ".join(words)
    wrong = " ".join([*words[:6], "zebrra", *words[7:]])
    fresh = tmp_path / "new-phone"
    code, _, err = phone_command(fresh, "recover", "--device", str(shown["device"]), "--json",
                                 stdin=wrong)  # fmt: skip
    assert code == 2 and "word 7 ('zebrra') is not in the recovery word list" in err
    swapped = " ".join([words[1], words[0], *words[2:]])
    if swapped != text:
        code, _, err = phone_command(fresh, "recover", "--device", str(shown["device"]),
                                     stdin=swapped)  # fmt: skip
        assert code == 2 and "do not check out" in err
    assert not (fresh / "identity.key").exists()
    code, lines, err = phone_command(fresh, "recover", "--device", str(shown["device"]), "--json",
                                     "--host", mosquitto.host, "--port", str(mosquitto.port),
                                     stdin=text + "\n")  # fmt: skip
    assert code == 0, err
    assert lines[0]["recovered"] == paper.key.fingerprint
    home = PhoneHome(fresh)
    source = DirectorySource(doorbell.bucket)
    result = verify_source(source, home.reader())
    report = export_clips(source, home.reader(), result, tmp_path / "clips")
    assert len(report.clips) == 1 and not report.skipped
    # And it acts as an owner: it lets the new phone in.
    code, lines = _invite(fresh, tmp_path / "replacement", "--name", "replacement")
    assert code == 0
    assert KeyringStore(doorbell.state).load().get("replacement") is not None
