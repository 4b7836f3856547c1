"""Where the API's bearer token comes from: a static token, a token file, or OAuth2.

The HTTP client asks `bearer()` before every request and calls `refresh()` once after a 401.
`credentials_for` picks the source `openchoreo.auth` configures:

- a static token (`openchoreo.auth.token`, or its shorthand `openchoreo.token`);
- a token file, read at every `bearer()` so a rotated Kubernetes secret or systemd credential is
  picked up without a restart;
- OAuth2 client credentials, as OpenChoreo v1.x's identity provider (Thunder by default) issues
  them to machine clients. The client secret goes in the form body or as HTTP Basic, as
  `clientAuthMethod` says (`client_auth` has the ways and their order); the way that worked is
  kept. The access token lives in memory (and in `tokenCacheFile` when one is set, for the calls
  after this one: `token_cache`); one grant serves every request thread until
  `exp - min(60 s, lifetime / 2)`, and while a grant is in flight the other threads wait for it
  instead of asking again.

This module sends nothing itself: the client injects `post_form` (it owns httpx) and a `Clock`.
Error texts name the config key path and never hold a secret; `secrets()` lists every secret
known so far for redaction, and `on_secret` hears of each new one as it is learned.

A configured token (or a token file's content) loses its surrounding whitespace (a Kubernetes
secret read from a file ends in a newline); one that still cannot be an HTTP header value
(whitespace or a control character inside it, a character that is not ASCII) is a ConfigError
naming its key, and so is a secret file that cannot be read or is empty: the operator must fix
them, retrying will not. An access token the identity provider issues that cannot be sent is an
AuthError. None of these errors quotes the value.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from choreo_ingest.clock import Clock
from choreo_ingest.config import (
    CLIENT_AUTH_AUTO,
    AuthConfig,
    OAuthConfig,
    read_secret_file,
    reveal,
    token_problem,
)
from choreo_ingest.config_values import query_values_hidden
from choreo_ingest.errors import (
    ConfigError,
    GrantRefused,
    ProviderError,
    TokenRetryAfter,
    TokenUnavailable,
    TransientError,
)
from choreo_ingest.logs import MIN_SUBSTRING_LENGTH, get_logger, mask_short_secret, spellings
from choreo_ingest.providers.openchoreo.client_auth import (
    FormAnswer,
    PostForm,
    Way,
    client_auth_refused,
    configured_methods,
    error_code,
    request_for,
    ways_to_try,
)
from choreo_ingest.providers.openchoreo.token_cache import TokenCache
from choreo_ingest.providers.openchoreo.token_lifetime import GrantPause, refresh_point

OnSecret = Callable[[str], None]
"""Told a secret value as it is learned: `on_secret` of a lasting one (a client secret read from
its file; the provider passes `logs.register_secret`), `on_token` of each token (an issued access
token, a token file's content: they change while `serve` runs; `logs.register_learned_secret`)."""
TOKENS_KNOWN = 4
"""Tokens a credentials object keeps masking in error texts, the latest: older ones expired."""

MAX_DESCRIPTION = 160
"""Longest `error_description` quoted in an error; a longer one is likely an HTML page."""

_OAUTH = "openchoreo.auth.oauth"
_TOKEN_URL_KEY = f"{_OAUTH}.tokenUrl"
_METHOD_KEY = f"{_OAUTH}.clientAuthMethod"

log = get_logger("choreo_ingest.http")


class Credentials(Protocol):
    """What the HTTP client needs to authenticate its requests."""

    config_key: str
    """The config key path in use, for error messages; "" when no credentials are configured."""

    def bearer(self) -> str | None:
        """The token to send now; None when no credentials are configured."""
        ...

    def refresh(self, rejected: str | None = None) -> str | None:
        """After a 401: drop any cached token and get a new one.

        `rejected` is the token the API refused: when another thread has already replaced it,
        that newer token is returned without a new grant (several requests may see one 401).
        """
        ...

    def secrets(self) -> list[str]:
        """Every secret value known so far (tokens, client secret, issued access tokens)."""
        ...


def credentials_for(
    auth: AuthConfig,
    *,
    clock: Clock,
    post_form: PostForm,
    on_secret: OnSecret | None = None,
    on_token: OnSecret | None = None,
) -> Credentials:
    """The credentials `auth` configures (NoCredentials when it configures none).

    Raises ConfigError for a secret the config could not interpolate (`config.DeferredSecret`),
    and for a static token that cannot be sent (`token_problem`).
    """
    known = _Known(on_secret, on_token)
    if auth.oauth is not None:
        return ClientCredentials(auth.oauth, clock=clock, post_form=post_form, known=known)
    token_file = reveal(auth.token_file)
    if token_file is not None:
        return TokenFile(token_file, known=known)
    token = reveal(auth.token)
    if token is not None:
        return StaticToken(token, config_key=auth.token_key, known=known)
    return NoCredentials()


class NoCredentials:
    """No `openchoreo.auth`: requests go without an Authorization header."""

    config_key = ""

    def bearer(self) -> str | None:
        return None

    def refresh(self, rejected: str | None = None) -> str | None:
        return None

    def secrets(self) -> list[str]:
        return []


class StaticToken:
    """A token from the config, without surrounding whitespace; a refresh gives it back."""

    def __init__(self, token: str, *, config_key: str, known: _Known | None = None) -> None:
        self.config_key = config_key
        self._token = token.strip()
        self._known = known or _Known()
        self._known.add(token)
        self._known.add(self._token)
        problem = token_problem(self._token)
        if problem is not None:
            raise ConfigError(f"not a usable bearer token: {problem}", path=config_key)

    def __repr__(self) -> str:
        return f"StaticToken(config_key={self.config_key!r})"

    def bearer(self) -> str:
        return self._token

    def refresh(self, rejected: str | None = None) -> str:
        return self._token

    def secrets(self) -> list[str]:
        return self._known.values()


class TokenFile:
    """A token read from a file at every use, so a rotated file takes effect at once."""

    config_key = "openchoreo.auth.tokenFile"

    def __init__(self, path: Path, *, known: _Known | None = None) -> None:
        self.path = path
        self._known = known or _Known()

    def __repr__(self) -> str:
        return f"TokenFile(path={str(self.path)!r})"

    def bearer(self) -> str:
        token = _read_secret(self.path, self.config_key)
        self._known.add_token(token)
        problem = token_problem(token)
        if problem is not None:
            problem = f"{self.path}: not a usable bearer token: {problem}"
            raise ConfigError(problem, path=self.config_key)
        return token

    def refresh(self, rejected: str | None = None) -> str:
        return self.bearer()

    def secrets(self) -> list[str]:
        return self._known.values()


class ClientCredentials:
    """OAuth2 client credentials: one grant, shared by every thread until its refresh point."""

    def __init__(
        self,
        oauth: OAuthConfig,
        *,
        clock: Clock,
        post_form: PostForm,
        known: _Known | None = None,
    ) -> None:
        self.config_key = oauth.secret_key
        self._oauth = oauth
        self._clock = clock
        self._post_form = post_form
        self._known = known or _Known()
        # A trailing newline (`echo` into a Kubernetes Secret) is no part of the secret, as in
        # its file.
        given = reveal(oauth.client_secret)
        self._secret = None if given is None else given.strip()
        if given is not None:
            self._known.add(given)
            self._known.add(given.strip())
        self._lock = threading.Lock()  # held through a grant: the other threads wait for it
        self._token: str | None = None
        self._refresh_at = -math.inf
        self._cache: TokenCache | None = None
        self._cache_read = oauth.token_cache_file is None
        self._methods = configured_methods(oauth.client_auth_method)
        self._way: Way | None = None  # the way the secret was taken, once it was
        self._pause = GrantPause()
        self.learned_method: str | None = None
        """The method `auto` found the provider takes the secret by, after the first was refused."""

    def __repr__(self) -> str:
        return f"ClientCredentials(token_url={query_values_hidden(self._oauth.token_url)!r})"

    def bearer(self) -> str:
        with self._lock:
            if not self._cache_read:
                self._adopt_cached()
            if self._token is None or self._clock.now() >= self._refresh_at:
                return self._grant()
            return self._token

    def refresh(self, rejected: str | None = None) -> str:
        with self._lock:
            if not self._cache_read:
                self._adopt_cached()
            current, fresh = self._token, self._clock.now() < self._refresh_at
            if current is not None and fresh and rejected not in (None, current):
                return current  # another thread's refresh already replaced the rejected token
            return self._grant()

    def secrets(self) -> list[str]:
        return self._known.values()

    def _adopt_cached(self) -> None:
        """Take the token a call before this one kept in `tokenCacheFile`, while it is fresh
        (the caller holds the lock)."""
        self._cache_read = True
        path = self._oauth.token_cache_file
        assert path is not None
        self._cache = TokenCache(path, self._oauth, self._client_secret())
        cached = self._cache.load()
        if cached is None or token_problem(cached.token) is not None:
            return
        self._known.add_token(cached.token)
        if self._clock.now() < cached.refresh_at:
            self._token, self._refresh_at = cached.token, cached.refresh_at
            log.debug("token_from_cache", path=str(path))

    def _client_secret(self) -> str:
        """The client secret: configured, or read from its file at each grant."""
        if self._secret is not None:
            return self._secret
        path = reveal(self._oauth.client_secret_file)
        assert path is not None  # OAuthConfig requires one of the two
        secret = _read_secret(path, f"{_OAUTH}.clientSecretFile")
        self._known.add(secret)
        return secret

    def _grant(self) -> str:
        """Ask the token endpoint for a new access token (the caller holds the lock)."""
        self._pause.check(self._clock.monotonic())  # its Retry-After, told another caller
        self._token, self._refresh_at = None, -math.inf
        oauth = self._oauth
        secret = self._client_secret()
        granted_at = self._clock.now()
        ways = [self._way] if self._way else ways_to_try(self._methods, oauth.client_id, secret)
        refused: list[tuple[Way, FormAnswer]] = []
        for way in ways:
            answer = self._post(way, secret)
            status, body = answer.status, answer.body
            if 200 <= status < 300:
                self._way = way
                if way.method != ways[0].method:
                    self.learned_method = way.method
                break
            refused.append((way, answer))
            if not client_auth_refused(status, body):
                break
        else:
            raise self._refused(refused)
        if not 200 <= status < 300:
            raise self._pause.note(self._refused(refused), self._clock.monotonic())
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token.strip():
            shape = "no access_token" if isinstance(body, dict) else "a body that is not JSON"
            problem = f"HTTP {status} with {shape}; check {_TOKEN_URL_KEY}"
            raise self._error(GrantRefused, problem, status=status, key=_TOKEN_URL_KEY)
        token = token.strip()
        self._known.add_token(token)
        token_type = body.get("token_type")
        if isinstance(token_type, str) and token_type.lower() != "bearer":
            problem = f"HTTP {status}: token_type {self._shown(token_type, 32)!r} is not Bearer"
            raise self._error(GrantRefused, problem, status=status)
        unusable = token_problem(token)
        if unusable is not None:
            problem = f"HTTP {status}: the access_token is not a usable bearer token: {unusable}"
            problem = f"{problem}; check {_TOKEN_URL_KEY}"
            raise self._error(GrantRefused, problem, status=status, key=_TOKEN_URL_KEY)
        self._token = token
        self._refresh_at = refresh_point(token, body.get("expires_in"), granted_at)
        if self._cache is not None:
            self._cache.store(token, self._refresh_at)
        return token

    def _post(self, way: Way, secret: str) -> FormAnswer:
        """One token request, the client secret sent `way`; logged at debug as the client logs
        the API's requests. A connection failure names the token URL's key."""
        oauth = self._oauth
        request = request_for(way, oauth.client_id, secret)
        if request.credential is not None:
            self._known.add(request.credential)
        fields = {"grant_type": "client_credentials", **request.fields}
        if oauth.scope:
            fields["scope"] = oauth.scope
        if oauth.audience:
            fields["audience"] = oauth.audience
        where = oauth.token_url.partition("?")[0]
        started = self._clock.monotonic()
        try:
            answer = self._post_form(oauth.token_url, fields, request.headers)
        except TransientError as error:
            if type(error) is not TransientError:  # a deadline, a Retry-After: kept as they are
                raise
            text = self._known.redact(f"token request to {_TOKEN_URL_KEY}: {error}")
            raise TokenUnavailable(
                text, method="POST", path=where, code=error.code, config_key=_TOKEN_URL_KEY
            ) from None
        seconds = round(self._clock.monotonic() - started, 3)
        log.debug("token_request", method="POST", path=where, status=answer.status, seconds=seconds)
        return answer

    def _refused(self, answers: list[tuple[Way, FormAnswer]]) -> ProviderError:
        """The error of a grant refused in each way tried (`answers`, in order). The answer
        shown is the last when it is not about the client's authentication (what stopped the
        tries: trouble of the server's, a scope), else the first that says `invalid_client`,
        else the first: a provider that refuses a way the client is not registered for
        (Thunder: `unauthorized_client`) says nothing of the secret. Trouble of the server's
        that says when to come back (`Retry-After`) is waited out so (`TokenRetryAfter`)."""
        _, (status, body, retry_after) = answers[-1]
        if client_auth_refused(status, body):
            _, (status, body, retry_after) = next(
                (answer for answer in answers if error_code(answer[1].body) == "invalid_client"),
                answers[0],
            )
        fields = body if isinstance(body, dict) else {}
        code = self._shown(fields.get("error"), 64)  # it becomes the error's `code` too
        description = self._shown(fields.get("error_description"), MAX_DESCRIPTION)
        problem = f"HTTP {status}" + (f" {code}" if code else "")
        problem += f": {description}" if description else ""
        if status >= 500 or status in (408, 429):
            if retry_after is not None:
                problem += f" (Retry-After: {retry_after:g} s)"
                return self._error(
                    TokenRetryAfter, problem, status, code, _TOKEN_URL_KEY, retry_after=retry_after
                )
            return self._error(TokenUnavailable, problem, status, code, _TOKEN_URL_KEY)
        key, advice = self._advice(status, code)
        if len(answers) > 1:
            advice += f" (the secret was refused {'; '.join(map(self._answered, answers))})"
        elif self._oauth.client_auth_method != CLIENT_AUTH_AUTO and client_auth_refused(
            status, body
        ):
            advice += (
                f"; or the identity provider takes this client's secret another way than "
                f"{_METHOD_KEY} says ({self._oauth.client_auth_method})"
            )
        return self._error(GrantRefused, f"{problem}; {advice}", status, code, key)

    def _answered(self, answer: tuple[Way, FormAnswer]) -> str:
        way, (status, body, _) = answer
        code = self._shown(error_code(body), 64)
        return f"{way.label}: HTTP {status}" + (f" {code}" if code else "")

    def _shown(self, value: object, limit: int) -> str | None:
        """`_printable(value, limit)`, every known secret masked first: made one line, a secret
        that holds a tab or two spaces would no longer match."""
        return _printable(self._known.redact(value) if isinstance(value, str) else value, limit)

    def _advice(self, status: int, code: str | None) -> tuple[str, str]:
        """The config key a refused grant points at, and what to tell the operator."""
        if code == "invalid_client" or (code is None and status in (400, 401, 403)):
            return self.config_key, f"check {_OAUTH}.clientId and {self.config_key}"
        if code == "invalid_scope":
            return f"{_OAUTH}.scope", f"check {_OAUTH}.scope"
        if code in ("unauthorized_client", "unsupported_grant_type"):
            return f"{_OAUTH}.clientId", (
                "the identity provider must allow the client_credentials grant "
                f"for {_OAUTH}.clientId"
            )
        if status == 407:  # a proxy's answer, not the identity provider's
            return _TOKEN_URL_KEY, "a proxy on the way asks for credentials: check them in its URL"
        if code is None:
            return _TOKEN_URL_KEY, f"check {_TOKEN_URL_KEY}"
        return _OAUTH, f"check {_OAUTH}"

    def _error(
        self,
        kind: type[ProviderError],
        problem: str,
        status: int | None = None,
        code: str | None = None,
        key: str | None = None,
        **fields: Any,
    ) -> ProviderError:
        url = self._oauth.token_url
        shown = query_values_hidden(url)
        text = self._known.redact(f"token request to {_TOKEN_URL_KEY} ({shown}): {problem}")
        where = url.partition("?")[0]
        return kind(
            text, method="POST", path=where, status=status, code=code, config_key=key, **fields
        )


class _Known:
    """Secret values learned so far, shared by one credentials object; thread-safe. Tokens are
    kept the latest TOKENS_KNOWN only: `serve` is issued one an hour for as long as it runs."""

    def __init__(self, on_secret: OnSecret | None = None, on_token: OnSecret | None = None):
        self._values: list[str] = []
        self._tokens: list[str] = []
        self._lock = threading.Lock()
        self._on_secret = on_secret
        self._on_token = on_token or on_secret

    def add(self, value: str) -> None:
        with self._lock:
            if not value or value in self._values:
                return
            self._values += [text for text in sorted(spellings(value)) if text not in self._values]
        if self._on_secret is not None:
            self._on_secret(value)

    def add_token(self, value: str) -> None:
        with self._lock:
            if not value or value in self._tokens or value in self._values:
                return
            self._tokens = [*self._tokens, value][-TOKENS_KNOWN:]
        if self._on_token is not None:
            self._on_token(value)

    def values(self) -> list[str]:
        with self._lock:
            tokens = {text for token in self._tokens for text in spellings(token)}
            return [*self._values, *sorted(tokens - set(self._values))]

    def redact(self, text: str) -> str:
        for value in sorted(self.values(), key=len, reverse=True):
            if len(value) >= MIN_SUBSTRING_LENGTH:
                text = text.replace(value, "***")
            else:
                text = mask_short_secret(text, value, "***")
        return text


def _read_secret(path: Path, key: str) -> str:
    """A secret file's content, stripped (`read_secret_file`, as every secret file is read)."""
    secret = read_secret_file(path, key)
    assert secret is not None  # a path was given
    return secret


def _printable(value: object, limit: int) -> str | None:
    """A short one-line text from an untrusted body; None when absent, blank or too long."""
    if not isinstance(value, str):
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return text if text and len(text) <= limit else None
