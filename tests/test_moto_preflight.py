"""The web rig's S3 server (moto's own ThreadedMotoServer, as tests/web_rig.py starts it)
answers a page's preflights as S3 does once a bucket has its CORS rule: for the bucket
and for every object in it, from the rule alone."""

from __future__ import annotations

import http.client
import io
from collections.abc import Iterator

import pytest
from minio import Minio
from moto.server import ThreadedMotoServer
from s3_fixture import cors_rule, put_cors

ORIGIN = "http://127.0.0.1:8088"
BUCKET = "doorbell-web"
KEY = "doorbells/0123456789abcdef-00000000000000000001.sealed"


@pytest.fixture
def rig_moto() -> Iterator[tuple[str, int]]:
    """A moto server started as the web rig starts it, with one object in a bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = Minio(f"{host}:{port}", access_key="testing", secret_key="testing", secure=False)
        client.make_bucket(BUCKET)
        client.put_object(BUCKET, KEY, io.BytesIO(b"sealed"), 6)
        put_cors(f"{host}:{port}", BUCKET, cors_rule(ORIGIN))
        yield host, port
    finally:
        server.stop()


def preflight(address: tuple[str, int], path: str, origin: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(*address, timeout=10)
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,x-amz-date,x-amz-content-sha256,range",
    }
    connection.request("OPTIONS", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_an_object_that_exists_is_preflighted_from_the_bucket_rule(
    rig_moto: tuple[str, int],
) -> None:
    for path in (f"/{BUCKET}?list-type=2&prefix=doorbells/", f"/{BUCKET}/{KEY}"):
        response = preflight(rig_moto, path, ORIGIN)
        assert response.status == 200, path
        assert response.getheader("Access-Control-Allow-Origin") == ORIGIN
        assert response.getheader("Access-Control-Allow-Methods") == "GET, HEAD"


def test_another_origin_is_still_refused(rig_moto: tuple[str, int]) -> None:
    for path in (f"/{BUCKET}?list-type=2", f"/{BUCKET}/{KEY}"):
        assert preflight(rig_moto, path, "http://evil.example").status == 403, path
