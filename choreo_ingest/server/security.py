"""Who may call what: the API token, the events secret, a web page (no state-changing request,
but with the token from `serve`'s own origin; nothing, through a name rebound to a loopback
`serve` without a token), and where `serve` may listen."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from choreo_ingest.config import (
    SERVE_TOKEN_ENV,
    Address,
    Config,
    read_serve_secret,
    serve_secret,
)
from choreo_ingest.config_values import HOST_NAME
from choreo_ingest.errors import ConfigError

EVENTS_SECRET_HEADER = "x-choreo-ingest-secret"  # noqa: S105 (a header name)


@dataclass(frozen=True)
class Credentials:
    """The secrets `serve` checks callers against; None: that check is off."""

    api_token: str | None = field(default=None, repr=False)
    events_secret: str | None = field(default=None, repr=False)

    def api_allows(self, authorization: str | None) -> bool:
        """An `Authorization: Bearer <token>` header, when a token is configured."""
        if self.api_token is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and _same(given.strip(), self.api_token)

    def events_allow(self, header: str | None, path_secret: str | None) -> bool:
        """The events secret, as a header or as the path's last segment, when one is set. An
        empty last segment (the URL ends in "/") is no secret."""
        path_secret = path_secret or None
        if self.events_secret is None:
            return path_secret is None  # a secret segment nobody configured is a wrong URL
        given = header if header is not None else path_secret
        return given is not None and _same(given, self.events_secret)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site_problem(
    method: str,
    headers: Mapping[str, str],
    *,
    token_set: bool,
    guarded_by: str,
) -> str | None:
    """Why a state-changing request is one a web page sent, as refused (a form posted from a
    page open in an operator's browser: `reset?purge=true`), or None. A browser says where a
    request comes from (`Origin`, `Sec-Fetch-Site`); a client that is not a browser (curl, the
    event forwarder, the catalog module) sends neither. With a token set, only another site's
    page is refused (the token is the guard: a page cannot send it). Without one, any page's:
    `serve`'s own page posts nothing, and a page of another site whose name was rebound to
    127.0.0.1 (DNS rebinding) reads as `serve`'s own origin. `guarded_by`: what the token is
    (the API token, or the events secret for the event routes)."""
    if method in SAFE_METHODS:
        return None
    origin, site = headers.get("origin"), headers.get("sec-fetch-site")
    if origin is None and site in (None, "none"):
        return None
    _, sep, place = (origin or "").partition("://")
    host = headers.get("host")
    same_origin = bool(sep) and host is not None and place.lower() == host.lower()
    if token_set and (same_origin or origin is None) and site not in ("cross-site", "same-site"):
        return None
    source = origin or "a web page"
    if token_set:
        return (
            f"a {method} from {source}, another site, is refused: state-changing requests come "
            "from clients that are not browsers (curl, the event forwarder)"
        )
    return (
        f"a {method} from {source} is refused: without {guarded_by}, "
        "state-changing requests come only from clients that are not browsers (curl, the "
        "event forwarder)"
    )


EVENT_ROUTE_PREFIXES = ("/events/", "/api/events/http/")
"""Where the event routes are (`/events/{provider}`, and the Helm default webhook's path):
guarded by the events secret, not the API token."""


def answered_hosts(
    address: Address, credentials: Credentials, config: Config
) -> frozenset[str] | None:
    """The host names besides localhost and IP addresses that `serve` answers (`host_problem`):
    `serve.allowedHosts` when it listens on loopback without a token; None (every name) when a
    token guards the API or it listens beyond loopback (`--insecure-no-auth`)."""
    if credentials.api_token is not None or not address.is_loopback:
        return None
    return frozenset(config.serve.allowed_hosts)


def host_problem(host: str | None, allowed: frozenset[str]) -> str | None:
    """Why a request's `Host` is not one a loopback `serve` without a token answers, or None.

    A web page of another site whose name its owner rebinds to 127.0.0.1 (DNS rebinding) reads
    as `serve`'s own origin, so the browser lets it read what `serve` answers: the catalog,
    every status. Its requests carry that name: only localhost, `*.localhost`, an IP address
    (which cannot be rebound) or a name in `allowed` (`*`: any) is answered. A request with no
    `Host` comes from no browser."""
    if host is None or "*" in allowed:
        return None
    name = _name_of(host)
    named = HOST_NAME.fullmatch(name) is not None  # not `evil.example#.localhost`
    if named and (name in allowed or name == "localhost" or name.endswith(".localhost")):
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return (
            f"a request for {host!r} is refused: without a token (serve.auth.tokenFile), serve "
            "answers only requests for localhost or an IP address (a web page whose name was "
            "rebound to 127.0.0.1 could read it); add the name to serve.allowedHosts"
        )
    return None


def _name_of(host: str) -> str:
    """The name of a `Host` header's value, without its port, in lower case."""
    if host.startswith("["):  # an IPv6 address, then nothing but a port
        inside, closed, port = host[1:].partition("]")
        portless = not port or (port.startswith(":") and _is_port(port[1:]))
        name = inside if closed and portless else host
    else:
        before, colon, port = host.rpartition(":")
        name = before if colon and _is_port(port) else host
    return name.lower().removesuffix(".")


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()


class CrossSiteGuard:
    """Answers 403 to a state-changing request a web page sent (`cross_site_problem`), and to
    any request for a name a loopback `serve` without a token does not answer (`host_problem`,
    with `hosts`; None: no such check), before any route sees it; every other request passes
    through. The event routes count as guarded by a token only when the events secret is set:
    the API token does not cover them."""

    def __init__(
        self, app: ASGIApp, *, credentials: Credentials, hosts: frozenset[str] | None = None
    ) -> None:
        self.app = app
        self.token_set = credentials.api_token is not None
        self.events_secret_set = credentials.events_secret is not None
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = None
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            if self.hosts is not None:
                problem = host_problem(headers.get("host"), self.hosts)
            event_route = str(scope["path"]).startswith(EVENT_ROUTE_PREFIXES)
            if event_route:
                guarded, by = self.events_secret_set, "an events secret (serve.events.secretFile)"
            else:
                guarded, by = self.token_set, "a token (serve.auth.tokenFile)"
            method = scope["method"]
            problem = problem or cross_site_problem(
                method, headers, token_set=guarded, guarded_by=by
            )
        if problem is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse({"error": problem}, status_code=403)(scope, receive, send)


class PrivateAnswers:
    """Every answer says `Cache-Control: no-store` (a catalog page or a status read with the
    token must not be kept by a proxy or browser cache, and each changes by the tick) and
    `X-Content-Type-Options: nosniff` (a JSON answer that echoes input is never read as a
    page)."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, sending)


class FramingGuard:
    """Answers 400, and closes the connection, to a request that gives both `Content-Length`
    and `Transfer-Encoding` (RFC 9112 6.1): a proxy in front that went by the length would take
    what follows the chunks for the body, where the connection would serve it as a request of
    its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name for name, _ in scope["headers"]}
            if b"content-length" in names and b"transfer-encoding" in names:
                problem = "both Content-Length and Transfer-Encoding given: send one"
                answer = JSONResponse(
                    {"error": problem}, status_code=400, headers={"Connection": "close"}
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def load_credentials(config: Config, env: Mapping[str, str] | None = None) -> Credentials:
    """Read the token (`serve.auth.tokenFile`, else $CHOREO_INGEST_SERVE_TOKEN) and the events
    secret (`serve.events.secretFile`); an unreadable or empty file, or a secret no request
    could send (a header holds ASCII only), is a config error."""
    environment = os.environ if env is None else env
    token = read_serve_secret(config.serve.token_file, "serve.auth.tokenFile")
    if token is None:
        given = environment.get(SERVE_TOKEN_ENV, "").strip() or None
        token = serve_secret(given, f"${SERVE_TOKEN_ENV}")
    secret = read_serve_secret(config.serve.events_secret_file, "serve.events.secretFile")
    return Credentials(api_token=token, events_secret=secret)


def check_exposure(
    address: Address,
    credentials: Credentials,
    insecure_no_auth: bool,
    *,
    given_by: str = "serve.listen",
) -> bool:
    """Whether the API is open to whoever reaches `address`; refuses (ConfigError, naming
    `given_by`: the option or key that gave the address) an address beyond loopback without a
    token, unless `insecure_no_auth`."""
    if credentials.api_token is not None or address.is_loopback:
        return False
    if not insecure_no_auth:
        raise ConfigError(
            f"refusing to serve the API on {address} without a token: set serve.auth.tokenFile "
            f"or ${SERVE_TOKEN_ENV}, listen on 127.0.0.1, or pass --insecure-no-auth",
            path=given_by,
        )
    return True
