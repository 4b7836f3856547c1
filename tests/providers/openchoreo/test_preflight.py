"""`check`: a page that cannot fit in a burst at the API's latency, and the server probe."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from choreo_ingest.config import (
    AuthConfig,
    Config,
    IncrementalConfig,
    OAuthConfig,
    OpenChoreoConfig,
)
from choreo_ingest.providers.openchoreo import OpenChoreoProvider
from choreo_ingest.providers.openchoreo import client as client_module
from choreo_ingest.providers.openchoreo import preflight as preflight_module
from choreo_ingest.providers.openchoreo.preflight import page_memory_check, page_time_check
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World

from fakes import FakeClock
from sim_support import IN_PROCESS_URL, simulator_transport

TOKEN = "org-era-token-4d1c"

DEFAULTS = IncrementalConfig()  # chunkSize 50, maxConcurrentRequests 5, burstLength 10 s


@pytest.mark.parametrize(
    ("latency", "settings", "ok", "seconds"),
    [
        (0.01, DEFAULTS, True, "0.1"),
        (5 / 11, DEFAULTS, True, "5.0"),  # 1 list + 10 rounds of 5 details: exactly half
        (0.9, DEFAULTS, False, "9.9"),
        (0.9, replace(DEFAULTS, burst_length=30.0), True, "9.9"),
        (0.9, replace(DEFAULTS, chunk_size=10), True, "2.7"),
        (0.01, replace(DEFAULTS, max_requests_per_second=5.0), False, "10.2"),
    ],
    ids=["fast", "half-the-burst", "slow", "longer-burst", "smaller-pages", "rate-capped"],
)
def test_org_era_page_time_against_burst_length(
    latency: float, settings: IncrementalConfig, ok: bool, seconds: str
) -> None:
    check = page_time_check(latency, settings, "orgs")

    assert (check.name, check.ok) == ("openchoreo.incremental", ok)
    assert f"takes about {seconds} s" in check.detail
    if not ok:
        assert "raise openchoreo.incremental.burstLength" in check.detail
        assert "lower openchoreo.incremental.chunkSize" in check.detail


@pytest.mark.parametrize(
    ("latency", "settings", "ok", "seconds"),
    [
        (0.9, DEFAULTS, True, "0.9"),  # one list call per page: no detail calls in v1
        (6.0, DEFAULTS, False, "6.0"),
        (0.01, replace(DEFAULTS, max_requests_per_second=0.1), False, "10.0"),
    ],
    ids=["one-request", "slow", "rate-capped"],
)
def test_v1_page_is_one_request(
    latency: float, settings: IncrementalConfig, ok: bool, seconds: str
) -> None:
    check = page_time_check(latency, settings, "v1")

    assert check.ok is ok
    assert f"a page takes about {seconds} s" in check.detail


def test_a_page_of_usual_size_says_nothing_of_memory() -> None:
    assert page_memory_check(32 * 2**20, 50) == []


def test_a_page_heavy_with_inline_schemas_warns_of_the_memory_a_run_needs() -> None:
    [check] = page_memory_check(61 * 2**20, 47)

    assert (check.name, check.ok, check.warning) == ("openchoreo.incremental", True, True)
    assert check.detail == (
        "a first page of 47 items (chunkSize) is 61 MiB of JSON: a run may need about 355 MiB "
        "of memory; lower openchoreo.incremental.chunkSize if the process's memory limit is "
        "near that (the Kubernetes examples set 384Mi)"
    )


def test_a_server_that_asks_for_a_token_on_version_is_checked_on(tmp_path: Path) -> None:
    """The org-era document: every request but `/health` carries the token, so a server may
    answer 401 to an unauthenticated `/version`; that server is up, not unreachable."""
    world = World.generate(1, 1, 2, seed=5)
    api = SimulatorApi(world, SimulatorOptions(api="orgs", token=TOKEN), FakeClock())
    simulated = simulator_transport(api)

    def guarded(request: httpx.Request) -> httpx.Response:
        if "Authorization" not in request.headers and request.url.path != "/health":
            return httpx.Response(401, json={"error": "MISSING_TOKEN", "message": "no token"})
        return simulated.handle_request(request)

    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="orgs", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(guarded))

    checks = {check.name: check for check in provider.preflight(FakeClock())}

    assert checks["openchoreo.server"].ok
    assert "no public /version (HTTP 401)" in checks["openchoreo.server"].detail
    assert checks["openchoreo.api"].ok, checks["openchoreo.api"].detail


def test_what_the_server_says_of_itself_is_shown_on_one_line_without_terminal_escapes(
    tmp_path: Path,
) -> None:
    world = World.generate(1, 1, 2, seed=5)
    api = SimulatorApi(world, SimulatorOptions(api="v1", token=TOKEN), FakeClock())
    simulated = simulator_transport(api)
    forged = "v9\x1b]0;pwned\x07\x1b[2J\nFAKE ok  line"

    def lying(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/version":
            return httpx.Response(200, json={"version": forged})
        if request.url.path == "/.well-known/oauth-protected-resource":
            return httpx.Response(200, json={"authorization_servers": [f"https://idp/{forged}"]})
        return simulated.handle_request(request)

    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(lying))

    [server] = [c for c in provider.preflight(FakeClock()) if c.name == "openchoreo.server"]

    assert server.detail.endswith(
        "OpenChoreo v9 FAKE ok line; security on, tokens from https://idp/v9 FAKE ok line"
    )


def test_a_server_that_answers_version_with_an_error_is_not_called_unreachable(
    tmp_path: Path,
) -> None:
    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            500, json={"error": "Internal server error", "code": "INTERNAL_ERROR"}
        )

    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(failing))

    checks = {check.name: check for check in provider.preflight(FakeClock())}

    server = checks["openchoreo.server"]
    assert (server.ok, server.warning) == (True, True)
    assert "unreachable" not in server.detail
    assert "GET /version: HTTP 500" in server.detail
    assert not checks["openchoreo.api"].ok  # the listing says the server is not well


def _v1_server_whose_version_answers(answer: httpx.Response) -> httpx.MockTransport:
    world = World.generate(1, 1, 2, seed=5)
    simulated = simulator_transport(
        SimulatorApi(world, SimulatorOptions(api="v1", token=TOKEN), FakeClock())
    )

    def handle(request: httpx.Request) -> httpx.Response:
        return answer if request.url.path == "/version" else simulated.handle_request(request)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("api", ["v1", "auto"])
def test_a_version_that_is_not_json_is_a_warning_and_the_checks_after_it_go_on(
    tmp_path: Path, api: str
) -> None:
    page = f"<!doctype html>\n<html><title>Sign in</title><p>{TOKEN}</p>" + "x" * 500
    answer = httpx.Response(200, text=page, headers={"Content-Type": "text/html; charset=utf-8"})
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api=api, token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    provider = OpenChoreoProvider(config, transport=_v1_server_whose_version_answers(answer))

    checks = {check.name: check for check in provider.preflight(FakeClock())}

    server = checks["openchoreo.server"]
    assert (server.ok, server.warning) == (True, True)
    assert "no usable /version (GET /version: HTTP 200: response body is not JSON" in server.detail
    assert "text/html; charset=utf-8, begins '<!doctype html> <html><title>Sign in" in server.detail
    assert TOKEN not in server.detail
    assert "<redacted>" in server.detail
    assert "x" * 100 not in server.detail
    assert "security on" in server.detail  # the probe after it was made
    assert checks["openchoreo.api"].ok, checks["openchoreo.api"].detail
    assert "openchoreo.incremental" in checks


def test_an_empty_version_answer_says_so(tmp_path: Path) -> None:
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    transport = _v1_server_whose_version_answers(httpx.Response(200, content=b""))
    provider = OpenChoreoProvider(config, transport=transport)

    checks = {check.name: check for check in provider.preflight(FakeClock())}

    assert "not JSON (no content type, empty)" in checks["openchoreo.server"].detail
    assert checks["openchoreo.api"].ok


def test_a_server_that_does_not_answer_fails_the_check_alone(tmp_path: Path) -> None:
    """Nothing after it could be checked: every other request goes to the same server."""

    def refusing(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(refusing))

    [server] = provider.preflight(FakeClock())

    assert (server.name, server.ok) == ("openchoreo.server", False)
    assert "unreachable: GET /version: ConnectError: connection refused" in server.detail
    assert server.detail.endswith(
        " (openchoreo.token, openchoreo.api and openchoreo.incremental: not checked until "
        "this passes)"
    )


def test_a_refused_grant_says_the_checks_of_the_listings_wait_for_it(tmp_path: Path) -> None:
    """On a terminal, `check` showed the oks before it and the error, and nothing of the checks
    it left out: they read as passed, or as forgotten (an operator review)."""
    api = SimulatorApi(
        World.generate(1, 1, 1, seed=3),
        SimulatorOptions(oauth_client_id="c", oauth_client_secret="right"),
    )
    oauth = OAuthConfig(
        token_url="http://openchoreo.test/oauth2/token", client_id="c", client_secret="wrong"
    )
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, auth=AuthConfig(oauth=oauth)),
        state_path=tmp_path / "state.db",
    )

    checks = OpenChoreoProvider(config, transport=simulator_transport(api)).preflight(FakeClock())

    assert [(check.name, check.ok) for check in checks] == [
        ("openchoreo.server", True),
        ("openchoreo.auth.oauth.clientSecret", False),
    ]
    assert "HTTP 401 invalid_client" in checks[1].detail
    assert checks[1].detail.endswith(
        " (openchoreo.api and openchoreo.incremental: not checked until this passes)"
    )


def test_a_config_key_a_check_fails_on_is_named_once(tmp_path: Path) -> None:
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1"),
        state_path=tmp_path / "state.db",
    )

    [failed] = OpenChoreoProvider(
        replace(config, openchoreo=replace(config.openchoreo, base_url=None))
    ).preflight(FakeClock())

    assert (failed.name, failed.ok) == ("openchoreo.baseUrl", False)
    assert failed.detail.startswith("required to call the API")


def _orgs_listing(pages: list[list[str]]) -> httpx.MockTransport:
    """An org-era server whose `/orgs` pages hold `pages` (names), in cursor mode; `/version`
    and the rest answer 404, which `check` reads as a server that does not say."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/api/v1/orgs":
            return httpx.Response(404, json={"success": False, "error": "no", "code": "NOT_FOUND"})
        at = int(request.url.params.get("cursor") or 0)
        after = str(at + 1) if at + 1 < len(pages) else ""
        items = [{"name": name, "createdAt": "2025-01-01T00:00:00Z"} for name in pages[at]]
        return httpx.Response(
            200, json={"success": True, "data": {"items": items, "nextCursor": after}}
        )

    return httpx.MockTransport(answer)


