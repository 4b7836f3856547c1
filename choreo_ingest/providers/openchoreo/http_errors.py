"""What an unsuccessful answer of the OpenChoreo API means: the one ProviderError to raise.

The HTTP client (`client.py`) hands over every answer that is not a success. This module reads
the error bodies the API sends (v1's `{error, code}`, its JWT middleware's 401
`{error, message}`, the org era's envelope, a plain-text 400 naming a parameter), picks the error
class and writes its text: method, path, status and the API's code, with every secret the
credentials know taken out. It imports no HTTP library: an answer is anything shaped like one.

What the server says is untrusted text that ends up on a terminal, in `--json` and in the state
file: its code and message are masked first, then made one printable line (terminal escapes
dropped, control characters and line breaks as spaces) and cut to `MAX_MESSAGE` characters. A
body that is an HTML page (a proxy's 502) gives the status's reason phrase instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

from choreo_ingest.clock import Clock
from choreo_ingest.config import OAUTH_KEY
from choreo_ingest.errors import (
    TOO_LARGE,
    AuthError,
    ConnectDeadlineExceeded,
    CredentialsMissing,
    CursorExpired,
    DeadlineExceeded,
    NotFoundError,
    PermanentError,
    ProviderError,
    RetryAfter,
    ServerStalled,
    TokenRefused,
    TokenUnavailable,
    TransientError,
    WebPageAnswer,
)
from choreo_ingest.logs import MIN_SUBSTRING_LENGTH, mask_short_secret
from choreo_ingest.providers.openchoreo.auth import Credentials

BACKOFF_BASE = 0.2
"""Seconds before the first retry; doubles per retry, times a jitter factor in [0.5, 1.5)."""
MAX_MESSAGE = 300
"""Longest server message quoted in an error, in characters; a longer one is cut, with `…`."""
MAX_CODE = 64
"""Longest API code quoted in an error (it is also the error's `code`)."""
MAX_LOCATION = 200
"""Longest redirect target quoted in an error."""
PUBLIC_UNAUTHORIZED_ADVICE = (
    "a public route (sent without credentials) asked for them: point openchoreo.baseUrl at "
    "OpenChoreo's API itself, not at a gateway that wants a login"
)
FORBIDDEN_ADVICE = (
    "the client may not read this: bind it to a role that may (OpenChoreo's read-only "
    "role for catalogs is backstage-catalog-reader)"
)

_Error = TypeVar("_Error", bound=ProviderError)
_TERMINAL_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clear screen
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC (a window title, a link), to BEL or ST
    r"|\x1b[ -/]*[0-~]"  # any other escape sequence
    r"|\x9b[0-?]*[ -/]*[@-~]"  # the 8-bit CSI
)
"""A terminal (ANSI/VT) escape sequence."""

CHUNK_SIZE_KEY = "openchoreo.incremental.chunkSize"
"""The setting an answer too large to read points at (`too_large`)."""


