"""The identity provider's half of the simulator: an OAuth2 token endpoint and the bearer check.

    POST /oauth2/token   grant_type=client_credentials&client_id=..&client_secret=..[&scope=..]
                         (form body, `client_secret_post`; HTTP Basic client auth works too)
      200 {access_token, token_type: "Bearer", expires_in[, scope]}
      401 {"error": "invalid_client", ...}   400 {"error": "unsupported_grant_type" | ...}

An access token is a JWT (`header.payload.signature`, base64url JSON, HS256 over a key only this
simulator holds) with `iss`, `sub` (the client id), `iat`, `exp` and `jti`. The API accepts a
token this authority issued until `exp` passes on the simulator's clock, or the static `token`
option; anything else gets the JWT middleware's 401 (`MISSING_TOKEN` / `INVALID_TOKEN`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import secrets
import threading
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qs, unquote_plus

from choreo_ingest.clock import Clock
from choreo_ingest.simulator.options import SimulatorOptions
from choreo_ingest.simulator.responses import SimResponse, json_response, unauthorized

TOKEN_PATH: Final = "/oauth2/token"  # noqa: S105 (a route, not a secret)
FORM_TYPE: Final = "application/x-www-form-urlencoded"
JWT_HEADER: Final = {"alg": "HS256", "typ": "JWT", "kid": "openchoreo-simulator"}
SCOPES: Final = ("openid", "profile", "email")
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def issuer(headers: Mapping[str, str]) -> str:
    """The token issuer: this server, as the client addressed it (the `Host` header)."""
    return f"http://{headers.get('host') or 'localhost'}"


class TokenAuthority:
    """Issues and checks access tokens; thread-safe."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._serials = itertools.count(1)
        self._lock = threading.Lock()

    def token_response(
        self, options: SimulatorOptions, method: str, body: bytes, headers: Mapping[str, str]
    ) -> SimResponse:
        """Answer a request to the token endpoint (`headers` with lower-case names)."""
        if method.upper() != "POST":
            return _oauth_error(405, "invalid_request", "use POST", {"Allow": "POST"})
        if not headers.get("content-type", "").lower().startswith(FORM_TYPE):
            return _oauth_error(400, "invalid_request", f"the body must be {FORM_TYPE}")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return _oauth_error(400, "invalid_request", "the body is not UTF-8")
        client_id, client_secret = _client_credentials(form, headers, options.oauth_client_auth)
        if not self._client_matches(options, client_id, client_secret):
            return _oauth_error(401, "invalid_client", "client authentication failed")
        grant_type = _first(form, "grant_type")
        if not grant_type:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", f"{grant_type!r} is not supported")
        scope = _first(form, "scope")
        token = self._issue(issuer(headers), client_id or "", options, scope)
        document: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": options.token_lifetime,
        }
        if scope:
            document["scope"] = scope
        return json_response(200, document, dict(NO_STORE))

    def check(self, options: SimulatorOptions, authorization: str | None) -> SimResponse | None:
        """None if the request may pass, else the 401 to answer."""
        if not options.secured:
            return None
        scheme, _, presented = (authorization or "").strip().partition(" ")
        presented = presented.strip()
        if not presented:
            return unauthorized("MISSING_TOKEN", "a bearer token is required")
        if scheme.lower() != "bearer":
            return unauthorized("INVALID_TOKEN", "the bearer token is not valid")
        if options.token is not None and hmac.compare_digest(
            presented.encode(), options.token.encode()
        ):
            return None
        if options.oauth:
            claims = self._verify(presented)
            if claims is not None:
                if self._clock.now() < claims["exp"]:
                    return None
                return unauthorized("INVALID_TOKEN", "the bearer token has expired")
        return unauthorized("INVALID_TOKEN", "the bearer token is not valid")

    def _client_matches(
        self, options: SimulatorOptions, client_id: str | None, client_secret: str | None
    ) -> bool:
        if not options.oauth or client_id is None or client_secret is None:
            return False
        assert options.oauth_client_id is not None
        assert options.oauth_client_secret is not None
        same_id = hmac.compare_digest(client_id.encode(), options.oauth_client_id.encode())
        same_secret = hmac.compare_digest(
            client_secret.encode(), options.oauth_client_secret.encode()
        )
        return same_id and same_secret

    def _issue(
        self, issued_by: str, subject: str, options: SimulatorOptions, scope: str | None
    ) -> str:
        now = int(self._clock.now())
        with self._lock:
            serial = next(self._serials)
        claims: dict[str, Any] = {
            "iss": issued_by,
            "sub": subject,
            "iat": now,
            "exp": now + int(options.token_lifetime),
            "jti": f"sim-{serial}",
        }
        if scope:
            claims["scope"] = scope
        signing_input = f"{_encode(JWT_HEADER)}.{_encode(claims)}"
        return f"{signing_input}.{self._sign(signing_input)}"

    def _verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this authority signed, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        signing_input = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(parts[2].encode(), self._sign(signing_input).encode()):
            return None
        try:
            claims = json.loads(_decode(parts[1]))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            return None
        return claims

    def _sign(self, signing_input: str) -> str:
        digest = hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        return _b64(digest)


def protected_resource(options: SimulatorOptions, headers: Mapping[str, str]) -> dict[str, Any]:
    """The RFC 9728 metadata `/.well-known/oauth-protected-resource` answers."""
    base = issuer(headers)
    return {
        "resource": f"{base}/api/v1",
        "authorization_servers": [base] if options.secured else [],
        "scopes_supported": list(SCOPES),
        "bearer_methods_supported": ["header"],
        "openchoreo_security_enabled": options.secured,
    }


def _client_credentials(
    form: Mapping[str, list[str]], headers: Mapping[str, str], required: str | None
) -> tuple[str | None, str | None]:
    """(client_id, client_secret) from HTTP Basic (`client_secret_basic`: each part
    form-encoded, RFC 6749 2.3.1) or the form (`client_secret_post`); (None, None) when they
    come the other way than `required` says."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and value:
        if required == "client_secret_post":
            return None, None
        try:
            client_id, colon, client_secret = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        return (unquote_plus(client_id), unquote_plus(client_secret)) if colon else (None, None)
    if required == "client_secret_basic":
        return None, None
    return _first(form, "client_id"), _first(form, "client_secret")


def _first(form: Mapping[str, list[str]], key: str) -> str | None:
    values = form.get(key)
    return values[0] if values else None


def _oauth_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> SimResponse:
    document = {"error": error, "error_description": description}
    return json_response(status, document, {**NO_STORE, **(headers or {})})


def _encode(document: Mapping[str, Any]) -> str:
    return _b64(json.dumps(document, separators=(",", ":")).encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(part: str) -> str:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
