"""v1 events applied while a cycle is in progress: the walk may have listed a change before the
change's event is applied (cron's `run` drains its inbox before its burst; `serve` between
pages), and the event must still leave the catalog a fresh walk gives. Cases found by
differential fuzzing with events delivered between and during the bursts of a cycle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_events_v1 import SCHEMA, Scenario, event
from test_walk_v1 import PROVIDER, catalog, config_for, run, simulator, until_completed

from choreo_ingest.invocation import run_once
from choreo_ingest.models import entity_ref
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.store import Store

from sim_support import PausingProvider, expected_catalog, simulator_transport


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


def _http(port: int = 80) -> dict[str, Any]:
    return {"type": "HTTP", "port": port, "schema": SCHEMA}


def _events_take_zz_x_e_away(
    scenario: Scenario, component: str, events: Sequence[tuple[str, str]]
) -> None:
    """`events` (kind, action) about `component` and `zz-x-workload`, drained: the catalog has no
    `<project>-zz-x-e` API, and is what a walk of the world would give."""
    names = {"Component": component, "Workload": "zz-x-workload"}
    ns = scenario.namespace
    scenario.send(*(event(kind, names[kind], ns, action) for kind, action in events))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert scenario.ref("API", f"{scenario.project}-zz-x-e") not in found
    assert found == expected_catalog(scenario.world)


def _burst_until(scenario: Scenario, key: str) -> None:
    """A new cycle's first burst, ended right after the page that writes `key` (an entity's
    ref or an index row's key)."""
    config = scenario.config
    inner = OpenChoreoProvider(config, transport=simulator_transport(scenario.api))
    provider = PausingProvider(inner, scenario.clock, burst_length=config.incremental.burst_length)
    provider.pause_after = key
    scenario.clock.advance(config.incremental.rest_length + 1)
    assert config.state_path is not None
    [outcome] = run_once(
        config, config.state_path, scenario.clock, providers={PROVIDER: provider}
    ).providers
    assert not outcome.cycle_completed  # the walk is inside the workloads listing


@pytest.mark.parametrize("actions", [["deleted", "created"], ["created"]])
def test_a_workload_the_walk_listed_moved_before_its_event_still_takes_its_apis_along(
    scenario: Scenario, actions: list[str]
) -> None:
    """`zz-x-workload` (endpoint `e`) is made again for `zz-y` while a cycle is under way; the
    walk's workloads listing reads it, moved, before its events are applied (the listing of
    the components, which maps `zz-x` again, comes later). The events must still take `zz-x`'s
    API away: its indexed row, written over by the walk's page, no longer says it was `zz-x`'s."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, "zz-x", endpoints={"e": _http()})
    world.add_component(ns, project, "zz-y", endpoints={})
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-x", "zz-y")))
    scenario.drain()
    assert catalog(scenario.state_path)[scenario.ref("Component", "zz-x")] == {
        scenario.ref("API", f"{project}-zz-x-e")
    }
    world.delete_workload(ns, "zz-x-workload")
    world.add_workload(ns, "zz-x-workload", component="zz-y", endpoints={})

    _burst_until(scenario, f"{ns}/zz-x-workload")
    scenario.send(*(event("Workload", "zz-x-workload", ns, action) for action in actions))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert scenario.ref("API", f"{project}-zz-x-e") not in found
    assert found[scenario.ref("Component", "zz-x")] == set()
    assert found == expected_catalog(scenario.world)
    until_completed(scenario.config, scenario.api, scenario.clock)  # healed there before too
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


class ChangingMidRead:
    """The simulator, but the world changes (`change`) just before the first request whose
    path and query contain `before`: between two reads of one event."""

    def __init__(self, scenario: Scenario, before: str, change: Callable[[], None]) -> None:
        self._live = simulator_transport(scenario.api)
        self._before, self._change = before, change
        self.changed = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.changed and self._before in str(request.url):
            self.changed = True
            self._change()
        return self._live.handle_request(request)


def _zz_x_mirrored(scenario: Scenario) -> str:
    """`zz-x` (endpoint `e`) made in the scenario's project and mirrored by its event; returns
    another project of the namespace, for it to move to."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, "zz-x", endpoints={"e": _http()})
    scenario.send(event("Component", "zz-x", ns, "created"))
    scenario.drain()
    return next(
        p["metadata"]["name"] for p in world.v1_projects(ns) if p["metadata"]["name"] != project
    )


