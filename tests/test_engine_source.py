"""A provider that names its source (`SourceNamingProvider`: OpenChoreo's `baseUrl`): a cycle
begun on another source is begun again, and the change is said once, as the cycle begins."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from choreo_ingest.cycle_source import new_cycle_facts
from choreo_ingest.invocation import run_once
from choreo_ingest.models import (
    SOURCE_CYCLE_FACT,
    SOURCE_FACT,
    SOURCES_ALTERNATE_FACT,
    ProviderState,
    sources_alternate,
)
from choreo_ingest.providers.base import SourceNamingProvider
from choreo_ingest.reporting import status_report
from choreo_ingest.store import SqliteLocation, Store, state_location
from choreo_ingest.store import writes as store_writes

from fakes import (
    DyingEveryTime,
    FakeClock,
    FakeProvider,
    ProcessDied,
    SourcedProvider,
    make_config,
    make_entity,
)

OLD = [make_entity(f"old{i}") for i in range(10)]
NEW = [make_entity(f"new{i}") for i in range(6)]


def run(config: Any, clock: FakeClock, provider: FakeProvider) -> Any:
    [outcome] = run_once(config, config.state_path, clock, providers={"fake": provider}).providers
    return outcome


def refs(path: Path) -> set[str]:
    with state_location(SqliteLocation(path)).open(readonly=True) as store:
        return {entity["metadata"]["name"] for entity in store.iter_entities()}


def source_lines(logs: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    return [
        (line["before"], line["now"], line["cycle_begun_again"])
        for line in logs
        if line["event"] == "source_changed"
    ]


def test_the_fake_names_its_source() -> None:
    assert isinstance(SourcedProvider(OLD), SourceNamingProvider)
    assert not isinstance(FakeProvider(OLD), SourceNamingProvider)


def test_a_cycle_begun_on_another_source_begins_again_and_sweeps_only_what_the_new_one_lacks(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Finished on the new source, the cycle would keep the old one's walked pages as seen and
    sweep the rest of it: a catalog of neither."""
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=600.0)
    old = SourcedProvider(OLD, page_size=2, page_cost=5.0)
    assert run(config, clock, old).pages == 2  # cycle 1, 4 of OLD's 10 walked
    new = SourcedProvider(NEW, page_size=2, page_cost=5.0, source="http://b.test/api/v1")

    clock.advance(30.0)
    with structlog.testing.capture_logs() as logs:
        begun = run(config, clock, new)
    clock.advance(30.0)
    with structlog.testing.capture_logs() as later:
        last = run(config, clock, new)

    assert new.calls == [None, {"offset": 2}, {"offset": 4}]  # from its start
    assert source_lines(logs) == [("http://a.test/api/v1", "http://b.test/api/v1", True)]
    assert source_lines(later) == []
    assert begun.pages == 2
    assert (last.cycle_completed, last.entities_removed) == (True, 4)  # the old pages walked
    assert refs(config.state_path) == {entity.name for entity in NEW}
    with Store.open(config.state_path, readonly=True) as store:
        assert store.load_provider("fake").cycle_id == 2
        assert store.facts("fake")[SOURCE_FACT] == "http://b.test/api/v1"
    with closing(sqlite3.connect(config.state_path)) as conn:
        outcomes = conn.execute("SELECT cycle_id, outcome FROM cycles ORDER BY cycle_id").fetchall()
    assert outcomes == [(1, "abandoned"), (2, "completed")]


def test_between_cycles_a_new_source_waits_out_the_rest_and_is_said_as_its_cycle_begins(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path, burst_length=100.0, rest_length=600.0)
    assert run(config, clock, SourcedProvider(OLD, page_size=5)).cycle_completed
    new = SourcedProvider(NEW, page_size=5, source="http://b.test/api/v1")

    clock.advance(60.0)
    with structlog.testing.capture_logs() as resting:
        waiting = run(config, clock, new)
    clock.advance(600.0)
    with structlog.testing.capture_logs() as logs:
        cycle = run(config, clock, new)

    assert (waiting.action, new.calls[:1]) == ("waiting", [None])
    assert source_lines(resting) == []
    assert source_lines(logs) == [("http://a.test/api/v1", "http://b.test/api/v1", False)]
    assert (cycle.cycle_completed, cycle.entities_removed) == (True, len(OLD))
    assert refs(config.state_path) == {entity.name for entity in NEW}


