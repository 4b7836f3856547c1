"""serve's `GET /metrics` when the state store can be read and when it cannot: always a 200
Prometheus can parse, with the process's own counters and `choreo_ingest_state_readable`; the
state's series only when the state was read (never zeros standing in for a state not read)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from choreo_ingest.config import Config, load_config
from choreo_ingest.server.app import build_app
from choreo_ingest.server.context import Server
from choreo_ingest.server.security import Credentials
from choreo_ingest.service import Service
from choreo_ingest.simulator.world import World
from choreo_ingest.store import PostgresLocation, StateLocation

from asgi_support import AsgiClient
from fakes import FakeClock
from privileges import as_nobody, reachable_directory
from sim_support import free_port, ingest_world, write_config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

STATE_SERIES = ("choreo_ingest_state", "choreo_ingest_entities", "choreo_ingest_pages_total")
"""Families only the stored state gives (each with a sample for every provider it knows)."""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = write_config(
        tmp_path / "choreo-ingest.yaml",
        "http://127.0.0.1:9/api/v1",
        token="openchoreo-token",
        state={"path": "state.db"},
    )
    return load_config(path)


@pytest.fixture
def directory() -> Iterator[Path]:
    """A 0755 directory (pytest's tmp_path is below a 0700 one `nobody` may not search)."""
    with reachable_directory(0o755) as made:
        yield made


def ingested(directory: Path, clock: FakeClock) -> Path:
    ingest_world(directory / "state.db", World.generate(1, 1, 2, seed=4), clock)
    return directory / "state.db"


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
    samples = scrape(config, ingested(directory, clock), clock)

    assert samples[("choreo_ingest_state_readable", frozenset())] == 1.0
    assert set(STATE_SERIES) <= names(samples)
    assert healthz_requests(samples) == 1.0


def garbage(directory: Path, clock: FakeClock) -> Path:
    path = directory / "state.db"
    path.write_bytes(bytes(range(256)) * 32)
    return path


def unreadable(directory: Path, clock: FakeClock) -> Path:
    path = ingested(directory, clock)
    path.chmod(0o000)
    for end in ("-wal", "-shm"):
        Path(f"{path}{end}").unlink(missing_ok=True)
    return path


def postgresql_down(directory: Path, clock: FakeClock) -> StateLocation:
    """A PostgreSQL store on a port nothing listens on."""
    return PostgresLocation(f"postgresql://choreo@127.0.0.1:{free_port()}/choreo?connect_timeout=5")


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
    path = ingested(directory, clock)
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
