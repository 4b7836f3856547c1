"""The OpenChoreo API contract as one pure, thread-safe request handler.

`SimulatorApi.handle(method, path, query, headers)` answers the routes of
shared/openchoreo-api.md from a `World`: envelopes, cursor pagination and its legacy first
page, auth, 404 codes, and the faults real servers show (5xx, 429, expired and repeated
cursors, hidden items). The loopback server and in-process test transports both sit on it.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from choreo_ingest.clock import Clock, SystemClock
from choreo_ingest.simulator.control import CONTROL_PREFIX, ControlRoutes
from choreo_ingest.simulator.cursors import (
    CursorExpired,
    CursorPosition,
    CursorRejected,
    decode_cursor,
    encode_cursor,
    listing_id,
)
from choreo_ingest.simulator.metering import (
    LoggedRequest,
    RequestMeter,
    SimulatorStats,
)
from choreo_ingest.simulator.world import NotFound, ParentKey, World

Query = Mapping[str, list[str]]

NOT_FOUND_CODES: Final = {
    "organization": "ORGANIZATION_NOT_FOUND",
    "project": "PROJECT_NOT_FOUND",
    "component": "COMPONENT_NOT_FOUND",
}
SERVER_ERROR_STATUSES: Final = (500, 502, 503, 504)
INTEGER: Final = re.compile(r"^-?[0-9]+$")
JSON_HEADERS: Final = {"Content-Type": "application/json"}
ROUTE_KINDS: Final = (
    "list_orgs", "get_org", "list_projects", "get_project", "list_components", "get_component",
)  # fmt: skip


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulated server behaves; every fault is off by default."""

    base_path: str = "/api/v1"
    token: str | None = None
    """When set, every request but /health needs `Authorization: Bearer <token>`."""
    forbidden: bool = False
    """Answer every authenticated request with 403 FORBIDDEN."""
    default_limit: int = 16
    max_limit: int = 1024
    cursor_ttl: float | None = 300.0
    """Seconds a cursor stays valid (None: forever); older cursors get 410."""
    cursor_ttl_from_listing_start: bool = False
    """Count expiry from the listing's first page (as Kubernetes does) instead of each cursor."""
    cursor_first_page_always: bool = False
    """Serve the first page in cursor mode even without `pagination=cursor`."""
    no_cursor_support: bool = False
    """Never paginate: every list call gets the legacy envelope with all items."""
    repeat_cursor_bug: bool = False
    """A page requested with a cursor hands back that same cursor again."""
    error_rate: float = 0.0
    """Fraction of requests answered 500/502/503/504 INTERNAL_ERROR."""
    rate_limit_rps: float | None = None
    """Requests above this many per (sliding) second get 429 with `Retry-After`."""
    latency: float = 0.0
    """Seconds slept (through the clock) before answering."""
    fault_seed: int = 0
    log_requests: bool = False
    """Keep a `LoggedRequest` for every request (see `SimulatorApi.request_log`)."""
    control: bool = False
    """Serve the `/_control/*` debug routes (stats, world dump, mutations; see control.py)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if self.latency < 0:
            raise ValueError("latency must not be negative")
        if self.rate_limit_rps is not None and self.rate_limit_rps < 1:
            raise ValueError("rate_limit_rps must be at least 1")
        if self.cursor_ttl is not None and self.cursor_ttl < 0:
            raise ValueError("cursor_ttl must not be negative")
        if not 1 <= self.default_limit <= self.max_limit:
            raise ValueError("default_limit must be between 1 and max_limit")
        if not self.base_path.startswith("/"):
            raise ValueError("base_path must start with '/'")


@dataclass(frozen=True)
class SimResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ApiError(Exception):
    """An error answered with the usual envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.metadata = metadata
        self.headers = headers or {}
        super().__init__(message)


