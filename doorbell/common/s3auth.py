"""S3 credentials, as the device's sink and the phone's source both take them: two secret
files, else the standard environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from doorbell.common.secrets import read_secret

ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"


class MissingCredentials(Exception):
    """Neither files nor the environment give both keys; ``missing`` names the unset variables."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"{' and '.join(missing)} not set")
        self.missing = missing


def s3_credentials(
    files: tuple[tuple[Path, str], tuple[Path, str]] | None, environ: Mapping[str, str]
) -> tuple[str, str]:
    """(access key, secret key): from ``files``, each a (path, the setting that names it),
    when given, else from the environment.

    Raises `SecretFileError` for a file that cannot be used, `MissingCredentials` when the
    environment lacks a key. Saying which option to set is the caller's job: only it knows
    what its options are called."""
    if files is not None:
        (access_path, access_where), (secret_path, secret_where) = files
        return read_secret(access_path, access_where), read_secret(secret_path, secret_where)
    access_key, secret_key = environ.get(ACCESS_KEY_ENV), environ.get(SECRET_KEY_ENV)
    if access_key and secret_key:
        return access_key, secret_key
    pairs = ((ACCESS_KEY_ENV, access_key), (SECRET_KEY_ENV, secret_key))
    raise MissingCredentials([name for name, value in pairs if not value])
