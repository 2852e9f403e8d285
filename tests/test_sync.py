"""``doorbell-phone sync``: incremental copies from a directory or a real S3 server (moto),
verification of the copy, and clips exported once, from real sealed H.264."""

from __future__ import annotations

import io
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import av
import pytest
from s3_fixture import S3Server, closed_port, moto_server, s3_server  # noqa: F401

from doorbell.capture import InitSegment, MediaSegment, Segmenter, SyntheticSource
from doorbell.config.settings import S3SinkSettings
from doorbell.phone.cli import main
from doorbell.phone.home import PhoneHome
from doorbell.phone.sync import LocalSource, sync
from doorbell.sealing import KeyringStore, Kind, SealedObject, Sealer, Suite
from doorbell.transport.local import LocalDirectorySink
from doorbell.transport.s3 import S3Sink
from doorbell.transport.sink import Sink

Capture = pytest.CaptureFixture[str]

TIME = datetime(2026, 11, 29, 21, 50, 7, tzinfo=UTC)
STREAM, CLIP = "5" * 32, "c" * 32
CLIP_FILE = "20261129-215007-ring-cccccccc.mp4"
PREFIX = "doorbells/front/"
SNAPSHOT = b"\xff\xd8\xff\xe0 a snapshot"


@dataclass(frozen=True)
class Media:
    """Four one-second segments of real H.264 in fragmented MP4, as the segmenter cuts it."""

    init: InitSegment
    segments: list[MediaSegment]

    def frames(self, count: int | None = None) -> int:
        return sum(segment.frames for segment in self.segments[:count])


@pytest.fixture(scope="module")
def media() -> Media:
    source = SyntheticSource(320, 240, 15, keyframe_seconds=1, seconds=4, realtime=False)
    segmenter = Segmenter(source.format, 1.0)
    try:
        out = [segment for unit in source.frames() for segment in segmenter.feed(unit)]
    finally:
        source.close()
    init, *segments = out + segmenter.flush()
    assert isinstance(init, InitSegment)
    assert all(isinstance(s, MediaSegment) for s in segments) and len(segments) == 4
    return Media(init, segments)  # type: ignore[arg-type]


@dataclass
class Doorbell:
    """A doorbell with one enrolled phone, which trusts it."""

    phone: PhoneHome
    sealer: Sealer

    @property
    def device(self) -> str:
        return self.sealer.device_id.hex()[:16]

    def start_clip(self, media: Media, segments: int) -> list[SealedObject]:
        """The init, the ring and the first `segments` segments of the clip."""
        fmt = media.init.format
        meta = {"stream": STREAM, "codec": "h264", "width": fmt.width, "height": fmt.height}
        objects = self.sealer.seal(Kind.INIT, {**meta, "fps": fmt.fps}, media.init.data)
        ring = {"type": "ring", "clip": CLIP, "stream": STREAM, "first_index": 0}
        objects += self.sealer.seal(Kind.EVENT, ring, SNAPSHOT)
        return objects + self.segments(media, range(segments))

    def segments(self, media: Media, indexes: range) -> list[SealedObject]:
        objects = []
        for segment in media.segments[indexes.start : indexes.stop]:
            meta = {
                "stream": STREAM,
                "index": segment.index,
                "start": segment.start,
                "duration": segment.duration,
                "frames": segment.frames,
            }
            objects += self.sealer.seal(Kind.SEGMENT, meta, segment.data)
        return objects

    def end_clip(self, media: Media) -> list[SealedObject]:
        end = {"notice": "clip-end", "clip": CLIP, "stream": STREAM, "last_index": 3}
        end |= {"reason": "post-roll"}
        return self.sealer.seal(Kind.NOTICE, end)

    def clip(self, media: Media) -> list[SealedObject]:
        return self.start_clip(media, 4) + self.end_clip(media)


@pytest.fixture
def doorbell(tmp_path: Path) -> Iterator[Doorbell]:
    phone = PhoneHome(tmp_path / "phone")
    identity = phone.init(Suite.X25519)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with KeyringStore(state).editing() as box:
        box[0] = box[0].add("phone", identity.public_key(), TIME)
    sealer = Sealer(state, clock=TIME.timestamp)
    phone.trust(sealer.device_key, "front door")
    yield Doorbell(phone, sealer)
    sealer.close()


def run(doorbell: Doorbell, *argv: str) -> int:
    return main(["--home", str(doorbell.phone.directory), *argv])


def upload(sink: Sink, objects: list[SealedObject]) -> None:
    try:
        for sealed in objects:
            sink.deliver(sealed.name, sealed.data, sealed.kind)
    finally:
        sink.close()


