"""The routes of `serve`: each calls the core in a worker thread (`context.in_thread`: every look
at the state store, so the event loop never waits on it) and answers the document the matching
command prints with `--json`.

Errors answer `{"error": message}` with the status the error means: 400 bad input, 401 no or
wrong token, 403 wrong events secret or a state-changing request a web page sent (without a
token, any page's; with one, another site's), 404 unknown provider, 409 a burst holds the run lock
longer than the wait, 410 a feed position that was pruned, 413 too large, 415 an event body not
declared `application/json`, 503 the inbox is full or the store cannot be read, PostgreSQL down
included (but `/health`: its unhealthy document, the reason in `problems`; `/readyz`: not ready;
`/metrics`: a 200 that says so, for Prometheus).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from choreo_ingest.errors import ChoreoIngestError, ConfigError, StateError
from choreo_ingest.event_input import decode_events
from choreo_ingest.event_intake import EventReceipt, receive_events
from choreo_ingest.feed import changes_page, entities_batch, entities_page
from choreo_ingest.invocation import (
    approval_json,
    approve_removals,
    refresh,
    refresh_json,
    reset,
    reset_json,
)
from choreo_ingest.logs import get_logger
from choreo_ingest.metrics import render_metrics, render_state_readable
from choreo_ingest.provider_scope import ProviderScope
from choreo_ingest.reporting import (
    StatusReport,
    all_metrics,
    no_state_health,
    pending_removals,
    provider_names,
    providers_json,
    reading,
    removals_json,
    status_report,
)
from choreo_ingest.server.context import (
    UNAVAILABLE_RETRY_SECONDS,
    Handler,
    Server,
    as_operator,
    carries_token,
    event_turn,
    in_thread,
    no_state_problem,
    provider_of,
    require_state,
    require_token,
)
from choreo_ingest.server.page import PAGE_CSP, render_status_page
from choreo_ingest.server.request_log import RequestLog, internal_error_document
from choreo_ingest.server.requests import (
    HTTPProblem,
    body_of,
    check_ref,
    flag_param,
    int_param,
    json_body,
    require_json,
)
from choreo_ingest.server.security import (
    EVENT_ROUTE_PREFIXES,
    EVENTS_SECRET_HEADER,
    CrossSiteGuard,
    FramingGuard,
    PrivateAnswers,
)

log = get_logger("choreo_ingest.server")

PAGE_CHANGES = 20
"""The status page shows this many of the newest changes."""


def build_app(server: Server) -> ASGIApp:
    """The ASGI application: the routes, behind the request log and counters."""
    routes = [
        Route("/", _page(server), methods=["GET"]),
        Route("/healthz", _healthz(server), methods=["GET"]),
        Route("/readyz", _readyz(server), methods=["GET"]),
        Route("/metrics", _metrics(server), methods=["GET"]),
        *_event_routes(server),
        *_reading_routes(server),
        *_operator_routes(server),
        *_feed_routes(server),
    ]
    handlers = {
        HTTPProblem: _problem_response,
        HTTPException: _routing_response,
        Exception: _internal_error_response,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.router.redirect_slashes = False  # its redirect is built from the client's Host header
    guarded = CrossSiteGuard(app, credentials=server.credentials, hosts=server.hosts)
    logged = RequestLog(FramingGuard(guarded), server.clock, server.requests)
    return PrivateAnswers(ClosingWhenStopping(logged, server.stopping))  # its own 500 too


class ClosingWhenStopping:
    """Once `stopping` is set, every answer says `Connection: close` (uvicorn then closes the
    connection after it): a client's next request opens a connection, which the Service sends
    to another replica, instead of meeting this one's port closed on a kept-alive connection."""

    def __init__(self, app: ASGIApp, stopping: threading.Event) -> None:
        self.app = app
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and self.stopping.is_set():
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


# -- documents and errors ----------------------------------------------------------------------


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(document, status_code=status, headers=headers)


async def _problem_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPProblem)
    headers = error.headers
    if error.status == 503:  # a store that cannot be read now: an event sender retries later
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS), **headers}
    return _json({"error": str(error), **error.fields}, error.status, headers)


