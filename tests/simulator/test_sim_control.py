"""The `/_control/` debug routes: stats, world dump and mutations, only when switched on."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest

from choreo_ingest.simulator.world import World

if TYPE_CHECKING:
    from conftest import SimulatorFactory

ROOT = "http://simulator.test"


def test_control_routes_are_off_by_default(simulate: SimulatorFactory, small_world: World) -> None:
    api, client = simulate(small_world)
    assert client.get(f"{ROOT}/_control/stats").status_code == 404
    assert client.post(f"{ROOT}/_control/reset_stats").status_code == 405
    assert api.stats.total_requests == 2  # served as API requests; nothing was reset


def test_stats_count_api_requests_but_not_control_requests(
    simulate: SimulatorFactory, small_world: World
) -> None:
    _, client = simulate(small_world, control=True)
    client.get("/orgs")
    client.get("/orgs/ghost")
    stats = client.get(f"{ROOT}/_control/stats").json()["data"]
    assert stats["total_requests"] == 2
    assert stats["responses_by_status"] == {"200": 1, "404": 1}
    assert stats["max_in_flight"] == 1
    assert client.post(f"{ROOT}/_control/reset_stats").json() == {
        "success": True,
        "data": {"reset": True},
    }
    assert client.get(f"{ROOT}/_control/stats").json()["data"]["total_requests"] == 0


def test_world_dump_holds_every_visible_item_with_component_details(
    simulate: SimulatorFactory, small_world: World
) -> None:
    _, client = simulate(small_world, control=True)
    dump = client.get(f"{ROOT}/_control/world").json()["data"]
    assert dump["orgs"] == list(small_world.orgs())
    assert dump["projects"] == [
        project for org in small_world.orgs() for project in small_world.projects(org["name"])
    ]
    assert dump["components"] == list(small_world.component_details())
    assert all("restricted" not in org["name"] for org in dump["orgs"])  # hidden ones stay out


def test_add_and_delete_component_change_what_the_api_serves(
    simulate: SimulatorFactory,
) -> None:
    world = World.empty()
    world.add_org("acme")
    world.add_project("acme", "shop")
    _, client = simulate(world, control=True)
    endpoints = {"http": {"type": "REST", "port": 8080}}
    params = {"org": "acme", "project": "shop", "name": "cart"}
    added = client.post(
        f"{ROOT}/_control/add_component", params={**params, "endpoints": json.dumps(endpoints)}
    ).json()["data"]
    assert added["workload"]["endpoints"] == endpoints
    detail = client.get("/orgs/acme/projects/shop/components/cart", params={"include": "workload"})
    assert detail.json()["data"] == added
    assert client.post(f"{ROOT}/_control/delete_component", params=params).status_code == 200
    assert client.get("/orgs/acme/projects/shop/components/cart").status_code == 404


@pytest.mark.parametrize(
    ("method", "route", "params", "status"),
    [
        ("POST", "delete_component", {"org": "acme", "project": "shop", "name": "ghost"}, 404),
        ("POST", "add_component", {"org": "acme", "project": "ghost", "name": "cart"}, 404),
        ("POST", "add_component", {"org": "acme", "project": "shop"}, 400),
        ("POST", "add_component", {"org": "acme", "project": "shop", "name": "Not_A_Name"}, 400),
        (
            "POST",
            "add_component",
            {"org": "acme", "project": "shop", "name": "c", "endpoints": "[]"},
            400,
        ),
        ("GET", "add_component", {}, 405),
        ("GET", "teleport", {}, 404),
    ],
    ids=[
        "delete-missing",
        "missing-project",
        "no-name",
        "bad-name",
        "bad-endpoints",
        "method",
        "route",
    ],
)
def test_bad_control_requests_get_an_error_envelope(
    simulate: SimulatorFactory, method: str, route: str, params: dict[str, str], status: int
) -> None:
    world = World.empty()
    world.add_org("acme")
    world.add_project("acme", "shop")
    _, client = simulate(world, control=True)
    response = client.request(method, f"{ROOT}/_control/{route}", params=params)
    assert response.status_code == status
    assert response.json()["success"] is False


def test_control_bypasses_token_and_injected_faults(
    simulate: SimulatorFactory, small_world: World
) -> None:
    _, client = simulate(small_world, control=True, token="t", error_rate=1.0)
    assert client.get("/orgs", headers={"Authorization": "Bearer t"}).status_code >= 500
    assert client.get(f"{ROOT}/_control/stats").json()["data"]["server_errors"] == 1


@pytest.mark.slow
def test_simulate_serve_control_flag_serves_the_routes() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", "simulate", "serve", "--port", "0", "--control"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        url = process.stderr.readline().rsplit(" ", 1)[-1].strip()
        root = url.removesuffix("/api/v1")
        httpx.get(f"{url}/orgs", params={"pagination": "cursor"})
        stats = httpx.get(f"{root}/_control/stats").json()["data"]
        assert stats["total_requests"] == 1
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0
