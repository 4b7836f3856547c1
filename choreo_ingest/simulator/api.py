"""The OpenChoreo API as one pure, thread-safe request handler, in either generation.

`SimulatorApi.handle(method, path, query, headers, body)` answers from a `World`, as
`SimulatorOptions.api` says: "v1" (shared/openchoreo-v1-api.md; its routes and pages live in
api_v1.py) or "orgs" (shared/openchoreo-api.md: envelopes, cursor pagination and its legacy first
page, 404 codes; handled here). Both share what sits around the handlers: the public routes,
the OAuth2 token endpoint and bearer check (oauth.py), latency, the rate limit, injected faults
and the counters (metering.py). The loopback server and in-process test transports sit on it.
"""

from __future__ import annotations

import dataclasses
import random
import re
import threading
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from choreo_ingest.clock import Clock, SystemClock
from choreo_ingest.simulator import api_v1
from choreo_ingest.simulator.control import CONTROL_PREFIX, ControlRoutes
from choreo_ingest.simulator.cursors import (
    CursorPosition,
    CursorRejected,
    CursorTooOld,
    decode_cursor,
    encode_cursor,
    listing_id,
)
from choreo_ingest.simulator.metering import (
    LoggedRequest,
    RequestMeter,
    RouteFamily,
    SimulatorStats,
)
from choreo_ingest.simulator.oauth import TOKEN_PATH, TokenAuthority
from choreo_ingest.simulator.options import SimulatorOptions
from choreo_ingest.simulator.responses import (
    JSON_HEADERS,
    ApiError,
    SimResponse,
    dump,
    json_response,
)
from choreo_ingest.simulator.webhooks import EventForwarder
from choreo_ingest.simulator.world import NotFound, ParentKey, World

__all__ = ["SimResponse", "SimulatorApi", "SimulatorOptions"]

Query = Mapping[str, list[str]]

