"""Fixtures for the simulator tests: a fake clock and the handler as an httpx transport.

`simulate` serves the organization-era API (`api="orgs"`), which the older tests exercise;
`simulate_v1` serves OpenChoreo v1. Both build clients on `BASE_URL` (`/api/v1`), so v1 paths
read `/namespaces/...`; `ROOT_URL` reaches the public routes and the token endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from choreo_ingest.simulator.api import SimulatorApi, SimulatorOptions
from choreo_ingest.simulator.world import World

from sim_support import simulator_transport

BASE_URL = "http://simulator.test/api/v1"
ROOT_URL = "http://simulator.test"


class FakeClock:
    """A clock that only moves when told to (or when something sleeps on it)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._monotonic = 1_000.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            self._monotonic += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def small_world() -> World:
    return World.generate(orgs=3, projects=3, components=12, seed=7, hidden_fraction=0.2)


SimulatorFactory = Callable[..., tuple[SimulatorApi, httpx.Client]]


def _factory(clock: FakeClock, api: str, clients: list[httpx.Client]) -> SimulatorFactory:
    def make(world: World, **options: object) -> tuple[SimulatorApi, httpx.Client]:
        settings = {"api": api, **options}
        simulator = SimulatorApi(world, SimulatorOptions(**settings), clock)  # type: ignore[arg-type]
        client = httpx.Client(transport=simulator_transport(simulator), base_url=BASE_URL)
        clients.append(client)
        return simulator, client

    return make


@pytest.fixture
def simulate(clock: FakeClock) -> Iterator[SimulatorFactory]:
    """`simulate(world, **options)` -> (api, httpx.Client on it): org-era, on the fake clock."""
    clients: list[httpx.Client] = []
    yield _factory(clock, "orgs", clients)
    for client in clients:
        client.close()


@pytest.fixture
def simulate_v1(clock: FakeClock) -> Iterator[SimulatorFactory]:
    """`simulate_v1(world, **options)` -> (api, httpx.Client on it): v1, on the fake clock."""
    clients: list[httpx.Client] = []
    yield _factory(clock, "v1", clients)
    for client in clients:
        client.close()
