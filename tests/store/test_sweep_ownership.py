"""Removals touch only what the removing provider owns, whichever way they are looked up."""

from __future__ import annotations

import pytest
from store_support import store_sql

from choreo_ingest.models import Delta, Entity, EntityIteratorResult, ProviderRecord, ProviderState
from choreo_ingest.store import Store, SweepGuards
from choreo_ingest.store.entity_rows import REFS

from fakes import make_entity

T0 = 1_800_000_000.0
NO_GUARDS = SweepGuards(
    reject_empty_source_collections=False, reject_removals_above_percentage=None
)
SHARED = make_entity("shared")
MINE = make_entity("mine")


def begin(store: Store, provider: str, now: float) -> ProviderRecord:
    record = store.load_provider(provider)
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    record.cycle_started_at = now
    store.start_cycle(record, now)
    return record


def commit(store: Store, record: ProviderRecord, *entities: Entity, now: float) -> None:
    result = EntityIteratorResult(done=True, entities=list(entities), cursor=None)
    store.commit_page(record.name, record.cycle_id, result, None, now)


@pytest.fixture
def taken_over(store: Store) -> Store:
    """`fake` saw both entities; then `other` emitted the shared one and, as releases before
    the first writer kept a ref did, took it over (now refused: `PageStats.refused`)."""
    commit(store, begin(store, "fake", T0), SHARED, MINE, now=T0)
    commit(store, begin(store, "other", T0 + 1), SHARED, now=T0 + 1)
    store_sql(store, "UPDATE entities SET provider = 'other' WHERE ref = ?", [SHARED.ref])
    cycle = store.load_provider("other").cycle_id
    store_sql(
        store,
        f"INSERT INTO {REFS} (provider, entity_ref, first_seen_cycle, last_seen_cycle, "
        "first_seen_at, last_seen_at) VALUES ('other', ?, ?, ?, ?, ?)",
        [SHARED.ref, cycle, cycle, T0 + 1, T0 + 1],
    )
    return store


def test_a_ref_another_provider_wrote_first_stays_its_own(store: Store) -> None:
    commit(store, begin(store, "other", T0), SHARED, now=T0)

    result = EntityIteratorResult(done=True, entities=[SHARED, MINE], cursor=None)
    stats = store.commit_page("fake", begin(store, "fake", T0 + 1).cycle_id, result, None, T0 + 1)

    assert (stats.upserted, stats.refused) == (1, ((SHARED.ref, "other"),))
    assert store.entity_counts("other") == {"Component": 1}
    assert store.active_count("fake") == 1


def test_sweep_drops_the_stale_ref_but_not_an_entity_another_provider_owns(
    taken_over: Store,
) -> None:
    record = begin(taken_over, "fake", T0 + 2)
    commit(taken_over, record, MINE, now=T0 + 2)
    record.state = ProviderState.RESTING

    result = taken_over.complete_cycle(record, NO_GUARDS, T0 + 2)

    assert result.removed == 0  # entities removed: the stale ref's entity is not `fake`'s
    assert taken_over.active_count("fake") == 1
    assert taken_over.entity_body(SHARED.ref) is not None
    assert [c.ref for c in taken_over.changes() if c.op == "delete"] == []


def test_sweep_removes_the_entities_it_owns_and_logs_each_once(taken_over: Store) -> None:
    record = begin(taken_over, "fake", T0 + 2)
    commit(taken_over, record, now=T0 + 2)
    record.state = ProviderState.RESTING

    taken_over.complete_cycle(record, NO_GUARDS, T0 + 2)

    assert taken_over.entity_body(MINE.ref) is None
    assert taken_over.entity_body(SHARED.ref) is not None
    assert [c.ref for c in taken_over.changes() if c.op == "delete"] == [MINE.ref]


def test_delta_removal_by_ref_spares_an_entity_another_provider_owns(
    taken_over: Store,
) -> None:
    record = taken_over.load_provider("fake")
    delta = Delta(upserts=[], removals=[SHARED.ref, MINE.ref], removal_scopes=[])

    _, removed = taken_over.apply_delta("fake", record.cycle_id, delta, T0 + 2)

    assert removed == 1
    assert taken_over.entity_body(SHARED.ref) is not None
    assert taken_over.entity_body(MINE.ref) is None
    assert [c.ref for c in taken_over.changes() if c.op == "delete"] == [MINE.ref]
