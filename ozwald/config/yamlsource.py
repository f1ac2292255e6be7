# SPDX-License-Identifier: AGPL-3.0-or-later
"""Read YAML while remembering where every setting came from.

PyYAML forgets positions once it builds Python objects, and silently keeps the last of two duplicate
keys. Both defeat good error messages, so this module walks the node graph itself: it records the line
of every path and refuses duplicate keys. Environment values keep the text the operator typed (`true`,
`0.9`, `1e3`), because they end up as strings in a container and must not be re-spelt by Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ozwald.config.errors import ConfigError, ConfigIssue, format_path

Path = tuple[str | int, ...]

ENVIRONMENT_KEY = "environment"


@dataclass
class SourceMap:
    """Line numbers (1-based) of every path in one YAML document."""

    file: str | None
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor present in the file."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), None)

    def issue(self, path: Path, message: str) -> ConfigIssue:
        return ConfigIssue(message=message, path=format_path(path), file=self.file, line=self.line_of(path))


class _Walker:
    def __init__(self, loader: yaml.SafeLoader, source: SourceMap) -> None:
        self.loader = loader
        self.source = source
        self.issues: list[ConfigIssue] = []

    def walk(self, node: yaml.Node, path: Path, raw_scalars: bool = False) -> Any:
        self.source.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(child, (*path, index)) for index, child in enumerate(node.value)]
        if raw_scalars and isinstance(node, yaml.ScalarNode):
            return self._raw_scalar(node)
        return self.loader.construct_object(node, deep=True)

    def _raw_scalar(self, node: yaml.ScalarNode) -> Any:
        value = self.loader.construct_object(node, deep=True)
        if value is None or isinstance(value, str):
            return value
        # Keep the operator's spelling of numbers and booleans: `0.90` stays `0.90`, `true` stays `true`.
        return str(node.value)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        raw_values = bool(path) and path[-1] == ENVIRONMENT_KEY
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                self.issues.append(
                    ConfigIssue(
                        "keys must be plain strings",
                        format_path(path),
                        self.source.file,
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            key = key if isinstance(key, str) else str(key_node.value)
            child_path = (*path, key)
            if key in result:
                self.issues.append(
                    ConfigIssue(
                        f"duplicate key (first defined on line {self.source.lines.get(child_path)})",
                        format_path(child_path),
                        self.source.file,
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            self.source.lines[child_path] = key_node.start_mark.line + 1
            result[key] = self.walk(value_node, child_path, raw_scalars=raw_values)
        return result


def load_yaml(text: str, file: str | None = None) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data plus the line of every path.

    Raises ConfigError for syntax errors and duplicate keys, with the file and line.
    """
    source = SourceMap(file=file)
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, source
        walker = _Walker(loader, source)
        data = walker.walk(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([ConfigIssue(f"invalid YAML: {problem}", "", file, line)]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed in YAML text"
        raise ConfigError([ConfigIssue(message, "", file, line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(f"invalid YAML: {exc}", "", file, None)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if walker.issues:
        raise ConfigError(walker.issues)
    return data, source


def describe_type(value: Any) -> str:
    """A YAML-flavoured name for a Python value's type, for error messages."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return type(value).__name__
