"""Events as they are handed in (`event`, serve's event routes): decoded, parsed, checked.

One JSON object, a JSON array of them, or NDJSON; each event is checked on its own (its size and
depth, the fields every event needs, then what the provider that will apply it asks), so one bad
event is refused without the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from choreo_ingest.errors import ConfigError
from choreo_ingest.models import Event
from choreo_ingest.providers.base import EventCheckingProvider, IncrementalEntityProvider

MAX_EVENT_BYTES = 64 * 1024
"""An event is at most this big as compact JSON; a forwarder's events are a few hundred bytes."""
MAX_EVENT_DEPTH = 32
"""Objects and arrays in an event nest at most this deep (a forwarder's events nest one or two):
so a crafted event cannot exhaust the stack of any later `json` call on its way to the inbox."""


@dataclass(frozen=True)
class Rejected:
    index: int
    problem: str

    def __str__(self) -> str:
        return f"event {self.index}: {self.problem}"


@dataclass
class ParsedEvents:
    valid: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored: int = 0
    """Valid events about kinds the provider does not ingest: acknowledged, not stored."""
    ignored_created: int = 0
    """Of the ignored events, the `created` ones."""


def decode_events(data: bytes, source: str) -> str:
    """Events as text: UTF-8 (a byte order mark is allowed), else a usage error naming `source`."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{source}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); events are JSON"
        ) from None


def parse_events(text: str, provider: IncrementalEntityProvider | None = None) -> ParsedEvents:
    """One JSON object, a JSON array of them, or NDJSON; each event checked on its own, by the
    provider that will apply them when it says how (`EventCheckingProvider`)."""
    parsed = ParsedEvents()
    stripped = text.strip()
    if not stripped:
        parsed.rejected.append(Rejected(1, "no events in the input"))
        return parsed
    try:
        document = json.loads(stripped)
        items: list[tuple[int, Any]] = (
            list(enumerate(document, start=1)) if isinstance(document, list) else [(1, document)]
        )
    except (ValueError, RecursionError):  # NDJSON, or a line nests too deep or holds a huge int
        items = []
        # Lines end at "\n" only: splitlines() also breaks at U+2028, U+0085, ... that JSON
        # strings may hold as they are.
        for number, line in enumerate(stripped.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                parsed.rejected.append(Rejected(number, f"not JSON ({error.msg})"))
            except ValueError as error:  # an integer of 4,300 digits or more
                parsed.rejected.append(Rejected(number, f"not JSON ({error})"))
            except RecursionError:
                parsed.rejected.append(Rejected(number, _too_deep()))
    checking = provider if isinstance(provider, EventCheckingProvider) else None
    for index, item in items:
        problem = _size_problem(item) or _shape_problem(item)
        if problem is None and checking is not None:
            problem = checking.event_problem(item)
        if problem:
            parsed.rejected.append(Rejected(index, problem))
        elif checking is not None and checking.is_ignored(item):
            parsed.ignored += 1
            parsed.ignored_created += item.get("action") == "created"
        else:
            parsed.valid.append(item)
    # NDJSON lines that are not JSON were rejected before the events checked above: in input order
    parsed.rejected.sort(key=lambda rejected: rejected.index)
    return parsed


def _size_problem(item: object) -> str | None:
    """Too deep or too big to keep; checked first, so nothing after it recurses that deep."""
    if _depth(item) > MAX_EVENT_DEPTH:
        return _too_deep()
    try:
        text = json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # Python's json reads NaN, Infinity and 1e400 (inf); no store keeps them
        return "holds a number JSON cannot hold (NaN, Infinity, or one past a float's range)"
    if "\\u0000" in text and _holds_nul(item):  # JSONB cannot keep it: refused on every store
        return "holds the character U+0000, which a state store cannot keep"
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # "\ud800" is valid JSON, but not Unicode text
        return "holds a lone surrogate (such as \\ud800), which is not Unicode text"
    if size > MAX_EVENT_BYTES:
        return f"{size:,} bytes as JSON; an event may have at most {MAX_EVENT_BYTES:,}"
    return None


def _holds_nul(item: object) -> bool:
    """Whether a key or string anywhere in `item` holds U+0000."""
    stack: list[object] = [item]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _too_deep() -> str:
    return f"nested deeper than {MAX_EVENT_DEPTH} levels"


def _depth(item: object) -> int:
    """How deep objects and arrays nest in `item` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(item, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Iterable[object] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_EVENT_DEPTH:
            return deepest  # enough to reject; no need to walk the rest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _json_type(value: object) -> str:
    """What a decoded JSON value is, in JSON's words (`null`, `array`), not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    return "a string" if isinstance(value, str) else "an array"


def _shape_problem(item: object) -> str | None:
    """What every event needs, whoever applies it: an object with a kind, a name, an action."""
    if not isinstance(item, Mapping):
        return f"expected a JSON object, got {_json_type(item)}"
    for key in ("kind", "name", "action"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            return f"event needs a non-empty {key!r}"
    for key in ("namespace", "project"):  # what the inbox tells objects apart by, with the above
        if item.get(key) is not None and not isinstance(item[key], str):
            return f"event's {key!r} must be a string, not {_json_type(item[key])}"
    return None


def to_event(body: Mapping[str, Any]) -> Event:
    return Event(
        kind=body["kind"],
        name=body["name"],
        action=body["action"],
        namespace=body.get("namespace") or None,
        project=body.get("project"),
    )
