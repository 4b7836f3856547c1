"""The order of the v1 walk: every namespace's projects, then each namespace's workloads and
components before the next namespace's, so that a first cycle brings a namespace's components as
soon as its own workloads are listed; and a cycle an older release began phase by phase is
finished phase by phase."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_walk_v1 import config_for, simulator

from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.simulator import SimulatorApi, World

from fakes import FakeClock
from sim_support import expected_catalog, simulator_transport

WALKED_TOGETHER = ("workloads", "components")
PAGES = 200
"""More than a cycle of the test's world takes, two items a page."""


def listings(api: SimulatorApi, since: int = 0) -> list[str]:
    """The listings asked for from request `since` on, in order, each run of pages once."""
    order: list[str] = []
    for request in api.request_log[since:]:
        path = request.path.removeprefix("/api/v1")
        if request.method == "GET" and path.startswith("/namespaces") and order[-1:] != [path]:
            order.append(path)
    return order


def projects(namespaces: list[str]) -> list[str]:
    return [f"/namespaces/{ns}/projects" for ns in namespaces]


def by_namespace(namespaces: list[str]) -> list[str]:
    return [f"/namespaces/{ns}/{what}" for ns in namespaces for what in WALKED_TOGETHER]


def phase_by_phase(namespaces: list[str]) -> list[str]:
    return [f"/namespaces/{ns}/{what}" for what in WALKED_TOGETHER for ns in namespaces]


def cycle(namespaces: list[str]) -> list[str]:
    return ["/namespaces", *projects(namespaces), *by_namespace(namespaces)]


def catalog_of(engine: Any) -> dict[str, set[str]]:
    return {
        ref: set(entity.body["spec"].get("providesApis", []))
        for ref, entity in engine.entities.items()
    }


def namespaces_of(world: World) -> list[str]:
    return [namespace["metadata"]["name"] for namespace in world.v1_namespaces()]


Walked = tuple[World, SimulatorApi, Any]
"""The world, its simulator, and the fake engine walking it two items a page."""


@pytest.fixture
def walked(tmp_path: Path, fake_engine: Callable[..., Any]) -> Walked:
    clock = FakeClock()
    world = World.generate(3, 2, 6, seed=11)
    api = simulator(world, clock)
    config = config_for(tmp_path / "state.db", chunk_size=2)
    provider = OpenChoreoProvider(config, transport=simulator_transport(api))
    return world, api, fake_engine(provider, clock, config)


def test_each_namespace_is_walked_whole_before_the_next(walked: Walked) -> None:
    world, api, engine = walked
    namespaces = sorted(namespaces_of(world))
    first, second = namespaces[0], namespaces[1]
    first_components = {
        ref for ref in expected_catalog(world) if ref.startswith(("component:", "api:"))
        and ref.split(":")[1].startswith(f"{first}/")
    }  # fmt: skip
    held_when_second_began: list[set[str]] = []

    def note(_: int) -> None:
        if not held_when_second_began and f"/namespaces/{second}/workloads" in listings(api):
            held_when_second_began.append(set(engine.entities))

    engine.run(between_pages=note)

    assert listings(api) == cycle(namespaces)
    assert first_components
    assert held_when_second_began[0] >= first_components
    assert catalog_of(engine) == expected_catalog(world)


def test_a_cycle_an_older_release_began_is_finished_phase_by_phase(walked: Walked) -> None:
    """Its cursor names a phase plainly (`workloads`): its position counts the namespaces whose
    workloads are listed, not whose components are too. Read by namespace, the components of
    the namespaces before it would be skipped and swept; finished phase by phase, nothing is."""
    world, api, engine = walked
    for _ in range(PAGES):
        engine.page()
        if engine.cursor["phase"] == "namespaces/workloads":
            break
    assert engine.cursor["position"] == -1  # within the first namespace's workloads
    engine.cursor = {**engine.cursor, "phase": "workloads"}  # as an older release stored it
    asked = len(api.request_log)
    plain: list[tuple[str, int]] = []

    engine.run(between_pages=lambda _: plain.append(
        (engine.cursor["phase"], engine.cursor["position"])))  # fmt: skip

    namespaces = sorted(namespaces_of(world))
    assert listings(api, asked) == phase_by_phase(namespaces)
    assert {phase for phase, position in plain if position >= 0} == {"workloads", "components"}
    assert catalog_of(engine) == expected_catalog(world)
    next_cycle = len(api.request_log)
    engine.run()
    assert listings(api, next_cycle) == cycle(namespaces)


def test_a_stop_between_any_two_pages_asks_for_no_page_twice_and_misses_none(
    walked: Walked,
) -> None:
    """Each page in a burst of its own, as if every call were killed after its first commit:
    the stored cursor alone says which namespace and which of its listings comes next."""
    world, api, engine = walked
    pages = 0
    while not (engine.results and engine.results[-1].done) and pages < PAGES:
        engine.page()
        pages += 1

    asked = [r for r in api.request_log if r.path.startswith("/api/v1/namespaces")]
    assert len(asked) == pages
    assert len({(r.path, tuple(r.query.get("cursor", []))) for r in asked}) == pages
    assert listings(api) == cycle(sorted(namespaces_of(world)))
    assert catalog_of(engine) == expected_catalog(world)
