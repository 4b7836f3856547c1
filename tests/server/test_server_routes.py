"""serve's routes in-process (Starlette's AsgiClient), over a real state file: status codes, the
documents (the same as the CLI's `--json`), auth, limits."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog.testing
from prometheus_client.parser import text_string_to_metric_families

from choreo_ingest.config import ChangesConfig, Config, IncrementalConfig, ServeConfig
from choreo_ingest.event_backlog import FLOOD_EVENTS
from choreo_ingest.feed import MAX_ANSWER_CHARS
from choreo_ingest.invocation import copy_state
from choreo_ingest.models import Delta, ProviderState
from choreo_ingest.server.app import build_app
from choreo_ingest.server.context import OPERATOR_THREADS, Server
from choreo_ingest.server.security import Credentials
from choreo_ingest.service import Service
from choreo_ingest.simulator.options import ApiGeneration
from choreo_ingest.simulator.world import World
from choreo_ingest.store import PostgresLocation, StateLocation, Store, state_location
from choreo_ingest.store.run_lock import RunLock

from asgi_support import AsgiClient
from backstage_validator import (
    entity_lines,
    run_backstage_validator,
    skip_unless_backstage_validator,
)
from fakes import FakeClock, make_entity
from sim_support import ingest_world, run_cli, write_config

TOKEN = "api-token-for-tests"
SECRET = "events-secret-for-tests"
UNREACHABLE_URL = "http://127.0.0.1:9/api/v1"
PROVIDER = "openchoreo"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


def component_event(name: str, action: str = "created") -> dict[str, Any]:
    return {"kind": "Component", "name": name, "namespace": "acme", "action": action}


@pytest.fixture
def world() -> World:
    return World.generate(2, 2, 3, seed=12)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "choreo-ingest.yaml",
        UNREACHABLE_URL,
        token="openchoreo-token",
        state={"path": "state.db"},
        incremental={"restLength": 600, "burstLength": 1},
    )


@pytest.fixture
def config(config_file: Path) -> Config:
    from choreo_ingest.config import load_config

    return load_config(config_file)


@pytest.fixture
def ingested(tmp_path: Path, world: World, clock: FakeClock) -> Path:
    ingest_world(tmp_path / "state.db", world, clock)
    return tmp_path / "state.db"


def make_client(
    config: Config,
    state: Path | StateLocation,
    clock: FakeClock,
    credentials: Credentials | None = None,
) -> AsgiClient:
    service = Service(config, state, clock)
    server = Server(config, service.state, clock, service, credentials or Credentials())
    return AsgiClient(build_app(server))


@pytest.fixture
def client(config: Config, ingested: Path, clock: FakeClock) -> Iterator[AsgiClient]:
    with make_client(config, ingested, clock, Credentials(TOKEN, None)) as test_client:
        yield test_client


def cli_json(tmp_path: Path, *args: str) -> Any:
    done = run_cli(*args, "--json", cwd=tmp_path)
    return json.loads(done.stdout)


def post_within(client: AsgiClient, event: dict[str, Any], *, seconds: float) -> httpx.Response:
    """The answer to posting `event`, which must come within `seconds` (a post that waits for
    ever fails the test rather than hang it)."""
    answers: list[httpx.Response] = []
    posting = threading.Thread(
        target=lambda: answers.append(client.post("/events/openchoreo", json=event)), daemon=True
    )
    posting.start()
    posting.join(seconds)
    assert answers, f"no answer within {seconds} s"
    return answers[0]


def pending(state_path: Path) -> list[dict[str, Any]]:
    with Store.open(state_path, readonly=True) as store:
        return [item.body for item in store.pending_events(PROVIDER)]


class TestEvents:
    @pytest.mark.parametrize("path", ["/events/openchoreo", "/api/events/http/openchoreo"])
    def test_an_event_is_stored_before_the_202(
        self, client: AsgiClient, ingested: Path, path: str
    ) -> None:
        answer = client.post(path, json=component_event("new-one"))

        assert answer.status_code == 202
        assert answer.json() == {"stored": 1, "ignored": 0, "rejected": []}
        assert pending(ingested) == [component_event("new-one")]

    def test_concurrent_posts_take_turns_writing_the_inbox(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        """The forwarder posts from 4 workers (a flood, from more): each post waits its turn in
        `serve` to write the inbox, rather than poll SQLite's busy lock, which can let one wait
        past its timeout (a 503: the forwarder tries once, the event is lost) while others
        write. Every post is stored."""
        service = Service(config, ingested, clock)
        server = Server(config, service.state, clock, service, Credentials(TOKEN, None))
        answers: list[int] = []
        client = AsgiClient(build_app(server))

        def post(name: str) -> None:
            answers.append(
                client.post("/events/openchoreo", json=component_event(name)).status_code
            )

        posts = [threading.Thread(target=post, args=(f"c{n}",)) for n in range(24)]
        with server.inbox_writes:  # a post writing: the others wait their turn, storing nothing
            for thread in posts:
                thread.start()
            posts[0].join(0.5)
            assert pending(ingested) == []
            assert answers == []
        for thread in posts:
            thread.join(30)

        assert answers == [202] * 24
        assert sorted(body["name"] for body in pending(ingested)) == sorted(
            f"c{n}" for n in range(24)
        )

    def test_a_post_whose_write_waits_on_another_writer_answers_within_the_forwarders_time(
        self,
        config: Config,
        ingested: Path,
        clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Its turn is not all: a cron `run`'s page holds SQLite's write lock, and SQLite's own
        10 s wait came after it, past the 10 s the forwarder waits for an answer."""
        monkeypatch.setattr("choreo_ingest.server.context.EVENT_ANSWER_SECONDS", 1.0)
        with closing(sqlite3.connect(ingested, isolation_level=None)) as writer:
            writer.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with make_client(config, ingested, clock, Credentials(TOKEN, None)) as client:
                answer = post_within(client, component_event("late"), seconds=10)
            waited = time.monotonic() - started
            writer.execute("ROLLBACK")

        assert answer.status_code == 503
        assert 0.9 < waited < 5
        assert pending(ingested) == []

    def test_a_post_that_gets_no_turn_in_time_is_503_and_stores_nothing(
        self,
        config: Config,
        ingested: Path,
        clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """As SQLite's busy timeout gave: the sender retries after `Retry-After`."""
        monkeypatch.setattr("choreo_ingest.server.context.EVENT_TURN_SECONDS", 0.2)
        service = Service(config, ingested, clock)
        server = Server(config, service.state, clock, service, Credentials(TOKEN, None))
        with AsgiClient(build_app(server)) as client, server.inbox_writes:
            answer = post_within(client, component_event("late"), seconds=10)

        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "30"
        assert answer.json()["error"].endswith("busy (other event posts are being stored)")
        assert pending(ingested) == []

    @pytest.mark.parametrize(("action", "flood"), [("created", True), ("updated", False)])
    def test_only_a_flood_of_created_events_counts_as_the_forwarders_start(
        self, config: Config, ingested: Path, clock: FakeClock, action: str, flood: bool
    ) -> None:
        service = Service(config, ingested, clock)
        server = Server(config, service.state, clock, service, Credentials(TOKEN, None))
        events = [component_event(f"c{number}", action) for number in range(FLOOD_EVENTS)]

        with AsgiClient(build_app(server)) as client:
            assert client.post("/events/openchoreo", json=events).status_code == 202

        assert (service.arrivals.flooding("openchoreo") is not None) is flood

    @pytest.mark.parametrize(("action", "flood"), [("created", True), ("updated", False)])
    def test_events_of_kinds_not_ingested_count_toward_the_forwarders_start(
        self, config: Config, ingested: Path, clock: FakeClock, action: str, flood: bool
    ) -> None:
        """The forwarder's start sends `created` for objects of every kind, most of them
        (releases, bindings, workflow runs) of kinds not ingested: counted alone, the ingested
        ones came slower than a flood, and each was re-read in place of one walk."""
        service = Service(config, ingested, clock)
        server = Server(config, service.state, clock, service, Credentials(TOKEN, None))
        bindings = [
            {"kind": "ReleaseBinding", "name": f"b{number}", "namespace": "acme", "action": action}
            for number in range(FLOOD_EVENTS)
        ]

        with AsgiClient(build_app(server)) as client:
            answer = client.post("/events/openchoreo", json=[component_event("c1"), *bindings])
            assert answer.json() == {"stored": 1, "ignored": FLOOD_EVENTS, "rejected": []}

        assert (service.arrivals.flooding("openchoreo") is not None) is flood

    @pytest.mark.parametrize("action", ["patched", "Updated"])
    def test_an_event_with_an_action_of_its_own_is_stored_to_be_re_read(
        self, client: AsgiClient, ingested: Path, action: str
    ) -> None:
        answer = client.post("/api/events/http/openchoreo", json=component_event("x", action))

        assert answer.status_code == 202
        assert answer.json() == {"stored": 1, "ignored": 0, "rejected": []}
        assert pending(ingested) == [component_event("x", action)]

    def test_an_event_without_an_action_is_400(self, client: AsgiClient, ingested: Path) -> None:
        event = {"kind": "Component", "name": "x", "namespace": "acme"}

        answer = client.post("/events/openchoreo", json=event)

        assert answer.status_code == 400
        assert "needs a non-empty 'action'" in json.dumps(answer.json())
        assert pending(ingested) == []

    def test_duplicates_coalesce(self, client: AsgiClient, ingested: Path) -> None:
        for _ in range(3):
            assert client.post("/events/openchoreo", json=component_event("x")).status_code == 202

        assert pending(ingested) == [component_event("x")]

    def test_kinds_the_provider_does_not_ingest_are_acknowledged_not_stored(
        self, client: AsgiClient, ingested: Path
    ) -> None:
        event = {"kind": "ReleaseBinding", "name": "r", "namespace": "acme", "action": "created"}

        answer = client.post("/events/openchoreo", json=event)

        assert (answer.status_code, answer.json()["ignored"]) == (202, 1)
        assert pending(ingested) == []

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            (b"{not json", "not JSON"),
            (b'{"kind": "Component"}', "name"),
            (b"\xff\xfe\x00garbage", "request body: not UTF-8 text"),
            (b"", "no events in the input"),
        ],
        ids=["not-json", "missing-fields", "binary", "empty"],
    )
    def test_a_malformed_event_is_400_with_the_reason(
        self, client: AsgiClient, ingested: Path, body: bytes, problem: str
    ) -> None:
        answer = client.post("/events/openchoreo", content=body, headers=JSON)

        assert answer.status_code == 400
        assert problem in json.dumps(answer.json())
        assert pending(ingested) == []

    def test_a_body_over_the_limit_is_413(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        small = replace(config, serve=ServeConfig(max_body_bytes=100))
        with make_client(small, ingested, clock) as client:
            answer = client.post(
                "/events/openchoreo", json=[component_event(f"c{i}") for i in range(9)]
            )

        assert answer.status_code == 413
        assert pending(ingested) == []

    def test_a_full_inbox_is_503_with_retry_after(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        tiny = replace(config, inbox_capacity=1)
        with make_client(tiny, ingested, clock) as client:
            assert client.post("/events/openchoreo", json=component_event("a")).status_code == 202
            answer = client.post("/events/openchoreo", json=component_event("b"))

        assert answer.status_code == 503
        assert int(answer.headers["retry-after"]) > 0
        assert "is full (1 pending events, the limit)" in answer.json()["error"]

    def test_a_batch_larger_than_the_inbox_is_413_without_retry_after(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        tiny = replace(config, inbox_capacity=2)
        with make_client(tiny, ingested, clock) as client:
            answer = client.post(
                "/events/openchoreo", json=[component_event(f"c{i}") for i in range(3)]
            )

        assert answer.status_code == 413
        assert "retry-after" not in answer.headers
        assert "send at most 2 at a time" in answer.json()["error"]
        assert pending(ingested) == []

    def test_an_unknown_provider_is_404(self, client: AsgiClient) -> None:
        answer = client.post("/events/nosuch", json=component_event("a"))

        assert answer.status_code == 404
        assert "nosuch" in answer.json()["error"]

    @pytest.mark.parametrize(
        ("path", "headers", "status"),
        [
            (f"/events/openchoreo/{SECRET}", {}, 202),
            (f"/api/events/http/openchoreo/{SECRET}", {}, 202),
            ("/events/openchoreo", {"X-Choreo-Ingest-Secret": SECRET}, 202),
            ("/events/openchoreo", {}, 403),
            ("/events/openchoreo/wrong", {}, 403),
            ("/events/openchoreo/", {}, 403),
            ("/events/openchoreo/", {"X-Choreo-Ingest-Secret": SECRET}, 202),
            ("/events/openchoreo", {"X-Choreo-Ingest-Secret": "wrong"}, 403),
        ],
        ids=[
            "path",
            "alias-path",
            "header",
            "none",
            "wrong-path",
            "empty-path",
            "empty-path-header",
            "wrong-header",
        ],
    )
    def test_the_events_secret_when_one_is_set(
        self,
        config: Config,
        ingested: Path,
        clock: FakeClock,
        path: str,
        headers: dict[str, str],
        status: int,
    ) -> None:
        with make_client(config, ingested, clock, Credentials(None, SECRET)) as client:
            answer = client.post(path, json=component_event("a"), headers=headers)

        assert answer.status_code == status
        assert (pending(ingested) != []) is (status == 202)

    @pytest.mark.parametrize(
        "spelled", ["ab/cd+ef=", "ab%2Fcd%2Bef%3D"], ids=["as-is", "percent-encoded"]
    )
    def test_a_secret_holding_a_slash_works_in_the_path(
        self, config: Config, ingested: Path, clock: FakeClock, spelled: str
    ) -> None:
        """`openssl rand -base64` secrets hold "/", "+" and "="; the forwarder can only send
        the secret in its URL."""
        with make_client(config, ingested, clock, Credentials(None, "ab/cd+ef=")) as client:
            route = "/api/events/http/openchoreo"
            answer = client.post(f"{route}/{spelled}", json=component_event("a"))
            wrong = client.post(f"{route}/ab/cd", json=component_event("b"))

        assert (answer.status_code, wrong.status_code) == (202, 403)

    def test_a_secret_segment_nobody_configured_is_refused(self, client: AsgiClient) -> None:
        answer = client.post("/events/openchoreo/guess", json=component_event("a"))

        assert answer.status_code == 403

    @pytest.mark.parametrize("path", ["/events/openchoreo/", "/api/events/http/openchoreo/"])
    def test_a_trailing_slash_is_no_secret_segment(
        self, client: AsgiClient, ingested: Path, path: str
    ) -> None:
        """An event forwarder's webhook URL written with a trailing slash still delivers."""
        answer = client.post(path, json=component_event("a"))

        assert answer.status_code == 202
        assert pending(ingested) != []


class TestReading:
    @pytest.mark.parametrize(
        ("path", "headers"),
        [("/", AUTH), ("/status", AUTH), ("/changes", AUTH), ("/metrics", {}), ("/nope", {})],
    )
    def test_no_answer_may_be_cached_or_sniffed(
        self, client: AsgiClient, path: str, headers: dict[str, str]
    ) -> None:
        """A catalog page read with the token kept by a proxy's cache would be served without
        it; a JSON answer echoing input must never be read as a page."""
        answer = client.get(path, headers=headers)

        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"

    def test_status_is_the_status_json_document(
        self, client: AsgiClient, tmp_path: Path, clock: FakeClock
    ) -> None:
        answer = client.get("/status", headers=AUTH)

        assert answer.status_code == 200
        served, printed = answer.json(), cli_json(tmp_path, "status")
        # The CLI shows the path as the config gives it (relative to the config's directory).
        assert Path(served.pop("stateFile")) == tmp_path / printed.pop("stateFile")
        # The CLI reads the real clock, before this state's fake times: to it the clock was set
        # back, and a provider whose rest began ahead of now is due at once.
        for document in (served, printed):
            for provider in document["providers"]:
                provider.pop("nextActionAt")
        assert served == printed

    def test_status_of_one_provider_and_its_aliases(self, client: AsgiClient) -> None:
        documents = [
            client.get(path).json()
            for path in (
                "/status/openchoreo",
                "/providers/openchoreo",
                "/incremental/providers/openchoreo",
            )
        ]

        assert [len(doc["providers"]) for doc in documents] == [1, 1, 1]
        assert documents[0] == documents[1] == documents[2]

    def test_status_of_an_unknown_provider_is_404(self, client: AsgiClient) -> None:
        assert client.get("/status/typo").status_code == 404

    def test_health_is_the_health_json_document(self, client: AsgiClient, tmp_path: Path) -> None:
        done = run_cli("health", "--json", cwd=tmp_path)
        answer = client.get("/health")

        assert answer.json() == json.loads(done.stdout)
        assert answer.status_code == (200 if done.returncode == 0 else 503)
        assert client.get("/incremental/health").json() == answer.json()

    def test_health_without_a_state_file_is_503(
        self, config: Config, tmp_path: Path, clock: FakeClock
    ) -> None:
        with make_client(config, tmp_path / "none.db", clock) as client:
            answer = client.get("/health")

        assert answer.status_code == 503
        assert answer.json()["healthy"] is False

    def test_health_of_a_store_that_cannot_be_read_is_an_unhealthy_health_document(
        self, config: Config, tmp_path: Path, clock: FakeClock
    ) -> None:
        corrupt = tmp_path / "corrupt.db"
        corrupt.write_bytes(bytes(range(256)) * 32)
        with make_client(config, corrupt, clock) as client:
            answer = client.get("/health")

        assert answer.status_code == 503
        document = answer.json()
        assert (document["healthy"], document["providers"]) == (False, [])
        assert "corrupt.db" in document["problems"][0]

    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [("GET", "/nonexistent", 404), ("POST", "/changes", 405), ("DELETE", "/status", 405)],
        ids=["no-route", "post-to-a-read", "delete"],
    )
    def test_starlettes_own_refusals_are_error_documents_too(
        self, client: AsgiClient, method: str, path: str, status: int
    ) -> None:
        answer = client.request(method, path, headers=AUTH)

        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/json"
        assert set(answer.json()) == {"error"}
        if status == 405:
            assert "GET" in answer.headers["allow"]

    @pytest.mark.parametrize("value", ["-1", "1_000", "%D9%A1", "%201"])
    def test_a_whole_number_parameter_is_ascii_digits_and_not_negative_where_a_count(
        self, client: AsgiClient, value: str
    ) -> None:
        answer = client.get(f"/providers/openchoreo/removals?limit={value}", headers=AUTH)

        assert answer.status_code == 400
        assert answer.json()["error"].startswith("limit: expected")

    def test_providers_is_the_providers_json_document(
        self, client: AsgiClient, tmp_path: Path
    ) -> None:
        assert client.get("/providers").json() == cli_json(tmp_path, "providers")

    def test_removals_is_the_removals_json_document(
        self, client: AsgiClient, tmp_path: Path
    ) -> None:
        expected = cli_json(tmp_path, "removals", PROVIDER)
        assert client.get("/providers/openchoreo/removals", headers=AUTH).json() == expected

    def test_liveness_and_readiness(
        self, client: AsgiClient, config: Config, tmp_path: Path, clock: FakeClock
    ) -> None:
        assert client.get("/healthz").json() == {"alive": True}
        assert client.get("/readyz").json() == {"ready": True}
        with make_client(config, tmp_path / "none.db", clock) as fresh:
            assert fresh.get("/readyz").status_code == 503

    def test_during_the_shutdown_delay_it_is_alive_and_not_ready_however_long_the_delay(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        """SIGTERM stopped the loop on purpose (`serve.shutdownDelay`, up to an hour): its
        heartbeat no longer moves, yet a liveness probe (docker's HEALTHCHECK, a monitor) must
        not take the replica that is handing its callers over for a hung one."""
        service = Service(config, ingested, clock)
        server = Server(config, service.state, clock, service, Credentials())
        server.stopping.set()  # as `serve`'s stop handler does at SIGTERM, the loop stopped
        clock.advance(3_600)
        with AsgiClient(build_app(server)) as stopping:
            alive, ready = stopping.get("/healthz"), stopping.get("/readyz")
        assert (alive.status_code, alive.json()) == (200, {"alive": True})
        assert alive.headers["connection"] == "close"
        assert (ready.status_code, ready.json()["error"]) == (503, "serve is stopping")

    def test_metrics_has_the_textfile_series_and_the_request_counter(
        self, client: AsgiClient
    ) -> None:
        client.get("/healthz")
        answer = client.get("/metrics")

        names = {family.name for family in text_string_to_metric_families(answer.text)}
        assert "choreo_ingest_entities" in names
        assert "choreo_ingest_state" in names
        assert "choreo_ingest_http_requests" in names
        assert 'route="/healthz"' in answer.text


class TestOperatorRoutes:
    def test_operators_waiting_for_the_lock_leave_threads_for_reads_and_events(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        """Each waits in a worker thread for up to a burst; past OPERATOR_THREADS they wait
        their turn in the event loop instead, so anyio's 40 threads are never all theirs."""
        service = Service(config, ingested, clock)
        server = Server(config, service.state, clock, service, Credentials(TOKEN))
        app = build_app(server)
        release, inside, most = threading.Event(), [0], [0]
        lock = threading.Lock()

        def held_by_a_burst(action: Any) -> Any:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            release.wait(30)
            with lock:
                inside[0] -= 1
                return action()  # one at a time, as the run lock has them

        service.while_locked = held_by_a_burst  # type: ignore[method-assign]

        async def scenario() -> tuple[list[int], int, int]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                refresh = "/providers/openchoreo/refresh"
                waiting = [asyncio.create_task(http.post(refresh, headers=AUTH)) for _ in range(50)]
                await asyncio.sleep(0.5)
                status = await asyncio.wait_for(http.get("/status"), timeout=10)
                event = await asyncio.wait_for(
                    http.post("/events/openchoreo", json=component_event("a")), timeout=10
                )
                release.set()
                answers = await asyncio.gather(*waiting)
                return [a.status_code for a in answers], status.status_code, event.status_code

        codes, status, event = asyncio.run(scenario())

        assert (status, event) == (200, 202)
        assert codes == [200] * 50
        assert most[0] == OPERATOR_THREADS

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/providers/openchoreo/refresh"),
            ("POST", "/providers/openchoreo/reset"),
            ("POST", "/providers/openchoreo/removals/approve"),
            ("GET", "/providers/openchoreo/removals"),
            ("POST", "/refresh?provider=openchoreo"),
            ("POST", "/reset?provider=openchoreo"),
            ("POST", "/incremental/providers/openchoreo/trigger"),
            ("DELETE", "/incremental/providers/openchoreo"),
            ("GET", "/changes"),
            ("GET", "/entities"),
            ("POST", "/entities/batch"),
        ],
    )
    @pytest.mark.parametrize(
        "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"]
    )
    def test_protected_routes_need_the_token(
        self, client: AsgiClient, ingested: Path, method: str, path: str, authorization: str | None
    ) -> None:
        with Store.open(ingested, readonly=True) as store:
            before = store.load_provider(PROVIDER)
        headers = {} if authorization is None else {"Authorization": authorization}

        answer = client.request(method, path, headers=headers, json={"refs": []})

        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        with Store.open(ingested, readonly=True) as store:
            assert store.load_provider(PROVIDER) == before

    @pytest.mark.parametrize(
        ("query", "error"),
        [
            ("cycle=7", "cycle: openchoreo: no removals are blocked now, not cycle 7's; nothing"),
            ("cycle=seven", "cycle: expected a whole number"),
        ],
        ids=["another-cycle", "not-a-number"],
    )
    def test_an_approval_pinned_to_a_cycle_not_blocked_is_refused(
        self, client: AsgiClient, query: str, error: str
    ) -> None:
        answer = client.post(f"/providers/openchoreo/removals/approve?{query}", headers=AUTH)

        assert answer.status_code == 400
        assert answer.json()["error"].startswith(error)

    def test_refresh_answers_the_refresh_json_document(
        self, client: AsgiClient, ingested: Path, clock: FakeClock
    ) -> None:
        answer = client.post("/providers/openchoreo/refresh", headers=AUTH)

        assert answer.status_code == 200
        assert answer.json() == {"provider": PROVIDER, "state": "resting", "due": True}
        with Store.open(ingested, readonly=True) as store:
            assert store.load_provider(PROVIDER).next_action_at == clock.now()

    def test_the_seed_alias_takes_the_provider_as_a_parameter(self, client: AsgiClient) -> None:
        answer = client.post("/refresh", params={"provider": PROVIDER}, headers=AUTH)

        assert answer.json()["provider"] == PROVIDER

    def test_a_purge_flag_that_is_not_true_or_false_is_refused(
        self, client: AsgiClient, ingested: Path
    ) -> None:
        """`purge=yes` meant no purge and answered 200 `purged: 0`."""
        answer = client.post("/providers/openchoreo/reset?purge=yes", headers=AUTH)

        assert answer.status_code == 400
        assert "purge: expected true or false" in answer.json()["error"]
        with Store.open(ingested, readonly=True) as store:
            assert store.load_provider(PROVIDER).state is not ProviderState.IDLE

    def test_reset_with_purge_removes_the_entities(
        self, client: AsgiClient, ingested: Path
    ) -> None:
        answer = client.post("/providers/openchoreo/reset?purge=true", headers=AUTH)

        assert answer.status_code == 200
        document = answer.json()
        assert document["reset"] is True
        assert document["purged"] > 0
        with Store.open(ingested, readonly=True) as store:
            assert store.active_count(PROVIDER) == 0

    def test_a_command_waits_for_the_lock_then_gives_up_with_409(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        quick = replace(
            config,
            openchoreo=replace(config.openchoreo, incremental=IncrementalConfig(burst_length=0.01)),
        )
        with make_client(quick, ingested, clock) as client, RunLock(ingested):
            answer = client.post("/providers/openchoreo/refresh")

        assert answer.status_code == 409
        assert int(answer.headers["retry-after"]) >= 1

    def test_an_unknown_provider_is_404_and_creates_nothing(
        self, client: AsgiClient, ingested: Path
    ) -> None:
        answer = client.post("/providers/typo/refresh", headers=AUTH)

        assert answer.status_code == 404
        with Store.open(ingested, readonly=True) as store:
            assert store.provider_names() == [PROVIDER]


class TestFeed:
    def test_entities_pages_through_the_whole_catalog(
        self, client: AsgiClient, tmp_path: Path
    ) -> None:
        bodies, cursor = [], None
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            page = client.get("/entities", params=params, headers=AUTH).json()
            bodies += page["entities"]
            cursor = page["nextCursor"]
            if cursor is None:
                break

        exported = [
            json.loads(line) for line in run_cli("export", cwd=tmp_path).stdout.splitlines()
        ]
        assert sorted(map(json.dumps, bodies)) == sorted(map(json.dumps, exported))

    def test_a_ref_holding_nul_is_refused_as_bad_input(self, client: AsgiClient) -> None:
        answer = client.post("/entities/batch", json={"refs": ["a\x00b"]}, headers=AUTH)

        assert answer.status_code == 400
        assert answer.json()["error"] == "refs[0]: holds U+0000, which no entity ref holds"

    def test_batch_returns_bodies_and_lists_the_missing(self, client: AsgiClient) -> None:
        first = client.get("/entities", params={"limit": 2}, headers=AUTH).json()["entities"]
        refs = [
            f"{b['kind'].lower()}:{b['metadata']['namespace']}/{b['metadata']['name']}"
            for b in first
        ]

        answer = client.post(
            "/entities/batch", json={"refs": [*refs, "component:x/nope"]}, headers=AUTH
        )

        assert answer.status_code == 200
        assert answer.json()["entities"] == first
        assert answer.json()["missing"] == ["component:x/nope"]

    def test_batch_refuses_more_than_a_thousand_refs(self, client: AsgiClient) -> None:
        refs = [f"component:x/c{i}" for i in range(1001)]
        answer = client.post("/entities/batch", json={"refs": refs}, headers=AUTH)

        assert answer.status_code == 400

    def test_changes_answer_the_feed_document(self, client: AsgiClient) -> None:
        document = client.get("/changes", params={"since": 0, "limit": 5}, headers=AUTH).json()

        assert set(document) == {"storeId", "oldestSeq", "newestSeq", "catalogComplete", "changes"}
        assert document["catalogComplete"] is True  # the provider completed its cycle
        assert [change["seq"] for change in document["changes"]] == [1, 2, 3, 4, 5]

    def test_the_feed_is_complete_once_every_configured_provider_completed_a_cycle(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        """A provider the config adds has not: what a walk of the feed misses may yet come."""
        added = replace(config, providers=(*config.providers, "csv"))
        with make_client(added, ingested, clock, Credentials(TOKEN, None)) as client:
            changes = client.get("/changes", params={"since": 0}, headers=AUTH).json()
            walk = client.get("/entities", headers=AUTH).json()

        assert (changes["catalogComplete"], walk["catalogComplete"]) == (False, False)

    def test_changes_below_the_oldest_retained_are_410(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        from choreo_ingest.retention import prune_change_log

        few = replace(config, changes=ChangesConfig(max_rows=3))
        with Store.open(ingested) as store:
            pruned = prune_change_log(store, few, clock.now())
        assert pruned > 0
        with make_client(config, ingested, clock) as client:
            newest = pruned + 3
            gone = client.get("/changes", params={"since": 0})
            kept = client.get("/changes", params={"since": newest - 3})

        assert gone.status_code == 410
        assert gone.json()["oldestSeq"] == newest - 2
        assert kept.status_code == 200
        assert len(kept.json()["changes"]) == 3

    def test_changes_since_a_change_made_at_another_time_are_410(self, client: AsgiClient) -> None:
        """`sinceAt`: the `at` the consumer read of change `since`; another one there means the
        state was put back from an older copy (the Backstage module sends it)."""
        [third] = client.get("/changes", params={"since": 2, "limit": 1}, headers=AUTH).json()[
            "changes"
        ]

        same = client.get("/changes", params={"since": 3, "sinceAt": third["at"]}, headers=AUTH)
        other = client.get(
            "/changes", params={"since": 3, "sinceAt": "2020-01-01T00:00:00Z"}, headers=AUTH
        )

        assert same.status_code == 200
        assert other.status_code == 410
        assert "put back from an older copy" in other.json()["error"]


class TestLargeEntities:
    """Entities of a megabyte each (a v1 API's inline schema): a page or batch of hundreds of them
    would be hundreds of MB held in memory several times over. An answer holds at most
    MAX_ANSWER_CHARS of their text (one larger entity comes alone)."""

    COUNT = 20
    SIZE = 1 << 20

    @pytest.fixture
    def large(self, config: Config, tmp_path: Path, clock: FakeClock) -> Iterator[AsgiClient]:
        state = tmp_path / "large.db"
        with Store.open(state) as store:
            store.migrate()
            entities = [make_entity(f"c{number:02}") for number in range(self.COUNT)]
            for entity in entities:
                entity.body["metadata"]["description"] = "x" * self.SIZE
            store.apply_delta("fake", 1, Delta(upserts=entities), clock.now())
        with make_client(config, state, clock, Credentials(TOKEN, None)) as test_client:
            yield test_client

    def test_a_page_holds_up_to_max_answer_chars_and_the_walk_gets_every_entity_once(
        self, large: AsgiClient
    ) -> None:
        sizes, names, cursor = [], [], None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = large.get("/entities", params=params, headers=AUTH).json()
            sizes.append(len(page["entities"]))
            names += [entity["metadata"]["name"] for entity in page["entities"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break

        fits = MAX_ANSWER_CHARS // self.SIZE  # the page ends with the entity that reaches it
        assert sizes == [fits, self.COUNT - fits]
        assert names == [f"c{number:02}" for number in range(self.COUNT)]

    def test_a_batch_past_max_answer_chars_is_413_and_its_halves_are_answered(
        self, large: AsgiClient
    ) -> None:
        refs = [f"component:default/c{number:02}" for number in range(self.COUNT)]

        whole = large.post("/entities/batch", json={"refs": refs}, headers=AUTH)
        halves = [
            large.post("/entities/batch", json={"refs": half}, headers=AUTH)
            for half in (refs[:10], refs[10:])
        ]

        assert whole.status_code == 413
        assert whole.json()["error"] == (
            "the 20 entities asked for hold more than 16 MiB of text, more than one answer "
            "holds: ask for fewer"
        )
        assert [answer.status_code for answer in halves] == [200, 200]
        assert sum(len(answer.json()["entities"]) for answer in halves) == self.COUNT


class TestOddRequests:
    """What a client, a scanner or a broken proxy may send: a 400 or a 404, never a 500 (and an
    ERROR log line) nor a redirect built from the client's own Host header."""

    HUGE = "9" * 5000  # Python's int() and json refuse over 4,300 digits (ValueError)

    def test_a_whole_number_too_long_to_read_is_out_of_range(self, client: AsgiClient) -> None:
        answer = client.get("/changes", params={"since": self.HUGE}, headers=AUTH)
        assert answer.status_code == 400
        assert answer.json()["error"].startswith("since: ")

    def test_a_body_with_an_integer_json_cannot_hold_is_not_json(self, client: AsgiClient) -> None:
        body = '{"refs": ' + self.HUGE + "}"
        answer = client.post("/entities/batch", content=body, headers=AUTH)
        assert answer.status_code == 400

    def test_a_cursor_nested_past_the_recursion_limit_is_not_a_cursor(
        self, client: AsgiClient
    ) -> None:
        cursor = base64.urlsafe_b64encode(b"[" * 30_000).decode().rstrip("=")
        answer = client.get("/entities", params={"cursor": cursor}, headers=AUTH)
        assert answer.status_code == 400
        assert answer.json()["error"].startswith("cursor: ")

    def test_a_trailing_slash_is_not_redirected_to_the_clients_host(
        self, client: AsgiClient
    ) -> None:
        answer = client.get("/changes/", headers={**AUTH, "Host": "evil.example"})
        assert answer.status_code == 404
        assert "location" not in answer.headers


class TestSnapshotConformance:
    @pytest.mark.parametrize("api", ["v1", "orgs"])
    def test_a_snapshot_paged_through_entities_passes_backstages_validators(
        self, config: Config, tmp_path: Path, clock: FakeClock, api: ApiGeneration
    ) -> None:
        skip_unless_backstage_validator()
        state_path = tmp_path / f"{api}.db"
        ingest_world(state_path, World.generate(3, 3, 5, seed=7), clock, api=api)
        bodies, cursor = [], None
        with make_client(config, state_path, clock) as client:
            while True:
                params = {"limit": 9, **({"cursor": cursor} if cursor else {})}
                page = client.get("/entities", params=params).json()
                bodies += page["entities"]
                if (cursor := page["nextCursor"]) is None:
                    break

        assert len(bodies) > 50
        assert run_backstage_validator(entity_lines(bodies)) == []


class TestRequestLog:
    def test_one_line_per_request_naming_the_route_never_the_secret(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        with (
            make_client(config, ingested, clock, Credentials(TOKEN, SECRET)) as client,
            structlog.testing.capture_logs() as logs,
        ):
            client.post(f"/events/openchoreo/{SECRET}", json=component_event("a"))
            client.get("/status", headers=AUTH)

        lines = [line for line in logs if line["event"] == "http_request"]
        assert [(line["method"], line["route"], line["status"]) for line in lines] == [
            ("POST", "/events/{provider}/{secret}", 202),
            ("GET", "/status", 200),
        ]
        assert SECRET not in repr(logs)
        assert TOKEN not in repr(logs)


class TestOnPostgres:
    def test_the_routes_answer_the_same_over_a_postgresql_state(
        self, config: Config, ingested: Path, clock: FakeClock, pg_url: str
    ) -> None:
        postgres = PostgresLocation(pg_url)
        copy_state(ingested, postgres)
        documents = {}
        for name, location in (("sqlite", state_location(ingested)), ("postgres", postgres)):
            with make_client(config, location, clock, Credentials(TOKEN, None)) as client:
                assert client.get("/readyz").json() == {"ready": True}
                status = client.get("/status", headers=AUTH).json()
                status.pop("stateFile")
                schema = status.pop("stateSchema", None)
                assert schema == ("choreo_ingest" if name == "postgres" else None)
                changes = client.get("/changes", params={"limit": 50}, headers=AUTH).json()
                stored = client.post("/events/openchoreo", json=component_event("pg-one"))
                documents[name] = (status, changes, stored.status_code)

        assert documents["postgres"] == documents["sqlite"]
        assert "secret" not in str(postgres)

    def test_event_posts_take_no_turns_over_a_postgresql_state(
        self, config: Config, ingested: Path, clock: FakeClock, pg_url: str
    ) -> None:
        """PostgreSQL takes concurrent writers as they come: a turn would make each post wait
        for another's connect (a server that does not answer: the k-th post after k timeouts)."""
        postgres = PostgresLocation(pg_url)
        copy_state(ingested, postgres)
        service = Service(config, postgres, clock)
        server = Server(config, service.state, clock, service, Credentials(TOKEN, None))
        with AsgiClient(build_app(server)) as client, server.inbox_writes:  # held: never asked
            answer = post_within(client, component_event("pg-now"), seconds=10)

        assert answer.status_code == 202
        with postgres.open(readonly=True) as store:
            assert [item.body["name"] for item in store.pending_events(PROVIDER)] == ["pg-now"]
