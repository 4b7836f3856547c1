"""What `serve` tells a caller without the API token, and what a web page in an operator's
browser may post to it.

With a token set, entity refs are catalog content like `/changes`: the removals listing needs the
token, and the status page leaves the change log's refs out. So is the text of a provider's last
error, which names the API path that failed: the status documents and the page say there is one
without the token, not what it says. The event webhook takes only a body
declared `application/json`, which a page can post to another origin only after a CORS preflight
(`text/plain`, a form and a multipart form are posted without asking).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.clock import rfc3339
from choreo_ingest.config import Config
from choreo_ingest.errors import CursorExpired
from choreo_ingest.event_retries import event_key
from choreo_ingest.models import (
    EVENT_RETRIES_FACT,
    PROBLEM_FACT,
    SKIPPED_FACT,
    SOURCE_BEFORE_CYCLE_FACT,
    SOURCE_BEFORE_FACT,
    SOURCE_CYCLE_FACT,
    SOURCE_FACT,
    SOURCES_ALTERNATE_FACT,
)
from choreo_ingest.providers.openchoreo.listing_stuck import stale_starts_problem
from choreo_ingest.providers.openchoreo.step_over import skipped_problem
from choreo_ingest.reporting import ERROR_WITHHELD
from choreo_ingest.server.app import build_app
from choreo_ingest.server.context import Server
from choreo_ingest.server.security import Credentials
from choreo_ingest.service import Service
from choreo_ingest.simulator.world import World
from choreo_ingest.store import Store

from asgi_support import AsgiClient
from fakes import FakeClock
from sim_support import PROVIDER, expected_refs, ingest_world

TOKEN = "api-token-for-tests"
SECRET = "events-secret-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REMOVALS = f"/providers/{PROVIDER}/removals"
EVENT = b'{"kind": "Component", "name": "new-one", "namespace": "acme", "action": "created"}'
READING_ROUTES = [
    "/status",
    f"/status/{PROVIDER}",
    "/providers",
    f"/providers/{PROVIDER}",
    "/health",
    "/incremental/health",
    "/incremental/providers",
    f"/incremental/providers/{PROVIDER}",
]
STATUS_ROUTES = [
    "/status",
    f"/status/{PROVIDER}",
    f"/providers/{PROVIDER}",
    f"/incremental/providers/{PROVIDER}",
]
LAST_ERROR = (
    "GET /orgs/acme/projects/payments-ledger/components/refund-worker?include=type%2Cworkload: "
    "HTTP 500 INTERNAL_ERROR: Internal server error"
)
"""A provider's last error as a burst stores it: it names an org, a project and a component."""
WAITING = {"kind": "Component", "name": "refund-worker", "namespace": "acme", "action": "updated"}
"""An event whose object fails alone: `status` names it, with the token."""


@pytest.fixture
def world() -> World:
    return World.generate(2, 2, 3, seed=12)


@pytest.fixture
def ingested(tmp_path: Path, world: World, clock: FakeClock) -> Path:
    ingest_world(tmp_path / "state.db", world, clock)
    return tmp_path / "state.db"


@pytest.fixture
def blocked(ingested: Path) -> Path:
    """The state after a second cycle saw nothing: the guard blocked every removal."""
    outcome = ingest_world(ingested, World.empty(), FakeClock(), force=True)
    assert outcome.removals_blocked > 0
    return ingested


@pytest.fixture
def failing(ingested: Path, clock: FakeClock) -> Path:
    """The state after a burst failed on a component's read: its last error names the path;
    and an event's re-read of that component failed alone: it waits (`eventsWaitingAlone`)."""
    with Store.open(ingested) as store:
        record = store.load_provider(PROVIDER)
        store.save_provider(replace(record, attempts=1, last_error=LAST_ERROR), clock.now())
        waits = json.dumps({event_key(WAITING): rfc3339(clock.now() + 60)})
        store.set_facts(PROVIDER, {EVENT_RETRIES_FACT: waits}, clock.now())
    return ingested