@pytest.mark.parametrize("during", [False, True], ids=["resting", "cycle-under-way"])
def test_a_component_moved_between_an_events_reads_leaves_no_api_in_its_old_project(
    scenario: Scenario, during: bool
) -> None:
    """An event for `zz-x` (in `project`) reads the component, then, before it lists its
    workloads, `zz-x` is made again in another project (its workload with it, which says the
    new project): the event writes `<project>-zz-x-e` as the component read had it, with rows
    that say the other project. The move's own events come next: the API in the old project
    must go, though no row says the component was there (the stored Component does). Applied
    while a cycle is under way, it was seen in that cycle: its end kept it too."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    other = _zz_x_mirrored(scenario)
    if during:
        _burst_until(scenario, f"{ns}/zz-x-workload")

    def move() -> None:
        world.delete_component(ns, project, "zz-x")
        world.add_component(ns, other, "zz-x", endpoints={"e": _http()})

    world.update_component(ns, project, "zz-x", {"annotations": {"backstage.io/owner": "t2"}})
    transport = ChangingMidRead(scenario, "workloads?component=zz-x", move)
    scenario.send(event("Component", "zz-x", ns, "updated"))
    _drain_through(scenario, transport)
    assert transport.changed
    scenario.send(
        event("Component", "zz-x", ns, "deleted"),
        event("Component", "zz-x", ns, "created"),
        event("Workload", "zz-x-workload", ns, "deleted"),
        event("Workload", "zz-x-workload", ns, "created"),
    )
    scenario.drain()

    found = catalog(scenario.state_path)
    assert scenario.ref("API", f"{project}-zz-x-e") not in found
    assert found == expected_catalog(scenario.world)
    if during:
        until_completed(scenario.config, scenario.api, scenario.clock)
        assert catalog(scenario.state_path) == expected_catalog(scenario.world)


def _drain_through(scenario: Scenario, handler: Callable[[httpx.Request], httpx.Response]) -> None:
    """`Scenario.drain`, the provider's requests answered by `handler`."""
    config = scenario.config
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(handler))
    assert config.state_path is not None
    result = run_once(config, config.state_path, scenario.clock, providers={PROVIDER: provider})
    assert result.events.parked == 0
    assert [outcome.action.value for outcome in result.providers] == ["waiting"]


