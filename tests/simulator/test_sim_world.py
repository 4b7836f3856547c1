"""The simulated world: deterministic, realistic, lean, and mutable between requests."""

from __future__ import annotations

import re
import time
import tracemalloc
import uuid
from typing import Any

import pytest

from choreo_ingest.clock import parse_rfc3339
from choreo_ingest.simulator.records import AWKWARD_ENDPOINT_NAMES, LEGACY_COMPONENT_TYPES
from choreo_ingest.simulator.world import NotFound, World

KUBERNETES_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NEW_STYLE_TYPE = re.compile(r"^(deployment|statefulset|cronjob|job|proxy)/[a-z0-9-]+$")
ENDPOINT_TYPES = {"HTTP", "REST", "gRPC", "GraphQL", "Websocket", "TCP", "UDP"}


def snapshot(world: World) -> list[Any]:
    return [
        (org, project, list(world.components(org["name"], project["name"])))
        for org in world.orgs()
        for project in world.projects(org["name"])
    ]


def all_details(world: World) -> list[dict[str, Any]]:
    return list(world.component_details())


class TestGeneration:
    def test_same_seed_gives_the_same_world(self) -> None:
        first = World.generate(2, 3, 10, seed=11)
        second = World.generate(2, 3, 10, seed=11)
        assert snapshot(first) == snapshot(second)
        assert all_details(first) == all_details(second)

    def test_another_seed_gives_another_world(self) -> None:
        assert all_details(World.generate(2, 2, 5, seed=1)) != all_details(
            World.generate(2, 2, 5, seed=2)
        )

    def test_sizes_count_visible_items_only(self) -> None:
        world = World.generate(4, 3, 9, seed=5, hidden_fraction=0.4)
        assert world.counts() == (4, 12, 108)

    def test_listings_are_sorted_by_name_and_names_are_kubernetes_names(
        self, small_world: World
    ) -> None:
        orgs = [org["name"] for org in small_world.orgs()]
        assert orgs == sorted(orgs)
        for org in orgs:
            projects = [project["name"] for project in small_world.projects(org)]
            assert projects == sorted(projects)
            for project in projects:
                names = [item["name"] for item in small_world.components(org, project)]
                assert names == sorted(names)
                assert all(KUBERNETES_NAME.match(name) for name in [org, project, *names])

    def test_fields_follow_the_contract(self) -> None:
        world = World.generate(3, 4, 25, seed=3)
        for org in world.orgs():
            assert parse_rfc3339(org["createdAt"]) > 0
            for project in world.projects(org["name"]):
                assert project["orgName"] == org["name"]
                uuid.UUID(project["uid"])
        for detail in world.component_details():
            assert NEW_STYLE_TYPE.match(detail["type"]) or detail["type"] in LEGACY_COMPONENT_TYPES
            assert isinstance(detail["autoDeploy"], bool)
            assert uuid.UUID(detail["uid"]).version == 4
            assert detail["createdAt"].endswith("Z")
            for endpoint in detail.get("workload", {}).get("endpoints", {}).values():
                assert endpoint["type"] in ENDPOINT_TYPES
                assert 1 <= endpoint["port"] <= 65535

    def test_world_holds_the_awkward_cases(self) -> None:
        details = all_details(World.generate(3, 4, 25, seed=0))
        titles = [d.get("displayName") for d in details]
        endpoint_names = {
            name for d in details for name in d.get("workload", {}).get("endpoints", {})
        }
        schemas = [
            endpoint["schema"]
            for d in details
            for endpoint in d.get("workload", {}).get("endpoints", {}).values()
            if "schema" in endpoint
        ]
        assert None in titles, "some display names are absent"
        assert "" in titles, "some display names are empty"
        assert any(title and not title.isascii() for title in titles)
        assert any(d.get("description") is None for d in details)
        assert {"Service", "WebApplication"} & {d["type"] for d in details}
        assert {"deployment/web-app", "statefulset/db"} <= {d["type"] for d in details}
        assert set(AWKWARD_ENDPOINT_NAMES) <= endpoint_names
        assert max(len(name) for name in endpoint_names) == 70
        assert any(len(d["name"]) == 63 for d in details)
        assert any("content" in schema for schema in schemas)
        assert any(not d.get("workload", {}).get("endpoints") for d in details)
        repositories = [d["componentWorkflow"]["systemParameters"]["repository"] for d in details
                        if "componentWorkflow" in d]  # fmt: skip
        assert repositories
        assert all(repo["url"].startswith("https://") for repo in repositories)
        assert all("branch" in repo["revision"] for repo in repositories)

    def test_list_items_carry_no_endpoints(self, small_world: World) -> None:
        org = next(small_world.orgs())["name"]
        project = next(small_world.projects(org))["name"]
        for item in small_world.components(org, project):
            assert "workload" not in item
            assert "componentWorkflow" not in item
            detail = small_world.component(org, project, item["name"])
            assert {k: v for k, v in detail.items() if k in item} == item


