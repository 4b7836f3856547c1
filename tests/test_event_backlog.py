"""When a drain drops its events for a walk: a flood arriving, or a backlog that costs more to
re-read than a walk (the drains that use them are in test_events.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from choreo_ingest.event_backlog import (
    FLOOD_EVENTS,
    FLOOD_SECONDS,
    REPLAY_SHARE,
    ArrivalRate,
    Limit,
    apply_refresh_request,
    backlog_limit,
    drop_backlog,
    request_refresh,
)
from choreo_ingest.models import REFRESH_REQUESTED_FACT, EntityIteratorResult, ProviderState
from choreo_ingest.reporting import provider_status
from choreo_ingest.store import Store, SweepGuards

from event_fakes import component_event
from fakes import FakeClock, make_config, make_entity

T0 = 1_800_000_000.0
DAY = 86_400.0
GUARDS = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=100)


class TestLimit:
    @pytest.mark.parametrize(
        ("limit", "count", "said"),
        [
            (Limit(1000, 0), 1000, "openchoreo.events.maxPending 1000"),
            (Limit(1000, 400), 1000, "openchoreo.events.maxPending 1000"),
            (
                Limit(1000, 6020),
                6020,
                "openchoreo.events.maxPending 1000 and the 6020 pages of the last complete walk",
            ),
        ],
        ids=["no-walk-yet", "small-platform", "large-platform"],
    )
    def test_the_limit_is_the_more_of_max_pending_and_the_last_walks_pages(
        self, limit: Limit, count: int, said: str
    ) -> None:
        assert limit.count == count
        assert str(limit) == said

    def test_the_pages_are_the_last_complete_walks_not_those_of_the_cycle_in_progress(
        self, tmp_path: Path
    ) -> None:
        """A cycle just begun has read few pages: counted, it would drop a deploy's events."""
        with Store.open(tmp_path / "state.db") as store:
            store.migrate()
            assert backlog_limit(store, "fake", 3) == Limit(3, 0)  # no walk complete yet
            walk(store, pages=5, complete=True)
            walk(store, pages=1, complete=False)

            assert backlog_limit(store, "fake", 3) == Limit(3, 5)


def walk(store: Store, *, pages: int, complete: bool) -> None:
    """A cycle of the provider `fake` that commits `pages` pages of one entity each."""
    record = store.load_provider("fake")
    record.cycle_id += 1
    record.state = ProviderState.BURSTING
    store.start_cycle(record, T0)
    for page in range(pages):
        entities = [make_entity(f"e{page}")]
        done = complete and page == pages - 1
        store.commit_page("fake", record.cycle_id, EntityIteratorResult(done, entities), None, T0)
    if complete:
        record.state = ProviderState.RESTING
        store.complete_cycle(record, GUARDS, T0)


