"""Secrets kept out of settings and command lines: a file that holds the secret itself."""

from __future__ import annotations

from pathlib import Path


class SecretFileError(Exception):
    """A secret file cannot be used. ``where`` names the setting or option that gave it;
    the error reads "where: message"."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def read_secret(path: Path, where: str) -> str:
    """The secret in the file at ``path``, which the setting or option ``where`` names.

    One trailing newline (``\\n`` or ``\\r\\n``), as editors and ``echo`` leave, is not part
    of the secret. A missing, unreadable, non-UTF-8 or empty file raises `SecretFileError`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretFileError(
            where, f"cannot read the secret file {path}: {exc.strerror or exc}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise SecretFileError(where, f"the secret file {path} is not UTF-8 text") from exc
    secret = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not secret:
        raise SecretFileError(where, f"the secret file {path} is empty")
    return secret
