"""The S3 sink and the phone's S3 source, against a real S3-compatible server (moto)."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3_fixture import S3Server, closed_port, moto_server, s3_server  # noqa: F401

from doorbell.config.errors import ConfigError
from doorbell.config.settings import S3SinkSettings
from doorbell.phone.objects import ObjectUnreadable
from doorbell.phone.s3source import S3Source, S3SourceError, parse_s3_url
from doorbell.sealing import MAX_OBJECT, Kind, SealedObject, Sealer
from doorbell.transport.s3 import S3ConfigError, S3Sink
from doorbell.transport.sink import SinkUnavailable

PREFIX = "doorbells/front/"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def settings(server: S3Server, **changes: object) -> S3SinkSettings:
    values: dict[str, object] = {
        "enabled": True,
        "endpoint": server.endpoint,
        "region": server.region,
        "bucket": server.bucket,
        "prefix": PREFIX,
        "secure": False,
    }
    values.update(changes)
    return S3SinkSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def sink(s3_server: S3Server) -> Iterator[S3Sink]:  # noqa: F811
    sink = S3Sink(settings(s3_server), environ=ENV)
    yield sink
    sink.close()


@pytest.fixture
def sealed(state_dir: Path, enrol: Callable[..., object]) -> list[SealedObject]:
    """Real sealed objects: the keyring announcement, a ring with a snapshot, a notice."""
    enrol("phone")
    with Sealer(state_dir) as sealer:
        objects = sealer.seal(Kind.EVENT, {"type": "ring"}, b"\xff\xd8snapshot")
        objects += sealer.seal_notice({"notice": "test"})
    return objects


def deliver_all(sink: S3Sink, objects: list[SealedObject]) -> None:
    for item in objects:
        sink.deliver(item.name, item.data, item.kind)


def put(server: S3Server, key: str, data: bytes) -> None:
    server.client.put_object(server.bucket, key, io.BytesIO(data), len(data))


# --- the sink ----------------------------------------------------------------------------


def test_delivered_objects_come_back_byte_identical_under_prefix_and_name(
    s3_server: S3Server,  # noqa: F811
    sink: S3Sink,
    sealed: list[SealedObject],
) -> None:
    deliver_all(sink, sealed)
    assert s3_server.keys() == sorted(PREFIX + item.name for item in sealed)
    for item in sealed:
        assert s3_server.get(PREFIX + item.name) == bytes(item.data)
        stat = s3_server.client.stat_object(s3_server.bucket, PREFIX + item.name)
        # Nothing beyond the name and the ciphertext: no event type, no metadata.
        assert stat.content_type == "application/octet-stream"
        assert not {k for k in (stat.metadata or {}) if k.lower().startswith("x-amz-meta-")}
        assert "ring" not in PREFIX + item.name


def test_delivering_again_is_idempotent(
    s3_server: S3Server,  # noqa: F811
    sink: S3Sink,
    sealed: list[SealedObject],
) -> None:
    first = sealed[1]
    sink.deliver(first.name, first.data, first.kind)
    sink.deliver(first.name, bytearray(first.data), first.kind)
    assert s3_server.keys() == [PREFIX + first.name]
    assert s3_server.get(PREFIX + first.name) == bytes(first.data)


def test_without_prefix_objects_sit_at_the_bucket_root(
    s3_server: S3Server,  # noqa: F811
    sealed: list[SealedObject],
) -> None:
    sink = S3Sink(settings(s3_server, prefix=None), environ=ENV)
    sink.deliver(sealed[0].name, sealed[0].data, sealed[0].kind)
    assert s3_server.keys() == [sealed[0].name]


def test_sink_wants_every_kind(sink: S3Sink) -> None:
    assert sink.name == "s3"
    assert all(sink.wants(kind) for kind in Kind)


def test_check_finds_the_bucket(sink: S3Sink) -> None:
    sink.check()


def test_credentials_from_key_files(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    sealed: list[SealedObject],
) -> None:
    access, secret = tmp_path / "access", tmp_path / "secret"
    access.write_text("testing\n")
    secret.write_text("testing\r\n")
    configured = settings(s3_server, access_key_file=access, secret_key_file=secret)
    sink = S3Sink(configured, environ={})
    sink.deliver(sealed[0].name, sealed[0].data, sealed[0].kind)
    assert s3_server.keys() == [PREFIX + sealed[0].name]


def test_missing_credentials_name_the_settings_and_variables(
    s3_server: S3Server,  # noqa: F811
) -> None:
    with pytest.raises(S3ConfigError) as caught:
        S3Sink(settings(s3_server), environ={"AWS_ACCESS_KEY_ID": "only-half"})
    # A configuration error like any other: the CLI and the daemon already report those.
    assert isinstance(caught.value, ConfigError)
    assert [issue.path for issue in caught.value.issues] == ["sinks.s3"]
    message = str(caught.value)
    assert "sinks.s3.access_key_file" in message and "sinks.s3.secret_key_file" in message
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
    assert "(AWS_SECRET_ACCESS_KEY not set)" in message


def test_an_unreadable_key_file_is_named(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nope"
    (tmp_path / "secret").write_text("x")
    configured = settings(s3_server, access_key_file=missing, secret_key_file=tmp_path / "secret")
    with pytest.raises(
        S3ConfigError, match=f"sinks.s3.access_key_file: cannot read the secret file {missing}"
    ):
        S3Sink(configured, environ=ENV)


def test_one_key_file_without_the_other_is_refused(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "access").write_text("x")
    configured = settings(s3_server, access_key_file=tmp_path / "access")
    with pytest.raises(S3ConfigError, match=r"^sinks\.s3\.secret_key_file: set both"):
        S3Sink(configured, environ=ENV)


def test_unreachable_endpoint_is_unavailable_at_once(
    s3_server: S3Server,  # noqa: F811
    sealed: list[SealedObject],
) -> None:
    port = closed_port()
    sink = S3Sink(settings(s3_server, endpoint=f"127.0.0.1:{port}"), environ=ENV)
    started = time.monotonic()
    with pytest.raises(SinkUnavailable, match="Connection refused") as caught:
        sink.deliver(sealed[0].name, sealed[0].data, sealed[0].kind)
    # minio's own client would retry five times with backoff; the spool retries instead.
    assert time.monotonic() - started < 2
    assert f"cannot store {PREFIX}{sealed[0].name}" in str(caught.value)
    with pytest.raises(SinkUnavailable, match="Connection refused"):
        sink.check()


def test_an_invalid_bucket_name_is_a_configuration_error(
    s3_server: S3Server,  # noqa: F811
) -> None:
    message = re.escape("sinks.s3.bucket: invalid bucket name -bad- (3 to 63 lower-case")
    with pytest.raises(S3ConfigError, match=message):
        S3Sink(settings(s3_server, bucket="-bad-"), environ=ENV)


@contextlib.contextmanager
def hanging_up_server() -> Iterator[tuple[int, list[object]]]:
    """A loopback port that accepts every connection and closes it at once, counting them."""
    accepted: list[object] = []
    done = threading.Event()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.1)

        def serve() -> None:
            while True:
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    if done.is_set():  # and the backlog is drained
                        return
                    continue
                accepted.append(connection)
                connection.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield int(server.getsockname()[1]), accepted
        finally:
            done.set()
            thread.join()


def test_a_failed_request_is_not_retried_by_the_sink(
    s3_server: S3Server,  # noqa: F811
    sealed: list[SealedObject],
) -> None:
    with hanging_up_server() as (port, accepted):
        sink = S3Sink(settings(s3_server, endpoint=f"127.0.0.1:{port}"), environ=ENV)
        with pytest.raises(SinkUnavailable):
            sink.deliver(sealed[0].name, sealed[0].data, sealed[0].kind)
    # The spool's uploader retries with its own backoff; a second layer would multiply it.
    assert len(accepted) == 1


def test_missing_bucket(s3_server: S3Server, sealed: list[SealedObject]) -> None:  # noqa: F811
    sink = S3Sink(settings(s3_server, bucket="no-such-bucket"), environ=ENV)
    with pytest.raises(SinkUnavailable, match="NoSuchBucket"):
        sink.deliver(sealed[0].name, sealed[0].data, sealed[0].kind)
    with pytest.raises(S3ConfigError, match="the bucket 'no-such-bucket' does not exist"):
        sink.check()


def test_tls_is_on_by_default(s3_server: S3Server, sealed: list[SealedObject]) -> None:  # noqa: F811
    defaults = S3SinkSettings()
    assert defaults.secure
    # The test server speaks plain http, so a TLS handshake with it must fail.
    sink = S3Sink(settings(s3_server, secure=defaults.secure), environ=ENV)
    with pytest.raises(SinkUnavailable):
        sink.deliver(sealed[0].name, sealed[0].data, sealed[0].kind)
    assert s3_server.keys() == []


# --- the phone's source --------------------------------------------------------------------


def source(server: S3Server, url: str, **changes: object) -> S3Source:
    options: dict[str, object] = {
        "endpoint": server.endpoint,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
        "secure": False,
    }
    options.update(changes)
    return S3Source(url, **options)  # type: ignore[arg-type]


def test_source_lists_only_sealed_objects_directly_under_the_prefix(
    s3_server: S3Server,  # noqa: F811
    sink: S3Sink,
    sealed: list[SealedObject],
) -> None:
    deliver_all(sink, sealed)
    name = sealed[0].name
    put(s3_server, PREFIX + "notes.txt", b"hello")
    put(s3_server, PREFIX + "old/" + name, b"elsewhere")
    put(s3_server, "doorbells/back/" + name, b"another doorbell")
    put(s3_server, name, b"at the root")

    front = source(s3_server, f"s3://{s3_server.bucket}/{PREFIX}")
    assert front.names() == sorted(item.name for item in sealed)
    assert sorted(front.ignored) == ["notes.txt", "old/"]
    for item in sealed:
        assert front.read(item.name) == bytes(item.data)
        assert front.size(item.name) == len(item.data)
    assert front.describe(name) == f"s3://{s3_server.bucket}/{PREFIX}{name}"


def test_source_tells_a_replaced_object_of_the_same_size(
    s3_server: S3Server,  # noqa: F811
    sink: S3Sink,
    sealed: list[SealedObject],
) -> None:
    """Padmé makes equal sizes common: the listing's ETag (one PUT: the MD5), else the bytes."""
    deliver_all(sink, sealed)
    item = sealed[0]
    front = source(s3_server, f"s3://{s3_server.bucket}/{PREFIX}")
    front.names()
    assert front.holds(item.name, bytes(item.data))
    other = bytearray(item.data)
    other[-1] ^= 1
    assert not front.holds(item.name, bytes(other))
    put(s3_server, PREFIX + item.name, bytes(other))
    front.names()
    assert not front.holds(item.name, bytes(item.data))
    front.etags[item.name] = "not-an-md5"  # a bucket that encrypts with its own keys
    assert front.holds(item.name, bytes(other))


