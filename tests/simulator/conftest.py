"""Fixtures for the simulator tests: a fake clock and the handler as an httpx transport."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from choreo_ingest.simulator.api import SimulatorApi, SimulatorOptions
from choreo_ingest.simulator.world import World

from sim_support import simulator_transport

BASE_URL = "http://simulator.test/api/v1"


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


@pytest.fixture
def simulate(clock: FakeClock) -> Iterator[SimulatorFactory]:
    """`simulate(world, **options)` -> (api, httpx.Client on it), on the fake clock."""
    clients: list[httpx.Client] = []

    def make(world: World, **options: object) -> tuple[SimulatorApi, httpx.Client]:
        api = SimulatorApi(world, SimulatorOptions(**options), clock)  # type: ignore[arg-type]
        client = httpx.Client(transport=simulator_transport(api), base_url=BASE_URL)
        clients.append(client)
        return api, client

    yield make
    for client in clients:
        client.close()
