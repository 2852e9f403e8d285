"""Loading the configuration file: parse the YAML safely, read it into settings, check them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from doorbell.config.checks import check_settings
from doorbell.config.errors import ConfigError, ConfigIssue
from doorbell.config.schema import Reading, read_tree
from doorbell.config.settings import Settings, defaults

DEFAULT_CONFIG_PATH = Path("/etc/doorbell/doorbell.yaml")
# Far deeper than any setting sits (four levels), and shallow enough that composing
# the node tree, which recurses, stays well inside Python's recursion limit.
MAX_DEPTH = 32


def load_settings(path: Path | None) -> Settings:
    """The settings in the YAML file at `path`, or the embedded defaults when `path` is None.

    Raises `ConfigError` listing every problem in the file.
    """
    if path is None:
        return defaults()
    settings, issues = _load(path)
    if issues:
        raise ConfigError(issues)
    return settings


def check_config(path: Path) -> list[ConfigIssue]:
    """Every problem in the YAML file at `path`, in line order; empty when it is usable."""
    return _load(path)[1]


def _load(path: Path) -> tuple[Settings, list[ConfigIssue]]:
    reading = Reading(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reading.add("", None, f"cannot read the file: {exc.strerror or exc}")
        return defaults(), reading.issues
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        reading.add("", line, f"not UTF-8 text: byte {exc.object[exc.start]:#04x}")
        return defaults(), reading.issues
    try:
        deep = _too_deep(text)
        if deep is not None:
            line, column = deep
            reading.add("", line, f"nested deeper than {MAX_DEPTH} levels (column {column})")
            return defaults(), reading.issues
        # compose, not load: the node tree keeps every key's line and every duplicate key.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (column {mark.column + 1})" if mark is not None else ""
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        reading.add("", mark.line + 1 if mark else None, f"invalid YAML{where}: {problem}")
        return defaults(), reading.issues
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        reading.add("", line, f"invalid YAML: character #x{exc.character:04x}: {exc.reason}")
        return defaults(), reading.issues
    settings = read_tree(defaults(), root, reading, base_dir=path.parent)
    if "" in reading.refused:
        # The document is not a mapping: nothing in it applies, nothing more is worth checking.
        return settings, reading.issues
    if "sinks.local.directory" not in reading.given:
        local = dataclasses.replace(settings.sinks.local, directory=settings.state_dir / "bucket")
        settings = dataclasses.replace(
            settings, sinks=dataclasses.replace(settings.sinks, local=local)
        )
    check_settings(settings, reading)
    issues = sorted(reading.issues, key=lambda issue: (issue.line is None, issue.line or 0))
    return settings, issues


def _too_deep(text: str) -> tuple[int, int] | None:
    """The line and column where the document first nests deeper than `MAX_DEPTH`, or None.

    The parser keeps its own stack and reads any depth; only the composer recurses.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            mark = event.start_mark
            if depth > MAX_DEPTH and mark is not None:
                return mark.line + 1, mark.column + 1
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
    return None
