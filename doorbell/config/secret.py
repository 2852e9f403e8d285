"""Secrets kept out of the YAML: a ``*_file`` key names a file holding the secret itself."""

from __future__ import annotations

from pathlib import Path

from doorbell.config.errors import ConfigError, ConfigIssue


def read_secret(path: Path, key_path: str) -> str:
    """The secret in the file at `path`, which the setting `key_path` names.

    One trailing newline (``\\n`` or ``\\r\\n``), as editors and ``echo`` leave, is not part
    of the secret. A missing, unreadable, non-UTF-8 or empty file raises `ConfigError`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = f"cannot read the secret file {path}: {exc.strerror or exc}"
        raise ConfigError([ConfigIssue(key_path, None, problem)]) from exc
    except UnicodeDecodeError as exc:
        problem = f"the secret file {path} is not UTF-8 text"
        raise ConfigError([ConfigIssue(key_path, None, problem)]) from exc
    secret = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not secret:
        raise ConfigError([ConfigIssue(key_path, None, f"the secret file {path} is empty")])
    return secret
