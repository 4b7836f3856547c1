"""How long an access token serves: when to replace one, from its JWT claims or `expires_in`;
and when the token endpoint said to ask again (`GrantPause`).

A JWT is decoded, not verified (the API verifies it); a token that is no JWT, or says nothing
of its expiry, is kept DEFAULT_LIFETIME.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any

from choreo_ingest.errors import TokenRetryAfter

REFRESH_MARGIN = 60.0
"""Seconds before `exp` to replace a token (OpenChoreo's own plugins use the same 60 s)."""
DEFAULT_LIFETIME = 300.0
"""Seconds to keep a token that says nothing of its expiry (no JWT `exp`, no `expires_in`)."""
EXPIRED_REUSE = 10.0
"""Seconds to keep a token that is already expired by our clock (clock skew, or a broken
identity provider): asking again at every request would not help, and a 401 still refreshes."""


def refresh_point(token: str, expires_in: object, granted_at: float) -> float:
    """When to replace `token`, granted at `granted_at` (epoch seconds).

    `exp - min(60 s, lifetime / 2)`, where exp is the JWT's `exp` claim when the token is a JWT
    that has one (decoded, not verified: the API verifies it), else `granted_at + expires_in`;
    lifetime is exp minus the JWT's `iat`, else minus `granted_at`.
    """
    claims = jwt_claims(token)
    exp = _seconds(claims.get("exp"))
    if exp is None:
        given = _seconds(expires_in)
        exp = granted_at + (given if given is not None and given > 0 else DEFAULT_LIFETIME)
    issued = _seconds(claims.get("iat"))
    lifetime = max(exp - (granted_at if issued is None else issued), 0.0)
    refresh_at = exp - min(REFRESH_MARGIN, lifetime / 2)
    if refresh_at > granted_at:
        return refresh_at
    if exp > granted_at:  # an `iat` far behind our clock: keep half of what is left
        return granted_at + (exp - granted_at) / 2
    return granted_at + EXPIRED_REUSE


def jwt_claims(token: str) -> Mapping[str, Any]:
    """The payload of a JWT (three base64url parts), unverified; {} for anything else."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, RecursionError):  # bad base64 (binascii.Error), UTF-8 or JSON
        return {}
    return claims if isinstance(claims, dict) else {}


def _seconds(value: object) -> float | None:
    """A finite number of seconds from JSON (a numeric string counts), else None."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class GrantPause:
    """The token endpoint's `Retry-After`, kept for every caller of one credentials object: the
    threads that waited on a refused grant (an org-era burst's detail calls, an event drain's
    reads) must not each ask again at once. Not thread-safe: used under the grant's lock."""

    def __init__(self) -> None:
        self._said: TokenRetryAfter | None = None
        self._until = -math.inf

    def check(self, now: float) -> None:
        """Raise what the endpoint said, with the time left, until `now` (monotonic) is past."""
        if self._said is None or now >= self._until:
            return
        said = self._said
        raise TokenRetryAfter(
            str(said),
            retry_after=self._until - now,
            method=said.method,
            path=said.path,
            status=said.status,
            code=said.code,
            config_key=said.config_key,
        )

    def note(self, error: Exception, now: float) -> Exception:
        """`error`, kept when it says when to come back."""
        if isinstance(error, TokenRetryAfter):
            self._said, self._until = error, now + error.retry_after
        return error
