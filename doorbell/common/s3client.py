"""The minio client as the device's sink and the phone's source both set it up, and the
one-line reason they give when a request fails."""

from __future__ import annotations

import os
from xml.etree.ElementTree import ParseError

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.util import Retry, Timeout

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0

# What a failed request can raise: the server's answer (minio), the network (urllib3,
# sockets), and a reply that is not the XML it should be.
FAILURES = (MinioException, urllib3.exceptions.HTTPError, OSError, ParseError)


def s3_client(
    endpoint: str,
    *,
    access_key: str,
    secret_key: str,
    secure: bool,
    region: str | None,
    retries: Retry | bool,
) -> tuple[Minio, urllib3.PoolManager]:
    """A minio client on its own small connection pool (``pool.clear()`` closes it).

    Requests time out after 5 s connecting and 30 s between bytes; certificates are
    checked against ``SSL_CERT_FILE`` when set, else the trust store minio itself uses.
    A bad endpoint raises ``ValueError`` with minio's words, the pool already closed.
    """
    pool = urllib3.PoolManager(
        timeout=Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        retries=retries,
        maxsize=2,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    try:
        client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            # A known region spares a GetBucketLocation round trip before every bucket.
            region=region,
            http_client=pool,
        )
    except ValueError:
        pool.clear()
        raise
    return client, pool


def failure_reason(exc: BaseException) -> str:
    """One readable line: the server's error, or the operating system's words for the
    network failure rather than urllib3's nested wrappers."""
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        if isinstance(cause, TimeoutError):
            return "timed out"
        # urllib3 keeps the error it gave up on in `reason`, Python in the chain.
        reason = getattr(cause, "reason", None)
        cause = (
            reason if isinstance(reason, BaseException) else cause.__cause__ or cause.__context__
        )
    return str(exc)
