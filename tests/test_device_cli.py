"""``doorbell keys``: the device key and the enrolled phones, from the command line."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from doorbell.cli import main
from doorbell.sealing import (
    DevicePublicKey,
    DeviceSigningKey,
    KeyringStore,
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


def test_add_list_revoke(state_dir: Path, capsys: Capture) -> None:
    alice = RecipientPrivateKey.generate(Suite.MLKEM768_X25519).public_key()
    assert keys(state_dir, "add", "alice-phone", alice.to_string()) == 0
    out = capsys.readouterr().out
    assert f"enrolled 'alice-phone' (mlkem768-x25519, {alice.fingerprint}); keyring epoch 1" in out
    assert keys(state_dir, "add", "bob", _phone_key(Suite.X25519)) == 0
    assert "keyring epoch 2" in capsys.readouterr().out

    assert keys(state_dir, "list") == 0
    out = capsys.readouterr().out
    assert "keyring epoch 2, 2 recipient(s)" in out
    line = next(line for line in out.splitlines() if "alice-phone" in line)
    assert "mlkem768-x25519" in line
    assert alice.fingerprint in line
    assert any("bob" in line and "x25519" in line for line in out.splitlines())

    assert keys(state_dir, "revoke", "bob") == 0
    assert "revoked 'bob'; keyring epoch 3, 1 recipient(s) left" in capsys.readouterr().out
    assert keys(state_dir, "revoke", "alice-phone") == 0
    out = capsys.readouterr().out
    assert "keyring epoch 4, 0 recipient(s) left" in out
    assert "no phone is enrolled any more" in out
    assert KeyringStore(state_dir).load().epoch == 4


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
    assert "PUBKEY" in capsys.readouterr().err
