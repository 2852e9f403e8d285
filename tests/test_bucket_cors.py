"""The README's bucket CORS rule on the test S3 server: the page at the allowed origin
may send its signed reads and read their answers, any other origin's preflight is
refused and its answers are not the page's to read.

The test server answers CORS as S3 does: only as the bucket's rule says (s3_fixture's
``cors_as_s3``), and an object's preflight from that rule alone (``preflights_as_s3``).
"""

from __future__ import annotations

import http.client
import io
import json
import re
from pathlib import Path
from typing import Any

from s3_fixture import S3Server, cors_rule, put_cors

pytest_plugins = ["s3_fixture"]

README = Path(__file__).resolve().parents[1] / "README.md"
ORIGIN = "http://127.0.0.1:8123"
SIGNED = "authorization,x-amz-date,x-amz-content-sha256"
KEY = "doorbells/0123456789abcdef-00000000000000000001.sealed"


def preflight(server: S3Server, path: str, origin: str) -> http.client.HTTPResponse:
    host, port = server.endpoint.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": SIGNED,
    }
    connection.request("OPTIONS", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def signed_get(server: S3Server, key: str, origin: str) -> dict[str, str]:
    """The headers of the answer to a signed GetObject sent with ``Origin``, as a page's."""
    import boto3  # moto's own dependency; it lets the test add Origin before signing

    client = boto3.client(
        "s3",
        endpoint_url=f"http://{server.endpoint}",
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )

    def add_origin(request: Any, **_: Any) -> None:
        request.headers["Origin"] = origin

    client.meta.events.register("before-sign.s3.GetObject", add_origin)
    answer = client.get_object(Bucket=server.bucket, Key=key)
    answer["Body"].read()
    return answer["ResponseMetadata"]["HTTPHeaders"]  # type: ignore[no-any-return]


def test_the_page_origin_may_list_and_read(s3_server: S3Server) -> None:
    s3_server.client.put_object(s3_server.bucket, KEY, io.BytesIO(b"sealed"), 6)
    put_cors(s3_server.endpoint, s3_server.bucket, cors_rule(ORIGIN))
    for path in (f"/{s3_server.bucket}?list-type=2", f"/{s3_server.bucket}/{KEY}"):
        response = preflight(s3_server, path, ORIGIN)
        assert response.status == 200, path
        assert response.getheader("Access-Control-Allow-Origin") == ORIGIN
        assert response.getheader("Access-Control-Allow-Methods") == "GET, HEAD"
        allowed = response.getheader("Access-Control-Allow-Headers", "").split(", ")
        assert set(SIGNED.split(",")) <= set(allowed)
        assert response.getheader("Access-Control-Expose-Headers") == "ETag, Content-Length"
    read = signed_get(s3_server, KEY, ORIGIN)
    assert read["access-control-allow-origin"] == ORIGIN
    assert read["access-control-expose-headers"] == "ETag, Content-Length"


def test_another_origin_is_refused(s3_server: S3Server) -> None:
    s3_server.client.put_object(s3_server.bucket, KEY, io.BytesIO(b"sealed"), 6)
    put_cors(s3_server.endpoint, s3_server.bucket, cors_rule(ORIGIN))
    for path in (f"/{s3_server.bucket}?list-type=2", f"/{s3_server.bucket}/{KEY}"):
        response = preflight(s3_server, path, "http://evil.example")
        assert response.status == 403, path
        assert response.getheader("Access-Control-Allow-Origin") is None
    # Nothing lets that page read an answer either, had it sent the request anyway.
    assert "access-control-allow-origin" not in signed_get(s3_server, KEY, "http://evil.example")


def test_the_readme_rule_is_the_one_the_tests_give_their_buckets() -> None:
    text = README.read_text()
    section = text[text.index("## The web phone") :]
    section = section[: section.index("\n## ", 1)]
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    [configuration] = [block for block in blocks if "CORSRules" in block]
    [rule] = configuration["CORSRules"]
    assert rule["AllowedOrigins"] == ["https://phone.example.org", "http://127.0.0.1:8088"]
    assert {**rule, "AllowedOrigins": [ORIGIN]} == cors_rule(ORIGIN)