async def _routing_response(request: Request, error: Exception) -> Response:
    """Starlette's own answers (no such route: 404; a method the route lacks: 405, with its
    `Allow`), as a document like every other error's."""
    assert isinstance(error, HTTPException)
    return _json({"error": error.detail}, error.status_code, dict(error.headers or {}))


async def _internal_error_response(request: Request, error: Exception) -> Response:
    """A bug's 500, as a document like every other error's (`RequestLog` logs it)."""
    return _json(internal_error_document(error), 500)


# -- liveness, readiness, metrics, the page ----------------------------------------------------


def _healthz(server: Server) -> Handler:
    async def healthz(request: Request) -> Response:
        # The loop stopped on purpose during `serve.shutdownDelay` (up to an hour): a liveness
        # probe must not take the replica handing its callers over for a hung one.
        alive = server.stopping.is_set() or server.service.alive()
        return _json({"alive": alive}, 200 if alive else 503)

    return healthz


def _readyz(server: Server) -> Handler:
    def problem() -> str | None:
        """Why the state cannot be read, or None (no state yet: in `/health`'s words)."""
        missing = no_state_problem(server)
        if missing is not None:
            return missing
        with reading(server.state):
            return None

    async def readyz(request: Request) -> Response:
        if server.stopping.is_set():
            return _json({"ready": False, "error": "serve is stopping"}, 503)
        try:
            found = await run_in_threadpool(problem)
        except ChoreoIngestError as error:
            found = str(error)
        if found is not None:
            return _json({"ready": False, "error": found}, 503)
        return _json({"ready": True})

    return readyz


def _metrics(server: Server) -> Handler:
    def state_series() -> bytes | None:
        """The state's series; None when there is no state yet."""
        if not server.state.exists():
            return None
        with reading(server.state) as store:
            names = provider_names(store, server.config)
            metrics = all_metrics(
                store,
                names,
                run_at=server.service.last_tick_at,
                config=server.config.incremental,
                now=server.clock.now(),
                running=True,  # this service holds the run lock: `bursting` is its burst
                configured=server.config.providers,
            )
            return render_metrics(metrics)

    def exposition() -> bytes:
        try:
            data = state_series()
        except StateError:  # still a 200: a 503 is the whole target down to Prometheus
            data = None  # (the service's `tick_failed` lines say why, every tick)
        readable = render_state_readable(data is not None)
        return readable + (data or b"") + generate_latest(server.registry)

    async def metrics(request: Request) -> Response:
        data = await in_thread(server, exposition)
        return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")

    return metrics


def _page(server: Server) -> Handler:
    def page(with_content: bool) -> str:
        """The page; without `with_content` (a token is set, the request lacks it), without the
        catalog content it holds: the last changes' refs, the text of the last errors."""
        require_state(server)
        now = server.clock.now()
        report = _served_report(server, now)
        if not with_content:
            return render_status_page(report.errors_withheld(), None, now)
        with reading(server.state) as store:
            since = max(0, store.last_change_seq() - PAGE_CHANGES)
            changes = store.changes(since, PAGE_CHANGES)
        return render_status_page(report, changes, now)

    async def status_page(request: Request) -> Response:
        html = await in_thread(server, page, carries_token(server, request))
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP})

    return status_page


def _served_report(server: Server, now: float, only: str | None = None) -> StatusReport:
    """The status report, with the service's own problem when its ticks do not run (skipped:
    another process holds the run lock; or failing): what `/health`, `/status` and the page
    say, as the metrics' last run stops moving."""
    flooding = server.service.arrivals.flooding
    report = status_report(server.state, server.config, now, only=only, flooding=flooding)
    problem = server.service.tick_problem()
    return report if problem is None else replace(report, problems=[problem])


# -- events ------------------------------------------------------------------------------------