NOT_FOUND_CODES: Final = {
    "organization": "ORGANIZATION_NOT_FOUND",
    "project": "PROJECT_NOT_FOUND",
    "component": "COMPONENT_NOT_FOUND",
}
SERVER_ERROR_STATUSES: Final = (500, 502, 503, 504)
INTEGER: Final = re.compile(r"^-?[0-9]+$")
ROUTE_KINDS: Final = (
    "list_orgs", "get_org", "list_projects", "get_project", "list_components", "get_component",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _Request:
    method: str
    route: str
    family: RouteFamily
    names: tuple[str, ...]
    query: Query
    headers: Mapping[str, str]
    body: bytes


class SimulatorApi:
    """Answers OpenChoreo API requests from a `World`; safe to call from many threads.

    A request meets the checks in the order a gateway in front of the server would apply them.
    orgs: /health (200, no auth) -> rate limit (429) -> token (401) -> `forbidden` (403) ->
    injected server error (5xx) -> method (405) -> route (404) -> limit/cursor (400, 410).
    v1: public routes (no auth) -> rate limit (429) -> route (404), method (405), `limit`
    format (400, text) -> token (401) -> injected server error (5xx) -> the handler (403,
    404, 500 for a bad cursor). The token endpoint (with OAuth configured) takes no token.
    """

    def __init__(
        self,
        world: World,
        options: SimulatorOptions | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.world = world
        self._options = options or SimulatorOptions()
        self._clock: Clock = clock or SystemClock()
        self._meter = RequestMeter(self._clock)
        self._faults = random.Random(self._options.fault_seed)
        self._faults_lock = threading.Lock()
        self._tokens = TokenAuthority(self._clock)
        self._v1 = api_v1.V1Routes(world, self._clock)
        self._forwarder: EventForwarder | None = None
        if self._options.webhooks:
            self._forwarder = EventForwarder(self._options.webhooks)
        self._control = ControlRoutes(
            world,
            self._snapshot,
            self.reset_stats,
            lambda: self._options.api,
            forwarder=lambda: self._forwarder,
        )

    @property
    def options(self) -> SimulatorOptions:
        return self._options

    def update_options(self, **changes: Any) -> SimulatorOptions:
        """Change options between (or during) requests, e.g. switch faults on mid-soak; new
        `webhooks` replace the forwarder (the events the old one still held are dropped)."""
        with self._faults_lock:
            old = self._options
            self._options = dataclasses.replace(self._options, **changes)
            if "fault_seed" in changes:
                self._faults.seed(self._options.fault_seed)
            if self._options.webhooks != old.webhooks:
                if self._forwarder is not None:
                    self._forwarder.close()
                self._forwarder = None
                if self._options.webhooks:
                    self._forwarder = EventForwarder(self._options.webhooks)
        return self._options

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot of the counters."""
        return self._snapshot()

    @property
    def request_log(self) -> list[LoggedRequest]:
        return self._meter.request_log()

    def reset_stats(self) -> None:
        self._meter.reset()
        if self._forwarder is not None:
            self._forwarder.reset_counts()

    def wait_for_webhooks(self, timeout: float | None = None) -> bool:
        """Whether every event queued so far was posted (or failed) within `timeout` seconds;
        True at once without webhooks."""
        forwarder = self._forwarder
        return forwarder is None or forwarder.wait_idle(timeout)

    def close(self) -> None:
        """Stop the webhook forwarder, if any (events not yet posted are dropped)."""
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.close()

    def _snapshot(self) -> SimulatorStats:
        stats = self._meter.snapshot()
        forwarder = self._forwarder
        if forwarder is None:
            return stats
        return dataclasses.replace(stats, **vars(forwarder.counts()))

    def handle(
        self,
        method: str,
        path: str,
        query: Query | str,
        headers: Mapping[str, str],
        body: bytes = b"",
    ) -> SimResponse:
        """Answer one request; `body` matters only to the token endpoint."""
        options = self._options
        params = parse_qs(query, keep_blank_values=True) if isinstance(query, str) else query
        path = path.split("?", 1)[0]
        lowered = {key.lower(): value for key, value in headers.items()}
        if options.control and path.startswith(CONTROL_PREFIX):
            # The debug routes change the world: they need what the API needs, when it needs any.
            unauthorized = self._tokens.check(options, lowered.get("authorization"))
            if unauthorized is not None:
                return unauthorized
            status, answer = self._control.answer(method, path, params)
            return SimResponse(status, dict(JSON_HEADERS), answer)
        request = _classify(options, method, path, params, lowered, body)
        self._meter.enter(request.route, request.family)
        response = SimResponse(500, dict(JSON_HEADERS), b"")
        expired = False
        try:
            if options.latency > 0:
                self._clock.sleep(options.latency)
            response = self._respond(options, request)
        except ApiError as error:
            expired = error.cursor_expired
            if options.api == "v1":
                response = api_v1.error_response(error)
            else:
                response = _error_response(error)
        finally:
            logged = None
            if options.log_requests:
                query_copy = {key: list(values) for key, values in params.items()}
                has_auth = "authorization" in lowered
                logged = LoggedRequest(method, path, query_copy, has_auth, response.status)
            self._meter.leave(response.status, logged, expired)
        return response

    def _respond(self, options: SimulatorOptions, request: _Request) -> SimResponse:
        if request.family == "token":
            return self._tokens.token_response(
                options, request.method, request.body, request.headers
            )
        v1_route = api_v1.Route(request.route, request.names)
        if request.family == "public":
            if options.api == "orgs":
                return SimResponse(200, {"Content-Type": "text/plain"}, b"OK")
            return self._v1.public(v1_route, options, request.headers)
        self._admit(options)
        if options.api == "v1":
            early = self._v1.precheck(request.method, v1_route, request.query)
            if early is not None:
                return early
        unauthorized = self._tokens.check(options, request.headers.get("authorization"))
        if unauthorized is not None:
            return unauthorized
        if options.api == "v1":
            self._maybe_fail(options)
            return self._v1.respond(v1_route, request.query, options)
        if options.forbidden:
            raise ApiError(403, "FORBIDDEN", "the caller may not read this resource")
        self._maybe_fail(options)
        if request.method.upper() != "GET":
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{request.method} is not supported here")
        if request.route == "unknown":
            raise ApiError(404, "NOT_FOUND", "no such route")
        try:
            if request.route.startswith("list_"):
                return _ok(self._list(options, request.names, request.query))
            return _ok(self._get(request.names, request.query))
        except NotFound as missing:
            raise ApiError(404, NOT_FOUND_CODES[missing.kind], str(missing)) from missing

    def _admit(self, options: SimulatorOptions) -> None:
        retry_after = self._meter.admit(options.rate_limit_rps)
        if retry_after is not None:
            raise ApiError(
                429,
                "TOO_MANY_REQUESTS",
                "rate limit exceeded",
                headers={"Retry-After": str(retry_after)},
            )

    def _maybe_fail(self, options: SimulatorOptions) -> None:
        if options.error_rate <= 0:
            return
        with self._faults_lock:
            failing = self._faults.random() < options.error_rate
            status = self._faults.choice(SERVER_ERROR_STATUSES)
        if failing:
            message = "Internal server error" if options.api == "v1" else "injected server error"
            raise ApiError(status, "INTERNAL_ERROR", message)

    def _get(self, names: tuple[str, ...], query: Query) -> dict[str, Any]:
        if len(names) == 1:
            return self.world.org(names[0])
        if len(names) == 2:
            return self.world.project(names[0], names[1])
        detail = self.world.component(names[0], names[1], names[2])
        includes = {part for value in query.get("include", []) for part in value.split(",")}
        if "workload" not in includes:
            detail.pop("workload", None)
        return detail

    def _list(self, options: SimulatorOptions, parent: ParentKey, query: Query) -> dict[str, Any]:
        limit = _limit(query, options)
        cursor = _first(query, "cursor") or None
        cursor_mode = not options.no_cursor_support and (
            cursor is not None
            or _first(query, "pagination") == "cursor"
            or options.cursor_first_page_always
        )
        if not cursor_mode:
            items = self.world.list_all(parent)
            return {"items": items, "totalCount": len(items), "page": 1, "pageSize": len(items)}
        listing = listing_id(parent)
        now = self._clock.now()
        after, issued_at = None, now
        if cursor is not None:
            self.world.require_listing(parent)  # a deleted parent is a 404, whatever the cursor
            position = _decode(cursor, listing, now, options.cursor_ttl)
            after = position.after
            if options.cursor_ttl_from_listing_start:
                issued_at = position.issued_at
        page = self.world.page(parent, after, limit)
        next_cursor = ""
        if page.has_more and page.last_name is not None:
            next_cursor = encode_cursor(listing, page.last_name, issued_at)
        if options.repeat_cursor_bug and cursor is not None:
            next_cursor = cursor
        return {"items": page.items, "nextCursor": next_cursor}


def _classify(
    options: SimulatorOptions,
    method: str,
    path: str,
    query: Query,
    headers: Mapping[str, str],
    body: bytes,
) -> _Request:
    """Which route a request is for, and its family (api, public or token)."""
    family: RouteFamily = "api"
    names: tuple[str, ...] = ()
    if options.oauth and path == TOKEN_PATH:
        route, family = "token", "token"
    elif options.api == "v1":
        found = api_v1.route(path)
        route, names = found.kind, found.names
        family = "public" if found.public else "api"
    else:
        route, names = _route(path, options.base_path)
        family = "public" if route == "health" else "api"
    return _Request(method, route, family, names, query, headers, body)


def _route(path: str, base_path: str) -> tuple[str, tuple[str, ...]]:
    """The org-era route kind and the names in the path (org, project, component)."""
    base = base_path.rstrip("/")
    if path in ("/health", f"{base}/health"):
        return "health", ()
    if not path.startswith(f"{base}/"):
        return "unknown", ()
    parts = [unquote(part) for part in path[len(base) + 1 :].rstrip("/").split("/")]
    if "" in parts or parts[0] != "orgs" or len(parts) > 6:
        return "unknown", ()
    names = tuple(parts[1::2])
    collections = parts[2::2]
    if collections != ["projects", "components"][: len(collections)]:
        return "unknown", ()
    return ROUTE_KINDS[len(parts) - 1], names


def _first(query: Query, key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _limit(query: Query, options: SimulatorOptions) -> int:
    raw = _first(query, "limit")
    if raw is None:
        return options.default_limit
    if not INTEGER.match(raw) or int(raw) <= 0:
        raise ApiError(400, "INVALID_INPUT", f"limit must be a positive integer, got {raw!r}")
    return min(int(raw), options.max_limit)


def _decode(cursor: str, listing: str, now: float, ttl: float | None) -> CursorPosition:
    try:
        return decode_cursor(cursor, listing, now, ttl)
    except CursorRejected as error:
        raise ApiError(400, "INVALID_CURSOR_FORMAT", str(error)) from error
    except CursorTooOld as error:
        metadata = {"retryable": True, "code": "CONTINUE_TOKEN_EXPIRED"}
        raise ApiError(410, "CONTINUE_TOKEN_EXPIRED", str(error), metadata=metadata) from error


def _ok(data: Any) -> SimResponse:
    return json_response(200, {"success": True, "data": data})


def _error_response(error: ApiError) -> SimResponse:
    envelope: dict[str, Any] = {"success": False, "error": error.message, "code": error.code}
    if error.metadata is not None:
        envelope["metadata"] = error.metadata
    return SimResponse(error.status, {**JSON_HEADERS, **error.headers}, dump(envelope))
