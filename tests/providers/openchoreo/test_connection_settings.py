"""The proxy the environment sets: which requests go through it, and errors that name it (never
its value, which may hold a password) instead of blaming the API or calling it a bug."""

from __future__ import annotations

import base64
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from choreo_ingest.config import AuthConfig, OAuthConfig, OpenChoreoConfig
from choreo_ingest.errors import ConfigError, GrantRefused, PermanentError, TransientError
from choreo_ingest.logs import scrub_secrets
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient, form_poster
from choreo_ingest.providers.openchoreo.connection_settings import proxy_url, proxy_variable

from fakes import FakeClock

BASE = "https://openchoreo.test"
PROXY_PASSWORD = "proxy-pass-99"
VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def client() -> OpenChoreoClient:
    return client_for(BASE)


def client_for(base_url: str) -> OpenChoreoClient:
    return client_for_config(OpenChoreoConfig(base_url=base_url))


def client_for_config(config: OpenChoreoConfig) -> OpenChoreoClient:
    return OpenChoreoClient(config, clock=FakeClock(), deadline=None, rng=lambda: 0.5)


@pytest.mark.parametrize(
    ("environment", "url", "variable"),
    [
        ({}, BASE, None),
        ({"HTTPS_PROXY": "http://proxy.test:3128"}, BASE, "HTTPS_PROXY"),
        ({"https_proxy": "http://proxy.test:3128"}, BASE, "https_proxy"),
        ({"HTTP_PROXY": "http://proxy.test:3128"}, BASE, None),
        ({"HTTP_PROXY": "http://proxy.test:3128"}, "http://openchoreo.test", "HTTP_PROXY"),
        ({"ALL_PROXY": "socks5://proxy.test:1080"}, BASE, "ALL_PROXY"),
        ({"ALL_PROXY": "http://p.test", "NO_PROXY": "openchoreo.test"}, BASE, None),
        ({"ALL_PROXY": "http://p.test", "NO_PROXY": ".test"}, BASE, None),
        ({"ALL_PROXY": "http://p.test", "NO_PROXY": "*"}, BASE, None),
        ({"ALL_PROXY": "http://p.test", "NO_PROXY": "choreo.test"}, BASE, "ALL_PROXY"),
    ],
)
def test_proxy_variable_names_the_variable_whose_proxy_a_request_goes_through(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, variable: str | None
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    assert proxy_variable(url) == variable


@pytest.mark.parametrize(
    ("variable", "proxy", "said"),
    [
        ("ALL_PROXY", "socks5://user:{}@proxy.test:1080", "a SOCKS proxy needs the socksio"),
        ("HTTPS_PROXY", "ftp://user:{}@proxy.test", "not a proxy URL"),
    ],
    ids=["socks-without-socksio", "not-a-proxy-url"],
)
def test_a_proxy_httpx_cannot_use_is_a_config_error_naming_the_variable_not_its_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, proxy: str, said: str
) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)  # not installed
    monkeypatch.setenv(variable, proxy.format(PROXY_PASSWORD))

    with pytest.raises(ConfigError) as caught:
        client()

    assert str(caught.value).startswith(f"${variable}: the proxy cannot be used: {said}")
    assert PROXY_PASSWORD not in str(caught.value)


def test_an_unusable_proxy_is_named_for_the_token_endpoint_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"ftp://user:{PROXY_PASSWORD}@proxy.test")
    post = form_poster(OpenChoreoConfig(base_url=BASE), FakeClock())

    with pytest.raises(ConfigError, match=r"^\$HTTPS_PROXY: "):
        post("https://idp.test/oauth2/token", {"grant_type": "client_credentials"}, {})


