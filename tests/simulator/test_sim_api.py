"""Routes, envelopes, auth, errors and injected faults of the simulated API."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from choreo_ingest.clock import SystemClock
from choreo_ingest.simulator.api import SimulatorApi, SimulatorOptions
from choreo_ingest.simulator.world import World

if TYPE_CHECKING:
    from conftest import FakeClock, SimulatorFactory

TOKEN = "header.payload.signature"


def names(world: World) -> tuple[str, str, str]:
    org = next(world.orgs())["name"]
    project = next(world.projects(org))["name"]
    component = next(world.components(org, project))["name"]
    return org, project, component


class TestRoutesAndEnvelopes:
    def test_single_objects_come_in_the_success_envelope(
        self, simulate: SimulatorFactory, small_world: World
    ) -> None:
        _, client = simulate(small_world)
        org, project, _ = names(small_world)
        body = client.get(f"/orgs/{org}").json()
        assert body == {"success": True, "data": small_world.org(org)}
        body = client.get(f"/orgs/{org}/projects/{project}").json()
        assert body == {"success": True, "data": small_world.project(org, project)}

    def test_detail_with_workload_include_carries_endpoints(
        self, simulate: SimulatorFactory
    ) -> None:
        world = World.empty()
        world.add_org("acme")
        world.add_project("acme", "shop")
        endpoints = {"REST_api.v1": {"type": "REST", "port": 8080, "schema": {"content": "x"}}}
        world.add_component("acme", "shop", "cart", endpoints=endpoints, repository_url="https://r")
        _, client = simulate(world)
        path = "/orgs/acme/projects/shop/components/cart"
        data = client.get(path, params={"include": "type,workload"}).json()["data"]
        assert data["workload"]["endpoints"] == endpoints
        repository = data["componentWorkflow"]["systemParameters"]["repository"]
        assert repository == {"url": "https://r", "appPath": "/", "revision": {"branch": "main"}}

    def test_detail_without_workload_include_has_no_workload(
        self, simulate: SimulatorFactory, small_world: World
    ) -> None:
        _, client = simulate(small_world)
        org, project, component = names(small_world)
        path = f"/orgs/{org}/projects/{project}/components/{component}"
        assert "workload" not in client.get(path, params={"include": "type"}).json()["data"]

    def test_component_list_items_carry_no_endpoints(
        self, simulate: SimulatorFactory, small_world: World
    ) -> None:
        _, client = simulate(small_world)
        org, project, _ = names(small_world)
        items = client.get(f"/orgs/{org}/projects/{project}/components").json()["data"]["items"]
        assert items
        assert all("workload" not in item for item in items)

    @pytest.mark.parametrize(
        ("path", "code"),
        [
            ("/orgs/ghost", "ORGANIZATION_NOT_FOUND"),
            ("/orgs/ghost/projects", "ORGANIZATION_NOT_FOUND"),
            ("/orgs/{org}/projects/ghost", "PROJECT_NOT_FOUND"),
            ("/orgs/{org}/projects/ghost/components", "PROJECT_NOT_FOUND"),
            ("/orgs/{org}/projects/{project}/components/ghost", "COMPONENT_NOT_FOUND"),
            ("/orgs/{org}/teams", "NOT_FOUND"),
        ],
        ids=["org", "org-listing", "project", "project-listing", "component", "unknown-route"],
    )
    def test_missing_things_get_404_with_their_code(
        self, simulate: SimulatorFactory, small_world: World, path: str, code: str
    ) -> None:
        _, client = simulate(small_world)
        org, project, _ = names(small_world)
        response = client.get(path.format(org=org, project=project))
        assert response.status_code == 404
        body = response.json()
        assert body["success"] is False
        assert body["code"] == code
        assert body["error"]

    def test_custom_base_path_is_served(self, clock: FakeClock, small_world: World) -> None:
        api = SimulatorApi(small_world, SimulatorOptions(api="orgs", base_path="/v2"), clock)
        assert api.handle("GET", "/v2/orgs", "", {}).status == 200
        assert api.handle("GET", "/api/v1/orgs", "", {}).status == 404

    def test_writes_are_not_allowed(self, simulate: SimulatorFactory, small_world: World) -> None:
        _, client = simulate(small_world)
        assert client.post("/orgs", json={}).status_code == 405


class TestAuth:
    @pytest.mark.parametrize(
        ("headers", "error"),
        [
            ({}, "MISSING_TOKEN"),
            ({"Authorization": "Bearer "}, "MISSING_TOKEN"),
            ({"Authorization": "Bearer wrong"}, "INVALID_TOKEN"),
            ({"Authorization": f"Basic {TOKEN}"}, "INVALID_TOKEN"),
        ],
        ids=["no-header", "empty-bearer", "wrong-token", "wrong-scheme"],
    )
    def test_bad_credentials_get_401_with_the_bare_error_body(
        self,
        simulate: SimulatorFactory,
        small_world: World,
        headers: dict[str, str],
        error: str,
    ) -> None:
        _, client = simulate(small_world, token=TOKEN)
        response = client.get("/orgs", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert set(body) == {"error", "message"}
        assert body["error"] == error
        assert TOKEN not in response.text

    def test_right_token_is_accepted(self, simulate: SimulatorFactory, small_world: World) -> None:
        _, client = simulate(small_world, token=TOKEN)
        response = client.get("/orgs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200

    def test_health_needs_no_token(self, simulate: SimulatorFactory, small_world: World) -> None:
        _, client = simulate(small_world, token=TOKEN)
        assert client.get("/health").status_code == 200
        assert client.get("http://simulator.test/health").status_code == 200

    def test_forbidden_uses_the_envelope(
        self, simulate: SimulatorFactory, small_world: World
    ) -> None:
        _, client = simulate(small_world, forbidden=True)
        response = client.get("/orgs")
        assert response.status_code == 403
        assert response.json()["code"] == "FORBIDDEN"
        assert response.json()["success"] is False


class TestFaults:
    def test_error_rate_is_roughly_honoured_and_reproducible(
        self, simulate: SimulatorFactory, small_world: World
    ) -> None:
        def failures(seed: int) -> list[int]:
            _, client = simulate(small_world, error_rate=0.2, fault_seed=seed)
            return [client.get("/orgs").status_code for _ in range(1000)]

        statuses = failures(3)
        failed = [status for status in statuses if status != 200]
        assert 140 <= len(failed) <= 260
        assert set(failed) == {500, 502, 503, 504}
        assert failures(3) == statuses

    def test_injected_errors_use_internal_error_code(
        self, simulate: SimulatorFactory, small_world: World
    ) -> None:
        api, client = simulate(small_world, error_rate=1.0)
        response = client.get("/orgs")
        assert response.json()["code"] == "INTERNAL_ERROR"
        assert api.stats.server_errors == 1

    def test_rate_limit_answers_429_with_retry_after_then_recovers(
        self, simulate: SimulatorFactory, small_world: World, clock: FakeClock
    ) -> None:
        api, client = simulate(small_world, rate_limit_rps=5)
        statuses = [client.get("/orgs").status_code for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3
        limited = client.get("/orgs")
        assert limited.headers["Retry-After"] == "1"
        clock.advance(1.0)
        assert client.get("/orgs").status_code == 200
        assert api.stats.rate_limited == 4

    def test_latency_is_slept_through_the_clock(
        self, simulate: SimulatorFactory, small_world: World, clock: FakeClock
    ) -> None:
        _, client = simulate(small_world, latency=0.25)
        client.get("/orgs")
        assert clock.sleeps == [0.25]

    def test_options_can_change_between_requests(
        self, simulate: SimulatorFactory, small_world: World
    ) -> None:
        api, client = simulate(small_world)
        assert client.get("/orgs").status_code == 200
        api.update_options(forbidden=True)
        assert client.get("/orgs").status_code == 403


class TestObservability:
    def test_stats_count_routes_statuses_and_the_busiest_second(
        self, simulate: SimulatorFactory, small_world: World, clock: FakeClock
    ) -> None:
        api, client = simulate(small_world)
        org, project, component = names(small_world)
        client.get("/orgs")
        client.get(f"/orgs/{org}/projects/{project}/components/{component}")
        client.get("/orgs/ghost")
        clock.advance(5)
        client.get("/health")
        stats = api.stats
        assert stats.total_requests == 4
        assert stats.requests_by_route == {
            "list_orgs": 1,
            "get_component": 1,
            "get_org": 1,
            "health": 1,
        }
        assert stats.responses_by_status == {200: 3, 404: 1}
        assert stats.max_requests_per_second == 3
        api.reset_stats()
        assert api.stats.total_requests == 0

    def test_request_log_records_query_and_auth_presence_when_on(
        self, simulate: SimulatorFactory, small_world: World
    ) -> None:
        api, client = simulate(small_world, token=TOKEN)
        client.get("/orgs", params={"limit": 3})
        assert api.request_log == []
        api.update_options(log_requests=True)
        client.get("/orgs", params={"limit": 3, "pagination": "cursor"})
        client.get("/orgs", headers={"Authorization": f"Bearer {TOKEN}"})
        first, second = api.request_log
        assert (first.method, first.path, first.status) == ("GET", "/api/v1/orgs", 401)
        assert first.query == {"limit": ["3"], "pagination": ["cursor"]}
        assert first.has_authorization is False
        assert second.has_authorization is True
        assert TOKEN not in repr(api.request_log)

    def test_concurrent_requests_are_counted_in_flight(self, small_world: World) -> None:
        options = SimulatorOptions(api="orgs", latency=0.05)
        api = SimulatorApi(small_world, options, SystemClock())
        barrier = threading.Barrier(6)

        def call() -> None:
            barrier.wait()
            assert api.handle("GET", "/api/v1/orgs", "", {}).status == 200

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = api.stats
        assert stats.total_requests == 6
        assert 2 <= stats.max_in_flight <= 6
        assert stats.max_requests_per_second == 6

    def test_handler_is_thread_safe_under_mutation(self, small_world: World) -> None:
        api = SimulatorApi(small_world, SimulatorOptions(api="orgs"), SystemClock())
        org, project, _ = names(small_world)
        path = f"/api/v1/orgs/{org}/projects/{project}/components"
        statuses: list[int] = []

        def read() -> None:
            for _ in range(40):
                statuses.append(api.handle("GET", path, "pagination=cursor&limit=3", {}).status)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for thread in readers:
            thread.start()
        for index in range(40):
            small_world.add_component(org, project, f"added-{index}")
            small_world.delete_component(org, project, f"added-{index}")
        for thread in readers:
            thread.join()
        assert statuses == [200] * 120
        assert api.stats.total_requests == 120


@pytest.mark.parametrize(
    "changes",
    [
        {"error_rate": 1.5},
        {"latency": -1.0},
        {"rate_limit_rps": 0.5},
        {"default_limit": 0},
        {"default_limit": 2000},
        {"cursor_ttl": -5.0},
        {"base_path": "api/v1"},
    ],
    ids=["error-rate", "latency", "rate", "limit-zero", "limit-above-max", "ttl", "base-path"],
)
def test_nonsense_options_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        SimulatorOptions(**changes)  # type: ignore[arg-type]