class Answer(Protocol):
    """The parts of an HTTP response an error is read from (an `httpx.Response` has them)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    @property
    def reason_phrase(self) -> str: ...

    def json(self) -> Any: ...


FAIR_CONNECT_SECONDS = 1.0
"""A connect given less time than this (or requestTimeout) says nothing of the way there."""
STALLED_SHARE = 0.9
"""A request cut by the burst deadline after this share of the longest wait a request could
have (requestTimeout, or the whole burst when burstLength is the shorter) or more, with no
answer: the server stalled (with burstLength and requestTimeout both 10 s, as by default, the
first request of a burst has just under the whole timeout)."""


def timeout_failure(
    method: str,
    path: str,
    before: ProviderError | None,
    *,
    connect: bool,
    cause: str,
    server_root: str,
    late: bool,
    given: float,
    timeout: float,
    answering: bool,
    burst: float | None = None,
) -> TransientError:
    """A request that timed out after `given` seconds (of requestTimeout `timeout`) once it had
    its place: to retry, or past the burst deadline (`late`) one to raise (a DeadlineExceeded).
    A connect not done in a fair time is the way to the server, not the page; an answer whose
    body came too slowly (`answering`: its headers were in) is a page too large or slow, never
    a stalled server. `burst`: the seconds the burst had in all (None: no deadline)."""
    fair = given >= min(timeout, FAIR_CONNECT_SECONDS)
    if connect and (fair or not late):
        message = (
            f"{method} {path}: connecting timed out ({cause}): check the scheme and port of "
            f"openchoreo.baseUrl {server_root}, or run `choreo-ingest check`"
        )
        if late:
            return ConnectDeadlineExceeded(message, method=method, path=path)
        return TransientError(message, method=method, path=path, code="CONNECT_TIMEOUT")
    if late:
        return deadline_exceeded(method, path, before, 0.0 if answering else given, timeout, burst)
    said, code = (
        ("timed out reading the answer", "SLOW_ANSWER") if answering else ("timed out", "TIMEOUT")
    )
    return TransientError(f"{method} {path}: {said}", method=method, path=path, code=code)


def deadline_exceeded(
    method: str,
    path: str,
    before: ProviderError | None,
    waited: float,
    timeout: float,
    burst: float | None = None,
) -> DeadlineExceeded:
    """A request that timed out at the burst deadline after `waited` seconds (of `timeout`), with
    how the attempt before it was answered (by the API, or by the token endpoint for its token):
    a server answering 500 is failing, not slow, and the error then carries that status, which
    says so (no advice to raise burstLength); one that kept the request (or the attempt before
    it) waiting about as long as requestTimeout allows, or the whole burst (`burst` seconds)
    when that is shorter, has stalled, and a longer burst would not help either (a burst shorter
    than requestTimeout could otherwise never tell a hung server, and an event drain would
    charge each event its attempts for it)."""
    said, status = "", None
    longest, limit = timeout, "requestTimeout"
    if burst is not None and burst < timeout:
        longest, limit = burst, "the whole burst"
    if before is not None and before.status is not None:
        asked = "the token request" if isinstance(before, TokenUnavailable) else "the attempt"
        said = f", {asked} before it answered HTTP {before.status} {before.code or ''}".rstrip()
        status = before.status
    elif waited >= STALLED_SHARE * longest:
        message = f"{method} {path}: timed out: no answer in {waited:.3g} s ({limit})"
        return ServerStalled(message, method=method, path=path, code="TIMEOUT")
    elif before is not None and before.code == "TIMEOUT":
        message = (
            f"{method} {path}: timed out: no answer in {timeout:.3g} s (requestTimeout), nor to "
            "its retry by the burst deadline"
        )
        return ServerStalled(message, method=method, path=path, code="TIMEOUT")
    message = f"{method} {path}: timed out at the burst deadline{said}"
    return DeadlineExceeded(message, method=method, path=path, status=status)


def backoff_delay(attempt: int, jitter: float) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based); `jitter` is in [0, 1)."""
    return BACKOFF_BASE * 2.0 ** (attempt - 1) * (0.5 + jitter)


