"""The `/_control/` debug routes: stats, world dump and mutations, only when switched on."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest

from choreo_ingest.simulator.world import World

from sim_support import plain

if TYPE_CHECKING:
    from conftest import SimulatorFactory

ROOT = "http://simulator.test"


def test_control_routes_are_off_by_default(simulate: SimulatorFactory, small_world: World) -> None:
    api, client = simulate(small_world)
    assert client.get(f"{ROOT}/_control/stats").status_code == 404
    assert client.post(f"{ROOT}/_control/reset_stats").status_code == 405
    assert api.stats.total_requests == 2  # served as API requests; nothing was reset


def test_control_routes_need_the_token_when_the_api_does(
    simulate_v1: SimulatorFactory, small_world: World
) -> None:
    """The debug routes change the world: on a simulator with a token they are no back door."""
    _, client = simulate_v1(small_world, control=True, token="sim-token-9c1d")

    assert client.get(f"{ROOT}/_control/stats").status_code == 401
    assert client.post(f"{ROOT}/_control/reset_stats").status_code == 401
    authorized = {"Authorization": "Bearer sim-token-9c1d"}
    assert client.get(f"{ROOT}/_control/stats", headers=authorized).status_code == 200


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


def test_control_bypasses_injected_faults_but_not_the_token(
    simulate: SimulatorFactory, small_world: World
) -> None:
    _, client = simulate(small_world, control=True, token="t", error_rate=1.0)
    authorized = {"Authorization": "Bearer t"}
    assert client.get("/orgs", headers=authorized).status_code >= 500
    stats = client.get(f"{ROOT}/_control/stats", headers=authorized).json()["data"]
    assert stats["server_errors"] == 1


def v1_world() -> World:
    world = World.empty()
    world.add_org("acme")
    world.add_project("acme", "shop")
    world.add_component("acme", "shop", "cart", endpoints={"http": {"type": "REST", "port": 80}})
    return world


class TestV1:
    def test_world_dump_holds_the_v1_resources(
        self, simulate_v1: SimulatorFactory, small_world: World
    ) -> None:
        _, client = simulate_v1(small_world, control=True)
        dump = client.get(f"{ROOT}/_control/world").json()["data"]
        names = [n["metadata"]["name"] for n in small_world.v1_namespaces()]
        assert dump == {
            "namespaces": list(small_world.v1_namespaces()),
            "projects": [p for name in names for p in small_world.v1_projects(name)],
            "components": [c for name in names for c in small_world.v1_components(name)],
            "workloads": [w for name in names for w in small_world.v1_workloads(name)],
        }
        orgs = client.get(f"{ROOT}/_control/world", params={"api": "orgs"}).json()["data"]
        assert orgs["orgs"] == list(small_world.orgs())

    def test_component_routes_take_namespace_and_find_the_project(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        _, client = simulate_v1(v1_world(), control=True)
        params = {"namespace": "acme", "project": "shop", "name": "basket", "owner": "team-x"}
        assert client.post(f"{ROOT}/_control/add_component", params=params).status_code == 200
        basket = client.get("/namespaces/acme/components/basket").json()
        assert basket["metadata"]["annotations"] == {"backstage.io/owner": "team-x"}
        deleted = client.post(
            f"{ROOT}/_control/delete_component", params={"namespace": "acme", "name": "basket"}
        )
        assert deleted.status_code == 200
        assert client.get("/namespaces/acme/components/basket").status_code == 404

    def test_workload_routes_add_change_and_delete_workloads(
        self, simulate_v1: SimulatorFactory
    ) -> None:
        _, client = simulate_v1(v1_world(), control=True)
        endpoints = {"grpc": {"type": "gRPC", "port": 50051}}
        added = client.post(
            f"{ROOT}/_control/add_workload",
            params={"namespace": "acme", "name": "cart-2", "component": "cart",
                    "endpoints": json.dumps(endpoints)},
        )  # fmt: skip
        assert added.json()["data"]["spec"]["endpoints"] == endpoints
        changes = json.dumps({"deletionTimestamp": "2026-01-01T00:00:00Z"})
        update = {"kind": "workload", "namespace": "acme", "name": "cart-2", "changes": changes}
        assert client.post(f"{ROOT}/_control/update", params=update).status_code == 200
        workload = client.get("/namespaces/acme/workloads/cart-2").json()
        assert workload["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:00Z"
        gone = {"namespace": "acme", "name": "cart-workload"}
        assert client.post(f"{ROOT}/_control/delete_workload", params=gone).status_code == 200
        listed = client.get("/namespaces/acme/workloads").json()["items"]
        assert [w["metadata"]["name"] for w in listed] == ["cart-2"]

    @pytest.mark.parametrize(
        ("kind", "name"), [("namespace", "acme"), ("project", "shop"), ("component", "cart")]
    )
    def test_update_sets_a_deletion_timestamp_on_any_kind(
        self, simulate_v1: SimulatorFactory, kind: str, name: str
    ) -> None:
        _, client = simulate_v1(v1_world(), control=True)
        changes = json.dumps({"deletionTimestamp": "2026-01-01T00:00:00Z"})
        params = {"kind": kind, "namespace": "acme", "name": name, "changes": changes}
        assert client.post(f"{ROOT}/_control/update", params=params).status_code == 200
        path = {"namespace": "", "project": "/projects/shop", "component": "/components/cart"}
        resource = client.get(f"/namespaces/acme{path[kind]}").json()
        assert resource["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:00Z"

    @pytest.mark.parametrize(
        ("route", "params", "status"),
        [
            ("update", {"kind": "teapot", "namespace": "acme", "name": "x"}, 400),
            ("update", {"kind": "workload", "namespace": "acme", "name": "ghost"}, 404),
            ("add_workload", {"namespace": "acme", "name": "w", "component": "ghost"}, 404),
            ("delete_workload", {"namespace": "acme", "name": "ghost"}, 404),
            ("delete_component", {"namespace": "acme", "name": "ghost"}, 404),
        ],
        ids=["kind", "missing-workload", "missing-component", "delete-missing", "no-project"],
    )
    def test_bad_v1_control_requests_get_an_error_envelope(
        self, simulate_v1: SimulatorFactory, route: str, params: dict[str, str], status: int
    ) -> None:
        _, client = simulate_v1(v1_world(), control=True)
        response = client.post(f"{ROOT}/_control/{route}", params=params)
        assert response.status_code == status
        assert response.json()["success"] is False


def serve(*options: str) -> tuple[subprocess.Popen[str], str]:
    """`choreo-ingest simulate serve --port 0 OPTIONS` and the URL it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", "simulate", "serve", "--port", "0", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    return process, process.stderr.readline().rsplit(" ", 1)[-1].strip()


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM, and the clean exit it must bring; killed if it does not come (a loaded machine
    gets 30 s), so that no simulator outlives its test."""
    process.terminate()
    try:
        _, errors = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, errors


@pytest.mark.slow
def test_simulate_serve_speaks_v1_with_oauth_by_default_and_says_its_token_url() -> None:
    process, url = serve("--control", "--oauth-client-id", "c", "--oauth-client-secret", "s")
    try:
        root = url.removesuffix("/api/v1")
        assert process.stderr is not None
        said = process.stderr.readline()
        assert said == f"its token endpoint: {root}/oauth2/token\n"
        form = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
        token = httpx.post(said.split()[-1], data=form).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert len(httpx.get(f"{url}/namespaces", headers=headers).json()["items"]) == 3
        stats = httpx.get(f"{root}/_control/stats", headers=headers).json()["data"]
        assert (stats["api_requests"], stats["token_requests"]) == (1, 1)
    finally:
        stop(process)


@pytest.mark.slow
def test_simulate_serve_control_flag_serves_the_routes() -> None:
    process, url = serve("--control", "--api", "orgs")
    try:
        root = url.removesuffix("/api/v1")
        assert httpx.get(f"{url}/orgs", params={"pagination": "cursor"}).status_code == 200
        stats = httpx.get(f"{root}/_control/stats").json()["data"]
        assert stats["total_requests"] == 1
    finally:
        stop(process)


@pytest.mark.parametrize(
    ("arguments", "warned"),
    [
        ([], "with no authentication"),
        (["--token", "t0ken-abc", "--control"], "can change the simulated world"),
    ],
    ids=["unauthenticated", "with-token-and-control"],
)
def test_serving_beyond_loopback_is_warned_about(arguments: list[str], warned: str) -> None:
    """An address other than loopback exposes an API anyone on the network may call. The test
    names a documentation address (192.0.2.10, RFC 5737) that no machine holds: the warning comes
    first, then binding fails, so nothing is ever served beyond this machine."""
    done = subprocess.run(
        [sys.executable, "-m", "choreo_ingest", "simulate", "serve", "--port", "0",
         "--host", "192.0.2.10", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    shown = plain(done.stderr)
    assert "choreo-ingest: warning: --host 192.0.2.10 serves the simulator beyond this machine" in (
        shown
    )
    assert warned in done.stderr
    assert "cannot listen on 192.0.2.10" in done.stderr
    assert "t0ken-abc" not in done.stderr


def test_loopback_is_not_warned_about() -> None:
    process, url = serve("--host", "127.0.0.1")  # its first line is the URL, not a warning
    stop(process)
    assert url.startswith("http://127.0.0.1:")


SIGTERM_ON_ANOTHER_THREAD = """
import signal, sys, threading, time
from choreo_ingest.simulator.server import serve_forever

def poke() -> None:
    time.sleep(1.0)  # serve_forever is blocked in accept() by now
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

threading.Thread(target=poke, daemon=True).start()
serve_forever(port=0, orgs=1, projects=1, components=1)
"""


@pytest.mark.slow
def test_simulate_serve_stops_on_a_sigterm_another_thread_received() -> None:
    """A process-directed SIGTERM may reach any thread (a connection's, say). Python runs its
    handler on the main thread only, and only once that thread leaves a blocking call: an
    accept loop that never wakes would serve on for ever."""
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_ON_ANOTHER_THREAD],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "openchoreo simulator at" in done.stderr
