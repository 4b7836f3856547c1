from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from choreo_ingest.engine import StopSignal
from choreo_ingest.errors import ConfigError, TransientError
from choreo_ingest.invocation import run_once
from choreo_ingest.metrics import (
    BURST_OUTCOMES,
    CYCLE_OUTCOMES,
    EVENT_OUTCOMES,
    ProviderMetrics,
    render_metrics,
    render_state_readable,
    write_metrics_textfile,
)
from choreo_ingest.models import EntityIteratorResult, ProviderState
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.reporting import status_report
from choreo_ingest.store import state_location

from fakes import FakeClock, FakeProvider, make_config, make_entity

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

EVERY_SERIES = (
    "choreo_ingest_last_run_timestamp_seconds",
    "choreo_ingest_last_burst_timestamp_seconds",
    "choreo_ingest_last_success_timestamp_seconds",
    "choreo_ingest_cycle_duration_seconds",
    "choreo_ingest_burst_duration_seconds",
    "choreo_ingest_state",
    "choreo_ingest_next_action_timestamp_seconds",
    "choreo_ingest_consecutive_failures",
    "choreo_ingest_entities",
    "choreo_ingest_entities_upserted_total",
    "choreo_ingest_entities_removed_total",
    "choreo_ingest_pages_total",
    "choreo_ingest_removals_blocked",
    "choreo_ingest_cycles_total",
    "choreo_ingest_cursor_resets_total",
    "choreo_ingest_events_total",
    "choreo_ingest_bursts_total",
    "choreo_ingest_events_pending",
    "choreo_ingest_events_parked",
    "choreo_ingest_health_problems",
    "choreo_ingest_events_oldest_pending_timestamp_seconds",
    "choreo_ingest_events_held_until_timestamp_seconds",
    "choreo_ingest_events_waiting_alone",
    "choreo_ingest_api_info",
)

BUSY = ProviderMetrics(
    provider="openchoreo",
    state=ProviderState.INTERSTITIAL,
    last_run_at=1_800_000_100.5,
    last_burst_at=1_800_000_090.0,
    last_success_at=1_800_000_000.0,
    last_cycle_duration=312.25,
    last_burst_duration=9.75,
    next_action_at=1_800_000_140.0,
    consecutive_failures=2,
    entities_by_kind={"Domain": 3, "System": 12, "Component": 140, "API": 95},
    entities_upserted_total=1234,
    entities_removed_total=17,
    pages_total=88,
    removals_blocked=5,
    cycles_total={"completed": 41, "blocked": 2},
    cursor_resets_total=3,
    events_total={"applied": 9, "rejected": 1, "parked": 0, "retried": 4},
    bursts_total={"ok": 130, "failed": 6, "interrupted": 1},
    events_pending=7,
    events_parked=2,
    health_problems=2,
    events_oldest_pending_at=1_800_000_095.25,
    events_held_until=1_800_000_130.0,
    events_waiting_alone=1,
    api="v1",
)

BUSY_VALUES: list[tuple[str, dict[str, str], float]] = [
    ("choreo_ingest_api_info", {"api": "v1"}, 1),
    ("choreo_ingest_last_run_timestamp_seconds", {}, 1_800_000_100.5),
    ("choreo_ingest_last_burst_timestamp_seconds", {}, 1_800_000_090.0),
    ("choreo_ingest_last_success_timestamp_seconds", {}, 1_800_000_000.0),
    ("choreo_ingest_cycle_duration_seconds", {}, 312.25),
    ("choreo_ingest_burst_duration_seconds", {}, 9.75),
    ("choreo_ingest_next_action_timestamp_seconds", {}, 1_800_000_140.0),
    ("choreo_ingest_consecutive_failures", {}, 2),
    ("choreo_ingest_entities", {"kind": "Component"}, 140),
    ("choreo_ingest_entities", {"kind": "API"}, 95),
    ("choreo_ingest_entities_upserted_total", {}, 1234),
    ("choreo_ingest_entities_removed_total", {}, 17),
    ("choreo_ingest_pages_total", {}, 88),
    ("choreo_ingest_removals_blocked", {}, 5),
    ("choreo_ingest_cycles_total", {"outcome": "completed"}, 41),
    ("choreo_ingest_cycles_total", {"outcome": "blocked"}, 2),
    ("choreo_ingest_cursor_resets_total", {}, 3),
    ("choreo_ingest_events_total", {"outcome": "retried"}, 4),
    ("choreo_ingest_bursts_total", {"outcome": "ok"}, 130),
    ("choreo_ingest_bursts_total", {"outcome": "failed"}, 6),
    ("choreo_ingest_bursts_total", {"outcome": "interrupted"}, 1),
    ("choreo_ingest_events_pending", {}, 7),
    ("choreo_ingest_events_parked", {}, 2),
    ("choreo_ingest_health_problems", {}, 2),
    ("choreo_ingest_events_oldest_pending_timestamp_seconds", {}, 1_800_000_095.25),
    ("choreo_ingest_events_held_until_timestamp_seconds", {}, 1_800_000_130.0),
    ("choreo_ingest_events_waiting_alone", {}, 1),
]

