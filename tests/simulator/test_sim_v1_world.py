"""The world as OpenChoreo v1 resources: derived from the org-era world, awkward, and mutable."""

from __future__ import annotations

import re
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from choreo_ingest.simulator.records_v1 import OWNER, SECOND_WORKLOAD_ENDPOINT
from choreo_ingest.simulator.world import Hidden, NotFound, World

KUBERNETES_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
COMPONENT_TYPE = re.compile(r"^(deployment|statefulset|cronjob|job|proxy)/[a-z0-9-]+$")
ENDPOINT_TYPES = {"HTTP", "gRPC", "GraphQL", "Websocket", "TCP", "UDP"}
API_VERSION = "openchoreo.dev/v1alpha1"


def v1_snapshot(world: World) -> dict[str, list[Any]]:
    namespaces = list(world.v1_namespaces())
    names = [namespace["metadata"]["name"] for namespace in namespaces]
    return {
        "namespaces": namespaces,
        "projects": [p for name in names for p in world.v1_projects(name)],
        "components": [c for name in names for c in world.v1_components(name)],
        "workloads": [w for name in names for w in world.v1_workloads(name)],
    }


def first_namespace(world: World) -> str:
    return str(next(world.v1_namespaces())["metadata"]["name"])


def names_of(resources: Any) -> list[str]:
    return [resource["metadata"]["name"] for resource in resources]


@pytest.fixture(scope="module")
def awkward() -> dict[str, list[Any]]:
    """A world big enough to hold every awkward case (read-only: shared by the module)."""
    return v1_snapshot(World.generate(3, 4, 25, seed=0))


class TestDerivation:
    def test_same_seed_gives_the_same_v1_world(self) -> None:
        first = v1_snapshot(World.generate(2, 3, 10, seed=11, hidden_fraction=0.2))
        second = v1_snapshot(World.generate(2, 3, 10, seed=11, hidden_fraction=0.2))
        assert first == second

    def test_v1_world_is_the_org_era_world(self, small_world: World) -> None:
        """Namespaces are the orgs, projects the projects, components the same components."""
        assert names_of(small_world.v1_namespaces()) == [o["name"] for o in small_world.orgs()]
        for org in small_world.orgs():
            ns = org["name"]
            projects = list(small_world.projects(ns))
            assert names_of(small_world.v1_projects(ns)) == [p["name"] for p in projects]
            org_era = {
                c["uid"]: (c["name"], p["name"])
                for p in projects
                for c in small_world.components(ns, p["name"])
            }
            v1 = {
                c["metadata"]["uid"]: (c["metadata"]["name"], c["spec"]["owner"]["projectName"])
                for c in small_world.v1_components(ns)
            }
            assert v1 == org_era

    def test_workloads_carry_their_components_endpoints(self, small_world: World) -> None:
        for detail in small_world.component_details():
            workloads = list(small_world.v1_workloads(detail["orgName"], detail["name"]))
            assert bool(workloads) == ("workload" in detail)
            served = {name for w in workloads for name in w["spec"].get("endpoints", {})}
            expected = set(detail.get("workload", {}).get("endpoints") or {})
            if len(workloads) == 2:
                expected.add(SECOND_WORKLOAD_ENDPOINT)
            assert served == expected

    def test_flat_components_are_sorted_and_unique_per_namespace(self, small_world: World) -> None:
        for namespace in small_world.v1_namespaces():
            names = names_of(small_world.v1_components(namespace["metadata"]["name"]))
            assert names == sorted(set(names))

    def test_flat_workloads_are_sorted_and_unique_per_namespace(self, small_world: World) -> None:
        for namespace in small_world.v1_namespaces():
            names = names_of(small_world.v1_workloads(namespace["metadata"]["name"]))
            assert names == sorted(set(names))
            assert all(KUBERNETES_NAME.match(name) for name in names)

    def test_org_era_records_do_not_show_v1_only_fields(self) -> None:
        world = World.empty()
        world.add_org("acme", annotations={"team": "x"})
        world.add_project("acme", "shop", annotations={OWNER: "team-x"})
        added = world.add_component("acme", "shop", "cart", annotations={OWNER: "team-y"})
        assert "annotations" not in added
        assert "annotations" not in world.org("acme")
        assert "annotations" not in world.project("acme", "shop")
        assert "annotations" not in next(world.components("acme", "shop"))
        assert world.v1.component("acme", "cart")["metadata"]["annotations"] == {OWNER: "team-y"}


