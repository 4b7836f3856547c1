"""v1 events (the event forwarder's `{kind, name, namespace, action}`): each re-reads what it
names whatever `action` says; 404 means gone. Driven through `event` storage and `run`, against
the simulator's v1 API, after a completed cycle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from test_walk_v1 import PROVIDER, catalog, config_for, run, simulator

from choreo_ingest.config import Config
from choreo_ingest.event_input import parse_events
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import SETTLE_SECONDS
from choreo_ingest.models import entity_ref
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.providers.openchoreo.overtaken import EVENT_MARKS
from choreo_ingest.simulator import SimulatorApi, World
from choreo_ingest.store import Store

from fakes import FakeClock
from sim_support import expected_catalog

SCHEMA = {"type": "openapi", "content": "openapi: 3.0.0\ninfo: {title: x, version: '1'}\n"}


def event(kind: str, name: str, namespace: str, action: str = "updated") -> dict[str, Any]:
    return {"kind": kind, "name": name, "namespace": namespace, "action": action}


class Scenario:
    """A world mirrored by one completed cycle; then the world changes and events arrive."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.world = World.generate(2, 2, 4, seed=11)
        self.api: SimulatorApi = simulator(self.world, self.clock)
        self.config: Config = config_for(tmp_path / "state.db")
        self.state_path = tmp_path / "state.db"
        assert run(self.config, self.api, self.clock).providers[0].cycle_completed
        self.namespace = next(self.world.v1_namespaces())["metadata"]["name"]
        self.project = next(self.world.v1_projects(self.namespace))["metadata"]["name"]

    def send(self, *bodies: dict[str, Any]) -> int:
        """Queue events as `choreo-ingest event` would; returns how many were ignored."""
        provider = OpenChoreoProvider(self.config)
        parsed = parse_events(json.dumps(list(bodies)), provider)
        assert parsed.rejected == []
        stored_events(self.state_path, PROVIDER, parsed.valid, self.clock, ignored=parsed.ignored)
        self.clock.advance(SETTLE_SECONDS)  # an `updated` event waits that long
        return parsed.ignored

    def drain(self) -> None:
        """A `run` while the provider rests: it applies the inbox and bursts nowhere."""
        self.api.reset_stats()
        result = run(self.config, self.api, self.clock, force=False)
        assert result.events.parked == 0, result.events
        assert [outcome.action for outcome in result.providers] == ["waiting"]

    def ref(self, kind: str, name: str) -> str:
        return entity_ref(kind, self.namespace, name)


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


def test_new_component_arrives_with_its_apis(scenario: Scenario) -> None:
    endpoints = {"rest": {"type": "HTTP", "port": 80, "schema": SCHEMA}}
    scenario.world.add_component(
        scenario.namespace, scenario.project, "zz-new", endpoints=endpoints
    )

    scenario.send(event("Component", "zz-new", scenario.namespace, "created"))
    scenario.drain()

    assert catalog(scenario.state_path) == expected_catalog(scenario.world)
    assert scenario.api.stats.requests_by_route.get("get_component") == 1
    assert scenario.api.stats.requests_by_route.get("list_workloads") == 1


@pytest.mark.parametrize("action", ["patched", "Updated", "resynced"])
def test_an_event_of_any_action_re_reads_what_it_names(scenario: Scenario, action: str) -> None:
    """OpenChoreo's own provider ignores `action`: the read says what is there (404: gone)."""
    endpoints = {"rest": {"type": "HTTP", "port": 80, "schema": SCHEMA}}
    scenario.world.add_component(
        scenario.namespace, scenario.project, "zz-new", endpoints=endpoints
    )

    scenario.send(event("Component", "zz-new", scenario.namespace, action))
    scenario.drain()

    assert scenario.ref("Component", "zz-new") in catalog(scenario.state_path)
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)
    scenario.world.delete_component(scenario.namespace, scenario.project, "zz-new")

    scenario.send(event("Component", "zz-new", scenario.namespace, action))
    scenario.drain()

    assert scenario.ref("Component", "zz-new") not in catalog(scenario.state_path)
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


