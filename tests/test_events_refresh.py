"""A fresh walk in place of events: a backlog dropped past the provider's limit, or events refused
by a full inbox. The walk that stands in for them must begin after them (a new cycle, the one in
progress abandoned and never swept), and a run killed between any two of its steps loses
neither the events nor the walk, and does nothing twice."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from choreo_ingest.config import Config
from choreo_ingest.errors import InboxFull
from choreo_ingest.event_intake import stored_events
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.models import (
    REFRESH_REQUESTED_FACT,
    Delta,
    Entity,
    EntityIteratorResult,
    Event,
    ProviderRecord,
    ProviderState,
)
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.store import Store

from fakes import FakeClock, FakeProvider, ProcessDied, make_config, make_entity

TEN = [make_entity(f"e{i}") for i in range(10)]
GONE = TEN[:4]
"""Deleted from the source once the first burst of cycle 2 has walked past them."""
LIMIT = 3
"""The provider's `max_pending_events`. A backlog is dropped past it and past the pages of the
last complete walk (five: TEN in pages of two), so the backlog (`backlog()`) is six events."""


@dataclass
class Source(FakeProvider):
    """A FakeProvider whose events re-read `entities`, and which drops a backlog past LIMIT."""

    on_page: Callable[[int], None] | None = None
    """Called as page N (0-based) of a burst is served: the world may change meanwhile."""
    handled: list[Event] = field(default_factory=list)

    @property
    def max_pending_events(self) -> int | None:
        return LIMIT

    def event_problem(self, body: Any) -> str | None:
        return None

    def is_ignored(self, body: Any) -> bool:
        return False

    def handle_event(self, context: BurstContext, event: Event) -> Delta:
        self.handled.append(event)
        found = [entity for entity in self.entities if entity.name == event.name]
        return Delta(upserts=found, removal_scopes=[event.name])

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        page_index = 0 if cursor is None else int(cursor["offset"]) // self.page_size
        if self.on_page is not None:
            self.on_page(page_index)
        return super().next(context, cursor)


def deleted(entity: Entity, action: str = "deleted") -> dict[str, Any]:
    return {"kind": "Component", "name": entity.name, "namespace": "default", "action": action}


def backlog() -> list[dict[str, Any]]:
    """A backlog to drop: GONE's deletes, and `created` events of the last two entities."""
    return [deleted(entity) for entity in GONE] + [deleted(e, "created") for e in TEN[-2:]]


def scenario_config(tmp_path: Path) -> Config:
    # A page costs 5 s of a 10 s burst: two pages (four entities) a burst.
    return make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=3600.0)


def run(
    config: Config, clock: FakeClock, provider: Source, arrived: threading.Event | None = None
) -> RunResult:
    assert config.state_path is not None
    with structlog.testing.capture_logs():
        return run_once(
            config,
            config.state_path,
            clock,
            providers={"fake": provider},
            rng=random.Random(0),
            events_arrived=arrived,
        )


def run_until_resting(config: Config, clock: FakeClock, provider: Source) -> None:
    for _ in range(20):
        run(config, clock, provider)
        if stored(config).state is ProviderState.RESTING:
            return
        clock.advance(60.0)
    pytest.fail("the provider never came to rest")


def stored(config: Config) -> ProviderRecord:
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return store.load_provider("fake")


def start(config: Config, clock: FakeClock, *, mid_cycle: bool) -> Source:
    """Cycle 1 complete; with `mid_cycle`, cycle 2 interstitial past GONE (its first burst)."""
    provider = Source(list(TEN), page_cost=5.0)
    run_until_resting(config, clock, provider)
    if mid_cycle:
        clock.advance(3600.0)
        run(config, clock, provider)
        record = stored(config)
        assert (record.state, record.cycle_id, record.cursor) == (
            ProviderState.INTERSTITIAL,
            2,
            {"offset": 4},
        )
    return provider


def delete_from_source(provider: Source) -> None:
    provider.entities = [entity for entity in provider.entities if entity not in GONE]


def assert_caught_up(config: Config, *, last_cycle: int, dropped: int = 0) -> None:
    """The catalog is the source, every change logged once, no request left over."""
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        names = {body["metadata"]["name"] for body in store.iter_entities()}
        changes = store.changes()
        counters = store.counters("fake")
        facts = store.facts("fake")
        record = store.load_provider("fake")
    assert names == {entity.name for entity in TEN[4:]}
    assert Counter(c.ref for c in changes if c.op == "upsert") == {e.ref: 1 for e in TEN}
    assert Counter(c.ref for c in changes if c.op == "delete") == {e.ref: 1 for e in GONE}
    assert counters.get("events_dropped", 0) == dropped
    assert REFRESH_REQUESTED_FACT not in facts
    assert (record.state, record.cycle_id) == (ProviderState.RESTING, last_cycle)


