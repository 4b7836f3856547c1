"""The YAML loader of the config file (and how far its aliases may expand), in a module of its
own: importing PyYAML is what a call with nothing to do avoids when the file is unchanged
(`config_file.py`)."""

from __future__ import annotations

from typing import Any

import yaml


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep=deep)


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