@pytest.mark.parametrize(
    ("no_proxy", "place"),
    [
        (None, f"openchoreo.baseUrl {BASE}, through the proxy $HTTPS_PROXY sets"),
        ("openchoreo.test", f"openchoreo.baseUrl {BASE}"),
    ],
    ids=["proxied", "bypassed"],
)
def test_a_connection_error_says_which_proxy_the_request_went_through(
    monkeypatch: pytest.MonkeyPatch, httpx_mock: HTTPXMock, no_proxy: str | None, place: str
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:{PROXY_PASSWORD}@proxy.test:3128")
    if no_proxy is not None:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    for _ in range(4):
        httpx_mock.add_exception(httpx.ConnectError("[Errno 111] Connection refused"))

    with client() as api, pytest.raises(TransientError) as caught:
        api.get_json("/namespaces")

    assert str(caught.value) == (
        f"GET /namespaces: ConnectError: [Errno 111] Connection refused ({place})"
    )


@pytest.mark.parametrize(
    ("no_proxy", "note"), [(None, " (through the proxy $HTTPS_PROXY sets)"), ("*", "")]
)
def test_a_probe_of_a_public_route_says_which_proxy_it_went_through(
    monkeypatch: pytest.MonkeyPatch, httpx_mock: HTTPXMock, no_proxy: str | None, note: str
) -> None:
    """`check` asks for /version first: refused there, it must not blame the server alone."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:{PROXY_PASSWORD}@proxy.test:3128")
    if no_proxy is not None:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    httpx_mock.add_exception(httpx.ConnectError("[Errno 111] Connection refused"))

    with client() as api, pytest.raises(TransientError) as caught:
        api.get_public("/version")

    assert str(caught.value) == f"GET /version: ConnectError: [Errno 111] Connection refused{note}"


@contextmanager
def answering(
    answer: Callable[[BaseHTTPRequestHandler], tuple[int, str, bytes]],
) -> Iterator[str]:
    """A real server on loopback (`host:port`) whose every GET and POST `answer(request)` answers
    with (status, content type, body)."""

    class Answering(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = answer(self)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815 (http.server's name)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def version_server() -> Iterator[str]:
    """A real server on loopback answering `GET /version`: what a proxy bypass must reach."""
    with answering(lambda _: (200, "application/json", b'{"version": "v1.2.3"}')) as address:
        yield f"http://{address}"


@pytest.mark.parametrize(
    "no_proxy",
    ["127.0.0.0/8", "10.0.0.0/8, 127.0.0.1/32", "[::1]/128,127.0.0.0/8", "fd00::/8,127.0.0.0/8"],
)
def test_no_proxy_networks_are_bypassed_as_curl_bypasses_them(
    monkeypatch: pytest.MonkeyPatch, version_server: str, no_proxy: str
) -> None:
    """A cluster's injected `NO_PROXY=10.0.0.0/8,...`: httpx reads a network as a host name,
    and would send a request for an address inside it through the (here refusing) proxy; an
    IPv6 network listed (dual-stack clusters list `fd00::/8`) kept httpx from making a client."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    with client_for(version_server) as api:
        assert api.get_public("/version") == {"version": "v1.2.3"}
    assert proxy_variable(version_server) is None
    post = form_poster(OpenChoreoConfig(base_url=version_server), FakeClock())
    status, body, _ = post(f"{version_server}/oauth2/token", {}, {})
    assert (status, body) == (200, {"version": "v1.2.3"})


def test_an_address_outside_the_no_proxy_networks_goes_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch, version_server: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8,127.0.0.1.example")

    with client_for(version_server) as api, pytest.raises(TransientError) as caught:
        api.get_public("/version")

    assert str(caught.value).endswith("(through the proxy $HTTP_PROXY sets)")


@pytest.mark.parametrize(
    ("value", "url"),
    [("proxy.corp:3128", "http://proxy.corp:3128"), ("https://p.corp", "https://p.corp")],
)
def test_a_proxy_without_a_scheme_is_an_http_one_as_curl_takes_it(
    monkeypatch: pytest.MonkeyPatch, value: str, url: str
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", value)

    assert proxy_url(proxy_variable(BASE)) == url


def test_a_proxy_set_for_another_scheme_is_not_used_nor_checked(
    monkeypatch: pytest.MonkeyPatch, version_server: str
) -> None:
    """httpx set up every proxy variable's proxy, and refused to make a client over one the
    requests would never go through."""
    monkeypatch.setenv("HTTPS_PROXY", f"ftp://user:{PROXY_PASSWORD}@proxy.test")

    with client_for(version_server) as api:
        assert api.get_public("/version") == {"version": "v1.2.3"}


@pytest.fixture
def refusing_proxy() -> Iterator[str]:
    """A proxy on loopback that answers 407 quoting the request's headers, as some do."""

    def refuse(request: BaseHTTPRequestHandler) -> tuple[int, str, bytes]:
        quoted = f"refused: Proxy-Authorization={request.headers.get('Proxy-Authorization')}"
        return 407, "text/plain", quoted.encode()

    with answering(refuse) as address:
        yield address


def test_a_proxys_407_names_its_variable_and_its_quoted_credentials_are_masked(
    monkeypatch: pytest.MonkeyPatch, refusing_proxy: str
) -> None:
    """The proxy's answer, not the API's; the Basic credential made of the password in
    `$HTTP_PROXY` is masked wherever a failure's text is shown (`status`, `--json`, logs)."""
    monkeypatch.setenv("HTTP_PROXY", f"http://robot:{PROXY_PASSWORD}@{refusing_proxy}")
    basic = base64.b64encode(f"robot:{PROXY_PASSWORD}".encode()).decode()

    with client_for("http://openchoreo.test") as api, pytest.raises(PermanentError) as caught:
        api.get_json("/namespaces")

    said = str(caught.value)
    assert said.startswith("GET /namespaces: HTTP 407: refused: Proxy-Authorization=Basic ")
    assert said.endswith("; the proxy $HTTP_PROXY sets asks for credentials: check them in its "
                         "URL (http://user:password@...)")  # fmt: skip
    assert basic in said  # as the proxy answered: masked where the text is shown
    assert basic not in scrub_secrets(said)
    assert PROXY_PASSWORD not in scrub_secrets(f"{said} {PROXY_PASSWORD}")


def test_a_proxy_key_given_as_the_user_alone_is_masked_too(
    monkeypatch: pytest.MonkeyPatch, refusing_proxy: str
) -> None:
    """`http://KEY@proxy`: httpx sends `Basic base64("KEY:")`."""
    key = "pk-live-Zx81QaLm0PqR"
    monkeypatch.setenv("HTTP_PROXY", f"http://{key}@{refusing_proxy}")

    with client_for("http://openchoreo.test") as api, pytest.raises(PermanentError) as caught:
        api.get_json("/namespaces")

    basic = base64.b64encode(f"{key}:".encode()).decode()
    assert basic in str(caught.value)
    assert basic not in scrub_secrets(str(caught.value))
    assert key not in scrub_secrets(f"proxy {key} refused")


def test_a_proxys_407_to_a_token_request_is_not_blamed_on_the_token_url(
    monkeypatch: pytest.MonkeyPatch, refusing_proxy: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{refusing_proxy}")
    oauth = OAuthConfig(token_url="http://idp.test/oauth2/token", client_id="c", client_secret="s")
    config = OpenChoreoConfig(base_url="http://openchoreo.test", auth=AuthConfig(oauth=oauth))

    with client_for_config(config) as api, pytest.raises(GrantRefused) as caught:
        api.get_json("/namespaces")

    assert str(caught.value).endswith(
        "HTTP 407; a proxy on the way asks for credentials: check them in its URL"
    )
