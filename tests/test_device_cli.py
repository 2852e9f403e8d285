"""``doorbell keys``: the device key and the enrolled phones, from the command line."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemon_harness import DaemonRig, wait_for

from doorbell.cli import main
from doorbell.sealing import (
    DevicePublicKey,
    DeviceSigningKey,
    KeyringStore,
    PhoneIdentity,
    PhoneSigningKey,
    RecipientPrivateKey,
    Suite,
)

Capture = pytest.CaptureFixture[str]


def keys(state: Path, *argv: str) -> int:
    return main(["keys", "--state", str(state), *argv])


def _phone_key(suite: Suite = Suite.MLKEM768_X25519) -> str:
    return RecipientPrivateKey.generate(suite).public_key().to_string()


def test_show_creates_the_device_key_once(state_dir: Path, capsys: Capture) -> None:
    assert keys(state_dir, "show") == 0
    out, err = capsys.readouterr()
    assert f"created a new device key in {state_dir}" in err
    key_line, fingerprint_line, id_line = out.splitlines()
    device = DevicePublicKey.from_string(key_line)
    assert fingerprint_line == f"fingerprint {device.fingerprint}"
    assert id_line == f"device id   {hashlib.sha256(device.raw).hexdigest()}"
    assert (state_dir / "device.key").stat().st_mode & 0o777 == 0o600

    assert keys(state_dir, "show") == 0
    again, err = capsys.readouterr()
    assert again == out
    assert err == ""


def test_list_on_a_fresh_state_dir(state_dir: Path, capsys: Capture) -> None:
    state_dir.mkdir()
    assert keys(state_dir, "list") == 0
    out = capsys.readouterr().out
    assert "keyring epoch 0, 0 recipient(s)" in out
    assert "no phone is enrolled" in out


def test_list_of_a_missing_state_dir_is_a_user_error(tmp_path: Path, capsys: Capture) -> None:
    missing = tmp_path / "nowhere"
    assert keys(missing, "list") == 2
    out, err = capsys.readouterr()
    assert err == f"doorbell: state directory {missing} does not exist\n"
    assert out == ""
    assert not missing.exists()


def _identity(suite: Suite = Suite.MLKEM768_X25519) -> PhoneIdentity:
    return PhoneIdentity(
        RecipientPrivateKey.generate(suite).public_key(), PhoneSigningKey.generate().public_key
    )


def test_add_list_revoke(state_dir: Path, capsys: Capture) -> None:
    alice = _identity()
    assert keys(state_dir, "add", "alice-phone", alice.to_string()) == 0
    out = capsys.readouterr().out
    assert (
        f"enrolled 'alice-phone' as owner (mlkem768-x25519, {alice.key.fingerprint}); "
        "keyring epoch 1"
    ) in out
    assert keys(state_dir, "add", "bob", _phone_key(Suite.X25519), "--allow-classical") == 0
    assert "enrolled 'bob' as member" in capsys.readouterr().out

    assert keys(state_dir, "list") == 0
    out = capsys.readouterr().out
    assert "keyring epoch 2, 2 recipient(s)" in out
    line = next(line for line in out.splitlines() if "alice-phone" in line)
    assert " owner " in line
    assert "mlkem768-x25519" in line
    assert alice.key.fingerprint in line
    assert any(
        "bob" in line and " member " in line and "x25519" in line for line in out.splitlines()
    )
    [owner, _] = KeyringStore(state_dir).load().recipients
    assert owner.signing == alice.signing

    assert keys(state_dir, "revoke", "bob") == 0
    assert "revoked 'bob'; keyring epoch 3, 1 recipient(s) left" in capsys.readouterr().out
    assert keys(state_dir, "revoke", "alice-phone") == 0
    out = capsys.readouterr().out
    assert "keyring epoch 4, 0 recipient(s) left" in out
    assert "no phone is enrolled any more" in out
    assert KeyringStore(state_dir).load().epoch == 4


def test_roles_guests_and_who_may_be_an_owner(state_dir: Path, capsys: Capture) -> None:
    assert keys(state_dir, "add", "alice", _identity().to_string()) == 0
    assert keys(state_dir, "add", "bob", _identity().to_string()) == 0
    assert "enrolled 'bob' as member" in capsys.readouterr().out
    assert keys(state_dir, "add", "carol", _identity().to_string(), "--role", "owner") == 0
    assert keys(state_dir, "add", "dan", _identity().to_string(), "--role", "guest") == 2
    assert "a guest needs an expiry time" in capsys.readouterr().err
    assert keys(state_dir, "add", "dan", _identity().to_string(), "--expires", "2h") == 2
    assert "a guest needs an expiry time, and only a guest has one" in capsys.readouterr().err
    assert keys(state_dir, "add", "dan", _identity().to_string(), "--role", "guest",
                "--expires", "soon") == 2  # fmt: skip
    assert "--expires: 'soon' is not a duration" in capsys.readouterr().err
    assert keys(state_dir, "add", "dan", _identity().to_string(), "--role", "guest",
                "--expires", "1h30m") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "enrolled 'dan' as guest until " in out
    # A bare public key cannot sign: it may read footage, never manage the doorbell.
    assert keys(state_dir, "add", "eve", _phone_key(), "--role", "owner") == 2
    assert "an owner must be able to sign" in capsys.readouterr().err
    keyring = KeyringStore(state_dir).load()
    assert [(r.name, r.role.value) for r in keyring.recipients] == [
        ("alice", "owner"), ("bob", "member"), ("carol", "owner"), ("dan", "guest"),
    ]  # fmt: skip
    dan = keyring.recipients[3]
    assert dan.expires is not None
    assert abs((dan.expires - dan.added).total_seconds() - 5400) <= 1
    assert keys(state_dir, "list") == 0
    assert "expires " in next(
        line for line in capsys.readouterr().out.splitlines() if "dan" in line
    )


def test_add_with_a_key_pasted_across_lines(state_dir: Path, capsys: Capture) -> None:
    key = _phone_key()
    wrapped = "\n".join(key[i : i + 64] for i in range(0, len(key), 64)).upper()
    assert keys(state_dir, "add", "tablet", wrapped) == 0
    assert KeyringStore(state_dir).load().recipients[0].key.to_string() == key


def test_add_same_name_twice(state_dir: Path, capsys: Capture) -> None:
    assert keys(state_dir, "add", "alice", _phone_key()) == 0
    assert keys(state_dir, "add", "alice", _phone_key()) == 2
    assert "a phone named 'alice' is already enrolled" in capsys.readouterr().err
    assert KeyringStore(state_dir).load().epoch == 1


def test_add_with_a_mistyped_key(state_dir: Path, capsys: Capture) -> None:
    key = _phone_key(Suite.X25519)
    typo = key[:40] + ("a" if key[40] != "a" else "b") + key[41:]
    assert keys(state_dir, "add", "alice", typo) == 2
    out, err = capsys.readouterr()
    assert (
        err
        == "doorbell: phone public key (x25519) checksum does not match: a character is mistyped\n"
    )
    assert out == ""
    assert KeyringStore(state_dir).load().recipients == ()


def test_add_a_device_key_as_a_phone(state_dir: Path, capsys: Capture) -> None:
    device = DeviceSigningKey.generate().public_key.to_string()
    assert keys(state_dir, "add", "oops", device) == 2
    err = capsys.readouterr().err
    assert "this is a doorbell device public key, expected a phone public key" in err


def test_bad_key_string_has_no_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    argv = ["keys", "--state", str(state), "add", "a", "dbpub-x25519-abc"]
    run = subprocess.run(
        [sys.executable, "-m", "doorbell", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("doorbell: ")
    assert "truncated" in run.stderr


@pytest.mark.parametrize("action", [["show"], ["list"], ["add", "a", "KEY"], ["revoke", "a"]])
def test_unusable_state_dir_is_a_user_error(
    tmp_path: Path, capsys: Capture, action: list[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    state = blocker / "state"
    argv = [_phone_key() if arg == "KEY" else arg for arg in action]
    assert keys(state, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("doorbell: ")
    assert str(state) in err
    assert "Traceback" not in err


def test_state_dir_that_is_a_file(tmp_path: Path, capsys: Capture) -> None:
    state = tmp_path / "state"
    state.write_text("")
    assert keys(state, "show") == 2
    assert f"state directory {state} is not a directory" in capsys.readouterr().err


def test_revoke_unknown_name_suggests(state_dir: Path, capsys: Capture) -> None:
    assert keys(state_dir, "add", "alice-phone", _phone_key()) == 0
    capsys.readouterr()
    assert keys(state_dir, "revoke", "alice-phon") == 2
    err = capsys.readouterr().err
    assert "no phone named 'alice-phon' is enrolled; did you mean 'alice-phone'?" in err
    assert KeyringStore(state_dir).load().epoch == 1


def test_corrupt_keyring_file_is_a_user_error(state_dir: Path, capsys: Capture) -> None:
    state_dir.mkdir()
    (state_dir / "keyring.json").write_text('{"format": "doorbell-keyring", "version": 1,')
    assert keys(state_dir, "list") == 2
    assert f"doorbell: {state_dir / 'keyring.json'}: not a JSON keyring" in capsys.readouterr().err
    assert keys(state_dir, "add", "alice", _phone_key()) == 2


def test_keyring_file_with_a_huge_number_is_a_user_error(state_dir: Path, capsys: Capture) -> None:
    state_dir.mkdir()
    huge = "9" * 5000
    document = f'{{"format": "doorbell-keyring", "version": 1, "epoch": {huge}, "recipients": []}}'
    (state_dir / "keyring.json").write_text(document)
    assert keys(state_dir, "list") == 2
    assert str(state_dir / "keyring.json") in capsys.readouterr().err


def test_missing_arguments_are_usage_errors(state_dir: Path, capsys: Capture) -> None:
    with pytest.raises(SystemExit) as exit_:
        keys(state_dir, "add", "alice")
    assert exit_.value.code == 2
    assert "IDENTITY" in capsys.readouterr().err


# -- post-quantum protection: one classical phone opens every object to a quantum computer --

PROTECTED = "footage is post-quantum protected: every phone uses mlkem768-x25519\n"


def _not_protected(*names: str) -> str:
    listed = ", ".join(repr(name) for name in names)
    verb = "uses" if len(names) == 1 else "use"
    return (
        f"NOT post-quantum protected: {listed} {verb} x25519, and every object wraps its key "
        "for every phone, so a future quantum computer could open everything sealed to this "
        "keyring"
    )


def test_adding_an_x25519_phone_beside_hybrid_ones_is_refused(
    state_dir: Path, capsys: Capture
) -> None:
    assert keys(state_dir, "add", "alice", _phone_key()) == 0
    assert capsys.readouterr().out.endswith(PROTECTED)
    before = (state_dir / "keyring.json").read_bytes()
    # The real command line, as the owner types it: exit 2, one line, no traceback.
    run = subprocess.run(
        [sys.executable, "-m", "doorbell", "keys", "--state", str(state_dir), "add", "bob",
         _phone_key(Suite.X25519)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.startswith("doorbell: refused: 'bob' uses x25519, which a quantum ")
    assert "not even what 'alice' read" in run.stderr
    assert "--allow-classical" in run.stderr and "the keyring is unchanged" in run.stderr
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1
    assert (state_dir / "keyring.json").read_bytes() == before

    assert keys(state_dir, "list") == 0
    out = capsys.readouterr().out
    assert "keyring epoch 1, 1 recipient(s)" in out and out.endswith(PROTECTED)


def test_adding_a_hybrid_phone_beside_an_x25519_one_is_refused(
    state_dir: Path, capsys: Capture
) -> None:
    assert keys(state_dir, "add", "old-phone", _phone_key(Suite.X25519)) == 0
    assert capsys.readouterr().out.endswith(f"footage is {_not_protected('old-phone')}\n")
    before = (state_dir / "keyring.json").read_bytes()
    assert keys(state_dir, "add", "new-phone", _phone_key()) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        "doorbell: refused: footage would not be post-quantum protected for 'new-phone': "
        "'old-phone' uses x25519"
    )
    assert "Revoke 'old-phone' or enrol it again with an mlkem768-x25519 key" in err
    assert (state_dir / "keyring.json").read_bytes() == before


def test_allow_classical_enrols_records_and_is_shown(state_dir: Path, capsys: Capture) -> None:
    assert keys(state_dir, "add", "alice", _phone_key()) == 0
    bob = RecipientPrivateKey.generate(Suite.X25519).public_key()
    assert keys(state_dir, "add", "bob", bob.to_string(), "--allow-classical") == 0
    out = capsys.readouterr().out
    assert "enrolled 'bob' as member (x25519, " in out and "keyring epoch 2" in out
    assert out.endswith(f"footage is {_not_protected('bob')}\n")

    recorded = json.loads((state_dir / "keyring.json").read_text())["device_only"]
    [consent] = recorded["classical_allowed"]
    assert (consent["name"], consent["fingerprint"]) == ("bob", bob.fingerprint)
    allowed = datetime.strptime(consent["allowed"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - allowed).total_seconds()) < 60

    assert keys(state_dir, "list") == 0
    out = capsys.readouterr().out
    [bob_line] = [line for line in out.splitlines() if line.startswith("  bob ")]
    when = allowed.strftime("%Y-%m-%d %H:%M UTC")
    assert bob_line.endswith(f"NOT post-quantum, allowed {when} (--allow-classical)")
    [alice_line] = [line for line in out.splitlines() if line.startswith("  alice ")]
    assert "post-quantum" not in alice_line
    assert out.endswith(f"footage is {_not_protected('bob')}\n")

    # Revoking the classical phone gives the protection back, and its consent goes with it.
    assert keys(state_dir, "revoke", "bob") == 0
    assert keys(state_dir, "list") == 0
    assert capsys.readouterr().out.endswith(PROTECTED)
    assert "device_only" not in json.loads((state_dir / "keyring.json").read_text())


def test_a_keyring_of_x25519_phones_is_listed_as_not_protected(
    state_dir: Path, capsys: Capture
) -> None:
    for name in ("bob", "dave"):
        assert keys(state_dir, "add", name, _phone_key(Suite.X25519)) == 0
    capsys.readouterr()
    assert keys(state_dir, "list") == 0
    out = capsys.readouterr().out
    assert sum(line.endswith("  NOT post-quantum") for line in out.splitlines()) == 2
    assert out.endswith(f"footage is {_not_protected('bob', 'dave')}\n")


def test_status_of_the_running_daemon_says_which_phone_is_not_post_quantum(
    tmp_path: Path, capsys: Capture
) -> None:
    rig = DaemonRig(tmp_path)  # enrols one x25519 phone, 'test-phone'
    rig.start()
    try:
        rig.wait_ready()
        assert main(["status", "-c", str(rig.config)]) == 0
        out = capsys.readouterr().out
        assert f"footage    {_not_protected('test-phone')}\n" in out
        assert main(["status", "--json", "-c", str(rig.config)]) == 0
        keyring = json.loads(capsys.readouterr().out)["keyring"]
        assert (keyring["classical"], keyring["post_quantum"]) == (["test-phone"], False)

        # Enrol a hybrid phone, revoke the classical one, reload: protected again.
        argv = [_phone_key(), "--allow-classical"]
        assert keys(rig.state, "add", "alice", *argv) == 0
        assert keys(rig.state, "revoke", "test-phone") == 0
        assert rig.process is not None
        rig.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: rig.status().get("keyring", {}).get("phones") == ["alice"], 30, "the reload"
        )
        capsys.readouterr()
        assert main(["status", "-c", str(rig.config)]) == 0
        out = capsys.readouterr().out
        assert "footage    post-quantum protected: every phone uses mlkem768-x25519\n" in out
        assert rig.status()["keyring"]["post_quantum"] is True
        assert rig.stop() == 0
    finally:
        rig.kill()