class TestHiddenItems:
    def test_hidden_items_fill_pages_but_are_never_visible(self) -> None:
        world = World.generate(1, 1, 40, seed=2, hidden_fraction=0.5)
        org = next(world.orgs())["name"]
        project = next(world.projects(org))["name"]
        page = world.page((org, project), None, 1000)
        visible = {item["name"] for item in world.components(org, project)}
        assert len(page.items) == 40
        assert {item["name"] for item in page.items} == visible
        short_pages, after = 0, None
        while True:
            page = world.page((org, project), after, 3)
            short_pages += page.has_more and len(page.items) < 3
            if not page.has_more:
                break
            after = page.last_name
        assert short_pages > 0

    def test_hidden_item_lookups_are_not_found(self) -> None:
        world = World.generate(1, 1, 40, seed=2, hidden_fraction=0.5)
        org = next(world.orgs())["name"]
        project = next(world.projects(org))["name"]
        world.add_component(org, project, "secret", hidden=True)
        with pytest.raises(NotFound):
            world.component(org, project, "secret")
        assert "secret" not in {item["name"] for item in world.components(org, project)}


class TestMutations:
    def test_added_component_is_listed_in_name_order_with_its_endpoints(
        self, small_world: World
    ) -> None:
        org = next(small_world.orgs())["name"]
        project = next(small_world.projects(org))["name"]
        endpoints = {"api": {"type": "REST", "port": 8080}}
        small_world.add_component(org, project, "aaa-first", endpoints=endpoints)
        small_world.add_component(org, project, "zzz-last", repository_url="https://g/x")
        names = [item["name"] for item in small_world.components(org, project)]
        assert names[0] == "aaa-first"
        assert names[-1] == "zzz-last"
        assert names == sorted(names)
        detail = small_world.component(org, project, "aaa-first")
        assert detail["workload"]["endpoints"] == endpoints
        workflow = small_world.component(org, project, "zzz-last")["componentWorkflow"]
        assert workflow["systemParameters"]["repository"]["url"] == "https://g/x"

    def test_deleted_component_disappears(self, small_world: World) -> None:
        org = next(small_world.orgs())["name"]
        project = next(small_world.projects(org))["name"]
        victim = list(small_world.components(org, project))[3]["name"]
        small_world.delete_component(org, project, victim)
        assert victim not in [i["name"] for i in small_world.components(org, project)]
        with pytest.raises(NotFound) as missing:
            small_world.component(org, project, victim)
        assert missing.value.kind == "component"

    def test_rename_keeps_fields_and_changes_uid(self, small_world: World) -> None:
        org = next(small_world.orgs())["name"]
        project = next(small_world.projects(org))["name"]
        old = next(small_world.components(org, project))["name"]
        before = small_world.component(org, project, old)
        after = small_world.rename_component(org, project, old, "renamed")
        assert after["uid"] != before["uid"]
        assert after.get("workload") == before.get("workload")
        names = [i["name"] for i in small_world.components(org, project)]
        assert "renamed" in names
        assert old not in names

    def test_set_endpoints_and_update_change_the_detail(self, small_world: World) -> None:
        org = next(small_world.orgs())["name"]
        project = next(small_world.projects(org))["name"]
        name = list(small_world.components(org, project))[1]["name"]
        small_world.set_endpoints(org, project, name, {"ws": {"type": "Websocket", "port": 9}})
        small_world.update_component(org, project, name, {"displayName": "New", "status": None})
        detail = small_world.component(org, project, name)
        assert detail["workload"]["endpoints"] == {"ws": {"type": "Websocket", "port": 9}}
        assert detail["displayName"] == "New"
        assert "status" not in detail

    def test_updating_a_generated_org_keeps_its_projects(self, small_world: World) -> None:
        org = next(small_world.orgs())["name"]
        projects = [p["name"] for p in small_world.projects(org)]
        small_world.update_org(org, {"displayName": "Renamed Org"})
        assert small_world.org(org)["displayName"] == "Renamed Org"
        assert [p["name"] for p in small_world.projects(org)] == projects

    def test_deleting_an_org_removes_everything_under_it(self, small_world: World) -> None:
        org = next(small_world.orgs())["name"]
        project = next(small_world.projects(org))["name"]
        small_world.delete_org(org)
        assert org not in [o["name"] for o in small_world.orgs()]
        with pytest.raises(NotFound) as missing:
            list(small_world.components(org, project))
        assert missing.value.kind == "organization"

    def test_deleting_a_project_removes_its_components(self, small_world: World) -> None:
        org = next(small_world.orgs())["name"]
        project = next(small_world.projects(org))["name"]
        small_world.delete_project(org, project)
        with pytest.raises(NotFound) as missing:
            small_world.page((org, project), None, 10)
        assert missing.value.kind == "project"

    def test_readded_org_starts_empty(self, small_world: World) -> None:
        org = next(small_world.orgs())["name"]
        small_world.delete_org(org)
        small_world.add_org(org, display_name="Back again")
        assert list(small_world.projects(org)) == []
        small_world.add_project(org, "fresh")
        small_world.add_component(org, "fresh", "only-one")
        assert [c["name"] for c in small_world.components(org, "fresh")] == ["only-one"]

    def test_empty_world_can_be_built_by_mutations(self) -> None:
        world = World.empty()
        world.add_org("acme")
        world.add_project("acme", "shop")
        world.add_component("acme", "shop", "cart", component_type="WebApplication")
        assert world.counts() == (1, 1, 1)
        assert world.component("acme", "shop", "cart")["type"] == "WebApplication"

    @pytest.mark.parametrize(
        "name",
        ["Upper", "under_score", "-dash-first", "x" * 64, ""],
        ids=["upper", "underscore", "leading-dash", "too-long", "empty"],
    )
    def test_non_kubernetes_names_are_refused(self, name: str) -> None:
        with pytest.raises(ValueError, match="Kubernetes name"):
            World.empty().add_org(name)

    def test_mutating_a_missing_parent_is_not_found(self, small_world: World) -> None:
        with pytest.raises(NotFound):
            small_world.add_component("no-such-org", "p", "c")


class TestScale:
    def test_200k_components_cost_little_memory_and_pages_stay_fast(self) -> None:
        tracemalloc.start()
        try:
            world = World.generate(10, 20, 1000, seed=9, hidden_fraction=0.0)
            org = world.blueprint.name((), 7)
            project = world.blueprint.name((7,), 0)
            middle = world.blueprint.name((7, 0), 500)
            started = time.perf_counter()
            page = world.page((org, project), middle, 100)
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert page.items[0]["name"] == world.blueprint.name((7, 0), 501)
        assert len(page.items) == 100
        assert elapsed < 0.5
        assert peak < 5_000_000
