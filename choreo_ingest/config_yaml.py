"""The config file read as YAML (`parse_document`), its loader, and how far its aliases may
expand, in a module of its own: importing PyYAML is what a call with nothing to do avoids when
the file is unchanged (`config_file.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from choreo_ingest.config_values import describe
from choreo_ingest.errors import ConfigError

_TEXT = "tag:yaml.org,2002:str"
_READ_AS_OTHER = frozenset(
    f"tag:yaml.org,2002:{kind}" for kind in ("bool", "int", "float", "null", "timestamp")
)


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that reads a key as the text written where YAML 1.1 would read a boolean, a
    date, null or number (a metrics label named `on` would be named `True`), and refuses a key
    given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:  # its own keys: a merged one may be given again
            key_node = _as_written(key_node)
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add((key_node.tag, key_node.value))
        self.flatten_mapping(node)  # merged keys (`<<`) are read as written too
        node.value = [(_as_written(key), value) for key, value in node.value]
        return super().construct_mapping(node, deep=deep)


def _as_written(node: yaml.Node) -> yaml.Node:
    """A plain scalar key YAML 1.1 reads as other than text, as text (a copy: an alias of the
    node elsewhere keeps its own reading)."""
    if isinstance(node, yaml.ScalarNode) and node.style is None and node.tag in _READ_AS_OTHER:
        return yaml.ScalarNode(_TEXT, node.value, node.start_mark, node.end_mark, node.style)
    return node


MAX_CONFIG_VALUES = 100_000
"""The most values a config file may hold, its YAML aliases expanded: a handful of anchors can
stand for billions (`a: &a [x, x]`, `b: &b [*a, *a]`, ...), which every later walk of the
document (the kept copy, a custom provider's options) would take for ever to go through."""


def expands_past(document: object, most: int) -> bool:
    """Whether `document` holds more than `most` values, counting a shared one each time."""
    stack, seen = [document], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > most:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def parse_document(file: Path, text: str) -> dict[Any, Any]:
    """The YAML document of the config file `file` (its `text`): a mapping, or a ConfigError
    naming the file (and the line) that never quotes the text, which may hold the token."""
    try:
        document = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:  # its str() quotes the line, which may hold the token
        mark, problem = err.problem_mark or err.context_mark, err.problem or err.context
        problem = _unquoted_yaml_problem(problem)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file}: invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: invalid YAML: {err}") from None
    if document is None:  # an empty file, or only comments
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {describe(document)}")
    if expands_past(document, MAX_CONFIG_VALUES):
        raise ConfigError(
            f"{file}: holds more than {MAX_CONFIG_VALUES:,} values once its YAML aliases are "
            "expanded (a config holds a few dozen)"
        )
    return document


_YAML_PROBLEMS_QUOTING_A_VALUE = {
    "found undefined alias": "an undefined alias (quote a value that starts with `*`)",
    "found undefined tag handle": "an undefined tag handle (quote a value that starts with `!`)",
    "could not determine a constructor for the tag": "an unknown tag (quote a value that "
    "starts with `!`)",
}


def _unquoted_yaml_problem(problem: str | None) -> str | None:
    """PyYAML's problem without the text of an alias or tag it quotes: an unquoted token or
    secret that starts with `*` or `!` reads as one (`token: *Zq9...`)."""
    for start, said in _YAML_PROBLEMS_QUOTING_A_VALUE.items():
        if problem and problem.startswith(start):
            return f"found {said}"
    return problem