def test_source_at_the_bucket_root(s3_server: S3Server) -> None:  # noqa: F811
    put(s3_server, "a.sealed", b"a")
    put(s3_server, "dir/b.sealed", b"b")
    root = source(s3_server, f"s3://{s3_server.bucket}")
    assert root.names() == ["a.sealed"]
    assert root.read("a.sealed") == b"a"
    assert root.describe("a.sealed") == f"s3://{s3_server.bucket}/a.sealed"


def test_source_refuses_objects_larger_than_any_sealed_object(
    s3_server: S3Server,  # noqa: F811
) -> None:
    put(s3_server, PREFIX + "big.sealed", bytes(MAX_OBJECT + 1))
    put(s3_server, PREFIX + "max.sealed", bytes(100))
    front = source(s3_server, f"s3://{s3_server.bucket}/{PREFIX}")
    # Without a listing, the size the server declares stops the download.
    with pytest.raises(ObjectUnreadable, match=f"{MAX_OBJECT + 1} bytes, larger than any"):
        front.read("big.sealed")
    assert front.names() == ["big.sealed", "max.sealed"]
    with pytest.raises(ObjectUnreadable, match="larger than any sealed object"):
        front.read("big.sealed")
    assert front.read("max.sealed") == bytes(100)


def test_source_read_of_a_missing_object(s3_server: S3Server) -> None:  # noqa: F811
    front = source(s3_server, f"s3://{s3_server.bucket}/{PREFIX}")
    with pytest.raises(ObjectUnreadable, match="NoSuchKey"):
        front.read("gone.sealed")


