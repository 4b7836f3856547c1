"""How an OAuth2 client's secret reaches the token endpoint (RFC 6749 2.3.1), and in which
ways to try it.

`client_secret_post` puts the client id and secret in the form body (the API document's way);
`client_secret_basic` in an HTTP Basic header. RFC 6749 has the two form-encoded before base64,
but Thunder, OpenChoreo's identity provider, takes them as they are (as `curl -u` sends them),
so Basic goes as-is first and form-encoded next, when that differs. `auto` tries the form body,
then Basic; the credentials keep the way that worked (as Go's oauth2 package does, though it
tries Basic first).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote_plus

from choreo_ingest.config import CLIENT_AUTH_AUTO, CLIENT_SECRET_BASIC, CLIENT_SECRET_POST

NOT_CLIENT_AUTH = frozenset({"invalid_scope", "invalid_grant", "unsupported_grant_type"})
"""Error codes of a refused grant that say what is wrong is not how the client authenticated."""


class Way(NamedTuple):
    """One way to send the client secret."""

    method: str
    encoded: bool = False
    """Basic only: the id and secret form-encoded before base64, as RFC 6749 has them."""

    @property
    def label(self) -> str:
        if self.method != CLIENT_SECRET_BASIC:
            return "in the form body"
        return "as HTTP Basic, form-encoded" if self.encoded else "as HTTP Basic"


class Request(NamedTuple):
    """What one token request sends besides the grant type and scope."""

    fields: dict[str, str]
    headers: dict[str, str]
    credential: str | None
    """The Basic credential (base64), a secret to mask like the client secret."""


class FormAnswer(NamedTuple):
    """The token endpoint's answer to one POST."""

    status: int
    body: Any
    """The parsed JSON body, or None."""
    retry_after: float | None = None
    """Seconds its `Retry-After` asks to wait before the next request, where it says."""


PostForm = Callable[[str, Mapping[str, str], Mapping[str, str]], FormAnswer]
"""POST a form to an absolute URL with these extra headers -> its answer.

Raises TransientError itself on connection errors and timeouts."""


def configured_methods(configured: str) -> tuple[str, ...]:
    """The methods `clientAuthMethod` allows, in the order to try them."""
    if configured == CLIENT_AUTH_AUTO:
        return (CLIENT_SECRET_POST, CLIENT_SECRET_BASIC)
    return (configured,)


def ways_to_try(methods: Sequence[str], client_id: str, secret: str) -> list[Way]:
    """Each method's ways, in order: Basic as-is, then form-encoded where that differs."""
    found = []
    for method in methods:
        found.append(Way(method))
        differs = quote_plus(client_id) != client_id or quote_plus(secret) != secret
        if method == CLIENT_SECRET_BASIC and differs:
            found.append(Way(method, encoded=True))
    return found


def request_for(way: Way, client_id: str, secret: str) -> Request:
    if way.method != CLIENT_SECRET_BASIC:
        return Request({"client_id": client_id, "client_secret": secret}, {}, None)
    if way.encoded:
        client_id, secret = quote_plus(client_id), quote_plus(secret)
    credential = base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")
    return Request({}, {"Authorization": f"Basic {credential}"}, credential)


def client_auth_refused(status: int, body: Any) -> bool:
    """Whether a grant's answer may say the client secret was not taken the way it was sent
    (RFC 6749 5.2 answers `invalid_client` with 400 or 401; some providers say 403, and
    Thunder says `unauthorized_client` for a method the client is not registered for)."""
    return status in (400, 401, 403) and error_code(body) not in NOT_CLIENT_AUTH


def error_code(body: Any) -> object:
    """The `error` of an OAuth2 error body (RFC 6749 5.2); None for any other body."""
    return body.get("error") if isinstance(body, dict) else None