FRESH = ProviderMetrics(provider="csv", state=ProviderState.IDLE)


def parse(text: bytes) -> tuple[Samples, dict[str, str]]:
    """Samples keyed by (sample name, labels), and each family's HELP text."""
    samples: Samples = {}
    helps: dict[str, str] = {}
    for family in text_string_to_metric_families(text.decode()):
        helps[family.name] = family.documentation
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            assert sample.timestamp is None
            samples[key] = sample.value
    return samples, helps


def as_prometheus_client_writes(text: bytes) -> bytes:
    """`text` read by prometheus-client's parser and written out by its `generate_latest`."""

    class Parsed(Collector):
        def collect(self) -> list[Metric]:
            return list(text_string_to_metric_families(text.decode()))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Parsed())
    return generate_latest(registry)


def series_of(samples: Samples, provider: str) -> set[str]:
    return {name for name, labels in samples if ("provider", provider) in labels}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


class TestRenderMetrics:
    def test_exports_every_series_with_the_provider_label(self) -> None:
        samples, _ = parse(render_metrics([BUSY]))

        assert series_of(samples, "openchoreo") == set(EVERY_SERIES)
        assert all(("provider", "openchoreo") in labels for _, labels in samples)

    @pytest.mark.parametrize(
        ("name", "labels", "expected"),
        BUSY_VALUES,
        ids=[
            name.removeprefix("choreo_ingest_") + "".join(f"-{v}" for v in labels.values())
            for name, labels, _ in BUSY_VALUES
        ],
    )
    def test_values_match_the_stored_state(
        self, name: str, labels: dict[str, str], expected: float
    ) -> None:
        samples, _ = parse(render_metrics([BUSY]))

        assert value(samples, name, provider="openchoreo", **labels) == expected

    @pytest.mark.parametrize("state", list(ProviderState), ids=str)
    def test_state_is_one_hot(self, state: ProviderState) -> None:
        provider = ProviderMetrics(provider="openchoreo", state=state)
        samples, _ = parse(render_metrics([provider]))

        states = {
            dict(labels)["state"]: v
            for (name, labels), v in samples.items()
            if name == "choreo_ingest_state"
        }
        assert states == {s.value: (1.0 if s is state else 0.0) for s in ProviderState}

    def test_missing_timestamps_are_omitted_not_zero(self) -> None:
        samples, _ = parse(render_metrics([FRESH]))

        assert series_of(samples, "csv") == set(EVERY_SERIES) - {
            "choreo_ingest_last_run_timestamp_seconds",
            "choreo_ingest_last_burst_timestamp_seconds",
            "choreo_ingest_last_success_timestamp_seconds",
            "choreo_ingest_cycle_duration_seconds",
            "choreo_ingest_burst_duration_seconds",
            "choreo_ingest_next_action_timestamp_seconds",
            "choreo_ingest_events_oldest_pending_timestamp_seconds",
            "choreo_ingest_events_held_until_timestamp_seconds",
            "choreo_ingest_api_info",
        }

    def test_known_outcomes_and_kinds_are_exported_as_zero_when_absent(self) -> None:
        samples, _ = parse(render_metrics([FRESH]))

        def cycles(outcome: str) -> float:
            return value(samples, "choreo_ingest_cycles_total", provider="csv", outcome=outcome)

        def events(outcome: str) -> float:
            return value(samples, "choreo_ingest_events_total", provider="csv", outcome=outcome)

        for outcome in CYCLE_OUTCOMES:
            assert (
                value(samples, "choreo_ingest_cycles_total", provider="csv", outcome=outcome) == 0
            )
        for outcome in EVENT_OUTCOMES:
            assert (
                value(samples, "choreo_ingest_events_total", provider="csv", outcome=outcome) == 0
            )
        for outcome in BURST_OUTCOMES:
            assert (
                value(samples, "choreo_ingest_bursts_total", provider="csv", outcome=outcome) == 0
            )
        assert value(samples, "choreo_ingest_entities", provider="csv", kind="Domain") == 0
        assert value(samples, "choreo_ingest_events_pending", provider="csv") == 0
        assert value(samples, "choreo_ingest_events_parked", provider="csv") == 0

    def test_unknown_kinds_and_outcomes_are_exported_too(self) -> None:
        provider = ProviderMetrics(
            provider="csv",
            state=ProviderState.RESTING,
            entities_by_kind={"Resource": 4},
            events_total={"ignored": 6},
        )
        samples, _ = parse(render_metrics([provider]))

        assert value(samples, "choreo_ingest_entities", provider="csv", kind="Resource") == 4
        assert value(samples, "choreo_ingest_events_total", provider="csv", outcome="ignored") == 6

    def test_keeps_providers_apart(self) -> None:
        samples, _ = parse(render_metrics([BUSY, FRESH]))

        assert value(samples, "choreo_ingest_pages_total", provider="openchoreo") == 88
        assert value(samples, "choreo_ingest_pages_total", provider="csv") == 0

    def test_counters_have_no_created_samples(self) -> None:
        text = render_metrics([BUSY]).decode()

        assert "_created" not in text
        assert "# TYPE choreo_ingest_pages_total counter" in text

    def test_every_family_has_help_text(self) -> None:
        _, helps = parse(render_metrics([BUSY]))

        assert all(helps.values())
        assert len(helps) == len(EVERY_SERIES)

    @pytest.mark.parametrize(
        "providers",
        [
            [BUSY, FRESH],
            [
                ProviderMetrics(
                    provider='odd "name" \\ with\na newline',
                    state=ProviderState.BACKING_OFF,
                    last_run_at=float("inf"),
                    last_burst_at=1e-9,
                    last_cycle_duration=12_345_678.9,
                    pages_total=10**12,
                    entities_by_kind={"Ünïcode": 1},
                    bursts_total={"failed": 10**9, "ok": 12_345_678},
                    events_pending=123_456_789,
                )
            ],
        ],
        ids=["busy-and-fresh", "escapes-and-extremes"],
    )
    def test_writes_byte_for_byte_what_prometheus_client_writes(
        self, providers: list[ProviderMetrics]
    ) -> None:
        """The exposition is written without prometheus-client (the idle path does not import
        it): read back by prometheus-client's parser and written out by its `generate_latest`,
        the same families come out byte for byte."""
        text = render_metrics(providers)

        assert as_prometheus_client_writes(text) == text

    @pytest.mark.parametrize("readable", [True, False])
    def test_the_state_readable_gauge_is_what_prometheus_client_writes(
        self, readable: bool
    ) -> None:
        """serve's `choreo_ingest_state_readable`: one unlabelled sample, 1 or 0."""
        text = render_state_readable(readable)

        assert as_prometheus_client_writes(text) == text
        samples, helps = parse(text)
        assert samples == {("choreo_ingest_state_readable", frozenset()): float(readable)}
        assert helps["choreo_ingest_state_readable"]

    def test_the_configured_labels_are_on_every_series_as_prometheus_client_writes_them(
        self,
    ) -> None:
        """Two installations on one host (one config each, one textfile each, both with the
        provider `openchoreo`) wrote the same series: node_exporter drops a duplicate."""
        labels = (("a_first", 'prod "eu"\\1'), ("platform", "prod"))

        text = render_metrics([BUSY, FRESH], labels)

        assert as_prometheus_client_writes(text) == text
        samples, _ = parse(text)
        unlabelled, _ = parse(render_metrics([BUSY, FRESH]))
        assert all(set(labels) <= label_set for _, label_set in samples)
        assert {(name, label_set - set(labels)) for name, label_set in samples} == set(unlabelled)

    def test_a_label_the_series_carry_already_is_refused(self) -> None:
        with pytest.raises(ValueError, match="labels the series carry already: kind"):
            render_metrics([BUSY], (("kind", "x"),))

    def test_no_providers_renders_only_help_and_type_lines(self) -> None:
        lines = render_metrics([]).decode().splitlines()

        assert lines
        assert all(line.startswith("#") for line in lines)

    def test_rejects_a_provider_listed_twice(self) -> None:
        with pytest.raises(ValueError, match="csv"):
            render_metrics([FRESH, FRESH])

    def test_rejects_an_unknown_state(self) -> None:
        with pytest.raises(ValueError, match="dozing"):
            ProviderMetrics(provider="csv", state="dozing")  # type: ignore[arg-type]


