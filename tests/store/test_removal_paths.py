"""Removals outside the sweep: a page that says a scope is gone, and events that touch refs a
blocked sweep holds back (its count must stay what `removals approve` would remove)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from store_support import one_page_cycle, sqlite_steps

from choreo_ingest.models import Delta, Entity, EntityIteratorResult, ProviderState
from choreo_ingest.store import Store, SweepGuards

from fakes import make_entity

T0 = 1_800_000_000.0
GUARDED = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=10)


def scoped(name: str, scope: str) -> Entity:
    return replace(make_entity(name), scope=scope)


def cycle(store: Store, entities: list[Entity], guards: SweepGuards = GUARDED) -> int:
    return one_page_cycle(store, entities, guards, now=T0)


def names(store: Store) -> set[str]:
    return {body["metadata"]["name"] for body in store.iter_entities()}


def test_a_page_removes_the_scopes_it_says_are_gone_with_everything_below(store: Store) -> None:
    cycle(store, [scoped("org-a", "a"), scoped("sys", "a/p"), scoped("cmp", "a/p/c"),
                  scoped("org-b", "b")])  # fmt: skip
    record = store.load_provider("fake")

    page = EntityIteratorResult(False, [scoped("org-b", "b")], removal_scopes=["a"])
    store.commit_page("fake", record.cycle_id, page, None, T0)

    assert names(store) == {"org-b"}
    deletes = [change.ref for change in store.changes() if change.op == "delete"]
    assert sorted(deletes) == sorted(make_entity(n).ref for n in ("org-a", "sys", "cmp"))
    assert store.counters("fake")["entities_removed"] == 3


def test_event_removing_a_held_back_ref_lowers_the_blocked_count(store: Store) -> None:
    everything = [scoped(f"e{i}", f"s/e{i}") for i in range(10)]
    cycle(store, everything)
    assert cycle(store, everything[:7]) == 3  # 30% stale: above the 10% guard
    record = store.load_provider("fake")

    store.apply_delta("fake", record.cycle_id, Delta(removal_scopes=["s/e9"]), T0)

    assert store.blocked_removals("fake").count == 2
    assert store.approve_removals("fake", T0) == 2


def test_event_seeing_a_held_back_ref_again_lowers_the_blocked_count(store: Store) -> None:
    everything = [scoped(f"e{i}", f"s/e{i}") for i in range(10)]
    cycle(store, everything)
    assert cycle(store, everything[:7]) == 3
    record = store.load_provider("fake")

    store.apply_delta("fake", record.cycle_id, Delta(upserts=[everything[8]]), T0)

    assert store.blocked_removals("fake").count == 2
    assert store.blocked_removals("fake").reason == (  # what the sweep saw, the count what is
        "its sweep would have removed 3 of 10 active entities (30.0%), above "
        "rejectRemovalsAbovePercentage 10"
    )
    assert store.approve_removals("fake", T0) == 2
    assert names(store) == {f"e{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8)}


def test_a_burst_that_ends_keeps_the_count_its_pages_recounted(store: Store) -> None:
    """The engine stores, as a burst ends, the record it loaded before the burst: the count in
    it is older than the pages' recount, and must not overwrite it."""
    everything = [scoped(f"e{i}", f"s/e{i}") for i in range(10)]
    cycle(store, everything)
    assert cycle(store, everything[:7]) == 3
    record = store.load_provider("fake")
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, T0)  # the burst begins, holding `record` (3 blocked)

    page = EntityIteratorResult(False, everything[7:9])  # sees two held-back refs again
    store.commit_page("fake", record.cycle_id, page, '{"page": 1}', T0)
    record.state = ProviderState.INTERSTITIAL
    store.save_provider(record, T0 + 1)  # the burst ends

    assert record.blocked_removals == 3
    assert store.blocked_removals("fake").count == 1
    assert store.load_provider("fake").blocked_removals == 1
    assert store.pending_removal_refs("fake") == [everything[9].ref]
    assert store.approve_removals("fake", T0) == 1


def test_a_scope_removal_takes_its_scope_and_below_and_no_sibling_that_begins_alike(
    store: Store,
) -> None:
    """The removal reads a range of the scope index: siblings whose scope starts with the same
    text (`c-2`, `c.x`, `c!`, `c0`, `cé`) sort next to it and stay."""
    siblings = ["a/p/c-2", "a/p/c.x", "a/p/c!", "a/p/c0", "a/p/c\u00e9", "a/p/c-2/api", "a/p"]
    gone = ["a/p/c", "a/p/c/api", "a/p/c/api/x"]
    cycle(store, [scoped(f"e{n}", scope) for n, scope in enumerate([*siblings, *gone])])
    record = store.load_provider("fake")

    store.apply_delta("fake", record.cycle_id, Delta(removal_scopes=["a/p/c"]), T0)

    assert names(store) == {f"e{n}" for n in range(len(siblings))}


def test_entity_scopes_are_read_by_ref_for_the_provider_that_holds_them(store: Store) -> None:
    """What an event that knows only a removed entity's ref reads to find what lay below it."""
    cycle(store, [scoped("cmp", "a/p/c"), scoped("sys", "a/p")])
    one_page_cycle(store, [scoped("other", "b/q/d")], GUARDED, now=T0, provider="another")
    cmp, sys, other = (make_entity(n).ref for n in ("cmp", "sys", "other"))

    found = store.entity_scopes("fake", [cmp, sys, other, "component:default/absent"])

    assert found == {cmp: "a/p/c", sys: "a/p"}
    assert store.entity_scopes("another", [other]) == {other: "b/q/d"}
    assert store.entity_scopes("fake", []) == {}


def test_entity_scopes_costs_sqlite_the_same_in_a_large_catalog_as_in_a_small_one(
    tmp_path: Path,
) -> None:
    """The scope of one ref (an event for a deleted component reads its workload's) is read
    through the primary key: SQLite's steps for it do not grow with the provider's entities.
    With `provider = ?` in the query it walked the provider's scope index: 160 ms an event at
    300,000 entities."""
    ref, steps = make_entity("e7").ref, []
    for size in (20, 2_000):
        with Store.open(tmp_path / f"{size}.db") as store:
            store.migrate()
            cycle(store, [scoped(f"e{n}", f"s/e{n}") for n in range(size)])
            found, taken = sqlite_steps(store, lambda: store.entity_scopes("fake", [ref]))
            assert found == {ref: "s/e7"}
            steps.append(taken)

    assert steps[1] < 2 * steps[0], steps
