"""The names a loopback `serve` without a token answers: a web page of another site whose name
was rebound to 127.0.0.1 (DNS rebinding) is `serve`'s own origin to the browser, which then lets
it read every answer, the catalog included. Its requests carry its own name as `Host`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from choreo_ingest.config import Address, Config, ServeConfig
from choreo_ingest.server.app import build_app
from choreo_ingest.server.context import Server
from choreo_ingest.server.security import Credentials, answered_hosts, host_problem
from choreo_ingest.service import Service
from choreo_ingest.simulator.world import World
from choreo_ingest.store import Store

from asgi_support import AsgiClient
from fakes import FakeClock
from sim_support import PROVIDER, ingest_world

REBOUND = "rebound.evil.example:8080"
REFUSAL = (
    f"a request for {REBOUND!r} is refused: without a token (serve.auth.tokenFile), serve "
    "answers only requests for localhost or an IP address (a web page whose name was "
    "rebound to 127.0.0.1 could read it); add the name to serve.allowedHosts"
)
READS = ["/", "/status", f"/providers/{PROVIDER}/removals", "/changes", "/metrics", "/healthz"]


@pytest.fixture
def ingested(tmp_path: Path, clock: FakeClock) -> Path:
    ingest_world(tmp_path / "state.db", World.generate(2, 2, 3, seed=12), clock)
    return tmp_path / "state.db"


def entity_count(state: Path) -> int:
    with Store.open(state, readonly=True) as store:
        return sum(1 for _ in store.iter_entities())


def client_of(
    config: Config, state: Path, clock: FakeClock, hosts: frozenset[str] | None
) -> AsgiClient:
    service = Service(config, state, clock)
    server = Server(config, service.state, clock, service, Credentials(), hosts)
    return AsgiClient(build_app(server))


@pytest.mark.parametrize("path", READS)
def test_a_request_for_a_name_rebound_to_loopback_reads_nothing(
    config: Config, ingested: Path, clock: FakeClock, path: str
) -> None:
    with client_of(config, ingested, clock, frozenset()) as client:
        answer = client.get(path, headers={"Host": REBOUND})

    assert answer.status_code == 403
    assert answer.json() == {"error": REFUSAL}


def test_a_state_changing_request_for_such_a_name_changes_nothing(
    config: Config, ingested: Path, clock: FakeClock
) -> None:
    before = entity_count(ingested)
    with client_of(config, ingested, clock, frozenset()) as client:
        answer = client.post(f"/providers/{PROVIDER}/reset?purge=true", headers={"Host": REBOUND})

    assert answer.status_code == 403
    assert entity_count(ingested) == before > 0


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8080",
        "127.0.0.1",
        "localhost:8080",
        "LOCALHOST.:8080",
        "backstage.localhost:8080",
        "[::1]:8080",
        "10.0.0.7:8080",
        "ingest.internal:8080",
        "Ingest.Internal.",
    ],
)
def test_localhost_ip_addresses_and_allowed_names_are_answered(
    config: Config, ingested: Path, clock: FakeClock, host: str
) -> None:
    with client_of(config, ingested, clock, frozenset({"ingest.internal"})) as client:
        answer = client.get("/changes", headers={"Host": host})

    assert answer.status_code == 200
    assert answer.json()["changes"]


def test_a_star_answers_every_name_and_no_check_answers_every_name(
    config: Config, ingested: Path, clock: FakeClock
) -> None:
    for hosts in (frozenset({"*"}), None):
        with client_of(config, ingested, clock, hosts) as client:
            assert client.get("/changes", headers={"Host": REBOUND}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "localhost.evil.example",
        "[::1",
        "[::1]evil.example",
        "[::1]:80@evil.example",
        "127.0.0.1.evil.example:80",
        "evil.example:\u00b2",  # a digit to str.isdigit, no port
        "",
        "evil.example#.localhost",
        "evil.example?.localhost:80",
        "evil.example/.localhost",
        "user@evil.example.localhost",
    ],
)
def test_names_that_only_look_local_are_refused(host: str) -> None:
    assert host_problem(host, frozenset()) is not None


def test_a_request_without_a_host_comes_from_no_browser() -> None:
    assert host_problem(None, frozenset()) is None


@pytest.mark.parametrize(
    ("listen", "token", "expected"),
    [
        ("127.0.0.1:8080", None, frozenset({"ingest.internal"})),
        ("[::1]:8080", None, frozenset({"ingest.internal"})),
        ("localhost:8080", None, frozenset({"ingest.internal"})),
        ("127.0.0.1:8080", "api-token", None),  # the token guards every route that reads much
        ("0.0.0.0:8080", None, None),  # --insecure-no-auth: reached by whatever names it has
    ],
)
def test_the_check_is_on_for_a_loopback_serve_without_a_token(
    config: Config, listen: str, token: str | None, expected: frozenset[str] | None
) -> None:
    configured = replace(config, serve=ServeConfig(allowed_hosts=("ingest.internal",)))

    hosts = answered_hosts(Address.parse(listen), Credentials(token), configured)

    assert hosts == expected
