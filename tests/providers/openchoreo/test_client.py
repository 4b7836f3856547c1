from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from pytest_httpx import HTTPXMock

import choreo_ingest
from choreo_ingest.config import AuthConfig, OAuthConfig, OpenChoreoConfig
from choreo_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectDeadlineExceeded,
    CursorExpired,
    CursorRejected,
    DeadlineExceeded,
    NotFoundError,
    PermanentError,
    ProviderError,
    RetryAfter,
    ServerStalled,
    TokenUnavailable,
    TransientError,
)
from choreo_ingest.providers.openchoreo.api_orgs import ORGS, get_object
from choreo_ingest.providers.openchoreo.auth import Credentials, credentials_for
from choreo_ingest.providers.openchoreo.client import (
    MAX_ATTEMPTS,
    OpenChoreoClient,
    form_poster,
)
from choreo_ingest.providers.openchoreo.client_auth import FormAnswer
from choreo_ingest.providers.openchoreo.connection_settings import default_user_agent
from choreo_ingest.providers.openchoreo.generation import ListPage
from choreo_ingest.providers.openchoreo.many_reads import FAST_ANSWER_SECONDS, Gone

from fakes import FakeClock

USER_AGENT = "choreo-ingest/test"
FORBIDDEN_ADVICE = (
    "the client may not read this: bind it to a role that may (OpenChoreo's read-only "
    "role for catalogs is backstage-catalog-reader)"
)

MakeClient = Callable[..., OpenChoreoClient]


