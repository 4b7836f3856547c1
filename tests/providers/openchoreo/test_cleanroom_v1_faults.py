"""choreo-ingest end to end against a clean-room OpenChoreo v1 API (tests/cleanroom_v1.py), written
from `openchoreo-v1-api.md` and OpenChoreo v1.2.3's handlers, not from the project's simulator.

Tokens, cursors and failing answers: the real CLI in process (`run --force`, `status
--json`, `check`) against the API and its OAuth2 token endpoint when the token request, a
token, a cursor or an answer is not what the happy path expects.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml
from cleanroom_v1 import running
from cleanroom_v1_cli import (
    assert_catalog_consistent,
    assert_every_request_authorized,
    by_ref,
    cli,
    export,
    run_cycle,
    showcase_ingested,
    status,
    write_config,
)
from cleanroom_v1_http import Request
from cleanroom_v1_worlds import bulk, put_service, showcase


def test_the_token_request_is_client_secret_post(here: Path) -> None:
    with showcase_ingested(here) as (server, _config):
        (grant, *others) = server.identity.requests  # all one cycle asked the token endpoint
    assert others == []  # one token serves the whole cycle
    assert grant.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert "authorization" not in grant.headers

    form = {k: v[0] for k, v in parse_qs(grant.body.decode()).items()}
    assert form["grant_type"] == "client_credentials"
    assert form["client_id"] == server.identity.client_id
    assert form["client_secret"] == server.identity.client_secret


def test_an_expired_cursor_mid_listing_restarts_that_listing(here: Path) -> None:
    with running() as server:
        expected = bulk(server.api)
        fired: list[str] = []

        def compact_once(request: Request) -> None:
            if (
                not fired
                and request.path == "/api/v1/namespaces/bulk-a/components"
                and request.param("cursor")
            ):
                fired.append(request.param("cursor") or "")
                server.api.storage.compact()  # etcd compaction: every cursor so far expires

        server.api.hooks.append(compact_once)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)
        entities = export(config)
        answered = [
            r.status
            for r in server.api.api_requests()
            if r.path == "/api/v1/namespaces/bulk-a/components"
        ]
        state = status(config)
    assert fired
    assert 500 in answered
    assert set(by_ref(entities)) == expected
    assert_catalog_consistent(entities)
    assert state["providers"][0]["cursorResets"] >= 1


def test_a_revoked_token_is_replaced_once_and_the_cycle_completes(here: Path) -> None:
    with running() as server:
        expected = bulk(server.api, {"bulk-a": 60})
        seen: list[int] = []

        def revoke_at_fifth(request: Request) -> None:
            if request.path.startswith("/api/v1/"):
                seen.append(1)
                if len(seen) == 5:
                    server.identity.revoke_all()

        server.api.hooks.append(revoke_at_fifth)
        config = write_config(here, server, chunk_size=10)
        run_cycle(config)
        entities = export(config)
        statuses = [r.status for r in server.api.api_requests()]
        assert_every_request_authorized(server)
    assert len(server.identity.requests) == 2
    assert statuses.count(401) == 1
    assert set(by_ref(entities)) == expected


def test_a_wrong_secret_sends_no_request_without_a_token(here: Path) -> None:
    with running() as server:
        showcase(server.api)
        config = write_config(here, server, secret="not-the-secret")
        result = cli("--config", config, "run", "--force", "--json")
        document = json.loads(result.stdout)
        api_requests = server.api.api_requests()
    assert result.exit_code != 0
    assert document["providers"][0]["error"]
    assert "not-the-secret" not in result.stdout + result.stderr
    assert [r.path for r in api_requests if "authorization" not in r.headers] == []
    assert server.identity.requests  # it did ask


def test_a_transient_500_without_cursor_is_retried(here: Path) -> None:
    with running() as server:
        showcase(server.api)
        failures: list[str] = []

        def fail_first_projects(request: Request) -> Any:
            if request.path == "/api/v1/namespaces/acme/projects" and len(failures) < 1:
                failures.append(request.path)
                return (
                    500,
                    {"Content-Type": "application/json"},
                    json.dumps(
                        {"error": "Internal server error", "code": "INTERNAL_ERROR"}
                    ).encode(),
                )
            return None

        server.api.hooks.append(fail_first_projects)
        config = write_config(here, server)
        run_cycle(config)
        entities = export(config)
    assert failures
    assert "component:acme/cart" in by_ref(entities)


def test_check_reads_the_public_routes(here: Path) -> None:
    with running() as server:
        showcase(server.api)
        config = write_config(here, server)
        result = cli("--config", config, "check", "--json")
        paths = [r.path for r in server.api.requests]
    document = json.loads(result.stdout)
    assert result.exit_code == 0, document
    assert "/api/v1/namespaces" in paths
    public = [r for r in server.api.requests if not r.path.startswith("/api/")]
    assert all("authorization" not in r.headers for r in public)


def test_the_jwt_exp_claim_wins_over_expires_in(here: Path) -> None:
    """`expires_in` says an hour, the JWT's `exp` says 4 s: a cached token must not be sent
    once `exp` has passed (the API answers 401 INVALID_TOKEN for it)."""
    with running() as server:
        showcase(server.api)
        server.identity.lifetime = 4
        server.identity.reported_expires_in = 3600
        config = write_config(here, server)
        document = yaml.safe_load(config.read_text())
        document["openchoreo"]["auth"]["oauth"]["tokenCacheFile"] = str(here / "token.json")
        config.write_text(yaml.safe_dump(document))
        run_cycle(config)

        time.sleep(max(server.identity.tokens.values()) - time.time() + 0.3)  # past every exp
        cached = set(server.identity.tokens)
        before = len(server.api.api_requests())
        run_cycle(config)
        later = server.api.api_requests()[before:]
    assert [r.status for r in later if r.status == 401] == []
    assert not [r for r in later if r.headers["authorization"].removeprefix("Bearer ") in cached]


def test_a_cursor_handed_back_unchanged_fails_instead_of_looping(here: Path) -> None:
    with running() as server:
        bulk(server.api, {"bulk-a": 30})

        def echo(request: Request) -> Any:
            cursor = request.param("cursor")
            if request.path == "/api/v1/namespaces/bulk-a/components" and cursor:
                return (
                    200,
                    {"Content-Type": "application/json"},
                    json.dumps({"items": [], "pagination": {"nextCursor": cursor}}).encode(),
                )
            return None

        server.api.hooks.append(echo)
        config = write_config(here, server, chunk_size=10)
        result = cli("--config", config, "run", "--force", "--json")
        echoed = [
            r
            for r in server.api.api_requests()
            if r.path == "/api/v1/namespaces/bulk-a/components" and r.param("cursor")
        ]
    document = json.loads(result.stdout)
    assert result.exit_code == 3, document
    assert "cursor" in (document["providers"][0]["error"] or "")
    assert 1 <= len(echoed) <= 8


def test_a_stored_cursor_that_expired_between_bursts_restarts_its_listing(here: Path) -> None:
    """A cycle over several bursts (1 s each at 15 requests/s): between the first and the
    second, etcd compacts, so the cursor the first burst stored answers 500 at the second's
    start; that listing restarts and the cycle completes whole."""
    with running() as server:
        expected = bulk(server.api, {"bulk-a": 90})
        config = write_config(here, server, chunk_size=5, burstLength=1, maxRequestsPerSecond=15)
        first = cli("--config", config, "run", "--force", "--json")
        assert first.exit_code == 0, first.stdout
        assert not json.loads(first.stdout)["providers"][0]["cycleCompleted"]
        server.api.storage.compact()
        run_cycle(config, max_runs=10)
        entities = export(config)
        state = status(config)
        with_cursor = [r.status for r in server.api.api_requests() if r.param("cursor")]
    assert 500 in with_cursor
    assert set(by_ref(entities)) == expected
    assert state["providers"][0]["cursorResets"] >= 1


def test_a_client_registered_for_basic_gets_its_token_by_basic(here: Path) -> None:
    """README: the form first, then HTTP Basic when the form is refused, the id and secret as
    they are (the secret holds + / =)."""
    with running() as server:
        showcase(server.api)
        server.identity.method = "client_secret_basic"
        config = write_config(here, server)
        run_cycle(config)
        assert_every_request_authorized(server)
    assert server.identity.tokens
    assert len(server.identity.requests) == 2
    assert "authorization" in server.identity.requests[-1].headers


@pytest.mark.parametrize("outage", [1, 20], ids=["one-503", "lasting-500"])
def test_a_failing_token_endpoint_never_lets_a_request_go_without_a_token(
    here: Path, outage: int
) -> None:
    with running() as server:
        showcase(server.api)
        server.identity.fail_next = [503 if outage == 1 else 500] * outage
        config = write_config(here, server, burstLength=3)
        result = cli("--config", config, "run", "--force", "--json")
        document = json.loads(result.stdout)
        unauthenticated = [
            r.path for r in server.api.api_requests() if "authorization" not in r.headers
        ]
    assert unauthenticated == []
    if outage == 1:
        assert result.exit_code == 0, document
        assert document["providers"][0]["cycleCompleted"]
    else:
        assert result.exit_code == 3, document
        assert len(server.identity.requests) <= 8


def test_an_api_that_refuses_every_token_fails_the_burst_without_looping(here: Path) -> None:
    with running() as server:
        showcase(server.api)
        server.identity.valid = lambda token: False  # type: ignore[method-assign]
        config = write_config(here, server)
        result = cli("--config", config, "run", "--force", "--json")
        document = json.loads(result.stdout)
        refused = server.api.api_requests()
    assert result.exit_code == 3, document
    assert "401" in (document["providers"][0]["error"] or ""), document
    assert len(refused) <= 8
    assert len(server.identity.requests) <= 4


def test_api_orgs_at_a_v1_server_is_a_setting_to_mend_naming_the_one_it_speaks(here: Path) -> None:
    """The document's server has no `/orgs`: its 404 says so, and its namespace listing
    answers, so the setting is what to mend (exit 2), not the server."""
    with running() as server:
        showcase(server.api)
        config = write_config(here, server)
        document = yaml.safe_load(config.read_text())
        document["openchoreo"]["api"] = "orgs"
        config.write_text(yaml.safe_dump(document))
        result = cli("--config", config, "run", "--force", "--json")

    assert result.exit_code == 2, result.stdout
    [provider] = json.loads(result.stdout)["providers"]
    assert provider["error"].startswith("openchoreo.api: GET /orgs: HTTP 404")
    assert provider["error"].endswith("the server speaks the v1 API: set it to v1 or auto")


def test_a_401_to_a_config_without_credentials_is_a_setting_to_mend(here: Path) -> None:
    """The JWT middleware's 401 (`MISSING_TOKEN`) when `openchoreo.auth` gives nothing."""
    with running() as server:
        showcase(server.api)
        config = write_config(here, server)
        document = yaml.safe_load(config.read_text())
        del document["openchoreo"]["auth"]
        config.write_text(yaml.safe_dump(document))
        result = cli("--config", config, "run", "--force", "--json")

    assert result.exit_code == 2, result.stdout
    [provider] = json.loads(result.stdout)["providers"]
    assert "HTTP 401" in provider["error"]
    assert provider["error"].endswith("the API needs credentials: set openchoreo.auth")