def test_workload_change_recomputes_its_components_apis(scenario: Scenario) -> None:
    component = next(scenario.world.v1_components(scenario.namespace))
    name = component["metadata"]["name"]
    [workload, *_] = sorted(
        scenario.world.v1_workloads(scenario.namespace, name), key=lambda w: w["metadata"]["name"]
    ) or [None]
    if workload is None:
        scenario.world.add_workload(scenario.namespace, f"{name}-w", component=name)
        workload_name = f"{name}-w"
    else:
        workload_name = workload["metadata"]["name"]
    new = {"fresh": {"type": "gRPC", "port": 9000, "schema": {"type": "proto", "content": "x"}}}
    scenario.world.update_workload(scenario.namespace, workload_name, {"endpoints": new})

    scenario.send(event("Workload", workload_name, scenario.namespace))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found == expected_catalog(scenario.world)
    assert any("fresh" in api for api in found[scenario.ref("Component", name)])


def test_a_workloads_new_dependency_reaches_its_components_consumed_apis(
    scenario: Scenario,
) -> None:
    ns, world = scenario.namespace, scenario.world
    served = {"rest": {"type": "HTTP", "port": 80, "schema": SCHEMA}}
    world.add_component(ns, scenario.project, "zz-target", endpoints=served)
    world.add_component(ns, scenario.project, "zz-user", endpoints={})
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-target", "zz-user")))
    scenario.drain()
    [load] = world.v1_workloads(ns, "zz-user")
    needs = {"endpoints": [{"component": "zz-target", "name": "rest"}]}
    world.update_workload(ns, load["metadata"]["name"], {"dependencies": needs})

    scenario.send(event("Workload", load["metadata"]["name"], ns))
    scenario.drain()

    user = _body(scenario, scenario.ref("Component", "zz-user"))
    provided = catalog(scenario.state_path)[scenario.ref("Component", "zz-target")]
    assert user["spec"]["consumesApis"] == sorted(provided)
    assert len(provided) == 1


def test_deleted_workload_is_found_through_the_stored_link(scenario: Scenario) -> None:
    """The workload answers 404, so only the index knows which component it belonged to."""
    with_apis = [
        ref for ref, apis in catalog(scenario.state_path).items()
        if ref.startswith(f"component:{scenario.namespace}/") and apis
    ]  # fmt: skip
    assert with_apis, "the seeded world should give some component an API"
    name = with_apis[0].rpartition("/")[2]
    for workload in list(scenario.world.v1_workloads(scenario.namespace, name)):
        scenario.world.delete_workload(scenario.namespace, workload["metadata"]["name"])
    gone = sorted(catalog(scenario.state_path)[with_apis[0]])

    for workload_name in set(_indexed_workloads(scenario, name)):
        scenario.send(event("Workload", workload_name, scenario.namespace, "deleted"))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found[with_apis[0]] == set()
    assert not set(gone) & set(found)
    assert found == expected_catalog(scenario.world)


@pytest.mark.parametrize(
    "events", [["deleted", "created"], ["created"]], ids=["both-events", "only-the-last"]
)
def test_a_workload_made_again_for_another_component_leaves_the_one_it_left(
    scenario: Scenario, events: list[str]
) -> None:
    """A workload's owner is immutable, so it moves by being deleted and made again under its
    name: the component it left drops the APIs it served, whichever events arrive (the
    forwarder's `deleted` may be lost, or coalesced with the `created` after it)."""
    ns, world = scenario.namespace, scenario.world
    name, apis, project = _component_with_apis(scenario)
    served = {"moved": {"type": "HTTP", "port": 80, "schema": SCHEMA}}
    world.add_component(ns, project, "zz-heir", endpoints={})
    scenario.send(event("Component", "zz-heir", ns, "created"))
    scenario.drain()
    [workload, *_] = _indexed_workloads(scenario, name)
    world.delete_workload(ns, workload)
    world.add_workload(ns, workload, component="zz-heir", endpoints=served)

    scenario.send(*(event("Workload", workload, ns, action) for action in events))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found == expected_catalog(scenario.world)
    assert not apis & set(found)
    assert found[scenario.ref("Component", "zz-heir")] == {f"api:{ns}/{project}-zz-heir-moved"}
    assert workload in _indexed_workloads(scenario, "zz-heir")
    assert workload not in _indexed_workloads(scenario, name)


