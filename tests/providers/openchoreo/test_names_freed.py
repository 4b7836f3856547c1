"""The OpenChoreo sweep follower: which claimants of a freed API name it queues events about."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from choreo_ingest.models import IndexEntry, IndexGroups
from choreo_ingest.providers.openchoreo.api_names import CLAIMS
from choreo_ingest.providers.openchoreo.names_freed import NAMES_FREED

GROUP = "acme/zq-b-c-e"


def claim(key: str, holds: bool, **value: object) -> IndexEntry:
    return IndexEntry(CLAIMS, f"{GROUP}|{key}", GROUP, {"holds": holds, **value})


def current_rows(*rows: IndexEntry) -> IndexGroups:
    def current(table: str, groups: Sequence[str]) -> Mapping[str, list[IndexEntry]]:
        return {group: [row for row in rows if row.group == group] for group in groups}

    return current


def test_a_waiting_claim_whose_row_names_no_component_queues_nothing_and_stops_nothing() -> None:
    """A row without its owner (none is written so; a damaged or foreign one): the other
    claimant still gets its event, and the sweep completes."""
    holder = claim("zq/b-c/e", True, owner=["zq", "b-c"], endpoint="e")
    waiting = claim("zq-b/c/e", False, owner=["zq-b", "c"], endpoint="e")
    nameless = claim("x", False, endpoint="e")

    events = NAMES_FREED.events([holder], current_rows(waiting, nameless))

    assert events == [
        {
            "kind": "Component",
            "namespace": "acme",
            "project": "zq-b",
            "name": "c",
            "action": "created",
        }
    ]
