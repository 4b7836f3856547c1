"""The clean-room OpenChoreo v1 fake's identity provider (cleanroom_v1.py says what the fake is):
Thunder's OAuth2 token endpoint for the client credentials grant, `client_secret_post` only (or
`client_secret_basic` only), as Thunder holds a client to the method it was registered with; it
issues RS256-shaped JWTs whose `exp` the API server checks.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from cleanroom_v1_http import Request, b64, json_answer


@dataclass
class Identity:
    """Thunder, as far as the client credentials grant goes."""

    client_id: str
    client_secret: str
    issuer: str = ""
    lifetime: int = 3600  # the JWT's exp - iat
    reported_expires_in: int | None = None  # expires_in as sent, when it is not the lifetime
    tokens: dict[str, float] = field(default_factory=dict)  # token -> exp
    revoked: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # statuses to answer first
    method: str = "client_secret_post"  # or "client_secret_basic": Basic only, read raw

    def grant(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        self.requests.append(request)
        if self.fail_next:
            status = self.fail_next.pop(0)
            return json_answer(status, {"error": "server_error", "error_description": "try later"})
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("application/x-www-form-urlencoded"):
            return json_answer(
                400, {"error": "invalid_request", "error_description": "form expected"}
            )
        form = {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != "client_credentials":
            return json_answer(400, {"error": "unsupported_grant_type"})
        if self.method == "client_secret_post":
            # Registered for client_secret_post: the secret in the body, nothing else counts.
            given = (form.get("client_id"), form.get("client_secret"))
        else:  # Basic only, its id and secret taken as they are (Thunder does not URL-decode)
            basic = request.headers.get("authorization", "")
            try:
                raw = base64.b64decode(basic.removeprefix("Basic ")).decode()
            except Exception:
                raw = ""
            given = (
                tuple(raw.split(":", 1))
                if basic.startswith("Basic ") and ":" in raw
                else (None, None)
            )
        if given != (self.client_id, self.client_secret):
            return json_answer(401, {"error": "invalid_client", "error_description": "bad client"})
        now = int(time.time())
        header = {"alg": "RS256", "kid": "cleanroom-signing-key", "typ": "at+jwt"}
        claims = {
            "iss": self.issuer,
            "sub": self.client_id,
            "aud": self.client_id,
            "client_id": self.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_hex(8),
            "scope": form.get("scope", ""),
        }
        signature = base64.urlsafe_b64encode(secrets.token_bytes(256)).rstrip(b"=").decode()
        token = f"{b64(header)}.{b64(claims)}.{signature}"
        self.tokens[token] = now + self.lifetime
        expires_in = self.lifetime if self.reported_expires_in is None else self.reported_expires_in
        body = {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        return json_answer(200, body)

    def valid(self, token: str) -> bool:
        exp = self.tokens.get(token)
        return exp is not None and token not in self.revoked and exp > time.time()

    def revoke_all(self) -> None:
        self.revoked.update(self.tokens)