def test_a_project_owner_the_walk_listed_before_its_event_still_reaches_its_components(
    scenario: Scenario,
) -> None:
    """The project's owner annotation changes while a cycle is under way; the walk's projects
    listing reads it (and writes the project's owner row) before the Project event is applied
    (the components listing, which maps the components again, comes later). The event must
    still map its components: those without an owner of their own take the project's, though
    the row no longer says the owner changed."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, "zz-x", endpoints={"e": _http()})
    scenario.send(event("Component", "zz-x", ns, "created"))
    scenario.drain()
    owner = "group:default/new-team"
    world.update_project(ns, project, {"annotations": {"backstage.io/owner": owner}})

    _burst_until(scenario, scenario.ref("System", project))
    scenario.send(event("Project", project, ns, "updated"))
    scenario.drain()

    found = _owners(scenario.state_path)
    assert found[scenario.ref("Component", "zz-x")] == owner
    assert found[scenario.ref("API", f"{project}-zz-x-e")] == owner
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


def _owners(state_path: Path) -> dict[str, str]:
    with Store.open(state_path, readonly=True) as store:
        return {
            entity_ref(b["kind"], b["metadata"]["namespace"], b["metadata"]["name"]): b["spec"].get(
                "owner"
            )
            for b in store.iter_entities()
        }


def test_a_project_owner_read_by_a_component_event_first_still_reaches_the_other_components(
    scenario: Scenario,
) -> None:
    """A cycle is under way and has not listed the projects yet; the project's owner changes,
    and `zz-y` changes too. `zz-y`'s event comes first: it reads the project, which this cycle
    has not listed (`_missing_project`), and writes its owner row. The Project event after it
    must still map `zz-x` (no owner of its own: it takes the project's), though the row it
    finds already holds the new owner."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    for name in ("zz-x", "zz-y"):
        world.add_component(ns, project, name, endpoints={"e": _http()})
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-x", "zz-y")))
    scenario.drain()
    _burst_until(scenario, entity_ref("Domain", "default", ns))  # the namespaces page only
    owner = "group:default/new-team"
    world.update_project(ns, project, {"annotations": {"backstage.io/owner": owner}})
    world.update_workload(ns, "zz-y-workload", {"endpoints": {"f": _http(81)}})

    scenario.send(
        event("Workload", "zz-y-workload", ns, "updated"),
        event("Project", project, ns, "updated"),
    )
    scenario.drain()

    found = _owners(scenario.state_path)
    assert found[scenario.ref("Component", "zz-x")] == owner
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)
    assert _owners(scenario.state_path) == _owners_walked(scenario)


def _owners_walked(scenario: Scenario) -> dict[str, str]:
    """`_owners` of a fresh walk of the same world."""
    path = scenario.state_path.parent / "fresh.db"
    walked = run(config_for(path), simulator(scenario.world, scenario.clock), scenario.clock)
    assert walked.providers[0].cycle_completed
    return _owners(path)


@pytest.mark.parametrize(
    "events",
    [
        [("Component", "deleted"), ("Component", "created")],
        [("Workload", "deleted"), ("Workload", "created")],
    ],
    ids=["component-events", "workload-events"],
)
def test_a_component_move_the_walk_mapped_before_its_events_leaves_no_api_in_its_old_project(
    scenario: Scenario, events: list[tuple[str, str]]
) -> None:
    """`zz-x` is made again in another project while a cycle is under way, and the walk lists
    its workload and maps it there (its components page) before the move's events are applied:
    the workload row and the stored Component both name the new project by then, and nothing
    the walk kept says where it was. The events must still take `<project>-zz-x-e` away, as
    they do when the walk has listed only the workload (`_stored_projects`)."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    other = _zz_x_mirrored(scenario)
    world.delete_component(ns, project, "zz-x")
    world.add_component(ns, other, "zz-x", endpoints={"e": _http()})

    _burst_until(scenario, scenario.ref("Component", "zz-x"))
    _events_take_zz_x_e_away(scenario, "zz-x", events)


def _a_b_gives_up_the_name_a_waits_on(scenario: Scenario) -> tuple[str, str]:
    """`a-b` + `c` holds `<project>-a-b-c`, `a` + `B-c` waits on it with a hashed API; then
    `a-b`'s workload drops `c` (no event yet). The plain ref `a` is to take, and its hashed one."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, "a-b", endpoints={"c": _http()})
    world.add_component(ns, project, "a", endpoints={"B-c": _http()})
    scenario.send(*(event("Component", c, ns, "created") for c in ("a-b", "a")))
    scenario.drain()
    plain = scenario.ref("API", f"{project}-a-B-c")
    [hashed] = catalog(scenario.state_path)[scenario.ref("Component", "a")]
    assert hashed != plain
    world.update_workload(ns, "a-b-workload", {"endpoints": {"e": _http()}})
    return plain, hashed