def _api_check(
    tmp_path: Path, transport: httpx.MockTransport, token: str | None = TOKEN
) -> tuple[bool, bool, str]:
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="orgs", token=token),
        state_path=tmp_path / "state.db",
    )
    provider = OpenChoreoProvider(config, transport=transport)
    [check] = [c for c in provider.preflight(FakeClock()) if c.name == "openchoreo.api"]
    return check.ok, check.warning, check.detail


def test_an_empty_first_page_with_more_to_list_is_not_called_an_empty_listing(
    tmp_path: Path,
) -> None:
    """The org-era document: a page may hold none of what the caller may see while
    `nextCursor` says more: `check` reads on to the first item before it advises a role."""
    ok, warning, detail = _api_check(tmp_path, _orgs_listing([[], [], ["acme"]]))

    assert (ok, warning) == (True, False), detail
    assert "(1 org on page 3, listing complete)" in detail


def test_a_listing_that_ends_empty_advises_the_role_binding(tmp_path: Path) -> None:
    ok, warning, detail = _api_check(tmp_path, _orgs_listing([[], []]))

    assert (ok, warning) == (True, True), detail
    assert "(0 orgs on page 2, listing complete), but it lists no orgs" in detail
    assert "without a role that may read them" in detail
    assert "backstage-catalog-reader" not in detail  # v1's role, in v1's Helm values


