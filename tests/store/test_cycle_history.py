"""The `cycles` history keeps the newest KEPT_CYCLES rows of each provider: a state that runs for
years does not grow a row a cycle for ever, and what the store reads of it stays."""

from __future__ import annotations

import pytest

from choreo_ingest.models import EntityIteratorResult, ProviderState
from choreo_ingest.store import Store, SweepGuards, writes

from fakes import make_entity

T0 = 1_800_000_000.0
OPEN = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=None)


def cycle(store: Store, provider: str, *, complete: bool = True) -> int:
    record = store.load_provider(provider)
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, T0 + record.cycle_id)
    page = EntityIteratorResult(True, [make_entity(f"{provider}-x")])
    store.commit_page(provider, record.cycle_id, page, None, T0)
    if complete:
        record.state = ProviderState.RESTING
        store.complete_cycle(record, OPEN, T0 + record.cycle_id)
    return record.cycle_id


def kept(store: Store, provider: str) -> list[int]:
    rows = store._conn.execute(
        "SELECT cycle_id FROM cycles WHERE provider = ? ORDER BY cycle_id", [provider]
    )
    return [cycle_id for (cycle_id,) in rows]


def test_a_new_cycle_drops_the_history_past_the_newest_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writes, "KEPT_CYCLES", 3)
    for _ in range(5):
        cycle(store, "fake")
    cycle(store, "other")

    current = cycle(store, "fake", complete=False)

    assert current == 6
    assert kept(store, "fake") == [4, 5, 6]
    assert kept(store, "other") == [1]
    last, running = store.last_cycle("fake", completed=True), store.last_cycle("fake")
    assert (last.cycle_id, last.completed_at) == (5, T0 + 5) if last else last
    assert (running.cycle_id, running.completed_at) == (6, None) if running else running