def test_one_component_answering_500_holds_back_only_its_own_event(here: Path) -> None:
    """The server cannot read one object (its every GET answers 500): the events after its
    event apply, `run` exits 0, and its event alone waits (not re-read by the next run)."""
    with showcase_ingested(here) as (server, config):
        broken = "/api/v1/namespaces/acme/components/cart"
        reads: list[str] = []

        def cannot_read_cart(request: Request) -> Any:
            if request.path != broken:
                return None
            reads.append(request.path)
            body = {"error": "Internal server error", "code": "INTERNAL_ERROR"}
            return 500, {"Content-Type": "application/json"}, json.dumps(body).encode()

        server.api.hooks.append(cannot_read_cart)
        put_service(server.api, "acme", "shop", "basket", "basket-1")
        put_service(server.api, "acme", "shop", "wishlist", "wishlist-1")

        def created(name: str) -> str:
            return json.dumps(
                {"kind": "Component", "name": name, "namespace": "acme", "action": "created"}
            )

        stdin = "\n".join([created("cart"), created("basket")])
        assert cli("--config", config, "event", "-", stdin=stdin).exit_code == 0
        first = cli("--config", config, "run", "--json")
        tried = len(reads)
        assert cli("--config", config, "event", "-", stdin=created("wishlist")).exit_code == 0
        second = cli("--config", config, "run", "--json")
        shown = status(config)
        events, [provider] = shown["events"], shown["providers"]
        catalog = by_ref(export(config))

    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["events"]["held"] == []
    assert tried >= 1
    assert second.exit_code == 0, second.stderr
    assert len(reads) == tried  # the cart's event waits its own step: not read again
    assert {"component:acme/basket", "component:acme/wishlist"} <= set(catalog)
    assert events["pending"] == 1
    [waiting] = provider["eventsWaitingAlone"]
    assert (waiting["kind"], waiting["namespace"], waiting["name"]) == ("Component", "acme", "cart")


