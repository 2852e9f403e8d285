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

from minio.error import S3Error
from minio.helpers import MIN_PART_SIZE, check_bucket_name

from doorbell.common.s3auth import (
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    MissingCredentials,
    s3_credentials,
)
from doorbell.common.s3client import FAILURES, failure_reason, s3_client
from doorbell.common.secrets import SecretFileError
from doorbell.config.errors import ConfigError, ConfigIssue
from doorbell.config.settings import S3SinkSettings
from doorbell.sealing import Kind
from doorbell.transport.sink import SinkUnavailable

log = logging.getLogger(__name__)


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
        try:
            self._client, self._http = s3_client(
                settings.endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=settings.secure,
                region=settings.region,
                retries=False,
            )
        except ValueError as exc:
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
        except FAILURES as exc:
            raise SinkUnavailable(
                f"{self.where}: cannot store {key}: {failure_reason(exc)}"
            ) from exc
        log.debug("stored %s in %s (%d bytes)", key, self.bucket, len(data))

    def check(self) -> None:
        """Prove the endpoint answers and the bucket exists, for ``doorbell doctor``.

        Raises `SinkUnavailable` when the endpoint cannot be reached or refuses the
        credentials, and `S3ConfigError` when it answers that there is no such bucket.
        """
        try:
            exists = self._client.bucket_exists(self.bucket)
        except FAILURES as exc:
            raise SinkUnavailable(f"{self.where}: {failure_reason(exc)}") from exc
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
            raise SinkUnavailable(f"{self.where}: {failure_reason(exc)}") from exc
        except FAILURES as exc:
            raise SinkUnavailable(f"{self.where}: {failure_reason(exc)}") from exc
        return True

    def close(self) -> None:
        self._http.clear()


def _credentials(settings: S3SinkSettings, environ: Mapping[str, str]) -> tuple[str, str]:
    """Keys from the configured files, else from the environment; never from the YAML."""
    files = None
    if settings.access_key_file is not None or settings.secret_key_file is not None:
        files = (
            _secret_file(settings.access_key_file, "sinks.s3.access_key_file"),
            _secret_file(settings.secret_key_file, "sinks.s3.secret_key_file"),
        )
    try:
        return s3_credentials(files, environ)
    except SecretFileError as exc:
        raise S3ConfigError(exc.where, exc.message) from None
    except MissingCredentials as exc:
        raise S3ConfigError(
            "sinks.s3",
            "no credentials: set sinks.s3.access_key_file and sinks.s3.secret_key_file, "
            f"or the environment variables {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} ({exc})",
        ) from None


def _secret_file(path: Path | None, key_path: str) -> tuple[Path, str]:
    if path is None:
        raise S3ConfigError(
            key_path,
            "set both sinks.s3.access_key_file and sinks.s3.secret_key_file, or neither "
            f"(then {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} are used)",
        )
    return path, key_path
