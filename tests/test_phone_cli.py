"""``doorbell-phone``: a phone's key, the doorbells it pins, and verifying and exporting
footage from a directory the local sink wrote."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chain_builder import clip_end_meta, event_meta, init_meta, segment_meta

from doorbell.phone.cli import main
from doorbell.sealing import (
    DeviceSigningKey,
    KeyringStore,
    Kind,
    RecipientPrivateKey,
    RecipientPublicKey,
    SealedObject,
    Sealer,
    Suite,
    load_device_key,
)
from doorbell.transport.local import LocalDirectorySink

Capture = pytest.CaptureFixture[str]


def phone(home: Path, *argv: str) -> int:
    return main(["--home", str(home), *argv])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "phone"


def _public_key(home: Path, capsys: Capture) -> str:
    assert phone(home, "pubkey") == 0
    return capsys.readouterr().out.strip()


# --- the phone's own key ------------------------------------------------------------------


def test_init_creates_a_hybrid_key_by_default(home: Path, capsys: Capture) -> None:
    assert phone(home, "init") == 0
    out = capsys.readouterr().out
    assert f"created a mlkem768-x25519 key in {home}" in out
    identity = RecipientPrivateKey.from_string((home / "identity.key").read_text())
    assert f"  doorbell keys add NAME {identity.public_key().to_string()}\n" in out
    assert stat.S_IMODE((home / "identity.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert identity.to_string() not in out


def test_init_with_the_classical_suite(home: Path, capsys: Capture) -> None:
    assert phone(home, "init", "--suite", "x25519") == 0
    assert "created a x25519 key" in capsys.readouterr().out
    assert _public_key(home, capsys).startswith("dbpub-x25519-")


def test_init_twice_keeps_the_first_key(home: Path, capsys: Capture) -> None:
    assert phone(home, "init") == 0
    before = (home / "identity.key").read_bytes()
    capsys.readouterr()
    assert phone(home, "init") == 2
    out, err = capsys.readouterr()
    key_file = home / "identity.key"
    assert err == f"doorbell-phone: {key_file} already exists; this phone already has a key\n"
    assert out == ""
    assert (home / "identity.key").read_bytes() == before


def test_pubkey_prints_the_key_to_enrol(home: Path, capsys: Capture) -> None:
    assert phone(home, "init") == 0
    capsys.readouterr()
    printed = _public_key(home, capsys)
    identity = RecipientPrivateKey.from_string((home / "identity.key").read_text())
    assert RecipientPublicKey.from_string(printed) == identity.public_key()


@pytest.mark.parametrize(
    "argv", [["pubkey"], ["verify", "."], ["export", ".", "--out", "out"]], ids=lambda a: a[0]
)
def test_missing_identity_says_run_init(
    home: Path, tmp_path: Path, capsys: Capture, argv: list[str]
) -> None:
    argv = [str(tmp_path) if arg == "." else arg for arg in argv]
    assert phone(home, *argv) == 2
    assert (
        capsys.readouterr().err
        == f"doorbell-phone: no phone key in {home}: run 'doorbell-phone init' first\n"
    )


def test_corrupt_identity_names_the_file(home: Path, capsys: Capture) -> None:
    home.mkdir()
    (home / "identity.key").write_text("dbsec-x25519-aaaa\n")
    assert phone(home, "pubkey") == 2
    err = capsys.readouterr().err
    assert f"{home / 'identity.key'}: phone secret key (x25519) is truncated" in err


# --- pinning doorbells ----------------------------------------------------------------------


def test_trust_pins_a_doorbell_once(home: Path, capsys: Capture) -> None:
    device = DeviceSigningKey.generate().public_key
    assert phone(home, "trust", device.to_string(), "--name", "front door") == 0
    assert f"now trusting doorbell 'front door' ({device.fingerprint})" in capsys.readouterr().out
    assert phone(home, "trust", device.to_string()) == 0
    assert f"doorbell {device.fingerprint} was already trusted" in capsys.readouterr().out
    document = json.loads((home / "trusted.json").read_text())
    assert document == {"devices": [{"name": "front door", "key": device.to_string()}]}


def test_trust_refuses_a_phone_key(home: Path, capsys: Capture) -> None:
    key = RecipientPrivateKey.generate(Suite.X25519)
    assert phone(home, "trust", key.public_key().to_string()) == 2
    err = capsys.readouterr().err
    assert "this is a phone public key" in err
    assert "expected a doorbell device public key" in err
    assert not (home / "trusted.json").exists()


def test_trust_refuses_a_mistyped_key(home: Path, capsys: Capture) -> None:
    text = DeviceSigningKey.generate().public_key.to_string()
    typo = text[:20] + ("b" if text[20] == "a" else "a") + text[21:]
    assert phone(home, "trust", typo) == 2
    assert "checksum does not match" in capsys.readouterr().err


def test_corrupt_trusted_file_is_a_user_error(home: Path, capsys: Capture) -> None:
    assert phone(home, "init") == 0
    (home / "trusted.json").write_text('{"devices": [{"name": "x", "key": "dbdev-nope"}]}')
    assert phone(home, "verify", str(home)) == 2
    assert f"{home / 'trusted.json'}: device 0:" in capsys.readouterr().err


# --- verify and export ----------------------------------------------------------------------

TIME = datetime(2026, 11, 29, 21, 50, 7, tzinfo=UTC)


@pytest.fixture
def enrolled(home: Path, state_dir: Path, capsys: Capture) -> Callable[[], Sealer]:
    """A phone made with ``init``, enrolled in a doorbell whose key it ``trust``ed."""
    assert phone(home, "init", "--suite", "x25519") == 0
    capsys.readouterr()
    state_dir.mkdir()
    device, _ = load_device_key(state_dir)
    with KeyringStore(state_dir).editing() as box:
        key = RecipientPublicKey.from_string(_public_key(home, capsys))
        box[0] = box[0].add("phone", key, TIME)
    assert phone(home, "trust", device.public_key.to_string()) == 0
    capsys.readouterr()
    return lambda: Sealer(state_dir, clock=TIME.timestamp)


def _deliver(bucket: Path, objects: list[SealedObject]) -> None:
    sink = LocalDirectorySink(bucket)
    for sealed in objects:
        sink.deliver(sealed.name, sealed.data, sealed.kind)


def test_verify_clean_then_tampered(
    home: Path, tmp_path: Path, enrolled: Callable[[], Sealer], capsys: Capture
) -> None:
    bucket = tmp_path / "bucket"
    with enrolled() as sealer:
        objects = sealer.seal(Kind.EVENT, event_meta("ring"), b"snapshot")
        objects += sealer.seal(Kind.EVENT, event_meta("motion"), b"")
    _deliver(bucket, objects)
    (bucket / "README.txt").write_text("hello")

    assert phone(home, "verify", str(bucket)) == 0
    out = capsys.readouterr().out
    assert f"ok: 3 object(s) verified in {bucket}" in out
    assert "note   README.txt: not a .sealed file, ignored" in out

    target = bucket / objects[1].name
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x80
    target.write_bytes(bytes(data))
    assert phone(home, "verify", str(bucket)) == 1
    out = capsys.readouterr().out
    assert f"FAIL   {objects[1].name}: tampered or forged" in out
    assert "FAIL   device " in out and "missing seq 1" in out
    assert f"FAILED: 2 problem(s) among 3 object(s) in {bucket}" in out


def test_verify_untrusted_doorbell_fails(
    home: Path, tmp_path: Path, enrolled: Callable[[], Sealer], capsys: Capture
) -> None:
    other = tmp_path / "other-home"
    assert phone(other, "init") == 0
    capsys.readouterr()
    other_key = RecipientPrivateKey.from_string((other / "identity.key").read_text())
    bucket = tmp_path / "bucket"
    with enrolled() as sealer:
        _deliver(bucket, sealer.seal(Kind.EVENT, event_meta(), b""))
    assert phone(other, "verify", str(bucket)) == 1
    out = capsys.readouterr().out
    assert out.count("not from a trusted doorbell") == 2
    assert other_key.public_key().to_string() not in out


def test_verify_missing_directory_is_a_user_error(
    home: Path, tmp_path: Path, enrolled: Callable[[], Sealer], capsys: Capture
) -> None:
    assert phone(home, "verify", str(tmp_path / "nope")) == 2
    assert f"{tmp_path / 'nope'} is not a directory" in capsys.readouterr().err


def test_export_assembles_the_clip(
    home: Path, tmp_path: Path, enrolled: Callable[[], Sealer], capsys: Capture
) -> None:
    bucket, out_dir = tmp_path / "bucket", tmp_path / "clips"
    stream, clip = "5" * 32, "c" * 32
    init, segments, snapshot = b"ftyp+moov", [b"moof0+mdat0", b"moof1+mdat1"], b"\xff\xd8jpeg"
    with enrolled() as sealer:
        objects = sealer.seal(Kind.INIT, init_meta(stream), init)
        for index, body in enumerate(segments):
            objects += sealer.seal(Kind.SEGMENT, segment_meta(stream, index), body)
        event = event_meta(clip=clip, stream=stream)
        objects += sealer.seal(Kind.EVENT, event, snapshot)
        objects += sealer.seal(Kind.NOTICE, clip_end_meta(clip, stream, 1))
    _deliver(bucket, objects)

    assert phone(home, "export", str(bucket), "--out", str(out_dir)) == 0
    out = capsys.readouterr().out
    mp4 = out_dir / "20261129-215007-ring-cccccccc.mp4"
    assert mp4.read_bytes() == init + b"".join(segments)
    assert mp4.with_suffix(".jpg").read_bytes() == snapshot
    assert sorted(p.name for p in out_dir.iterdir()) == [mp4.with_suffix(".jpg").name, mp4.name]
    assert f"clip     {mp4}  (ring, 2 segment(s), 4.0 s, snapshot {mp4.stem}.jpg)" in out


def test_export_into_an_unwritable_place(
    home: Path, tmp_path: Path, enrolled: Callable[[], Sealer], capsys: Capture
) -> None:
    bucket = tmp_path / "bucket"
    with enrolled() as sealer:
        _deliver(bucket, sealer.seal(Kind.EVENT, event_meta(), b""))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert phone(home, "export", str(bucket), "--out", str(blocker / "clips")) == 2
    assert f"doorbell-phone: cannot write to {blocker / 'clips'}" in capsys.readouterr().err


def test_phone_cli_errors_have_no_traceback(tmp_path: Path) -> None:
    code = "import sys; from doorbell.phone.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, "--home", str(tmp_path / "h"), "trust", "dbdev-ed25519-zz"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("doorbell-phone: doorbell device public key is truncated")
