"""When a drain drops its events for a walk: a flood arriving, or a backlog that costs more to
re-read than a walk (the drains that use them are in test_events.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreo_ingest.event_backlog import (
    FLOOD_EVENTS,
    FLOOD_SECONDS,
    REPLAY_SHARE,
    ArrivalRate,
    Limit,
    backlog_limit,
)
from choreo_ingest.models import EntityIteratorResult, ProviderState
from choreo_ingest.store import Store, SweepGuards

from fakes import FakeClock, make_entity

T0 = 1_800_000_000.0
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

        arrivals.add(FLOOD_EVENTS - 1, created=FLOOD_EVENTS - 1)
        assert not arrivals.flooding()
        clock.advance(FLOOD_SECONDS / 2)
        arrivals.add(1, created=1)
        assert arrivals.flooding()
        clock.advance(FLOOD_SECONDS)
        assert not arrivals.flooding()  # it ended: nothing came for a whole window

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

        arrivals.add(FLOOD_EVENTS, created=created)

        assert arrivals.flooding() is flood

    def test_events_spread_thinner_than_the_rate_are_no_flood(self) -> None:
        clock = FakeClock()
        arrivals = ArrivalRate(clock)

        for _ in range(3 * FLOOD_EVENTS):
            arrivals.add(1, created=1)
            clock.advance(2 * FLOOD_SECONDS / FLOOD_EVENTS)

        assert not arrivals.flooding()
