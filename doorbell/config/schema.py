"""Reads a composed YAML node tree into the settings tree: keys, types, ranges and choices.

Every problem becomes a `ConfigIssue` and reading goes on with the default in its
place, so one pass reports every mistake in the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from doorbell.config.errors import ConfigIssue
from doorbell.config.settings import RETIRED, RULE, Rule

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)

MERGE_TAG = "tag:yaml.org,2002:merge"

D = TypeVar("D", bound="DataclassInstance")


@dataclass
class Reading:
    """What reading one file found, kept for the checks that span several keys."""

    file: Path
    issues: list[ConfigIssue] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    """Key path -> line of every recognised key present in the file."""
    given: set[str] = field(default_factory=set)
    """Key paths the file sets to a value other than null."""
    refused: set[str] = field(default_factory=set)
    """Key paths whose value was refused: the default stands in, so checks skip them."""

    def add(self, path: str, line: int | None, message: str) -> None:
        self.issues.append(ConfigIssue(path, line, message, self.file))

    def warn(self, path: str, line: int | None, message: str) -> None:
        """Something harmless that nothing uses: logged (printed when nothing logs yet)."""
        log.warning("warning: %s", ConfigIssue(path, line, message, self.file))

    def blame(self, *paths: str) -> str:
        """The first of `paths` the file sets (the one a fix belongs to), else the first."""
        return next((path for path in paths if path in self.lines), paths[0])

    def accepted(self, *paths: str) -> bool:
        return not self.refused.intersection(paths)


class _Invalid(Exception):
    """A value the schema refuses; its message becomes an issue."""


def read_tree(default: D, root: Node | None, reading: Reading, base_dir: Path) -> D:
    """`default` with every setting `root` holds applied, problems added to `reading`."""
    return _Reader(reading, base_dir).section(default, root, "")


def _line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _suggest(word: str, candidates: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, ignoring case, or nothing."""
    lowered = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1)
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""


