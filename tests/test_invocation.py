"""Whole invocations: run_once's lock, migration and metrics, and the operator's commands."""

from __future__ import annotations

import random
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from choreo_ingest import invocation
from choreo_ingest.config import Config
from choreo_ingest.engine import ProviderOutcome, StopSignal
from choreo_ingest.errors import (
    ConfigError,
    LockHeld,
    PermanentError,
    StateError,
    TransientError,
)
from choreo_ingest.invocation import (
    RunResult,
    _overall_outcome,
    approve_removals,
    forget,
    migrate,
    refresh,
    reset,
    run_once,
)
from choreo_ingest.metrics import ProviderMetrics, render_metrics
from choreo_ingest.models import ProviderAction, ProviderRecord, ProviderState, RunOutcome
from choreo_ingest.provider_scope import ProviderScope, checked_provider
from choreo_ingest.store import (
    MIGRATION_NAMES,
    SCHEMA_VERSION,
    PostgresLocation,
    SqliteLocation,
    StateLocation,
    state_location,
)

from fakes import FakeClock, FakeProvider, make_config, make_entity

TEN = [make_entity(f"e{i}") for i in range(10)]

EVERY_SERIES = {
    "choreo_ingest_last_run_timestamp_seconds",
    "choreo_ingest_last_burst_timestamp_seconds",
    "choreo_ingest_last_success_timestamp_seconds",
    "choreo_ingest_cycle_duration_seconds",
    "choreo_ingest_burst_duration_seconds",
    "choreo_ingest_next_action_timestamp_seconds",
    "choreo_ingest_state",
    "choreo_ingest_consecutive_failures",
    "choreo_ingest_entities",
    "choreo_ingest_removals_blocked",
    "choreo_ingest_entities_upserted_total",
    "choreo_ingest_entities_removed_total",
    "choreo_ingest_pages_total",
    "choreo_ingest_cursor_resets_total",
    "choreo_ingest_cycles_total",
    "choreo_ingest_events_total",
    "choreo_ingest_bursts_total",
    "choreo_ingest_events_pending",
    "choreo_ingest_events_parked",
    "choreo_ingest_events_waiting_alone",
    "choreo_ingest_health_problems",
}


@pytest.fixture(params=["sqlite", "postgres"])
def state_path(request: pytest.FixtureRequest, tmp_path: Path) -> StateLocation:
    """Whole invocations run on each store: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return SqliteLocation(tmp_path / "state.db")
    return PostgresLocation(request.getfixturevalue("pg_url"))


def run(config: Config, state_path: Path, clock: FakeClock, *providers: FakeProvider) -> RunResult:
    return run_once(
        config,
        state_path,
        clock,
        providers={provider.name: provider for provider in providers},
        rng=random.Random(0),
    )


class StoreFailsMidBurst(FakeProvider):
    """The state store fails while a page is fetched (a full disk)."""

    def next(self, context: Any, cursor: Any) -> Any:
        raise StateError("cannot write the state: disk I/O error")


def stored(state_path: Path, name: str = "fake") -> ProviderRecord:
    with state_location(state_path).open(readonly=True) as store:
        return store.load_provider(name)


def killed_mid_burst(state_path: Path, clock: FakeClock, **fields: Any) -> None:
    """The state a run killed mid-burst leaves: the provider `fake` still `bursting`."""
    with state_location(state_path).open() as store:
        store.migrate()
        crashed = ProviderRecord(name="fake", state=ProviderState.BURSTING, cycle_id=1, **fields)
        store.start_cycle(crashed, clock.now())


def change_state(
    command: str, state_path: Path, name: str, clock: FakeClock, config: Config
) -> None:
    """One of the operator's commands that rewrite the metrics: `approve`, `reset`, `refresh`."""
    if command == "approve":
        approve_removals(state_path, name, clock, config=config)
    elif command == "reset":
        reset(state_path, name, clock, purge=False, config=config)
    else:
        refresh(state_path, name, clock, config=config)