@pytest.fixture
def make_client(clock, config_for) -> Iterator[MakeClient]:
    """`make_client(deadline_in=60, token=..., config=..., credentials=..., **incremental)`;
    jitter fixed at its midpoint."""
    clients: list[OpenChoreoClient] = []

    def build(
        *,
        deadline_in: float | None = 60.0,
        config: OpenChoreoConfig | None = None,
        credentials: Credentials | None = None,
        sequential_below: float = FAST_ANSWER_SECONDS,
        cancelled: Callable[[], bool] = lambda: False,
        **settings: Any,
    ) -> OpenChoreoClient:
        deadline = None if deadline_in is None else clock.monotonic() + deadline_in
        client = OpenChoreoClient(
            config or config_for(**settings).openchoreo,
            clock=clock,
            deadline=deadline,
            user_agent=USER_AGENT,
            rng=lambda: 0.5,
            credentials=credentials,
            sequential_below=sequential_below,
            cancelled=cancelled,
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def failure(message: str, code: str) -> dict[str, Any]:
    return {"success": False, "error": message, "code": code}


@dataclass
class RotatingCredentials:
    """Credentials whose refresh moves on to the next token, as an OAuth grant or a rotated
    token file would; records which token each refresh was told was rejected."""

    tokens: list[str]
    config_key: str = "openchoreo.auth.oauth.clientSecret"
    rejected: list[str | None] = field(default_factory=list)

    def bearer(self) -> str:
        return self.tokens[0]

    def refresh(self, rejected: str | None = None) -> str:
        self.rejected.append(rejected)
        if len(self.tokens) > 1:
            self.tokens.pop(0)
        return self.tokens[0]

    def secrets(self) -> list[str]:
        return list(self.tokens)


class TestRequests:
    def test_get_json_sends_params_and_credentials_and_returns_the_body(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str, token: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects/shop/components/cart?include=type,workload",
            match_headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            json={"success": True, "data": {"name": "cart"}},
        )
        client = make_client()

        body = client.get_json(
            "/orgs/acme/projects/shop/components/cart", {"include": "type,workload"}
        )

        assert body == {"success": True, "data": {"name": "cart"}}
        assert client.requests_sent == 1

    @pytest.mark.parametrize(
        ("path", "params"),
        [
            ("/orgs/acme/projects/shop/components/cart", {"include": "type,workload"}),
            ("namespaces/a%20b/components", {"limit": 100, "cursor": "eyJvIjoxfQ+/=="}),
            ("/orgs", {"q": "a b/c?d&e=f#g", "caf\u00e9": "\u00fcber", "on": True, "off": False}),
            ("/namespaces", {}),
        ],
    )
    def test_request_url_is_the_one_httpx_builds_from_path_and_params(
        self, clock: Any, base_url: str, path: str, params: dict[str, Any]
    ) -> None:
        seen: list[httpx.URL] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request.url)
            return httpx.Response(200, json={})

        config = OpenChoreoConfig(base_url=base_url)
        client = OpenChoreoClient(
            config, clock=clock, deadline=None, transport=httpx.MockTransport(answer)
        )
        with client, httpx.Client(base_url=f"{base_url}/") as reference:
            client.get_json(path, params)
            expected = reference.build_request("GET", path.lstrip("/"), params=params or None)
        assert seen == [expected.url]
        assert str(seen[0]) == str(expected.url)

    def test_get_json_returns_any_json_body_unread(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        """The client knows no envelope: a v1 list body comes back as the server sent it."""
        body = {"items": [{"metadata": {"name": "ns"}}], "pagination": {"nextCursor": "n"}}
        httpx_mock.add_response(json=body)

        assert make_client().get_json("/namespaces", {"limit": 5}) == body

    def test_no_authorization_header_without_a_token(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(json={"success": True, "data": {}})

        make_client(token=None).get_json("/orgs/acme")

        assert "Authorization" not in httpx_mock.get_request().headers

    def test_get_public_goes_to_the_server_root_without_credentials(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        server_root = base_url.removesuffix("/api/v1")
        httpx_mock.add_response(url=f"{server_root}/version", json={"version": "v1.0.0"})
        client = make_client()

        assert client.get_public("/version") == {"version": "v1.0.0"}

        request = httpx_mock.get_request()
        assert "Authorization" not in request.headers
        assert request.headers["User-Agent"] == USER_AGENT
        assert client.requests_sent == 1

    def test_get_public_is_not_retried(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=503, text="upstream down")

        with pytest.raises(TransientError, match=r"^GET /version: HTTP 503: upstream down$"):
            make_client().get_public("/version")

        assert len(httpx_mock.get_requests()) == 1
        assert clock.monotonic() == 1000.0

    @pytest.mark.parametrize(
        "error",
        [
            httpx.ConnectError("[Errno 111] Connection refused"),
            httpx.ConnectError("[Errno -2] Name or service not known"),
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        ],
        ids=["refused", "dns", "tls"],
    )
    def test_get_public_says_why_the_server_is_unreachable(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, error: httpx.HTTPError
    ) -> None:
        httpx_mock.add_exception(error)

        with pytest.raises(TransientError) as caught:
            make_client().get_public("/version")

        assert str(caught.value) == f"GET /version: ConnectError: {error}"

    def test_a_401_on_a_public_route_blames_no_credentials(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        """A public route goes without a token: its 401 says nothing of one (a gateway in
        front of the API that wants a login)."""
        httpx_mock.add_response(status_code=401, json={"error": "unauthorized"})
        credentials = RotatingCredentials(["issued-token-0001"])

        with pytest.raises(AuthError) as caught:
            make_client(credentials=credentials).get_public("/version")

        assert str(caught.value) == (
            "GET /version: HTTP 401 unauthorized: Unauthorized; a public route (sent without "
            "credentials) asked for them: point openchoreo.baseUrl at OpenChoreo's API itself, "
            "not at a gateway that wants a login"
        )
        assert "Authorization" not in httpx_mock.get_requests()[0].headers
        assert credentials.rejected == []

    def test_default_user_agent_names_the_version(self) -> None:
        assert default_user_agent() == f"choreo-ingest/{choreo_ingest.__version__}"


class TestOrgEraWireFormat:
    """The org-era envelope and pagination, read by `api_orgs` over the client."""

    def test_list_page_sends_limit_pagination_and_cursor(
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

        first = ORGS.list_page(client, "/orgs", limit=2, cursor=None)
        second = ORGS.list_page(client, "/orgs", limit=2, cursor="c1")

        assert first == ListPage(items=[{"name": "acme"}], next_cursor="c1")
        assert second == ListPage(items=[], next_cursor="")
        assert client.requests_sent == 2

    def test_get_object_returns_the_data_of_the_envelope(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/orgs/acme/projects/shop/components/cart?include=type,workload",
            json={"success": True, "data": {"name": "cart"}},
        )

        data = get_object(
            make_client(), "/orgs/acme/projects/shop/components/cart", {"include": "type,workload"}
        )

        assert data == {"name": "cart"}

    def test_legacy_server_without_next_cursor_is_refused(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        legacy = {"items": [{"name": "acme"}], "totalCount": 1, "page": 1, "pageSize": 1}
        httpx_mock.add_response(json={"success": True, "data": legacy})

        with pytest.raises(PermanentError) as caught:
            ORGS.list_page(make_client(), "/orgs", limit=50, cursor=None)

        assert str(caught.value) == (
            f"the OpenChoreo API at {base_url} does not support cursor pagination "
            "(no nextCursor in GET /orgs)"
        )

    @pytest.mark.parametrize(
        ("status", "cursor", "kind"),
        [
            (410, "c1", CursorExpired),
            (410, None, CursorExpired),
            (400, "c1", CursorRejected),
            (400, None, PermanentError),
        ],
        ids=["410-with-cursor", "410-first-page", "400-with-cursor", "400-first-page"],
    )
    def test_expiry_is_410_and_a_400_on_a_cursor_rejects_it(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        status: int,
        cursor: str | None,
        kind: type[ProviderError],
    ) -> None:
        httpx_mock.add_response(status_code=status, json=failure("expired", "CURSOR"))

        with pytest.raises(ProviderError) as caught:
            ORGS.list_page(make_client(), "/orgs", limit=5, cursor=cursor)

        assert type(caught.value) is kind
        assert str(caught.value) == f"GET /orgs: HTTP {status} CURSOR: expired"
        assert len(httpx_mock.get_requests()) == 1

    @pytest.mark.parametrize(
        ("response", "problem"),
        [
            ({"json": [1, 2]}, "response is not an OpenChoreo envelope"),
            ({"json": {"items": []}}, "response is not an OpenChoreo envelope"),
            ({"json": {"success": False, "data": {}}}, "response is not an OpenChoreo envelope"),
            ({"json": {"success": True, "data": "x"}}, "data is not an object"),
        ],
        ids=["json-list", "no-envelope", "success-false", "data-not-object"],
    )
    def test_bad_envelope_is_permanent(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        response: dict[str, Any],
        problem: str,
    ) -> None:
        httpx_mock.add_response(**response)

        with pytest.raises(PermanentError) as caught:
            get_object(make_client(), "/orgs/acme")

        assert str(caught.value) == f"GET /orgs/acme: {problem}"

    def test_bad_list_items_are_permanent(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(json={"success": True, "data": {"items": "x", "nextCursor": ""}})

        with pytest.raises(PermanentError, match=r"GET /orgs: HTTP 200: .*no list of items"):
            ORGS.list_page(make_client(), "/orgs", limit=5, cursor=None)

    def test_a_web_page_asks_whether_the_base_url_is_the_api(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        """`baseUrl` set to the console's address: its single-page app answers every path."""
        httpx_mock.add_response(html="<!doctype html><html><div id=root></div></html>")

        with pytest.raises(PermanentError) as caught:
            make_client().get_json("/namespaces")

        assert str(caught.value).endswith(
            f": a web page, not the API; is openchoreo.baseUrl "
            f"{base_url.removesuffix('/api/v1')} the API's address?"
        )

    def test_error_names_the_path_without_the_query(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=400, json=failure("bad", "INVALID_INPUT"))

        with pytest.raises(CursorExpired) as caught:
            ORGS.list_page(make_client(), "/orgs", limit=5, cursor="opaque-cursor-value")

        assert caught.value.path == "/orgs"
        assert str(caught.value) == "GET /orgs: HTTP 400 INVALID_INPUT: bad"


ERRORS = [
    (
        400,
        failure("invalid cursor", "INVALID_CURSOR_FORMAT"),
        (),
        PermanentError,
        "INVALID_CURSOR_FORMAT",
        "GET /orgs: HTTP 400 INVALID_CURSOR_FORMAT: invalid cursor",
    ),
    (
        403,
        failure("not allowed to list organizations", "FORBIDDEN"),
        (),
        AuthError,
        "FORBIDDEN",
        f"GET /orgs: HTTP 403 FORBIDDEN: not allowed to list organizations; {FORBIDDEN_ADVICE}",
    ),
    (
        404,
        failure("organization not found", "ORGANIZATION_NOT_FOUND"),
        (),
        NotFoundError,
        "ORGANIZATION_NOT_FOUND",
        "GET /orgs: HTTP 404 ORGANIZATION_NOT_FOUND: organization not found",
    ),
    (
        410,
        failure("continue token expired", "CONTINUE_TOKEN_EXPIRED"),
        (),
        PermanentError,
        "CONTINUE_TOKEN_EXPIRED",
        "GET /orgs: HTTP 410 CONTINUE_TOKEN_EXPIRED: continue token expired",
    ),
    (
        410,
        failure("continue token expired", "CONTINUE_TOKEN_EXPIRED")
        | {"metadata": {"retryable": True, "code": "CONTINUE_TOKEN_EXPIRED"}},
        (410,),
        CursorExpired,
        "CONTINUE_TOKEN_EXPIRED",
        "GET /orgs: HTTP 410 CONTINUE_TOKEN_EXPIRED: continue token expired",
    ),
    (
        410,
        {"success": False, "error": "expired", "metadata": {"code": "CONTINUE_TOKEN_EXPIRED"}},
        (410,),
        CursorExpired,
        "CONTINUE_TOKEN_EXPIRED",
        "GET /orgs: HTTP 410 CONTINUE_TOKEN_EXPIRED: expired",
    ),
    (
        500,
        {"error": "Internal server error", "code": "INTERNAL_ERROR"},
        (500,),
        CursorExpired,
        "INTERNAL_ERROR",
        "GET /orgs: HTTP 500 INTERNAL_ERROR: Internal server error",
    ),
    (
        409,
        failure("conflict", "CONFLICT"),
        (),
        PermanentError,
        "CONFLICT",
        "GET /orgs: HTTP 409 CONFLICT: conflict",
    ),
]
ERROR_IDS = [
    "400-bad-cursor",
    "403-forbidden-names-the-role",
    "404-gone",
    "410-not-special-by-itself",
    "410-expired-on",
    "410-code-in-metadata",
    "500-expired-on-not-retried",
    "409-other-4xx",
]


class TestErrorTranslation:
    @pytest.mark.parametrize(
        ("status", "body", "expired_on", "kind", "code", "message"), ERRORS, ids=ERROR_IDS
    )
    def test_status_becomes_error_without_retrying(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        status: int,
        body: Any,
        expired_on: tuple[int, ...],
        kind: type[ProviderError],
        code: str | None,
        message: str,
    ) -> None:
        httpx_mock.add_response(status_code=status, json=body)

        with pytest.raises(ProviderError) as caught:
            make_client().get_json("/orgs", expired_on=expired_on)

        assert type(caught.value) is kind
        assert (caught.value.method, caught.value.path) == ("GET", "/orgs")
        assert (caught.value.status, caught.value.code) == (status, code)
        assert str(caught.value) == message
        assert len(httpx_mock.get_requests()) == 1

    def test_text_error_body_gives_its_first_line_as_the_message(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(
            status_code=400,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            text="invalid limit parameter: must be a positive integer\nsee the API docs\n",
        )

        with pytest.raises(PermanentError) as caught:
            make_client().get_json("/namespaces", {"limit": "x"})

        assert str(caught.value) == (
            "GET /namespaces: HTTP 400: invalid limit parameter: must be a positive integer"
        )
        assert caught.value.code is None

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (
                failure("first line\nsecond line\x1b[2J\x1b[31mRED\x1b[0m\x07", "BAD\x1b[5mINPUT"),
                "GET /orgs: HTTP 400 BADINPUT: first line second lineRED",
            ),
            (failure("x" * 200_000, "BIG"), "GET /orgs: HTTP 400 BIG: " + "x" * 299 + "…"),
            (
                {"error": "\x1b]0;owned\x07\r\n\t", "code": "X"},
                "GET /orgs: HTTP 400 X: Bad Request",
            ),
        ],
        ids=["lines-and-terminal-escapes", "huge", "nothing-printable"],
    )
    def test_the_server_message_is_one_printable_line_of_bounded_length(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, body: Any, message: str
    ) -> None:
        """It is shown on a terminal, in `--json` and stored as the provider's lastError."""
        httpx_mock.add_response(status_code=400, json=body)

        with pytest.raises(PermanentError) as caught:
            make_client().get_json("/orgs")

        assert str(caught.value) == message

    @pytest.mark.parametrize(
        ("headers", "text"),
        [
            (
                {"Content-Type": "text/html"},
                "\n\n<html><body><h1>502 Bad Gateway</h1></body></html>",
            ),
            ({"Content-Type": "text/plain"}, "<!DOCTYPE html><html><title>oops</title>"),
        ],
        ids=["html-content-type", "html-looking-text"],
    )
    def test_an_html_page_gives_the_reason_phrase(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        headers: dict[str, str],
        text: str,
    ) -> None:
        for _ in range(MAX_ATTEMPTS):
            httpx_mock.add_response(status_code=502, headers=headers, text=text)

        with pytest.raises(TransientError) as caught:
            make_client().get_json("/orgs")

        assert str(caught.value) == "GET /orgs: HTTP 502: Bad Gateway"

    def test_a_secret_holding_whitespace_is_masked_before_the_message_is_made_one_line(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        credentials = RotatingCredentials(["tok-0001-abcd", "Abc\tDefSecret-9876"])  # secrets: both
        httpx_mock.add_response(
            status_code=400, json=failure("echoed Abc\tDefSecret-9876 here", "INVALID_INPUT")
        )

        with pytest.raises(PermanentError) as caught:
            make_client(credentials=credentials).get_json("/orgs")

        assert str(caught.value) == "GET /orgs: HTTP 400 INVALID_INPUT: echoed <redacted> here"

    def test_empty_error_body_gives_the_reason_phrase(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=409)

        with pytest.raises(PermanentError) as caught:
            make_client().get_json("/orgs")

        assert str(caught.value) == "GET /orgs: HTTP 409: Conflict"

    def test_body_that_is_not_json_is_permanent(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(text="not json at all")

        with pytest.raises(PermanentError) as caught:
            make_client().get_json("/orgs/acme")

        assert str(caught.value) == (
            "GET /orgs/acme: HTTP 200: response body is not JSON "
            "(text/plain; charset=utf-8, begins 'not json at all')"
        )

    def test_error_names_the_path_without_the_query(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=400, json=failure("bad", "INVALID_INPUT"))

        with pytest.raises(PermanentError) as caught:
            make_client().get_json("/orgs?debug=1", {"limit": 5, "cursor": "opaque-cursor-value"})

        assert caught.value.path == "/orgs"
        assert str(caught.value) == "GET /orgs: HTTP 400 INVALID_INPUT: bad"


def config_with_credentials(source: str, base_url: str, token: str, tmp_path: Path):
    """An OpenChoreoConfig whose token comes from the config key `source`."""
    if source == "openchoreo.token":
        return OpenChoreoConfig(base_url=base_url, token=token)
    if source == "openchoreo.auth.token":
        return OpenChoreoConfig(base_url=base_url, auth=AuthConfig(token=token))
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    return OpenChoreoConfig(base_url=base_url, auth=AuthConfig(token_file=token_file))


class TestUnauthorized:
    def test_refreshes_once_and_retries_with_the_new_token(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        credentials = RotatingCredentials(["old-token-0001", "new-token-0002"])
        httpx_mock.add_response(
            url=f"{base_url}/orgs",
            match_headers={"Authorization": "Bearer old-token-0001"},
            status_code=401,
            json={"error": "INVALID_TOKEN", "message": "token is expired"},
        )
        httpx_mock.add_response(
            url=f"{base_url}/orgs",
            match_headers={"Authorization": "Bearer new-token-0002"},
            json={"success": True, "data": {"items": []}},
        )
        client = make_client(credentials=credentials)

        assert client.get_json("/orgs") == {"success": True, "data": {"items": []}}

        assert credentials.rejected == ["old-token-0001"]
        assert client.requests_sent == 2

    def test_a_401_after_the_last_retry_refreshes_and_sends_that_attempt_again(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        credentials = RotatingCredentials(["old-token-0001", "new-token-0002"])
        for _ in range(MAX_ATTEMPTS - 1):
            httpx_mock.add_response(status_code=503, json=failure("busy", "INTERNAL_ERROR"))
        httpx_mock.add_response(
            status_code=401, json={"error": "INVALID_TOKEN", "message": "token is expired"}
        )
        httpx_mock.add_response(json={"items": [], "pagination": {}})
        client = make_client(credentials=credentials)

        assert client.get_json("/namespaces") == {"items": [], "pagination": {}}

        assert credentials.rejected == ["old-token-0001"]
        assert client.requests_sent == MAX_ATTEMPTS + 1

    def test_a_refresh_leaves_every_attempt_to_the_failures_after_it(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        credentials = RotatingCredentials(["old-token-0001", "new-token-0002"])
        httpx_mock.add_response(
            status_code=401, json={"error": "INVALID_TOKEN", "message": "token is expired"}
        )
        for _ in range(MAX_ATTEMPTS):
            httpx_mock.add_response(status_code=503, json=failure("busy", "INTERNAL_ERROR"))
        client = make_client(credentials=credentials)

        with pytest.raises(TransientError) as caught:
            client.get_json("/namespaces")

        assert str(caught.value) == "GET /namespaces: HTTP 503 INTERNAL_ERROR: busy"
        assert client.requests_sent == MAX_ATTEMPTS + 1

    @pytest.mark.parametrize(
        "source", ["openchoreo.token", "openchoreo.auth.token", "openchoreo.auth.tokenFile"]
    )
    def test_a_401_fails_naming_the_config_key_without_sending_that_token_again(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        base_url: str,
        token: str,
        tmp_path: Path,
        source: str,
    ) -> None:
        """A configured token, or a token file that was not rotated, would be refused again."""
        httpx_mock.add_response(
            status_code=401, json={"error": "INVALID_TOKEN", "message": "token is expired"}
        )
        client = make_client(config=config_with_credentials(source, base_url, token, tmp_path))

        with pytest.raises(AuthError) as caught:
            client.get_json("/orgs")

        assert str(caught.value) == (
            f"GET /orgs: HTTP 401 INVALID_TOKEN: token is expired; check {source}"
        )
        assert (caught.value.status, caught.value.code) == (401, "INVALID_TOKEN")
        assert [request.headers["Authorization"] for request in httpx_mock.get_requests()] == [
            f"Bearer {token}"
        ]

    def test_a_token_file_rotated_after_a_401_is_sent_once_more(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str, tmp_path: Path
    ) -> None:
        config = config_with_credentials(
            "openchoreo.auth.tokenFile", base_url, "old-token-5e1f", tmp_path
        )
        assert config.auth.token_file is not None
        path = Path(str(config.auth.token_file))

        def refused(request: httpx.Request) -> httpx.Response:
            path.write_text("new-token-8a2c\n", encoding="utf-8")
            return httpx.Response(401, json={"error": "INVALID_TOKEN", "message": "expired"})

        httpx_mock.add_callback(refused, match_headers={"Authorization": "Bearer old-token-5e1f"})
        httpx_mock.add_response(match_headers={"Authorization": "Bearer new-token-8a2c"}, json={})

        assert make_client(config=config).get_json("/namespaces") == {}

    def test_401_with_a_body_that_is_not_json_names_the_config_key(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=401, text="<html>nope</html>")

        with pytest.raises(AuthError) as caught:
            make_client().get_json("/orgs")

        assert str(caught.value) == "GET /orgs: HTTP 401: Unauthorized; check openchoreo.token"
        assert caught.value.code is None

    def test_a_second_401_with_oauth_blames_the_apis_trust_not_the_client_secret(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        """The identity provider took the secret and issued the token twice: what is wrong is
        that the API does not take its tokens."""
        for _ in range(2):
            httpx_mock.add_response(
                status_code=401, json={"error": "INVALID_TOKEN", "message": "invalid token"}
            )
        credentials = RotatingCredentials(["issued-token-0001", "issued-token-0002"])

        with pytest.raises(AuthError) as caught:
            make_client(credentials=credentials).get_json("/namespaces")

        assert str(caught.value) == (
            "GET /namespaces: HTTP 401 INVALID_TOKEN: invalid token; the API refused a token "
            "just issued at openchoreo.auth.oauth.tokenUrl: check that OpenChoreo trusts that "
            "identity provider (its issuer, audience and signing keys; an audience the token "
            "lacks may need openchoreo.auth.oauth.audience); OpenChoreo also answers "
            "INVALID_TOKEN when it cannot fetch the identity provider's signing keys (JWKS) or "
            "its clock lags the token's issue time"
        )
        assert credentials.rejected == ["issued-token-0001"]

    def test_without_credentials_401_is_not_retried_and_says_to_configure_them(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=401, json={"error": "MISSING_TOKEN", "message": "no"})

        with pytest.raises(AuthError) as caught:
            make_client(token=None).get_json("/orgs")

        assert str(caught.value) == (
            "GET /orgs: HTTP 401 MISSING_TOKEN: no; the API needs credentials: set openchoreo.auth"
        )
        assert len(httpx_mock.get_requests()) == 1


class TestRedirects:
    @pytest.mark.parametrize("status", [301, 302, 307, 308])
    def test_a_redirect_is_not_followed_and_the_error_says_where_it_points(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, status: int
    ) -> None:
        httpx_mock.add_response(
            status_code=status, headers={"Location": "https://api.example.com/api/v1/namespaces"}
        )

        with pytest.raises(PermanentError) as caught:
            make_client().get_json("/namespaces")

        assert str(caught.value).endswith(
            "; redirected to https://api.example.com/api/v1/namespaces, not followed: point "
            "openchoreo.baseUrl at the API"
        )
        assert str(caught.value).startswith(f"GET /namespaces: HTTP {status}: ")
        assert len(httpx_mock.get_requests()) == 1

    def test_a_long_redirect_target_is_cut(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=302, headers={"Location": "/login?next=" + "x" * 400})

        with pytest.raises(PermanentError) as caught:
            make_client().get_json("/namespaces")

        assert "redirected to /login?next=xxx" in str(caught.value)
        assert "x" * 200 not in str(caught.value)


class TestRetries:
    def test_server_errors_are_retried_with_backoff_then_succeed(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=503, json=failure("busy", "INTERNAL_ERROR"))
        httpx_mock.add_response(status_code=502, text="<html>bad gateway</html>")
        httpx_mock.add_response(json={"name": "acme"})
        started = clock.monotonic()

        assert make_client().get_json("/orgs/acme") == {"name": "acme"}

        assert clock.monotonic() - started == pytest.approx(0.2 + 0.4)  # base 0.2 s, doubling

    def test_server_errors_exhaust_the_attempts(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        for _ in range(4):
            httpx_mock.add_response(
                status_code=503, json=failure("upstream down", "INTERNAL_ERROR")
            )

        with pytest.raises(TransientError) as caught:
            make_client().get_json("/orgs/acme/projects")

        assert (
            str(caught.value) == "GET /orgs/acme/projects: HTTP 503 INTERNAL_ERROR: upstream down"
        )
        assert len(httpx_mock.get_requests()) == 4
        assert caught.value.exhausted  # lasting trouble: the burst fails, pages or not

    def test_a_failure_is_not_retried_once_the_run_is_asked_to_stop(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        """SIGTERM came while the request was in flight: a service manager waits only so long,
        so no retry (and no new request) follows it."""
        stop = threading.Event()

        def busy(request: httpx.Request) -> httpx.Response:
            stop.set()
            return httpx.Response(503, json=failure("busy", "INTERNAL_ERROR"))

        httpx_mock.add_callback(busy)
        client = make_client(cancelled=stop.is_set)

        with pytest.raises(TransientError, match="HTTP 503"):
            client.get_json("/orgs/acme")
        with pytest.raises(TransientError, match="not sent: the run is stopping"):
            client.get_json("/orgs/acme")
        assert len(httpx_mock.get_requests()) == 1

    def test_501_not_implemented_is_permanent_and_not_retried(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=501, text="Not Implemented")

        with pytest.raises(PermanentError, match=r"^GET /namespaces: HTTP 501: Not Implemented$"):
            make_client().get_json("/namespaces")

        assert len(httpx_mock.get_requests()) == 1

    @pytest.mark.parametrize(
        ("exception", "message"),
        [
            (httpx.ReadTimeout("read timed out"), "GET /orgs: timed out"),
            (
                httpx.ConnectError("connection refused"),
                "GET /orgs: ConnectError: connection refused (openchoreo.baseUrl https://openchoreo.test)",
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
            make_client().get_json("/orgs")

        assert type(caught.value) is TransientError
        assert str(caught.value) == message
        assert len(httpx_mock.get_requests()) == 4

    def test_timeout_then_success(self, httpx_mock: HTTPXMock, make_client: MakeClient) -> None:
        httpx_mock.add_exception(httpx.ReadTimeout("read timed out"))
        httpx_mock.add_response(json={"ok": True})

        assert make_client().get_json("/orgs") == {"ok": True}

    def test_no_backoff_past_the_deadline(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=500, json=failure("boom", "INTERNAL_ERROR"))
        client = make_client(deadline_in=0.15)

        with pytest.raises(TransientError, match="HTTP 500 INTERNAL_ERROR: boom") as caught:
            client.get_json("/orgs")

        assert clock.monotonic() == 1000.0  # gave up instead of sleeping 0.2 s
        assert not caught.value.exhausted  # a retry that did not fit: a pause after pages


class TestRateLimited:
    def test_retry_after_seconds_is_waited_out(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=429, headers={"Retry-After": "3"})
        httpx_mock.add_response(json={})

        make_client().get_json("/orgs")

        assert clock.monotonic() == 1003.0

    def test_retry_after_http_date_is_waited_out(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        retry_at = formatdate(clock.now() + 5, usegmt=True)
        httpx_mock.add_response(status_code=429, headers={"Retry-After": retry_at})
        httpx_mock.add_response(json={})

        make_client().get_json("/orgs")

        assert clock.monotonic() == 1005.0

    def test_retry_after_beyond_the_deadline_is_raised(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(
            status_code=429, headers={"Retry-After": "120"}, json=failure("slow down", "RATE")
        )

        with pytest.raises(RetryAfter) as caught:
            make_client(deadline_in=60).get_json("/orgs")

        assert caught.value.retry_after == 120.0
        assert str(caught.value) == "GET /orgs: HTTP 429 RATE: slow down"
        assert clock.monotonic() == 1000.0

    @pytest.mark.parametrize("status", [503, 502, 500])
    def test_a_server_errors_retry_after_is_honoured_as_a_429s(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock, status: int
    ) -> None:
        httpx_mock.add_response(status_code=status, headers={"Retry-After": "3"})
        httpx_mock.add_response(status_code=status, headers={"Retry-After": "120"}, text="later")

        with pytest.raises(RetryAfter) as caught:
            make_client(deadline_in=60).get_json("/namespaces")

        assert clock.monotonic() == 1003.0  # the first waited out; the second does not fit
        assert caught.value.retry_after == 120.0
        assert str(caught.value) == f"GET /namespaces: HTTP {status}: later"
        assert not caught.value.exhausted

    @pytest.mark.parametrize(("status", "exhausted"), [(429, False), (503, True)])
    def test_only_a_lasting_429_is_not_exhausted_trouble(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, status: int, exhausted: bool
    ) -> None:
        """A rate limit that lasts asks the client to come back later (a pause after pages);
        a 503 that lasts, with its Retry-After, is trouble (a failure)."""
        for _ in range(4):
            httpx_mock.add_response(status_code=status, headers={"Retry-After": "1"})

        with pytest.raises(RetryAfter) as caught:
            make_client().get_json("/namespaces")

        assert len(httpx_mock.get_requests()) == 4
        assert caught.value.exhausted is exhausted

    def test_429_without_retry_after_backs_off(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        httpx_mock.add_response(status_code=429)
        httpx_mock.add_response(json={})

        make_client().get_json("/orgs")

        assert clock.monotonic() == pytest.approx(1000.2)


TIMEOUTS_LEFT = pytest.mark.parametrize(
    ("deadline_in", "expected"),
    [(3.0, 3.0), (60.0, 10.0), (None, 10.0)],
    ids=["capped-by-deadline", "request-timeout", "no-deadline"],
)
"""A request's timeouts (requestTimeout 10 s) against the time left before the deadline."""


class TestDeadline:
    def test_passed_deadline_sends_nothing(self, make_client: MakeClient, clock) -> None:
        client = make_client(deadline_in=5)
        clock.advance(5)

        with pytest.raises(DeadlineExceeded, match="GET /orgs: the burst deadline has passed"):
            client.get_json("/orgs")

        assert client.requests_sent == 0

    @TIMEOUTS_LEFT
    def test_timeouts_are_capped_at_the_time_left(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        deadline_in: float | None,
        expected: float,
    ) -> None:
        httpx_mock.add_response(json={})

        make_client(deadline_in=deadline_in, request_timeout=10.0).get_json("/orgs")

        timeouts = httpx_mock.get_request().extensions["timeout"]
        assert timeouts == dict.fromkeys(("connect", "read", "write", "pool"), expected)

    @pytest.mark.parametrize(
        ("errors_before", "said"),
        [
            (0, "GET /orgs: timed out: no answer in 10 s (requestTimeout)"),
            # A server failing with 500 is not slow: "raise burstLength" alone would mislead.
            (
                2,
                "GET /orgs: timed out at the burst deadline, the attempt before it answered "
                "HTTP 500 INTERNAL_ERROR",
            ),
        ],
        ids=["first-attempt", "after-server-errors"],
    )
    def test_timeout_at_the_deadline_is_deadline_exceeded(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock, errors_before: int, said: str
    ) -> None:
        failing = {"error": "Internal server error", "code": "INTERNAL_ERROR"}
        for _ in range(errors_before):
            httpx_mock.add_response(status_code=500, json=failing)

        def time_out(request: httpx.Request) -> httpx.Response:
            clock.advance(60)
            raise httpx.ReadTimeout("read timed out", request=request)

        httpx_mock.add_callback(time_out)

        with pytest.raises(DeadlineExceeded) as raised:
            make_client(deadline_in=30).get_json("/orgs")

        assert str(raised.value) == said

    @pytest.mark.parametrize(
        ("burst", "left", "stalled", "said"),
        [
            (10.0, 9.95, True, "GET /orgs: timed out: no answer in 9.95 s (requestTimeout)"),
            (10.0, 5.0, False, "GET /orgs: timed out at the burst deadline"),
            (4.0, 3.95, True, "GET /orgs: timed out: no answer in 3.95 s (the whole burst)"),
            (4.0, 2.0, False, "GET /orgs: timed out at the burst deadline"),
        ],
        ids=[
            "just-under-its-timeout-left",
            "half-its-timeout-left",
            "just-under-a-shorter-burst-left",
            "half-a-shorter-burst-left",
        ],
    )
    def test_a_request_unanswered_for_as_long_as_it_may_wait_is_a_stalled_server(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        clock,
        burst: float,
        left: float,
        stalled: bool,
        said: str,
    ) -> None:
        """burstLength and requestTimeout both 10 s (the defaults): the burst's first request
        gets just under 10 s, so its timeout is the deadline too. Not "raise burstLength": the
        server kept it waiting as long as it may, and a longer burst would wait as long. Half
        its timeout cut by the deadline says nothing of the server. With burstLength 4 s, no
        request can wait 90% of requestTimeout: the whole burst is as long as it may wait (else
        a hung server looked like a burst too short for a page, and an event drain charged an
        event an attempt at every drain without holding the others)."""

        def hang(request: httpx.Request) -> httpx.Response:
            clock.advance(request.extensions["timeout"]["read"])
            raise httpx.ReadTimeout("read timed out", request=request)

        httpx_mock.add_callback(hang)
        client = make_client(deadline_in=burst, request_timeout=10.0)
        clock.advance(burst - left)

        with pytest.raises(DeadlineExceeded) as raised:
            client.get_json("/orgs")

        assert (isinstance(raised.value, ServerStalled), str(raised.value)) == (stalled, said)

    def test_an_answer_whose_body_outlasts_the_timeout_is_not_a_stalled_server(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        """Its headers came at once, its body a second a chunk: the server answers, the page is
        too large or slow for the timeout (a smaller chunkSize helps), whatever time it had."""

        class SlowBody(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for chunk in (b'{"items": [', b"], ", b'"pagination": {}}'):
                    clock.advance(1.0)
                    yield chunk

        httpx_mock.add_callback(lambda request: httpx.Response(200, stream=SlowBody()))

        with pytest.raises(DeadlineExceeded) as raised:
            make_client(deadline_in=2.0, request_timeout=2.0).get_json("/orgs")

        assert not isinstance(raised.value, ServerStalled)
        assert str(raised.value) == "GET /orgs: timed out at the burst deadline"

    def test_a_retry_cut_by_the_deadline_after_a_whole_timeout_is_a_stalled_server(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        """requestTimeout 2 s, burstLength 3 s: the first attempt waits its 2 s, the retry the
        rest of the burst. A hung server, not a burst too short for a page."""

        def hang(request: httpx.Request) -> httpx.Response:
            clock.advance(request.extensions["timeout"]["read"])
            raise httpx.ReadTimeout("read timed out", request=request)

        httpx_mock.add_callback(hang, is_reusable=True)

        with pytest.raises(ServerStalled) as raised:
            make_client(deadline_in=3.0, request_timeout=2.0).get_json("/orgs")

        assert str(raised.value) == (
            "GET /orgs: timed out: no answer in 2 s (requestTimeout), nor to its retry by the "
            "burst deadline"
        )

    def test_a_connect_that_takes_the_burst_names_the_server_not_the_page(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock, base_url: str
    ) -> None:
        """An https baseUrl on a plain HTTP port: the TLS handshake never finishes. Advice to
        raise burstLength or lower chunkSize would send the operator the wrong way."""

        def hang(request: httpx.Request) -> httpx.Response:
            clock.advance(2)
            raise httpx.ConnectTimeout("_ssl.c:990: The handshake operation timed out")

        httpx_mock.add_callback(hang)

        with pytest.raises(ConnectDeadlineExceeded) as raised:
            make_client(deadline_in=2).get_json("/orgs")

        assert str(raised.value) == (
            "GET /orgs: connecting timed out (ConnectTimeout: _ssl.c:990: The handshake "
            "operation timed out): check the scheme and port of openchoreo.baseUrl "
            f"{base_url.removesuffix('/api/v1')}, or run `choreo-ingest check`"
        )

    def test_a_connect_begun_with_a_moment_left_that_times_out_says_nothing_of_the_server(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        """A new connection opened 0.2 s before the deadline (a keep-alive closed by a proxy,
        say): its time out is the burst's end, not the way to the server (whose failure would
        hold every event behind a drain's first one for a backoff step)."""

        def slow_then_reconnect(request: httpx.Request) -> httpx.Response:
            clock.advance(0.2)
            raise httpx.ConnectTimeout("timed out")

        httpx_mock.add_callback(slow_then_reconnect)
        client = make_client(deadline_in=2)
        clock.advance(1.8)

        with pytest.raises(DeadlineExceeded) as raised:
            client.get_json("/orgs")

        assert type(raised.value) is DeadlineExceeded
        assert str(raised.value) == "GET /orgs: timed out at the burst deadline"

    def test_a_connect_timeout_within_the_burst_is_retried_as_a_connect_timeout(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_exception(httpx.ConnectTimeout("timed out"))
        httpx_mock.add_response(json={"ok": True})

        assert make_client(deadline_in=60).get_json("/orgs") == {"ok": True}


def echoed_in_envelope(status: int, code: str, attempts: int = 1) -> Callable[..., None]:
    def register(mock: HTTPXMock, token: str) -> None:
        for _ in range(attempts):
            mock.add_response(status_code=status, json=failure(f"bad token {token}", code))

    return register


def echoed_in_401_body(mock: HTTPXMock, token: str) -> None:
    mock.add_response(status_code=401, json={"error": "INVALID_TOKEN", "message": f"got {token}"})


def echoed_in_429_text(mock: HTTPXMock, token: str) -> None:
    mock.add_response(status_code=429, headers={"Retry-After": "9999"}, text=f"no, {token}")


def echoed_in_400_text(mock: HTTPXMock, token: str) -> None:
    mock.add_response(status_code=400, text=f"bad header: Bearer {token}\nmore")


def echoed_in_401_error_field(mock: HTTPXMock, token: str) -> None:
    mock.add_response(status_code=401, json={"error": f"bad token {token}"})


def echoed_in_connection_error(mock: HTTPXMock, token: str) -> None:
    for _ in range(4):
        mock.add_exception(httpx.ConnectError(f"cannot connect with {token}"))


@pytest.mark.parametrize(
    "register",
    [
        echoed_in_envelope(400, "INVALID_INPUT"),
        echoed_in_400_text,
        echoed_in_401_body,
        echoed_in_401_error_field,
        echoed_in_envelope(403, "FORBIDDEN"),
        echoed_in_envelope(404, "ORGANIZATION_NOT_FOUND"),
        echoed_in_429_text,
        echoed_in_envelope(500, "INTERNAL_ERROR", attempts=4),
        echoed_in_connection_error,
    ],
    ids=[
        "400",
        "400-text",
        "401",
        "401-error-field-becomes-code",
        "403",
        "404",
        "429",
        "500",
        "connection-error",
    ],
)
def test_token_never_appears_in_errors(
    httpx_mock: HTTPXMock, make_client: MakeClient, token: str, register: Callable[..., None]
) -> None:
    register(httpx_mock, token)
    client = make_client()

    with pytest.raises(ProviderError) as caught:
        client.get_json("/orgs")

    error = caught.value
    for text in (str(error), repr(error), repr(error.args), repr(vars(error)), repr(client)):
        assert token not in text


@pytest.mark.parametrize(
    "short", ["Z", "Zq", "Zq9", "Ab9x", "Ab9xQ7z"], ids=["1", "2", "3", "4", "7"]
)
def test_a_short_token_the_api_echoes_is_masked_too(
    httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str, short: str
) -> None:
    httpx_mock.add_response(status_code=401, text=f"invalid token in header Bearer {short}")
    config = OpenChoreoConfig(base_url=base_url, auth=AuthConfig(token=short))

    with pytest.raises(AuthError) as caught:
        make_client(config=config).get_json("/namespaces")

    assert short not in str(caught.value)
    assert "Bearer <redacted>" in str(caught.value)


def test_a_redirect_target_holding_a_long_token_is_masked_before_it_is_cut(
    httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
) -> None:
    long_token = "LEAKME" + "x7" * 150
    httpx_mock.add_response(
        status_code=302, headers={"Location": f"http://elsewhere.example/?t={long_token}"}
    )
    config = OpenChoreoConfig(base_url=base_url, auth=AuthConfig(token=long_token))

    with pytest.raises(PermanentError) as caught:
        make_client(config=config).get_json("/namespaces")

    assert "LEAKME" not in str(caught.value)
    assert "redirected to http://elsewhere.example/?t=<redacted>, not followed" in str(caught.value)


@pytest.mark.parametrize("status", [200, 401, 500])
def test_a_body_nested_past_what_json_decodes_is_an_http_error_not_a_crash(
    httpx_mock: HTTPXMock, make_client: MakeClient, status: int
) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    for _ in range(4 if status == 500 else 1):
        httpx_mock.add_response(
            status_code=status, text=deep, headers={"Content-Type": "application/json"}
        )

    with pytest.raises(ProviderError) as caught:
        make_client().get_json("/namespaces")

    assert str(caught.value).startswith(f"GET /namespaces: HTTP {status}")


def test_a_name_no_url_can_hold_is_a_one_line_error_naming_the_request(
    make_client: MakeClient,
) -> None:
    with pytest.raises(PermanentError) as caught:
        make_client().get_json(f"/namespaces/{'n' * 100_000}/projects")

    message = str(caught.value)
    assert message.startswith("GET /namespaces/nnnn")
    assert "cannot be requested" in message
    assert len(message) < 400


class TestTokensThatCannotBeHeaders:
    """httpx refuses such a header value in an error that quotes it, token and all."""

    def test_a_configured_token_is_sent_without_its_trailing_newline(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        httpx_mock.add_response(match_headers={"Authorization": "Bearer k8s-token-1234"}, json={})
        config = OpenChoreoConfig(base_url=base_url, auth=AuthConfig(token="k8s-token-1234\n"))

        assert make_client(config=config).get_json("/namespaces") == {}

    def test_a_configured_token_that_is_not_ascii_is_a_config_error_naming_the_key(
        self, clock, base_url: str
    ) -> None:
        config = OpenChoreoConfig(base_url=base_url, auth=AuthConfig(token="tökenABCD-1234"))

        with pytest.raises(ConfigError) as caught:
            OpenChoreoClient(config, clock=clock, deadline=None)

        assert str(caught.value) == (
            "openchoreo.auth.token: not a usable bearer token: "
            "it holds a character that is not ASCII"
        )

    @pytest.mark.parametrize("token", ["abc-def\nghi-jkl", "abc-def ghi-jkl", "abc-déf-ghi"])
    def test_a_token_from_other_credentials_is_refused_before_sending(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, token: str
    ) -> None:
        credentials = RotatingCredentials([token])

        with pytest.raises(AuthError) as caught:
            make_client(credentials=credentials).get_json("/namespaces")

        assert str(caught.value).startswith(
            "GET /namespaces: the token from openchoreo.auth.oauth.clientSecret is not a usable "
            "bearer token: "
        )
        assert "ghi" not in str(caught.value)
        assert httpx_mock.get_requests() == []


class TestTokenRequestFailures:
    """`form_poster`: the OAuth token endpoint, reached with the API's TLS settings."""

    @pytest.mark.parametrize(
        "error",
        [
            httpx.ConnectError("[Errno 111] Connection refused"),
            httpx.ConnectError("[Errno -2] Name or service not known"),
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            httpx.ReadTimeout("timed out"),
        ],
        ids=["refused", "dns", "tls", "timeout"],
    )
    def test_a_connection_failure_says_why(self, base_url: str, error: httpx.HTTPError) -> None:
        def fail(request: httpx.Request) -> httpx.Response:
            raise error

        post_form = form_poster(
            OpenChoreoConfig(base_url=base_url), FakeClock(), httpx.MockTransport(fail)
        )

        with pytest.raises(TransientError) as caught:
            post_form("https://idp.test/oauth2/token?x=1", {"client_secret": "cs-1234-abcd"}, {})

        assert str(caught.value) == (
            f"POST https://idp.test/oauth2/token: {type(error).__name__}: {error}"
        )
        assert (caught.value.code, caught.value.path) == (
            "CONNECTION_ERROR",
            "https://idp.test/oauth2/token",
        )

    @pytest.mark.parametrize("echoed", ["cs+SECRET/98 x=7", "cs%2BSECRET%2F98+x%3D7"])
    def test_the_client_secret_never_reaches_the_message(self, base_url: str, echoed: str) -> None:
        def fail(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError(f"proxy refused client_secret={echoed}\nnext line")

        post_form = form_poster(
            OpenChoreoConfig(base_url=base_url), FakeClock(), httpx.MockTransport(fail)
        )

        with pytest.raises(TransientError) as caught:
            post_form("https://idp.test/token", {"client_secret": "cs+SECRET/98 x=7"}, {})

        assert str(caught.value) == (
            "POST https://idp.test/token: ConnectError: proxy refused client_secret=*** next line"
        )

    def test_headers_go_with_the_form_and_a_basic_credential_never_reaches_the_message(
        self, base_url: str
    ) -> None:
        seen: list[httpx.Request] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if len(seen) == 1:
                return httpx.Response(200, json={"access_token": "t"})
            raise httpx.ConnectError("proxy refused Authorization: Basic Y2xpZW50OnNlY3JldA==")

        post_form = form_poster(
            OpenChoreoConfig(base_url=base_url), FakeClock(), httpx.MockTransport(answer)
        )
        basic = {"Authorization": "Basic Y2xpZW50OnNlY3JldA=="}

        assert post_form("https://idp.test/token", {"grant_type": "x"}, basic) == FormAnswer(
            200, {"access_token": "t"}
        )
        with pytest.raises(TransientError) as caught:
            post_form("https://idp.test/token", {"grant_type": "x"}, basic)

        assert seen[0].headers["Authorization"] == "Basic Y2xpZW50OnNlY3JldA=="
        assert seen[0].headers["Accept"] == "application/json"
        assert seen[0].content == b"grant_type=x"
        assert str(caught.value) == (
            "POST https://idp.test/token: ConnectError: proxy refused Authorization: Basic ***"
        )


class TestTokenRequestDeadline:
    """A token grant that a burst's request needs ends by the burst deadline, as the request
    does: a token endpoint that hangs cannot hold a burst past burstLength."""

    @TIMEOUTS_LEFT
    def test_the_token_request_is_cut_to_the_time_left(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        config_for,
        clock,
        deadline_in: float | None,
        expected: float,
    ) -> None:
        timeouts: list[float] = []
        httpx_mock.add_response(json={"items": []})
        client = make_client(
            deadline_in=deadline_in,
            credentials=self._credentials(config_for(request_timeout=10.0), clock, timeouts),
        )

        client.get_json("/namespaces")

        assert timeouts == [expected]

    def test_a_passed_deadline_asks_for_no_token(
        self, make_client: MakeClient, config_for, clock
    ) -> None:
        timeouts: list[float] = []
        client = make_client(
            deadline_in=2, credentials=self._credentials(config_for(), clock, timeouts)
        )
        clock.advance(2)

        with pytest.raises(
            DeadlineExceeded, match="GET /namespaces: the burst deadline has passed"
        ):
            client.get_json("/namespaces")

        assert timeouts == []

    @pytest.mark.parametrize(
        ("deadline_in", "left"),
        [(2.0, ""), (0.5, "; it had 0.5 s of the burst left")],
        ids=["a-fair-time", "a-moment-left"],
    )
    def test_a_token_endpoint_that_does_not_answer_by_the_deadline_is_named(
        self, make_client: MakeClient, config_for, clock, deadline_in: float, left: str
    ) -> None:
        """Not a failure of the token endpoint to retry (TokenUnavailable, charged to an event
        and holding the inbox), nor advice about the page (`ConnectDeadlineExceeded`: no
        `lower chunkSize`, the burst's failure message adds none): where to look. Given only a
        moment before the deadline, its time out is the burst's end, as a request's is, and
        the message says how little time it had."""

        def hang(request: httpx.Request) -> httpx.Response:
            clock.advance(request.extensions["timeout"]["read"])
            raise httpx.ReadTimeout("timed out", request=request)

        credentials = self._credentials(config_for(), clock, [], hang)
        client = make_client(deadline_in=deadline_in, credentials=credentials)

        with pytest.raises(DeadlineExceeded) as caught:
            client.get_json("/namespaces")

        assert type(caught.value) is ConnectDeadlineExceeded
        assert str(caught.value) == (
            f"POST {TOKEN_URL}: no token granted by the burst deadline "
            f"(ReadTimeout: timed out{left}): "
            "check openchoreo.auth.oauth.tokenUrl, or run `choreo-ingest check`"
        )
        assert client.requests_sent == 0

    @staticmethod
    def _credentials(
        config: Any,
        clock: Any,
        timeouts: list[float],
        answer: Callable[[httpx.Request], httpx.Response] | None = None,
    ) -> Credentials:
        def grant(request: httpx.Request) -> httpx.Response:
            timeouts.append(request.extensions["timeout"]["read"])
            return httpx.Response(200, json={"access_token": "granted-1", "expires_in": 3600})

        post_form = form_poster(
            config.openchoreo, FakeClock(), httpx.MockTransport(answer or grant)
        )
        oauth = OAuthConfig(token_url=TOKEN_URL, client_id="choreo-ingest", client_secret="cs-8e1d")
        return credentials_for(AuthConfig(oauth=oauth), clock=clock, post_form=post_form)


class TokenEndpoint:
    """A `PostForm` that answers from `answers` in turn (a status and body, or an error to
    raise), then grants `granted-token-N`."""

    def __init__(self, *answers: tuple[int, Any] | tuple[int, Any, float] | TransientError) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(
        self, url: str, fields: Mapping[str, str], headers: Mapping[str, str]
    ) -> FormAnswer:
        self.calls += 1
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, TransientError):
                raise answer
            return FormAnswer(*answer)
        return FormAnswer(200, {"access_token": f"granted-token-{self.calls}", "expires_in": 3600})


def oauth_credentials(endpoint: TokenEndpoint, clock) -> Credentials:
    oauth = OAuthConfig(token_url=TOKEN_URL, client_id="choreo-ingest", client_secret="cs-8e1d")
    return credentials_for(AuthConfig(oauth=oauth), clock=clock, post_form=endpoint)


TOKEN_URL = "https://idp.test/oauth2/token"
IDP_BUSY = (503, {"error": "temporarily_unavailable"})
IDP_DOWN = TransientError(
    f"POST {TOKEN_URL}: ConnectError: connection refused", code="CONNECTION_ERROR"
)


class TestTokenEndpointTrouble:
    """A grant that meets the token endpoint's passing trouble (5xx, 408, 429, a timeout, a
    failed connection) is retried as the request that needed the token would be: with backoff,
    within the burst, at most MAX_ATTEMPTS times."""

    @pytest.mark.parametrize("trouble", [IDP_BUSY, IDP_DOWN], ids=["503", "connection"])
    def test_the_request_waits_for_the_token_endpoint_to_recover(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        clock,
        trouble: tuple[int, Any] | TransientError,
    ) -> None:
        endpoint = TokenEndpoint(trouble, trouble)
        httpx_mock.add_response(
            match_headers={"Authorization": "Bearer granted-token-3"}, json={"items": []}
        )
        started = clock.monotonic()
        client = make_client(credentials=oauth_credentials(endpoint, clock))

        assert client.get_json("/namespaces") == {"items": []}

        assert endpoint.calls == 3
        assert client.requests_sent == 1
        assert clock.monotonic() - started == pytest.approx(0.2 + 0.4)  # the API's backoff

    def test_lasting_trouble_fails_the_burst_naming_the_token_url(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        endpoint = TokenEndpoint(*[IDP_BUSY] * MAX_ATTEMPTS)
        client = make_client(credentials=oauth_credentials(endpoint, clock))

        with pytest.raises(TokenUnavailable) as caught:
            client.get_json("/namespaces")

        assert str(caught.value) == (
            f"token request to openchoreo.auth.oauth.tokenUrl ({TOKEN_URL}): "
            "HTTP 503 temporarily_unavailable"
        )
        assert caught.value.exhausted  # lasting: the burst fails even after committed pages
        assert endpoint.calls == MAX_ATTEMPTS
        assert client.requests_sent == 0

    def test_a_refresh_after_a_401_that_meets_trouble_asks_again_at_the_next_attempt(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        endpoint = TokenEndpoint((200, {"access_token": "granted-token-1"}), IDP_BUSY)
        httpx_mock.add_response(
            match_headers={"Authorization": "Bearer granted-token-1"},
            status_code=401,
            json={"error": "INVALID_TOKEN", "message": "token is expired"},
        )
        httpx_mock.add_response(
            match_headers={"Authorization": "Bearer granted-token-3"}, json={"items": []}
        )
        client = make_client(credentials=oauth_credentials(endpoint, clock))

        assert client.get_json("/namespaces") == {"items": []}

        assert endpoint.calls == 3
        assert client.requests_sent == 2

    def test_no_retry_past_the_deadline(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        endpoint = TokenEndpoint(IDP_BUSY)
        client = make_client(deadline_in=0.15, credentials=oauth_credentials(endpoint, clock))

        with pytest.raises(TokenUnavailable) as caught:
            client.get_json("/namespaces")

        assert not caught.value.exhausted  # a retry that did not fit: a pause after pages
        assert endpoint.calls == 1

    @pytest.mark.parametrize("status", [429, 503])
    def test_a_retry_after_is_waited_out_not_asked_again_at_once(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock, status: int
    ) -> None:
        """An identity provider that rate-limits asks for minutes; four grants within a second
        each run is what it meant to stop. The burst ends asking the backoff for that long."""
        endpoint = TokenEndpoint((status, {"error": "slow_down"}, 300.0))
        client = make_client(deadline_in=30, credentials=oauth_credentials(endpoint, clock))

        with pytest.raises(RetryAfter) as caught:
            client.get_json("/namespaces")

        assert isinstance(caught.value, TokenUnavailable)
        assert caught.value.retry_after == 300.0
        assert str(caught.value) == (
            f"token request to openchoreo.auth.oauth.tokenUrl ({TOKEN_URL}): "
            f"HTTP {status} slow_down (Retry-After: 300 s)"
        )
        assert endpoint.calls == 1
        assert client.requests_sent == 0

    def test_a_short_retry_after_is_waited_within_the_burst(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        endpoint = TokenEndpoint((429, {"error": "slow_down"}, 2.0))
        httpx_mock.add_response(
            match_headers={"Authorization": "Bearer granted-token-2"}, json={"items": []}
        )
        started = clock.monotonic()
        client = make_client(deadline_in=30, credentials=oauth_credentials(endpoint, clock))

        assert client.get_json("/namespaces") == {"items": []}

        assert endpoint.calls == 2
        assert clock.monotonic() - started == pytest.approx(2.0)

    def test_the_form_poster_reads_the_retry_after_header(self, base_url: str) -> None:
        def busy(request: httpx.Request) -> httpx.Response:
            return httpx.Response(429, headers={"Retry-After": "120"}, json={"error": "slow"})

        post_form = form_poster(
            OpenChoreoConfig(base_url=base_url), FakeClock(), httpx.MockTransport(busy)
        )

        assert post_form(TOKEN_URL, {}, {}) == FormAnswer(429, {"error": "slow"}, 120.0)

    def test_a_refused_secret_is_not_retried(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, clock
    ) -> None:
        endpoint = TokenEndpoint(*[(401, {"error": "invalid_client"})] * MAX_ATTEMPTS)
        client = make_client(credentials=oauth_credentials(endpoint, clock))

        with pytest.raises(AuthError, match="HTTP 401 invalid_client"):
            client.get_json("/namespaces")

        assert endpoint.calls == 2  # the form body, then HTTP Basic (`auto`), once each


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
            {"success": True, "data": {"name": "a"}},
            Gone(path="/orgs/acme/projects/p/components/b", code="COMPONENT_NOT_FOUND"),
            {"success": True, "data": {"name": "c"}},
        ]

    def test_a_single_request_gives_a_not_found_marker_too(
        self, httpx_mock: HTTPXMock, make_client: MakeClient
    ) -> None:
        httpx_mock.add_response(status_code=404, json={"error": "gone", "code": "NOT_FOUND"})

        assert make_client().get_many([("/x/a", {})]) == [Gone(path="/x/a", code="NOT_FOUND")]

    def test_other_failures_raise(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, base_url: str
    ) -> None:
        httpx_mock.add_response(
            url=f"{base_url}/x/bad", status_code=400, json=failure("nope", "INVALID_INPUT")
        )
        for name in ("a", "b", "c"):
            httpx_mock.add_response(url=f"{base_url}/x/{name}", json={}, is_optional=True)

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
            return httpx.Response(200, json={"path": request.url.path})

        httpx_mock.add_callback(slow, is_reusable=True)

        # A server slower than FAST_ANSWER_SECONDS, as this fake clock cannot tell
        client = make_client(max_concurrent_requests=3, sequential_below=0.0)
        results = client.get_many([(f"/x/{n}", {}) for n in range(9)])

        assert most == 3
        assert results == [{"path": f"/api/v1/x/{n}"} for n in range(9)]

    @pytest.mark.parametrize(
        ("answer_seconds", "most_in_flight"), [(0.0, 1), (0.02, 3)], ids=["fast", "slow"]
    )
    def test_a_fast_server_is_asked_one_request_at_a_time(
        self,
        httpx_mock: HTTPXMock,
        make_client: MakeClient,
        clock: Any,
        answer_seconds: float,
        most_in_flight: int,
    ) -> None:
        """Threads hide waiting for answers; a server that answers at once gets one request at
        a time (each timed on the client's clock), a slower one up to the cap."""
        lock = threading.Lock()
        in_flight = most = 0

        def answer(request: httpx.Request) -> httpx.Response:
            nonlocal in_flight, most
            with lock:
                in_flight += 1
                most = max(most, in_flight)
            clock.advance(answer_seconds)  # the time the request takes, on the client's clock
            threading.Event().wait(0.01)  # room for others to start, were they running
            with lock:
                in_flight -= 1
            return httpx.Response(200, json={"path": request.url.path})

        httpx_mock.add_callback(answer, is_reusable=True)

        results = make_client(max_concurrent_requests=3).get_many(
            [(f"/x/{n}", {}) for n in range(9)]
        )

        assert most == most_in_flight
        assert results == [{"path": f"/api/v1/x/{n}"} for n in range(9)]


class TestConstruction:
    def test_base_url_is_required(self, clock) -> None:
        with pytest.raises(ConfigError, match=r"openchoreo\.baseUrl"):
            OpenChoreoClient(OpenChoreoConfig(), clock=clock, deadline=None)

    @pytest.mark.parametrize(
        ("configured", "root"),
        [
            ("https://openchoreo.test", "https://openchoreo.test"),
            ("https://openchoreo.test/", "https://openchoreo.test"),
            ("https://openchoreo.test/api/v1", "https://openchoreo.test"),
            ("https://openchoreo.test/api/v1/", "https://openchoreo.test"),
            ("https://gw.test/choreo", "https://gw.test/choreo"),
            ("https://gw.test/choreo/api/v1", "https://gw.test/choreo"),
            ("https://gw.test//choreo//api/v1//", "https://gw.test/choreo"),
        ],
        ids=[
            "bare",
            "bare-slash",
            "with-api",
            "with-api-slash",
            "prefix",
            "prefix-with-api",
            "slashes-doubled",  # a Go server redirects `//api/v1/...`: never sent so
        ],
    )
    def test_api_prefix_is_appended_unless_given(
        self, httpx_mock: HTTPXMock, make_client: MakeClient, configured: str, root: str
    ) -> None:
        httpx_mock.add_response(url=f"{root}/api/v1/namespaces?limit=1", json={"items": []})
        client = make_client(config=OpenChoreoConfig(base_url=configured))

        client.get_json("/namespaces", {"limit": 1})

        assert (client.base_url, client.server_root) == (f"{root}/api/v1", root)
        assert str(httpx_mock.get_request().url) == f"{root}/api/v1/namespaces?limit=1"

    @pytest.mark.parametrize("configured", ["http://a\tb", "http://a\nb"])
    def test_a_base_url_httpx_refuses_is_a_config_error(self, clock, configured: str) -> None:
        """Set in code, past the config file's check: still exit 2, not a provider crash."""
        with pytest.raises(ConfigError, match=r"^openchoreo\.baseUrl: not a URL to send"):
            OpenChoreoClient(OpenChoreoConfig(base_url=configured), clock=clock, deadline=None)

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
            return httpx.Response(200, json={"v": 1})

        config = OpenChoreoConfig(base_url=base_url + "/", insecure_skip_verify=True)
        with OpenChoreoClient(
            config, clock=clock, deadline=None, transport=httpx.MockTransport(handler)
        ) as client:
            assert client.get_json("/orgs/acme") == {"v": 1}

        assert str(seen[0].url) == f"{base_url}/orgs/acme"
        assert seen[0].headers["User-Agent"] == default_user_agent()


def test_each_request_is_logged_at_debug_without_its_query_or_credentials(
    httpx_mock: HTTPXMock, make_client: MakeClient
) -> None:
    """What `-vv` shows an operator: method, path, status, duration; never a token or cursor."""
    httpx_mock.add_response(json={"items": []})

    with structlog.testing.capture_logs() as logs:
        make_client(token="tok-secret-123456").get_json("/orgs", {"cursor": "c-opaque"})

    [entry] = [log for log in logs if log["event"] == "openchoreo_request"]
    assert (entry["log_level"], entry["method"], entry["path"], entry["status"]) == (
        "debug", "GET", "/orgs", 200,
    )  # fmt: skip
    assert entry["seconds"] >= 0
    assert "tok-secret-123456" not in repr(logs)
    assert "c-opaque" not in repr(logs)
