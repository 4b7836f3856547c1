"""The OpenChoreo HTTP client: the only module that imports httpx.

One `OpenChoreoClient` lives for one burst. It sends every request through a shared
`RequestLimiter`, caps its timeouts at the time left before the burst deadline, sends the bearer
token its `Credentials` hold (refreshed once on a 401), retries what is worth retrying (a
request whose token could not be granted too), and translates every failure once. It knows no
API generation: the generation modules (`api_v1`, `api_orgs`) read the bodies' envelopes and
pagination, and which statuses mean an expired cursor. Errors never name a secret.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Self

import httpx

from choreo_ingest.api_address import API_PREFIX, api_root
from choreo_ingest.clock import Clock
from choreo_ingest.config import OpenChoreoConfig, token_problem
from choreo_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectDeadlineExceeded,
    DeadlineExceeded,
    PermanentError,
    ProviderError,
    RetryAfter,
    TokenUnavailable,
    TransientError,
)
from choreo_ingest.logs import get_logger, masked
from choreo_ingest.providers.openchoreo.auth import Credentials, credentials_for
from choreo_ingest.providers.openchoreo.client_auth import FormAnswer, PostForm
from choreo_ingest.providers.openchoreo.connection_settings import (
    default_user_agent,
    proxy_note,
    proxy_url,
    proxy_variable,
    register_proxy_secrets,
    tls_verify,
    unusable_proxy,
    with_proxy_note,
)
from choreo_ingest.providers.openchoreo.http_errors import (
    FAIR_CONNECT_SECONDS,
    ErrorTranslator,
    backoff_delay,
    error_cause,
    one_line,
    retry_after_seconds,
    timeout_failure,
)
from choreo_ingest.providers.openchoreo.kept_answers import MISSING, KeptAnswers, request_key
from choreo_ingest.providers.openchoreo.many_reads import (
    FAST_ANSWER_SECONDS,
    NOT_SENT,
    Gone,
    ManyReads,
    Params,
)
from choreo_ingest.providers.openchoreo.ratelimit import RequestLimiter, request_limiter
from choreo_ingest.providers.openchoreo.urls import request_url

log = get_logger("choreo_ingest.http")

MAX_ATTEMPTS = 4
"""Attempts per request (first + 3 retries) on 429, 5xx, timeouts and connection errors."""
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest response body read: a page of the API is some hundreds of KiB, but a v1 workload
carries its endpoints' API schemas inline (a megabyte or more), and a page holds up to 100."""
MAX_UNBOUNDED_WAIT = 60.0
"""Longest Retry-After honoured in place when the client has no deadline."""
MAX_SHOWN_PATH = 200
"""Longest request path quoted in an error (a name the server listed may be any length)."""
_TOKEN_TIMEOUT: ContextVar[Callable[[], float] | None] = ContextVar("token_timeout", default=None)
"""While a client asks for a token: a token request's timeout, the time left (`form_poster`)."""


