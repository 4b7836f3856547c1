"""Events as they are handed in: every input shape, each event checked on its own, the size,
depth and character limits, and what the provider that will apply them refuses or ignores."""

from __future__ import annotations

import json
from typing import Any

import pytest

from choreo_ingest.event_input import MAX_EVENT_BYTES, MAX_EVENT_DEPTH, parse_events

from event_fakes import FIVE, CheckingFake, component_event

ORG = {"kind": "Organization", "name": "a", "action": "created"}


class TestParseEvents:
    @pytest.mark.parametrize(
        ("text", "names"),
        [
            ('{"kind": "Organization", "name": "acme", "action": "created"}', ["acme"]),
            (
                json.dumps([component_event("a", "created"), component_event("b", "deleted")]),
                ["a", "b"],
            ),
            (
                "\n".join(json.dumps(component_event(n, "updated")) for n in "abc"),
                ["a", "b", "c"],
            ),
            (
                f"\n{json.dumps(component_event('a', 'created'))}\n\n"
                f"{json.dumps(component_event('b', 'created'))}\n",
                ["a", "b"],
            ),
            (json.dumps(component_event("a", "created"), indent=2), ["a"]),
        ],
        ids=["one-object", "array", "ndjson", "ndjson-blank-lines", "pretty-object"],
    )
    def test_accepts_every_input_shape(self, text: str, names: list[str]) -> None:
        parsed = parse_events(text)

        assert [event["name"] for event in parsed.valid] == names
        assert parsed.rejected == []

    @pytest.mark.parametrize(
        ("event", "problem"),
        [
            ({"name": "a", "action": "created"}, "needs a non-empty 'kind'"),
            ({"kind": "Organization", "name": "a"}, "needs a non-empty 'action'"),
            ({"kind": "Organization", "action": "deleted"}, "needs a non-empty 'name'"),
            ({"kind": "Organization", "name": " ", "action": "deleted"}, "non-empty 'name'"),
            ({"kind": "Organization", "name": 7, "action": "deleted"}, "non-empty 'name'"),
            (["not", "an", "object"], "expected a JSON object, got an array"),
            ("text", "expected a JSON object, got a string"),
            (None, "expected a JSON object, got null"),
            (7, "expected a JSON object, got a number"),
            (True, "expected a JSON object, got a boolean"),
            ({**ORG, "namespace": 0}, "'namespace' must be a string, not a number"),
            ({**ORG, "project": True}, "'project' must be a string, not a boolean"),
            ({**ORG, "project": {"a": 1}}, "'project' must be a string, not an object"),
        ],
        ids=["no-kind", "no-action", "no-name", "blank-name", "name-not-a-string", "array-item",
             "string-item", "null-item", "number-item", "boolean-item", "namespace-a-number",
             "project-a-boolean", "project-an-object"],
    )  # fmt: skip
    def test_rejects_an_event_without_kind_name_or_action(self, event: Any, problem: str) -> None:
        """What any provider needs; what the kinds and names mean is the provider's to check.
        A namespace or project that is not a string would be told apart from its string by
        the inbox's SQL on one store and not on the other (`1` and `"1"` on PostgreSQL)."""
        parsed = parse_events(json.dumps([event]))

        assert parsed.valid == []
        assert len(parsed.rejected) == 1
        assert parsed.rejected[0].index == 1
        assert problem in parsed.rejected[0].problem

    def test_mixed_array_keeps_the_valid_events_and_numbers_the_rejected_ones(self) -> None:
        events = [
            component_event("a", "created"),
            {"kind": "Widget", "name": "x", "action": "created"},
            component_event("b", "deleted"),
            {"kind": "Organization", "action": "deleted"},
        ]

        parsed = parse_events(json.dumps(events), CheckingFake(list(FIVE)))

        assert [event["name"] for event in parsed.valid] == ["a", "b"]
        assert [str(rejected) for rejected in parsed.rejected] == [
            "event 2: this fake takes Component events only, not 'Widget'",
            "event 4: event needs a non-empty 'name'",
        ]

    def test_events_the_provider_ignores_are_counted_not_kept(self) -> None:
        events = [
            component_event("a", "created"),
            {**component_event("b", "created"), "kind": "Trait"},
        ]

        parsed = parse_events(
            json.dumps(events), CheckingFake(list(FIVE), ignored_kinds=("Trait",))
        )

        assert [event["name"] for event in parsed.valid] == ["a"]
        assert (parsed.ignored, parsed.rejected) == (1, [])

    def test_ndjson_line_that_is_not_json_is_rejected_by_its_line_number(self) -> None:
        lines = [json.dumps(component_event("a", "created")), "{oops", "", "[1"]
        lines.append(json.dumps(component_event("b", "created")))

        parsed = parse_events("\n".join(lines))

        assert [event["name"] for event in parsed.valid] == ["a", "b"]
        assert [(r.index, r.problem.split(" (")[0]) for r in parsed.rejected] == [
            (2, "not JSON"),
            (4, "not JSON"),
        ]

    def test_rejected_events_are_listed_in_input_order(self) -> None:
        """A line that is not JSON was listed before the events above it that were refused."""
        lines = [json.dumps(component_event("a", "created")), '{"name": "no-kind"}', "{oops"]

        parsed = parse_events("\n".join(lines))

        assert [(r.index, r.problem.split(" (")[0]) for r in parsed.rejected] == [
            (2, "event needs a non-empty 'kind'"),
            (3, "not JSON"),
        ]

    def test_an_ndjson_line_breaks_only_at_a_newline(self) -> None:
        """A JSON string may hold U+2028, U+0085, U+000C as they are; they do not end a line."""
        odd = component_event("a", "created") | {"note": "x\u2028y\x85z\x0cw"}
        lines = [json.dumps(odd, ensure_ascii=False), json.dumps(component_event("b", "created"))]

        parsed = parse_events("\r\n".join(lines))

        assert [event["name"] for event in parsed.valid] == ["a", "b"]
        assert parsed.valid[0]["note"] == "x\u2028y\x85z\x0cw"
        assert parsed.rejected == []

    @pytest.mark.parametrize(
        ("escape", "problem"),
        [
            ("\\ud800", "holds a lone surrogate (such as \\ud800), which is not Unicode text"),
            ("\\u0000", "holds the character U+0000, which a state store cannot keep"),
        ],
        ids=["lone-surrogate", "nul"],
    )
    def test_an_event_no_store_can_keep_is_rejected_alone(self, escape: str, problem: str) -> None:
        """A lone surrogate crashed the command (and lost the valid events beside it); U+0000
        failed the whole batch on PostgreSQL, whose JSONB cannot hold it."""
        bad = json.dumps(component_event("bad", "created")).replace('"bad"', f'"b{escape}d"')
        text = "\n".join([json.dumps(component_event("a", "created")), bad])

        parsed = parse_events(text)

        assert [event["name"] for event in parsed.valid] == ["a"]
        assert [(r.index, r.problem) for r in parsed.rejected] == [(2, problem)]

    @pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
    def test_an_event_holding_a_number_json_cannot_hold_is_rejected_alone(
        self, number: str
    ) -> None:
        """Python's json reads them; SQLite's JSON functions then failed the batch as an internal
        error, PostgreSQL's JSONB as a store error (503 to a webhook sender, which retries)."""
        bad = json.dumps({**component_event("bad", "created"), "n": 0}).replace("0}", f"{number}}}")
        text = "\n".join([json.dumps(component_event("a", "created")), bad])

        parsed = parse_events(text)

        assert [event["name"] for event in parsed.valid] == ["a"]
        assert [(r.index, r.problem) for r in parsed.rejected] == [
            (2, "holds a number JSON cannot hold (NaN, Infinity, or one past a float's range)")
        ]

    @pytest.mark.parametrize("text", ["", "  \n\t"], ids=["empty", "whitespace"])
    def test_empty_input_is_rejected(self, text: str) -> None:
        parsed = parse_events(text)

        assert parsed.valid == []
        assert [str(rejected) for rejected in parsed.rejected] == [
            "event 1: no events in the input"
        ]

    def test_event_larger_than_64_kib_is_rejected_by_its_index(self) -> None:
        big = {**component_event("big", "created"), "note": "x" * MAX_EVENT_BYTES}
        events = [component_event("a", "created"), big, component_event("b", "created")]

        parsed = parse_events(json.dumps(events))

        assert [event["name"] for event in parsed.valid] == ["a", "b"]
        [rejected] = parsed.rejected
        assert rejected.index == 2
        assert f"an event may have at most {MAX_EVENT_BYTES:,}" in rejected.problem

    def test_event_of_exactly_64_kib_is_kept(self) -> None:
        event = {**component_event("a", "created"), "note": ""}
        padding = MAX_EVENT_BYTES - len(json.dumps(event, separators=(",", ":")))
        event["note"] = "x" * padding

        parsed = parse_events(json.dumps(event, indent=2))

        assert (len(parsed.valid), parsed.rejected) == (1, [])

    def test_event_nested_past_the_limit_is_rejected(self) -> None:
        deep: Any = "bottom"
        for _ in range(MAX_EVENT_DEPTH):
            deep = {"inner": deep}
        events = [component_event("a", "created"), {**component_event("b", "created"), "x": deep}]

        parsed = parse_events(json.dumps(events))

        assert [event["name"] for event in parsed.valid] == ["a"]
        assert [str(rejected) for rejected in parsed.rejected] == [
            f"event 2: nested deeper than {MAX_EVENT_DEPTH} levels"
        ]

    def test_an_integer_json_cannot_hold_is_rejected_by_its_line_number(self) -> None:
        """5,000 digits: Python's json refuses integers of over 4,300 (a ValueError, not a JSON
        error), which failed the whole input as a bug."""
        huge = json.dumps(component_event("b", "created"))[:-1] + ', "x": ' + "9" * 5000 + "}"
        text = "\n".join([json.dumps(component_event("a", "created")), huge])

        parsed = parse_events(text)

        assert [event["name"] for event in parsed.valid] == ["a"]
        [rejected] = parsed.rejected
        assert str(rejected).startswith("event 2: not JSON (Exceeds the limit (4300 digits)")

    @pytest.mark.parametrize("line", ["[" * 100_000, '{"a":' * 100_000], ids=["arrays", "objects"])
    def test_line_too_deep_to_parse_is_rejected_by_its_line_number(self, line: str) -> None:
        """Deeper than Python's recursion limit: json raises RecursionError, not a JSON error."""
        text = "\n".join([line, json.dumps(component_event("a", "created"))])

        parsed = parse_events(text)

        assert [event["name"] for event in parsed.valid] == ["a"]
        assert [str(rejected) for rejected in parsed.rejected] == [
            f"event 1: nested deeper than {MAX_EVENT_DEPTH} levels"
        ]
