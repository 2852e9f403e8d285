"""The README's bucket CORS rule on the test S3 server: the page at the allowed origin
may send its signed reads, any other origin's preflight is refused.

moto's server echoes any Origin in Access-Control-Allow-Origin on every answer (it
wraps all of them in a permissive CORS layer), so a refusal shows in the preflight's
status: a browser sends a signed request only after a preflight answered 2xx.
"""

from __future__ import annotations

import http.client

from s3_fixture import S3Server, cors_rule, put_cors

pytest_plugins = ["s3_fixture"]

ORIGIN = "http://127.0.0.1:8123"
SIGNED = "authorization,x-amz-date,x-amz-content-sha256"


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


def test_the_page_origin_may_list_and_read(s3_server: S3Server) -> None:
    put_cors(s3_server.endpoint, s3_server.bucket, cors_rule(ORIGIN))
    for path in (f"/{s3_server.bucket}?list-type=2", f"/{s3_server.bucket}/doorbells/x"):
        response = preflight(s3_server, path, ORIGIN)
        assert response.status == 200, path
        assert response.getheader("Access-Control-Allow-Origin") == ORIGIN
        assert response.getheader("Access-Control-Allow-Methods") == "GET, HEAD"
        allowed = response.getheader("Access-Control-Allow-Headers", "").split(", ")
        assert set(SIGNED.split(",")) <= set(allowed)
        assert response.getheader("Access-Control-Expose-Headers") == "ETag, Content-Length"


def test_another_origin_is_refused(s3_server: S3Server) -> None:
    put_cors(s3_server.endpoint, s3_server.bucket, cors_rule(ORIGIN))
    response = preflight(s3_server, f"/{s3_server.bucket}?list-type=2", "http://evil.example")
    assert response.status == 403