class OpenChoreoClient:
    """A burst's connection to the OpenChoreo API; use it as a context manager."""

    def __init__(
        self,
        config: OpenChoreoConfig,
        *,
        clock: Clock,
        deadline: float | None,
        transport: object | None = None,
        user_agent: str | None = None,
        rng: Callable[[], float] = random.random,
        credentials: Credentials | None = None,
        sequential_below: float = FAST_ANSWER_SECONDS,
        cancelled: Callable[[], bool] = lambda: False,
        limiter: RequestLimiter | None = None,
    ) -> None:
        if not config.base_url:
            raise ConfigError("is required", path="openchoreo.baseUrl")
        self._base_url = api_root(config.base_url)
        self.server_root = self._base_url.removesuffix(API_PREFIX)
        self._clock = clock
        self._deadline = deadline
        self._burst = None if deadline is None else max(0.0, deadline - clock.monotonic())
        self._cancelled = cancelled
        self._request_timeout = config.incremental.request_timeout
        self._rng = rng
        self._limiter = limiter or request_limiter(config, clock)
        concurrent = self._limiter.max_concurrent
        headers = {"User-Agent": user_agent or default_user_agent(), "Accept": "application/json"}
        self._proxy = proxy_variable(self._base_url) if transport is None else None
        self._where = ", ".join(
            filter(None, [f"openchoreo.baseUrl {self.server_root}", proxy_note(self._proxy)])
        )
        self._http = _http_client(
            config,
            transport,
            self._proxy,
            base_url=self._base_url + "/",
            headers=headers,
            limits=httpx.Limits(max_connections=concurrent, max_keepalive_connections=concurrent),
        )
        self._credentials = credentials or credentials_for(
            config.auth, clock=clock, post_form=form_poster(config, clock, transport)
        )
        self._errors = ErrorTranslator(self._credentials, clock, rng, self._proxy)
        self._many = ManyReads(
            self.get_json, clock, max_concurrent=concurrent, sequential_below=sequential_below
        )
        self._count_lock = threading.Lock()
        self._requests_sent = 0
        self.kept = KeptAnswers()
        """What `read_ahead` read for the asks to come."""

    def __repr__(self) -> str:
        return f"OpenChoreoClient(base_url={self._base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._many.close()
        self._http.close()

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent so far, retries included."""
        with self._count_lock:
            return self._requests_sent

    @property
    def base_url(self) -> str:
        """The API root every request path is relative to (`https://host/api/v1`)."""
        return self._base_url

    def get_json(
        self, path: str, params: Params | None = None, *, expired_on: Collection[int] = ()
    ) -> Any:
        """The parsed JSON body of a successful GET; every failure raises a ProviderError. A
        status in `expired_on` (the generation knows which) is an expired cursor: CursorExpired,
        never retried."""
        kept = MISSING if expired_on else self.kept.take(path, params)
        if kept is not MISSING:
            return kept
        return self._json(path, self._send("GET", path, params, expired_on))

    def read_ahead(
        self, requests: Sequence[tuple[str, Params]], *, adding: bool = False
    ) -> list[Any]:
        """Send these GETs now, at once (`ManyReads.get_each`), for `get_json` to answer them
        from (`KeptAnswers`): an event drain reads what its next events will ask for. The answers
        replace those kept, or join them (`adding`), and are returned too, in the order asked (a
        `Gone`, a `Failed`, or NOT_SENT). A call and those adding to it have half the time left;
        a request goes once (a 401 still renews the token once), and none after the first that
        failed for want of a server: its event sends it again, with retries."""
        if not adding:
            now = self._clock.monotonic()
            until = None if self._deadline is None else now + (self._deadline - now) / 2
            self.kept.begin(self._clock.now(), until)
        unique, uses = self.kept.to_send(requests)

        def once(path: str, params: Params) -> Any:
            return self._json(path, self._send("GET", path, params, (), attempts=1))

        deadline, self._deadline = self._deadline, self.kept.until
        try:
            answers = self._many.get_each(unique, once, self.kept.stopped)
        finally:
            self._deadline = deadline
        answered = self.kept.keep(uses, answers)
        return [answered.get(request_key(path, params), NOT_SENT) for path, params in requests]

    def get_public(self, path: str) -> Any:
        """A public route at the server root (`/version`, `/.well-known/...`), sent without
        credentials, once, no retries: what a probe needs."""
        self._check_deadline("GET", path)
        try:
            with self._count_lock:
                self._requests_sent += 1
            limit, started = httpx.Timeout(self._timeout_now()), self._clock.monotonic()
            request = self._http.build_request("GET", self.server_root + path, timeout=limit)
            sent = self._http.send(request, stream=True)
            response = self._read(sent, started + self._request_timeout, path)
        except httpx.HTTPError as error:
            cause = one_line(self._errors.redact(error_cause(error)))
            raise TransientError(
                with_proxy_note(f"GET {path}: {cause}", self._proxy),
                method="GET",
                path=path,
                code="CONNECTION_ERROR",
            ) from None
        if not response.is_success:
            raise self._errors.translate(
                "GET", path, response, MAX_ATTEMPTS, (), credentials_sent=False
            )
        return self._json(path, response)

    def get_many(self, requests: Sequence[tuple[str, Params]]) -> list[Any | Gone]:
        """GET each (path, params), results in input order, a 404 as a `Gone` (`ManyReads`)."""
        return self._many.get_many(requests)

    def _send(
        self,
        method: str,
        path: str,
        params: Params | None,
        expired_on: Collection[int],
        attempts: int = MAX_ATTEMPTS,
    ) -> httpx.Response:
        path = path.partition("?")[0]
        failure: ProviderError | None = None
        refreshed = False
        attempt = 1
        while True:
            try:
                self._check_deadline(method, path)  # before a token grant, too
                token = self._bounded(self._credentials.bearer)
                response = self._send_once(method, path, params, token)
            except TokenUnavailable as unavailable:  # no token to send: the request failed so
                failure = unavailable
            except _TimedOut as timed_out:
                failure = self._timed_out(timed_out, method, path, failure)
            except httpx.TransportError as error:
                said = f"{method} {path}: {one_line(self._errors.redact(error_cause(error)))}"
                failure = TransientError(
                    f"{said} ({self._where})", method=method, path=path, code="CONNECTION_ERROR"
                )
            else:
                if response.is_success:
                    return response
                renewed: bool | TokenUnavailable = False
                if response.status_code == 401 and not refreshed and self._credentials.config_key:
                    refreshed = True  # a token that expired early, or a rotated token file
                    renewed = self._renewed(token)
                    if renewed is True:
                        continue  # the same attempt again, whichever attempt it was
                if isinstance(renewed, TokenUnavailable):
                    failure = renewed  # the next attempt asks for a token again
                else:
                    failure = self._errors.translate(method, path, response, attempt, expired_on)
                    if not isinstance(failure, TransientError):
                        raise failure
            retry = failure.retry_after if isinstance(failure, RetryAfter) else None
            delay = backoff_delay(attempt, self._rng()) if retry is None else retry
            if attempt >= attempts:
                # A 429 that lasts asks us to come back later: a pause, not a failure.
                failure.exhausted = failure.status != 429
                raise failure
            if not self._fits(delay) or self._cancelled():
                raise failure
            self._clock.sleep(delay)
            attempt += 1

    def _timed_out(
        self, timed_out: _TimedOut, method: str, path: str, before: ProviderError | None
    ) -> TransientError:
        """The failure to retry, or past the burst deadline the one to raise."""
        failure = timeout_failure(
            method,
            path,
            before,
            connect=isinstance(timed_out.error, httpx.ConnectTimeout),
            cause=one_line(self._errors.redact(error_cause(timed_out.error))),
            server_root=self.server_root,
            late=self._deadline is not None and self._clock.monotonic() >= self._deadline,
            given=timed_out.given,
            timeout=self._request_timeout,
            answering=timed_out.answering,
            burst=self._burst,
        )
        if isinstance(failure, DeadlineExceeded):
            raise failure from None
        return failure

    def _renewed(self, token: str | None) -> bool | TokenUnavailable:
        """After a 401: whether there is another token to send, or why none can be had now."""
        try:
            return self._bounded(lambda: self._credentials.refresh(token)) != token
        except TokenUnavailable as unavailable:
            return unavailable

    def _bounded(self, ask: Callable[[], str | None]) -> str | None:
        """A token from the credentials, a grant it needs ending by the burst deadline."""
        reset = _TOKEN_TIMEOUT.set(self._timeout_now)
        try:
            return ask()
        finally:
            _TOKEN_TIMEOUT.reset(reset)

    def _send_once(
        self, method: str, path: str, params: Params | None, token: str | None
    ) -> httpx.Response:
        self._check_deadline(method, path)
        unusable = token_problem(token) if token else None
        if unusable is not None:  # httpx would refuse it in an error that quotes it
            key = self._credentials.config_key or "openchoreo.auth"
            problem = f"the token from {key} is not a usable bearer token: {unusable}"
            raise AuthError(f"{method} {path}: {problem}", method=method, path=path)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            with self._limiter.slot(self._deadline):
                timeout = self._timeout_now()
                if timeout <= 0:
                    self._check_deadline(method, path)
                with self._count_lock:
                    self._requests_sent += 1
                started = self._clock.monotonic()
                url, limit = request_url(self._base_url, path, params), httpx.Timeout(timeout)
                request = self._http.build_request(method, url, headers=headers, timeout=limit)
                sent: httpx.Response | None = None
                try:
                    sent = self._http.send(request, stream=True)
                    response = self._read(sent, started + self._request_timeout, path)
                except httpx.TimeoutException as error:
                    raise _TimedOut(error, timeout, answering=sent is not None) from None
                log.debug(
                    "openchoreo_request",
                    method=method,
                    path=path,
                    status=response.status_code,
                    seconds=round(self._clock.monotonic() - started, 3),
                )
                return response
        except DeadlineExceeded as error:
            if error.path is not None:
                raise
            raise DeadlineExceeded(f"{method} {path}: {error}", method=method, path=path) from None
        except httpx.InvalidURL as error:  # a name the server listed that no URL can hold
            shown = one_line(path, MAX_SHOWN_PATH)
            raise PermanentError(
                f"{method} {shown}: cannot be requested: {error}", method=method, path=shown
            ) from None

    def _read(self, response: httpx.Response, until: float, path: str) -> httpx.Response:
        """`response`, read whole; one over MAX_BODY_BYTES is a PermanentError (as large again)."""
        if not _read_whole(response, until, self._clock, self._cancelled):
            sent, status = response.request, response.status_code
            limit = sent.url.params.get("limit")
            raise self._errors.too_large(sent.method, path, status, limit, MAX_BODY_BYTES)
        return response

    def _timeout_now(self) -> float:
        """The request timeout, cut to the time left before the burst deadline."""
        left = float("inf") if self._deadline is None else self._deadline - self._clock.monotonic()
        return min(self._request_timeout, left)

    def _check_deadline(self, method: str, path: str) -> None:
        """No request begins after the deadline, or once the run was asked to stop (SIGTERM: a
        service manager waits only so long)."""
        if self._deadline is not None and self._clock.monotonic() >= self._deadline:
            raise DeadlineExceeded(
                f"{method} {path}: the burst deadline has passed", method=method, path=path
            )
        if self._cancelled():
            said = f"{method} {path}: not sent: the run is stopping"
            raise TransientError(said, method=method, path=path, code="STOPPED")

    def _fits(self, delay: float) -> bool:
        """Whether waiting `delay` seconds still leaves the request before the deadline."""
        if self._deadline is None:
            return delay <= MAX_UNBOUNDED_WAIT
        return self._clock.monotonic() + delay < self._deadline

    def _json(self, path: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (ValueError, RecursionError):  # RecursionError: nested past what json decodes
            raise self._errors.not_json("GET", path, response, self._where) from None


class _TimedOut(Exception):
    """A request timed out after `given` seconds (its timeout once it had its place in the
    limiter); `answering`: its headers were in, the body came too slowly."""

    def __init__(self, error: httpx.TimeoutException, given: float, *, answering: bool) -> None:
        self.error, self.given, self.answering = error, given, answering


def _read_whole(
    response: httpx.Response, until: float, clock: Clock, stopping: Callable[[], bool]
) -> bool:
    """Read `response`'s body whole by `until` (httpx's timeout holds for each read alone: a byte
    a second held the burst and run lock) and not past a stop; False when it outgrew
    MAX_BODY_BYTES."""
    chunks, size, begun = [], 0, clock.monotonic()
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            now = clock.monotonic()
            if now > until:
                raise httpx.ReadTimeout("the whole answer took longer than the timeout")
            if size > MAX_BODY_BYTES:
                return False
            if stopping() and now - begun > 1.0:  # a slow answer only
                raise httpx.ReadError("cut short: stopping")
    finally:
        response.close()
        # httpx's stream holds its response, a cycle only the collector frees: a big page's
        # body outlived its page by several. Read whole, the response needs no stream.
        response.stream = httpx.ByteStream(b"")
    response._content = b"".join(chunks)  # what `read()` would have kept
    return True


def form_poster(
    config: OpenChoreoConfig, clock: Clock, transport: object | None = None
) -> PostForm:
    """A `PostForm` for the OAuth token endpoint: one short-lived connection per grant (a grant
    is rare), with the API's TLS settings, so credentials can outlive any one burst's client."""

    def post_form(url: str, fields: Mapping[str, str], headers: Mapping[str, str]) -> FormAnswer:
        where = url.partition("?")[0]
        time_left = _TOKEN_TIMEOUT.get()
        timeout = config.incremental.request_timeout if time_left is None else time_left()
        if timeout <= 0:
            message = f"POST {where}: the burst deadline has passed"
            raise DeadlineExceeded(message, method="POST", path=where)
        proxy = proxy_variable(url) if transport is None else None
        http = _http_client(config, transport, proxy)
        try:
            sent = {"Accept": "application/json", "User-Agent": default_user_agent(), **headers}
            with http:
                limit, started = httpx.Timeout(timeout), clock.monotonic()
                request = http.build_request("POST", url, data=fields, headers=sent, timeout=limit)
                response = http.send(request, stream=True)
                whole = _read_whole(response, started + timeout, clock, lambda: False)
        except httpx.HTTPError as error:
            basic = (headers.get("Authorization") or "").removeprefix("Basic ")
            secrets = [fields.get("client_secret") or "", basic]
            cause = one_line(masked(error_cause(error), secrets))
            if isinstance(error, httpx.TimeoutException) and time_left and time_left() <= 0:
                fair = timeout >= min(config.incremental.request_timeout, FAIR_CONNECT_SECONDS)
                left = "" if fair else f"; it had {timeout:.1f} s of the burst left"
                raise ConnectDeadlineExceeded(  # the way to a token, never the page's size
                    f"POST {where}: no token granted by the burst deadline ({cause}{left}): "
                    "check openchoreo.auth.oauth.tokenUrl, or run `choreo-ingest check`",
                    method="POST",
                    path=where,
                ) from None
            raise TransientError(
                with_proxy_note(f"POST {where}: {cause}", proxy),
                method="POST",
                path=where,
                code="CONNECTION_ERROR",
            ) from None
        try:
            body = response.json() if whole else None
        except (ValueError, RecursionError):
            body = None
        later = retry_after_seconds(response.headers.get("Retry-After"), clock)
        return FormAnswer(response.status_code, body, later)

    return post_form


def _http_client(
    config: OpenChoreoConfig, transport: object | None, proxy: str | None, **options: Any
) -> httpx.Client:
    """httpx's client with the config's TLS settings, through the proxy the variable `proxy`
    sets (read by `connection_settings`, not by httpx; its password masked in every text from
    now on), never following redirects; its refusals said as configuration errors."""
    options.update(transport=_transport(transport), verify=tls_verify(config), trust_env=False)
    register_proxy_secrets(proxy)
    try:
        return httpx.Client(proxy=proxy_url(proxy), follow_redirects=False, **options)
    except (httpx.InvalidURL, UnicodeError, ImportError, ValueError) as error:
        bad_url = ConfigError(f"not a URL to send requests to ({error})", path="openchoreo.baseUrl")
        raise unusable_proxy(error, proxy) or bad_url from None


def _transport(transport: object | None) -> httpx.BaseTransport | None:
    if transport is None or isinstance(transport, httpx.BaseTransport):
        return transport
    raise TypeError(f"transport must be an httpx.BaseTransport, got {type(transport).__name__}")