class SimulatorApi:
    """Answers OpenChoreo API requests from a `World`; safe to call from many threads.

    A request meets the checks in the order a gateway in front of the server would apply them:
    /health (always 200, no auth) -> rate limit (429) -> token (401) -> `forbidden` (403) ->
    injected server error (5xx) -> method (405) -> route (404) -> limit/cursor (400, 410).
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
        self._control = ControlRoutes(world, self._meter.snapshot, self._meter.reset)

    @property
    def options(self) -> SimulatorOptions:
        return self._options

    def update_options(self, **changes: Any) -> SimulatorOptions:
        """Change options between (or during) requests, e.g. switch faults on mid-soak."""
        with self._faults_lock:
            self._options = dataclasses.replace(self._options, **changes)
            if "fault_seed" in changes:
                self._faults.seed(self._options.fault_seed)
        return self._options

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot of the counters."""
        return self._meter.snapshot()

    @property
    def request_log(self) -> list[LoggedRequest]:
        return self._meter.request_log()

    def reset_stats(self) -> None:
        self._meter.reset()

    def handle(
        self,
        method: str,
        path: str,
        query: Query | str,
        headers: Mapping[str, str],
    ) -> SimResponse:
        options = self._options
        params = parse_qs(query, keep_blank_values=True) if isinstance(query, str) else query
        if options.control and path.startswith(CONTROL_PREFIX):
            status, body = self._control.answer(method, path, params)
            return SimResponse(status, dict(JSON_HEADERS), body)
        headers = {key.lower(): value for key, value in headers.items()}
        route, names = _route(path, options.base_path)
        self._meter.enter(route)
        response = SimResponse(500, dict(JSON_HEADERS), b"")
        try:
            if options.latency > 0:
                self._clock.sleep(options.latency)
            response = self._respond(options, method, route, names, params, headers)
        except ApiError as error:
            response = _error_response(error)
        finally:
            logged = None
            if options.log_requests:
                query_copy = {key: list(values) for key, values in params.items()}
                has_auth = "authorization" in headers
                logged = LoggedRequest(method, path, query_copy, has_auth, response.status)
            self._meter.leave(response.status, logged)
        return response

    def _respond(
        self,
        options: SimulatorOptions,
        method: str,
        route: str,
        names: tuple[str, ...],
        query: Query,
        headers: Mapping[str, str],
    ) -> SimResponse:
        if route == "health":
            return SimResponse(200, {"Content-Type": "text/plain"}, b"OK")
        retry_after = self._meter.admit(options.rate_limit_rps)
        if retry_after is not None:
            raise ApiError(
                429,
                "TOO_MANY_REQUESTS",
                "rate limit exceeded",
                headers={"Retry-After": str(retry_after)},
            )
        if options.token is not None:
            unauthorized = _check_token(headers.get("authorization"), options.token)
            if unauthorized is not None:
                return unauthorized
        if options.forbidden:
            raise ApiError(403, "FORBIDDEN", "the caller may not read this resource")
        self._maybe_fail(options.error_rate)
        if method.upper() != "GET":
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not supported here")
        if route == "unknown":
            raise ApiError(404, "NOT_FOUND", "no such route")
        try:
            if route.startswith("list_"):
                return _ok(self._list(options, names, query))
            return _ok(self._get(names, query))
        except NotFound as missing:
            raise ApiError(404, NOT_FOUND_CODES[missing.kind], str(missing)) from missing

    def _maybe_fail(self, error_rate: float) -> None:
        if error_rate <= 0:
            return
        with self._faults_lock:
            failing = self._faults.random() < error_rate
            status = self._faults.choice(SERVER_ERROR_STATUSES)
        if failing:
            raise ApiError(status, "INTERNAL_ERROR", "injected server error")

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


def _route(path: str, base_path: str) -> tuple[str, tuple[str, ...]]:
    """The route kind and the names in the path (org, project, component)."""
    path = path.split("?", 1)[0]
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
    except CursorExpired as error:
        metadata = {"retryable": True, "code": "CONTINUE_TOKEN_EXPIRED"}
        raise ApiError(410, "CONTINUE_TOKEN_EXPIRED", str(error), metadata=metadata) from error


def _check_token(authorization: str | None, token: str) -> SimResponse | None:
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if not presented.strip():
        return _unauthorized("MISSING_TOKEN", "a bearer token is required")
    valid = scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )
    return None if valid else _unauthorized("INVALID_TOKEN", "the bearer token is not valid")


def _unauthorized(error: str, message: str) -> SimResponse:
    body = json.dumps({"error": error, "message": message}).encode()
    return SimResponse(401, {**JSON_HEADERS, "WWW-Authenticate": "Bearer"}, body)


def _ok(data: Any) -> SimResponse:
    return SimResponse(200, dict(JSON_HEADERS), _dump({"success": True, "data": data}))


def _error_response(error: ApiError) -> SimResponse:
    envelope: dict[str, Any] = {"success": False, "error": error.message, "code": error.code}
    if error.metadata is not None:
        envelope["metadata"] = error.metadata
    return SimResponse(error.status, {**JSON_HEADERS, **error.headers}, _dump(envelope))


def _dump(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
