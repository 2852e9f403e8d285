"""The S3 sink: uploads sealed objects to any S3-compatible bucket through the minio client.

The bucket sees ciphertext under ``<prefix><device16>-<seq20>.sealed`` with a generic
content type and no metadata: nothing about the event, the camera or the time of day.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from xml.etree.ElementTree import ParseError

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from minio.helpers import MIN_PART_SIZE, check_bucket_name
from urllib3.util import Timeout

from doorbell.config.errors import ConfigError, ConfigIssue
from doorbell.config.secret import read_secret
from doorbell.config.settings import S3SinkSettings
from doorbell.sealing import Kind
from doorbell.transport.sink import SinkUnavailable

log = logging.getLogger(__name__)

ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0

# What a failed request can raise: the server's answer (minio), the network (urllib3,
# sockets), and a reply that is not the XML it should be.
_FAILURES = (MinioException, urllib3.exceptions.HTTPError, OSError, ParseError)


class S3ConfigError(ConfigError):
    """The S3 sink cannot work as configured. A `ConfigError`, so the CLI and the daemon
    report it like any other configuration mistake: the setting, then what is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__([ConfigIssue(path, None, message)])


class S3Sink:
    """One bucket (and optional key prefix) on an S3-compatible endpoint.

    Requests fail fast (5 s to connect, 30 s between bytes) and are never retried
    here: the spool's uploader owns retrying, with its own backoff, so a dead
    endpoint costs one short timeout per attempt instead of a stack of hidden retries.
    """

    name = "s3"

    def __init__(self, settings: S3SinkSettings, *, environ: Mapping[str, str] = os.environ):
        if not settings.bucket:
            raise S3ConfigError("sinks.s3.bucket", "a bucket name is required")
        try:
            check_bucket_name(settings.bucket)
        except ValueError as exc:
            raise S3ConfigError(
                "sinks.s3.bucket", f"{exc} (3 to 63 lower-case letters, digits, '.' and '-')"
            ) from None
        self.bucket = settings.bucket
        self.prefix = settings.prefix or ""
        self.endpoint = settings.endpoint
        access_key, secret_key = _credentials(settings, environ)
        self._http = urllib3.PoolManager(
            timeout=Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
            retries=False,
            maxsize=2,
            cert_reqs="CERT_REQUIRED",
            # The same trust store minio itself would use.
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        try:
            self._client = Minio(
                settings.endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=settings.secure,
                # A known region spares a GetBucketLocation round trip before every bucket.
                region=settings.region,
                http_client=self._http,
            )
        except ValueError as exc:
            self._http.clear()
            raise S3ConfigError("sinks.s3.endpoint", f"{settings.endpoint!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"S3Sink({self.where})"

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"

    def wants(self, kind: Kind) -> bool:
        return True

    def deliver(self, name: str, data: bytes | bytearray, kind: Kind) -> None:
        """Store ``data`` as ``prefix + name``; a second delivery rewrites identical bytes."""
        key = self.prefix + name
        try:
            self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type="application/octet-stream",
                # One PUT, never a multipart upload: a request is stored whole or not at
                # all, and a power cut mid-upload leaves no orphaned parts in the bucket.
                part_size=max(MIN_PART_SIZE, len(data)),
            )
        except _FAILURES as exc:
            raise SinkUnavailable(f"{self.where}: cannot store {key}: {_reason(exc)}") from exc
        log.debug("stored %s in %s (%d bytes)", key, self.bucket, len(data))

    def check(self) -> None:
        """Prove the endpoint answers and the bucket exists, for ``doorbell doctor``.

        Raises `SinkUnavailable` when the endpoint cannot be reached or refuses the
        credentials, and `S3ConfigError` when it answers that there is no such bucket.
        """
        try:
            exists = self._client.bucket_exists(self.bucket)
        except _FAILURES as exc:
            raise SinkUnavailable(f"{self.where}: {_reason(exc)}") from exc
        if not exists:
            raise S3ConfigError(
                "sinks.s3.bucket", f"the bucket {self.bucket!r} does not exist at {self.endpoint}"
            )

    def can_delete(self) -> bool:
        """Whether these credentials may delete objects in the bucket, for ``doorbell doctor``.

        Sends a DeleteObject for a random key under the prefix that does not exist: S3
        answers 204 when deleting is allowed and 403 (AccessDenied) when it is denied,
        and deletes nothing either way. On a versioned bucket an allowed probe leaves a
        delete marker on that random key, which hides nothing. Raises `SinkUnavailable`
        when the endpoint does not answer the question.
        """
        key = f"{self.prefix}doorbell-doctor-probe-{secrets.token_hex(16)}"
        try:
            self._client.remove_object(self.bucket, key)
        except S3Error as exc:
            if exc.code == "AccessDenied":
                return False
            raise SinkUnavailable(f"{self.where}: {_reason(exc)}") from exc
        except _FAILURES as exc:
            raise SinkUnavailable(f"{self.where}: {_reason(exc)}") from exc
        return True

    def close(self) -> None:
        self._http.clear()


def _credentials(settings: S3SinkSettings, environ: Mapping[str, str]) -> tuple[str, str]:
    """Keys from the configured files, else from the environment; never from the YAML."""
    if settings.access_key_file is not None or settings.secret_key_file is not None:
        return (
            _secret(settings.access_key_file, "sinks.s3.access_key_file"),
            _secret(settings.secret_key_file, "sinks.s3.secret_key_file"),
        )
    access_key, secret_key = environ.get(ACCESS_KEY_ENV), environ.get(SECRET_KEY_ENV)
    if access_key and secret_key:
        return access_key, secret_key
    missing = [n for n, v in ((ACCESS_KEY_ENV, access_key), (SECRET_KEY_ENV, secret_key)) if not v]
    raise S3ConfigError(
        "sinks.s3",
        "no credentials: set sinks.s3.access_key_file and sinks.s3.secret_key_file, "
        f"or the environment variables {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} "
        f"({' and '.join(missing)} not set)",
    )


def _secret(path: Path | None, key_path: str) -> str:
    if path is None:
        raise S3ConfigError(
            key_path,
            "set both sinks.s3.access_key_file and sinks.s3.secret_key_file, or neither "
            f"(then {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} are used)",
        )
    try:
        return read_secret(path, key_path)
    except ConfigError as exc:
        (issue,) = exc.issues
        raise S3ConfigError(issue.path, issue.message) from None


def _reason(exc: BaseException) -> str:
    """The server's error code and message, or the network failure, in one line."""
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    reason = getattr(exc, "reason", None)  # urllib3 wraps the socket error it gave up on
    return str(reason if isinstance(reason, BaseException) else exc)