class ErrorTranslator:
    """Turns one client's unsuccessful answers into errors.

    It knows the client's credentials (to name their config key and keep their secrets out of
    every text), its clock (a Retry-After date) and its jitter (a 429 without Retry-After).
    """

    def __init__(
        self,
        credentials: Credentials,
        clock: Clock,
        rng: Callable[[], float],
        proxy: str | None = None,
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._rng = rng
        self._proxy = proxy
        """The variable that sets the proxy requests go through (`proxy_variable`), if any."""

    def translate(
        self,
        method: str,
        path: str,
        answer: Answer,
        attempt: int,
        expired_on: Collection[int],
        *,
        credentials_sent: bool = True,
    ) -> ProviderError:
        """The error an answer with a status outside 2xx means.

        A status in `expired_on` says the request's cursor has expired (the generation knows
        which); 429, 408 and 5xx but 501 (Not Implemented) are transient, and wait as their
        `Retry-After` says (a 503's too) when they carry one; other statuses permanent, 401 and
        403 with advice (a 401's depends on whether the request carried `credentials_sent`:
        public routes go without them).
        """
        status = answer.status_code
        code, message = _error_fields(answer, self.redact)
        if status in expired_on:
            return self.error(CursorExpired, method, path, status, code, message)
        if status == 401:
            if credentials_sent:
                advice = _unauthorized_advice(self._credentials.config_key, code)
            else:
                advice = PUBLIC_UNAUTHORIZED_ADVICE
            # Without any configured, or with a token given as it is, a setting to mend (exit
            # 2), as a refused grant is; a token just issued (OAuth2) may be the API's trouble,
            # and a header taken off on the way (MISSING_TOKEN) a proxy's.
            key = self._credentials.config_key
            unset = credentials_sent and not key
            given = credentials_sent and bool(key) and not key.startswith(f"{OAUTH_KEY}.")
            given = given and code != "MISSING_TOKEN"
            kind = CredentialsMissing if unset else TokenRefused if given else AuthError
            return self.error(kind, method, path, status, code, f"{message}; {advice}")
        if status == 403:
            return self.error(
                AuthError, method, path, status, code, f"{message}; {FORBIDDEN_ADVICE}"
            )
        if status == 404:
            return self.error(NotFoundError, method, path, status, code, message)
        transient = (status >= 500 and status != 501) or status == 408
        if status == 429 or transient:
            retry_after = retry_after_seconds(answer.headers.get("Retry-After"), self._clock)
            if retry_after is None and transient:
                return self.error(TransientError, method, path, status, code, message)
            return RetryAfter(
                self.redact(_describe(method, path, status, code, message)),
                retry_after=backoff_delay(attempt, self._rng())
                if retry_after is None
                else retry_after,
                method=method,
                path=path,
                status=status,
                code=self.redact(code) if code else None,
            )
        if status == 407:  # the proxy's answer, not the API's
            by = f"the proxy ${self._proxy} sets" if self._proxy else "a proxy on the way"
            message += (
                f"; {by} asks for credentials: check them in its URL (http://user:password@...)"
            )
        if 300 <= status < 400 and (location := answer.headers.get("Location")):
            # Not followed: the bearer token must not go wherever a redirect points.
            where = one_line(self.redact(location), MAX_LOCATION)  # masked before it is cut
            message += f"; redirected to {where}, not followed: point openchoreo.baseUrl at the API"
        return self.error(PermanentError, method, path, status, code, message)

    def too_large(
        self, method: str, path: str, status: int, limit: str | None, cap: int
    ) -> PermanentError:
        """An answer over `cap` bytes, cut short: as large when asked again, so not retried. A
        page asked for `limit` items (chunkSize, in the walk and in an event's listings alike)
        is made smaller by asking for fewer."""
        size = f"{cap // 2**20} MiB" if cap >= 2**20 else f"{cap:,} bytes"
        text = f"{method} {path}: the answer is larger than {size}, the most the client reads"
        key = None
        if limit == "1":
            text += ": a page of 1 item, so no chunkSize makes it fit"
        elif limit is not None:
            key = CHUNK_SIZE_KEY
            text += (
                f": a page of {one_line(limit, 20)} items holds too much (workloads carry their "
                f"endpoints' API schemas inline); lower {key}, the items a page asks for"
            )
        return PermanentError(
            self.redact(text),
            method=method,
            path=path,
            status=status,
            code=TOO_LARGE,
            config_key=key,
        )

    def error(
        self,
        kind: type[_Error],
        method: str,
        path: str,
        status: int,
        code: str | None,
        message: str,
    ) -> _Error:
        text = self.redact(_describe(method, path, status, code, message))
        shown_code = self.redact(code) if code else None
        return kind(text, method=method, path=path, status=status, code=shown_code)

    def not_json(self, method: str, path: str, answer: Answer, where: str) -> PermanentError:
        """A success whose body is not JSON, saying what came instead: its content type and
        first characters (redacted, on one line), such as a proxy's or a web app's page; a web
        page asks whether `where` (the base URL's setting) is the API's address."""
        content_type = one_line(answer.headers.get("Content-Type", ""), 60) or "no content type"
        begins = one_line(self.redact(answer.text)[:400], 80)
        shown = f"{content_type}, begins {begins!r}" if begins else f"{content_type}, empty"
        message = f"response body is not JSON ({shown})"
        if not _is_html(answer, answer.text.lstrip()):
            return self.error(PermanentError, method, path, answer.status_code, None, message)
        message = f"{message}: a web page, not the API; is {where} the API's address?"
        return self.error(WebPageAnswer, method, path, answer.status_code, None, message)

    def redact(self, text: str) -> str:
        for secret in sorted(self._credentials.secrets(), key=len, reverse=True):
            if len(secret) >= MIN_SUBSTRING_LENGTH:
                text = text.replace(secret, "<redacted>")
            else:
                text = mask_short_secret(text, secret, "<redacted>")
        return text


def _unauthorized_advice(config_key: str, code: str | None) -> str:
    """What to check after the API refused the token from `config_key` twice (the client
    refreshes it once), by the JWT middleware's `code`. MISSING_TOKEN: the header was sent, so
    something on the way took it off. Otherwise, with OAuth2, a token was just issued, so it is
    the API that does not take the identity provider's tokens, not the client secret that is
    wrong: INVALID_CLAIMS says the signature was good and the claims (issuer, audience, the
    claims that make the token a known subject type) not."""
    if not config_key:
        return "the API needs credentials: set openchoreo.auth"
    oauth = config_key.startswith(f"{OAUTH_KEY}.")
    if code == "MISSING_TOKEN":
        return (
            "the Authorization header did not reach the API (a proxy or ingress in between "
            f"strips it?): it was sent, with the token from {OAUTH_KEY if oauth else config_key}"
        )
    if not oauth:
        return f"check {config_key}"
    issued = "the API refused a token just issued at openchoreo.auth.oauth.tokenUrl"
    audience = "an audience the token lacks may need openchoreo.auth.oauth.audience"
    if code == "INVALID_CLAIMS":
        return (
            f"{issued} for its claims: check the issuer and audience OpenChoreo expects of "
            f"that identity provider's tokens ({audience}), and that a subject type of "
            "openchoreo-api's security configuration matches the token's claims (it answers "
            "'Failed to resolve subject from token' when none does)"
        )
    return (
        f"{issued}: check that OpenChoreo trusts that identity provider (its issuer, audience "
        f"and signing keys; {audience}); OpenChoreo also answers INVALID_TOKEN when it cannot "
        "fetch the identity provider's signing keys (JWKS) or its clock lags the token's issue time"
    )


def _describe(method: str, path: str, status: int, code: str | None, message: str) -> str:
    head = f"{method} {path}: HTTP {status}" + (f" {code}" if code else "")
    return f"{head}: {message}" if message else head


def _error_fields(answer: Answer, redact: Callable[[str], str]) -> tuple[str | None, str]:
    """(API code, server message) from an error body: an error object (`{error, code}`, the
    org-era envelope, the 401 `{error, message}`) or a short text (a 400 naming a parameter),
    each `redact`ed, then `one_line`; an HTML page or no text gives the reason phrase."""
    reason = one_line(answer.reason_phrase)
    try:
        body = answer.json()
    except (ValueError, RecursionError):  # RecursionError: nested past what json decodes
        text = answer.text.strip()
        if not text or _is_html(answer, text):
            return None, reason
        return None, one_line(redact(text).strip().splitlines()[0]) or reason  # masked whole
    if not isinstance(body, dict):
        return None, reason
    metadata = body.get("metadata")
    if "code" in body:
        code, message = body.get("code"), body.get("error") or body.get("message")
    elif isinstance(metadata, dict) and "code" in metadata:
        code, message = metadata.get("code"), body.get("error") or body.get("message")
    else:
        code, message = body.get("error"), body.get("message")
    shown_code = one_line(redact(str(code)), MAX_CODE) if code else ""
    shown_message = one_line(redact(str(message))) if message else ""
    return shown_code or None, shown_message or reason


_UNKNOWN_ISSUER = re.compile(r"local issuer|self[- ]signed", re.IGNORECASE)
"""OpenSSL's words for a certificate whose CA is not trusted (not an expired one, nor one
for another host)."""


def error_cause(error: Exception) -> str:
    """What failed, as the client has always said it: `ConnectError: [SSL: ...] ...`; a
    certificate not trusted also says which setting trusts it."""
    text = str(error)
    cause = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text and _UNKNOWN_ISSUER.search(text):
        return f"{cause} (openchoreo.caBundle names the CA to trust)"
    return cause


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """Untrusted `text` as one printable line: terminal escape sequences dropped, every other
    control character and run of whitespace one space, cut to `limit` characters with `…`."""
    text = _TERMINAL_ESCAPE.sub("", text)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _is_html(answer: Answer, text: str) -> bool:
    """Whether an error body is a web page (a proxy's or load balancer's), not the API's."""
    content_type = answer.headers.get("Content-Type", "").lower()
    return "html" in content_type or text.startswith("<")


def retry_after_seconds(value: str | None, clock: Clock) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp() - clock.now()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
