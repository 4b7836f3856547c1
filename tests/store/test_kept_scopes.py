"""A page that keeps scopes (`EntityIteratorResult.kept_scopes`): the listings of a namespace the
walk stepped over keep their entities and index rows through the cycle's sweep, and nothing else
does."""

from __future__ import annotations

from dataclasses import replace

from choreo_ingest.models import Entity, EntityIteratorResult, IndexEntry, ProviderState
from choreo_ingest.store import Store, SweepGuards

from fakes import make_entity

T0 = 1_800_000_000.0
UNGUARDED = SweepGuards(
    reject_empty_source_collections=False, reject_removals_above_percentage=None
)
WORKLOADS = "workloads"


def scoped(name: str, scope: str) -> Entity:
    return replace(make_entity(name), scope=scope)


EVERYTHING = [
    scoped("ns-a", "a"),
    scoped("sys-a", "a/p"),
    scoped("cmp-a", "a/p/c"),
    scoped("ns-a-2", "a-2"),  # a sibling whose name begins like the kept scope
    scoped("cmp-a-2", "a-2/p/c"),
    scoped("ns-b", "b"),
]
INDEXED = ["a/w", "a-2/w", "b/w", "ab"]


def cycle(store: Store, pages: list[EntityIteratorResult], now: float) -> int:
    """One cycle of provider `fake` walking `pages`, then its sweep: how many it removed."""
    record = store.load_provider("fake")
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, now)
    for page in pages:
        store.commit_page("fake", record.cycle_id, page, None, now)
    record.state = ProviderState.RESTING
    return store.complete_cycle(record, UNGUARDED, now).removed


def names(store: Store) -> set[str]:
    return {body["metadata"]["name"] for body in store.iter_entities()}


def indexed(store: Store) -> set[str]:
    return set(store.index_by_key("fake", WORKLOADS, INDEXED))


def first_cycle(store: Store) -> None:
    index = [IndexEntry(WORKLOADS, key, "", {"n": 1}) for key in INDEXED]
    cycle(store, [EntityIteratorResult(True, EVERYTHING, index=index)], T0)


def test_a_kept_scope_keeps_its_entities_and_everything_below_through_the_sweep(
    store: Store,
) -> None:
    first_cycle(store)

    removed = cycle(
        store,
        [
            EntityIteratorResult(False, [scoped("ns-a", "a"), scoped("ns-b", "b")]),
            EntityIteratorResult(True, kept_scopes=["a"]),
        ],
        T0 + 60,
    )

    assert names(store) == {"ns-a", "sys-a", "cmp-a", "ns-b"}
    assert removed == 2  # a-2 and what it held were not seen, and are not below `a`
    assert store.active_count("fake") == 4


def test_a_kept_scope_keeps_its_index_rows_through_the_completion(store: Store) -> None:
    first_cycle(store)

    cycle(store, [EntityIteratorResult(True, kept_scopes=["a"])], T0 + 60)

    assert indexed(store) == {"a/w"}  # not `a-2/w`, `ab` or another scope's rows


def test_kept_entities_are_not_changes(store: Store) -> None:
    first_cycle(store)
    before = store.changes()[-1].seq

    cycle(store, [EntityIteratorResult(True, EVERYTHING[:3], kept_scopes=["a"])], T0 + 60)

    changed = {change.ref for change in store.changes() if change.seq > before}
    assert changed == {make_entity(name).ref for name in ("ns-a-2", "cmp-a-2", "ns-b")}
    assert all(change.op == "delete" for change in store.changes() if change.seq > before)


def test_a_kept_scope_with_nothing_in_it_keeps_nothing(store: Store) -> None:
    first_cycle(store)

    removed = cycle(store, [EntityIteratorResult(True, kept_scopes=["gone"])], T0 + 60)

    assert names(store) == set()
    assert removed == len(EVERYTHING)


def test_a_kept_scope_leaves_what_a_blocked_sweep_holds_back_held(store: Store) -> None:
    first_cycle(store)
    guarded = SweepGuards(
        reject_empty_source_collections=False, reject_removals_above_percentage=10
    )
    record = store.load_provider("fake")
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, T0 + 60)
    seen = [entity for entity in EVERYTHING if entity.name != "cmp-a"]
    store.commit_page("fake", record.cycle_id, EntityIteratorResult(True, seen), None, T0 + 60)
    record.state = ProviderState.RESTING
    assert store.complete_cycle(record, guarded, T0 + 60).blocked == 1  # cmp-a, held back

    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, T0 + 120)
    kept = EntityIteratorResult(True, seen, kept_scopes=["a"])
    store.commit_page("fake", record.cycle_id, kept, None, T0 + 120)

    assert store.blocked_removals("fake").count == 1  # not seen again by keeping its scope
    record.state = ProviderState.RESTING
    assert store.complete_cycle(record, guarded, T0 + 120).blocked == 1
    assert store.approve_removals("fake", T0 + 180) == 1
    assert "cmp-a" not in names(store)


def test_a_kept_scope_keeps_the_rows_that_name_a_subject_in_it(store: Store) -> None:
    """A data warning's row is keyed by its event and subject (`owner_unusable Component a/c`)."""
    keys = ["owner_unusable Component a/p/c", "owner_unusable Component a-2/p/c", "x System b/p"]
    cycle(
        store,
        [EntityIteratorResult(True, index=[IndexEntry("warned", k, "", 1) for k in keys])],
        T0,
    )

    cycle(store, [EntityIteratorResult(True, kept_scopes=["a"])], T0 + 60)

    assert set(store.index_by_key("fake", "warned", keys)) == {keys[0]}
