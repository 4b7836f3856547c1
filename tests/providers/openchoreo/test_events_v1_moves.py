"""v1 events leave the catalog a fresh walk gives, when workloads move between components and
API names change hands: cases found by differential fuzzing (the catalog events leave against
a fresh walk's, over the simulator's world), each kept as the shortest sequence that showed it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import MemoryIndex
from test_events_v1 import SCHEMA, Scenario, event
from test_walk_v1 import catalog, config_for, run, simulator

from choreo_ingest.models import Delta, IndexEntry
from choreo_ingest.providers.openchoreo import api_names, events_v1
from choreo_ingest.providers.openchoreo.generation import Walk
from choreo_ingest.providers.openchoreo.resources_v1 import WORKLOADS
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


def _deliver(scenario: Scenario, bodies: list[dict[str, Any]], *, apart: bool) -> None:
    """The events in one batch, or each drained before the next is sent."""
    for batch in [[body] for body in bodies] if apart else [bodies]:
        scenario.send(*batch)
        scenario.drain()


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

    _deliver(scenario, bodies, apart=drained_apart)

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

    _deliver(scenario, bodies, apart=drained_apart)

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

    _deliver(scenario, bodies, apart=drained_apart)

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "zz-x")] == set()
    assert found == expected_catalog(scenario.world)
    assert _bodies(scenario.state_path) == _fresh_walk(scenario)


def _collision(scenario: Scenario) -> None:
    """`(p, a, b-c)` holds `p-a-b-c`; `(p-a, b, c)` waits (hashed). `b` has a second workload
    `b-zz` (no endpoints; `b-workload` sorts first and gives `b` its API)."""
    ns, world = scenario.namespace, scenario.world
    for project in ("p", "p-a"):
        world.add_project(ns, project)
    world.add_component(ns, "p-a", "b", endpoints={"c": _http()})
    world.add_workload(ns, "b-zz", component="b", endpoints={})
    world.add_component(ns, "p", "a", endpoints={"b-c": _http()})
    scenario.send(
        *(event("Project", p, ns, "created") for p in ("p", "p-a")),
        *(event("Component", c, ns, "created") for c in ("b", "a")),
    )
    scenario.drain()
    assert _bodies(scenario.state_path) == _fresh_walk(scenario)


def test_a_waiting_claimant_mapped_earlier_in_the_same_event_takes_the_name_freed_later(
    scenario: Scenario,
) -> None:
    """`b-zz` moves from `b` to `a`, and `a-workload` (endpoint `b-c`) goes: `a` gives up
    `p-a-b-c`. `a`'s event maps `b` first (the workload left it), which claims `c` again while
    `a` still holds the name; then `a` releases it, and `b`, the claim that waits on it now,
    is mapped again and takes it."""
    ns, world = scenario.namespace, scenario.world
    _collision(scenario)
    world.delete_workload(ns, "a-workload")
    world.delete_workload(ns, "b-zz")
    world.add_workload(ns, "b-zz", component="a", endpoints={})

    scenario.send(
        event("Component", "a", ns, "updated"),
        event("Workload", "a-workload", ns, "deleted"),
        event("Workload", "b-zz", ns, "deleted"),
        event("Workload", "b-zz", ns, "created"),
    )
    scenario.drain()

    assert catalog(scenario.state_path)[scenario.ref("Component", "b")] == {
        scenario.ref("API", "p-a-b-c")
    }
    assert _bodies(scenario.state_path) == _fresh_walk(scenario)


def test_an_api_upserted_by_an_earlier_part_of_the_event_and_lost_by_a_later_one_leaves(
    scenario: Scenario,
) -> None:
    """`(p-a, b, C)` holds `p-a-b-C`. `b-zz` moves from `b` to `a` (whose only workload it
    becomes) with endpoint `b-c`: `(p, a, b-c)`, without capitals, takes the name. `a`'s event
    maps `b` first, which upserts `p-a-b-C`; then `a`, which displaces `b` and removes that
    ref: it leaves (the store keeps any ref a delta upserts, so the merge drops it)."""
    ns, world = scenario.namespace, scenario.world
    for project in ("p", "p-a"):
        world.add_project(ns, project)
    world.add_component(ns, "p-a", "b", endpoints={"C": _http()})
    world.add_workload(ns, "b-zz", component="b", endpoints={})
    world.add_component(ns, "p", "a", endpoints={})
    scenario.send(
        *(event("Project", p, ns, "created") for p in ("p", "p-a")),
        *(event("Component", c, ns, "created") for c in ("b", "a")),
    )
    scenario.drain()
    assert _bodies(scenario.state_path) == _fresh_walk(scenario)
    world.delete_workload(ns, "a-workload")
    world.delete_workload(ns, "b-zz")
    world.add_workload(ns, "b-zz", component="a", endpoints={"b-c": _http()})

    scenario.send(event("Component", "a", ns, "updated"))
    scenario.drain()

    assert _bodies(scenario.state_path) == _fresh_walk(scenario)


def test_components_that_swap_workloads_release_the_names_they_gave_up(
    scenario: Scenario,
) -> None:
    """`a` (holding `p-a-b-c`) and `x` swap workloads (each made again for the other):
    `a`'s event maps `x` first, which takes `a-workload`'s row into its group; `a`, mapped on
    that overlay, has no indexed workload left, but its claims are those of the workloads it
    had before the event: released, and `(p-a, b, c)` takes the name, as a walk gives it."""
    ns, world = scenario.namespace, scenario.world
    _collision(scenario)
    world.add_component(ns, "p", "x", endpoints={"q": _http()})
    scenario.send(event("Component", "x", ns, "created"))
    scenario.drain()
    world.delete_workload(ns, "a-workload")
    world.delete_workload(ns, "x-workload")
    world.add_workload(ns, "a-workload", component="x", endpoints={"q": _http()})
    world.add_workload(ns, "x-workload", component="a", endpoints={})

    scenario.send(
        event("Component", "a", ns, "updated"),
        event("Component", "x", ns, "updated"),
        *(
            event("Workload", w, ns, a)
            for w in ("a-workload", "x-workload")
            for a in ("deleted", "created")
        ),
    )
    scenario.drain()

    with closing(sqlite3.connect(scenario.state_path)) as conn:  # `with` alone leaves it open
        held = conn.execute(
            "SELECT key FROM provider_index WHERE tbl = 'api-name' AND key LIKE '%|p/a/b-c'"
        ).fetchall()
    assert held == []  # `a` has no endpoint `b-c` any more

    assert _bodies(scenario.state_path) == _fresh_walk(scenario)


LINKS = 1200


def test_a_long_chain_of_moved_workloads_is_mapped_without_recursing_per_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`c<i>`'s workload `w<i-1>` was `c<i-1>`'s (each made again for the next component): the
    chain is mapped from its end, a work list and not a call per link (which ran out of stack
    at about a thousand)."""
    index = MemoryIndex()
    index.apply(
        [IndexEntry(WORKLOADS, f"ns/w{i}", f"ns/c{i}", {"spec": {}}) for i in range(LINKS + 1)]
    )

    def component_delta(walk: Walk, namespace: str, component: str) -> Delta:
        i = int(component[1:])
        rows = [IndexEntry(WORKLOADS, f"ns/w{i}")]
        if i:
            rows.append(IndexEntry(WORKLOADS, f"ns/w{i - 1}", f"ns/c{i}", {"spec": {}}))
        return Delta(index=rows)

    monkeypatch.setattr(events_v1, "_component_delta", component_delta)
    monkeypatch.setattr(api_names, "waiting_claimants", lambda walk, index: [])
    walk = Walk(None, None, index, None, "openchoreo", None)  # type: ignore[arg-type]

    delta = events_v1._component_event_delta(walk, "ns", f"c{LINKS}")

    assert {row.group for row in delta.index if row.value is not None} == {
        f"ns/c{i}" for i in range(1, LINKS + 1)
    }
