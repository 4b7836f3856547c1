"""The burst engine over several `run_once` calls: fake clock, fake provider, a real state file."""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from choreo_ingest.clock import rfc3339
from choreo_ingest.config import Config
from choreo_ingest.engine import BurstEngine, ProviderOutcome, StopSignal
from choreo_ingest.errors import (
    ConfigError,
    ConnectDeadlineExceeded,
    DeadlineExceeded,
    PermanentError,
    RetryAfter,
    TransientError,
)
from choreo_ingest.feed import catalog_complete
from choreo_ingest.invocation import RunResult, refresh, reset, run_once
from choreo_ingest.models import EntityIteratorResult, ProviderRecord, ProviderState
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.reporting import provider_metrics, provider_status
from choreo_ingest.schedule import JITTER
from choreo_ingest.store import (
    PostgresLocation,
    SqliteLocation,
    StateLocation,
    Store,
    state_location,
)

from fakes import (
    DyingEveryTime,
    FakeClock,
    FakeProvider,
    ProcessDied,
    SourcedProvider,
    make_config,
    make_entity,
)

TEN = [make_entity(f"e{i}") for i in range(10)]


@pytest.fixture(params=["sqlite", "postgres"])
def state_path(request: pytest.FixtureRequest, tmp_path: Path) -> StateLocation:
    """The engine's tests run on each store: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return SqliteLocation(tmp_path / "state.db")
    return PostgresLocation(request.getfixturevalue("pg_url"))


def run(
    config: Config,
    state_path: Path,
    clock: FakeClock,
    *providers: Any,
    stop: StopSignal | None = None,
    force: bool = False,
) -> RunResult:
    return run_once(
        config,
        state_path,
        clock,
        providers={provider.name: provider for provider in providers},
        stop=stop,
        force=force,
        rng=random.Random(0),
    )


def run_one(config: Config, state_path: Path, clock: FakeClock, provider: Any) -> ProviderOutcome:
    [outcome] = run(config, state_path, clock, provider).providers
    return outcome


def stored(state_path: Path, name: str = "fake") -> ProviderRecord:
    with state_location(state_path).open(readonly=True) as store:
        return store.load_provider(name)


def upserts_by_ref(state_path: Path) -> Counter[str]:
    with state_location(state_path).open(readonly=True) as store:
        return Counter(change.ref for change in store.changes() if change.op == "upsert")


def complete(state_path: Path) -> bool:
    """Whether the feed calls the catalog complete (`catalogComplete`)."""
    with state_location(state_path).open(readonly=True) as store:
        return catalog_complete(store)


def health(config: Config, state_path: Path, clock: FakeClock) -> list[str]:
    with state_location(state_path).open(readonly=True) as store:
        return provider_status(store, config, "fake", clock.now()).health_problems


class TestCycle:
    @pytest.mark.parametrize(
        ("page_cost", "pages"),
        [(4.0, 2), (3.0, 3), (6.0, 1), (11.0, 1)],
        ids=["third-would-end-at-12", "fourth-would-end-at-12", "second-at-12", "first-always"],
    )
    def test_a_page_is_not_begun_when_the_last_one_took_longer_than_the_time_left(
        self, tmp_path: Path, clock: FakeClock, state_path: Path, page_cost: float, pages: int
    ) -> None:
        """Its request would be cut at the deadline and asked for again by the next burst."""
        config = make_config(tmp_path, burst_length=10.0)
        provider = FakeProvider(TEN, page_size=1, page_cost=page_cost)

        outcome = run_one(config, state_path, clock, provider)

        assert (outcome.action, outcome.pages) == ("burst", pages)
        assert len(provider.calls) == pages

    def test_full_cycle_over_several_runs(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=600.0)
        provider = FakeProvider(TEN, page_size=2, page_cost=5.0)  # two pages fit in a burst

        first = run_one(config, state_path, clock, provider)
        assert (first.action, first.state, first.pages) == ("burst", ProviderState.INTERSTITIAL, 2)
        assert first.next_action_at == clock.now() + 30.0
        assert stored(state_path).cycle_id == 1

        early = run_one(config, state_path, clock, provider)
        assert (early.action, early.next_action_at) == ("waiting", first.next_action_at)
        assert len(provider.calls) == 2

        clock.advance(30.0)
        second = run_one(config, state_path, clock, provider)
        assert (second.state, second.pages) == (ProviderState.INTERSTITIAL, 2)

        clock.advance(30.0)
        last = run_one(config, state_path, clock, provider)
        assert (last.state, last.pages, last.cycle_completed) == (ProviderState.RESTING, 1, True)
        assert last.next_action_at == clock.now() + 600.0
        assert provider.calls == [None, {"offset": 2}, {"offset": 4}, {"offset": 6}, {"offset": 8}]
        with state_location(state_path).open(readonly=True) as store:
            cycle = store.last_cycle("fake", completed=True)
            assert cycle is not None
            assert (cycle.cycle_id, cycle.pages, cycle.upserted, cycle.outcome) == (
                1,
                5,
                10,
                "completed",
            )
            assert store.active_count("fake") == 10
            assert store.load_provider("fake").cursor is None

        clock.advance(599.0)
        assert run_one(config, state_path, clock, provider).action == "waiting"
        clock.advance(1.0)
        fresh = run_one(config, state_path, clock, provider)
        assert fresh.action == "burst"
        assert provider.calls[5] is None  # the new cycle starts from no cursor
        assert stored(state_path).cycle_id == 2
        assert fresh.entities_unchanged == 4
        assert fresh.entities_upserted == 0

    def test_burst_stops_after_burst_length_and_next_run_resumes_at_cursor(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0, burst_interval=5.0)
        provider = FakeProvider(TEN, page_size=2, page_cost=5.0)
        started = clock.monotonic()

        assert run_one(config, state_path, clock, provider).pages == 2
        assert clock.monotonic() - started == 10.0  # stopped at the deadline, not later
        assert stored(state_path).cursor == {"offset": 4}

        clock.advance(5.0)
        run_one(config, state_path, clock, provider)
        assert provider.calls[2:] == [{"offset": 4}, {"offset": 6}]

    def test_waiting_run_does_not_touch_the_provider(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0)
        provider = FakeProvider(TEN, page_size=2, page_cost=5.0)
        run_one(config, state_path, clock, provider)
        before = stored(state_path)

        outcome = run_one(config, state_path, clock, provider)

        assert outcome.action == "waiting"
        assert outcome.reason
        assert stored(state_path) == before
        assert len(provider.calls) == 2

    def test_forced_run_bursts_without_waiting_out_the_interval(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0)
        provider = FakeProvider(TEN, page_size=2, page_cost=5.0)
        run_one(config, state_path, clock, provider)

        [forced] = run(config, state_path, clock, provider, force=True).providers

        assert (forced.action, forced.pages) == ("burst", 2)
        assert provider.calls[2] == {"offset": 4}
        assert stored(state_path).cycle_id == 1

    def test_new_cycle_starts_with_empty_queues(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, rest_length=60.0)
        run_one(config, state_path, clock, FakeProvider(TEN, page_size=5))
        with state_location(state_path).open(readonly=True) as store:
            assert len(store.read_queue("fake", "seen", 0, 100)) == 10

        clock.advance(60.0)
        run_one(config, state_path, clock, FakeProvider(TEN[:3], page_size=5))

        with state_location(state_path).open(readonly=True) as store:
            names = [item.key for item in store.read_queue("fake", "seen", 0, 100)]
        assert names == ["e0", "e1", "e2"]


@dataclass
class SteppingTheClock(FakeProvider):
    """Steps the wall clock on by `step` seconds as its first page is read."""

    step: float = 3 * 86400.0

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        if cursor is None:
            context.clock.step_wall(self.step)  # type: ignore[attr-defined]
        return super().next(context, cursor)


def test_a_clock_stepped_on_mid_burst_and_set_right_again_does_not_hold_the_cycle(
    tmp_path: Path, clock: FakeClock, state_path: Path
) -> None:
    """The wait after the burst is dated on the clock its start was read on; `run` says when the
    next burst is due as `status` does."""
    config = make_config(tmp_path, burst_length=10.0, burst_interval=30.0, rest_length=600.0)
    provider = SteppingTheClock(TEN, page_size=2, page_cost=5.0)

    first = run_one(config, state_path, clock, provider)
    with state_location(state_path).open(readonly=True) as store:
        said = provider_status(store, config, "fake", clock.now()).next_action_at
    clock.step_wall(-provider.step)  # set right again
    clock.advance(30.0)
    second = run_one(config, state_path, clock, provider)

    assert first.next_action_at == said
    assert (second.action, second.pages) == ("burst", 2)


class TestEmptyCatalog:
    """OpenChoreo always serves a namespace (`default`): a cycle that leaves a provider that
    names its source no entities is a client that may see none of the platform. Before, `run`
    said it at INFO only (nothing in a cron mail) and `health` was green. A provider that names
    no source (a custom one: an empty file may be what it reads) is not held to it."""

    @pytest.mark.parametrize(
        ("provider", "warned"),
        [
            (SourcedProvider([]), True),
            (SourcedProvider(TEN), False),
            (FakeProvider([]), False),
        ],
        ids=["named-source-empty", "named-source-with-entities", "unnamed-source-empty"],
    )
    def test_a_cycle_that_leaves_nothing_warns_and_is_unhealthy(
        self, tmp_path: Path, clock: FakeClock, state_path: Path, provider: Any, warned: bool
    ) -> None:
        config = make_config(tmp_path)

        with structlog.testing.capture_logs() as logs:
            assert run_one(config, state_path, clock, provider).cycle_completed

        said = [line for line in logs if line["event"] == "cycle_completed_empty"]
        assert [line["log_level"] for line in said] == (["warning"] if warned else [])
        problems = health(config, state_path, clock)
        assert [p.split(":")[0] for p in problems] == (
            ["its last completed cycle left it no entities"] if warned else []
        )
        with state_location(state_path).open(readonly=True) as store:
            metrics = provider_metrics(
                store, "fake", run_at=None, config=config.incremental, now=clock.now()
            )
        assert metrics.health_problems == len(problems)  # choreo_ingest_health_problems

    def test_a_provider_reset_to_walk_again_is_not_called_empty(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path)
        run_one(config, state_path, clock, SourcedProvider(TEN))

        reset(state_path, "fake", clock, purge=True, config=config)

        assert health(config, state_path, clock) == []

    def test_a_purged_catalog_is_incomplete_and_not_blamed_on_its_source_until_it_is_walked(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """After `reset --purge` the feed called the empty catalog complete (a consumer told
        that removes what it lacks), and a failed first burst made `health` say the last
        completed cycle had left nothing: a source listing nothing, where a 401 was the cause."""
        config = make_config(tmp_path)
        run_one(config, state_path, clock, SourcedProvider(TEN))
        reset(state_path, "fake", clock, purge=True, config=config)

        refused = SourcedProvider(TEN, fail_at={0: PermanentError("GET /a: HTTP 401")})
        assert run_one(config, state_path, clock, refused).error
        purged = (complete(state_path), health(config, state_path, clock))
        clock.advance(3600.0)
        assert run_one(config, state_path, clock, SourcedProvider(TEN)).cycle_completed

        assert purged == (False, [])
        assert complete(state_path)
        with state_location(state_path).open(readonly=True) as store:
            assert "purgedAt" not in store.facts("fake")


class TestBlockedRemovals:
    def test_the_blocked_count_after_a_burst_is_what_its_pages_left(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """A blocked sweep's refs seen again mid-cycle leave the count at once: `status`, the
        metrics and `health` say what `removals approve` would remove, burst after burst."""
        config = make_config(
            tmp_path, rest_length=60.0, burst_length=10.0, reject_removals_above_percentage=10.0
        )
        run_one(config, state_path, clock, FakeProvider(TEN, page_size=5))
        clock.advance(60.0)
        blocked = run_one(config, state_path, clock, FakeProvider(TEN[5:], page_size=5))
        assert blocked.removals_blocked == 5  # e0..e4
        clock.advance(60.0)
        back = FakeProvider(TEN, page_size=2, page_cost=5.0)  # two pages a burst

        first = run_one(config, state_path, clock, back)  # sees e0..e3 again

        assert (first.state, first.pages) == (ProviderState.INTERSTITIAL, 2)
        assert stored(state_path).blocked_removals == 1
        with state_location(state_path).open(readonly=True) as store:
            assert store.blocked_removals("fake").count == 1
            assert store.pending_removal_refs("fake") == [TEN[4].ref]
        assert health(config, state_path, clock) == [
            "1 removals blocked; see `choreo-ingest removals`"
        ]


class TestFailures:
    def test_transient_error_after_committed_pages_is_a_pause(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """A 5xx whose retry does not fit before the deadline, after pages were committed: the
        burst made progress, so it comes back after burstInterval, not after a backoff."""
        config = make_config(tmp_path, burst_interval=30.0, backoff=(300.0,))
        provider = FakeProvider(TEN, fail_at={2: TransientError("upstream 503", status=503)})

        outcome = run_one(config, state_path, clock, provider)

        assert (outcome.action, outcome.state, outcome.pages) == (
            "burst",
            ProviderState.INTERSTITIAL,
            2,
        )
        record = stored(state_path)
        assert (record.attempts, record.last_error, record.cursor) == (0, None, {"offset": 4})
        assert record.next_action_at == clock.now() + 30.0

    def test_transient_error_that_outlasted_every_retry_after_committed_pages_is_a_failure(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """A 5xx answered to every attempt is lasting trouble: the burst fails (and says why)
        though its pages stay committed; it resumes from them after the backoff."""
        config = make_config(tmp_path, burst_interval=30.0, backoff=(300.0,))
        lasting = TransientError("upstream 503", status=503)
        lasting.exhausted = True
        provider = FakeProvider(TEN, fail_at={2: lasting})

        outcome = run_one(config, state_path, clock, provider)

        assert (outcome.action, outcome.state, outcome.pages) == (
            "failed",
            ProviderState.BACKING_OFF,
            2,
        )
        record = stored(state_path)
        assert (record.attempts, record.last_error, record.cursor) == (
            1,
            "upstream 503",
            {"offset": 4},
        )
        assert record.next_action_at is not None
        assert record.next_action_at - clock.now() >= 300.0 * (1 - JITTER)

    def test_transient_error_before_any_page_is_a_failure(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, backoff=(300.0,))
        provider = FakeProvider(TEN, fail_at={0: TransientError("upstream 503", status=503)})

        outcome = run_one(config, state_path, clock, provider)

        assert (outcome.action, outcome.state, outcome.error) == (
            "failed",
            ProviderState.BACKING_OFF,
            "upstream 503",
        )
        assert stored(state_path).attempts == 1

    def test_resumes_at_failed_page(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, backoff=(10.0, 20.0))
        provider = FakeProvider(TEN, fail_at={2: PermanentError("upstream 400", status=400)})

        failed = run_one(config, state_path, clock, provider)

        assert (failed.action, failed.state, failed.pages) == (
            "failed",
            ProviderState.BACKING_OFF,
            2,
        )
        record = stored(state_path)
        assert (record.attempts, record.cursor, record.last_error) == (
            1,
            {"offset": 4},
            "upstream 400",
        )
        assert record.next_action_at is not None
        assert 10.0 * (1 - JITTER) <= record.next_action_at - clock.now() <= 10.0 * (1 + JITTER)
        assert run_one(config, state_path, clock, provider).action == "waiting"

        clock.advance(10.0 * (1 + JITTER))
        resumed = run_one(config, state_path, clock, provider)

        assert resumed.cycle_completed
        assert provider.calls == [
            None,
            {"offset": 2},
            {"offset": 4},  # failed
            {"offset": 4},  # retried from the same page
            {"offset": 6},
            {"offset": 8},
        ]
        assert upserts_by_ref(state_path) == {entity.ref: 1 for entity in TEN}
        record = stored(state_path)
        assert (record.attempts, record.last_error) == (0, None)
        with state_location(state_path).open(readonly=True) as store:
            cycle = store.last_cycle("fake")
            assert cycle is not None
            assert (cycle.pages, cycle.upserted, cycle.errors) == (5, 10, 1)
            assert store.active_count("fake") == 10

    def test_keeps_retrying_at_last_step_and_turns_red_after_max_attempts(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, backoff=(10.0, 20.0, 40.0), max_attempts=3)
        provider = FakeProvider(TEN[:4])

        for attempt in range(1, 7):
            provider.fail_at[0] = TransientError("connection refused")
            outcome = run_one(config, state_path, clock, provider)
            assert outcome.action == "failed"
            record = stored(state_path)
            assert record.attempts == attempt
            step = (10.0, 20.0, 40.0)[min(attempt, 3) - 1]
            assert record.next_action_at is not None
            delay = record.next_action_at - clock.now()
            assert step * (1 - JITTER) <= delay <= step * (1 + JITTER)
            problems = health(config, state_path, clock)
            assert any("consecutive failed bursts" in p for p in problems) is (attempt >= 3)
            clock.advance(delay)

        assert len(provider.calls) == 6  # never gave up
        recovered = run_one(config, state_path, clock, provider)
        assert recovered.cycle_completed
        assert stored(state_path).attempts == 0
        assert health(config, state_path, clock) == []

    def test_retry_after_schedules_at_least_retry_after(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, backoff=(1.0,))
        limited = RetryAfter("429 too many requests", retry_after=300.0, status=429)
        provider = FakeProvider(TEN, fail_at={0: limited})

        run_one(config, state_path, clock, provider)

        record = stored(state_path)
        assert record.next_action_at is not None
        assert record.next_action_at - clock.now() >= 300.0
        clock.advance(299.0)
        assert run_one(config, state_path, clock, provider).action == "waiting"
        clock.advance(1.0)
        assert run_one(config, state_path, clock, provider).action == "burst"

    def test_deadline_exceeded_before_any_page_is_a_failure(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path)
        provider = FakeProvider(TEN, fail_at={0: DeadlineExceeded("deadline passed in request")})

        outcome = run_one(config, state_path, clock, provider)

        assert (outcome.action, outcome.state) == ("failed", ProviderState.BACKING_OFF)
        assert outcome.error is not None
        assert outcome.error.startswith("deadline passed in request; no page was completed")
        assert outcome.error.endswith("raise openchoreo.incremental.burstLength")

    def test_no_page_advice_comes_from_a_provider_that_knows_its_settings(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """The engine knows no provider's page size; a provider that does names it."""

        @dataclass
        class AdvisingFake(FakeProvider):
            def no_page_advice(self) -> str:
                return "lower fake.pageSize"

        config = make_config(tmp_path)
        provider = AdvisingFake(TEN, fail_at={0: DeadlineExceeded("deadline passed in request")})

        outcome = run_one(config, state_path, clock, provider)

        assert outcome.error is not None
        assert outcome.error.endswith(
            "no page was completed within burstLength (10 s): lower fake.pageSize"
        )

    def test_a_connect_that_took_the_burst_gets_no_advice_about_its_length(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        connecting = ConnectDeadlineExceeded("GET /x: connecting timed out (...): check the URL")
        provider = FakeProvider(TEN, fail_at={0: connecting})

        outcome = run_one(make_config(tmp_path), state_path, clock, provider)

        assert (outcome.action, outcome.state) == ("failed", ProviderState.BACKING_OFF)
        assert outcome.error == "GET /x: connecting timed out (...): check the URL"

    def test_a_deadline_after_an_error_answer_gets_no_advice_about_the_burst_length(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """The server answered 500 before: it is failing, not slow."""
        said = "GET /x: timed out at the burst deadline, the attempt before it answered HTTP 500"
        provider = FakeProvider(TEN, fail_at={0: DeadlineExceeded(said, status=500)})

        outcome = run_one(make_config(tmp_path), state_path, clock, provider)

        assert (outcome.action, outcome.error) == ("failed", said)

    def test_deadline_exceeded_after_committed_pages_is_a_pause(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_interval=30.0)
        provider = FakeProvider(TEN, fail_at={2: DeadlineExceeded("deadline passed in request")})

        outcome = run_one(config, state_path, clock, provider)

        assert (outcome.action, outcome.state, outcome.pages) == (
            "burst",
            ProviderState.INTERSTITIAL,
            2,
        )
        record = stored(state_path)
        assert (record.attempts, record.cursor) == (0, {"offset": 4})

    def test_rate_limit_after_committed_pages_is_a_pause_until_retry_after(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_interval=30.0)
        limited = RetryAfter("429 too many requests", retry_after=300.0, status=429)
        provider = FakeProvider(TEN, fail_at={2: limited})

        outcome = run_one(config, state_path, clock, provider)

        assert (outcome.action, outcome.state, outcome.pages) == (
            "burst",
            ProviderState.INTERSTITIAL,
            2,
        )
        record = stored(state_path)
        assert (record.attempts, record.last_error, record.cursor) == (0, None, {"offset": 4})
        assert record.next_action_at == clock.now() + 300.0
        assert health(config, state_path, clock) == []
        clock.advance(299.0)
        assert run_one(config, state_path, clock, provider).action == "waiting"
        clock.advance(1.0)
        assert run_one(config, state_path, clock, provider).cycle_completed

    def test_short_retry_after_after_committed_pages_waits_the_burst_interval(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_interval=30.0)
        limited = RetryAfter("429 too many requests", retry_after=5.0, status=429)

        run_one(config, state_path, clock, FakeProvider(TEN, fail_at={1: limited}))

        assert stored(state_path).next_action_at == clock.now() + 30.0

    def test_cursor_that_is_not_json_fails_without_committing_the_page(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        @dataclass
        class TupleCursorProvider(FakeProvider):
            def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
                page = super().next(context, cursor)
                offset = page.cursor["offset"]
                return replace(page, cursor=page.cursor if offset < 4 else ("offset", offset))

        config = make_config(tmp_path)

        outcome = run_one(config, state_path, clock, TupleCursorProvider(TEN))

        assert outcome.action == "failed"
        assert outcome.error is not None
        assert "JSON" in outcome.error
        record = stored(state_path)
        assert record.cursor == {"offset": 2}
        with state_location(state_path).open(readonly=True) as store:
            assert store.active_count("fake") == 2

    def test_engine_records_a_provider_bug_as_a_failure_and_reraises(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path)
        with state_location(state_path).open() as store:
            store.migrate()
            engine = BurstEngine(config, store, clock, rng=random.Random(0))
            with pytest.raises(KeyError):
                engine.run_provider(BuggyProvider(TEN))

        record = stored(state_path)
        assert (record.state, record.attempts, record.cursor) == (
            ProviderState.BACKING_OFF,
            1,
            {"offset": 2},
        )
        assert record.last_error == "'offset'"

    def test_a_bug_stays_the_error_when_recording_it_fails_too(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The run lock lost as the bug strikes: the bug is raised, with the store's refusal as
        a note, not hidden behind it (the traceback is what finds the bug). A state file's lock
        (PostgreSQL's is a session's: `pg_fence`)."""
        state_path = tmp_path / "state.db"

        class LockGoneThenBug(FakeProvider):
            def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
                if cursor is not None:
                    context.index.by_key("any", [])  # waits for the first page's commit
                    Path(f"{state_path}.lock").unlink()
                    raise KeyError("offset")
                return super().next(context, cursor)

        config = make_config(tmp_path)
        with state_location(state_path).open_locked() as store:
            store.migrate()
            engine = BurstEngine(config, store, clock, rng=random.Random(0))
            with pytest.raises(KeyError) as caught:
                engine.run_provider(LockGoneThenBug(TEN))

        [note] = caught.value.__notes__
        assert note.startswith("recording this failure failed too: ")
        assert "run lock" in note
        assert stored(state_path).attempts == 0

    def test_a_config_error_met_in_a_burst_is_a_recorded_failure_not_a_bug(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """A secret file removed while `serve` runs: the operator's to mend, reported as it is
        (no "internal error", no traceback), with the backoff of any failure."""
        config = make_config(tmp_path)

        outcome = run_one(config, state_path, clock, SecretFileGone(TEN))

        assert outcome.action == "failed"
        assert outcome.error == "openchoreo.auth.tokenFile: /run/secrets/token: cannot read"
        record = stored(state_path)
        assert (record.state, record.attempts) == (ProviderState.BACKING_OFF, 1)

    def test_run_contains_a_provider_bug_and_runs_the_others(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = replace(make_config(tmp_path), providers=("fake", "other"))
        other = FakeProvider(TEN, name="other")

        result = run(config, state_path, clock, BuggyProvider(TEN), other)

        buggy, fine = result.providers
        assert (buggy.action, buggy.state) == ("failed", ProviderState.BACKING_OFF)
        assert buggy.error is not None
        assert "provider 'fake'" in buggy.error
        assert "KeyError" in buggy.error
        assert fine.cycle_completed
        assert result.outcome == "failed"
        assert stored(state_path).attempts == 1
        assert config.metrics_textfile is not None
        assert config.metrics_textfile.exists()

    def test_crashed_burst_is_resumed_from_its_last_page(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        @dataclass
        class DyingProvider(FakeProvider):
            die_at: int | None = 2

            def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
                if cursor is not None and cursor["offset"] // self.page_size == self.die_at:
                    self.die_at = None
                    raise ProcessDied
                return super().next(context, cursor)

        config = make_config(tmp_path)
        provider = DyingProvider(TEN)
        with pytest.raises(ProcessDied):
            run(config, state_path, clock, provider)
        record = stored(state_path)
        assert (record.state, record.cursor) == (ProviderState.BURSTING, {"offset": 4})
        # Counted as a failure: it resumes once the first backoff step has passed since it began.
        assert run_one(config, state_path, clock, provider).action == "waiting"
        clock.advance(config.incremental.backoff[0])

        resumed = run_one(config, state_path, clock, provider)

        assert resumed.cycle_completed
        assert (stored(state_path).attempts, stored(state_path).last_error) == (0, None)
        # the dying call never reached FakeProvider.next, so it is not in `calls`
        assert provider.calls == [None, {"offset": 2}, {"offset": 4}, {"offset": 6}, {"offset": 8}]
        assert stored(state_path).cycle_id == 1  # the same cycle, not a new one
        assert upserts_by_ref(state_path) == {entity.ref: 1 for entity in TEN}

    def test_status_counts_a_crashed_burst_and_says_when_it_resumes(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """A burst that did not finish is a failure before a run counts it: `health` turns red
        at maxAttempts crashes, not one later, and `nextActionAt` is when the run resumes it."""
        config = make_config(tmp_path, max_attempts=2)
        provider = DyingEveryTime(TEN)
        seen = []
        for _ in range(2):
            with pytest.raises(ProcessDied):
                run(config, state_path, clock, provider, force=True)
            began = clock.now()
            with state_location(state_path).open(readonly=True) as store:
                seen.append(provider_status(store, config, "fake", clock.now()).to_json())
            clock.advance(1)

        first, second = seen
        assert (first["state"], first["attempts"], first["healthy"]) == ("bursting", 1, True)
        assert first["lastError"].startswith("the burst before this one did not finish")
        assert second["attempts"] == 2
        assert second["problems"] == [
            "2 consecutive failed bursts (maxAttempts 2); the last: the burst before this one did "
            "not finish (the process was killed or crashed, or the state store failed under it: "
            "a full disk, say)"
        ]
        resumes = began + config.incremental.backoff[1]  # the step of a second failure
        assert second["nextActionAt"] == rfc3339(resumes)
        assert run_one(config, state_path, clock, provider).action == "waiting"
        clock.advance(config.incremental.backoff[1])  # overdue: the next run resumes it
        with state_location(state_path).open(readonly=True) as store:
            overdue = provider_status(store, config, "fake", clock.now()).to_json()
        assert overdue["nextActionAt"] == rfc3339(clock.now())

    @pytest.mark.parametrize("move_on", ["resume", "refresh", "reset"])
    def test_a_crashed_burst_is_one_failed_burst_in_the_metrics_before_and_after_it_moves_on(
        self, tmp_path: Path, clock: FakeClock, state_path: Path, move_on: str
    ) -> None:
        """A killed burst is reported as failed at once, and the write that moves its record
        on counts it, so `bursts_total{outcome="failed"}` says 1 throughout (never 0 again,
        never 2): a run OOM-killed every time raises the failed-bursts alert."""
        config = make_config(tmp_path)
        with pytest.raises(ProcessDied):
            run(config, state_path, clock, DyingEveryTime(TEN), force=True)

        def bursts() -> dict[str, int]:
            with state_location(state_path).open(readonly=True) as store:
                metrics = provider_metrics(
                    store, "fake", run_at=None, config=config.incremental, now=clock.now()
                )
            return dict(metrics.bursts_total)

        assert bursts() == {"ok": 0, "failed": 1, "interrupted": 0}
        clock.advance(config.incremental.backoff[0])
        if move_on == "resume":
            assert run_one(config, state_path, clock, FakeProvider(TEN)).cycle_completed
        elif move_on == "refresh":
            refresh(state_path, "fake", clock, config=config)
        else:
            reset(state_path, "fake", clock, purge=False, config=config)

        assert stored(state_path).state is not ProviderState.BURSTING
        assert bursts() == {"ok": int(move_on == "resume"), "failed": 1, "interrupted": 0}

    def test_the_textfile_keeps_a_crashed_burst_counted_while_another_provider_bursts(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """A run that bursts another provider while the killed one waits out its backoff writes
        the same count as the idle call before it: the counter never goes back (Prometheus would
        take 1 -> 0 -> 1 for resets, and the failed-bursts alert would fire)."""
        config = replace(make_config(tmp_path), providers=("fake", "other"))
        assert config.metrics_textfile is not None
        with pytest.raises(ProcessDied):
            run(config, state_path, clock, DyingEveryTime(TEN), FakeProvider(TEN, name="other"))

        def failed_bursts() -> dict[str, float]:
            assert config.metrics_textfile is not None
            families = text_string_to_metric_families(config.metrics_textfile.read_text())
            return {
                sample.labels["provider"]: sample.value
                for family in families
                if family.name == "choreo_ingest_bursts"
                for sample in family.samples
                if sample.labels.get("outcome") == "failed"
            }

        clock.advance(1)
        idle = run(config, state_path, clock, FakeProvider(TEN), FakeProvider(TEN, name="other"))
        assert [o.action for o in idle.providers] == ["waiting", "burst"]
        assert failed_bursts() == {"fake": 1.0, "other": 0.0}

    def test_status_says_when_a_wait_shortened_by_the_config_ends(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """Resting for restLength 6 h, then restLength set to 10 min: `status` says the run is
        due, as the run decides, not the 6 h stored when the rest began."""
        config = make_config(tmp_path, rest_length=6 * 3600)
        completed = run_one(config, state_path, clock, FakeProvider(TEN, page_size=10))
        assert completed.cycle_completed
        ended = clock.now()
        shorter = make_config(tmp_path, rest_length=600)
        clock.advance(300)

        with state_location(state_path).open(readonly=True) as store:
            status = provider_status(store, shorter, "fake", clock.now()).to_json()

        assert status["nextActionAt"] == rfc3339(ended + 600)
        assert stored(state_path).next_action_at == ended + 6 * 3600

    def test_status_and_the_metric_say_due_when_the_config_shortened_a_rest_past_its_end(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """Resting for restLength 6 h, then restLength set to 1 min, 5 min after the cycle: the
        run bursts at once, so `status` and the metric say when it became due, not the 6 h."""
        config = make_config(tmp_path, rest_length=6 * 3600)
        assert run_one(config, state_path, clock, FakeProvider(TEN, page_size=10)).cycle_completed
        ended = clock.now()
        shorter = make_config(tmp_path, rest_length=60)
        clock.advance(300)

        with state_location(state_path).open(readonly=True) as store:
            status = provider_status(store, shorter, "fake", clock.now()).to_json()
            metrics = provider_metrics(
                store, "fake", run_at=None, config=shorter.incremental, now=clock.now()
            )

        assert status["nextActionAt"] == rfc3339(ended + 60)
        assert metrics.next_action_at == ended + 60
        assert stored(state_path).next_action_at == ended + 6 * 3600
        assert (
            run_one(shorter, state_path, clock, FakeProvider(TEN, page_size=10)).action == "burst"
        )

    def test_a_provider_that_loads_again_forgets_its_load_failures(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """Not installed for a while (each run counts a failure, `health` turns red), then
        installed again: `health` is green once it loads, not until its next cycle ends."""
        config = make_config(tmp_path, max_attempts=2)
        provider = FakeProvider(TEN, page_size=10)
        run_one(config, state_path, clock, provider)
        for _ in range(3):
            clock.advance(60)
            run(config, state_path, clock)  # "fake" is no entry point: it cannot be loaded
        assert health(config, state_path, clock)[0].startswith("3 consecutive failed bursts")

        clock.advance(60)
        outcome = run_one(config, state_path, clock, provider)

        assert outcome.action == "waiting"  # resting, as before it went missing
        assert health(config, state_path, clock) == []
        record = stored(state_path)
        assert (record.attempts, record.last_error) == (0, None)
        with state_location(state_path).open(readonly=True) as store:
            assert store.facts("fake") == {}

    def test_a_provider_taken_out_of_the_config_is_reported_as_such(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """Its schedule no longer matters (no run acts on it): `health` said its cycles were
        overdue, which no burst would ever mend."""
        both = replace(make_config(tmp_path), providers=("fake", "other"))
        theirs = [make_entity("o1"), make_entity("o2")]
        run(both, state_path, clock, FakeProvider(TEN), FakeProvider(theirs, name="other"))
        clock.advance(10 * both.incremental.rest_length)
        config = make_config(tmp_path)

        with state_location(state_path).open(readonly=True) as store:
            problems = provider_status(store, config, "other", clock.now()).health_problems

        assert problems == [
            "not among the configured providers: its 2 entities are kept as they are; "
            "`choreo-ingest reset other --forget --yes` removes them"
        ]

    def test_the_textfile_counts_the_problem_of_a_provider_taken_out_of_the_config(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """`choreo_ingest_health_problems` is how many problems `health` names: it said 0 of a
        provider `health` is red for (the alert on it stayed quiet)."""
        both = replace(make_config(tmp_path), providers=("fake", "other"))
        run(both, state_path, clock, FakeProvider(TEN), FakeProvider(TEN, name="other"))
        config = make_config(tmp_path)
        assert config.metrics_textfile is not None

        clock.advance(1)
        run(config, state_path, clock, FakeProvider(TEN))

        problems = {
            sample.labels["provider"]: sample.value
            for family in text_string_to_metric_families(config.metrics_textfile.read_text())
            if family.name == "choreo_ingest_health_problems"
            for sample in family.samples
        }
        assert problems == {"fake": 0.0, "other": 1.0}

    def test_a_run_killed_after_the_last_page_sweeps_without_walking_again(
        self,
        tmp_path: Path,
        clock: FakeClock,
        state_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The last page is committed, the process dies before the cycle's completion: the next
        run goes on with the sweep instead of walking the whole platform again."""
        config = make_config(tmp_path)
        provider = FakeProvider(TEN)

        def dies(*args: Any, **kwargs: Any) -> Any:
            raise ProcessDied

        with monkeypatch.context() as patched:
            patched.setattr(Store, "complete_cycle", dies)
            with pytest.raises(ProcessDied):
                run(config, state_path, clock, provider)
        walked = list(provider.calls)
        assert stored(state_path).state is ProviderState.BURSTING
        clock.advance(config.incremental.backoff[0])

        resumed = run_one(config, state_path, clock, provider)

        assert resumed.cycle_completed
        assert provider.calls == walked, "the platform was not walked again"
        with state_location(state_path).open(readonly=True) as store:
            cycle = store.last_cycle("fake")
        assert cycle is not None
        assert (cycle.cycle_id, cycle.pages, cycle.outcome) == (1, len(walked), "completed")
        assert upserts_by_ref(state_path) == {entity.ref: 1 for entity in TEN}


@dataclass
class BuggyProvider(FakeProvider):
    """Serves the first page, then fails with a bug (not a ProviderError)."""

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        if cursor is not None:
            raise KeyError("offset")
        return super().next(context, cursor)


@dataclass
class SecretFileGone(FakeProvider):
    """Serves the first page, then cannot read its secret file."""

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        if cursor is not None:
            raise ConfigError("/run/secrets/token: cannot read", path="openchoreo.auth.tokenFile")
        return super().next(context, cursor)


@dataclass
class StoppingProvider(FakeProvider):
    """Asks the run to stop while it serves page `stop_on_page` (0-based), as SIGTERM would."""

    stop: StopSignal | None = None
    stop_on_page: int = 1
    use_real_signal: bool = False
    cancelled_seen: list[bool] | None = None

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        page_index = 0 if cursor is None else cursor["offset"] // self.page_size
        if page_index == self.stop_on_page:
            if self.use_real_signal:
                os.kill(os.getpid(), signal.SIGTERM)
            elif self.stop is not None:
                self.stop.set(signal.SIGTERM)
            self.stop_on_page = -1
        if self.cancelled_seen is not None:
            self.cancelled_seen.append(context.cancelled())
        return super().next(context, cursor)


@dataclass
class StoppedInFlight(FakeProvider):
    """SIGTERM arrives while page `stop_on_page` is being fetched: the request goes on and ends
    with `error` (the deadline it ran into while the process waited for it, say)."""

    stop: StopSignal | None = None
    stop_on_page: int = 0
    error: Exception | None = None

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        page_index = 0 if cursor is None else cursor["offset"] // self.page_size
        if page_index == self.stop_on_page and self.stop is not None and self.error is not None:
            self.stop.set(signal.SIGTERM)
            context.clock.sleep(context.remaining())
            raise self.error
        return super().next(context, cursor)


IN_FLIGHT_ERRORS = [
    DeadlineExceeded("GET /namespaces: timed out at the burst deadline"),
    TransientError("GET /namespaces: connection reset", status=None),
    PermanentError("GET /namespaces: 400", status=400),
    KeyError("offset"),
]


class TestStop:
    @pytest.mark.parametrize(
        "error", IN_FLIGHT_ERRORS, ids=["deadline", "transient", "permanent", "provider-bug"]
    )
    @pytest.mark.parametrize("stop_on_page", [0, 2], ids=["no-page-yet", "after-two-pages"])
    def test_stop_during_a_request_is_an_interrupt_whatever_the_request_ended_with(
        self,
        tmp_path: Path,
        clock: FakeClock,
        state_path: Path,
        error: Exception,
        stop_on_page: int,
    ) -> None:
        """No attempt counted, no backoff, no lastError blaming burstLength: `health` stays
        green however often systemd stops the service mid-request."""
        config = make_config(tmp_path, burst_length=20.0, backoff=(300.0,))
        stop = StopSignal()
        provider = StoppedInFlight(TEN, stop=stop, stop_on_page=stop_on_page, error=error)

        result = run(config, state_path, clock, provider, stop=stop)

        [outcome] = result.providers
        assert result.outcome == "interrupted"
        assert (outcome.action, outcome.state, outcome.error) == (
            "interrupted",
            ProviderState.INTERSTITIAL,
            None,
        )
        assert outcome.pages == stop_on_page
        record = stored(state_path)
        assert (record.attempts, record.last_error) == (0, None)
        assert record.next_action_at == clock.now()  # due again at once, not after a backoff
        assert health(config, state_path, clock) == []
        with state_location(state_path).open(readonly=True) as store:
            assert store.counters("fake").get("bursts_failed", 0) == 0

    def test_stop_during_a_request_keeps_the_failures_counted_before_it(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """Stopped before its first page, a burst proves nothing about the source: the backoff
        it followed still counts towards maxAttempts (and a page would have reset it)."""
        config = make_config(tmp_path, backoff=(10.0,))
        provider = FakeProvider(TEN, fail_at={0: TransientError("upstream 503", status=503)})
        assert run_one(config, state_path, clock, provider).action == "failed"
        clock.advance(15.0)
        stop = StopSignal()
        stopped = StoppedInFlight(
            TEN, stop=stop, error=DeadlineExceeded("GET /namespaces: timed out")
        )

        result = run(config, state_path, clock, stopped, stop=stop)

        assert result.providers[0].action == "interrupted"
        record = stored(state_path)
        assert (record.attempts, record.last_error) == (1, "upstream 503")
        assert record.next_action_at == clock.now()

    def test_stop_mid_burst_commits_the_page_and_interrupts(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_interval=30.0)
        stop = StopSignal()
        provider = StoppingProvider(TEN, stop=stop, cancelled_seen=[])

        result = run(config, state_path, clock, provider, stop=stop)

        [outcome] = result.providers
        assert result.outcome == "interrupted"
        assert (outcome.action, outcome.state, outcome.pages) == (
            "interrupted",
            ProviderState.INTERSTITIAL,
            2,
        )
        record = stored(state_path)
        assert record.cursor == {"offset": 4}  # page 2 was committed before stopping
        assert record.next_action_at == clock.now()  # due again at once, not after the interval
        assert provider.cancelled_seen == [False, True]

        resumed = run_one(config, state_path, clock, provider)

        assert resumed.cycle_completed
        assert provider.calls[2] == {"offset": 4}
        assert upserts_by_ref(state_path) == {entity.ref: 1 for entity in TEN}

    def test_sigterm_stops_the_burst_after_the_current_page(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path)
        before = signal.getsignal(signal.SIGTERM)
        provider = StoppingProvider(TEN, use_real_signal=True)

        result = run(config, state_path, clock, provider)

        assert result.outcome == "interrupted"
        assert result.providers[0].pages == 2
        assert stored(state_path).cursor == {"offset": 4}
        assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back

    def test_stop_skips_the_remaining_providers(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = replace(make_config(tmp_path), providers=("fake", "other"))
        stop = StopSignal()
        first = StoppingProvider(TEN, stop=stop)
        other = FakeProvider(TEN, name="other")

        result = run(config, state_path, clock, first, other, stop=stop)

        assert [outcome.name for outcome in result.providers] == ["fake"]
        assert other.calls == []