def assert_abandoned(config: Config, cycle_id: int) -> None:
    """The cycle given up is marked so, and was never swept."""
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        counters = store.counters("fake")
    # one sweep per cycle that completed: cycle 1 and the new one, not the abandoned one
    assert counters.get("cycles_completed", 0) + counters.get("cycles_blocked", 0) == 2
    assert counters.get("cycles_abandoned") == 1  # counted once, whatever was replayed
    with closing(sqlite3.connect(config.state_path)) as conn:
        row = conn.execute(
            "SELECT outcome, completed_at, removed FROM cycles WHERE cycle_id = ?", [cycle_id]
        ).fetchone()
    assert row == ("abandoned", None, 0)


@pytest.mark.parametrize("mid_cycle", [False, True], ids=["resting", "mid-cycle"])
def test_a_dropped_backlog_is_replaced_by_a_walk_that_begins_after_it(
    tmp_path: Path, clock: FakeClock, mid_cycle: bool
) -> None:
    """Mid-cycle, resuming would walk on past the listings the events were about: the deletes
    they carried would stay until the cycle after, a whole rest later."""
    config = scenario_config(tmp_path)
    provider = start(config, clock, mid_cycle=mid_cycle)
    delete_from_source(provider)
    assert config.state_path is not None
    stored_events(config.state_path, "fake", backlog(), clock)

    with structlog.testing.capture_logs() as logs:  # (`run` captures its own)
        providers = {"fake": provider}
        first = run_once(
            config, config.state_path, clock, providers=providers, rng=random.Random(0)
        )
    run_until_resting(config, clock, provider)

    assert (first.events.dropped, provider.handled) == (6, [])
    assert first.providers[0].action == "burst"
    assert_caught_up(config, last_cycle=3 if mid_cycle else 2, dropped=6)
    [said] = [line for line in logs if line["event"] == "refresh_requested"]
    assert said["abandoned_cycle"] == (2 if mid_cycle else None)
    assert ("cycle 2, in progress, is given up" in said["message"]) == mid_cycle
    if mid_cycle:
        assert_abandoned(config, 2)