def _event_routes(server: Server) -> list[Route]:
    async def receive(request: Request) -> Response:
        path_secret = request.path_params.get("secret")
        header = request.headers.get(EVENTS_SECRET_HEADER)
        if not server.credentials.events_allow(header, path_secret):
            raise HTTPProblem(403, "a valid events secret is required")
        require_json(request)
        provider = await provider_of(server, request, ProviderScope.CONFIGURED)
        body = await body_of(request, server.config.serve)
        try:
            text = decode_events(body, "request body")
        except ConfigError as error:
            raise HTTPProblem(400, str(error)) from None
        receipt = await in_thread(server, _receive, server, provider, text)
        if receipt.ignored:
            server.service.events_ignored(provider, receipt.ignored, receipt.ignored_created)
        if receipt.stored:
            server.service.events_stored(provider, receipt.stored, receipt.created)
        return _json(receipt.to_json(), 400 if receipt.rejected else 202)

    return [
        Route(prefix + "{provider}" + suffix, receive, methods=["POST"])
        for prefix in EVENT_ROUTE_PREFIXES
        for suffix in ("", "/{secret:path}")  # a secret may hold "/" (`openssl rand -base64`)
    ]


def _receive(server: Server, provider: str, text: str) -> EventReceipt:
    return receive_events(
        server.state,
        server.config,
        provider,
        text,
        server.clock,
        provider=server.service.provider(provider),
        storing=event_turn(server),
    )


# -- reading -----------------------------------------------------------------------------------