def test_a_cycle_whose_source_no_release_stored_goes_on(tmp_path: Path, clock: FakeClock) -> None:
    """A state an earlier release wrote says nothing of its source: the cycle is taken as this
    one's, and the next stores it."""
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=600.0)
    provider = SourcedProvider(OLD, page_size=2, page_cost=5.0)
    run(config, clock, provider)
    with Store.open(config.state_path) as store:
        store.set_facts("fake", {SOURCE_FACT: None}, clock.now())

    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            clock.advance(30.0)
            outcome = run(config, clock, provider)

    assert provider.calls[2] == {"offset": 4}
    assert outcome.cycle_completed
    assert source_lines(logs) == []
    with Store.open(config.state_path, readonly=True) as store:
        assert SOURCE_FACT not in store.facts("fake")
    clock.advance(600.0)
    run(config, clock, provider)
    with Store.open(config.state_path, readonly=True) as store:
        assert store.facts("fake")[SOURCE_FACT] == "http://a.test/api/v1"


def test_a_source_stored_for_another_cycle_says_nothing_of_this_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Rolled back, a release that stores no source began the cycle in progress (on another
    address) and left the source this release stored for the cycle before: it goes on."""
    config = make_config(tmp_path, burst_length=100.0, burst_interval=30.0, rest_length=600.0)
    assert run(config, clock, SourcedProvider(OLD, page_size=10)).cycle_completed
    clock.advance(600.0)
    run(config, clock, FakeProvider(OLD, page_size=2, page_cost=60.0))  # one page of cycle 2
    provider = SourcedProvider(OLD, page_size=2, source="http://b.test/api/v1")

    clock.advance(30.0)
    with structlog.testing.capture_logs() as logs:
        run(config, clock, provider)

    assert source_lines(logs) == []
    assert provider.calls[0] == {"offset": 2}
    with Store.open(config.state_path, readonly=True) as store:
        assert store.load_provider("fake").cycle_id == 2


def test_a_kill_as_the_cycle_begins_again_leaves_the_old_cycle_whole(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new cycle and its source are stored in one transaction: killed inside it, the next
    run finds the old cycle and the old source, and begins again from there."""
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=600.0)
    run(config, clock, SourcedProvider(OLD, page_size=2, page_cost=5.0))
    new = SourcedProvider(NEW, page_size=2, page_cost=5.0, source="http://b.test/api/v1")
    saved = store_writes.save_provider

    def dies(*args: Any, **kwargs: Any) -> None:
        raise ProcessDied

    clock.advance(30.0)
    monkeypatch.setattr(store_writes, "save_provider", dies)
    with pytest.raises(ProcessDied):
        run(config, clock, new)
    monkeypatch.setattr(store_writes, "save_provider", saved)

    with Store.open(config.state_path, readonly=True) as store:
        record = store.load_provider("fake")
        assert (record.cycle_id, record.cursor) == (1, {"offset": 4})
        assert store.facts("fake")[SOURCE_FACT] == "http://a.test/api/v1"
    assert run(config, clock, new).state is ProviderState.INTERSTITIAL
    with Store.open(config.state_path, readonly=True) as store:
        assert store.load_provider("fake").cycle_id == 2
        assert store.facts("fake")[SOURCE_FACT] == "http://b.test/api/v1"


@dataclass
class DyingProvider(DyingEveryTime, SourcedProvider):
    """Its process dies on its second page, the burst left `bursting`."""


def test_a_burst_that_did_not_finish_is_counted_when_its_cycle_begins_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=600.0)
    with pytest.raises(ProcessDied):
        run(config, clock, DyingProvider(OLD, page_size=2))
    new = SourcedProvider(NEW, page_size=2, source="http://b.test/api/v1")

    clock.advance(600.0)
    run(config, clock, new)

    with Store.open(config.state_path, readonly=True) as store:
        assert store.load_provider("fake").cycle_id == 2
        assert store.counters("fake").get("bursts_failed") == 1


def health_of(config: Any, clock: FakeClock) -> list[str]:
    [provider] = status_report(config.state_path, config, clock.now()).providers
    return provider.health_problems


