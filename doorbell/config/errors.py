"""Configuration problems: one issue per mistake, and the exception that carries them all."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration: which key, on which line, and what is wrong.

    `path` is the key path (``sinks.local.directory``), empty for the document itself;
    `line` is 1-based, None when the key is absent from the file (a default is at fault).
    """

    path: str
    line: int | None
    message: str
    file: Path | None = None

    def __str__(self) -> str:
        where = "" if self.file is None else str(self.file)
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return ": ".join(part for part in (where, self.path, self.message) if part)


class ConfigError(Exception):
    """The configuration cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
