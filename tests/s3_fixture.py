"""A real S3-compatible server for tests: moto's server mode on a free loopback port.

Import both fixtures into a test module (``from s3_fixture import moto_server, s3_server``):
one server serves the whole session, because stopping one takes half a second, and
each test gets a bucket of its own on it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from minio import Minio
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from doorbell.transport.s3 import S3Sink


@dataclass(frozen=True)
class S3Server:
    """Where the test bucket is, and the minio client that made it."""

    endpoint: str  # "127.0.0.1:PORT"
    access_key: str
    secret_key: str
    region: str
    bucket: str
    client: Minio

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
        return sorted(item.object_name for item in listing if item.object_name)

    def get(self, key: str) -> bytes:
        response = self.client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()


def cors_as_s3() -> None:
    """Make moto's servers in this process answer CORS only as each bucket's rules say, as
    S3 does. Call it before a server answers its first request.

    By default moto adds ``Access-Control-Allow-Origin: *`` to every answer that has none,
    so a page could read a bucket whose CORS rule does not name the page's origin, and
    the web phone's tests would pass against a bucket that S3 would keep from it.
    """
    from moto.moto_server import werkzeug_app

    werkzeug_app.DISABLE_GLOBAL_CORS = True


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint ("127.0.0.1:PORT") of a moto server listening on loopback only, which
    answers CORS only as each bucket's rules say (`cors_as_s3`)."""
    cors_as_s3()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_server(moto_server: str) -> S3Server:
    """A fresh, empty bucket on the session's moto server (moto takes any credentials)."""
    client = Minio(
        moto_server, access_key="testing", secret_key="testing", secure=False, region="us-east-1"
    )
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    return S3Server(moto_server, "testing", "testing", "us-east-1", bucket, client)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def iam_enforced(endpoint: str) -> Iterator[None]:
    """Make the moto server check every request against IAM, as AWS does, until exit.

    moto allows everything by default; its ``reset-auth`` endpoint turns its IAM
    simulation on for every request from then on (and back off here). Create users
    before entering: with enforcement on, the "testing" key no longer exists.
    """

    def reset_auth(count: str) -> None:
        request = urllib.request.Request(
            f"http://{endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    reset_auth("0")
    try:
        yield
    finally:
        reset_auth("inf")


def _boto(service: str, endpoint: str) -> Any:
    """A boto3 client of moto's server at ``endpoint`` with the key moto takes, for the
    set-up calls minio lacks (IAM users, bucket CORS)."""
    import boto3  # moto's own dependency; only set-up needs it

    return boto3.client(
        service,
        endpoint_url=f"http://{endpoint}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def iam_user(endpoint: str, name: str, policy: dict[str, object]) -> tuple[str, str]:
    """A moto IAM user with ``policy`` as its only (inline) policy: its access key pair."""
    iam = _boto("iam", endpoint)
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def unreachable_s3_sink() -> S3Sink:
    """The product's S3 sink pointed at a loopback port nothing listens on: a sink that is down."""
    from doorbell.config.settings import S3SinkSettings
    from doorbell.transport.s3 import S3Sink

    settings = S3SinkSettings(
        enabled=True, endpoint=f"127.0.0.1:{closed_port()}", bucket="doorbell", secure=False
    )
    return S3Sink(settings, environ={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})


# The credentials moto's server takes, as a daemon or a phone finds them in its environment.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def daemon_s3_config(endpoint: str, bucket: str, prefix: str = "doorbells/") -> dict[str, object]:
    """The daemon configuration's sinks: only S3, plain HTTP to ``endpoint``, credentials
    from `S3_ENV`."""
    return {
        "sinks": {
            "local": {"enabled": False},
            "s3": {
                "enabled": True,
                "endpoint": endpoint,
                "bucket": bucket,
                "prefix": prefix,
                "secure": False,
            },
        }
    }


def cors_rule(origin: str) -> dict[str, object]:
    """The bucket CORS rule the README gives the web phone served from ``origin``: it may
    list and read (GET, HEAD) with signed requests, and read an object's ETag and size."""
    return {
        "AllowedOrigins": [origin],
        "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": [
            "authorization",
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token",
            "range",
        ],
        "ExposeHeaders": ["ETag", "Content-Length"],
        "MaxAgeSeconds": 600,
    }


def put_cors(endpoint: str, bucket: str, rule: dict[str, object]) -> None:
    """Give ``bucket`` on the moto server at ``endpoint`` ("127.0.0.1:PORT") one CORS rule,
    and make moto servers in this process answer preflights as S3 does
    (`preflights_as_s3`), so a page may read the objects the rule lets it read."""
    preflights_as_s3()
    _boto("s3", endpoint).put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})


def preflights_as_s3() -> None:
    """Make moto servers in this process answer an object's preflight from its bucket's
    CORS rules alone, as S3 does (a preflight never carries credentials).

    moto 5.2.5 judges the unsigned OPTIONS for an object that exists as an anonymous
    read and answers 403, so a browser would never send the signed GET that follows;
    its preflight for a bucket, or for an object that does not exist, is right already.
    """
    from moto.s3.responses import S3Response

    original = S3Response._key_response
    if getattr(original, "preflight_as_s3", False):
        return

    def key_response(self: Any, request: Any, full_url: str) -> Any:
        if request.method == "OPTIONS":
            bucket = self.parse_bucket_name_from_url(request, full_url)
            return self._response_options(request.headers, bucket)
        return original(self, request, full_url)

    key_response.preflight_as_s3 = True  # type: ignore[attr-defined]
    S3Response._key_response = key_response  # type: ignore[method-assign]

    # moto 5.2.5 also leaves CORS headers off a bucket's own answers (a listing), which
    # S3 sends as the rule says: without them a page cannot read the listing it may.
    listing = S3Response.bucket_response

    def bucket_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        status, answer_headers, body = listing(self, request, full_url, headers)
        if request.method in ("GET", "HEAD"):
            answer_headers = {**answer_headers, **self._get_cors_headers_other()}
        return status, answer_headers, body

    S3Response.bucket_response = bucket_response  # type: ignore[method-assign]