def test_one_component_answering_500_alone_in_the_inbox_waits_alone_after_a_probe(
    here: Path,
) -> None:
    """As under `serve`, which drains each event as it comes: no event after the cart's to
    ask, so the first namespace is read (`GET /namespaces?limit=1`): it answers, so the cart's
    event alone waits and the run exits 0; an outage of the whole API holds every event."""
    with showcase_ingested(here) as (server, config):
        down = {"all": False}

        def cannot_read(request: Request) -> Any:
            broken = request.path == "/api/v1/namespaces/acme/components/cart"
            if not (broken or (down["all"] and request.path.startswith("/api/v1/"))):
                return None
            body = {"error": "Internal server error", "code": "INTERNAL_ERROR"}
            return 500, {"Content-Type": "application/json"}, json.dumps(body).encode()

        server.api.hooks.append(cannot_read)
        cart = {"kind": "Component", "name": "cart", "namespace": "acme", "action": "updated"}
        assert cli("--config", config, "event", "-", stdin=json.dumps(cart)).exit_code == 0
        time.sleep(2.1)  # an update waits out the forwarder's debounce window
        alone = cli("--config", config, "run", "--json")
        probes = [r.param("limit") for r in server.api.requests if r.path == "/api/v1/namespaces"]
        [waiting] = status(config)["providers"][0]["eventsWaitingAlone"]
        down["all"] = True
        put_service(server.api, "acme", "shop", "basket", "basket-1")
        basket = {**cart, "name": "basket", "action": "created"}
        assert cli("--config", config, "event", "-", stdin=json.dumps(basket)).exit_code == 0
        outage = cli("--config", config, "run", "--json")

    assert alone.exit_code == 0, alone.stderr
    assert json.loads(alone.stdout)["events"]["held"] == []
    assert probes[-1] == "1"  # the probe, after the cycle's listings
    assert waiting["name"] == "cart"
    assert outage.exit_code == 3, outage.stderr
    assert json.loads(outage.stdout)["events"]["held"]