def test_the_first_cycle_is_not_given_up_for_a_dropped_backlog_and_the_second_follows_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The forwarder's start during the first cycle: walking from the start again would keep
    the catalog empty for longer. The first cycle completes, and the second, which catches up
    what the dropped events said, begins at once instead of after `restLength` (an hour)."""
    config = scenario_config(tmp_path)
    provider = Source(list(TEN), page_cost=5.0)
    run(config, clock, provider)
    assert (stored(config).state, stored(config).cycle_id) == (ProviderState.INTERSTITIAL, 1)
    delete_from_source(provider)
    assert config.state_path is not None
    stored_events(config.state_path, "fake", backlog(), clock)
    clock.advance(60.0)

    dropped = run(config, clock, provider)
    for _ in range(20):
        if stored(config).cycle_id == 2 and stored(config).state is ProviderState.RESTING:
            break
        clock.advance(60.0)
        run(config, clock, provider)

    assert dropped.events.dropped == 6
    with closing(sqlite3.connect(config.state_path)) as conn:
        cycles = conn.execute(
            "SELECT cycle_id, outcome, started_at, completed_at FROM cycles ORDER BY cycle_id"
        ).fetchall()
    (_, first, _, first_done), (_, second, second_began, _) = cycles
    assert (first, second) == ("completed", "completed")
    assert second_began - first_done <= 60.0
    assert_caught_up(config, last_cycle=2, dropped=6)


def test_events_refused_by_a_full_inbox_mid_cycle_are_replaced_by_a_new_cycle(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = scenario_config(tmp_path)
    provider = start(config, clock, mid_cycle=True)
    delete_from_source(provider)
    assert config.state_path is not None
    stored_events(config.state_path, "fake", [deleted(e) for e in GONE[:2]], clock, capacity=2)
    with pytest.raises(InboxFull):
        stored_events(config.state_path, "fake", [deleted(e) for e in GONE[2:]], clock, capacity=2)

    run_until_resting(config, clock, provider)

    assert [event.name for event in provider.handled] == ["e0", "e1"]
    assert_caught_up(config, last_cycle=3, dropped=2)  # the two refused
    assert_abandoned(config, 2)


def test_a_backlog_dropped_between_a_bursts_pages_is_walked_again_after_that_burst(
    tmp_path: Path, clock: FakeClock
) -> None:
    """`serve` drains the inbox between a burst's pages: the request is applied once that
    burst has ended (the burst stores its record as it ends, and would overwrite it)."""
    config = scenario_config(tmp_path)
    provider = start(config, clock, mid_cycle=False)
    clock.advance(3600.0)
    arrived = threading.Event()
    assert config.state_path is not None
    state_path = config.state_path

    def forwarder_starts(page_index: int) -> None:
        if page_index == 1 and provider.on_page is not None:
            provider.on_page = None
            delete_from_source(provider)
            stored_events(state_path, "fake", backlog(), clock)
            arrived.set()

    provider.on_page = forwarder_starts

    during = run(config, clock, provider, arrived)

    assert during.events.dropped == 6
    assert stored(config).state is ProviderState.INTERSTITIAL
    with Store.open(state_path, readonly=True) as store:
        assert REFRESH_REQUESTED_FACT in store.facts("fake")
    clock.advance(30.0)
    run_until_resting(config, clock, provider)
    assert_caught_up(config, last_cycle=3, dropped=6)
    assert_abandoned(config, 2)


def test_a_cycle_begun_in_place_of_an_abandoned_one_is_resumed_not_abandoned_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Backlogs that came more often than a cycle takes restarted the walk every time: no cycle
    completed, and what the source deleted stayed in the catalog for good."""
    config = scenario_config(tmp_path)
    provider = start(config, clock, mid_cycle=True)
    delete_from_source(provider)
    assert config.state_path is not None
    stored_events(config.state_path, "fake", backlog(), clock)
    run(config, clock, provider)  # cycle 2 abandoned; cycle 3's first burst
    assert (stored(config).cycle_id, stored(config).state) == (3, ProviderState.INTERSTITIAL)

    stored_events(config.state_path, "fake", backlog(), clock)
    clock.advance(10.0)  # within burstInterval (30 s): the cycle in progress is not made due
    early = run(config, clock, provider)
    assert early.events.dropped == 6
    assert early.providers[0].action == "waiting"

    stored_events(config.state_path, "fake", backlog(), clock)
    clock.advance(20.0)
    again = run(config, clock, provider)
    run_until_resting(config, clock, provider)

    assert again.events.dropped == 6
    assert again.providers[0].action == "burst"
    assert_caught_up(config, last_cycle=3, dropped=18)
    assert_abandoned(config, 2)


STEPS = ["set_facts", "drop_events", "save_provider", "set_facts", "start_cycle"]
"""The writes of a run that drops a backlog, up to its burst's first, each one transaction:
the request, the drop, the cycle abandoned (or the rest ended), the request cleared, the new
cycle begun."""


@pytest.mark.parametrize("mid_cycle", [False, True], ids=["resting", "mid-cycle"])
@pytest.mark.parametrize(
    "killed_after",
    range(1, len(STEPS) + 1),
    ids=[f"{n}-after-{name}" for n, name in enumerate(STEPS, start=1)],
)
def test_a_run_killed_between_any_two_steps_of_a_drop_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    mid_cycle: bool,
    killed_after: int,
) -> None:
    config = scenario_config(tmp_path)
    provider = start(config, clock, mid_cycle=mid_cycle)
    delete_from_source(provider)
    assert config.state_path is not None
    stored_events(config.state_path, "fake", backlog(), clock)
    writes: list[str] = []

    def dies_after(name: str) -> Callable[..., Any]:
        original = getattr(Store, name)

        def write(self: Store, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            writes.append(name)
            if len(writes) == killed_after:
                raise ProcessDied(f"killed after {name}")
            return result

        return write

    with monkeypatch.context() as patched:
        for name in set(STEPS):
            patched.setattr(Store, name, dies_after(name))
        with pytest.raises(ProcessDied):
            run(config, clock, provider)
    assert writes == STEPS[:killed_after]

    for _ in range(20):
        clock.advance(60.0)
        run(config, clock, provider)
        if stored(config).state is ProviderState.RESTING:
            break
    assert provider.handled == []
    assert_caught_up(config, last_cycle=3 if mid_cycle else 2, dropped=6)
    if mid_cycle:
        assert_abandoned(config, 2)