def in_missing_directory(root: Path) -> Path:
    return root / "missing" / "choreo_ingest.prom"


def at_a_directory(root: Path) -> Path:
    (root / "choreo_ingest.prom").mkdir()
    return root / "choreo_ingest.prom"


def under_a_file(root: Path) -> Path:
    (root / "file").touch()
    return root / "file" / "choreo_ingest.prom"


class TestWriteMetricsTextfile:
    def test_written_file_parses_and_matches_render(self, tmp_path: Path) -> None:
        target = tmp_path / "choreo_ingest.prom"

        write_metrics_textfile(target, [BUSY, FRESH])

        assert target.read_bytes() == render_metrics([BUSY, FRESH])
        samples, _ = parse(target.read_bytes())
        assert series_of(samples, "openchoreo") == set(EVERY_SERIES)

    def test_replaces_the_file_by_rename_never_rewriting_it_in_place(self, tmp_path: Path) -> None:
        target = tmp_path / "choreo_ingest.prom"
        write_metrics_textfile(target, [FRESH])
        before = target.read_bytes()
        old_inode = target.stat().st_ino

        with target.open("rb") as reader_of_old_file:
            write_metrics_textfile(target, [BUSY])
            still_seen_by_old_reader = reader_of_old_file.read()

        assert still_seen_by_old_reader == before
        assert target.stat().st_ino != old_inode
        assert target.read_bytes() == render_metrics([BUSY])

    def test_leaves_no_temp_files_behind(self, tmp_path: Path) -> None:
        target = tmp_path / "choreo_ingest.prom"

        write_metrics_textfile(target, [BUSY])
        write_metrics_textfile(target, [BUSY])

        assert [p.name for p in tmp_path.iterdir()] == ["choreo_ingest.prom"]

    @pytest.mark.parametrize(
        ("make_path", "reason"),
        [
            (in_missing_directory, "No such file or directory"),
            (at_a_directory, "Is a directory"),
            (under_a_file, "Not a directory"),
        ],
        ids=["missing-directory", "target-is-a-directory", "parent-is-a-file"],
    )
    def test_unwritable_path_is_a_one_line_config_error(
        self, tmp_path: Path, make_path: Callable[[Path], Path], reason: str
    ) -> None:
        path = make_path(tmp_path)

        with pytest.raises(ConfigError) as caught:
            write_metrics_textfile(path, [BUSY])

        message = str(caught.value)
        assert caught.value.path == "metrics.textfile"
        assert message == f"metrics.textfile: cannot write metrics textfile {path}: {reason}"
        assert "\n" not in message
        assert [p.name for p in tmp_path.rglob("*.prom.*")] == []