def client_of(
    config: Config, state: Path, clock: FakeClock, credentials: Credentials
) -> AsgiClient:
    service = Service(config, state, clock)
    return AsgiClient(build_app(Server(config, service.state, clock, service, credentials)))


def change_log_refs(state: Path) -> set[str]:
    with Store.open(state, readonly=True) as store:
        refs = {change.ref for change in store.changes(0, 100_000)}
    assert refs
    return refs


def pending(state: Path) -> list[object]:
    with Store.open(state, readonly=True) as store:
        return [item.body for item in store.pending_events(PROVIDER)]


class TestRefsNeedTheToken:
    @pytest.mark.parametrize(
        ("headers", "status"),
        [({}, 401), ({"Authorization": "Bearer wrong"}, 401), (AUTH, 200)],
        ids=["no-token", "wrong-token", "the-token"],
    )
    def test_the_removals_listing_needs_the_token_when_one_is_set(
        self,
        config: Config,
        blocked: Path,
        world: World,
        clock: FakeClock,
        headers: dict[str, str],
        status: int,
    ) -> None:
        with client_of(config, blocked, clock, Credentials(TOKEN)) as client:
            answer = client.get(REMOVALS, headers=headers)

        assert answer.status_code == status
        if status == 401:
            assert answer.json() == {"error": "a valid bearer token is required"}
            assert answer.headers["www-authenticate"].startswith("Bearer")
        else:
            [listed] = answer.json()["providers"]
            assert set(listed["refs"]) <= expected_refs(world)
            assert listed["refs"]

    def test_the_removals_listing_is_open_when_no_token_is_set(
        self, config: Config, blocked: Path, clock: FakeClock
    ) -> None:
        with client_of(config, blocked, clock, Credentials()) as client:
            answer = client.get(REMOVALS)

        assert answer.status_code == 200
        assert answer.json()["providers"][0]["refs"]

    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer wrong"}], ids=["no-token", "wrong-token"]
    )
    def test_the_page_without_the_token_shows_no_ref_of_the_change_log(
        self, config: Config, ingested: Path, clock: FakeClock, headers: dict[str, str]
    ) -> None:
        with client_of(config, ingested, clock, Credentials(TOKEN)) as client:
            answer = client.get("/", headers=headers)

        assert answer.status_code == 200
        assert [ref for ref in change_log_refs(ingested) if ref in answer.text] == []
        assert "<table" not in answer.text
        assert "shown with the API token only: read <code>/changes</code>" in answer.text
        assert f"{PROVIDER}</span>" in answer.text  # the rest of the page is still there

    def test_the_page_with_the_token_shows_the_last_changes(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        with client_of(config, ingested, clock, Credentials(TOKEN)) as client:
            answer = client.get("/", headers=AUTH)

        assert [ref for ref in change_log_refs(ingested) if ref in answer.text] != []
        assert "<table" in answer.text

    def test_the_page_without_a_token_configured_shows_the_last_changes(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        with client_of(config, ingested, clock, Credentials()) as client:
            answer = client.get("/")

        assert [ref for ref in change_log_refs(ingested) if ref in answer.text] != []
        assert "shown with the API token only" not in answer.text

    def test_the_open_reading_routes_name_no_entity(
        self, config: Config, blocked: Path, world: World, clock: FakeClock
    ) -> None:
        """Provider names, counts and times only."""
        with client_of(config, blocked, clock, Credentials(TOKEN)) as client:
            answers = {path: client.get(path) for path in READING_ROUTES}

        for path, answer in answers.items():
            assert answer.status_code in (200, 503), path
            named = [ref for ref in expected_refs(world) if ref in answer.text]
            assert named == [], path

    def test_the_open_status_names_neither_the_state_nor_the_apis_address(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        """Where the state file and the OpenChoreo API are is the deployment's, not a provider's
        counts, times and states: the token reads them."""
        with client_of(config, ingested, clock, Credentials(TOKEN)) as client:
            without = client.get("/status").json()
            page = client.get("/").text
            with_token = client.get("/status", headers=AUTH).json()

        assert with_token["providers"][0]["source"].startswith("http")
        assert (without["stateFile"], without["providers"][0]["source"]) == (
            ERROR_WITHHELD,
            ERROR_WITHHELD,
        )
        assert str(ingested) not in page
        assert with_token["providers"][0]["source"] not in page

    def test_sources_read_in_turn_are_a_problem_said_without_their_addresses(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        with Store.open(ingested) as store:
            facts = store.facts(PROVIDER)
            source, cycle = facts[SOURCE_FACT], facts[SOURCE_CYCLE_FACT]
            other = "https://api-b.internal:8443/api/v1"
            said = f"cycles read {other} and {source} in turn"
            store.set_facts(
                PROVIDER,
                {
                    SOURCE_BEFORE_FACT: other,
                    SOURCE_BEFORE_CYCLE_FACT: cycle,
                    SOURCES_ALTERNATE_FACT: said,
                },
                clock.now(),
            )
        with client_of(config, ingested, clock, Credentials(TOKEN)) as client:
            answers = [client.get(path) for path in ("/status", "/health", "/")]
            with_token = client.get("/health", headers=AUTH).json()

        assert said in with_token["providers"][0]["problems"]
        for answer in answers:
            assert other not in answer.text, answer.request.url
            assert source not in answer.text, answer.request.url
        assert f"cycles read {ERROR_WITHHELD} and {ERROR_WITHHELD} in turn" in answers[1].text


def last_errors(document: dict[str, Any]) -> list[object]:
    return [provider["lastError"] for provider in document["providers"]]


class TestLastErrorTextNeedsTheToken:
    @pytest.mark.parametrize("route", STATUS_ROUTES)
    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer wrong"}], ids=["no-token", "wrong-token"]
    )
    def test_a_status_document_without_the_token_says_there_is_a_last_error_not_what_it_says(
        self,
        config: Config,
        failing: Path,
        clock: FakeClock,
        route: str,
        headers: dict[str, str],
    ) -> None:
        """The same keys and values as with the token, but the text of `lastError`: a dashboard
        still tells a failing provider from a well one (`lastError` not null). Nor where the
        state and the API are: the deployment's details."""
        with client_of(config, failing, clock, Credentials(TOKEN)) as client:
            without = client.get(route, headers=headers)
            with_token = client.get(route, headers=AUTH).json()
        with client_of(config, failing, clock, Credentials()) as client:
            open_to_all = client.get(route).json()

        assert without.status_code == 200
        assert LAST_ERROR not in without.text
        assert "refund-worker" not in without.text
        assert last_errors(without.json()) == [ERROR_WITHHELD]
        assert last_errors(with_token) == last_errors(open_to_all) == [LAST_ERROR]
        [waiting] = with_token["providers"][0]["eventsWaitingAlone"]
        assert waiting["name"] == "refund-worker"
        withheld = {
            **with_token["providers"][0],
            "lastError": ERROR_WITHHELD,
            "eventsWaitingAlone": [
                {**waiting, "namespace": ERROR_WITHHELD, "name": ERROR_WITHHELD}
            ],
            **({"source": ERROR_WITHHELD} if "source" in with_token["providers"][0] else {}),
        }
        document = {**with_token, "providers": [withheld]}
        assert without.json() == document | {"stateFile": ERROR_WITHHELD}

    def test_no_open_reading_route_shows_the_last_errors_text_without_the_token(
        self, config: Config, failing: Path, clock: FakeClock
    ) -> None:
        """`/health` and the listings of providers have no `lastError`; the status documents and
        the page did."""
        with client_of(config, failing, clock, Credentials(TOKEN)) as client:
            answers = {path: client.get(path) for path in [*READING_ROUTES, "/"]}

        for path, answer in answers.items():
            assert answer.status_code in (200, 503), path
            assert "refund-worker" not in answer.text, path

    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer wrong"}], ids=["no-token", "wrong-token"]
    )
    def test_the_page_without_the_token_says_there_is_a_last_error_not_what_it_says(
        self, config: Config, failing: Path, clock: FakeClock, headers: dict[str, str]
    ) -> None:
        with client_of(config, failing, clock, Credentials(TOKEN)) as client:
            without = client.get("/", headers=headers).text
            with_token = client.get("/", headers=AUTH).text
        with client_of(config, failing, clock, Credentials()) as client:
            open_to_all = client.get("/").text

        assert "refund-worker" not in without
        assert "one, withheld" in without
        assert "its text is shown with the API token only" in without
        for shown in (with_token, open_to_all):
            assert "GET /orgs/acme/projects/payments-ledger/components/refund-worker" in shown
            assert "withheld" not in shown


@pytest.fixture
def failing_often(failing: Path, config: Config, clock: FakeClock) -> Path:
    """The state of `failing` after `maxAttempts` failed bursts, whose health problem quotes the
    last error, with two problems that name listings: one stepped over, one whose stored cursor
    kept expiring."""
    expired = CursorExpired("expired", path="/api/v1/namespaces/acme/projects?cursor=abc")
    with Store.open(failing) as store:
        record = store.load_provider(PROVIDER)
        attempts = config.incremental.max_attempts
        store.save_provider(replace(record, attempts=attempts), clock.now())
        facts = {
            SKIPPED_FACT: skipped_problem(["/api/v1/namespaces/acme/components"], 0),
            PROBLEM_FACT: stale_starts_problem("projects", 3, expired),
        }
        store.set_facts(PROVIDER, facts, clock.now())
    return failing


class TestProblemsQuoteNoContentWithoutTheToken:
    """A health problem may quote the last error (`maxAttempts` failed bursts) or name the
    listings a walk stepped over or cannot finish: their paths name namespaces, projects and
    components, which `/health`, the status documents and the page withhold as `lastError`."""

    @pytest.mark.parametrize("route", [*READING_ROUTES, "/"])
    def test_no_reading_route_quotes_a_problems_names_without_the_token(
        self, config: Config, failing_often: Path, clock: FakeClock, route: str
    ) -> None:
        with client_of(config, failing_often, clock, Credentials(TOKEN)) as client:
            answer = client.get(route)

        assert answer.status_code in (200, 503), route
        for name in ("refund-worker", "payments-ledger", "acme/", "GET /"):
            assert name not in answer.text, (route, name)

    @pytest.mark.parametrize("route", ["/health", "/incremental/health", "/status"])
    def test_the_problems_say_what_they_withhold_and_the_token_reads_them_whole(
        self, config: Config, failing_often: Path, clock: FakeClock, route: str
    ) -> None:
        with client_of(config, failing_often, clock, Credentials(TOKEN)) as client:
            without = client.get(route).json()
            with_token = client.get(route, headers=AUTH).json()
        with client_of(config, failing_often, clock, Credentials()) as client:
            open_to_all = client.get(route).json()

        [withheld] = [provider["problems"] for provider in without["providers"]]
        [whole] = [provider["problems"] for provider in with_token["providers"]]
        assert [provider["problems"] for provider in open_to_all["providers"]] == [whole]
        assert len(withheld) == len(whole) == 3
        failures, stuck, skipped = withheld  # the facts' problems in `PROBLEM_FACTS` order
        assert failures.endswith(f"; the last: {ERROR_WITHHELD}")
        assert f"GET ({ERROR_WITHHELD})" in skipped
        assert f"(GET ({ERROR_WITHHELD}))" in stuck
        assert whole[0].endswith(f"; the last: {LAST_ERROR}")
        assert "(GET /api/v1/namespaces/acme/projects?cursor=abc)" in whole[1]
        assert "GET /api/v1/namespaces/acme/components" in whole[2]
        assert failures.startswith(whole[0].partition("; the last: ")[0])
        for kept, full in ((stuck, whole[1]), (skipped, whole[2])):  # the advice stays
            before, _, after = full.partition("GET /")
            assert kept.startswith(before)
            assert kept.endswith(after[after.index(" ") :])


class TestEventsAreJson:
    @pytest.mark.parametrize("path", ["/events/openchoreo", "/api/events/http/openchoreo"])
    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "text/json",
            None,
        ],
    )
    def test_a_body_not_declared_json_is_415_and_stores_nothing(
        self,
        config: Config,
        ingested: Path,
        clock: FakeClock,
        path: str,
        content_type: str | None,
    ) -> None:
        headers = {} if content_type is None else {"Content-Type": content_type}
        with client_of(config, ingested, clock, Credentials(TOKEN)) as client:
            answer = client.post(path, content=EVENT, headers=headers)

        assert answer.status_code == 415
        error = answer.json()["error"]
        assert answer.json() == {"error": error}
        assert error.startswith("Content-Type must be application/json (or application/x-ndjson); ")
        assert ("none was sent" in error) is (content_type is None)
        assert pending(ingested) == []

    @pytest.mark.parametrize(
        "content_type",
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "Application/JSON",
            "application/x-ndjson",
        ],
    )
    def test_a_body_declared_json_is_accepted_as_before(
        self, config: Config, ingested: Path, clock: FakeClock, content_type: str
    ) -> None:
        with client_of(config, ingested, clock, Credentials(TOKEN)) as client:
            answer = client.post(
                "/events/openchoreo", content=EVENT, headers={"Content-Type": content_type}
            )

        assert answer.status_code == 202
        assert answer.json()["stored"] == 1
        assert pending(ingested) != []

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("/events/openchoreo/wrong", 403),
            ("/events/openchoreo", 403),
            (f"/events/openchoreo/{SECRET}", 415),
            (f"/api/events/http/openchoreo/{SECRET}", 415),
        ],
        ids=["wrong-secret", "no-secret", "the-secret", "the-secret-alias"],
    )
    def test_the_events_secret_is_judged_before_the_content_type(
        self, config: Config, ingested: Path, clock: FakeClock, path: str, status: int
    ) -> None:
        with client_of(config, ingested, clock, Credentials(None, SECRET)) as client:
            answer = client.post(path, content=EVENT, headers={"Content-Type": "text/plain"})

        assert answer.status_code == status
        assert pending(ingested) == []


