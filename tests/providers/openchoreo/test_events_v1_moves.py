"""v1 events leave the catalog a fresh walk gives, when workloads move between components and
API names change hands: cases found by differential fuzzing (the catalog events leave against
a fresh walk's, over the simulator's world), each kept as the shortest sequence that showed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_events_v1 import SCHEMA, Scenario, event
from test_walk_v1 import catalog, config_for, run, simulator

from choreo_ingest.store import Store

from sim_support import expected_catalog


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


def _http(port: int = 80) -> dict[str, Any]:
    return {"type": "HTTP", "port": port, "schema": SCHEMA}


def _bodies(path: Path) -> dict[str, Any]:
    with Store.open(path, readonly=True) as store:
        return {
            f"{b['kind']}:{b['metadata']['namespace']}/{b['metadata']['name']}": (
                b["metadata"],
                b["spec"],
            )
            for b in store.iter_entities()
        }


def _fresh_walk(scenario: Scenario) -> dict[str, Any]:
    """Every entity body a fresh full cycle of the same world writes."""
    path = scenario.state_path.parent / f"fresh-{scenario.clock.now()}.db"
    api = simulator(scenario.world, scenario.clock)
    assert run(config_for(path), api, scenario.clock).providers[0].cycle_completed
    return _bodies(path)


def _moved_workload(scenario: Scenario, endpoints: dict[str, Any]) -> None:
    """`zz-x` (with `endpoints`) and `zz-y` (none) mirrored; then `zz-x-workload` is deleted
    and made again under its name for `zz-y` (where it sorts first)."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, "zz-x", endpoints=endpoints)
    world.add_component(ns, project, "zz-y", endpoints={})
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-x", "zz-y")))
    scenario.drain()
    world.delete_workload(ns, "zz-x-workload")
    world.add_workload(ns, "zz-x-workload", component="zz-y", endpoints={})


@pytest.mark.parametrize("drained_apart", [False, True], ids=["one-batch", "drained-apart"])
@pytest.mark.parametrize(
    "events",
    [["updated", "created"], ["created", "deleted", "created"]],
    ids=["component-then-workload", "component-then-both-workload-events"],
)
def test_a_component_event_before_a_moved_workloads_own_takes_its_apis_from_the_one_it_left(
    scenario: Scenario, events: list[str], drained_apart: bool
) -> None:
    """The Component event of the one the workload joined comes first (a component made and
    given a workload), and re-links the workload to `zz-y`: the Workload events after it no
    longer find `zz-x` through the stored link, so that event maps `zz-x` first."""
    ns = scenario.namespace
    _moved_workload(scenario, {"e": _http()})
    component_action, *workload_actions = events
    bodies = [event("Component", "zz-y", ns, component_action)]
    bodies += [event("Workload", "zz-x-workload", ns, action) for action in workload_actions]

    if drained_apart:
        for body in bodies:
            scenario.send(body)
            scenario.drain()
    else:
        scenario.send(*bodies)
        scenario.drain()

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "zz-x")] == set()
    assert found == expected_catalog(scenario.world)


def test_a_moved_workload_without_apis_leaves_no_workload_annotation_behind(
    scenario: Scenario,
) -> None:
    """The same without endpoints: `zz-x` keeps no `openchoreo.io/workload` annotation, as a
    walk writes none (the APIs alone would agree either way)."""
    ns = scenario.namespace
    _moved_workload(scenario, {})

    scenario.send(
        event("Component", "zz-y", ns, "created"), event("Workload", "zz-x-workload", ns, "created")
    )
    scenario.drain()

    assert _bodies(scenario.state_path) == _fresh_walk(scenario)


def test_a_component_made_again_elsewhere_whose_workload_moved_leaves_no_orphan_api(
    scenario: Scenario,
) -> None:
    """`zz-x` (endpoint `e`) is made again in another project, its workload made again for
    `zz-y`; the Component events, `zz-y`'s first, in one batch: the API `<old project>-zz-x-e`
    leaves (`zz-y`'s event maps `zz-x` while its row still says where it was)."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    other = next(
        p["metadata"]["name"] for p in world.v1_projects(ns) if p["metadata"]["name"] != project
    )
    world.add_component(ns, project, "zz-x", endpoints={"e": _http()})
    world.add_component(ns, project, "zz-y", endpoints={})
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-x", "zz-y")))
    scenario.drain()
    world.delete_component(ns, project, "zz-x")
    world.add_component(ns, other, "zz-x", endpoints={})
    world.delete_workload(ns, "zz-x-workload")
    world.add_workload(ns, "zz-x-workload", component="zz-y", endpoints={})

    scenario.send(
        event("Component", "zz-y", ns, "updated"), event("Component", "zz-x", ns, "created")
    )
    scenario.drain()

    found = catalog(scenario.state_path)
    assert scenario.ref("API", f"{project}-zz-x-e") not in found
    assert found == expected_catalog(scenario.world)


@pytest.mark.parametrize("drained_apart", [False, True], ids=["one-batch", "drained-apart"])
def test_a_workload_event_of_the_joined_component_first_takes_the_moved_ones_apis_along(
    scenario: Scenario, drained_apart: bool
) -> None:
    """Only Workload events, one per changed object: `zz-y`'s own workload changed, and
    `zz-x-workload` moved to `zz-y`. The first event maps `zz-y`, whose listing has the moved
    workload already, and re-links it: it maps `zz-x` first, as that workload's own would."""
    ns, world = scenario.namespace, scenario.world
    _moved_workload(scenario, {"e": _http()})
    world.update_workload(ns, "zz-y-workload", {"endpoints": {"f": _http(81)}})
    bodies = [
        event("Workload", "zz-y-workload", ns, "updated"),
        event("Workload", "zz-x-workload", ns, "deleted"),
        event("Workload", "zz-x-workload", ns, "created"),
    ]

    if drained_apart:
        for body in bodies:
            scenario.send(body)
            scenario.drain()
    else:
        scenario.send(*bodies)
        scenario.drain()

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "zz-x")] == set()
    assert found == expected_catalog(scenario.world)


