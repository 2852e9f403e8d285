"""Secrets kept out of the YAML: a ``*_file`` key names a file holding the secret itself."""

from __future__ import annotations

from pathlib import Path

from doorbell.common import secrets
from doorbell.config.errors import ConfigError, ConfigIssue


def read_secret(path: Path, key_path: str) -> str:
    """The secret in the file at `path`, which the setting `key_path` names.

    Read as `doorbell.common.secrets.read_secret` reads it; a file that cannot be used
    raises `ConfigError`, naming the setting.
    """
    try:
        return secrets.read_secret(path, key_path)
    except secrets.SecretFileError as exc:
        raise ConfigError([ConfigIssue(exc.where, None, exc.message)]) from exc.__cause__