def _http(port: int) -> dict[str, Any]:
    return {"type": "HTTP", "port": port, "schema": SCHEMA}


@pytest.mark.parametrize("apart", [False, True], ids=["one-event", "deleted-then-created"])
@pytest.mark.parametrize(
    ("left", "joined", "left_endpoint", "joined_endpoint"),
    [("zz-a-b", "zz-a", "c", "b-c"), ("zz-a", "zz-a-b", "b-c", "c")],
    ids=["the-one-it-joined-takes-the-name", "the-one-it-left-frees-the-name"],
)
def test_a_workload_that_moves_between_components_whose_api_names_clash(
    scenario: Scenario,
    left: str,
    joined: str,
    left_endpoint: str,
    joined_endpoint: str,
    apart: bool,
) -> None:
    """`zz-a-b`'s endpoint `c` and `zz-a`'s `b-c` make one plain API name. Moved (deleted and
    made again under its name), the workload's name claim follows it: the one it left neither
    keeps an API under a hashed name nor holds the name for the rest of the cycle."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, left, endpoints={left_endpoint: _http(80)})
    world.add_component(ns, project, joined, endpoints={})
    world.delete_workload(ns, f"{joined}-workload")  # the one that comes is its first by name
    scenario.send(*(event("Component", c, ns, "created") for c in (left, joined)))
    scenario.drain()
    moved = f"{left}-workload"
    plain = f"api:{ns}/{project}-zz-a-b-c"
    assert plain in catalog(scenario.state_path)[scenario.ref("Component", left)]

    world.delete_workload(ns, moved)
    if apart:
        scenario.send(event("Workload", moved, ns, "deleted"))
        scenario.drain()
    world.add_workload(ns, moved, component=joined, endpoints={joined_endpoint: _http(80)})
    scenario.send(event("Workload", moved, ns, "created"))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found == expected_catalog(scenario.world)
    assert found[scenario.ref("Component", joined)] == {plain}
    assert found[scenario.ref("Component", left)] == set()


@pytest.mark.parametrize(
    ("left", "joined", "left_endpoint", "joined_endpoint"),
    [("zz-a-b", "zz-a", "c", "b-c"), ("zz-a", "zz-a-b", "b-c", "c")],
    ids=["the-one-it-joined-takes-the-name", "the-one-it-left-frees-the-name"],
)
def test_a_component_event_of_the_one_a_workload_joined_takes_it_from_the_one_it_left(
    scenario: Scenario, left: str, joined: str, left_endpoint: str, joined_endpoint: str
) -> None:
    """The Component event alone (the Workload's lost): a workload it lists was indexed for
    another, which is mapped again first, without it; the API name goes as a walk gives it."""
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    world.add_component(ns, project, left, endpoints={left_endpoint: _http(80)})
    world.add_component(ns, project, joined, endpoints={})
    world.delete_workload(ns, f"{joined}-workload")
    scenario.send(*(event("Component", c, ns, "created") for c in (left, joined)))
    scenario.drain()
    moved = f"{left}-workload"
    world.delete_workload(ns, moved)
    world.add_workload(ns, moved, component=joined, endpoints={joined_endpoint: _http(80)})

    scenario.send(event("Component", joined, ns, "updated"))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found[scenario.ref("Component", joined)] == {f"api:{ns}/{project}-zz-a-b-c"}
    assert found[scenario.ref("Component", left)] == set()
    assert found == expected_catalog(scenario.world)
    assert moved in _indexed_workloads(scenario, joined)


@pytest.mark.parametrize("case", ["to-another-project", "the-one-it-left-deleted-too"])
def test_a_workload_that_moves_leaves_the_catalog_as_a_walk_would(
    scenario: Scenario, case: str
) -> None:
    ns, world, project = scenario.namespace, scenario.world, scenario.project
    other = next(
        name
        for p in world.v1_projects(ns)
        if (name := p["metadata"]["name"]) != project or case != "to-another-project"
    )
    world.add_component(ns, project, "zz-old", endpoints={"e": _http(80)})
    world.add_component(ns, other, "zz-new", endpoints={})
    scenario.send(*(event("Component", c, ns, "created") for c in ("zz-old", "zz-new")))
    scenario.drain()
    world.delete_workload(ns, "zz-old-workload")
    world.add_workload(ns, "zz-old-workload", component="zz-new", endpoints={"f": _http(80)})
    if case == "the-one-it-left-deleted-too":
        world.delete_component(ns, project, "zz-old")

    scenario.send(event("Workload", "zz-old-workload", ns, "created"))
    scenario.drain()

    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


def _indexed_workloads(scenario: Scenario, component: str) -> list[str]:
    with Store.open(scenario.state_path, readonly=True) as store:
        group = f"{scenario.namespace}/{component}"
        rows = store.index_by_group(PROVIDER, "workload", [group])[group]
    return [row.key.partition("/")[2] for row in rows]


def _component_with_apis(scenario: Scenario) -> tuple[str, set[str], str]:
    """A component of the scenario's namespace that has APIs: its name, its APIs' refs and its
    project."""
    name, apis = next(
        (ref.rpartition("/")[2], apis)
        for ref, apis in catalog(scenario.state_path).items()
        if ref.startswith(f"component:{scenario.namespace}/") and apis
    )
    project = next(
        c["spec"]["owner"]["projectName"]
        for c in scenario.world.v1_components(scenario.namespace)
        if c["metadata"]["name"] == name
    )
    return name, apis, project


def test_deleted_component_takes_its_apis_along(scenario: Scenario) -> None:
    name, apis, project = _component_with_apis(scenario)
    scenario.world.delete_component(scenario.namespace, project, name)

    scenario.send(event("Component", name, scenario.namespace, "deleted"))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert scenario.ref("Component", name) not in found
    assert not apis & set(found)
    assert found == expected_catalog(scenario.world)


@pytest.mark.parametrize(
    "order", ["created-deleted-workload", "workload-deleted-created"], ids=["cdw", "wdc"]
)
def test_a_renamed_component_leaves_with_its_apis_whatever_order_its_events_come_in(
    scenario: Scenario, order: str
) -> None:
    """A component renamed (made again under a new name, its workload now owned by the new
    one, the old one deleted): when the old one's `deleted` comes after the workload has moved,
    no workload says which project it was in any more, and its APIs must leave all the same."""
    namespace = scenario.namespace
    old, apis, project = _component_with_apis(scenario)
    [workload, *_] = sorted(
        scenario.world.v1_workloads(namespace, old), key=lambda w: w["metadata"]["name"]
    )
    new = f"{old}-r"
    scenario.world.add_component(namespace, project, new)
    for record in scenario.world.v1_workloads(namespace, new):
        scenario.world.delete_workload(namespace, record["metadata"]["name"])
    name = workload["metadata"]["name"]
    scenario.world.delete_workload(namespace, name)
    scenario.world.add_workload(
        namespace, name, component=new, endpoints=workload["spec"].get("endpoints")
    )
    scenario.world.delete_component(namespace, project, old)
    events = {
        "c": event("Component", new, namespace, "created"),
        "d": event("Component", old, namespace, "deleted"),
        "w": event("Workload", name, namespace),
    }

    for key in order.split("-"):
        scenario.send(events[key[0]])
        scenario.drain()

    found = catalog(scenario.state_path)
    assert scenario.ref("Component", old) not in found
    assert not apis & set(found), "the old component's APIs stayed"
    assert found == expected_catalog(scenario.world)


def test_a_component_deleted_after_its_workloads_removes_its_own_scope_alone(
    scenario: Scenario,
) -> None:
    """A cascade delete whose Workload events come first: no workload is left to say which
    project the component was in, and its stored Component says it, not every project of the
    namespace (each a range read and an event mark: hundreds in a large namespace)."""
    namespace = scenario.namespace
    name, apis, project = _component_with_apis(scenario)
    assert len(list(scenario.world.v1_projects(namespace))) > 1
    workloads = [w["metadata"]["name"] for w in scenario.world.v1_workloads(namespace, name)]
    scenario.world.delete_component(namespace, project, name)  # its workloads go with it
    assert not list(scenario.world.v1_workloads(namespace, name))
    scenario.send(*(event("Workload", workload, namespace, "deleted") for workload in workloads))
    scenario.drain()

    scenario.send(event("Component", name, namespace, "deleted"))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert scenario.ref("Component", name) not in found
    assert not apis & set(found)
    assert found == expected_catalog(scenario.world)
    with Store.open(scenario.state_path, readonly=True) as store:
        marks = store.index_by_group(PROVIDER, EVENT_MARKS, [""])[""]
    scope_marks = {row.key for row in marks if row.key.startswith("scope ")}
    assert scope_marks == {f"scope {namespace}/{project}/{name}"}


def test_deleted_namespace_takes_everything_in_it(scenario: Scenario) -> None:
    scenario.world.delete_org(scenario.namespace)

    scenario.send(event("Namespace", scenario.namespace, "", "deleted"))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert found == expected_catalog(scenario.world)
    assert not any(f":{scenario.namespace}/" in ref for ref in found)
    assert entity_ref("Domain", "default", scenario.namespace) not in found


def test_events_of_the_clusters_own_namespaces_leave_the_catalog_as_it_is(
    scenario: Scenario,
) -> None:
    """Events naming a namespace OpenChoreo does not serve: `/namespaces/kube-system` answers
    404 there (as in the simulator), its components' listings nothing."""
    before = catalog(scenario.state_path)

    scenario.send(
        event("Namespace", "kube-system", "", "created"),
        event("Namespace", "kube-public", "", "updated"),
        event("Component", "coredns", "kube-system", "created"),
    )
    scenario.drain()

    assert catalog(scenario.state_path) == before == expected_catalog(scenario.world)


def test_updated_project_rewrites_its_system(scenario: Scenario) -> None:
    before = _body(scenario, scenario.ref("System", scenario.project))
    scenario.world.update_project(
        scenario.namespace, scenario.project, {"displayName": "A new title"}
    )

    scenario.send(event("Project", scenario.project, scenario.namespace, "created"))
    scenario.drain()

    after = _body(scenario, scenario.ref("System", scenario.project))
    assert after != before
    assert after["metadata"]["title"] == "A new title"


def _body(scenario: Scenario, ref: str) -> dict[str, Any]:
    with Store.open(scenario.state_path, readonly=True) as store:
        body = store.entity_body(ref)
    assert body is not None, ref
    return body


def test_kinds_not_ingested_are_counted_and_not_queued(scenario: Scenario) -> None:
    ignored = scenario.send(
        event("ReleaseBinding", "api-dev", scenario.namespace),
        event("Environment", "dev", scenario.namespace, "created"),
    )

    assert ignored == 2
    with Store.open(scenario.state_path, readonly=True) as store:
        assert store.pending_event_count(PROVIDER) == 0
        assert store.counters(PROVIDER)["events_ignored"] == 2


def test_component_of_a_project_no_cycle_listed_brings_its_system(scenario: Scenario) -> None:
    scenario.world.add_project(scenario.namespace, "brand-new")
    endpoints = {"rest": {"type": "HTTP", "port": 80, "schema": SCHEMA}}
    scenario.world.add_component(scenario.namespace, "brand-new", "zz-fresh", endpoints=endpoints)

    scenario.send(event("Component", "zz-fresh", scenario.namespace, "created"))
    scenario.drain()

    found = catalog(scenario.state_path)
    assert scenario.ref("System", "brand-new") in found
    assert found == expected_catalog(scenario.world)
    assert scenario.api.stats.requests_by_route.get("get_project") == 1


def test_component_of_a_known_project_reads_no_project(scenario: Scenario) -> None:
    scenario.world.add_component(scenario.namespace, scenario.project, "zz-more")

    scenario.send(event("Component", "zz-more", scenario.namespace, "created"))
    scenario.drain()

    assert scenario.api.stats.requests_by_route.get("get_project", 0) == 0
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


def test_a_deleted_component_frees_the_api_name_it_held(scenario: Scenario) -> None:
    """`a` + `x-c` and `a-x` + `c` share `a-x-c-e`; once the holder is deleted, the other takes
    the plain name at its next read, not a cycle later."""
    ns = scenario.namespace
    for project, component in (("a", "x-c"), ("a-x", "c")):
        scenario.world.add_project(ns, project)
        endpoints = {"e": {"type": "HTTP", "port": 80, "schema": SCHEMA}}
        scenario.world.add_component(ns, project, component, endpoints=endpoints)
    scenario.clock.advance(3600.0)
    assert run(scenario.config, scenario.api, scenario.clock).providers[0].cycle_completed
    plain = scenario.ref("API", "a-x-c-e")
    assert catalog(scenario.state_path)[scenario.ref("Component", "x-c")] == {plain}

    scenario.world.delete_component(ns, "a", "x-c")
    scenario.send(event("Component", "x-c", ns, "deleted"))
    scenario.drain()
    scenario.send(event("Component", "c", ns, "updated"))
    scenario.drain()

    assert catalog(scenario.state_path)[scenario.ref("Component", "c")] == {plain}
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)