class TestShapes:
    def test_namespace_has_metadata_and_phase_only(self, awkward: dict[str, list[Any]]) -> None:
        for namespace in awkward["namespaces"]:
            assert set(namespace) == {"metadata", "status"}
            assert namespace["status"] == {"phase": "Active"}
            metadata = namespace["metadata"]
            assert metadata["labels"]["openchoreo.dev/control-plane"] == "true"
            assert metadata["creationTimestamp"].endswith("Z")

    def test_projects_components_and_workloads_are_kubernetes_objects(
        self, awkward: dict[str, list[Any]]
    ) -> None:
        kinds = {"projects": "Project", "components": "Component", "workloads": "Workload"}
        for key, kind in kinds.items():
            for resource in awkward[key]:
                assert set(resource) == {"apiVersion", "kind", "metadata", "spec", "status"}
                assert (resource["apiVersion"], resource["kind"]) == (API_VERSION, kind)
                metadata = resource["metadata"]
                assert KUBERNETES_NAME.match(metadata["name"])
                uuid.UUID(metadata["uid"])
                assert metadata["namespace"].startswith("org-")

    def test_components_follow_the_contract(self, awkward: dict[str, list[Any]]) -> None:
        for component in awkward["components"]:
            spec = component["spec"]
            assert spec["owner"]["projectName"].startswith("proj-")
            assert spec["componentType"]["kind"] in ("ComponentType", "ClusterComponentType")
            assert COMPONENT_TYPE.match(spec["componentType"]["name"])
            assert isinstance(spec["autoDeploy"], bool)
            for condition in component["status"].get("conditions", []):
                assert condition["type"] == "Ready"
                assert condition["status"] in ("True", "False", "Unknown")
                assert condition["reason"]
            if "workflow" in spec:
                repository = spec["workflow"]["parameters"]["repository"]
                assert repository["url"].startswith("https://")
                assert "branch" in repository["revision"]

    def test_workloads_follow_the_contract(self, awkward: dict[str, list[Any]]) -> None:
        components = {
            (component["metadata"]["namespace"], component["metadata"]["name"])
            for component in awkward["components"]
        }
        for workload in awkward["workloads"]:
            owner = workload["spec"]["owner"]
            assert (workload["metadata"]["namespace"], owner["componentName"]) in components
            assert workload["spec"]["container"]["image"].startswith("registry.example.com/")
            for endpoint in workload["spec"].get("endpoints", {}).values():
                assert endpoint["type"] in ENDPOINT_TYPES
                assert 1 <= endpoint["port"] <= 65535
                assert set(endpoint.get("visibility", [])) <= {
                    "project", "namespace", "internal", "external",
                }  # fmt: skip

    def test_world_holds_the_v1_awkward_cases(self, awkward: dict[str, list[Any]]) -> None:
        components, workloads = awkward["components"], awkward["workloads"]
        owned = Counter(w["spec"]["owner"]["componentName"] for w in workloads)
        assert any(count == 2 for count in owned.values()), "some components have two workloads"
        assert len(owned) < len(components), "some components have no workload"
        assert any(
            w["metadata"]["name"] != f"{w['spec']['owner']['componentName']}-workload"
            for w in workloads
        ), "some workload names are not <component>-workload"
        assert any(
            not w["metadata"]["name"].startswith(w["spec"]["owner"]["componentName"])
            for w in workloads
        ), "some workload names do not start with their component's name"
        endpoints = [e for w in workloads for e in w["spec"].get("endpoints", {}).values()]
        contents = [e["schema"].get("content") for e in endpoints if "schema" in e]
        assert any(content and content.strip() for content in contents)
        assert any(content is not None and not content.strip() for content in contents)
        assert any("schema" not in e for e in endpoints)
        assert any(e.get("basePath") for e in endpoints)
        owners = [c["metadata"].get("annotations", {}).get(OWNER) for c in components]
        assert any(owner and owner.startswith("group:default/") for owner in owners)
        assert any(owner and ":" not in owner for owner in owners)
        assert None in owners
        projects = awkward["projects"]
        assert any(OWNER in p["metadata"].get("annotations", {}) for p in projects)
        assert any(c["status"] == {} for c in components), "some have no conditions"
        assert any("workflow" not in c["spec"] for c in components)
        assert any(c["spec"]["componentType"]["kind"] == "ClusterComponentType" for c in components)
        annotations = [c["metadata"].get("annotations", {}) for c in components]
        assert any("openchoreo.dev/display-name" in a for a in annotations)
        assert any("openchoreo.dev/description" in a for a in annotations)