def test_a_listing_that_outlives_compaction_across_bursts_is_reported(here: Path) -> None:
    """etcd compacts while bulk-a's workloads are walked, whenever the listing has served 15 pages
    since its first (its cursors all die with that page's revision, at about 10 pages a
    burst): each later burst resumes the listing, or restarts it on a stored cursor that died,
    and it never comes to its end. No stale-start streak forms (every other stored cursor
    works); the restarts are counted across bursts and reported, and nothing is stepped over."""
    with running() as server:
        bulk(server.api)
        config = write_config(here, server, chunk_size=5, burstLength=1)
        path = "/api/v1/namespaces/bulk-a/workloads"
        served = [0]  # pages of the listing since its first

        def slow(request: Request) -> None:
            if request.path == path:
                time.sleep(0.08)
                served[0] = served[0] + 1 if request.param("cursor") else 1

        server.api.hooks.append(slow)
        for _ in range(16):
            cli("--config", config, "run", "--force", "--json")
            if served[0] >= 15:
                server.api.storage.compact()  # between bursts: the next stored cursor dies
        state = status(config)

    (provider,) = state["providers"]
    assert provider["lastCompletedAt"] is None
    (trouble,) = provider["problems"]
    assert trouble.startswith("the workloads listing restarted "), trouble
    assert "lengthen openchoreo.incremental.burstLength" in trouble