def series(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a textfile, keyed by sample name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def provider_series(path: Path, provider: str) -> set[str]:
    return {name for name, labels in series(path) if ("provider", provider) in labels}


class TestMetricsFile:
    def test_every_series_metrics_py_writes_is_listed_here(self) -> None:
        everything = ProviderMetrics(
            provider="p",
            state=ProviderState.RESTING,
            last_run_at=1.0,
            last_burst_at=1.0,
            last_success_at=1.0,
            last_cycle_duration=1.0,
            last_burst_duration=1.0,
            next_action_at=1.0,
        )
        rendered = render_metrics([everything]).decode()
        names = {
            sample.name
            for family in text_string_to_metric_families(rendered)
            for sample in family.samples
        }
        assert names == EVERY_SERIES

    def test_metrics_file_after_a_cycle_has_every_series_for_the_provider(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path)
        run(config, state_path, clock, FakeProvider(TEN, page_size=5))

        assert config.metrics_textfile is not None
        assert provider_series(config.metrics_textfile, "fake") == EVERY_SERIES
        values = series(config.metrics_textfile)
        fake = ("provider", "fake")
        assert values[("choreo_ingest_pages_total", frozenset({fake}))] == 2
        assert values[("choreo_ingest_entities_upserted_total", frozenset({fake}))] == 10
        entities = frozenset({fake, ("kind", "Component")})
        assert values[("choreo_ingest_entities", entities)] == 10
        assert values[("choreo_ingest_state", frozenset({fake, ("state", "resting")}))] == 1
        assert values[("choreo_ingest_state", frozenset({fake, ("state", "bursting")}))] == 0
        completed = frozenset({fake, ("outcome", "completed")})
        assert values[("choreo_ingest_cycles_total", completed)] == 1
        assert values[("choreo_ingest_last_run_timestamp_seconds", frozenset({fake}))] == (
            clock.now()
        )

    def test_metrics_file_is_written_when_the_burst_fails(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path)
        provider = FakeProvider(TEN, fail_at={0: TransientError("upstream 502")})

        result = run(config, state_path, clock, provider)

        assert result.outcome == "failed"
        assert config.metrics_textfile is not None
        values = series(config.metrics_textfile)
        fake = frozenset({("provider", "fake")})
        assert values[("choreo_ingest_consecutive_failures", fake)] == 1
        backing_off = frozenset({("provider", "fake"), ("state", "backing_off")})
        assert values[("choreo_ingest_state", backing_off)] == 1

    def test_a_run_the_state_store_fails_mid_burst_leaves_the_textfile_as_it_was(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """Exit 4, as when the store cannot be opened: the last run time stops (and `serve`'s
        failed tick leaves its own alike)."""
        config = make_config(tmp_path)
        run(config, state_path, clock, FakeProvider(TEN, page_size=5))
        assert config.metrics_textfile is not None
        before = config.metrics_textfile.read_bytes()
        clock.advance(60.0)

        with pytest.raises(StateError, match="disk I/O error"):
            run_once(
                config,
                state_path,
                clock,
                providers={"fake": StoreFailsMidBurst(TEN)},
                force=True,
            )

        assert config.metrics_textfile.read_bytes() == before

    def test_metrics_cover_providers_the_state_file_knows_but_config_dropped(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path)
        run(config, state_path, clock, FakeProvider(TEN, name="fake"))
        renamed = replace(config, providers=("other",))

        run(renamed, state_path, clock, FakeProvider(TEN, name="other"))

        assert renamed.metrics_textfile is not None
        assert provider_series(renamed.metrics_textfile, "fake") == EVERY_SERIES
        assert provider_series(renamed.metrics_textfile, "other") == EVERY_SERIES


class TestRunOnce:
    def test_nothing_due_is_a_waiting_outcome(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path)
        provider = FakeProvider(TEN, page_size=5)
        assert run(config, state_path, clock, provider).outcome == "burst"

        assert run(config, state_path, clock, provider).outcome == "waiting"

    def test_only_runs_the_named_provider(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = replace(make_config(tmp_path), providers=("fake", "other"))
        fake, other = FakeProvider(TEN), FakeProvider(TEN, name="other")

        result = run_once(
            config, state_path, clock, only="other", providers={"fake": fake, "other": other}
        )

        assert [outcome.name for outcome in result.providers] == ["other"]
        assert fake.calls == []

    def test_only_an_unconfigured_provider_is_a_config_error(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        with pytest.raises(ConfigError, match=r"'nope' is not configured.*fake"):
            run_once(make_config(tmp_path), state_path, clock, only="nope")
        assert not state_location(state_path).exists()

    def test_run_while_locked_does_nothing(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        provider = FakeProvider(TEN)
        with state_location(state_path).run_lock(), pytest.raises(LockHeld):
            run(make_config(tmp_path), state_path, clock, provider)
        assert provider.calls == []
        assert not state_location(state_path).exists()

    def test_first_run_migrates_a_new_state_file(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        run(make_config(tmp_path), state_path, clock, FakeProvider(TEN))
        with state_location(state_path).open(readonly=True) as store:
            assert store.applied_migrations() == list(MIGRATION_NAMES)


A = ProviderAction


class TestOverallOutcome:
    """One provider's trouble decides the run's outcome (and so its exit code)."""

    # (actions of the providers, stop signal set, an output not written, events held, expected)
    CASES: ClassVar = [
        ("no-providers", [], False, False, False, RunOutcome.WAITING),
        ("all-waiting", [A.WAITING, A.WAITING], False, False, False, RunOutcome.WAITING),
        ("one-burst", [A.WAITING, A.BURST], False, False, False, RunOutcome.BURST),
        ("a-failure-beats-a-burst", [A.BURST, A.FAILED], False, False, False, RunOutcome.FAILED),
        (
            "an-interrupt-beats-a-failure",
            [A.FAILED, A.INTERRUPTED],
            False,
            False,
            False,
            RunOutcome.INTERRUPTED,
        ),
        ("stopped-before-any-provider", [], True, False, False, RunOutcome.INTERRUPTED),
        ("stopped-after-a-burst", [A.BURST], True, False, False, RunOutcome.INTERRUPTED),
        ("an-output-not-written-after-a-burst", [A.BURST], False, True, False, RunOutcome.ERROR),
        ("an-output-not-written-beats-a-failure", [A.FAILED], False, True, False, RunOutcome.ERROR),
        ("an-output-not-written-while-waiting", [A.WAITING], False, True, False, RunOutcome.ERROR),
        ("events-held-while-waiting", [A.WAITING], False, False, True, RunOutcome.FAILED),
        ("events-held-beside-a-burst", [A.BURST], False, False, True, RunOutcome.FAILED),
        ("a-stop-beats-events-held", [A.WAITING], True, False, True, RunOutcome.INTERRUPTED),
    ]

    @pytest.mark.parametrize(
        ("actions", "stopped", "output_failed", "held", "expected"),
        [case[1:] for case in CASES],
        ids=[case[0] for case in CASES],
    )
    def test_outcome(
        self,
        actions: list[ProviderAction],
        stopped: bool,
        output_failed: bool,
        held: bool,
        expected: RunOutcome,
    ) -> None:
        outcomes = [
            ProviderOutcome(name=f"p{i}", action=action, state=ProviderState.IDLE)
            for i, action in enumerate(actions)
        ]
        error = ConfigError("cannot write", path="metrics.textfile") if output_failed else None
        assert _overall_outcome(outcomes, stopped, error, held) is expected

    def test_json_strings_are_the_enum_values(self) -> None:
        """`--json` prints these values; scripts match on them."""
        assert [outcome.value for outcome in RunOutcome] == [
            "burst", "waiting", "failed", "interrupted", "locked", "error"
        ]  # fmt: skip
        assert [action.value for action in ProviderAction] == [
            "burst", "waiting", "failed", "interrupted"
        ]  # fmt: skip


def test_a_stop_once_the_work_is_done_leaves_the_run_as_it_went(
    tmp_path: Path, clock: FakeClock, state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM landing while the metrics textfile is written (a Job's deadline just then): the
    bursts and the mirror are done, and exit 130 would mark the Job failed for nothing."""
    config = make_config(tmp_path)
    stop = StopSignal()
    write_metrics = invocation._write_metrics

    def stopped_while_writing(*args: Any) -> Any:
        stop.set()
        return write_metrics(*args)

    monkeypatch.setattr(invocation, "_write_metrics", stopped_while_writing)

    result = run_once(config, state_path, clock, providers={"fake": FakeProvider(TEN)}, stop=stop)

    assert stop.is_set()
    assert result.outcome is RunOutcome.BURST
    assert [outcome.action for outcome in result.providers] == [ProviderAction.BURST]


class TestMigrate:
    def test_migrate_applies_pending_once(self, state_path: Path) -> None:
        first = migrate(state_path)
        assert first.applied_now == list(MIGRATION_NAMES)
        assert (first.schema_version, first.supported_version) == (SCHEMA_VERSION, SCHEMA_VERSION)
        assert first.pending == []

        second = migrate(state_path)

        assert second.applied_now == []
        assert second.applied == list(MIGRATION_NAMES)

    def test_report_only_on_a_missing_file_creates_nothing(self, state_path: StateLocation) -> None:
        report = migrate(state_path, apply=False)
        assert report.pending == list(MIGRATION_NAMES)
        assert report.schema_version == 0
        assert not state_path.exists()
        if isinstance(state_path, SqliteLocation):  # not even a lock file or a -wal
            assert list(state_path.path.parent.iterdir()) == []

    def test_report_only_does_not_apply(self, state_path: Path) -> None:
        with state_location(state_path).open():
            pass  # an empty, unmigrated file
        report = migrate(state_path, apply=False)
        assert report.pending == list(MIGRATION_NAMES)
        assert report.applied_now == []

    def test_migrate_while_locked_is_refused(self, state_path: Path) -> None:
        with state_location(state_path).run_lock(), pytest.raises(LockHeld):
            migrate(state_path)


class TestOperatorCommands:
    def test_refresh_ends_the_rest_at_once(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, rest_length=3600.0)
        provider = FakeProvider(TEN, page_size=5)
        run(config, state_path, clock, provider)
        assert run(config, state_path, clock, provider).outcome == "waiting"

        assert refresh(state_path, "fake", clock) is ProviderState.RESTING

        assert stored(state_path).next_action_at == clock.now()
        assert run(config, state_path, clock, provider).outcome == "burst"
        assert stored(state_path).cycle_id == 2

    def test_refresh_ends_a_backoff_at_once(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, backoff=(600.0,))
        provider = FakeProvider(TEN, fail_at={1: PermanentError("boom", status=400)})
        run(config, state_path, clock, provider)

        assert refresh(state_path, "fake", clock) is ProviderState.BACKING_OFF

        resumed = run(config, state_path, clock, provider).providers[0]
        assert resumed.action == "burst"
        assert provider.calls[-resumed.pages] == {"offset": 2}

    def test_refresh_after_a_crashed_burst_resumes_it_at_once(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        """Three killed bursts back off for the third step (40 s here); an operator's refresh
        ends that wait, as it ends any other, and the crash still counts for `health`."""
        config = make_config(tmp_path, backoff=(10.0, 20.0, 40.0))
        killed_mid_burst(
            state_path, clock, cursor={"offset": 4}, attempts=2, last_burst_at=clock.now()
        )
        clock.advance(1.0)
        provider = FakeProvider(TEN)
        assert run(config, state_path, clock, provider).outcome == "waiting"

        assert refresh(state_path, "fake", clock) is ProviderState.BACKING_OFF

        record = stored(state_path)
        assert (record.attempts, record.next_action_at) == (3, clock.now())
        resumed = run(config, state_path, clock, provider)
        assert resumed.outcome == "burst"
        assert provider.calls[0] == {"offset": 4}
        assert stored(state_path).attempts == 0

    def test_reset_starts_a_fresh_cycle_and_keeps_the_catalog(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0)
        provider = FakeProvider(TEN, page_cost=5.0)
        run(config, state_path, clock, provider)  # interstitial at offset 4

        assert reset(state_path, "fake", clock, purge=False) == 0

        record = stored(state_path)
        assert (record.state, record.cursor, record.next_action_at) == (
            ProviderState.IDLE,
            None,
            None,
        )
        with state_location(state_path).open(readonly=True) as store:
            assert store.active_count("fake") == 4
        run(config, state_path, clock, provider)
        assert provider.calls[2] is None
        assert stored(state_path).cycle_id == 2

    def test_reset_with_purge_removes_the_providers_entities(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        run(make_config(tmp_path), state_path, clock, FakeProvider(TEN, page_size=5))

        assert reset(state_path, "fake", clock, purge=True) == 10

        with state_location(state_path).open(readonly=True) as store:
            assert list(store.iter_entities()) == []
            assert store.active_count("fake") == 0
            assert sum(change.op == "delete" for change in store.changes()) == 10

    def test_approve_removals_applies_a_blocked_sweep(
        self, tmp_path: Path, clock: FakeClock, state_path: Path
    ) -> None:
        config = make_config(tmp_path, rest_length=60.0, reject_removals_above_percentage=10.0)
        run(config, state_path, clock, FakeProvider(TEN, page_size=5))
        clock.advance(60.0)
        blocked = run(config, state_path, clock, FakeProvider(TEN[5:], page_size=5))
        assert blocked.providers[0].removals_blocked == 5

        assert approve_removals(state_path, "fake", clock) == (5, 2)  # cycle 2's sweep

        with state_location(state_path).open(readonly=True) as store:
            assert store.active_count("fake") == 5
            assert store.blocked_removals("fake").count == 0
        assert approve_removals(state_path, "fake", clock) == (0, None)

    @pytest.mark.parametrize("command", ["approve", "reset", "forget"])
    def test_a_change_to_a_state_not_there_yet_says_so_in_its_store_s_words(
        self, clock: FakeClock, state_path: StateLocation, command: str
    ) -> None:
        """A file's words for a file; a PostgreSQL schema is no file (and its URL's password
        is never shown)."""
        location = state_path
        if isinstance(location, PostgresLocation):
            location = replace(location, url=location.url.replace("@", ":pw-not-shown@", 1))
            assert "pw-not-shown" in location.url
        changes = {"approve": approve_removals, "reset": partial(reset, purge=False)}

        with pytest.raises(StateError) as refused:
            changes.get(command, forget)(location, "fake", clock)

        store = "state file" if isinstance(location, SqliteLocation) else "state"
        assert str(refused.value) == (
            f"{location}: no {store} yet "
            "(`choreo-ingest run` or `choreo-ingest migrate` creates it)"
        )
        assert "pw-not-shown" not in str(refused.value)
        assert not location.exists()

    def test_a_provider_only_the_state_holds_is_named_without_calling_the_state_a_file(
        self, tmp_path: Path, clock: FakeClock, state_path: StateLocation
    ) -> None:
        config = make_config(tmp_path)
        with state_path.open() as store:
            store.migrate()
            store.save_provider(ProviderRecord(name="gone"), clock.now())
        refusals = []
        for name, scope in [
            ("typo", ProviderScope.FORGOTTEN),
            ("typo", ProviderScope.KNOWN),
            ("gone", ProviderScope.CONFIGURED),
        ]:
            with pytest.raises(ConfigError) as refused:
                checked_provider(config, state_path, name, scope)
            refusals.append(str(refused.value))

        assert refusals[0] == "the state holds no provider 'typo' to forget (it holds: gone)"
        assert refusals[1].startswith(
            "unknown provider 'typo' (configured: fake; only in the state: gone; "
        )
        assert refusals[2].endswith("; it is only in the state: `reset gone --forget` removes it")
        assert not [refusal for refusal in refusals if "file" in refusal]

    @pytest.mark.parametrize("command", ["approve", "reset", "refresh"])
    def test_commands_that_rewrite_the_metrics_count_a_crashed_burst(
        self, tmp_path: Path, clock: FakeClock, state_path: Path, command: str
    ) -> None:
        """No burst runs under an operator's lock: a `bursting` provider is one killed mid-burst,
        counted as the failure it is (as `status` and the next run count it)."""
        config = make_config(tmp_path)
        killed_mid_burst(state_path, clock, attempts=1)
        clock.advance(1.0)

        change_state(command, state_path, "other", clock, config)

        assert config.metrics_textfile is not None
        fake = frozenset({("provider", "fake")})
        assert series(config.metrics_textfile)[("choreo_ingest_consecutive_failures", fake)] == 2

    @pytest.mark.parametrize("command", ["approve", "reset", "refresh"])
    def test_commands_that_change_state_rewrite_the_metrics_textfile(
        self, tmp_path: Path, clock: FakeClock, state_path: Path, command: str
    ) -> None:
        """`removals_blocked` and the state must not say the old thing until the next run."""
        config = make_config(tmp_path, rest_length=60.0, reject_removals_above_percentage=10.0)
        run(config, state_path, clock, FakeProvider(TEN, page_size=5))
        clock.advance(60.0)
        run(config, state_path, clock, FakeProvider(TEN[5:], page_size=5))
        assert config.metrics_textfile is not None
        fake = frozenset({("provider", "fake")})
        assert series(config.metrics_textfile)[("choreo_ingest_removals_blocked", fake)] == 5
        clock.advance(1.0)

        change_state(command, state_path, "fake", clock, config)

        written = series(config.metrics_textfile)
        last_run = written[("choreo_ingest_last_run_timestamp_seconds", fake)]
        assert last_run == clock.now()
        if command != "refresh":
            assert written[("choreo_ingest_removals_blocked", fake)] == 0