class TestMutations:
    def test_added_items_get_plain_v1_shapes(self) -> None:
        world = World.empty()
        world.add_org("acme", display_name="Acme Corp")
        world.add_project("acme", "shop", annotations={OWNER: "group:default/shop-team"})
        schema = {"type": "REST", "content": "x"}
        endpoints = {"rest": {"type": "REST", "port": 8080, "schema": schema}}
        world.add_component("acme", "shop", "cart", endpoints=endpoints, repository_url="https://r")
        assert world.v1.namespace("acme")["metadata"]["annotations"] == {
            "openchoreo.dev/display-name": "Acme Corp"
        }
        project = world.v1.project("acme", "shop")
        assert project["metadata"]["annotations"] == {OWNER: "group:default/shop-team"}
        component = world.v1.component("acme", "cart")
        assert component["spec"]["componentType"] == {
            "kind": "ComponentType",
            "name": "deployment/service",
        }
        assert component["spec"]["workflow"]["parameters"]["repository"]["url"] == "https://r"
        [workload] = world.v1_workloads("acme")
        assert workload["metadata"]["name"] == "cart-workload"
        assert workload["spec"]["owner"] == {"projectName": "shop", "componentName": "cart"}
        assert workload["spec"]["endpoints"] == {
            "rest": {"type": "HTTP", "port": 8080, "schema": {"type": "openapi", "content": "x"}}
        }

    def test_component_changes_show_in_its_derived_workloads(self, small_world: World) -> None:
        ns = first_namespace(small_world)
        component = next(small_world.v1_components(ns))
        project = component["spec"]["owner"]["projectName"]
        name = component["metadata"]["name"]
        small_world.set_endpoints(ns, project, name, {"ws": {"type": "Websocket", "port": 9}})
        workloads = list(small_world.v1_workloads(ns, name))
        served = [w["spec"]["endpoints"]["ws"] for w in workloads if "ws" in w["spec"]["endpoints"]]
        assert [(endpoint["type"], endpoint["port"]) for endpoint in served] == [("Websocket", 9)]

    def test_deletion_timestamps_show(self, small_world: World) -> None:
        ns = first_namespace(small_world)
        component = next(small_world.v1_components(ns))
        project = component["spec"]["owner"]["projectName"]
        name = component["metadata"]["name"]
        stamp = "2026-01-01T00:00:00Z"
        small_world.update_component(ns, project, name, {"deletionTimestamp": stamp})
        small_world.update_org(ns, {"deletionTimestamp": stamp})
        assert small_world.v1.component(ns, name)["metadata"]["deletionTimestamp"] == stamp
        namespace = small_world.v1.namespace(ns)
        assert namespace["status"]["phase"] == "Terminating"
        assert namespace["metadata"]["deletionTimestamp"] == stamp

    def test_deleted_component_takes_its_workloads(self, small_world: World) -> None:
        ns = first_namespace(small_world)
        workload = next(small_world.v1_workloads(ns))
        owner = workload["spec"]["owner"]
        small_world.delete_component(ns, owner["projectName"], owner["componentName"])
        owners = {w["spec"]["owner"]["componentName"] for w in small_world.v1_workloads(ns)}
        assert owner["componentName"] not in owners
        with pytest.raises(NotFound):
            small_world.v1.workload(ns, workload["metadata"]["name"])

    def test_deleted_namespace_lists_nothing(self, small_world: World) -> None:
        ns = first_namespace(small_world)
        small_world.delete_org(ns)
        assert ns not in names_of(small_world.v1_namespaces())
        assert list(small_world.v1_projects(ns)) == []
        assert list(small_world.v1_components(ns)) == []
        assert list(small_world.v1_workloads(ns)) == []
        with pytest.raises(NotFound):
            small_world.v1.namespace(ns)

    def test_workloads_can_be_added_changed_and_deleted(self, small_world: World) -> None:
        ns = first_namespace(small_world)
        derived = next(small_world.v1_workloads(ns))
        component = derived["spec"]["owner"]["componentName"]
        endpoints = {"grpc": {"type": "gRPC", "port": 50051, "visibility": ["project"]}}
        added = small_world.add_workload(ns, "aaa-extra", component=component, endpoints=endpoints)
        assert added["spec"]["endpoints"] == endpoints
        assert names_of(small_world.v1_workloads(ns))[0] == "aaa-extra"
        assert "aaa-extra" in names_of(small_world.v1_workloads(ns, component))
        small_world.update_workload(ns, "aaa-extra", {"endpoints": None, "labels": {"a": "b"}})
        changed = small_world.v1.workload(ns, "aaa-extra")
        assert "endpoints" not in changed["spec"]
        assert changed["metadata"]["labels"] == {"a": "b"}
        small_world.delete_workload(ns, derived["metadata"]["name"])
        small_world.delete_workload(ns, "aaa-extra")
        remaining = names_of(small_world.v1_workloads(ns))
        assert derived["metadata"]["name"] not in remaining
        assert "aaa-extra" not in remaining

    def test_replacing_a_component_drops_its_written_workloads(self) -> None:
        world = World.empty()
        world.add_org("acme")
        world.add_project("acme", "shop")
        world.add_component("acme", "shop", "cart")
        world.add_workload("acme", "cart-extra", component="cart")
        world.delete_workload("acme", "cart-workload")
        assert names_of(world.v1_workloads("acme")) == ["cart-extra"]
        world.add_component("acme", "shop", "cart")
        assert names_of(world.v1_workloads("acme")) == ["cart-workload"]

    def test_hidden_items_are_listed_by_nobody_and_read_as_hidden(self) -> None:
        world = World.empty()
        world.add_org("acme")
        world.add_org("secret-org", hidden=True)
        world.add_project("acme", "shop")
        world.add_project("acme", "vault", hidden=True)
        world.add_component("acme", "shop", "cart")
        world.add_component("acme", "shop", "spy", hidden=True)
        world.add_workload("acme", "cart-sidecar", component="cart", hidden=True)
        assert names_of(world.v1_namespaces()) == ["acme"]
        assert names_of(world.v1_projects("acme")) == ["shop"]
        assert names_of(world.v1_components("acme")) == ["cart"]
        assert names_of(world.v1_workloads("acme")) == ["cart-workload"]
        reads: list[Callable[[], object]] = [
            lambda: world.v1.namespace("secret-org"),
            lambda: world.v1.project("acme", "vault"),
            lambda: world.v1.component("acme", "spy"),
            lambda: world.v1.workload("acme", "spy-workload"),
            lambda: world.v1.workload("acme", "cart-sidecar"),
        ]
        for read in reads:
            with pytest.raises(Hidden):
                read()

    def test_component_names_are_unique_in_a_namespace(self) -> None:
        world = World.empty()
        world.add_org("acme")
        world.add_project("acme", "shop")
        world.add_project("acme", "web")
        world.add_component("acme", "shop", "cart")
        world.add_component("acme", "shop", "cart")  # a replacement in its own project is fine
        with pytest.raises(ValueError, match="already exists"):
            world.add_component("acme", "web", "cart")
        world.add_component("acme", "web", "basket")
        with pytest.raises(ValueError, match="already exists"):
            world.rename_component("acme", "web", "basket", "cart")

    def test_workload_for_a_missing_component_is_not_found(self, small_world: World) -> None:
        with pytest.raises(NotFound):
            small_world.add_workload(first_namespace(small_world), "w", component="ghost")


def test_v1_pages_of_200k_components_stay_cheap() -> None:
    tracemalloc.start()
    try:
        world = World.generate(10, 20, 1000, seed=9, hidden_fraction=0.0)
        ns = world.blueprint.name((), 7)
        middle = world.blueprint.name((7, 10), 500)
        started = time.perf_counter()
        components = world.v1.components(ns, middle, 100)
        workloads = world.v1.workloads(ns, f"{middle}-workload", 100)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert components.items[0]["metadata"]["name"] == world.blueprint.name((7, 10), 501)
    assert len(components.items) == len(workloads.items) == 100
    assert workloads.items[0]["metadata"]["name"] > f"{middle}-workload"
    assert elapsed < 1.0
    assert peak < 5_000_000