def test_source_of_a_missing_bucket(s3_server: S3Server) -> None:  # noqa: F811
    missing = source(s3_server, "s3://no-such-bucket/x/")
    with pytest.raises(
        S3SourceError, match=r"cannot list s3://no-such-bucket/x/ at .*: NoSuchBucket"
    ):
        missing.names()


def test_source_of_an_unreachable_endpoint_fails_at_once(s3_server: S3Server) -> None:  # noqa: F811
    endpoint = f"127.0.0.1:{closed_port()}"
    dead = source(s3_server, f"s3://{s3_server.bucket}/", endpoint=endpoint)
    started = time.monotonic()
    with pytest.raises(S3SourceError) as caught:
        dead.names()
    assert time.monotonic() - started < 2
    assert str(caught.value) == (
        f"cannot list s3://{s3_server.bucket}/ at {endpoint}: Connection refused"
    )
    with pytest.raises(ObjectUnreadable, match="cannot fetch: Connection refused"):
        dead.read("a.sealed")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://bucket/x", "is not an S3 URL: expected s3://BUCKET/PREFIX"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://ab/", "bucket name 'ab' must have 3 to 63 characters"),
        ("s3://Bad_Bucket/", "invalid bucket name Bad_Bucket"),
        ("s3://host:9000/x", "put the endpoint in --endpoint HOST:PORT"),
        ("s3://key:secret@bucket/x", "put the endpoint in --endpoint"),
        ("s3://bucket/x?versions", "takes no '?query' or '#fragment'"),
        ("s3://bucket/" + "p" * 513, "the prefix is longer than 512 bytes"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(S3SourceError, match=message.replace("?", r"\?")):
        parse_s3_url(url)


def test_urls_keep_the_prefix_as_written() -> None:
    assert parse_s3_url("s3://my.bucket-1/doorbells/").prefix == "doorbells/"
    assert parse_s3_url("s3://my.bucket-1/doorbells").prefix == "doorbells"
    assert parse_s3_url("s3://my.bucket-1").prefix == ""
    assert parse_s3_url("s3://my.bucket-1/a/").url == "s3://my.bucket-1/a/"


def test_an_endpoint_with_a_scheme_is_refused(s3_server: S3Server) -> None:  # noqa: F811
    with pytest.raises(S3SourceError, match="give HOST or HOST:PORT, without a scheme"):
        source(s3_server, "s3://bucket/", endpoint="http://127.0.0.1:9000")