def _reading_routes(server: Server) -> list[Route]:
    def report(only: str | None, with_content: bool) -> dict[str, Any]:
        """The status document; without `with_content`, the last errors' text withheld."""
        require_state(server)
        found = _served_report(server, server.clock.now(), only)
        return (found if with_content else found.errors_withheld()).to_json()

    def health_document(with_content: bool) -> tuple[dict[str, Any], int]:
        """The health document; without `with_content`, what its problems quote withheld."""
        if not server.state.exists():
            return no_state_health(server.state), 503
        found = _served_report(server, server.clock.now())
        shown = found if with_content else found.errors_withheld()
        return shown.health_json(), 200 if found.healthy else 503

    async def status(request: Request) -> Response:
        only = None
        if "provider" in request.path_params:
            only = await provider_of(server, request, ProviderScope.KNOWN)
        return _json(await in_thread(server, report, only, carries_token(server, request)))

    async def health(request: Request) -> Response:
        try:
            document, code = await in_thread(
                server, health_document, carries_token(server, request)
            )
        except HTTPProblem as problem:
            if problem.status != 503:
                raise
            # The store cannot be read: unhealthy, in the document a health check reads.
            failed = str(problem)
            return _json({"healthy": False, "providers": [], "problems": [failed]}, 503)
        return _json(document, code)

    async def providers(request: Request) -> Response:
        return _json(providers_json(server.config))

    async def removals(request: Request) -> Response:
        require_token(server, request)  # the refs a guard blocked are catalog content
        provider = await provider_of(server, request, ProviderScope.KNOWN)
        limit = int_param(request, "limit", 100)
        if limit < 0:
            raise HTTPProblem(400, f"limit: expected 0 or more, got {limit}")
        found = await in_thread(
            server, pending_removals, server.state, server.config, only=provider, limit=limit
        )
        return _json(removals_json(found))

    return [
        Route("/status", status, methods=["GET"]),
        Route("/status/{provider}", status, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/providers", providers, methods=["GET"]),
        Route("/providers/{provider}", status, methods=["GET"]),
        Route("/providers/{provider}/removals", removals, methods=["GET"]),
        # Backstage's incremental-ingestion module's routes, answering our documents:
        Route("/incremental/health", health, methods=["GET"]),
        Route("/incremental/providers", providers, methods=["GET"]),
        Route("/incremental/providers/{provider}", status, methods=["GET"]),
    ]


# -- the operator's commands -------------------------------------------------------------------


def _operator_routes(server: Server) -> list[Route]:
    def refreshed(provider: str) -> dict[str, Any]:
        provider_state = server.service.while_locked(
            lambda: refresh(server.state, provider, server.clock, config=server.config, create=True)
        )
        server.service.wake()
        return refresh_json(provider, provider_state)

    def was_reset(provider: str, purge: bool) -> dict[str, Any]:
        removed = server.service.while_locked(
            lambda: reset(server.state, provider, server.clock, purge=purge, config=server.config)
        )
        server.service.wake()
        return reset_json(provider, forgotten=False, removed=removed)

    def approved(provider: str, cycle: int | None) -> dict[str, Any]:
        try:
            removed, approved = server.service.while_locked(
                lambda: approve_removals(
                    server.state, provider, server.clock, config=server.config, cycle=cycle
                )
            )
        except ConfigError as error:
            if error.path != "--cycle":
                raise
            refused = str(error).removeprefix(f"{error.path}: ")
            raise ConfigError(refused, path="cycle") from None  # the parameter, not the flag
        return approval_json(provider, removed, approved)

    async def refresh_route(request: Request) -> Response:
        require_token(server, request)
        provider = await provider_of(server, request, ProviderScope.CONFIGURED)
        return _json(await as_operator(server, refreshed, provider))

    def reset_route(purge: bool | None) -> Handler:
        async def route(request: Request) -> Response:
            require_token(server, request)
            provider = await provider_of(server, request, ProviderScope.CONFIGURED)
            wanted = purge
            if wanted is None:
                wanted = flag_param(request, "purge")
            return _json(await as_operator(server, was_reset, provider, wanted))

        return route

    async def approve_route(request: Request) -> Response:
        require_token(server, request)
        provider = await provider_of(server, request, ProviderScope.KNOWN)
        cycle = int_param(request, "cycle", 0) if "cycle" in request.query_params else None
        if cycle is not None and cycle < 1:
            raise HTTPProblem(400, f"cycle: {cycle} is not a cycle (they count from 1)")
        return _json(await as_operator(server, approved, provider, cycle))

    return [
        Route("/providers/{provider}/refresh", refresh_route, methods=["POST"]),
        Route("/providers/{provider}/reset", reset_route(None), methods=["POST"]),
        Route("/providers/{provider}/removals/approve", approve_route, methods=["POST"]),
        # The seed's documented routes (?provider=NAME):
        Route("/refresh", refresh_route, methods=["POST"]),
        Route("/reset", reset_route(None), methods=["POST"]),
        # Backstage's incremental-ingestion module's routes:
        Route("/incremental/providers/{provider}/trigger", refresh_route, methods=["POST"]),
        Route("/incremental/providers/{provider}/start", reset_route(False), methods=["POST"]),
        Route("/incremental/providers/{provider}/cancel", reset_route(False), methods=["POST"]),
        Route("/incremental/providers/{provider}", reset_route(True), methods=["DELETE"]),
    ]


# -- the feed ----------------------------------------------------------------------------------


def _feed_routes(server: Server) -> list[Route]:
    def read(work: Callable[..., Any], *args: Any) -> dict[str, Any]:
        with reading(server.state) as store:
            document: dict[str, Any] = work(store, *args).to_json()
            return document

    async def changes(request: Request) -> Response:
        require_token(server, request)
        since = int_param(request, "since", 0)
        limit = int_param(request, "limit", 1000)
        since_at = request.query_params.get("sinceAt") or None
        providers = tuple(server.config.providers)
        return _json(await in_thread(server, read, changes_page, since, limit, since_at, providers))

    async def batch(request: Request) -> Response:
        require_token(server, request)
        refs = json_body(await body_of(request, server.config.serve)).get("refs")
        if not isinstance(refs, list):
            raise HTTPProblem(400, 'expected {"refs": [entity refs]}')
        for number, ref in enumerate(refs):
            check_ref(number, ref)
        return _json(await in_thread(server, read, entities_batch, refs))

    async def entities(request: Request) -> Response:
        require_token(server, request)
        cursor = request.query_params.get("cursor") or None
        limit = int_param(request, "limit", 500)
        providers = tuple(server.config.providers)
        return _json(await in_thread(server, read, entities_page, cursor, limit, providers))

    return [
        Route("/changes", changes, methods=["GET"]),
        Route("/entities/batch", batch, methods=["POST"]),
        Route("/entities", entities, methods=["GET"]),
    ]