def entity_count(state: Path) -> int:
    with Store.open(state, readonly=True) as store:
        return sum(1 for _ in store.iter_entities())


STATE_CHANGING = [
    ("POST", f"/providers/{PROVIDER}/reset?purge=true"),
    ("POST", f"/providers/{PROVIDER}/refresh"),
    ("POST", f"/providers/{PROVIDER}/removals/approve"),
    ("POST", f"/reset?provider={PROVIDER}"),
    ("POST", f"/incremental/providers/{PROVIDER}/trigger"),
    ("DELETE", f"/incremental/providers/{PROVIDER}"),
    ("POST", "/events/openchoreo"),
]
FROM_ANOTHER_SITE = [
    {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
    {"Origin": "null", "Content-Type": "text/plain"},  # a sandboxed frame, a file: page
    {"Origin": "http://testserver.evil.example"},
    {"Sec-Fetch-Site": "cross-site"},  # a browser that left Origin out
]
FROM_SERVES_OWN_ORIGIN = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
"""`serve`'s own page (it posts nothing), or one whose name was rebound to 127.0.0.1."""


def refusal(
    method: str, headers: dict[str, str], *, token_set: bool, path: str = "/providers"
) -> str:
    source = headers.get("Origin", "a web page")
    if token_set:
        return (
            f"a {method} from {source}, another site, is refused: state-changing requests "
            "come from clients that are not browsers (curl, the event forwarder)"
        )
    guard = "a token (serve.auth.tokenFile)"
    if path.startswith("/events/"):
        guard = "an events secret (serve.events.secretFile)"
    return (
        f"a {method} from {source} is refused: without {guard}, "
        "state-changing requests come only from clients that are not browsers (curl, the "
        "event forwarder)"
    )


class TestWebPages:
    """A page open in an operator's browser reaches a loopback `serve` (a form posts to any
    origin unasked, no preflight): it must not reset, purge, refresh or approve anything, nor
    post events. Without a token, not even from `serve`'s own origin (DNS rebinding: another
    site's page whose name now points at 127.0.0.1); with one, the token guards that case."""

    @pytest.mark.parametrize(("method", "path"), STATE_CHANGING)
    @pytest.mark.parametrize(
        "headers",
        [*FROM_ANOTHER_SITE, FROM_SERVES_OWN_ORIGIN],
        ids=["form", "null-origin", "lookalike", "fetch-metadata", "rebound"],
    )
    def test_without_a_token_a_state_changing_request_a_page_sent_is_403_and_changes_nothing(
        self,
        config: Config,
        ingested: Path,
        clock: FakeClock,
        method: str,
        path: str,
        headers: dict[str, str],
    ) -> None:
        before = entity_count(ingested)
        with client_of(config, ingested, clock, Credentials()) as client:
            answer = client.request(method, path, content=EVENT, headers=headers)

        assert answer.status_code == 403
        assert answer.json() == {"error": refusal(method, headers, token_set=False, path=path)}
        assert entity_count(ingested) == before
        assert pending(ingested) == []
        with Store.open(ingested, readonly=True) as store:
            assert store.load_provider(PROVIDER).state.value == "resting"

    @pytest.mark.parametrize(
        "headers", FROM_ANOTHER_SITE, ids=["form", "null-origin", "lookalike", "fetch-metadata"]
    )
    def test_with_a_token_another_sites_page_is_still_refused(
        self, config: Config, ingested: Path, clock: FakeClock, headers: dict[str, str]
    ) -> None:
        path = f"/providers/{PROVIDER}/reset?purge=true"
        with client_of(config, ingested, clock, Credentials(TOKEN)) as client:
            answer = client.post(path, headers={**headers, **AUTH})

        assert answer.status_code == 403
        assert answer.json() == {"error": refusal("POST", headers, token_set=True)}
        assert entity_count(ingested) > 0

    @pytest.mark.parametrize(
        ("token", "secret", "headers"),
        [(None, None, {}), (TOKEN, None, {}), (TOKEN, SECRET, FROM_SERVES_OWN_ORIGIN)],
        ids=["client", "client-with-token", "own-origin-with-token-and-events-secret"],
    )
    def test_a_client_and_with_a_token_serves_own_origin_are_taken(
        self,
        config: Config,
        ingested: Path,
        clock: FakeClock,
        token: str | None,
        secret: str | None,
        headers: dict[str, str],
    ) -> None:
        sent = {**headers, **(AUTH if token else {})}
        with client_of(config, ingested, clock, Credentials(token, secret)) as client:
            event = client.post(
                "/events/openchoreo" + (f"/{secret}" if secret else ""),
                content=EVENT,
                headers={**sent, "Content-Type": "application/json"},
            )
            purged = client.post(f"/providers/{PROVIDER}/reset?purge=true", headers=sent)

        assert event.status_code == 202
        assert purged.status_code == 200
        assert purged.json()["purged"] > 0
        assert entity_count(ingested) == 0

    def test_with_a_token_but_no_events_secret_serves_own_origin_may_not_post_events(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        """The token does not cover the event routes: a page of another site whose name was
        rebound to serve's address reads as serve's own origin, and its events would force
        walks of the platform."""
        with client_of(config, ingested, clock, Credentials(TOKEN)) as client:
            answer = client.post(
                "/events/openchoreo",
                content=EVENT,
                headers={**FROM_SERVES_OWN_ORIGIN, "Content-Type": "application/json"},
            )

        assert answer.status_code == 403
        assert answer.json() == {
            "error": refusal("POST", FROM_SERVES_OWN_ORIGIN, token_set=False, path="/events/")
        }
        assert pending(ingested) == []

    def test_reading_is_not_refused_to_a_page_of_another_site(
        self, config: Config, ingested: Path, clock: FakeClock
    ) -> None:
        """What a page may read cross-site is the browser's CORS to decide (serve sends no
        CORS headers, so it reads nothing); a GET changes nothing here."""
        with client_of(config, ingested, clock, Credentials()) as client:
            answer = client.get("/status", headers=FROM_ANOTHER_SITE[0])

        assert answer.status_code == 200
