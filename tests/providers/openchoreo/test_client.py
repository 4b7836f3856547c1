from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

import choreo_ingest
from choreo_ingest.config import OpenChoreoConfig
from choreo_ingest.errors import (
    AuthError,
    ConfigError,
    CursorExpired,
    DeadlineExceeded,
    PermanentError,
    ProviderError,
    RetryAfter,
    TransientError,
)
from choreo_ingest.providers.openchoreo.client import (
    ListPage,
    NotFound,
    NotFoundError,
    OpenChoreoClient,
    default_user_agent,
)

USER_AGENT = "choreo-ingest/test"

MakeClient = Callable[..., OpenChoreoClient]


@pytest.fixture
def make_client(clock, config_for) -> Iterator[MakeClient]:
    """`make_client(deadline_in=60, token=..., **incremental)`; jitter fixed at its midpoint."""
    clients: list[OpenChoreoClient] = []

    def build(*, deadline_in: float | None = 60.0, **settings: Any) -> OpenChoreoClient:
        deadline = None if deadline_in is None else clock.monotonic() + deadline_in
        client = OpenChoreoClient(
            config_for(**settings).openchoreo,
            clock=clock,
            deadline=deadline,
            user_agent=USER_AGENT,
            rng=lambda: 0.5,
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def failure(message: str, code: str) -> dict[str, Any]:
    return {"success": False, "error": message, "code": code}


class TestRequests:
    def test_list_page_sends_limit_pagination_and_credentials(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str, token: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&pagination=cursor",
            match_headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            json={"success": True, "data": {"items": [{"name": "acme"}], "nextCursor": "c1"}},
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs?limit=2&cursor=c1&pagination=cursor",
            match_headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            json={"success": True, "data": {"items": [], "nextCursor": ""}},
        )
        client = make_client()

        first = client.list_page("/orgs", limit=2, cursor=None)
        second = client.list_page("/orgs", limit=2, cursor="c1")

        assert first == ListPage(items=[{"name": "acme"}], next_cursor="c1")
        assert second == ListPage(items=[], next_cursor="")
        assert client.requests_sent == 2

    def test_get_returns_data_with_params(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects/shop/components/cart?include=type,workload",
            json={"success": True, "data": {"name": "cart"}},
        )

        data = make_client().get(
            "/orgs/acme/projects/shop/components/cart", {"include": "type,workload"}
        )

        assert data == {"name": "cart"}

    def test_no_authorization_header_without_a_token(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(json={"success": True, "data": {}})

        make_client(token=None).get("/orgs/acme")

        assert "Authorization" not in httpx_mock.get_request().headers

    def test_default_user_agent_names_the_version(self) -> None:
        assert default_user_agent() == f"choreo-ingest/{choreo_ingest.__version__}"

    def test_legacy_server_without_next_cursor_is_refused(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        legacy = {"items": [{"name": "acme"}], "totalCount": 1, "page": 1, "pageSize": 1}
        httpx_mock.add_response(json={"success": True, "data": legacy})

        with pytest.raises(PermanentError) as caught:
            make_client().list_page("/orgs", limit=50, cursor=None)

        assert str(caught.value) == (
            f"the OpenChoreo API at {base_url} does not support cursor pagination "
            "(no nextCursor in GET /orgs)"
        )


ERRORS = [
    (
        400,
        failure("invalid cursor", "INVALID_CURSOR_FORMAT"),
        PermanentError,
        "INVALID_CURSOR_FORMAT",
        "GET /orgs: HTTP 400 INVALID_CURSOR_FORMAT: invalid cursor",
    ),
    (
        401,
        {"error": "INVALID_TOKEN", "message": "token is expired"},
        AuthError,
        "INVALID_TOKEN",
        "GET /orgs: HTTP 401 INVALID_TOKEN: token is expired; check openchoreo.token",
    ),
    (
        403,
        failure("not allowed to list organizations", "FORBIDDEN"),
        AuthError,
        "FORBIDDEN",
        "GET /orgs: HTTP 403 FORBIDDEN: not allowed to list organizations; check openchoreo.token",
    ),
    (
        404,
        failure("organization not found", "ORGANIZATION_NOT_FOUND"),
        NotFoundError,
        "ORGANIZATION_NOT_FOUND",
        "GET /orgs: HTTP 404 ORGANIZATION_NOT_FOUND: organization not found",
    ),
    (
        410,
        failure("continue token expired", "CONTINUE_TOKEN_EXPIRED")
        | {"metadata": {"retryable": True, "code": "CONTINUE_TOKEN_EXPIRED"}},
        CursorExpired,
        "CONTINUE_TOKEN_EXPIRED",
        "GET /orgs: HTTP 410 CONTINUE_TOKEN_EXPIRED: continue token expired",
    ),
    (
        410,
        {"success": False, "error": "expired", "metadata": {"code": "CONTINUE_TOKEN_EXPIRED"}},
        CursorExpired,
        "CONTINUE_TOKEN_EXPIRED",
        "GET /orgs: HTTP 410 CONTINUE_TOKEN_EXPIRED: expired",
    ),
    (
        409,
        failure("conflict", "CONFLICT"),
        PermanentError,
        "CONFLICT",
        "GET /orgs: HTTP 409 CONFLICT: conflict",
    ),
    (
        401,
        "<html>nope</html>",
        AuthError,
        None,
        "GET /orgs: HTTP 401: Unauthorized; check openchoreo.token",
    ),
]
ERROR_IDS = [
    "400-bad-cursor",
    "401-token-body",
    "403-forbidden",
    "404-gone",
    "410-expired",
    "410-code-in-metadata",
    "409-other-4xx",
    "401-not-json",
]


class TestErrorTranslation:
    @pytest.mark.parametrize(("status", "body", "kind", "code", "message"), ERRORS, ids=ERROR_IDS)
    def test_status_becomes_error_without_retrying(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        status: int,
        body: Any,
        kind: type[ProviderError],
        code: str | None,
        message: str,
    ) -> None:
        if isinstance(body, str):
            httpx_mock.add_response(status_code=status, text=body)
        else:
            httpx_mock.add_response(status_code=status, json=body)

        with pytest.raises(ProviderError) as caught:
            make_client().get("/orgs")

        assert type(caught.value) is kind
        assert (caught.value.method, caught.value.path) == ("GET", "/orgs")
        assert (caught.value.status, caught.value.code) == (status, code)
        assert str(caught.value) == message
        assert len(httpx_mock.get_requests()) == 1

    @pytest.mark.parametrize(
        ("response", "problem"),
        [
            ({"text": "not json at all"}, "response body is not JSON"),
            ({"json": [1, 2]}, "response is not an OpenChoreo envelope"),
            ({"json": {"items": []}}, "response is not an OpenChoreo envelope"),
            ({"json": {"success": False, "data": {}}}, "response is not an OpenChoreo envelope"),
            ({"json": {"success": True, "data": "x"}}, "data is not an object"),
        ],
        ids=["not-json", "json-list", "no-envelope", "success-false", "data-not-object"],
    )
    def test_bad_success_body_is_permanent(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        response: dict[str, Any],
        problem: str,
    ) -> None:
        httpx_mock.add_response(**response)

        with pytest.raises(PermanentError) as caught:
            make_client().get("/orgs/acme")

        assert str(caught.value) == f"GET /orgs/acme: HTTP 200: {problem}"

    def test_bad_list_items_are_permanent(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(json={"success": True, "data": {"items": "x", "nextCursor": ""}})

        with pytest.raises(PermanentError, match=r"GET /orgs: HTTP 200: .*no list of items"):
            make_client().list_page("/orgs", limit=5, cursor=None)

    def test_error_names_the_path_without_the_query(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=400, json=failure("bad", "INVALID_INPUT"))

        with pytest.raises(PermanentError) as caught:
            make_client().list_page("/orgs", limit=5, cursor="opaque-cursor-value")

        assert caught.value.path == "/orgs"
        assert "opaque-cursor-value" not in str(caught.value)
        assert "limit" not in str(caught.value)


class TestRetries:
    def test_server_errors_are_retried_with_backoff_then_succeed(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=503, json=failure("busy", "INTERNAL_ERROR"))
        httpx_mock.add_response(status_code=502, text="<html>bad gateway</html>")
        httpx_mock.add_response(json={"success": True, "data": {"name": "acme"}})
        started = clock.monotonic()

        assert make_client().get("/orgs/acme") == {"name": "acme"}

        assert clock.monotonic() - started == pytest.approx(0.2 + 0.4)  # base 0.2 s, doubling

    def test_server_errors_exhaust_the_attempts(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        for _ in range(4):
            httpx_mock.add_response(
                status_code=503, json=failure("upstream down", "INTERNAL_ERROR")
            )

        with pytest.raises(TransientError) as caught:
            make_client().get("/orgs/acme/projects")

        assert (
            str(caught.value) == "GET /orgs/acme/projects: HTTP 503 INTERNAL_ERROR: upstream down"
        )
        assert len(httpx_mock.get_requests()) == 4

    @pytest.mark.parametrize(
        ("exception", "message"),
        [
            (httpx.ReadTimeout("read timed out"), "GET /orgs: timed out"),
            (
                httpx.ConnectError("connection refused"),
                "GET /orgs: ConnectError: connection refused",
            ),
        ],
        ids=["timeout", "connection-error"],
    )
    def test_transport_failures_are_retried_then_transient(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, exception: Exception, message: str
    ) -> None:
        for _ in range(4):
            httpx_mock.add_exception(exception)

        with pytest.raises(TransientError) as caught:
            make_client().get("/orgs")

        assert type(caught.value) is TransientError
        assert str(caught.value) == message
        assert len(httpx_mock.get_requests()) == 4

    def test_timeout_then_success(self, httpx_mock: HTTPXMock, make_client: MakeClient) -> None:
        httpx_mock.add_exception(httpx.ReadTimeout("read timed out"))
        httpx_mock.add_response(json={"success": True, "data": {"ok": True}})

        assert make_client().get("/orgs") == {"ok": True}

    def test_no_backoff_past_the_deadline(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=500, json=failure("boom", "INTERNAL_ERROR"))
        client = make_client(deadline_in=0.15)

        with pytest.raises(TransientError, match="HTTP 500 INTERNAL_ERROR: boom"):
            client.get("/orgs")

        assert clock.monotonic() == 1000.0  # gave up instead of sleeping 0.2 s


class TestRateLimited:
    def test_retry_after_seconds_is_waited_out(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=429, headers={"Retry-After": "3"})
        httpx_mock.add_response(json={"success": True, "data": {}})

        make_client().get("/orgs")

        assert clock.monotonic() == 1003.0

    def test_retry_after_http_date_is_waited_out(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        retry_at = formatdate(clock.now() + 5, usegmt=True)
        httpx_mock.add_response(status_code=429, headers={"Retry-After": retry_at})
        httpx_mock.add_response(json={"success": True, "data": {}})

        make_client().get("/orgs")

        assert clock.monotonic() == 1005.0

    def test_retry_after_beyond_the_deadline_is_raised(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(
            status_code=429, headers={"Retry-After": "120"}, json=failure("slow down", "RATE")
        )

        with pytest.raises(RetryAfter) as caught:
            make_client(deadline_in=60).get("/orgs")

        assert caught.value.retry_after == 120.0
        assert str(caught.value) == "GET /orgs: HTTP 429 RATE: slow down"
        assert clock.monotonic() == 1000.0

    def test_429_without_retry_after_backs_off(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=429)
        httpx_mock.add_response(json={"success": True, "data": {}})

        make_client().get("/orgs")

        assert clock.monotonic() == pytest.approx(1000.2)


class TestDeadline:
    def test_passed_deadline_sends_nothing(self, make_client: MakeClient, clock) -> None:
        client = make_client(deadline_in=5)
        clock.advance(5)

        with pytest.raises(DeadlineExceeded, match="GET /orgs: the burst deadline has passed"):
            client.get("/orgs")

        assert client.requests_sent == 0

    @pytest.mark.parametrize(
        ("deadline_in", "expected"),
        [(3.0, 3.0), (60.0, 10.0), (None, 10.0)],
        ids=["capped-by-deadline", "request-timeout", "no-deadline"],
    )
    def test_timeouts_are_capped_at_the_time_left(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        deadline_in: float | None,
        expected: float,
    ) -> None:
        httpx_mock.add_response(json={"success": True, "data": {}})

        make_client(deadline_in=deadline_in, request_timeout=10.0).get("/orgs")

        timeouts = httpx_mock.get_request().extensions["timeout"]
        assert timeouts == dict.fromkeys(("connect", "read", "write", "pool"), expected)

    def test_timeout_at_the_deadline_is_deadline_exceeded(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        def time_out(request: httpx.Request) -> httpx.Response:
            clock.advance(2)
            raise httpx.ReadTimeout("read timed out", request=request)

        httpx_mock.add_callback(time_out)

        with pytest.raises(DeadlineExceeded, match="GET /orgs: timed out at the burst deadline"):
            make_client(deadline_in=2).get("/orgs")


def echoed_in_envelope(status: int, code: str, attempts: int = 1) -> Callable[..., None]:
    def register(mock: HTTPXMock, token: str) -> None:
        for _ in range(attempts):
            mock.add_response(status_code=status, json=failure(f"bad token {token}", code))

    return register


def echoed_in_401_body(mock: HTTPXMock, token: str) -> None:
    mock.add_response(status_code=401, json={"error": "INVALID_TOKEN", "message": f"got {token}"})


def echoed_in_429_text(mock: HTTPXMock, token: str) -> None:
    mock.add_response(status_code=429, headers={"Retry-After": "9999"}, text=f"no, {token}")


def echoed_in_connection_error(mock: HTTPXMock, token: str) -> None:
    for _ in range(4):
        mock.add_exception(httpx.ConnectError(f"cannot connect with {token}"))


@pytest.mark.parametrize(
    "register",
    [
        echoed_in_envelope(400, "INVALID_INPUT"),
        echoed_in_401_body,
        echoed_in_envelope(403, "FORBIDDEN"),
        echoed_in_envelope(404, "ORGANIZATION_NOT_FOUND"),
        echoed_in_429_text,
        echoed_in_envelope(500, "INTERNAL_ERROR", attempts=4),
        echoed_in_connection_error,
    ],
    ids=["400", "401", "403", "404", "429", "500", "connection-error"],
)
def test_token_never_appears_in_errors(
    httpx_mock: HTTPXMock, make_client: MakeClient, token: str, register: Callable[..., None]
) -> None:
    register(httpx_mock, token)
    client = make_client()

    with pytest.raises(ProviderError) as caught:
        client.get("/orgs")

    error = caught.value
    for text in (str(error), repr(error), repr(error.args), repr(vars(error)), repr(client)):
        assert token not in text


class TestGetMany:
    def test_results_in_input_order_with_not_found_markers(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        for name in ("a", "c"):
            httpx_mock.add_response(
                url=f"{base_url}/orgs/acme/projects/p/components/{name}?include=type,workload",
                json={"success": True, "data": {"name": name}},
            )
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects/p/components/b?include=type,workload",
            status_code=404,
            json=failure("component not found", "COMPONENT_NOT_FOUND"),
        )
        params = {"include": "type,workload"}

        results = make_client().get_many(
            [(f"/orgs/acme/projects/p/components/{name}", params) for name in ("a", "b", "c")]
        )

        assert results == [
            {"name": "a"},
            NotFound(path="/orgs/acme/projects/p/components/b", code="COMPONENT_NOT_FOUND"),
            {"name": "c"},
        ]

    def test_other_failures_raise(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/x/bad", status_code=400, json=failure("nope", "INVALID_INPUT")
        )
        for name in ("a", "b", "c"):
            httpx_mock.add_response(
                url=f"{base_url}/x/{name}", json={"success": True, "data": {}}, is_optional=True
            )

        with pytest.raises(PermanentError, match="GET /x/bad: HTTP 400 INVALID_INPUT: nope"):
            make_client().get_many([(f"/x/{name}", {}) for name in ("a", "bad", "b", "c")])

    def test_runs_in_parallel_up_to_max_concurrent_requests(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        state = threading.Condition()
        in_flight = most = 0

        def slow(request: httpx.Request) -> httpx.Response:
            nonlocal in_flight, most
            with state:
                in_flight += 1
                most = max(most, in_flight)
                state.notify_all()
                state.wait_for(lambda: most >= 3, timeout=5)  # hold until the cap is reached once
                in_flight -= 1
            return httpx.Response(200, json={"success": True, "data": {"path": request.url.path}})

        httpx_mock.add_callback(slow, is_reusable=True)

        results = make_client(max_concurrent_requests=3).get_many(
            [(f"/x/{n}", {}) for n in range(9)]
        )

        assert most == 3
        assert results == [{"path": f"/api/v1/x/{n}"} for n in range(9)]


class TestConstruction:
    def test_base_url_is_required(self, clock) -> None:
        with pytest.raises(ConfigError, match=r"openchoreo\.baseUrl"):
            OpenChoreoClient(OpenChoreoConfig(), clock=clock, deadline=None)

    def test_unreadable_ca_bundle_is_a_config_error(self, clock, tmp_path, base_url: str) -> None:
        config = OpenChoreoConfig(base_url=base_url, ca_bundle=str(tmp_path / "missing.pem"))

        with pytest.raises(ConfigError, match=r"openchoreo\.caBundle"):
            OpenChoreoClient(config, clock=clock, deadline=None)

    def test_transport_must_be_an_httpx_transport(self, clock, base_url: str) -> None:
        with pytest.raises(TypeError, match="transport"):
            OpenChoreoClient(
                OpenChoreoConfig(base_url=base_url), clock=clock, deadline=None, transport=object()
            )

    def test_custom_transport_and_skip_verify_are_used(self, clock, base_url: str) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={"success": True, "data": {"v": 1}})

        config = OpenChoreoConfig(base_url=base_url + "/", insecure_skip_verify=True)
        with OpenChoreoClient(
            config, clock=clock, deadline=None, transport=httpx.MockTransport(handler)
        ) as client:
            assert client.get("/orgs/acme") == {"v": 1}

        assert str(seen[0].url) == f"{base_url}/orgs/acme"
        assert seen[0].headers["User-Agent"] == default_user_agent()
