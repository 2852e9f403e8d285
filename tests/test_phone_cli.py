"""``doorbell-phone``: a phone's key, the doorbells it pins, and verifying and exporting
footage from a directory the local sink wrote."""

from __future__ import annotations

import itertools
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
    PhoneIdentity,
    PhoneSigningKey,
    RecipientPrivateKey,
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
    assert f"created a mlkem768-x25519 key and a signing key in {home}" in out
    identity = RecipientPrivateKey.from_string((home / "identity.key").read_text())
    signing = PhoneSigningKey.from_string((home / "signing.key").read_text())
    public = PhoneIdentity(identity.public_key(), signing.public_key)
    assert f"  doorbell keys add NAME {public.to_string()}\n" in out
    for name in ("identity.key", "signing.key"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert identity.to_string() not in out
    assert signing.to_string() not in out
    assert identity.to_string().startswith("dbsec-xwing-")  # the 32-byte X-Wing seed


def test_init_with_the_classical_suite(home: Path, capsys: Capture) -> None:
    assert phone(home, "init", "--suite", "x25519") == 0
    assert "created a x25519 key" in capsys.readouterr().out
    assert _public_key(home, capsys).startswith("dbid-x25519-")


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
    signing = PhoneSigningKey.from_string((home / "signing.key").read_text())
    assert PhoneIdentity.from_string(printed) == PhoneIdentity(
        identity.public_key(), signing.public_key
    )


def test_a_phone_made_before_signing_keys_gets_one(home: Path, capsys: Capture) -> None:
    """A home with only identity.key (as phones were made before) keeps its key and gains
    a signing key the first time it shows its identity."""
    home.mkdir(mode=0o700)
    old = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
    (home / "identity.key").write_text(old.to_string() + "\n")
    (home / "identity.key").chmod(0o600)
    printed = PhoneIdentity.from_string(_public_key(home, capsys))
    assert printed.key == old.public_key()
    signing = PhoneSigningKey.from_string((home / "signing.key").read_text())
    assert printed.signing == signing.public_key
    assert stat.S_IMODE((home / "signing.key").stat().st_mode) == 0o600
    assert PhoneIdentity.from_string(_public_key(home, capsys)) == printed


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
        key = PhoneIdentity.from_string(_public_key(home, capsys)).key
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
    assert "note   README.txt: not the name of a sealed object, ignored" in out

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


def _clips(out_dir: Path) -> list[tuple[str, bytes]]:
    """The exported clips in time order: the end of each name (label and id), its bytes."""
    return [(p.stem.split("-", 2)[2], p.read_bytes()) for p in sorted(out_dir.glob("*.mp4"))]


def _advancing(start: float) -> Callable[[], float]:
    """A capture clock ten seconds on at each reading: each clip gets its own time."""
    times = itertools.count(start, 10.0)
    return lambda: next(times)


def test_export_writes_what_one_stream_recorded_clip_by_clip(
    home: Path, tmp_path: Path, enrolled: Callable[[], Sealer], state_dir: Path, capsys: Capture
) -> None:
    """Continuous recording with two clips in it, as a doorbell seals them: each clip and
    each run of recording between them is exported whole, alone in its file, and export
    leaves nothing else in the folder. ``sync``, which reads each object again to export
    it, writes the same clips."""
    enrolled().close()
    bucket, out_dir = tmp_path / "bucket", tmp_path / "clips"
    stream, ring, motion = "5" * 32, "a" * 32, "b" * 32
    init = b"ftyp+moov"
    body = [f"moof{index}+mdat{index}".encode() for index in range(6)]
    with Sealer(state_dir, clock=_advancing(TIME.timestamp())) as sealer:
        objects = sealer.seal(Kind.INIT, init_meta(stream), init)

        def segments(*indexes: int) -> list[SealedObject]:
            return [
                sealed
                for index in indexes
                for sealed in sealer.seal(Kind.SEGMENT, segment_meta(stream, index), body[index])
            ]

        objects += segments(0, 1)
        objects += sealer.seal(Kind.EVENT, event_meta(clip=ring, stream=stream, first=2), b"R")
        objects += segments(2, 3)
        objects += sealer.seal(Kind.NOTICE, clip_end_meta(ring, stream, 3))
        objects += segments(4)
        event = event_meta("motion", clip=motion, stream=stream, first=5)
        objects += sealer.seal(Kind.EVENT, event, b"M")
        objects += segments(5)
        objects += sealer.seal(Kind.NOTICE, clip_end_meta(motion, stream, 5))
    _deliver(bucket, objects)

    assert phone(home, "export", str(bucket), "--out", str(out_dir)) == 0, capsys.readouterr()
    assert _clips(out_dir) == [
        ("recording-55555555", init + body[0] + body[1]),
        ("ring-aaaaaaaa", init + body[2] + body[3]),
        ("recording-55555555", init + body[4]),
        ("motion-bbbbbbbb", init + body[5]),
    ]
    assert sorted(p.suffix for p in out_dir.iterdir()) == [".jpg", ".jpg"] + [".mp4"] * 4
    copy = tmp_path / "copy"
    assert phone(home, "sync", str(bucket), "--out", str(copy)) == 0, capsys.readouterr()
    exported = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert {p.name: p.read_bytes() for p in (copy / "clips").iterdir()} == exported


def test_export_copies_together_clips_that_share_segments_or_lack_one(
    home: Path, tmp_path: Path, enrolled: Callable[[], Sealer], state_dir: Path, capsys: Capture
) -> None:
    """Footage no doorbell seals alone in a file: a clip inside another, a clip whose
    middle segment was deleted, and more streams at once than export keeps open.
    Every clip still holds exactly its init segment and its segments present, in order."""
    enrolled().close()
    bucket, out_dir = tmp_path / "bucket", tmp_path / "clips"
    shared, gapped, first, second = "1" * 32, "2" * 32, "a" * 32, "b" * 32
    many = [f"{number:02x}" * 16 for number in range(0x30, 0x30 + 20)]

    def init(stream: str) -> bytes:
        return f"init of {stream[:2]}".encode()

    def body(stream: str, index: int) -> bytes:
        return f"segment {index} of {stream[:2]}".encode()

    with Sealer(state_dir, clock=_advancing(TIME.timestamp())) as sealer:
        objects: list[SealedObject] = []

        def seal(kind: Kind, meta: dict[str, object], data: bytes = b"") -> SealedObject:
            objects.extend(sealer.seal(kind, meta, data))
            return objects[-1]

        seal(Kind.INIT, init_meta(shared), init(shared))
        seal(Kind.EVENT, event_meta(clip=first, stream=shared, first=0))
        for index in range(3):
            seal(Kind.SEGMENT, segment_meta(shared, index), body(shared, index))
        seal(Kind.EVENT, event_meta("motion", clip=second, stream=shared, first=1))
        seal(Kind.NOTICE, clip_end_meta(second, shared, 1))
        seal(Kind.NOTICE, clip_end_meta(first, shared, 2))
        for stream in (gapped, *many):
            seal(Kind.INIT, init_meta(stream), init(stream))
        seal(Kind.EVENT, event_meta(clip=gapped, stream=gapped, first=0))
        for index in range(3):
            for stream in (gapped, *many):
                sealed = seal(Kind.SEGMENT, segment_meta(stream, index), body(stream, index))
                if (stream, index) == (gapped, 1):
                    deleted = sealed
        seal(Kind.NOTICE, clip_end_meta(gapped, gapped, 2))
    _deliver(bucket, [o for o in objects if o is not deleted])

    assert phone(home, "export", str(bucket), "--out", str(out_dir)) == 1
    out = capsys.readouterr().out
    assert f"missing seq {deleted.seq}" in out
    clips = dict(_clips(out_dir))
    whole = init(shared) + body(shared, 0) + body(shared, 1) + body(shared, 2)
    assert clips.pop("ring-aaaaaaaa") == whole
    assert clips.pop("motion-bbbbbbbb") == init(shared) + body(shared, 1)
    assert clips.pop("ring-22222222") == init(gapped) + body(gapped, 0) + body(gapped, 2)
    assert "ring-22222222: segment 1 is missing; the clip has a gap" in out
    assert clips == {
        f"recording-{stream[:8]}": init(stream) + b"".join(body(stream, i) for i in range(3))
        for stream in many
    }
    assert not [p.name for p in out_dir.iterdir() if p.suffix != ".mp4"]


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


def _under_umask_022(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real ``doorbell-phone`` in its own process, under the permissive umask most
    desktops use: what it writes must not rely on a strict one."""
    phone_cli = str(Path(sys.executable).parent / "doorbell-phone")
    return subprocess.run(
        ["/bin/sh", "-c", 'umask 022 && exec "$@"', "sh", phone_cli, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_plaintext_and_the_phone_home_are_private_whatever_the_umask(
    tmp_path: Path, state_dir: Path
) -> None:
    """Exported clips and snapshots are footage in the clear: 0600, in folders made 0700.
    The phone's home (its key, what it remembers) is 0700, even one made before by hand;
    so is a copy made by sync."""
    home = tmp_path / "phone"
    home.mkdir()
    home.chmod(0o755)  # made by hand, before the phone had a key
    assert _under_umask_022("--home", str(home), "init", "--suite", "x25519").returncode == 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    identity = RecipientPrivateKey.from_string((home / "identity.key").read_text())
    state_dir.mkdir()
    device, _ = load_device_key(state_dir)
    with KeyringStore(state_dir).editing() as box:
        box[0] = box[0].add("phone", identity.public_key(), TIME)
    trusted = _under_umask_022("--home", str(home), "trust", device.public_key.to_string())
    assert trusted.returncode == 0, trusted.stderr
    stream, clip = "5" * 32, "c" * 32
    with Sealer(state_dir, clock=TIME.timestamp) as sealer:
        objects = sealer.seal(Kind.INIT, init_meta(stream), b"ftyp+moov")
        objects += sealer.seal(Kind.SEGMENT, segment_meta(stream, 0), b"moof+mdat")
        objects += sealer.seal(Kind.EVENT, event_meta(clip=clip, stream=stream), b"\xff\xd8")
        objects += sealer.seal(Kind.NOTICE, clip_end_meta(clip, stream, 0))
    bucket = tmp_path / "bucket"
    _deliver(bucket, objects)

    exported = tmp_path / "exported" / "clips"
    run = _under_umask_022("--home", str(home), "export", str(bucket), "--out", str(exported))
    assert run.returncode == 0, run.stdout
    copy = tmp_path / "copy"
    run = _under_umask_022("--home", str(home), "sync", str(bucket), "--out", str(copy))
    assert run.returncode == 0, run.stdout

    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for folder in (exported, copy, copy / "objects", copy / "clips"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    plaintext = [*exported.iterdir(), *(copy / "clips").iterdir(), copy / "sync-state.json"]
    assert sorted(p.suffix for p in plaintext) == [".jpg", ".jpg", ".json", ".mp4", ".mp4"]
    for path in plaintext:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