def to_directory(bucket: Path, objects: list[SealedObject]) -> None:
    upload(LocalDirectorySink(bucket), objects)


def to_s3(server: S3Server, objects: list[SealedObject]) -> None:
    settings = S3SinkSettings(
        enabled=True,
        endpoint=server.endpoint,
        region=server.region,
        bucket=server.bucket,
        prefix=PREFIX,
        secure=False,
    )
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    upload(S3Sink(settings, environ=env), objects)


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def s3_args(server: S3Server, out: Path) -> list[str]:
    url = f"s3://{server.bucket}/{PREFIX}"
    return ["sync", url, "--out", str(out), "--endpoint", server.endpoint, "--insecure"]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


# --- incremental copies and exports ----------------------------------------------------------


def test_sync_from_a_directory_fetches_verifies_and_exports_once(
    doorbell: Doorbell, media: Media, tmp_path: Path, capsys: Capture
) -> None:
    bucket, out = tmp_path / "bucket", tmp_path / "copy"
    objects = doorbell.clip(media)
    to_directory(bucket, objects)
    (bucket / "README.txt").write_text("not footage")

    assert run(doorbell, "sync", str(bucket), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"fetched  {len(objects)} new object(s) from {bucket} (0 already here)" in printed
    assert "ignored  README.txt: not the name of a sealed object" in printed
    mp4 = out / "clips" / CLIP_FILE
    assert f"clip     {mp4}  (ring, 4 segment(s), 4.0 s, snapshot {mp4.stem}.jpg)" in printed
    assert printed.splitlines()[-1] == (
        f"ok: {len(objects)} object(s) verified in {out / 'objects'} ({len(objects)} new), "
        "1 clip(s) exported, 0 updated; gaps: 0 announced, 0 unexplained"
    )
    for sealed in objects:
        copy = out / "objects" / sealed.name
        assert copy.read_bytes() == bytes(sealed.data)
        assert stat.S_IMODE(copy.stat().st_mode) == 0o644
    assert sorted(p.name for p in (out / "objects").iterdir()) == sorted(o.name for o in objects)
    assert decoded_frames(mp4) == media.frames() == 60
    assert mp4.with_suffix(".jpg").read_bytes() == SNAPSHOT
    state = json.loads((out / "sync-state.json").read_text())
    assert state["clips"][CLIP] == {
        "file": CLIP_FILE,
        "segments": 4,
        "ended": True,
        "complete": True,
    }

    exported_at = mp4.stat().st_mtime_ns
    assert run(doorbell, "sync", str(bucket), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"fetched  0 new object(s) from {bucket} ({len(objects)} already here)" in printed
    assert "0 clip(s) exported, 0 updated" in printed
    assert "clip  " not in printed
    assert mp4.stat().st_mtime_ns == exported_at
    assert sorted(p.name for p in (out / "clips").iterdir()) == [f"{mp4.stem}.jpg", CLIP_FILE]


@pytest.mark.parametrize("credentials", ["environment", "files"])
def test_sync_from_s3(
    doorbell: Doorbell,
    media: Media,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    capsys: Capture,
    monkeypatch: pytest.MonkeyPatch,
    credentials: str,
) -> None:
    objects = doorbell.clip(media)
    to_s3(s3_server, objects)
    for key, data in ((PREFIX + "README.sealed", b"x"), ("doorbells/back/" + objects[0].name, b"")):
        s3_server.client.put_object(s3_server.bucket, key, io.BytesIO(data), len(data))
    out = tmp_path / "copy"
    args = s3_args(s3_server, out)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    if credentials == "files":
        (tmp_path / "access").write_text("testing\n")
        (tmp_path / "secret").write_text("testing\n")
        args += ["--access-key-file", str(tmp_path / "access")]
        args += ["--secret-key-file", str(tmp_path / "secret")]
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    assert run(doorbell, *args) == 0
    printed = capsys.readouterr().out
    url = f"s3://{s3_server.bucket}/{PREFIX}"
    assert f"fetched  {len(objects)} new object(s) from {url} (0 already here)" in printed
    assert "ignored  README.sealed: not the name of a sealed object" in printed
    assert sorted(p.name for p in (out / "objects").iterdir()) == sorted(o.name for o in objects)
    assert decoded_frames(out / "clips" / CLIP_FILE) == media.frames()

    assert run(doorbell, *args) == 0
    printed = capsys.readouterr().out
    assert f"fetched  0 new object(s) from {url} ({len(objects)} already here)" in printed
    assert "0 clip(s) exported, 0 updated" in printed


def test_an_interrupted_sync_continues(doorbell: Doorbell, media: Media, tmp_path: Path) -> None:
    bucket, out = tmp_path / "bucket", tmp_path / "copy"
    objects = doorbell.clip(media)
    to_directory(bucket, objects)
    # What a sync killed mid-way leaves: some objects, and a temporary file half written.
    copied, rest = objects[::2], objects[1::2]
    (out / "objects").mkdir(parents=True)
    for sealed in copied:
        shutil.copy(bucket / sealed.name, out / "objects" / sealed.name)
    partial = out / "objects" / f".{rest[0].name}.4242.tmp"
    partial.write_bytes(bytes(rest[0].data[: len(rest[0].data) // 2]))

    report = sync(LocalSource(bucket), out, doorbell.phone.reader())

    assert report.ok, report.problems
    assert report.fetched == [sealed.name for sealed in rest]
    assert report.present == len(copied)
    assert not partial.exists()
    assert sorted(p.name for p in (out / "objects").iterdir()) == sorted(o.name for o in objects)
    for sealed in objects:
        assert (out / "objects" / sealed.name).read_bytes() == bytes(sealed.data)
    assert [clip.path.name for clip in report.clips] == [CLIP_FILE]
    assert decoded_frames(out / "clips" / CLIP_FILE) == media.frames()


def test_a_clip_still_arriving_is_exported_again_when_more_arrives(
    doorbell: Doorbell, media: Media, tmp_path: Path
) -> None:
    bucket, out = tmp_path / "bucket", tmp_path / "copy"
    mp4 = out / "clips" / CLIP_FILE
    to_directory(bucket, doorbell.start_clip(media, 2))
    first = sync(LocalSource(bucket), out, doorbell.phone.reader())
    assert [clip.path for clip in first.clips] == [mp4]
    assert any("no end marker" in note for note in first.export_notes)
    assert decoded_frames(mp4) == media.frames(2)

    again = sync(LocalSource(bucket), out, doorbell.phone.reader())
    assert again.clips == again.updated == [], "nothing new arrived"

    to_directory(bucket, doorbell.segments(media, range(2, 4)) + doorbell.end_clip(media))
    more = sync(LocalSource(bucket), out, doorbell.phone.reader())
    assert more.clips == []
    assert [clip.path for clip in more.updated] == [mp4]
    assert more.export_notes == []
    assert decoded_frames(mp4) == media.frames()
    assert sorted(p.name for p in (out / "clips").iterdir()) == [f"{mp4.stem}.jpg", CLIP_FILE]

    done = sync(LocalSource(bucket), out, doorbell.phone.reader())
    assert done.fetched == done.clips == done.updated == []


# --- what verification finds ----------------------------------------------------------------


def test_an_object_deleted_from_the_bucket_fails_naming_its_seq(
    doorbell: Doorbell,
    media: Media,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    capsys: Capture,
    aws_env: None,
) -> None:
    objects = doorbell.clip(media)
    to_s3(s3_server, objects)
    deleted = next(o for o in objects if o.kind is Kind.SEGMENT)
    s3_server.client.remove_object(s3_server.bucket, PREFIX + deleted.name)

    assert run(doorbell, *s3_args(s3_server, tmp_path / "copy")) == 1
    printed = capsys.readouterr().out
    assert (
        f"FAIL     device {doorbell.device}: missing seq {deleted.seq} "
        "(deleted or never delivered)" in printed
    )
    assert printed.splitlines()[-1].startswith("FAILED: 1 problem(s); ")
    assert printed.splitlines()[-1].endswith("gaps: 0 announced, 1 unexplained")


def test_an_announced_quota_gap_is_reported_but_not_a_failure(
    doorbell: Doorbell,
    media: Media,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    capsys: Capture,
    aws_env: None,
) -> None:
    objects = doorbell.clip(media)
    evicted = [o for o in objects if o.kind is Kind.SEGMENT][1:3]
    last_hash = doorbell.phone.reader().verify(evicted[-1].data).chain_hash.hex()
    gap = {"first": evicted[0].seq, "last": evicted[-1].seq, "last_hash": last_hash}
    objects += doorbell.sealer.seal_notice(
        {"notice": "discarded", "reason": "quota", "ranges": [gap]}
    )
    to_s3(s3_server, [o for o in objects if o not in evicted])

    out = tmp_path / "copy"
    assert run(doorbell, *s3_args(s3_server, out)) == 0
    printed = capsys.readouterr().out
    assert (
        f"gap      device {doorbell.device}: seq {evicted[0].seq}..{evicted[-1].seq} "
        "announced as quota" in printed
    )
    assert "FAIL" not in printed
    assert printed.splitlines()[-1].endswith("gaps: 1 announced, 0 unexplained")
    assert "segments 1..2 are missing; the clip has a gap" in printed
    assert decoded_frames(out / "clips" / CLIP_FILE) == media.frames() - sum(
        s.frames for s in media.segments[1:3]
    )


def test_an_object_replaced_in_the_source_keeps_the_copy_fetched_first(
    doorbell: Doorbell, media: Media, tmp_path: Path, capsys: Capture
) -> None:
    bucket, out = tmp_path / "bucket", tmp_path / "copy"
    objects = doorbell.clip(media)
    to_directory(bucket, objects)
    assert run(doorbell, "sync", str(bucket), "--out", str(out)) == 0
    capsys.readouterr()
    target = objects[2]
    # Same size (Padmé makes equal sizes common): only the content tells.
    replaced = bytearray(target.data)
    replaced[100] ^= 1
    (bucket / target.name).write_bytes(replaced)

    assert run(doorbell, "sync", str(bucket), "--out", str(out)) == 1
    printed = capsys.readouterr().out
    assert (
        f"FAIL     {bucket / target.name}: differs from the copy fetched earlier: replaced in "
        "the source; kept the earlier copy" in printed
    )
    assert (out / "objects" / target.name).read_bytes() == bytes(target.data)


# --- user errors: exit 2, one line, no traceback ---------------------------------------------


@pytest.mark.parametrize(
    ("source", "extra", "message"),
    [
        ("s3://ab/x", [], "'s3://ab/x': bucket name 'ab' must have 3 to 63 characters"),
        ("ftp://host/x", [], "'ftp://host/x': ftp:// is not supported: give a directory or s3://"),
        ("s3://a-bucket/x", ["--access-key-file", "k"], "give both --access-key-file and"),
        (
            "s3://a-bucket/x",
            ["--access-key-file", "{tmp}/none", "--secret-key-file", "{tmp}/none"],
            "--access-key-file: cannot read the secret file {tmp}/none: No such file",
        ),
        ("{tmp}/nowhere", [], "{tmp}/nowhere is not a directory"),
        ("s3://{bucket}/", ["--endpoint", "{dead}", "--insecure"], "cannot list s3://{bucket}/"),
    ],
    ids=[
        "bad-bucket",
        "bad-scheme",
        "half-credentials",
        "no-secret-file",
        "no-directory",
        "unreachable",
    ],
)
def test_user_errors_exit_2_with_one_line(
    doorbell: Doorbell,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    capsys: Capture,
    aws_env: None,
    source: str,
    extra: list[str],
    message: str,
) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    values = {"tmp": str(tmp_path), "bucket": s3_server.bucket, "dead": dead}
    argv = [a.format(**values) for a in ["sync", source, "--out", str(tmp_path / "o"), *extra]]
    assert run(doorbell, *argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("doorbell-phone: " + message.format(**values))
    assert captured.err.count("\n") == 1


def test_missing_credentials_exit_2(
    doorbell: Doorbell, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "only-half")
    assert run(doorbell, "sync", "s3://a-bucket/x/", "--out", str(tmp_path / "o")) == 2
    assert capsys.readouterr().err == (
        "doorbell-phone: no S3 credentials: give --access-key-file and --secret-key-file, "
        "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\n"
    )
    # A bad URL is reported before the missing credentials.
    assert run(doorbell, "sync", "s3://A/x/", "--out", str(tmp_path / "o")) == 2
    assert "bucket name 'A' must have 3 to 63 characters" in capsys.readouterr().err


def test_a_damaged_state_file_exits_2(
    doorbell: Doorbell, media: Media, tmp_path: Path, capsys: Capture
) -> None:
    bucket, out = tmp_path / "bucket", tmp_path / "copy"
    to_directory(bucket, doorbell.clip(media))
    out.mkdir()
    (out / "sync-state.json").write_text("{not json")
    assert run(doorbell, "sync", str(bucket), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"doorbell-phone: {out / 'sync-state.json'} is damaged (")
    assert err.endswith("remove it to export every clip again\n")


def test_an_unreachable_endpoint_prints_no_traceback(doorbell: Doorbell, tmp_path: Path) -> None:
    code = "import sys; from doorbell.phone.cli import main; sys.exit(main(sys.argv[1:]))"
    endpoint = f"127.0.0.1:{closed_port()}"
    argv = ["--home", str(doorbell.phone.directory), "sync", "s3://a-bucket/p/"]
    argv += ["--out", str(tmp_path / "o"), "--endpoint", endpoint, "--insecure"]
    env = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    result = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        f"doorbell-phone: cannot list s3://a-bucket/p/ at {endpoint}: Connection refused\n"
    )
    assert result.stdout == ""