def test_an_org_era_listing_empty_without_credentials_names_no_v1_label(tmp_path: Path) -> None:
    ok, warning, detail = _api_check(tmp_path, _orgs_listing([[]]), token=None)

    assert (ok, warning) == (True, True), detail
    assert detail.endswith("but it lists no orgs (is openchoreo.baseUrl the right server?)")


def test_a_listing_still_empty_after_the_pages_check_reads_is_not_called_empty(
    tmp_path: Path,
) -> None:
    ok, warning, detail = _api_check(tmp_path, _orgs_listing([[]] * 8 + [["acme"]]))

    assert (ok, warning) == (True, False), detail
    assert "(0 orgs on page 5, more to list)" in detail


def _cursor_answered(status: int, echo: bool = False, ignored: bool = False) -> httpx.MockTransport:
    """A v1 server whose first `/namespaces` page says there is more; the page its cursor asks
    for answers `status` (500: the v1 API's answer to a cursor it cannot read), or hands the
    same cursor back (`echo`), or is the first page again with a new cursor (`ignored`: a
    proxy that drops the query)."""

    issued: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/v1/namespaces/"):  # a namespace's listings
            return httpx.Response(200, json={"items": [], "pagination": {}})
        if request.url.path != "/api/v1/namespaces":
            return httpx.Response(404, json={"error": "Not found", "code": "NOT_FOUND"})
        if "cursor" not in request.url.params or ignored:
            issued.append(f"c{len(issued) + 1}")  # a new cursor each time, as a server's are
            return httpx.Response(
                200, json={"items": [ns("acme")], "pagination": {"nextCursor": issued[-1]}}
            )
        if echo or status == 200:
            more = {"nextCursor": "c1"} if echo else {}
            return httpx.Response(200, json={"items": [ns("b")], "pagination": more})
        return httpx.Response(
            status, json={"error": "Internal server error", "code": "INTERNAL_ERROR"}
        )

    return httpx.MockTransport(answer)


