"""A real S3-compatible server for tests: moto's server mode on a free loopback port.

Import both fixtures into a test module (``from s3_fixture import moto_server, s3_server``):
one server serves the whole session, because stopping one takes half a second, and
each test gets a bucket of its own on it.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from minio import Minio
from moto.server import ThreadedMotoServer


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


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint ("127.0.0.1:PORT") of a moto server listening on loopback only."""
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