OWNER = "backstage.io/owner"


def _components_of(scenario: Scenario) -> list[dict[str, Any]]:
    return list(scenario.world.v1_components(scenario.namespace, scenario.project))


def test_a_projects_new_owner_reaches_its_components_without_one_of_their_own(
    scenario: Scenario,
) -> None:
    first, *others = (c["metadata"]["name"] for c in _components_of(scenario))
    scenario.world.update_component(
        scenario.namespace, scenario.project, first, {"annotations": {}}
    )  # an owner of its own no more
    own = {
        c["metadata"]["name"]: c["metadata"].get("annotations", {}).get(OWNER)
        for c in _components_of(scenario)
    }
    assert own[first] is None
    assert any(own[name] for name in others), "the seed should give one an owner of its own"
    scenario.world.update_project(
        scenario.namespace, scenario.project, {"annotations": {OWNER: "group:default/team-new"}}
    )

    scenario.send(event("Project", scenario.project, scenario.namespace))
    scenario.drain()

    assert _body(scenario, scenario.ref("System", scenario.project))["spec"]["owner"] == (
        "group:default/team-new"
    )
    for name, annotation in own.items():
        component = _body(scenario, scenario.ref("Component", name))
        if annotation is None:
            assert component["spec"]["owner"] == "group:default/team-new", name
        else:
            assert component["spec"]["owner"] != "group:default/team-new", name
        for api in component["spec"].get("providesApis", []):
            assert _body(scenario, api)["spec"]["owner"] == component["spec"]["owner"]
    assert catalog(scenario.state_path) == expected_catalog(scenario.world)
    assert scenario.api.stats.requests_by_route.get("list_components") == 1


def test_a_project_event_that_leaves_its_owner_lists_none_of_its_components(
    scenario: Scenario,
) -> None:
    scenario.world.update_project(scenario.namespace, scenario.project, {"displayName": "Renamed"})

    scenario.send(event("Project", scenario.project, scenario.namespace))
    scenario.drain()

    assert _body(scenario, scenario.ref("System", scenario.project))["metadata"]["title"] == (
        "Renamed"
    )
    assert scenario.api.stats.requests_by_route.get("list_components") is None


def test_an_unusable_owner_met_again_by_an_event_is_not_a_warning_again(
    scenario: Scenario,
) -> None:
    """The warning a cycle said is remembered (an index row) by the events that meet the same
    object: one WARNING while it lasts, as cron mails each."""
    first = _components_of(scenario)[0]["metadata"]["name"]
    scenario.world.update_component(
        scenario.namespace, scenario.project, first, {"annotations": {OWNER: "group:"}}
    )
    levels = []
    for _ in range(2):
        scenario.send(event("Component", first, scenario.namespace))
        with structlog.testing.capture_logs() as logs:
            scenario.drain()
        levels += [log["log_level"] for log in logs if log["event"] == "owner_annotation_ignored"]

    assert levels == ["warning", "info"]
