"""Reads sealed objects straight from an S3-compatible bucket: the phone's ``s3://`` source.

Everything the bucket returns is hostile input: listings are filtered to plain
``*.sealed`` names directly under the prefix, and no object larger than the largest
sealed object is ever downloaded.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from minio.helpers import check_bucket_name
from urllib3.util import Retry

from doorbell.common.s3client import FAILURES, failure_reason, s3_client
from doorbell.phone.objects import (
    Digest,
    Guarded,
    ObjectUnreadable,
    Writer,
    copy_bounded,
    shown,
)
from doorbell.sealing import MAX_OBJECT

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "s3.amazonaws.com"
# S3 keys are at most 1024 bytes; the object name itself takes 44.
MAX_PREFIX = 512

_FAILURES = (*FAILURES, ValueError)


class S3SourceError(Exception):
    """The bucket cannot be listed as asked: a bad URL, endpoint or bucket, or no answer."""


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix``: the prefix is used as written, like the sink's ``prefix``."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_s3_url(url: str) -> S3Location:
    """Split and check ``s3://bucket/prefix``; raise `S3SourceError` naming what is wrong."""
    if not url.startswith("s3://"):
        raise S3SourceError(f"{url!r} is not an S3 URL: expected s3://BUCKET/PREFIX")
    parts = urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise S3SourceError(f"{url!r}: an S3 URL takes no '?query' or '#fragment'")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise S3SourceError(
            f"{url!r}: put the endpoint in --endpoint HOST:PORT and credentials in files or "
            "the environment, not in the URL"
        )
    bucket = parts.netloc
    if not bucket:
        raise S3SourceError(f"{url!r} names no bucket: expected s3://BUCKET/PREFIX")
    if not 3 <= len(bucket) <= 63:
        raise S3SourceError(f"{url!r}: bucket name {bucket!r} must have 3 to 63 characters")
    try:
        check_bucket_name(bucket, strict=True)
    except ValueError as exc:
        raise S3SourceError(
            f"{url!r}: {exc} (lower-case letters, digits, '.' and '-' only)"
        ) from None
    prefix = parts.path.removeprefix("/")
    if len(prefix.encode()) > MAX_PREFIX:
        raise S3SourceError(f"{url!r}: the prefix is longer than {MAX_PREFIX} bytes")
    return S3Location(bucket, prefix)


class S3Source:
    """The ``*.sealed`` objects directly under ``s3://bucket/prefix``, as an ObjectSource.

    ``sizes`` holds the size the listing gave for each name, so a sync can skip what it
    already has without a request per object; ``ignored`` the other names, escaped.
    Requests time out after 5 s (connect) and 30 s (between bytes); a refused connection
    is not retried, so an unreachable endpoint is reported at once, while a server's
    passing 5xx is retried twice.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        secure: bool = True,
    ) -> None:
        self.location = parse_s3_url(url)
        self.endpoint = endpoint
        if not endpoint or "/" in endpoint:
            raise S3SourceError(
                f"endpoint {endpoint!r}: give HOST or HOST:PORT, without a scheme or path "
                "(plain http is --insecure)"
            )
        try:
            self._client, self._http = s3_client(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                # A refused connection is reported at once; a passing 5xx is retried twice.
                retries=Retry(
                    total=2, connect=0, backoff_factor=0.5, status_forcelist=(502, 503, 504)
                ),
            )
        except ValueError as exc:
            raise S3SourceError(f"endpoint {endpoint!r}: {exc}") from None
        self.sizes: dict[str, int] = {}
        self.etags: dict[str, str] = {}
        self.ignored: list[str] = []

    def names(self) -> list[str]:
        """List the bucket: raises `S3SourceError` when it cannot (unreachable, no bucket)."""
        location = self.location
        self.sizes.clear()
        self.etags.clear()
        self.ignored.clear()
        try:
            for item in self._client.list_objects(
                location.bucket, prefix=location.prefix or None, recursive=False
            ):
                key = item.object_name or ""
                name = key.removeprefix(location.prefix)
                if item.is_dir or not key.startswith(location.prefix):
                    self.ignored.append(shown(name))
                elif name.endswith(".sealed") and "/" not in name and isinstance(item.size, int):
                    self.sizes[name] = item.size
                    self.etags[name] = (item.etag or "").strip('"').lower()
                else:
                    self.ignored.append(shown(name))
        except _FAILURES as exc:
            raise S3SourceError(
                f"cannot list {location.url} at {self.endpoint}: {failure_reason(exc)}"
            ) from None
        log.debug(
            "%s: %d sealed object(s), %d other name(s)",
            location.url,
            len(self.sizes),
            len(self.ignored),
        )
        return sorted(self.sizes)

    def read(self, name: str) -> bytes:
        buffer = io.BytesIO()
        self.copy(name, buffer)
        return buffer.getvalue()

    def copy(self, name: str, out: Writer) -> int:
        """Write object ``name`` into ``out`` as it arrives; returns its size. Refused, having
        read at most one byte more, when larger than any sealed object, whatever the listing
        or the headers claimed."""
        key = self.location.prefix + name
        listed = self.sizes.get(name)
        if listed is not None and listed > MAX_OBJECT:
            raise ObjectUnreadable(f"{listed} bytes, larger than any sealed object")
        try:
            response = self._client.get_object(self.location.bucket, key)
        except _FAILURES as exc:
            raise ObjectUnreadable(f"cannot fetch: {failure_reason(exc)}") from None
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_OBJECT:
                raise ObjectUnreadable(f"{declared} bytes, larger than any sealed object")
            return copy_bounded(Guarded(response, _FAILURES, _cannot_fetch), out)
        finally:
            response.close()
            response.release_conn()

    def describe(self, name: str) -> str:
        return self.location.url + name

    def size(self, name: str) -> int | None:
        """The size the last listing gave, without a request."""
        return self.sizes.get(name)

    def holds(self, name: str, data: bytes) -> bool:
        """Whether object ``name`` is byte for byte ``data``.

        The device stores each object with one PUT, so a plain bucket's ETag is the MD5 of
        its bytes, which the listing gave: no request. An ETag that is no MD5 of ``data``
        (another upload, or a bucket encrypting with its own keys) is settled by fetching
        the object, as it arrives, and comparing digests."""
        if self.sizes.get(name) != len(data):
            return False
        if self.etags.get(name) == hashlib.md5(data, usedforsecurity=False).hexdigest():
            return True
        digest = Digest()
        self.copy(name, digest)
        return digest.matches(data)

    def close(self) -> None:
        self._http.clear()


def _cannot_fetch(exc: Exception) -> str:
    return f"cannot fetch: {failure_reason(exc)}"