def test_cycles_that_read_two_sources_in_turn_are_a_health_problem_until_one_stays(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Two configs sharing one state, each naming its own platform: on a platform small enough
    for one burst a cycle, every run completed a cycle that swept the other's catalog, and
    `health` stayed green."""
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=0.0)
    a = SourcedProvider(OLD, page_size=20)
    b = SourcedProvider(NEW, page_size=20, source="http://b.test/api/v1")
    seen = []
    for provider in (a, b, a, b, b):
        clock.advance(60.0)
        assert run(config, clock, provider).cycle_completed
        seen.append(health_of(config, clock))

    def in_turn(before: str, now: str) -> list[str]:
        return [
            f"cycles read http://{before}/api/v1 and http://{now}/api/v1 in turn: every caller "
            "of this state must give one fake.url (each cycle's sweep removes what the other "
            "source had)"
        ]

    assert seen[:2] == [[], []]  # a first source, then a move: nothing wrong yet
    assert seen[2:4] == [in_turn("b.test", "a.test"), in_turn("a.test", "b.test")]
    assert seen[4] == []  # two cycles in a row read one source


def test_a_mistyped_address_mended_before_any_cycle_completed_is_no_health_problem(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A cycle in progress on A begun again on a typo, then on A again: no cycle completed,
    nothing was swept, and no two configs share the state."""
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=600.0)
    a = SourcedProvider(OLD, page_size=2, page_cost=5.0)
    typo = SourcedProvider(OLD, page_size=2, page_cost=5.0, source="http://a.tset/api/v1")
    for provider in (a, a, typo, a):  # cycle 1 completes; cycle 2 is begun again twice
        clock.advance(600.0)
        run(config, clock, provider)

    assert health_of(config, clock) == []


def test_an_older_release_s_cycles_in_between_raise_no_alarm_and_end_one() -> None:
    """A mixed fleet (a release before these facts taking turns on the state) leaves them as
    they were: a `sourceBefore` from before its cycles said A, B, B, A alternated, and an alarm
    it outlived stayed red."""
    a, b = "http://a.test/api/v1", "http://b.test/api/v1"
    after_b = new_cycle_facts(b, 2, a, {SOURCE_FACT: a, SOURCE_CYCLE_FACT: "1"}, "fake.url")
    older_b = {**after_b, SOURCE_FACT: b, SOURCE_CYCLE_FACT: "3"}  # the older release's cycle
    assert new_cycle_facts(a, 4, b, older_b, "fake.url")[SOURCES_ALTERNATE_FACT] is None

    raised = new_cycle_facts(a, 3, b, {**after_b, SOURCE_CYCLE_FACT: "2"}, "fake.url")
    assert sources_alternate({k: v for k, v in raised.items() if v is not None})
    outlived = {**raised, SOURCE_CYCLE_FACT: "5"}  # two older-release cycles on A since
    assert sources_alternate({k: v for k, v in outlived.items() if v is not None}) is None


def test_callers_fighting_over_a_cycle_keep_the_alarm_their_turns_raised(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A and B complete a cycle each, A raises the alarm as its next cycle begins, then each
    begins that cycle again in turn: the alarm stays while they fight, and goes once one source
    completes two cycles in a row."""
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=0.0)
    a = SourcedProvider(OLD, page_size=20)
    b = SourcedProvider(NEW, page_size=20, source="http://b.test/api/v1")
    a_slow = SourcedProvider(OLD, page_size=2, page_cost=5.0)
    b_slow = SourcedProvider(NEW, page_size=2, page_cost=5.0, source="http://b.test/api/v1")
    seen = []
    for provider in (a, b, a_slow, b_slow, a_slow):
        clock.advance(60.0)
        run(config, clock, provider)
        seen.append(bool(health_of(config, clock)))
    while not run(config, clock, a_slow).cycle_completed:
        clock.advance(60.0)
    clock.advance(60.0)
    run(config, clock, a_slow)  # the next cycle begins on A, as the last did

    assert seen == [False, False, True, True, True]
    assert health_of(config, clock) == []


def test_an_alarm_an_older_release_s_cycles_outlived_is_not_reported(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=0.0)
    a = SourcedProvider(OLD, page_size=20)
    b = SourcedProvider(NEW, page_size=20, source="http://b.test/api/v1")
    for provider in (a, b, a):
        clock.advance(60.0)
        run(config, clock, provider)
    raised = health_of(config, clock)
    with closing(sqlite3.connect(config.state_path)) as conn:  # two cycles of an older release
        conn.execute("UPDATE provider_facts SET value = '9' WHERE name = 'sourceCycle'")
        conn.commit()

    assert raised
    assert health_of(config, clock) == []
