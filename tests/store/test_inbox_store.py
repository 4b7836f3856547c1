"""The event inbox on both stores (SQLite, PostgreSQL): arrival order, all-or-nothing batches,
coalescing by key, the capacity, parking, and events drained by a run (tests/test_events.py
covers the rest of the event path on SQLite)."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database
from store_support import earlier_release_migrations, query_plan, store_sql

from choreo_ingest.errors import InboxFull
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import SETTLE_SECONDS
from choreo_ingest.invocation import run_once
from choreo_ingest.models import Delta, EntityIteratorResult, Event, ProviderState
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.store import InboxCounts, SqliteLocation, StateLocation, Store, SweepGuards
from choreo_ingest.store.run_lock import RunLock

from event_fakes import component_event
from fakes import FakeClock, FakeProvider, make_config, make_entity


def pending(store: Store, provider: str = "fake") -> list[tuple[str, str]]:
    return [(e.body["name"], e.body["action"]) for e in store.pending_events(provider)]


def test_events_wait_in_arrival_order_and_per_provider(store: Store) -> None:
    first = store.add_events("fake", [component_event("b", "created")], 1.0)
    second = store.add_events(
        "fake", [component_event("a", "deleted"), component_event("c", "updated")], 2.0
    )
    store.add_events("other", [component_event("a", "created")], 3.0)

    assert pending(store) == [("b", "created"), ("a", "deleted"), ("c", "updated")]
    assert pending(store, "other") == [("a", "created")]
    assert first[0] < second[0] < second[1]
    assert [e.seq for e in store.pending_events("fake")] == [*first, *second]
    assert store.pending_event_count("fake") == 3


def test_pending_events_are_told_apart_from_parked_ones_and_other_providers(
    store: Store,
) -> None:
    assert not store.has_pending_events("fake")
    park(store, "a", 1.0)
    store.add_events("other", [component_event("b", "created")], 2.0)

    assert not store.has_pending_events("fake")  # parked: waits for an operator, not a drain
    assert store.has_pending_events("other")
    store.add_events("fake", [component_event("c", "created")], 3.0)
    assert store.has_pending_events("fake")


def test_bodies_come_back_as_stored(store: Store) -> None:
    body = component_event("a", "created", extra={"n": 1.5, "list": [1, "x", None], "u": "é"})
    store.add_events("fake", [body], 1.0)
    [event] = store.pending_events("fake")
    assert event.body == body
    assert event.attempts == 0


def test_nul_and_lone_surrogates_in_fields_no_run_reads_are_stored_replaced(store: Store) -> None:
    """PostgreSQL's JSONB refuses U+0000 and no database takes a lone surrogate: the event is
    stored with U+FFFD in their place on either store, not refused as a store failure (which a
    webhook sender would retry for ever)."""
    body = component_event("a", "created", extra={"a\u0000": ["x\u0000y", "\ud800"]})
    store.add_events("fake", [body], 1.0)
    [event] = store.pending_events("fake")
    assert event.body["extra"] == {"a\ufffd": ["x\ufffdy", "\ufffd"]}
    assert event.body["name"] == "a"


def test_a_batch_is_stored_whole_or_not_at_all(store: Store) -> None:
    unencodable = {**component_event("b", "created"), "extra": object()}
    with pytest.raises(TypeError):
        store.add_events("fake", [component_event("a", "created"), unencodable], 1.0)
    assert store.pending_events("fake") == []
    store.add_events("fake", [component_event("a", "created")], 1.0)  # the store still works
    assert pending(store) == [("a", "created")]


def test_a_newer_event_replaces_the_pending_one_and_takes_the_newest_place(store: Store) -> None:
    store.add_events("fake", [component_event("a", "created"), component_event("b", "created")], 1)
    store.add_events("fake", [component_event("a", "deleted")], 2.0)
    arrivals = [("c", "created"), ("d", "updated"), ("c", "updated"), ("d", "deleted")]
    store.add_events("fake", [component_event(n, a) for n, a in arrivals], 3.0)

    assert pending(store) == [
        ("b", "created"),
        ("a", "deleted"),
        ("c", "updated"),
        ("d", "deleted"),
    ]


@pytest.mark.parametrize(
    ("other", "coalesced"),
    [
        ({"namespace": ""}, False),
        ({"namespace": "other"}, False),
        ({"project": "q"}, False),
        ({"kind": "Workload"}, False),
        ({"name": "b"}, False),
        ({"action": "deleted", "extra": 1}, True),
    ],
    ids=["no-namespace", "other-namespace", "other-project", "other-kind", "other-name",
         "other-action"],
)  # fmt: skip
def test_the_key_is_provider_kind_namespace_name_and_project(
    store: Store, other: dict[str, Any], coalesced: bool
) -> None:
    first = component_event("a", "created")
    store.add_events("fake", [first, {**first, **other}], 1.0)
    store.add_events("other", [first], 1.0)

    assert store.pending_event_count("fake") == (1 if coalesced else 2)
    assert store.pending_event_count("other") == 1


def test_a_blank_namespace_is_no_namespace(store: Store) -> None:
    bare = {"kind": "Namespace", "name": "acme", "action": "created"}
    store.add_events("fake", [bare, {**bare, "namespace": ""}, {**bare, "namespace": None}], 1.0)
    assert [e.body for e in store.pending_events("fake")] == [{**bare, "namespace": None}]


def test_the_newest_event_takes_over_the_attempts_of_those_it_replaces(store: Store) -> None:
    store.add_events("fake", [component_event("a", "created"), component_event("b", "created")], 1)
    first, other = store.pending_events("fake")
    for _ in range(3):
        store.fail_event("fake", first.seq, "down", max_attempts=9)
    store.fail_event("fake", other.seq, "down", max_attempts=9)

    store.add_events("fake", [component_event("a", "updated"), component_event("c", "created")], 2)
    store.add_events("fake", [component_event("a", "deleted")], 3.0)

    assert [
        (e.body["name"], e.body["action"], e.attempts) for e in store.pending_events("fake")
    ] == [
        ("b", "created", 1),
        ("c", "created", 0),
        ("a", "deleted", 3),
    ]
    [replacing] = [e for e in store.pending_events("fake") if e.body["name"] == "a"]
    assert store.fail_event("fake", replacing.seq, "down", max_attempts=4)


def park(store: Store, name: str, received_at: float, provider: str = "fake") -> None:
    """Store an event about `name` and fail it until it is parked."""
    [seq] = store.add_events(provider, [component_event(name, "updated")], received_at)
    while not store.fail_event(provider, seq, "down", max_attempts=2):
        pass


def parked(store: Store) -> list[tuple[str, str, int]]:
    rows = store_sql(
        store,
        "SELECT CAST(body AS TEXT), attempts FROM event_inbox WHERE parked = 1 ORDER BY seq",
    )
    return [(json.loads(body)["name"], json.loads(body)["action"], n) for body, n in rows]


def test_a_newer_event_replaces_the_parked_one_and_starts_its_attempts_afresh(
    store: Store,
) -> None:
    """A parked event's attempts are spent: the newer event reports a later change and gets
    attempts of its own (a blip in a later outage must not park it at its first failure)."""
    park(store, "a", 1.0)
    park(store, "b", 1.0)

    store.add_events("fake", [component_event("a", "deleted")], 2.0)

    assert parked(store) == [("b", "updated", 2)]
    assert [
        (e.body["name"], e.body["action"], e.attempts) for e in store.pending_events("fake")
    ] == [("a", "deleted", 0)]
    [replacing] = store.pending_events("fake")
    assert not store.fail_event("fake", replacing.seq, "down", max_attempts=2)


def test_the_same_object_is_never_parked_twice(store: Store) -> None:
    """Three outages that each park the same events (the audit's repro, at the store): one
    parked event per object, not one per outage."""
    for outage in range(3):
        for name in ("a", "b", "a", "c"):
            park(store, name, float(outage))

    assert sorted(name for name, _, _ in parked(store)) == ["a", "b", "c"]
    assert store.inbox_counts().parked == 3


NO_GUARDS = SweepGuards(
    reject_empty_source_collections=False, reject_removals_above_percentage=None
)


def walk_cycle(store: Store, started: float) -> None:
    """One cycle begun at `started`, walked in one page, then completed."""
    record = store.load_provider("fake")
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, started)
    page = EntityIteratorResult(done=True, entities=[make_entity("e0")], cursor=None)
    store.commit_page("fake", record.cycle_id, page, None, started)
    record.state = ProviderState.RESTING
    store.complete_cycle(record, NO_GUARDS, started + 100.0)


def test_a_completed_cycle_forgets_the_parked_events_that_arrived_before_it_began(
    store: Store,
) -> None:
    """Its walk read those objects after the changes they report; a parked event that arrived
    once the walk was under way (it may have read the object before the change), a pending
    one, and another provider's stay."""
    park(store, "before", 9.0)
    park(store, "other", 9.0, provider="other")
    store.add_events("fake", [component_event("waiting", "created")], 9.0)

    record = store.load_provider("fake")
    record.cycle_id, record.state = 1, ProviderState.BURSTING
    store.start_cycle(record, 10.0)
    park(store, "during", 11.0)
    page = EntityIteratorResult(done=True, entities=[make_entity("e0")], cursor=None)
    store.commit_page("fake", 1, page, None, 12.0)
    assert [name for name, _, _ in parked(store)] == ["before", "other", "during"]
    record.state = ProviderState.RESTING
    store.complete_cycle(record, NO_GUARDS, 13.0)

    assert [name for name, _, _ in parked(store)] == ["other", "during"]
    assert pending(store) == [("waiting", "created")]

    walk_cycle(store, 20.0)

    assert [name for name, _, _ in parked(store)] == ["other"]


def test_a_cycle_whose_sweep_is_blocked_forgets_them_too(store: Store) -> None:
    """The walk read every object it found; one it no longer found waits in the blocked sweep."""
    walk_cycle(store, 1.0)
    park(store, "gone", 5.0)
    record = store.load_provider("fake")
    record.cycle_id, record.state = 2, ProviderState.BURSTING
    store.start_cycle(record, 10.0)
    store.commit_page("fake", 2, EntityIteratorResult(done=True, entities=[]), None, 10.0)
    record.state = ProviderState.RESTING
    guards = SweepGuards(
        reject_empty_source_collections=True, reject_removals_above_percentage=None
    )

    assert store.complete_cycle(record, guards, 11.0).reason is not None
    assert parked(store) == []


def test_events_past_the_capacity_are_refused_whole(store: Store) -> None:
    store.add_events("fake", [component_event("a", "created")], 1.0, capacity=2)
    with pytest.raises(InboxFull, match=r"room for 1 more events \(1 pending, the limit is 2\)"):
        store.add_events(
            "fake",
            [component_event("b", "created"), component_event("c", "created")],
            1.0,
            capacity=2,
        )
    assert pending(store) == [("a", "created")]
    # a full inbox still takes events that replace pending ones
    store.add_events("fake", [component_event("b", "created")], 1.0, capacity=2)
    store.add_events("fake", [component_event("a", "deleted")], 1.0, capacity=2)
    assert pending(store) == [("b", "created"), ("a", "deleted")]


def test_a_full_inbox_says_how_many_events_it_holds(store: Store) -> None:
    store.add_events("fake", [component_event(n, "created") for n in "ab"], 1.0, capacity=2)

    with pytest.raises(InboxFull) as refused:
        store.add_events("fake", [component_event("c", "created")], 1.0, capacity=2)

    assert str(refused.value).startswith(
        "the event inbox of 'fake' is full (2 pending events, the limit): 1 new events refused; "
    )
    assert (refused.value.pending, refused.value.refused) == (2, 1)


def test_a_batch_larger_than_the_inbox_says_it_never_fits(store: Store) -> None:
    """Nothing is pending, and waiting would not help: the message says so, not that the inbox
    holds its limit."""
    batch = [component_event(f"c{number}", "created") for number in range(4)]

    with pytest.raises(InboxFull) as refused:
        store.add_events("fake", batch, 1.0, capacity=3)

    assert str(refused.value) == (
        "a batch of 4 events about different objects never fits the event inbox of 'fake' "
        "(at most 3 pending, `events.inboxCapacity`): all 4 refused; send at most 3 at a time"
    )
    assert (refused.value.pending, refused.value.never_fits) == (0, True)
    assert pending(store) == []  # nothing of the batch was stored


def test_a_batch_that_fits_the_inbox_but_not_its_room_says_how_much_room_there_is(
    store: Store,
) -> None:
    store.add_events("fake", [component_event("a", "created")], 1.0, capacity=3)
    batch = [component_event(f"c{number}", "created") for number in range(3)]

    with pytest.raises(InboxFull) as refused:
        store.add_events("fake", batch, 1.0, capacity=3)

    assert str(refused.value).startswith(
        "the event inbox of 'fake' has room for 2 more events (1 pending, the limit is 3): "
        "all 3 new events refused, as a batch is stored whole or not at all; "
    )
    assert (refused.value.pending, refused.value.never_fits) == (1, False)
    assert pending(store) == [("a", "created")]  # nothing of the batch was stored


def test_drop_and_purge(store: Store) -> None:
    store.add_events("fake", [component_event("a", "created"), component_event("b", "x")], 1.0)
    store.add_events("other", [component_event("a", "created")], 1.0)
    [first, _] = store.pending_events("fake")
    store.fail_event("fake", first.seq, "down", max_attempts=1)

    assert store.drop_events("fake") == 1  # the parked one stays
    assert store.counters("fake")["events_dropped"] == 1
    assert store.purge_events("fake") == 1
    assert store.purge_events() == 1
    assert store.inbox_counts().pending == store.inbox_counts().parked == 0


def test_concurrent_writers_coalesce_and_count_exactly(
    store: Store, any_location: StateLocation
) -> None:
    """Writers on connections of their own at the same time (serve's replicas): every key keeps
    exactly one pending event, and the capacity is never exceeded."""
    names = [f"n{i}" for i in range(8)]
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with any_location.open() as own:
                for _ in range(15):
                    batch = [component_event(rng.choice(names), "updated") for _ in range(3)]
                    own.add_events("fake", batch, 1.0, capacity=len(names))
        except BaseException as error:  # reported below: a thread's error is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    found = [name for name, _ in pending(store)]
    assert sorted(found) == sorted(set(found))
    assert set(found) <= set(names)


def test_storing_an_event_finds_those_about_its_object_by_index_not_by_reading_them_all(
    any_location: StateLocation,
) -> None:
    """The coalescing looks for the older events about an object through `event_inbox_by_name`
    and the capacity check counts through `event_inbox_waiting`: read one by one, a large inbox
    (the API down for a while) made each event stored cost 0.1 s at 100,000 waiting."""
    seen: list[tuple[str, Sequence[object]]] = []
    with any_location.open(tracer=lambda sql, params: seen.append((sql, params))) as store:
        store.migrate()
        store.add_events("fake", [component_event(f"c{i}", "updated") for i in range(50)], 1.0)
        seen.clear()
        store.add_events("fake", [component_event("c7", "deleted")], 2.0)

    reads = [(sql, params) for sql, params in seen if "event_inbox" in sql]
    statements = [sql.split()[0] for sql, _ in reads]
    assert statements == ["INSERT", "UPDATE", "DELETE", "SELECT"]  # coalesced, then counted
    for sql, params in reads[1:]:
        index = "event_inbox_waiting" if sql.startswith("SELECT") else "event_inbox_by_name"
        plan = query_plan(any_location, sql, params)
        assert index in plan, (sql, plan)


def test_a_providers_counts_come_from_the_index_and_its_oldest_is_the_first_waiting(
    any_location: StateLocation,
) -> None:
    """`serve` writes them at every tick (its metrics): read from `event_inbox_waiting` alone,
    not from every event waiting (18 ms a tick at 100,000 waiting), and the oldest pending one
    is the first in arrival order."""
    seen: list[tuple[str, Sequence[object]]] = []
    with any_location.open(tracer=lambda sql, params: seen.append((sql, params))) as store:
        store.migrate()
        store.add_events("fake", [component_event(f"c{i}", "updated") for i in range(20)], 5.0)
        store.add_events("fake", [component_event("c0", "deleted")], 9.0)  # c0 goes last
        store.add_events("other", [component_event("x", "created")], 1.0)
        [first, *_] = store.pending_events("fake")
        store.fail_event("fake", first.seq, "down", max_attempts=1)
        seen.clear()
        counts = store.inbox_counts("fake")

    assert counts == InboxCounts(pending=19, parked=1, oldest_pending_at=5.0)
    counted, _ = seen[0]
    plan = query_plan(any_location, counted, ["fake"])
    assert "event_inbox_waiting" in plan, plan
    if isinstance(any_location, SqliteLocation):
        assert "COVERING INDEX event_inbox_waiting" in plan, plan
        assert all("SCAN event_inbox" not in query_plan(any_location, *read) for read in seen)


class EventFakeProvider(FakeProvider):
    """A FakeProvider whose events re-read `entities` (as tests/test_events.py's)."""

    def handle_event(self, context: BurstContext, event: Event) -> Delta:
        found = [entity for entity in self.entities if entity.name == event.name]
        if event.action == "deleted" or not found:
            return Delta(removal_scopes=[event.name])
        return Delta(upserts=found, removal_scopes=[event.name])


def test_a_run_drains_the_events_in_arrival_order(
    any_location: StateLocation, tmp_path: Any
) -> None:
    clock = FakeClock()
    config = make_config(tmp_path)
    five = [make_entity(f"e{i}") for i in range(5)]
    provider = EventFakeProvider(list(five))
    run_once(config, any_location, clock, providers={"fake": provider}, rng=random.Random(0))
    provider.entities = [*five[1:], make_entity("new")]
    arrivals = [("e2", "deleted"), ("e0", "deleted"), ("new", "created"), ("e3", "updated")]
    stored_events(any_location, "fake", [component_event(n, a) for n, a in arrivals], clock)
    clock.advance(SETTLE_SECONDS)  # an `updated` event waits that long

    result = run_once(
        config, any_location, clock, providers={"fake": provider}, rng=random.Random(0)
    )

    assert result.events.applied == 4
    with any_location.open(readonly=True) as store:
        names = {body["metadata"]["name"] for body in store.iter_entities()}
        assert names == {"e1", "e3", "e4", "new"}
        assert store.pending_events("fake") == []
        assert store.counters("fake")["events_applied"] == 4


def test_the_first_event_creates_and_migrates_the_state(any_location: StateLocation) -> None:
    assert not any_location.exists()

    stored_events(any_location, "fake", [component_event("a", "created")], FakeClock())

    assert any_location.exists()
    with any_location.open(readonly=True) as store:
        store.require_current_schema()
        assert pending(store) == [("a", "created")]


def test_storing_events_does_not_need_the_run_lock(any_location: StateLocation) -> None:
    clock = FakeClock()
    stored_events(any_location, "fake", [component_event("a", "created")], clock)
    with any_location.open_locked():  # a burst is running
        assert stored_events(any_location, "fake", [component_event("b", "created")], clock)[0] == 1
    with any_location.open(readonly=True) as store:
        assert pending(store) == [("a", "created"), ("b", "created")]


def test_an_event_waits_for_an_older_releases_run_to_let_go_then_migrates(
    tmp_path: Path,
) -> None:
    """An upgrade under cron: the run holding the lock is the old release's, which never applies
    the new migrations; once it lets go, the event migrates the state itself and is stored."""
    state = tmp_path / "state.db"
    with closing(sqlite3.connect(state, isolation_level=None)) as raw:
        earlier_release_migrations().apply(Database(raw), stop_before="0005_counts")
    old_run = RunLock(state)
    old_run.__enter__()

    class OldRunEnds(FakeClock):
        released = False

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if self.monotonic() > 1001.0 and not self.released:  # a second into the wait
                old_run.__exit__(None, None, None)
                self.released = True

    stored, _ = stored_events(state, "fake", [component_event("a", "created")], OldRunEnds())

    assert stored == 1
    with Store.open(state, readonly=True) as store:
        assert store.pending_migrations() == []
        assert [event.body["name"] for event in store.pending_events("fake")] == ["a"]