def test_two_workloads_moved_to_one_component_take_both_ones_apis_along(
    scenario: Scenario,
) -> None:
    """Two workloads made again for one component `zz-y`; their Workload events, in the order
    of the changes, in one batch: the first maps `zz-y`, whose listing holds the second
    already, and with it both components they left."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, "zz-x1", endpoints={"e": _http()})
    world.add_component(ns, project, "zz-x2", endpoints={"f": _http()})
    world.add_component(ns, project, "zz-y", endpoints={})
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-x1", "zz-x2", "zz-y")))
    scenario.drain()
    for name in ("zz-x1-workload", "zz-x2-workload"):
        world.delete_workload(ns, name)
        world.add_workload(ns, name, component="zz-y", endpoints={})

    scenario.send(
        *(
            event("Workload", name, ns, action)
            for name in ("zz-x1-workload", "zz-x2-workload")
            for action in ("deleted", "created")
        )
    )
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "zz-x2")] == set()
    assert found == expected_catalog(scenario.world)


@pytest.mark.parametrize("how", ["endpoint-removed", "component-deleted"])
def test_an_api_name_freed_by_its_holder_goes_to_the_claim_that_waited(
    scenario: Scenario, how: str
) -> None:
    """Project `p` component `a` endpoint `b-c` and project `p-a` component `b` endpoint `c`
    both map to `p-a-b-c`; `(p, a, b-c)` sorts first and holds it. When the holder gives it up
    (its endpoint removed, or it is deleted), only its own events come (`b` did not change):
    they map `b` again, which takes `p-a-b-c` from its hashed name, as a walk names it."""
    ns, world = scenario.namespace, scenario.world
    for project in ("p", "p-a"):
        world.add_project(ns, project)
    world.add_component(ns, "p-a", "b", endpoints={"c": _http()})
    world.add_component(ns, "p", "a", endpoints={"b-c": _http()})
    scenario.send(
        *(event("Project", p, ns, "created") for p in ("p", "p-a")),
        *(event(k, n, ns, "created") for k, n in (("Component", "b"), ("Workload", "b-workload"))),
        *(event(k, n, ns, "created") for k, n in (("Component", "a"), ("Workload", "a-workload"))),
    )
    scenario.drain()
    assert _bodies(scenario.state_path) == _fresh_walk(scenario)  # `a` holds it, `b` hashed
    plain = scenario.ref("API", "p-a-b-c")
    assert catalog(scenario.state_path)[scenario.ref("Component", "a")] == {plain}

    if how == "endpoint-removed":
        world.update_workload(ns, "a-workload", {"endpoints": {}})
        scenario.send(event("Workload", "a-workload", ns, "updated"))
    else:
        world.delete_component(ns, "p", "a")
        scenario.send(
            event("Component", "a", ns, "deleted"), event("Workload", "a-workload", ns, "deleted")
        )
    scenario.drain()

    assert catalog(scenario.state_path)[scenario.ref("Component", "b")] == {plain}
    assert _bodies(scenario.state_path) == _fresh_walk(scenario)


@pytest.mark.parametrize("drained_apart", [False, True], ids=["one-batch", "drained-apart"])
def test_workloads_moved_along_a_chain_take_each_components_apis_along(
    scenario: Scenario, drained_apart: bool
) -> None:
    """`zz-y`'s workload goes to `zz-z`, and `zz-x`'s to `zz-y`: the first event maps `zz-y`
    (the component its workload left), whose listing holds `zz-x`'s already, so `zz-x` is
    mapped before it in turn; the second event finds every row where it belongs."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, "zz-x", endpoints={"e": _http()})
    world.add_component(ns, project, "zz-y", endpoints={"f": _http()})
    world.add_component(ns, project, "zz-z", endpoints={})
    world.delete_workload(ns, "zz-z-workload")
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-x", "zz-y", "zz-z")))
    scenario.drain()
    for name, joined in (("zz-y-workload", "zz-z"), ("zz-x-workload", "zz-y")):
        endpoints = {"e": _http()} if name == "zz-x-workload" else {"f": _http()}
        world.delete_workload(ns, name)
        world.add_workload(ns, name, component=joined, endpoints=endpoints)
    bodies = [
        event("Workload", name, ns, action)
        for name in ("zz-y-workload", "zz-x-workload")
        for action in ("deleted", "created")
    ]

    for batch in [[body] for body in bodies] if drained_apart else [bodies]:
        scenario.send(*batch)
        scenario.drain()

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "zz-x")] == set()
    assert found == expected_catalog(scenario.world)
    assert _bodies(scenario.state_path) == _fresh_walk(scenario)