class TestArrivalRate:
    def test_a_flood_is_more_than_flood_events_within_flood_seconds(self) -> None:
        clock = FakeClock()
        arrivals = ArrivalRate(clock)

        arrivals.add("a", FLOOD_EVENTS - 1, created=FLOOD_EVENTS - 1)
        assert arrivals.flooding("a") is None
        clock.advance(FLOOD_SECONDS / 2)
        arrivals.add("a", 1, created=1)
        assert arrivals.flooding("a") is not None
        clock.advance(FLOOD_SECONDS)
        assert arrivals.flooding("a") is None  # it ended: nothing came for a whole window

    @pytest.mark.parametrize(
        ("created", "flood"),
        [
            (FLOOD_EVENTS, True),
            (int(REPLAY_SHARE * FLOOD_EVENTS), True),
            (FLOOD_EVENTS // 2, False),
        ],
        ids=["all-created", "nearly-all-created", "half-updated"],
    )
    def test_only_a_flood_of_created_events_is_the_forwarders_start(
        self, created: int, flood: bool
    ) -> None:
        """The forwarder sends `created` for every object when it starts; as many `updated`
        events at once (a deploy) are worth their re-reads."""
        arrivals = ArrivalRate(FakeClock())

        arrivals.add("a", FLOOD_EVENTS, created=created)

        assert (arrivals.flooding("a") is not None) is flood

    def test_each_providers_events_are_counted_apart(self) -> None:
        """One provider's flood is no reason to drop another's events."""
        arrivals = ArrivalRate(FakeClock())

        arrivals.add("a", FLOOD_EVENTS // 2, created=FLOOD_EVENTS // 2)
        arrivals.add("b", FLOOD_EVENTS // 2, created=FLOOD_EVENTS // 2)
        assert arrivals.flooding("a") is None
        arrivals.add("a", FLOOD_EVENTS // 2, created=FLOOD_EVENTS // 2)

        assert (arrivals.flooding("a"), arrivals.flooding("b")) == (0.0, None)

    def test_events_spread_thinner_than_the_rate_are_no_flood(self) -> None:
        clock = FakeClock()
        arrivals = ArrivalRate(clock)

        for _ in range(3 * FLOOD_EVENTS):
            arrivals.add("a", 1, created=1)
            clock.advance(2 * FLOOD_SECONDS / FLOOD_EVENTS)

        assert arrivals.flooding("a") is None


class TestRefreshDuringAFlood:
    """The walk asked for in place of a flood's events waits for its end (one walk after it),
    but not once the flood has lasted `longest_flood` (a rest)."""

    REST = 600.0

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        with Store.open(tmp_path / "state.db") as store:
            store.migrate()
            walk(store, pages=2, complete=True)
            yield store

    def applied(self, store: Store, clock: FakeClock, flood: float | None) -> bool:
        apply_refresh_request(store, "fake", clock, lambda _name: flood, self.REST)
        return REFRESH_REQUESTED_FACT not in store.facts("fake")

    def test_it_waits_while_the_flood_lasts_and_applies_once_it_ended(self, store: Store) -> None:
        clock = FakeClock(T0)
        request_refresh(store, "fake", T0)

        assert not self.applied(store, clock, flood=self.REST - 1)
        assert self.applied(store, clock, flood=None)
        assert store.load_provider("fake").next_action_at == clock.now()  # a new cycle is due

    def test_a_flood_that_lasted_a_rest_has_its_walk_with_a_warning(self, store: Store) -> None:
        clock = FakeClock(T0)
        request_refresh(store, "fake", T0)

        with structlog.testing.capture_logs() as logs:
            assert self.applied(store, clock, flood=self.REST)

        assert [line["event"] for line in logs] == ["flood_ongoing", "refresh_requested"]
        assert logs[0]["log_level"] == "warning"

    @pytest.mark.parametrize(
        ("flood_since", "said"),
        [(T0 - 60, "events arrived as a flood"), (None, "events were refused")],
        ids=["flood", "backlog"],
    )
    def test_the_walk_after_a_flood_says_the_flood_dropped_its_events(
        self, store: Store, flood_since: float | None, said: str
    ) -> None:
        """Neither refused nor past `maxPending`: the forwarder's start was dropped as a flood."""
        request_refresh(store, "fake", T0, flood_since)

        with structlog.testing.capture_logs() as logs:
            assert self.applied(store, FakeClock(T0 + FLOOD_SECONDS + 1), flood=None)

        assert [line["message"].split(" (")[0] for line in logs] == [said]

    @pytest.mark.parametrize(
        ("flood_since", "later", "applied"),
        [
            (T0 - 60, 1.0, False),
            (T0 - 60, FLOOD_SECONDS + 1, True),
            (T0 - REST, 1.0, True),
            (None, 1.0, True),
        ],
        ids=["serve-still-drops", "drops-stopped", "lasted-a-rest", "no-flood"],
    )
    def test_a_run_that_sees_no_arrivals_asks_the_drops_of_serve_and_status_says_so(
        self,
        store: Store,
        tmp_path: Path,
        flood_since: float | None,
        later: float,
        applied: bool,
    ) -> None:
        """A `run` (no `flooding`) beside `serve`: the flood lasts while serve's drops renew
        the request, and has its walk all the same once it has lasted a rest. `status` said
        the rest's end where the next run would begin a new cycle at once."""
        store.save_provider(replace(store.load_provider("fake"), next_action_at=T0 + DAY), T0)
        request_refresh(store, "fake", T0, flood_since)
        now = T0 + later
        config = make_config(tmp_path, rest_length=self.REST)

        said = provider_status(store, config, "fake", now).next_action_at
        apply_refresh_request(store, "fake", FakeClock(now), None, self.REST)

        assert (REFRESH_REQUESTED_FACT not in store.facts("fake")) is applied
        assert said == (now if applied else T0 + DAY)

    def test_status_waits_as_its_caller_does(self, store: Store, tmp_path: Path) -> None:
        """`serve` waits for a flood its arrivals show (a full inbox stores no flood's start),
        and no run applies a request of a provider the config no longer names: `status` said
        the next action was now for both."""
        store.save_provider(replace(store.load_provider("fake"), next_action_at=T0 + DAY), T0)
        request_refresh(store, "fake", T0)
        config = make_config(tmp_path, rest_length=self.REST)

        def flooding(_name: str) -> float:
            return 30.0

        under_serve = provider_status(store, config, "fake", T0, flooding=flooding)
        unnamed = provider_status(store, replace(config, providers=("other",)), "fake", T0)
        apply_refresh_request(store, "fake", FakeClock(T0), flooding, self.REST)

        assert REFRESH_REQUESTED_FACT in store.facts("fake")  # serve's run waits
        assert (under_serve.next_action_at, unnamed.next_action_at) == (T0 + DAY, T0 + DAY)

    def test_a_request_that_waits_for_the_first_cycle_says_nothing_of_the_flood(
        self, tmp_path: Path
    ) -> None:
        """The first cycle is never given up: the flood's warning would say a walk begins."""
        with Store.open(tmp_path / "first.db") as store:
            store.migrate()
            walk(store, pages=2, complete=False)
            request_refresh(store, "fake", T0)

            with structlog.testing.capture_logs() as logs:
                assert not self.applied(store, FakeClock(T0), flood=self.REST * 3)

        assert [line["event"] for line in logs] == ["refresh_after_first_cycle"]


def test_a_floods_first_drop_is_said_at_info_whatever_waits_already(tmp_path: Path) -> None:
    """A refresh already asked for (events lost before) made the flood's very first drop a
    DEBUG line: at `-v` it left none. Its later drops are DEBUG."""
    with Store.open(tmp_path / "state.db") as store:
        store.migrate()
        walk(store, pages=2, complete=True)
        request_refresh(store, "fake", T0)  # lost events, no flood
        levels = []
        for round_ in range(2):
            store.add_events("fake", [component_event(f"e{round_}", "created")], T0)
            with structlog.testing.capture_logs() as logs:
                drop_backlog(store, "fake", Limit(3, 0), FakeClock(T0 + round_), flooding=5.0)
            levels += [
                line["log_level"] for line in logs if line["event"] == "event_backlog_dropped"
            ]

    assert levels == ["info", "debug"]


class TestFloodLength:
    def test_a_flood_lasts_from_when_it_was_first_seen(self) -> None:
        clock = FakeClock()
        arrivals = ArrivalRate(clock)
        arrivals.add("a", FLOOD_EVENTS, created=FLOOD_EVENTS)
        for _ in range(10):
            clock.advance(1.0)
            arrivals.add("a", FLOOD_EVENTS // 2, created=FLOOD_EVENTS // 2)

        assert arrivals.flooding("a") == 10.0

    def test_a_flood_that_ended_unseen_is_not_counted_in_the_next(self) -> None:
        clock = FakeClock()
        arrivals = ArrivalRate(clock)
        arrivals.add("a", FLOOD_EVENTS, created=FLOOD_EVENTS)
        assert arrivals.flooding("a") == 0.0

        clock.advance(3 * FLOOD_SECONDS)  # nothing came, and nobody looked
        arrivals.add("a", FLOOD_EVENTS, created=FLOOD_EVENTS)

        assert arrivals.flooding("a") == 0.0
