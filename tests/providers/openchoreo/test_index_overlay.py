"""A delta's overlay answers as the index will once the delta's rows are written."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import MemoryIndex

from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.openchoreo.generation import Walk
from choreo_ingest.providers.openchoreo.index_overlay import with_rows

STORED = [
    IndexEntry("workload", "ns/w1", "ns/cart", {"n": 1}),
    IndexEntry("workload", "ns/w2", "ns/cart", {"n": 2}),
    IndexEntry("workload", "ns/w3", "ns/pay", {"n": 3}),
    IndexEntry("claim", "ns/api", "", {"owner": "cart"}),
]
GROUPS = ["ns/cart", "ns/pay", "ns/report"]
KEYS = ["ns/w1", "ns/w2", "ns/w3", "ns/w4"]


@pytest.mark.parametrize(
    "entries",
    [
        [IndexEntry("workload", "ns/w1", "ns/report", {"n": 1})],  # moved to another group
        [IndexEntry("workload", "ns/w2")],  # deleted
        [IndexEntry("workload", "ns/w4", "ns/pay", {"n": 4})],  # new
        [IndexEntry("workload", "ns/w3"), IndexEntry("workload", "ns/w3", "ns/cart", {"n": 9})],
        [IndexEntry("workload", "ns/w1", "ns/pay", {"n": 5}), IndexEntry("workload", "ns/w1")],
        [IndexEntry("claim", "ns/api")],  # another table's row: the workloads unchanged
    ],
    ids=["moved", "deleted", "new", "deleted-then-written", "written-then-deleted", "claim"],
)
def test_the_overlay_answers_as_the_index_will_once_written(
    entries: list[IndexEntry],
) -> None:
    stored = MemoryIndex()
    stored.apply(STORED)
    written = copy.deepcopy(stored)
    written.apply(entries)
    fields: Any = {"client": None, "queues": None, "config": None, "provider": "p", "clock": None}

    overlay = with_rows(Walk(index=stored, **fields), entries).index

    assert overlay.by_key("workload", KEYS) == written.by_key("workload", KEYS)
    assert overlay.by_group("workload", GROUPS) == written.by_group("workload", GROUPS)
    assert overlay.by_key("claim", ["ns/api"]) == written.by_key("claim", ["ns/api"])
