"""The web phone's bucket source (web/src/s3.js, run in node) against a real S3 server:
moto's, with IAM enforced for the README's read-only key, and a hostile one of our own
for a body that never ends. (The bucket's CORS rule, as a browser asks for it, is
tests/test_bucket_cors.py.)"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from s3_fixture import (  # noqa: F401 (fixtures)
    S3Server,
    closed_port,
    iam_enforced,
    iam_user,
    moto_server,
    s3_server,
)

from doorbell.sealing import MAX_OBJECT

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("s3_browser.mjs")
README = ROOT / "README.md"
PREFIX = "front/"
NAME = "0123456789abcdef-{:020d}.sealed"


def browse(source: dict[str, Any], *steps: list[str]) -> dict[str, Any]:
    """Run the steps (["names"], ["read", NAME]) with web/src/s3.js's S3Source in node."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: the web phone needs Node.js 20 (apt-get install nodejs)")
    request = json.dumps({"source": source, "steps": list(steps)})
    done = subprocess.run(
        [node, str(DRIVER)], input=request, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def source_for(
    server: S3Server, key: tuple[str, str] | None = None, **options: Any
) -> dict[str, Any]:
    access, secret = key or (server.access_key, server.secret_key)
    return {
        "endpoint": f"http://{server.endpoint}",
        "region": server.region,
        "bucket": server.bucket,
        "prefix": PREFIX,
        "accessKeyId": access,
        "secretAccessKey": secret,
        **options,
    }


def boto(endpoint: str) -> Any:
    import boto3  # minio refuses the hostile names these tests put

    return boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def put_all(server: S3Server, objects: dict[str, bytes]) -> None:
    client = boto(server.endpoint)
    with ThreadPoolExecutor(8) as pool:
        for done in pool.map(
            lambda item: client.put_object(Bucket=server.bucket, Key=item[0], Body=item[1]),
            objects.items(),
        ):
            assert done["ResponseMetadata"]["HTTPStatusCode"] == 200


def readme_section(title: str) -> str:
    text = README.read_text()
    section = text[text.index(title) :]
    return section[: section.index("\n## ", 1)]


def readme_json(title: str) -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", readme_section(title), re.DOTALL)
    return [json.loads(block) for block in blocks]


def readme_read_only_policy(bucket: str) -> dict[str, Any]:
    """The README's policy for the phones' key, with the test bucket in it."""
    [policy] = [
        p
        for p in readme_json("### A bucket the doorbell cannot empty")
        if p["Statement"][0]["Sid"] == "ReadSealedObjects"
    ]
    return json.loads(json.dumps(policy).replace("my-doorbell", bucket))  # type: ignore[no-any-return]


def error(result: dict[str, Any]) -> tuple[str, str]:
    return result["error"]["code"], result["error"]["message"]


# -- listing and reading ---------------------------------------------------------------------


def test_every_page_is_listed_and_objects_read_as_the_bucket_holds_them(
    s3_server: S3Server,  # noqa: F811
) -> None:
    objects = {PREFIX + NAME.format(i): f"object {i}".encode() * (i % 7 + 1) for i in range(1001)}
    put_all(s3_server, objects)
    names = sorted(key.removeprefix(PREFIX) for key in objects)
    some = names[1000]
    expected = objects[PREFIX + some]

    for page in (1000, 97):  # the server's own page size, and one that leaves a short last page
        answer = browse(source_for(s3_server, maxKeys=page), ["names"], ["read", some])
        listed, read = answer["results"]
        assert listed["names"] == names
        assert listed["sizes"] == {k.removeprefix(PREFIX): len(v) for k, v in objects.items()}
        assert read == {"read": len(expected), "sha256": hashlib.sha256(expected).hexdigest()}
        assert answer["strange"] == []


def test_names_that_are_not_sealed_object_names_are_reported_escaped_and_not_listed(
    s3_server: S3Server,  # noqa: F811
) -> None:
    good = NAME.format(7)
    put_all(
        s3_server,
        {
            PREFIX + good: b"sealed",
            PREFIX + "../x": b"a",
            PREFIX + "..\\x": b"a",
            PREFIX + "evil\u202egnp.sealed": b"a",
            PREFIX + "bell\x07\tring": b"a",
            PREFIX + good.upper(): b"a",
            PREFIX + good + ".part": b"a",
            PREFIX + "sub/" + good: b"a",
            "elsewhere/" + good: b"a",
        },
    )
    answer = browse(source_for(s3_server), ["names"], ["read", "../x"])
    listed, refused = answer["results"]
    assert listed["names"] == [good]
    assert sorted(answer["strange"]) == sorted(
        [
            "../",  # "../x" is in a "folder" of the listing, as "sub/" is
            "..\\\\x",
            "evil\\u{202e}gnp.sealed",
            "bell\\u{7}\\u{9}ring",
            good.upper(),
            good + ".part",
            "sub/",
        ]
    )
    assert error(refused) == (
        "not-an-object",
        '"../x" is not the name of a sealed object: not read',
    )


def test_an_object_larger_than_any_sealed_object_is_refused(
    s3_server: S3Server,  # noqa: F811
) -> None:
    big = NAME.format(1)
    put_all(s3_server, {PREFIX + big: bytes(MAX_OBJECT + 1)})
    # Unlisted, the object's Content-Length refuses it; listed, its size in the listing.
    [unlisted] = browse(source_for(s3_server), ["read", big])["results"]
    assert error(unlisted) == (
        "too-large",
        f"{big} is {MAX_OBJECT + 1} bytes, larger than any sealed object ({MAX_OBJECT}): not read",
    )
    listed = browse(source_for(s3_server), ["names"], ["read", big])["results"]
    assert listed[0]["sizes"] == {big: MAX_OBJECT + 1}
    assert error(listed[1])[0] == "too-large"
    assert "in the listing" in error(listed[1])[1]


class EndlessBucket(http.server.BaseHTTPRequestHandler):
    """A hostile bucket: every GET is answered with a chunked body that never ends and no
    length; ``sent`` counts what the client took before it hung up."""

    sent = 0
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"%x\r\n%s\r\n" % (1 << 16, bytes(1 << 16))
        try:
            # Bounded so that a client that never stops cannot keep the test going.
            while EndlessBucket.sent < 4 * MAX_OBJECT:
                self.wfile.write(chunk)
                EndlessBucket.sent += 1 << 16
        except OSError:
            return

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def endless_bucket() -> Iterator[str]:
    EndlessBucket.sent = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EndlessBucket)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_body_without_a_length_is_cut_off_once_larger_than_any_sealed_object(
    endless_bucket: str,
) -> None:
    source = {
        "endpoint": f"http://{endless_bucket}",
        "bucket": "hostile",
        "prefix": PREFIX,
        "accessKeyId": "key",
        "secretAccessKey": "secret",
    }
    [result] = browse(source, ["read", NAME.format(3)])["results"]
    assert error(result)[0] == "too-large"
    # What the client took: the limit, plus what the sockets' buffers held when it hung up.
    assert MAX_OBJECT < EndlessBucket.sent < MAX_OBJECT + 32 * 1024 * 1024