def test_an_api_name_given_up_in_a_workload_the_walk_listed_first_is_handed_on_by_its_event(
    scenario: Scenario,
) -> None:
    """`a-b` + `c` holds `<project>-a-b-c`, and `a` + `B-c` waits with a hashed name (the
    same name, but for case). `a-b`'s workload drops `c` while a cycle is under way, and the
    walk's workloads page lists it before the Workload event is applied: the row the event
    finds no longer has `c`. The event must still release `a-b`'s claim and hand the name on to
    `a` (its hashed API leaves), as a fresh walk names it; the cycle's end, and the next
    cycle, keep one API for `a`'s endpoint."""
    ns = scenario.namespace
    plain, hashed = _a_b_gives_up_the_name_a_waits_on(scenario)

    _burst_until(scenario, f"{ns}/a-b-workload")
    scenario.send(event("Workload", "a-b-workload", ns))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "a")] == {plain}
    assert hashed not in found
    assert found == expected_catalog(scenario.world)
    until_completed(scenario.config, scenario.api, scenario.clock)
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


def test_an_api_that_takes_its_plain_name_in_a_walks_page_leaves_its_hashed_name_there(
    scenario: Scenario,
) -> None:
    """As above, but the walk's components page maps `a-b` and `a` before the Workload event
    is applied: the page releases `a-b`'s claim (gone from its workload) and `a`'s API takes
    the plain name there. Its hashed API must leave with that page, not at the cycle's end
    (one endpoint, one API), and so must `a-b`'s `<project>-a-b-c` (one name but for case,
    two refs)."""
    ns, project = scenario.namespace, scenario.project
    plain, hashed = _a_b_gives_up_the_name_a_waits_on(scenario)

    _burst_until(scenario, scenario.ref("Component", "a"))

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", "a")] == {plain}
    assert hashed not in found
    assert scenario.ref("API", f"{project}-a-b-c") not in found
    scenario.send(event("Workload", "a-b-workload", ns))
    scenario.drain()
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


@pytest.mark.parametrize(
    "events",
    [
        [("Workload", "deleted")],
        [("Workload", "deleted"), ("Workload", "created"), ("Workload", "deleted")],
        [("Component", "updated")],
    ],
    ids=["deleted", "moved-and-deleted", "component-event"],
)
def test_a_workload_the_walk_listed_moved_then_deleted_still_leaves_the_component_it_left(
    scenario: Scenario, events: list[tuple[str, str]]
) -> None:
    """`zz-x-workload` (endpoint `e`) is made again for `zz-y` while a cycle is under way, and
    the walk's workloads page lists it there; then it is deleted, before any of its events is
    applied (the inbox keeps the last of one object's; or `zz-y`'s event stands in for them).
    The event reads a 404, and the row, written over by the page, leads to `zz-y` alone, which
    no longer lists it: `zz-x` must still lose its API and its workload annotation, as the row
    the page kept (`workload-left`) says it had them (the mid-cycle fuzzer's seeds 2141 and
    2159: mended only when the cycle completed)."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, "zz-x", endpoints={"e": _http()})
    world.add_component(ns, project, "zz-y", endpoints={})
    world.delete_workload(ns, "zz-y-workload")
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-x", "zz-y")))
    scenario.drain()
    world.delete_workload(ns, "zz-x-workload")
    world.add_workload(ns, "zz-x-workload", component="zz-y", endpoints={"f": _http(81)})

    _burst_until(scenario, f"{ns}/zz-x-workload")
    world.delete_workload(ns, "zz-x-workload")
    _events_take_zz_x_e_away(scenario, "zz-y", events)
    assert "openchoreo.io/workload" not in _annotations(scenario, "zz-x")
    until_completed(scenario.config, scenario.api, scenario.clock)
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


def _annotations(scenario: Scenario, component: str) -> dict[str, str]:
    ref = scenario.ref("Component", component)
    with Store.open(scenario.state_path, readonly=True) as store:
        [body] = [
            b
            for b in store.iter_entities()
            if entity_ref(b["kind"], b["metadata"]["namespace"], b["metadata"]["name"]) == ref
        ]
    annotations: dict[str, str] = body["metadata"].get("annotations", {})
    return annotations