def test_a_run_that_waits_moves_the_last_run_time_but_not_the_last_burst_time(
    tmp_path: Path,
) -> None:
    """A textfile that says when choreo-ingest last ran tells "cron stopped" from "resting"."""
    clock = FakeClock()
    config = make_config(tmp_path, rest_length=3600.0)
    assert config.state_path is not None
    assert config.metrics_textfile is not None
    provider = FakeProvider([make_entity("a")])
    run_once(config, config.state_path, clock, providers={"fake": provider})
    burst_at = clock.now()
    clock.advance(60.0)

    run_once(config, config.state_path, clock, providers={"fake": provider})

    samples, _ = parse(config.metrics_textfile.read_bytes())
    assert value(samples, "choreo_ingest_last_run_timestamp_seconds", provider="fake") == (
        clock.now()
    )
    assert value(samples, "choreo_ingest_last_burst_timestamp_seconds", provider="fake") == burst_at


@dataclass
class StoppedAtPage(FakeProvider):
    """FakeProvider whose page `stop_at` comes with SIGTERM (`stop` set while it is fetched)."""

    stop: StopSignal = field(default_factory=StopSignal)
    stop_at: int = -1

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        offset = 0 if cursor is None else int(cursor["offset"])
        if offset // self.page_size == self.stop_at:
            self.stop.set()
        return super().next(context, cursor)


