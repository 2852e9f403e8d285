"""``doorbell-phone sync`` against a bucket someone else controls: junk under the names of
objects still to come, names made to escape the folder or drive the terminal, objects too
large to be sealed objects, and a copy altered on the phone itself. Everything goes
through the real S3 server (moto) and the real CLI in its own process."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from chain_builder import Forger, clip_end_meta, event_meta, init_meta, new_id, segment_meta
from s3_fixture import S3Server, moto_server, s3_server  # noqa: F401
from test_phone_scale import phone_measured

from doorbell.sealing import MAX_OBJECT, Kind

PREFIX = "doorbells/front/"
INIT, SEGMENTS = b"ftyp+moov", [b"moof0+mdat0", b"moof1+mdat1", b"moof2+mdat2"]
ESC = "\x1b"


def put(server: S3Server, name: str, data: bytes) -> None:
    server.client.put_object(server.bucket, PREFIX + name, io.BytesIO(data), len(data))


def upload(server: S3Server, door: Forger, *seqs: int) -> None:
    for seq in seqs:
        put(server, door.name(seq), door.objects[seq])


def sync(door: Forger, server: S3Server, out: Path) -> subprocess.CompletedProcess[str]:
    """The real ``doorbell-phone sync`` from the test bucket, in its own process."""
    return sync_measured(door, server, out)[0]


def sync_measured(
    door: Forger, server: S3Server, out: Path
) -> tuple[subprocess.CompletedProcess[str], int]:
    """`sync`, and the phone's peak resident set in bytes."""
    argv = ["--home", str(door.home.directory), "sync", f"s3://{server.bucket}/{PREFIX}"]
    argv += ["--out", str(out), "--endpoint", server.endpoint, "--insecure"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return phone_measured(argv, env)


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


@pytest.fixture
def door(tmp_path: Path) -> Forger:
    """0 keyring, 1 init, 2 ring, 3 and 4 the clip's segments 0 and 1, 5 its segment 2,
    6 its clip-end notice: sealed, not uploaded yet."""
    door = Forger(tmp_path)
    stream, clip = new_id(), new_id()
    door.keyring_object()
    door.append(Kind.INIT, init_meta(stream), INIT)
    door.append(Kind.EVENT, event_meta(clip=clip, stream=stream), b"\xff\xd8jpeg")
    for index, body in enumerate(SEGMENTS):
        door.append(Kind.SEGMENT, segment_meta(stream, index), body)
    door.append(Kind.NOTICE, clip_end_meta(clip, stream, len(SEGMENTS) - 1))
    return door


def test_junk_under_the_next_names_is_not_kept_and_the_real_objects_are_fetched_later(
    door: Forger,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "copy"
    upload(s3_server, door, 0, 1, 2, 3, 4)
    # Planted before the doorbell uploads 5 and 6: junk, and an authentic object renamed.
    put(s3_server, door.name(5), os.urandom(700))
    put(s3_server, door.name(6), door.objects[4])

    first = sync(door, s3_server, out)
    assert first.returncode == 1, first.stdout
    url = f"s3://{s3_server.bucket}/{PREFIX}"
    assert f"FAIL     {url}{door.name(5)}: not kept: MalformedObject: not a " in first.stdout
    assert (
        f"FAIL     {url}{door.name(6)}: not kept: holds seq 4, whose name is {door.name(4)}; "
        "fetched again on the next sync"
    ) in first.stdout
    kept = sorted(p.name for p in (out / "objects").iterdir())
    assert kept == [door.name(seq) for seq in range(5)], "junk kept, or a temporary file left"

    upload(s3_server, door, 5, 6)  # the doorbell catches up: its uploads replace the junk
    second = sync(door, s3_server, out)
    assert second.returncode == 0, second.stdout
    assert f"fetched  2 new object(s) from {url} (5 already here)" in second.stdout
    (clip,) = (out / "clips").glob("*.mp4")
    assert clip.read_bytes() == INIT + b"".join(SEGMENTS)
    assert "ring, 3 segment(s)" in second.stdout


def test_names_that_are_not_object_names_are_shown_escaped_and_never_become_paths(
    door: Forger,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    upload(s3_server, door, *door.objects)
    real = door.objects[2]
    hostile = {
        f"{ESC}]0;owned{chr(7)}{ESC}[2J.sealed": "\\x1b]0;owned\\x07\\x1b[2J.sealed",
        f"..{ESC}[1A.sealed": "..\\x1b[1A.sealed",
        f"{door.name(7)[:-7]}\u202e.sealed": f"{door.name(7)[:-7]}\\u202e.sealed",
        "..\\..\\escape.sealed": "..\\\\..\\\\escape.sealed",
        "deeper/escape.sealed": "deeper/",  # a "folder" in a listing of one level
    }
    for name in hostile:
        put(s3_server, name, real)
    other = f"{'0' * 16}-{7:020d}.sealed"  # a doorbell this phone does not trust
    put(s3_server, other, real)
    before = files_under(tmp_path)

    run = sync(door, s3_server, tmp_path / "copy")
    assert run.returncode == 0, run.stdout
    assert ESC not in run.stdout + run.stderr and "\u202e" not in run.stdout
    for escaped in hostile.values():
        assert f"ignored  {escaped}: not the name of a sealed object\n" in run.stdout
    assert f"ignored  {other}: named for a doorbell this phone does not trust\n" in run.stdout
    outside = {
        path
        for path in files_under(tmp_path) - before
        if not path.is_relative_to(tmp_path / "copy")
    }
    home = door.home.directory
    assert outside == {home / "seen.json", home / ".seen.lock"}  # what the phone remembers
    kept = sorted(p.name for p in (tmp_path / "copy" / "objects").iterdir())
    assert kept == sorted(door.name(seq) for seq in door.objects)


def test_an_object_larger_than_any_sealed_object_is_refused_unread(
    door: Forger,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    upload(s3_server, door, *door.objects)
    huge = door.name(7)
    put(s3_server, huge, bytes(MAX_OBJECT + 1))

    run, peak = sync_measured(door, s3_server, tmp_path / "copy")
    assert run.returncode == 1, run.stdout
    assert (
        f"FAIL     s3://{s3_server.bucket}/{PREFIX}{huge}: not fetched: {MAX_OBJECT + 1} bytes, "
        "larger than any sealed object"
    ) in run.stdout
    kept = sorted(p.name for p in (tmp_path / "copy" / "objects").iterdir())
    assert kept == sorted(door.name(seq) for seq in door.objects), "nothing else, no leftover"
    assert peak < MAX_OBJECT, "the phone held the whole object"


def test_a_copy_altered_on_the_phone_is_reported_and_replaced_by_the_authentic_one(
    door: Forger,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "copy"
    upload(s3_server, door, *door.objects)
    assert sync(door, s3_server, out).returncode == 0
    copy = out / "objects" / door.name(3)
    altered = bytearray(copy.read_bytes())
    altered[-1] ^= 0x01
    copy.write_bytes(altered)

    run = sync(door, s3_server, out)
    assert run.returncode == 1, run.stdout
    assert (
        f"FAIL     {copy}: the copy fetched earlier does not verify (BadSignature: device "
        "signature does not verify): altered since it was fetched; replaced with the "
        "source's, which verifies"
    ) in run.stdout
    assert copy.read_bytes() == door.objects[3]

    again = sync(door, s3_server, out)
    assert again.returncode == 0, again.stdout


@pytest.mark.parametrize("command", ["verify", "export"])
def test_verify_and_export_show_odd_names_in_a_folder_escaped(
    door: Forger, tmp_path: Path, command: str
) -> None:
    door.write()
    (door.bucket / f"{ESC}[2J{ESC}]0;owned{chr(7)}.sealed").write_bytes(door.objects[2])
    argv = ["--home", str(door.home.directory), command, str(door.bucket)]
    run, _ = phone_measured(
        argv + (["--out", str(tmp_path / "clips")] if command == "export" else [])
    )
    assert run.returncode == 0, run.stdout
    assert ESC not in run.stdout + run.stderr
    assert (
        "\\x1b[2J\\x1b]0;owned\\x07.sealed: not the name of a sealed object, ignored" in run.stdout
    )


def test_an_oversized_file_in_the_copy_is_refused_unread_and_replaced(
    door: Forger,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "copy"
    upload(s3_server, door, *door.objects)
    assert sync(door, s3_server, out).returncode == 0
    copy = out / "objects" / door.name(3)
    with open(copy, "r+b") as grown:
        grown.truncate(MAX_OBJECT + 1)  # sparse: costs no disk

    run, peak = sync_measured(door, s3_server, out)
    assert run.returncode == 1, run.stdout
    assert (
        f"FAIL     {copy}: the copy fetched earlier does not verify ({MAX_OBJECT + 1} bytes, "
        "larger than any sealed object)"
    ) in run.stdout
    assert copy.read_bytes() == door.objects[3]
    assert peak < MAX_OBJECT, "the phone held the whole file"
