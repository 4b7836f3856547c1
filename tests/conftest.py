"""Fixtures shared by the whole suite; the fakes themselves live in fakes.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from choreo_ingest.cli.output import stderr_lines_in_json
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server
from choreo_ingest.store import PostgresLocation, SqliteLocation, StateLocation

from fakes import FakeClock, FakeProvider, make_config, make_entity
from pg_support import PgCluster, throwaway_cluster

__all__ = ["FakeClock", "FakeProvider", "make_config", "make_entity"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def serve() -> Iterator[Callable[..., SimulatorApi]]:
    """`serve(world, **options) -> api`: the simulator on a loopback port (`api.url`), stopped
    after the test."""
    servers = []

    def start(world: World, **options: Any) -> SimulatorApi:
        api = SimulatorApi(world, SimulatorOptions(**options))
        server = start_server(api)
        servers.append(server)
        api.url = server.url  # type: ignore[attr-defined]
        return api

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """CLI tests configure structlog onto streams CliRunner closes afterwards, and the error
    lines after it: start clean."""
    structlog.reset_defaults()
    stderr_lines_in_json(None)
    yield
    structlog.reset_defaults()
    stderr_lines_in_json(None)


@pytest.fixture(autouse=True)
def _own_cache_directory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed config copies (config_file.py) go to a directory of the test's own, never the home
    of whoever runs the suite (nor the test's tmp_path, whose contents tests check); the
    processes a test starts inherit it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL server for the whole session (pg_support.py says how it runs);
    skips the tests that use it where none can be started, fails them under CI."""
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a new, empty database of its own, dropped after the test."""
    url = pg_cluster.fresh_database()
    yield url
    pg_cluster.drop_database(url)


BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def any_location(request: pytest.FixtureRequest, tmp_path: Path) -> StateLocation:
    """A new, empty state on each backend in turn: an SQLite file, then a PostgreSQL database
    of its own (the `pg_url` fixture: skipped, or failed under CI, where no server can run)."""
    if request.param == "sqlite":
        return SqliteLocation(tmp_path / "state.db")
    return PostgresLocation(request.getfixturevalue("pg_url"))