def ns(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"openchoreo.dev/control-plane": "true"}}}


@pytest.mark.parametrize(
    ("transport", "expected"),
    [
        (
            _cursor_answered(200),
            "(1 namespace on the first page, more to list, its cursor followed)",
        ),
        (_cursor_answered(500), "the first page's nextCursor was refused: GET /namespaces"),
        (_cursor_answered(200, echo=True), "handed back the cursor it was asked with"),
        (_cursor_answered(200, ignored=True), "the first page's cursor is the first page again"),
    ],
    ids=["followed", "refused", "echoed", "ignored"],
)
def test_check_follows_the_first_pages_cursor(
    tmp_path: Path, transport: httpx.MockTransport, expected: str
) -> None:
    """A proxy that drops or mangles the query, or a server that cannot read its own cursor,
    would stop every listing at its first page: `check` asks for the second."""
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    provider = OpenChoreoProvider(config, transport=transport)
    [check] = [c for c in provider.preflight(FakeClock()) if c.name == "openchoreo.api"]

    assert check.ok == expected.startswith("(1 namespace"), check.detail
    assert expected in check.detail


def _v1_platform(
    clock: FakeClock, workloads: dict[str, Any], seconds: float
) -> httpx.MockTransport:
    """A v1 server with one namespace, whose first page of workloads is `workloads` and takes
    `seconds` (the other listings are empty and take no time)."""

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        if path == "/version":
            return httpx.Response(200, json={"version": "v1.2.3"})
        if path == "/namespaces":
            return httpx.Response(200, json={"items": [ns("acme")], "pagination": {}})
        if path == "/namespaces/acme/workloads":
            clock.advance(seconds)
            return httpx.Response(200, json=workloads)
        return httpx.Response(200, json={"items": [], "pagination": {}})

    return httpx.MockTransport(answer)


