"""The v1 API over HTTP: routes, resource reads, error shapes, public routes and counting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from choreo_ingest.simulator.api import SimulatorApi, SimulatorOptions
from choreo_ingest.simulator.world import World

from sim_support import walk_v1

if TYPE_CHECKING:
    from conftest import FakeClock, SimulatorFactory

ROOT = "http://simulator.test"
FORBIDDEN = {"error": "You do not have permission to perform this operation", "code": "FORBIDDEN"}


def names_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["metadata"]["name"] for item in items]


def shop_world() -> World:
    """Two projects in one namespace, a hidden project and a hidden component, and a second
    namespace; components and workloads deliberately interleave across the projects."""
    world = World.empty()
    world.add_org("acme")
    world.add_org("globex")
    world.add_org("secret", hidden=True)
    world.add_project("acme", "shop")
    world.add_project("acme", "web")
    world.add_project("acme", "vault", hidden=True)
    world.add_project("globex", "ops")
    for name, project in [("cart", "shop"), ("basket", "web"), ("orders", "shop"), ("ui", "web")]:
        world.add_component("acme", project, name, endpoints={"http": {"type": "REST", "port": 80}})
    world.add_component("acme", "shop", "spy", hidden=True)
    world.add_component("globex", "ops", "monitor")
    world.add_workload("acme", "cart-sidecar", component="cart")
    return world


class TestReads:
    def test_lists_and_objects_are_the_worlds_v1_resources(
        self, simulate_v1: SimulatorFactory, small_world: World
    ) -> None:
        _, client = simulate_v1(small_world)
        namespaces, _ = walk_v1(client, "/namespaces")
        assert namespaces == list(small_world.v1_namespaces())
        ns = names_of(namespaces)[0]
        assert client.get(f"/namespaces/{ns}").json() == namespaces[0]
        for collection, kind in [("projects", "project"), ("components", "component"),
                                 ("workloads", "workload")]:  # fmt: skip
            items, _ = walk_v1(client, f"/namespaces/{ns}/{collection}")
            assert items == list(getattr(small_world, f"v1_{collection}")(ns))
            name = names_of(items)[0]
            assert client.get(f"/namespaces/{ns}/{collection}/{name}").json() == items[0], kind

    def test_components_are_listed_flat_across_projects_by_name(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        _, client = simulate_v1(shop_world())
        items, _ = walk_v1(client, "/namespaces/acme/components", limit=2)
        assert names_of(items) == ["basket", "cart", "orders", "ui"]
        assert [i["spec"]["owner"]["projectName"] for i in items] == ["web", "shop", "shop", "web"]

    def test_project_filter_keeps_one_projects_components(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        _, client = simulate_v1(shop_world())
        items, _ = walk_v1(client, "/namespaces/acme/components", project="web", limit=1)
        assert names_of(items) == ["basket", "ui"]
        assert walk_v1(client, "/namespaces/acme/components", project="vault")[0] == []

    def test_unknown_project_filter_is_not_found(self, simulate_v1: SimulatorFactory) -> None:
        _, client = simulate_v1(shop_world())
        response = client.get("/namespaces/acme/components", params={"project": "ghost"})
        assert response.status_code == 404
        assert response.json() == {"error": "Project not found", "code": "NOT_FOUND"}

    def test_workloads_are_listed_flat_and_filtered_by_component(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        _, client = simulate_v1(shop_world())
        items, _ = walk_v1(client, "/namespaces/acme/workloads", limit=2)
        assert names_of(items) == [
            "basket-workload", "cart-sidecar", "cart-workload", "orders-workload", "ui-workload",
        ]  # fmt: skip
        cart, _ = walk_v1(client, "/namespaces/acme/workloads", component="cart")
        assert names_of(cart) == ["cart-sidecar", "cart-workload"]
        assert walk_v1(client, "/namespaces/acme/workloads", component="ghost")[0] == []

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("/namespaces/ghost", "Namespace not found"),
            ("/namespaces/acme/projects/ghost", "Project not found"),
            ("/namespaces/ghost/projects/shop", "Project not found"),
            ("/namespaces/acme/components/ghost", "Component not found"),
            ("/namespaces/acme/workloads/ghost", "Workload not found"),
        ],
        ids=["namespace", "project", "project-of-missing-namespace", "component", "workload"],
    )
    def test_missing_objects_are_404_with_their_message(
        self, simulate_v1: SimulatorFactory, path: str, message: str
    ) -> None:
        _, client = simulate_v1(shop_world())
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"error": message, "code": "NOT_FOUND"}

    @pytest.mark.parametrize(
        "path",
        [
            "/namespaces/secret",
            "/namespaces/acme/projects/vault",
            "/namespaces/acme/components/spy",
            "/namespaces/acme/workloads/spy-workload",
        ],
        ids=["namespace", "project", "component", "workload"],
    )
    def test_hidden_objects_are_forbidden_but_never_listed(
        self, simulate_v1: SimulatorFactory, path: str
    ) -> None:
        _, client = simulate_v1(shop_world())
        response = client.get(path)
        assert response.status_code == 403
        assert response.json() == FORBIDDEN
        collection = path.rsplit("/", 1)[0]
        assert path.rsplit("/", 1)[1] not in names_of(walk_v1(client, collection)[0])

    def test_children_of_a_missing_namespace_list_as_nothing(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        world = shop_world()
        _, client = simulate_v1(world)
        world.delete_org("acme")
        for collection in ("projects", "components", "workloads"):
            response = client.get(f"/namespaces/acme/{collection}")
            assert response.json() == {"items": [], "pagination": {}}
        assert client.get("/namespaces/acme").status_code == 404

    def test_the_clusters_own_namespaces_are_neither_read_nor_listed(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        """OpenChoreo's namespace read answers 404 for a namespace without its control-plane
        label (`services/namespace/service.go`, `GetNamespace`, since v1.0.0)."""
        _, client = simulate_v1(shop_world())

        read = client.get("/namespaces/kube-system")

        assert read.status_code == 404
        assert read.json() == {"error": "Namespace not found", "code": "NOT_FOUND"}
        listed = [item["metadata"]["name"] for item in client.get("/namespaces").json()["items"]]
        assert listed
        assert "kube-system" not in listed
        assert client.get("/namespaces/kube-system/projects").json()["items"] == []

    def test_mutations_show_in_the_next_response(self, simulate_v1: SimulatorFactory) -> None:
        world = shop_world()
        _, client = simulate_v1(world)
        world.add_component("acme", "web", "aaa-new")
        world.update_component("acme", "shop", "cart", {"annotations": {"backstage.io/owner": "x"}})
        world.delete_workload("acme", "ui-workload")
        assert names_of(walk_v1(client, "/namespaces/acme/components")[0])[0] == "aaa-new"
        cart = client.get("/namespaces/acme/components/cart").json()
        assert cart["metadata"]["annotations"] == {"backstage.io/owner": "x"}
        assert "ui-workload" not in names_of(walk_v1(client, "/namespaces/acme/workloads")[0])


class TestGenerations:
    @pytest.mark.parametrize(
        ("api", "path", "status"),
        [
            ("v1", "/orgs", 404),
            ("v1", "/orgs/acme/projects", 404),
            ("v1", "/namespaces", 200),
            ("orgs", "/namespaces", 404),
            ("orgs", "/namespaces/acme/components", 404),
            ("orgs", "/orgs", 200),
        ],
    )
    def test_each_generation_answers_404_on_the_others_routes(
        self, clock: FakeClock, api: str, path: str, status: int
    ) -> None:
        options = SimulatorOptions(api=api)  # type: ignore[arg-type]
        simulator = SimulatorApi(shop_world(), options, clock)
        assert simulator.handle("GET", f"/api/v1{path}", "", {}).status == status

    def test_unknown_routes_and_methods_are_answered_in_text_before_auth(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        _, client = simulate_v1(shop_world(), token="t")
        unknown = client.get("/orgs")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("text/plain")
        post = client.post("/namespaces", json={})
        assert post.status_code == 405
        assert post.headers["Allow"] == "GET, HEAD"
        assert client.get("/namespaces").status_code == 401

    def test_base_path_is_ignored_by_v1(self, clock: FakeClock) -> None:
        simulator = SimulatorApi(shop_world(), SimulatorOptions(base_path="/v2"), clock)
        assert simulator.handle("GET", "/api/v1/namespaces", "", {}).status == 200
        assert simulator.handle("GET", "/v2/namespaces", "", {}).status == 404


class TestPublicRoutes:
    def test_health_ready_and_version_need_no_token(self, simulate_v1: SimulatorFactory) -> None:
        _, client = simulate_v1(shop_world(), token="t")
        assert (client.get(f"{ROOT}/health").text, client.get(f"{ROOT}/ready").text) == (
            "OK",
            "Ready",
        )
        version = client.get(f"{ROOT}/version").json()
        assert set(version) == {
            "name", "version", "gitRevision", "buildTime", "goOS", "goArch", "goVersion",
        }  # fmt: skip

    @pytest.mark.parametrize(
        ("options", "secured"),
        [
            ({}, False),
            ({"token": "t"}, True),
            ({"oauth_client_id": "c", "oauth_client_secret": "s"}, True),
        ],
        ids=["open", "static-token", "oauth"],
    )
    def test_protected_resource_metadata_says_whether_auth_is_on(
        self, simulate_v1: SimulatorFactory, options: dict[str, str], secured: bool
    ) -> None:
        _, client = simulate_v1(shop_world(), **options)
        document = client.get(f"{ROOT}/.well-known/oauth-protected-resource").json()
        assert document["openchoreo_security_enabled"] is secured
        assert document["bearer_methods_supported"] == ["header"]
        assert document["authorization_servers"] == ([ROOT] if secured else [])
        assert document["resource"] == f"{ROOT}/api/v1"


class TestFaultsAndAccess:
    def test_forbidden_caller_sees_empty_lists_and_403_reads(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        _, client = simulate_v1(shop_world(), forbidden=True)
        assert client.get("/namespaces").json() == {"items": [], "pagination": {}}
        response = client.get("/namespaces/acme")
        assert (response.status_code, response.json()) == (403, FORBIDDEN)

    def test_injected_errors_and_rate_limits_use_the_v1_error_shape(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        _, client = simulate_v1(shop_world(), error_rate=1.0)
        failed = client.get("/namespaces")
        assert failed.status_code >= 500
        assert failed.json() == {"error": "Internal server error", "code": "INTERNAL_ERROR"}
        _, client = simulate_v1(shop_world(), rate_limit_rps=1)
        client.get("/namespaces")
        limited = client.get("/namespaces")
        assert limited.status_code == 429
        assert set(limited.json()) == {"error", "code"}
        assert limited.headers["Retry-After"] == "1"
        assert client.get(f"{ROOT}/health").status_code == 200  # public routes are not limited


class TestCounting:
    def test_requests_are_counted_per_route_and_family(
        self, simulate_v1: SimulatorFactory, clock: FakeClock
    ) -> None:
        api, client = simulate_v1(shop_world(), oauth_client_id="c", oauth_client_secret="s")
        form = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
        token = client.post(f"{ROOT}/oauth2/token", data=form).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        client.get(f"{ROOT}/health")
        client.get(f"{ROOT}/version")
        walk_v1(client, "/namespaces")
        walk_v1(client, "/namespaces/acme/components")
        walk_v1(client, "/namespaces/acme/workloads", limit=2)
        client.get("/namespaces/acme/workloads/cart-workload")
        stats = api.stats
        assert (stats.api_requests, stats.public_requests, stats.token_requests) == (6, 2, 1)
        assert stats.total_requests == 9
        assert stats.requests_by_route == {
            "token": 1,
            "health": 1,
            "version": 1,
            "list_namespaces": 1,
            "list_components": 1,
            "list_workloads": 3,
            "get_workload": 1,
        }
        assert stats.requests_by_route.get("get_component", 0) == 0

    def test_request_log_holds_v1_requests(self, simulate_v1: SimulatorFactory) -> None:
        api, client = simulate_v1(shop_world(), log_requests=True)
        client.get("/namespaces/acme/components", params={"project": "shop", "limit": 1})
        [logged] = api.request_log
        assert (logged.path, logged.status) == ("/api/v1/namespaces/acme/components", 200)
        assert logged.query == {"project": ["shop"], "limit": ["1"]}


def test_in_process_transport_passes_request_bodies(simulate_v1: SimulatorFactory) -> None:
    _, client = simulate_v1(World.empty(), oauth_client_id="c", oauth_client_secret="s")
    form = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
    assert client.post(f"{ROOT}/oauth2/token", data=form).status_code == 200
    assert isinstance(client, httpx.Client)
