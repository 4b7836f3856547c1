"""serve's answers to input it cannot use and to its own bugs: always the documented
`{"error": ...}` document, a 400 for bad input, and for a bug a 500 and one log line, never an
exception out of the application (uvicorn would write its traceback to stderr)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog.testing

from choreo_ingest.config import Address, Config
from choreo_ingest.errors import ConfigError
from choreo_ingest.server.app import build_app
from choreo_ingest.server.context import Server
from choreo_ingest.server.requests import MAX_REF_LENGTH
from choreo_ingest.server.security import Credentials, check_exposure
from choreo_ingest.service import Service
from choreo_ingest.simulator.world import World

from asgi_support import AsgiClient
from fakes import FakeClock
from sim_support import ingest_world

TOKEN = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HUGE = "99999999999999999999"


class CrashingService(Service):
    """A service with a bug: asking whether it is alive raises."""

    def alive(self) -> bool:
        raise RuntimeError("a bug in /healthz at /srv/secret/path")


@pytest.fixture
def ingested(tmp_path: Path, clock: FakeClock) -> Path:
    ingest_world(tmp_path / "state.db", World.generate(1, 1, 2, seed=4), clock)
    return tmp_path / "state.db"


def client_of(service: Service) -> AsgiClient:
    server = Server(service.config, service.state, service.clock, service, Credentials(TOKEN))
    return AsgiClient(build_app(server))


@pytest.fixture
def client(config: Config, ingested: Path, clock: FakeClock) -> AsgiClient:
    return client_of(Service(config, ingested, clock))


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("\ud800", "refs[1]: holds a lone surrogate (such as \\ud800), which is not Unicode text"),
        (
            "c" * (MAX_REF_LENGTH + 1),
            f"refs[1]: {MAX_REF_LENGTH + 1:,} characters; an entity ref has at most "
            f"{MAX_REF_LENGTH:,}",
        ),
    ],
    ids=["lone-surrogate", "too-long"],
)
def test_a_batch_with_a_ref_the_store_cannot_look_up_is_a_400(
    client: AsgiClient, ref: str, problem: str
) -> None:
    body = json.dumps({"refs": ["component:x/a", ref]})  # ASCII: `\ud800` as JSON escapes it

    answer = client.post("/entities/batch", content=body, headers=AUTH)

    assert (answer.status_code, answer.json()) == (400, {"error": problem})


def test_a_batch_of_refs_of_the_longest_length_is_answered(client: AsgiClient) -> None:
    ref = "component:x/" + "c" * (MAX_REF_LENGTH - len("component:x/"))

    answer = client.post("/entities/batch", json={"refs": [ref]}, headers=AUTH)

    assert answer.status_code == 200
    assert answer.json()["missing"] == [ref]


@pytest.mark.parametrize(
    "url",
    [
        f"/changes?since={HUGE}",
        f"/changes?since=-{HUGE}",
        f"/providers/openchoreo/removals?limit={HUGE}",
    ],
    ids=["since", "negative-since", "removals-limit"],
)
def test_a_whole_number_past_what_the_store_holds_is_a_400(client: AsgiClient, url: str) -> None:
    answer = client.get(url, headers=AUTH)

    assert answer.status_code == 400
    assert "is out of range" in answer.json()["error"]


def test_a_bug_in_a_route_answers_a_json_500_and_logs_one_line(
    config: Config, ingested: Path, clock: FakeClock
) -> None:
    client = client_of(CrashingService(config, ingested, clock))

    with structlog.testing.capture_logs() as logs:
        answer = client.get("/healthz")  # raises here if the exception left the application

    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "error": "internal error: RuntimeError (a bug; the server's log says more)"
    }
    crashed = [line for line in logs if line["log_level"] == "error"]
    assert crashed == [
        {
            "event": "http_request_crashed",
            "log_level": "error",
            "method": "GET",
            "route": "/healthz",
            "error": "RuntimeError: a bug in /healthz at /srv/secret/path",
        }
    ]
    [request] = [line for line in logs if line["event"] == "http_request"]
    assert (request["status"], request["duration_ms"]) == (500, 0.0)  # the clock stood still


def test_the_service_keeps_answering_after_a_bug(
    config: Config, ingested: Path, clock: FakeClock
) -> None:
    client = client_of(CrashingService(config, ingested, clock))

    assert client.get("/healthz").status_code == 500
    assert client.get("/providers").status_code == 200


@pytest.mark.parametrize("given_by", ["serve.listen", "--listen"])
def test_an_exposed_address_without_a_token_is_refused_naming_what_gave_it(
    given_by: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_exposure(Address.parse("0.0.0.0:8080"), Credentials(), False, given_by=given_by)
    assert caught.value.path == given_by
    assert str(caught.value).startswith(f"{given_by}: refusing to serve the API on 0.0.0.0:8080")


def test_a_loopback_address_or_a_token_needs_no_refusal() -> None:
    assert not check_exposure(Address.parse("127.0.0.1:8080"), Credentials(), False)
    assert not check_exposure(Address.parse("0.0.0.0:8080"), Credentials(api_token="t" * 32), False)
    assert check_exposure(Address.parse("0.0.0.0:8080"), Credentials(), True)
