"""The simulator over real loopback sockets: httpx round trips, raw HTTP/1.x, and the CLI entry."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from choreo_ingest.simulator.api import SimulatorApi, SimulatorOptions
from choreo_ingest.simulator.server import RunningServer, start_server
from choreo_ingest.simulator.world import World

pytestmark = pytest.mark.slow

TOKEN = "sim-token"


@pytest.fixture
def world() -> World:
    return World.generate(orgs=2, projects=2, components=30, seed=5, hidden_fraction=0.1)


@pytest.fixture
def server(world: World) -> Iterator[RunningServer]:
    with start_server(SimulatorApi(world, SimulatorOptions(api="orgs", token=TOKEN))) as running:
        yield running


def raw_exchange(server: RunningServer, payload: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(payload)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_walks_and_details_over_one_keep_alive_connection(
    server: RunningServer, world: World
) -> None:
    org = next(world.orgs())["name"]
    project = next(world.projects(org))["name"]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seen: list[str] = []
    with httpx.Client(base_url=server.url, headers=headers) as client:
        params: dict[str, str | int] = {"pagination": "cursor", "limit": 7}
        while True:
            data = client.get(f"/orgs/{org}/projects/{project}/components", params=params).json()
            seen += [item["name"] for item in data["data"]["items"]]
            if not data["data"]["nextCursor"]:
                break
            params["cursor"] = data["data"]["nextCursor"]
        for name in seen:
            response = client.get(
                f"/orgs/{org}/projects/{project}/components/{name}",
                params={"include": "type,workload"},
            )
            assert response.json()["data"] == world.component(org, project, name)
    assert seen == [item["name"] for item in world.components(org, project)]
    assert server.accepted_connections == 1
    assert server.url == f"http://127.0.0.1:{server.port}/api/v1"


def test_non_ascii_fields_survive_the_wire(server: RunningServer, world: World) -> None:
    world.add_org("unicode", display_name="注文サービス Café")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        assert c.get("/orgs/unicode").json()["data"]["displayName"] == "注文サービス Café"


def test_401_travels_with_its_bare_body(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/orgs")
    assert response.status_code == 401
    assert response.json()["error"] == "MISSING_TOKEN"


def test_http10_request_is_answered_and_closed(server: RunningServer) -> None:
    reply = raw_exchange(server, b"GET /health HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in reply
    assert reply.endswith(b"\r\n\r\nOK")


def test_pipelined_requests_get_answers_in_order(server: RunningServer) -> None:
    reply = raw_exchange(
        server,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /api/v1/orgs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 401 Unauthorized" in reply


def test_request_body_is_skipped_and_connection_reused(server: RunningServer) -> None:
    reply = raw_exchange(
        server,
        b"POST /api/v1/orgs HTTP/1.1\r\nAuthorization: Bearer sim-token\r\n"
        b"Content-Length: 5\r\n\r\nhello"
        b"HEAD /health HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 405 Method Not Allowed")
    assert reply.endswith(b"Content-Length: 2\r\nConnection: close\r\n\r\n")


def test_malformed_request_line_gets_400(server: RunningServer) -> None:
    assert raw_exchange(server, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")


def test_stop_closes_idle_keep_alive_connections(world: World) -> None:
    running = start_server(SimulatorApi(world))
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        assert connection.recv(65536).startswith(b"HTTP/1.1 200")
        running.stop()
        assert connection.recv(65536) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=1).close()


def test_serve_forever_prints_only_its_url_and_stays_quiet() -> None:
    code = (
        "from choreo_ingest.simulator.server import serve_forever\n"
        "serve_forever(port=0, orgs=2, projects=1, components=3, token='t', api='orgs')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/api/v1")
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer t"}) as client:
            assert len(client.get("/orgs").json()["data"]["items"]) == 2
            assert client.get("/orgs/nope").status_code == 404
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stdout == ""
    assert stderr == ""


def test_v1_token_and_walk_over_real_sockets(world: World) -> None:
    options = SimulatorOptions(oauth_client_id="c", oauth_client_secret="s", base_path="/v2")
    with start_server(SimulatorApi(world, options)) as running:
        assert running.url == f"http://127.0.0.1:{running.port}/api/v1"
        form = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
        with httpx.Client(base_url=running.url) as client:
            token = client.post(f"{running.root_url}/oauth2/token", data=form).json()
            client.headers["Authorization"] = f"Bearer {token['access_token']}"
            namespace = next(world.v1_namespaces())["metadata"]["name"]
            params: dict[str, str | int] = {"limit": 7}
            seen: list[str] = []
            while True:
                page = client.get(f"/namespaces/{namespace}/workloads", params=params).json()
                seen += [item["metadata"]["name"] for item in page["items"]]
                if not page["pagination"].get("nextCursor"):
                    break
                params["cursor"] = page["pagination"]["nextCursor"]
        assert seen == [w["metadata"]["name"] for w in world.v1_workloads(namespace)]
        assert running.accepted_connections == 1
