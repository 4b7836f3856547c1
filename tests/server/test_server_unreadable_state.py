"""serve's routes when the state store cannot be read (PostgreSQL down, a state file that is
garbage, that this user may not read, or in a directory it may not search): each answers the
documented `503` (`/health` its unhealthy `health --json` document, `/readyz` not ready, the
others `{"error": ...}`), one line that names the store, never the PostgreSQL URL's password;
and a request that waits on the store never holds up the event loop: `/healthz` (as any other
request, the event webhook's) is answered meanwhile."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from contextlib import nullcontext, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import structlog.testing

from choreo_ingest.config import Config
from choreo_ingest.server.app import build_app
from choreo_ingest.server.context import Server
from choreo_ingest.server.security import Credentials
from choreo_ingest.service import Service
from choreo_ingest.store import PostgresLocation, StateLocation

from asgi_support import AsgiClient
from broken_states import AS_NOBODY, PASSWORD, garbage, postgresql_down, unreadable, unsearchable
from fakes import FakeClock
from privileges import as_nobody

ROUTES = [
    ("GET", "/readyz"),
    ("GET", "/health"),
    ("GET", "/incremental/health"),
    ("GET", "/status"),
    ("GET", "/status/openchoreo"),
    ("GET", "/status/retired"),  # not configured: only the state can say it is known
    ("GET", "/providers/openchoreo"),
    ("GET", "/incremental/providers/openchoreo"),
    ("GET", "/providers/openchoreo/removals"),
    ("GET", "/"),
    ("GET", "/changes"),
    ("GET", "/entities"),
    ("POST", "/entities/batch"),
    ("POST", "/events/openchoreo"),
    ("POST", "/providers/openchoreo/refresh"),
    ("POST", "/providers/openchoreo/reset"),
    ("POST", "/providers/openchoreo/removals/approve"),
]
"""Every route that reads or writes the state (`/metrics` is a 200 then: test_server_metrics)."""

BODIES: dict[str, Any] = {
    "/entities/batch": {"refs": ["component:acme/a"]},
    "/events/openchoreo": {
        "kind": "Component",
        "name": "a",
        "namespace": "acme",
        "action": "created",
    },
}


BROKEN = pytest.mark.parametrize(
    "broken",
    [postgresql_down, garbage, unreadable, unsearchable],
    ids=["postgresql-down", "garbage-file", "mode-000-file", "unsearchable-directory"],
)


def server_of(config: Config, state: Path | StateLocation, clock: FakeClock) -> Server:
    service = Service(config, state, clock)
    return Server(config, service.state, clock, service, Credentials())


@BROKEN
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_route_answers_a_store_it_cannot_read_as_documented(
    config: Config,
    directory: Path,
    clock: FakeClock,
    broken: Callable[[Path, FakeClock], Path | StateLocation],
    method: str,
    path: str,
) -> None:
    state = broken(directory, clock)
    client = AsgiClient(build_app(server_of(config, state, clock)))
    before = state.read_bytes() if broken is garbage else None

    nobody = as_nobody() if broken in AS_NOBODY else nullcontext()
    with structlog.testing.capture_logs() as logs, nobody:
        answer = client.request(method, path, json=BODIES.get(path))

    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/json"
    document = answer.json()
    if path == "/readyz":
        assert document == {"ready": False, "error": document["error"]}
        problem = document["error"]
    elif path.endswith("/health"):
        assert document == {"healthy": False, "providers": [], "problems": document["problems"]}
        [problem] = document["problems"]
    else:
        assert document == {"error": document["error"]}
        assert answer.headers["retry-after"] == "30"  # the event forwarder tries again later
        problem = document["error"]
    assert isinstance(problem, str)
    assert "\n" not in problem
    assert str(state) in problem  # the store, named as shown to people (its password `***`)
    assert PASSWORD not in answer.text
    assert not [line for line in logs if line["event"] == "http_request_crashed"]
    if before is not None:
        assert state.read_bytes() == before  # not taken for a state to write to


class Blackhole:
    """A loopback port that takes connections and never says a word (a PostgreSQL server that
    hangs), until `hang_up`: then each is closed, and each later one at once."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted = threading.Event()
        self._hung_up = False
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._take, daemon=True)
        self._thread.start()

    def _take(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # shut down
                return
            with self._lock:
                if self._hung_up:
                    conn.close()
                    continue
                self._held.append(conn)
            self.accepted.set()

    def hang_up(self) -> None:
        with self._lock:
            self._hung_up = True
            for conn in self._held:
                conn.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.hang_up()
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self._thread.join(5)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_request_waiting_on_the_store_leaves_the_event_loop_free(
    config: Config, clock: FakeClock, method: str, path: str
) -> None:
    """While the request waits on a PostgreSQL server that never answers, `/healthz` (which does
    not touch the state) is answered; then the server hangs up and the request is a 503."""
    with Blackhole() as blackhole:
        url = (
            f"postgresql://choreo:{PASSWORD}@127.0.0.1:{blackhole.port}/choreo"
            "?connect_timeout=2&sslmode=disable&gssencmode=disable"
        )
        app = build_app(server_of(config, PostgresLocation(url), clock))

        async def scenario() -> tuple[list[str], httpx.Response, httpx.Response]:
            finished: list[str] = []

            async def request(http: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
                answer = await http.request(method, path, json=BODIES.get(path))
                finished.append(path)
                return answer

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                waiting = asyncio.create_task(request(http, method, path))
                loop = asyncio.get_running_loop()
                assert await loop.run_in_executor(None, blackhole.accepted.wait, 10)
                alive = await request(http, "GET", "/healthz")
                blackhole.hang_up()
                return finished, alive, await waiting

        finished, alive, answer = asyncio.run(scenario())

    assert finished == ["/healthz", path]  # answered while the other waited on the store
    assert alive.status_code == 200
    assert answer.status_code == 503, answer.text
    assert PASSWORD not in answer.text


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_readyz_before_the_first_tick_says_no_state_yet_as_health_does(
    config: Config, tmp_path: Path, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    """A store that holds no state yet, a file or a PostgreSQL schema: `/readyz` says so in the
    words of `/health` (and of `health`), naming the store, its password redacted."""
    state: Path | StateLocation = tmp_path / "state.db"
    password = PASSWORD
    if backend == "postgres":
        cluster, url = request.getfixturevalue("pg_cluster"), request.getfixturevalue("pg_url")
        password = cluster.password
        state = PostgresLocation(cluster.password_url(url, password=password))
    client = AsgiClient(build_app(server_of(config, state, clock)))

    ready, health = client.get("/readyz"), client.get("/health")

    assert (ready.status_code, health.status_code) == (503, 503)
    [problem] = health.json()["problems"]
    assert problem.startswith(f"no state yet at {state}: ")
    assert ready.json() == {"ready": False, "error": problem}
    assert password not in ready.text + health.text
