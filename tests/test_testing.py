"""`choreo_ingest.testing`: the fakes and the engine harness provider authors test with.

The last tests use it as a provider author would, on the example CSV provider.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from choreo_ingest import testing
from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.errors import ChoreoIngestError, TransientError
from choreo_ingest.testing import (
    FakeClock,
    FakeProvider,
    burst_context,
    catalog,
    make_entity,
    run_provider,
)

import fakes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_provider"
FIVE = [make_entity(f"e{n}") for n in range(5)]


def names(state_path: Path) -> list[str]:
    return [body["metadata"]["name"] for body in catalog(state_path)]


def settings(**incremental: float) -> Config:
    return Config(
        openchoreo=OpenChoreoConfig(incremental=replace(IncrementalConfig(), **incremental))
    )


class TestFakeClock:
    def test_time_stands_still_until_told(self) -> None:
        clock = FakeClock(start=100.0)

        assert (clock.now(), clock.monotonic()) == (100.0, clock.monotonic())

    def test_advance_and_sleep_move_wall_and_monotonic_time_alike(self) -> None:
        clock = FakeClock(start=100.0)
        before = clock.monotonic()

        clock.advance(5.0)
        clock.sleep(2.5)
        clock.sleep(-1.0)  # a deadline already passed: no time goes back

        assert clock.now() == 107.5
        assert clock.monotonic() - before == 7.5

    def test_tick_moves_time_at_every_monotonic_read(self) -> None:
        """`tick` makes work take time: every deadline check the engine makes costs `tick`."""
        clock = FakeClock(start=100.0, tick=0.5)

        first, second = clock.monotonic(), clock.monotonic()

        assert second - first == 0.5
        assert clock.now() == 101.0


class TestFakeProvider:
    def test_serves_the_entities_in_pages_with_an_offset_cursor(self) -> None:
        provider = FakeProvider(FIVE, page_size=2)
        context = burst_context(FakeClock())

        pages = [provider.next(context, cursor) for cursor in (None, {"offset": 2}, {"offset": 4})]

        assert [[e.name for e in page.entities] for page in pages] == [
            ["e0", "e1"], ["e2", "e3"], ["e4"]
        ]  # fmt: skip
        assert [page.cursor for page in pages] == [{"offset": 2}, {"offset": 4}, {"offset": 5}]
        assert [page.done for page in pages] == [False, False, True]
        assert provider.calls == [None, {"offset": 2}, {"offset": 4}]

    def test_a_failing_page_fails_once_then_is_served(self) -> None:
        provider = FakeProvider(FIVE, page_size=2, fail_at={1: TransientError("down")})
        context = burst_context(FakeClock())

        with pytest.raises(TransientError, match="down"):
            provider.next(context, {"offset": 2})
        page = provider.next(context, {"offset": 2})

        assert [e.name for e in page.entities] == ["e2", "e3"]


class TestRunProvider:
    def test_one_run_on_a_still_clock_is_a_whole_cycle(self, tmp_path: Path) -> None:
        state_path = tmp_path / "state.db"

        outcome = run_provider(FakeProvider(FIVE, page_size=2), state_path, FakeClock())

        assert (outcome.name, outcome.cycle_completed, outcome.pages) == ("fake", True, 3)
        assert (outcome.entities_upserted, outcome.error) == (5, None)
        assert names(state_path) == ["e0", "e1", "e2", "e3", "e4"]

    def test_a_cycle_that_no_longer_sees_an_entity_removes_it(self, tmp_path: Path) -> None:
        state_path = tmp_path / "state.db"
        run_provider(FakeProvider(FIVE), state_path, FakeClock())

        outcome = run_provider(FakeProvider(FIVE[:3]), state_path, FakeClock(), force=True)

        assert (outcome.cycle_completed, outcome.entities_removed) == (True, 2)
        assert names(state_path) == ["e0", "e1", "e2"]

    def test_a_completed_cycle_rests_until_the_clock_passes_the_rest(self, tmp_path: Path) -> None:
        state_path, clock = tmp_path / "state.db", FakeClock()
        provider = FakeProvider(FIVE, page_size=5)
        run_provider(provider, state_path, clock, settings(rest_length=600.0))

        resting = run_provider(provider, state_path, clock, settings(rest_length=600.0))
        clock.advance(600.0)
        due = run_provider(provider, state_path, clock, settings(rest_length=600.0))

        assert (resting.pages, resting.next_action_at) == (0, clock.now())
        assert (due.pages, due.cycle_completed) == (1, True)
        assert provider.calls == [None, None]

    def test_a_failed_burst_is_an_outcome_and_retried_after_its_backoff(
        self, tmp_path: Path
    ) -> None:
        state_path, clock = tmp_path / "state.db", FakeClock()
        provider = FakeProvider(FIVE, page_size=5, fail_at={0: TransientError("down")})

        failed = run_provider(provider, state_path, clock)
        waiting = run_provider(provider, state_path, clock)
        assert failed.next_action_at is not None
        clock.advance(failed.next_action_at - clock.now())
        retried = run_provider(provider, state_path, clock)

        assert "down" in (failed.error or "")
        assert (waiting.pages, waiting.error) == (0, None)
        assert retried.cycle_completed
        assert provider.calls == [None, None]

    def test_backoff_is_the_same_from_run_to_run(self, tmp_path: Path) -> None:
        """Jitter comes from a seeded generator: a test can rely on when a retry is due."""
        waits = []
        for attempt in ("first", "second"):
            clock = FakeClock()
            provider = FakeProvider(FIVE, fail_at={0: TransientError("down")})
            outcome = run_provider(provider, tmp_path / f"{attempt}.db", clock)
            assert outcome.next_action_at is not None
            waits.append(outcome.next_action_at - clock.now())

        assert waits[0] == waits[1] > 0

    def test_a_burst_that_reaches_its_deadline_resumes_where_it_stopped(
        self, tmp_path: Path
    ) -> None:
        """Pages that take clock time end the burst within `burstLength` (a page is not begun
        when the one before took longer than the time left): the next run carries on from the
        stored cursor."""
        state_path, clock = tmp_path / "state.db", FakeClock()
        provider = FakeProvider(FIVE, page_size=1, page_cost=4.0)
        config = settings(burst_length=10.0, burst_interval=30.0)

        outcomes = []
        for _ in range(3):
            outcomes.append(run_provider(provider, state_path, clock, config))
            clock.advance(30.0)

        assert [o.pages for o in outcomes] == [2, 2, 1]
        assert [o.cycle_completed for o in outcomes] == [False, False, True]
        assert provider.calls == [None, *({"offset": n} for n in range(1, 5))]

    def test_the_config_brings_its_outputs_and_keeps_the_given_state_file(
        self, tmp_path: Path
    ) -> None:
        config = replace(
            Config(),
            state_path=tmp_path / "elsewhere.db",
            metrics_textfile=tmp_path / "metrics.prom",
            providers=("openchoreo",),
        )

        outcome = run_provider(FakeProvider(FIVE), tmp_path / "state.db", FakeClock(), config)

        assert outcome.cycle_completed
        assert (tmp_path / "state.db").is_file()
        assert not (tmp_path / "elsewhere.db").exists()
        assert 'provider="fake"' in (tmp_path / "metrics.prom").read_text()

    def test_an_output_that_cannot_be_written_raises_its_error(self, tmp_path: Path) -> None:
        """As `run` exits 2 naming it; the burst itself is done and stored."""
        (tmp_path / "metrics.prom").mkdir()
        config = replace(Config(), metrics_textfile=tmp_path / "metrics.prom")

        with pytest.raises(ChoreoIngestError, match="metrics"):
            run_provider(FakeProvider(FIVE), tmp_path / "state.db", FakeClock(), config)

    def test_catalog_of_one_kind(self, tmp_path: Path) -> None:
        state_path = tmp_path / "state.db"
        entities = [make_entity("shop", kind="System"), make_entity("cart")]
        run_provider(FakeProvider(entities), state_path, FakeClock())

        assert [body["kind"] for body in catalog(state_path, "system")] == ["System"]


@pytest.fixture
def csv_package(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example package importable from its folder, as if installed."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return importlib.import_module("choreo_ingest_csv_provider")


class TestAProviderAuthorsTest:
    """What the README shows: the example CSV provider, tested through the real engine."""

    def test_every_row_lands_in_the_catalog(self, tmp_path: Path, csv_package: ModuleType) -> None:
        source = tmp_path / "services.csv"
        source.write_text("kind,name\nComponent,cart\nComponent,shop\nSystem,store\n")
        provider = csv_package.CsvProvider(
            path=source,
            page_size=2,
            defaults=csv_package.Defaults(owner="group:default/team", lifecycle="production"),
        )

        outcome = run_provider(provider, tmp_path / "state.db", FakeClock())

        assert (outcome.cycle_completed, outcome.pages) == (True, 2)
        assert names(tmp_path / "state.db") == ["cart", "shop", "store"]

    def test_a_missing_file_fails_the_burst_and_says_why(
        self, tmp_path: Path, csv_package: ModuleType
    ) -> None:
        provider = csv_package.CsvProvider(
            path=tmp_path / "missing.csv",
            page_size=2,
            defaults=csv_package.Defaults(owner="group:default/team", lifecycle="production"),
        )

        outcome = run_provider(provider, tmp_path / "state.db", FakeClock())

        assert "no such CSV file" in (outcome.error or "")
        assert catalog(tmp_path / "state.db") == []


def test_the_suite_fakes_are_the_public_ones() -> None:
    """tests/fakes.py re-exports these: the project tests itself with what authors get."""
    assert fakes.FakeClock is testing.FakeClock
    assert fakes.FakeProvider is testing.FakeProvider
    assert fakes.make_entity is testing.make_entity


def test_a_burst_context_counts_down_to_its_deadline_on_the_clock() -> None:
    clock = FakeClock()
    context = burst_context(clock, seconds=10.0)

    clock.advance(4.0)

    assert context.remaining() == 6.0
    assert (list(context.queues.read("seen", after=0, limit=5)), context.cancelled()) == ([], False)