def _workloads(count: int, schema_chars: int) -> dict[str, Any]:
    endpoint = {"type": "HTTP", "port": 80, "schema": {"content": "x" * schema_chars}}
    items = [
        {"metadata": {"name": f"w{n}"}, "spec": {"endpoints": {"api": endpoint}}}
        for n in range(count)
    ]
    return {"items": items, "pagination": {}}


def _incremental_check(tmp_path: Path, transport: httpx.MockTransport, clock: FakeClock) -> Any:
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    checks = OpenChoreoProvider(config, transport=transport).preflight(clock)
    [check] = [c for c in checks if c.name == "openchoreo.incremental"]
    return check


def test_a_first_page_of_workloads_the_client_cannot_read_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workloads carry their API schemas inline: one namespace listed says nothing of a page of
    them, and every run would fail on it while `check` said all was well."""
    monkeypatch.setattr(client_module, "MAX_BODY_BYTES", 4096)
    clock = FakeClock()

    check = _incremental_check(tmp_path, _v1_platform(clock, _workloads(20, 500), 0.0), clock)

    assert not check.ok
    assert check.detail.startswith(
        "a first page of 50 (chunkSize): GET /namespaces/acme/workloads: the answer is larger "
        "than 4,096 bytes"
    )
    assert check.detail.endswith(
        "lower openchoreo.incremental.chunkSize, the items a page asks for"
    )


def test_a_first_page_heavy_with_schemas_is_a_memory_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight_module, "LARGE_PAGE_BYTES", 4096)
    clock = FakeClock()
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    transport = _v1_platform(clock, _workloads(20, 500), 0.0)

    checks = OpenChoreoProvider(config, transport=transport).preflight(clock)

    [warning] = [check for check in checks if check.warning]
    assert warning.ok
    assert warning.detail.startswith("a first page of 50 items (chunkSize) is 0 MiB of JSON")


@pytest.mark.parametrize(("seconds", "ok"), [(6.0, False), (0.5, True)], ids=["slow", "fast"])
def test_the_page_time_is_the_slowest_first_page_of_chunk_size(
    tmp_path: Path, seconds: float, ok: bool
) -> None:
    clock = FakeClock()

    check = _incremental_check(tmp_path, _v1_platform(clock, _workloads(3, 10), seconds), clock)

    assert check.ok is ok, check.detail
    assert f"a page takes about {seconds:.1f} s" in check.detail


def test_a_server_slow_within_half_a_burst_passes_every_read_of_check(tmp_path: Path) -> None:
    """4.5 s a request: a page fits in half of a 10 s burst, and `check`'s own time covers the
    reads a first page of each listing adds (it ran out at three request timeouts)."""
    clock = FakeClock()

    def answer(request: httpx.Request) -> httpx.Response:
        allowed = request.extensions.get("timeout", {}).get("read")
        if allowed is not None and allowed < 4.5:  # what the client gave this request
            clock.advance(allowed)
            raise httpx.ReadTimeout("timed out", request=request)
        clock.advance(4.5)
        path = request.url.path.removeprefix("/api/v1")
        if path == "/namespaces":
            return httpx.Response(200, json={"items": [ns("acme")], "pagination": {}})
        return httpx.Response(200, json={"items": [], "pagination": {}})

    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    checks = OpenChoreoProvider(config, transport=httpx.MockTransport(answer)).preflight(clock)

    assert [(check.name, check.ok) for check in checks if not check.ok] == []
    [page_time] = [check for check in checks if check.name == "openchoreo.incremental"]
    assert "a page takes about 4.5 s" in page_time.detail


def test_a_listing_of_the_namespace_refused_is_an_api_failure(tmp_path: Path) -> None:
    """The client may list namespaces but not a namespace's projects: every run would fail on it;
    it is the grant's problem, not the page size's."""
    clock = FakeClock()

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        if path == "/namespaces":
            return httpx.Response(200, json={"items": [ns("acme")], "pagination": {}})
        if path == "/namespaces/acme/projects":
            return httpx.Response(403, json={"error": "Forbidden", "code": "FORBIDDEN"})
        return httpx.Response(200, json={"items": [], "pagination": {}})

    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=TOKEN),
        state_path=tmp_path / "state.db",
    )
    checks = OpenChoreoProvider(config, transport=httpx.MockTransport(answer)).preflight(clock)

    failed = [(check.name, check.detail) for check in checks if not check.ok]
    assert len(failed) == 1
    assert failed[0][0] == "openchoreo.api"
    assert failed[0][1].startswith("GET /namespaces/acme/projects: HTTP 403")
    assert "openchoreo.incremental" not in {check.name for check in checks}


def jwt(claims: dict[str, Any]) -> str:
    """A token shaped as a JWT (its signature is not checked here)."""

    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def _v1_empty_listing_advice(tmp_path: Path, token: str) -> str:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/version":
            return httpx.Response(200, json={"version": "v1.2.3"})
        return httpx.Response(200, json={"items": [], "pagination": {}})

    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL, api="v1", token=token),
        state_path=tmp_path / "state.db",
    )
    provider = OpenChoreoProvider(config, transport=httpx.MockTransport(answer))
    [check] = [c for c in provider.preflight(FakeClock()) if c.name == "openchoreo.api"]
    assert (check.ok, check.warning) == (True, True), check.detail
    return check.detail


@pytest.mark.parametrize(
    ("claims", "entitlement", "said"),
    [
        ({"sub": "svc-catalog"}, '{claim: sub, value: "svc-catalog"}', None),
        (
            {"sub": "svc-catalog", "groups": ["", "platform-readers", "ops"]},
            '{claim: groups, value: "platform-readers"}',
            "The token carries a groups claim, so OpenChoreo (the chart's subject types) takes it "
            "for a user's and matches bindings on its groups, not on its sub",
        ),
        (
            {"sub": "svc-catalog", "groups": "platform-readers"},
            '{claim: groups, value: "platform-readers"}',
            "The token carries a groups claim",
        ),
        (
            {"sub": "svc-catalog", "groups": ""},
            '{claim: sub, value: "svc-catalog"}',
            "The token carries an empty groups claim, so OpenChoreo (the chart's subject types) "
            "takes it for a user's without groups, which no binding matches",
        ),
        (
            {"sub": "svc-catalog", "groups": []},
            '{claim: sub, value: "svc-catalog"}',
            None,
        ),
    ],
    ids=["sub", "groups", "one-group", "empty-groups", "no-groups"],
)
def test_an_empty_v1_listing_advises_the_binding_the_tokens_claims_need(
    tmp_path: Path, claims: dict[str, Any], entitlement: str, said: str | None
) -> None:
    """OpenChoreo's chart takes a token with `groups` for a user's (bound by its groups) before
    it would take it for a service account's (bound by `sub`)."""
    detail = _v1_empty_listing_advice(tmp_path, jwt(claims))

    assert f"entitlement: {entitlement}, effect: allow}}" in detail
    assert (said in detail) if said else ("groups claim" not in detail)
    assert jwt(claims) not in detail


@pytest.mark.parametrize(
    "token", ["opaque-token-0a1b", "a.b.c", f"x.{base64.b64encode(b'[1]').decode()}.y"]
)
def test_a_token_that_is_not_a_jwt_of_claims_leaves_the_sub_to_the_reader(
    tmp_path: Path, token: str
) -> None:
    detail = _v1_empty_listing_advice(tmp_path, token)

    assert 'entitlement: {claim: sub, value: "<the token\'s sub claim>"}' in detail