# -- keys and refusals --------------------------------------------------------------------------


def test_the_readme_read_only_key_lists_and_reads_and_a_wrong_key_is_told_clearly(
    s3_server: S3Server,  # noqa: F811
) -> None:
    name = NAME.format(9)
    put_all(s3_server, {PREFIX + name: b"sealed bytes", "back/" + name: b"other"})
    tag = uuid.uuid4().hex[:8]
    phone = iam_user(s3_server.endpoint, f"phone-{tag}", readme_read_only_policy(s3_server.bucket))
    refused = "the bucket refused the key (check the read-only key and the bucket policy)"
    with iam_enforced(s3_server.endpoint):
        listed, read = browse(source_for(s3_server, phone), ["names"], ["read", name])["results"]
        assert listed["names"] == [name]
        assert read["sha256"] == hashlib.sha256(b"sealed bytes").hexdigest()

        # (moto does not judge the listing's s3:prefix condition: only reads are tried here)
        [elsewhere] = browse(source_for(s3_server, phone, prefix="back/"), ["read", name])[
            "results"
        ]
        assert error(elsewhere) == ("refused", f"{refused} (AccessDenied: Access Denied)")

        [forged] = browse(source_for(s3_server, (phone[0], "not-the-secret")), ["names"])["results"]
        assert error(forged) == (
            "refused",
            f"{refused}: the secret access key does not belong to the access key id",
        )

        [stranger] = browse(source_for(s3_server, ("AKIANOBODY", "secret")), ["read", name])[
            "results"
        ]
        assert error(stranger) == ("refused", f"{refused}: it does not know the access key id")


def test_signatures_hold_for_prefixes_and_names_that_need_encoding(
    s3_server: S3Server,  # noqa: F811
) -> None:
    """moto checks every signature with IAM enforced: the canonical request the page
    signs must be the one botocore would build for the same URL."""
    prefix = "front door/ä+b=c&d~e/"
    name = NAME.format(11)
    put_all(s3_server, {prefix + name: b"sealed"})
    tag = uuid.uuid4().hex[:8]
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    admin = iam_user(s3_server.endpoint, f"admin-{tag}", everything)
    with iam_enforced(s3_server.endpoint):
        listed, read = browse(
            source_for(s3_server, admin, prefix=prefix, maxKeys=1), ["names"], ["read", name]
        )["results"]
    assert listed["names"] == [name]
    assert read["read"] == len(b"sealed")


def test_a_missing_bucket_and_a_missing_server_are_told_apart(
    s3_server: S3Server,  # noqa: F811
) -> None:
    [missing] = browse(source_for(s3_server, bucket="no-such-bucket-here"), ["names"])["results"]
    assert error(missing) == (
        "no-bucket",
        f'there is no bucket "no-such-bucket-here" at http://{s3_server.endpoint}: '
        "check the bucket's name, the endpoint and the region",
    )
    port = closed_port()
    [down] = browse(source_for(s3_server, endpoint=f"http://127.0.0.1:{port}"), ["names"])[
        "results"
    ]
    assert error(down) == (
        "unreachable",
        f"the bucket did not answer at http://127.0.0.1:{port}: ECONNREFUSED",
    )