def test_bursts_are_counted_by_how_they_ended_and_a_success_resets_only_the_gauge(
    tmp_path: Path,
) -> None:
    """One burst of each end, through the real engine and SQLite file: a pause at the deadline
    (ok), an upstream failure, SIGTERM mid-burst, the cycle's last pages (ok)."""
    clock = FakeClock()
    config = make_config(tmp_path, burst_length=10.0)
    assert config.state_path is not None
    assert config.metrics_textfile is not None
    provider = StoppedAtPage([make_entity(f"e{i}") for i in range(8)], page_cost=6.0)

    def burst(stop: StopSignal | None = None) -> str:
        result = run_once(
            config, config.state_path, clock, providers={"fake": provider}, force=True, stop=stop
        )
        clock.advance(1.0)
        return str(result.providers[0].action)

    assert burst() == "burst"  # page 0 took 6 s of 10: no room for another, paused
    provider.page_cost, provider.fail_at = 0.0, {1: TransientError("GET /x: 502")}
    assert burst() == "failed"
    provider.stop_at = 2
    assert burst(provider.stop) == "interrupted"  # page 1 committed, then SIGTERM
    assert burst() == "burst"  # pages 2 and 3: the cycle completes

    samples, _ = parse(config.metrics_textfile.read_bytes())
    bursts = {
        outcome: value(samples, "choreo_ingest_bursts_total", provider="fake", outcome=outcome)
        for outcome in BURST_OUTCOMES
    }
    assert bursts == {"ok": 2, "failed": 1, "interrupted": 1}
    assert value(samples, "choreo_ingest_consecutive_failures", provider="fake") == 0
    completed = value(samples, "choreo_ingest_cycles_total", provider="fake", outcome="completed")
    assert completed == 1


def test_a_provider_that_cannot_be_loaded_counts_a_failed_burst(tmp_path: Path) -> None:
    """As `run` reports it (`failed`), and as `consecutive_failures` counts it."""
    config = replace(make_config(tmp_path), providers=("fake", "not-installed"))
    assert config.state_path is not None
    assert config.metrics_textfile is not None

    run_once(config, config.state_path, FakeClock(), providers={"fake": FakeProvider([])})

    samples, _ = parse(config.metrics_textfile.read_bytes())
    labels = {"provider": "not-installed", "outcome": "failed"}
    assert value(samples, "choreo_ingest_bursts_total", **labels) == 1
    assert value(samples, "choreo_ingest_consecutive_failures", provider="not-installed") == 1


def test_the_inbox_gauges_are_each_providers_share_of_what_status_counts(tmp_path: Path) -> None:
    clock = FakeClock()
    config = replace(make_config(tmp_path), providers=("fake", "other"))
    assert config.state_path is not None
    assert config.metrics_textfile is not None
    providers = {"fake": FakeProvider([]), "other": FakeProvider([], name="other")}
    run_once(config, config.state_path, clock, providers=providers)
    with state_location(config.state_path).open() as store:
        events = [{"kind": "Component", "namespace": "acme", "name": f"c{n}"} for n in range(3)]
        seqs = store.add_events("fake", events[:1], clock.now() - 120)
        seqs += store.add_events("fake", events[1:2], clock.now() - 90)
        seqs += store.add_events("fake", events[2:], clock.now() - 30)
        store.add_events("other", events[:1], clock.now() - 10)
        assert store.fail_event("fake", seqs[0], "GET /x: 404", max_attempts=1)  # parked

    run_once(config, config.state_path, clock, providers=providers)  # neither handles events

    samples, _ = parse(config.metrics_textfile.read_bytes())
    inbox = {
        (name, state): value(samples, f"choreo_ingest_events_{state}", provider=name)
        for name in ("fake", "other")
        for state in ("pending", "parked")
    }
    assert inbox == {
        ("fake", "pending"): 2,
        ("fake", "parked"): 1,
        ("other", "pending"): 1,
        ("other", "parked"): 0,
    }
    # The oldest pending one: the parked event, older still, is not waiting for a run.
    oldest = "choreo_ingest_events_oldest_pending_timestamp_seconds"
    assert value(samples, oldest, provider="fake") == clock.now() - 90
    assert value(samples, oldest, provider="other") == clock.now() - 10
    status = status_report(config.state_path, config, clock.now())
    assert status.to_json()["events"] == {"pending": 3, "parked": 1}
