"""serve's `GET /metrics` when the state store can be read and when it cannot: always a 200
Prometheus can parse, with the process's own counters and `choreo_ingest_state_readable`; the
state's series only when the state was read (never zeros standing in for a state not read)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from choreo_ingest.config import Config
from choreo_ingest.server.app import build_app
from choreo_ingest.server.context import Server
from choreo_ingest.server.security import Credentials
from choreo_ingest.service import Service
from choreo_ingest.store import StateLocation

from asgi_support import AsgiClient
from broken_states import garbage, ingested, postgresql_down, unreadable
from fakes import FakeClock
from privileges import as_nobody

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

STATE_SERIES = ("choreo_ingest_state", "choreo_ingest_entities", "choreo_ingest_pages_total")
"""Families only the stored state gives (each with a sample for every provider it knows)."""


def scrape(config: Config, state: Path | StateLocation, clock: FakeClock) -> Samples:
    """`GET /healthz` then `GET /metrics` (a 200): the samples, as Prometheus parses them."""
    service = Service(config, state, clock)
    server = Server(config, service.state, clock, service, Credentials())
    with AsgiClient(build_app(server)) as client:
        assert client.get("/healthz").status_code == 200
        answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def healthz_requests(samples: Samples) -> float:
    labels = frozenset({("route", "/healthz"), ("method", "GET"), ("status", "200")})
    return samples[("choreo_ingest_http_requests_total", labels)]


def test_a_readable_state_is_said_with_its_series(
    config: Config, directory: Path, clock: FakeClock
) -> None:
    samples = scrape(config, ingested(directory / "state.db", clock), clock)

    assert samples[("choreo_ingest_state_readable", frozenset())] == 1.0
    assert set(STATE_SERIES) <= names(samples)
    assert healthz_requests(samples) == 1.0


def not_made_yet(directory: Path, clock: FakeClock) -> Path:
    """Before the service's first tick makes it: `/readyz` says not ready, so does the gauge."""
    return directory / "state.db"


@pytest.mark.parametrize(
    "broken",
    [garbage, unreadable, postgresql_down, not_made_yet],
    ids=["garbage-file", "mode-000-file", "postgresql-down", "no-state-yet"],
)
def test_a_state_that_cannot_be_read_is_a_200_without_the_states_series(
    config: Config,
    directory: Path,
    clock: FakeClock,
    broken: Callable[[Path, FakeClock], Path | StateLocation],
) -> None:
    """Not a 503, which Prometheus takes for the whole target down (the HTTP counters lost
    with it); not zeros either, which would read as an empty catalog."""
    state = broken(directory, clock)
    # Root reads a mode-000 file: that scrape is made as `nobody` (who may not import psycopg
    # from root's home, so only that one).
    with as_nobody() if broken is unreadable else nullcontext():
        samples = scrape(config, state, clock)

    assert samples[("choreo_ingest_state_readable", frozenset())] == 0.0
    assert not set(STATE_SERIES) & names(samples)
    assert not any(
        name.startswith("choreo_ingest_") and ("provider", "openchoreo") in labels
        for name, labels in samples
    )
    assert healthz_requests(samples) == 1.0


def test_a_state_that_becomes_readable_again_is_said_at_the_next_scrape(
    config: Config, directory: Path, clock: FakeClock
) -> None:
    path = ingested(directory / "state.db", clock)
    service = Service(config, path, clock)
    server = Server(config, service.state, clock, service, Credentials())
    readable = []
    with AsgiClient(build_app(server)) as client:
        for mode in (0o000, 0o644):
            path.chmod(mode)
            with as_nobody():
                answer = client.get("/metrics")
            assert answer.status_code == 200
            for family in text_string_to_metric_families(answer.text):
                if family.name == "choreo_ingest_state_readable":
                    readable.append(family.samples[0].value)

    assert readable == [0.0, 1.0]


def test_methods_a_client_makes_up_are_counted_as_one_label_value(
    config: Config, directory: Path, clock: FakeClock
) -> None:
    """A scanner's `X1 /healthz`, `X2 /healthz`, ...: a series each would grow `/metrics` and
    serve's memory for as long as it runs."""
    service = Service(config, ingested(directory / "state.db", clock), clock)
    server = Server(config, service.state, clock, service, Credentials())
    with AsgiClient(build_app(server)) as client:
        assert client.get("/healthz").status_code == 200
        for number in range(5):
            client.request(f"X{number}", "/healthz")
        answer = client.get("/metrics")

    methods = {
        sample.labels["method"]
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "choreo_ingest_http_requests_total"
    }
    assert methods == {"GET", "other"}