class _Reader:
    def __init__(self, reading: Reading, base_dir: Path) -> None:
        self._reading = reading
        self._base_dir = base_dir
        # Only the safe constructor turns scalars into values: no tag can build an object.
        self._constructor = yaml.SafeLoader("")

    def section(self, default: D, node: Node | None, path: str) -> D:
        if node is None or self._is_null(node):
            return default
        if not isinstance(node, MappingNode):
            self._refuse(path, node, f"expected a mapping of settings, got {self._describe(node)}")
            return default
        fields = {f.name: f for f in dataclasses.fields(default)}
        hints = get_type_hints(type(default))
        changes: dict[str, Any] = {}
        for key, key_node, value_node in self._pairs(node, path):
            key_path = f"{path}.{key}" if path else key
            if key not in fields and key_path in RETIRED:
                self._reading.warn(
                    key_path,
                    _line_of(key_node),
                    f"ignored: {RETIRED[key_path]}; the key can be removed",
                )
                continue
            if key not in fields:
                hint = _suggest(key, list(fields)) or f"; expected one of: {', '.join(fields)}"
                self._reading.add(key_path, _line_of(key_node), f"unknown key {key!r}{hint}")
                continue
            self._reading.lines[key_path] = _line_of(key_node)
            if dataclasses.is_dataclass(hints[key]):
                changes[key] = self.section(getattr(default, key), value_node, key_path)
                continue
            rule = fields[key].metadata.get(RULE, Rule())
            if rule.derived and self._is_null(value_node):
                continue
            try:
                value = self._value(hints[key], rule, value_node)
            except _Invalid as exc:
                self._refuse(key_path, value_node, str(exc))
                continue
            changes[key] = value
            if value is not None:
                self._reading.given.add(key_path)
        return dataclasses.replace(default, **changes)

    def _pairs(self, node: MappingNode, path: str) -> list[tuple[str, Node, Node]]:
        """The mapping's entries, the last of a key winning as in YAML; duplicates are issues.

        Keys merged in from an anchor (``<<: *base``) are overridden without complaint:
        that is what merging is for. Only a key the mapping itself repeats is a mistake.
        """
        own = {id(key_node) for key_node, _ in node.value if key_node.tag != MERGE_TAG}
        try:
            # Puts the merged entries in front of the mapping's own, in place.
            self._constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self._reading.add(path, _line_of(node), f"cannot merge: {exc.problem}")
            return []
        except RecursionError:
            # Anchors merging anchors thousands deep: PyYAML follows them recursively.
            self._reading.add(path, _line_of(node), "cannot merge: merges nest too deeply")
            return []
        first_line: dict[str, int] = {}
        entries: dict[str, tuple[str, Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self._peek(key_node)
            if not isinstance(key, str):
                self._reading.add(
                    path, _line_of(key_node), f"keys must be text, got {self._describe(key_node)}"
                )
                continue
            if id(key_node) in own:
                if key in first_line:
                    self._reading.add(
                        f"{path}.{key}" if path else key,
                        _line_of(key_node),
                        f"duplicate key {key!r} (first on line {first_line[key]}); "
                        "YAML would silently keep only the last one",
                    )
                first_line.setdefault(key, _line_of(key_node))
            entries[key] = (key, key_node, value_node)
        return list(entries.values())

    def _value(self, hint: Any, rule: Rule, node: Node) -> object:
        args = get_args(hint)
        nullable = get_origin(hint) is types.UnionType and type(None) in args
        kind = next(arg for arg in args if arg is not type(None)) if nullable else hint
        expected = _expected(kind) + (" or null" if nullable else "")
        if not isinstance(node, ScalarNode):
            raise _Invalid(f"expected {expected}, got {self._describe(node)}")
        value = self._construct(node)
        if value is None:
            if nullable:
                return None
            raise _Invalid(f"expected {expected}, got null")
        if get_origin(kind) is Literal:
            return _choice(value, get_args(kind), expected, self._describe(node))
        if kind is bool:
            if not isinstance(value, bool):
                raise _Invalid(f"expected {expected}, got {self._describe(node)}")
            return value
        if kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _Invalid(f"expected {expected}, got {self._describe(node)}")
            return _in_bounds(value, rule)
        if kind is float:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _Invalid(f"expected {expected}, got {self._describe(node)}")
            if not math.isfinite(value):
                raise _Invalid(f"must be a finite number, got {node.value}")
            return _in_bounds(float(value), rule)
        if not isinstance(value, str):
            raise _Invalid(
                f"expected {expected}, got {self._describe(node)}; "
                f"quote it ('{node.value}') if you meant the text"
            )
        if kind is Path:
            return self._path(value)
        return _text(value, rule)

    def _path(self, text: str) -> Path:
        if not text or "\0" in text:
            raise _Invalid(f"expected a path, got {text!r}")
        path = Path(text)
        # Relative paths are relative to the configuration file, not to the daemon's cwd.
        return path if path.is_absolute() else self._base_dir / path

    def _refuse(self, path: str, node: Node, message: str) -> None:
        self._reading.add(path, _line_of(node), message)
        self._reading.refused.add(path)

    def _construct(self, node: ScalarNode) -> object:
        try:
            return self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
            raise _Invalid(f"cannot read the value {node.value!r}: {problem}") from exc

    def _peek(self, node: Node) -> object:
        """The scalar's value, or the node itself when it is no readable scalar."""
        try:
            return self._construct(node) if isinstance(node, ScalarNode) else node
        except _Invalid:
            return node

    def _is_null(self, node: Node) -> bool:
        return self._peek(node) is None

    def _describe(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if not isinstance(node, ScalarNode):
            return "a list"
        value = self._peek(node)
        if value is None:
            return "null"
        if isinstance(value, bool):
            return f"boolean {node.value}"
        if isinstance(value, int):
            return f"integer {value}"
        if isinstance(value, float):
            return f"number {value!r}"
        if isinstance(value, str):
            return f"string {value!r}"
        if isinstance(value, Node):
            return repr(node.value)
        return f"{type(value).__name__} {node.value}"


def _expected(kind: Any) -> str:
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(kind))
    names = {bool: "true or false", int: "an integer", float: "a number", Path: "a path"}
    return names.get(kind, "a string")


def _choice(value: object, choices: tuple[object, ...], expected: str, described: str) -> object:
    if value in choices and type(value) in {type(choice) for choice in choices}:
        return value
    near = ""
    if isinstance(value, str):
        near = _suggest(value, [str(choice) for choice in choices])
    raise _Invalid(f"must be {expected}, got {described}{near}")


def _in_bounds(value: float, rule: Rule) -> Any:
    if rule.above is not None and not value > rule.above:
        raise _Invalid(f"must be greater than {rule.above}{rule.hint}, got {value!r}")
    if rule.bounds is not None and not rule.bounds[0] <= value <= rule.bounds[1]:
        low, high = rule.bounds
        raise _Invalid(f"must be between {low} and {high}{rule.hint}, got {value!r}")
    if rule.even and value % 2:
        raise _Invalid(f"must be even, got {value!r}")
    return value


def _text(value: str, rule: Rule) -> str:
    limit = rule.max_length
    if not value or not value.isprintable() or len(value) > limit:
        raise _Invalid(f"must be 1 to {limit} printable characters, got {value!r}")
    return value
