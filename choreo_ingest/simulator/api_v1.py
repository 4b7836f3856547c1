"""The OpenChoreo v1 API (shared/openchoreo-v1-api.md) over a `World`: routes, pages, errors.

`SimulatorApi` runs what both generations share (latency, rate limit, auth, faults, metering)
and hands v1 requests here twice: `precheck` answers what the router and the parameter binding
answer before auth (unknown route 404, method 405, a non-integer `limit` 400, all text/plain),
and `respond` answers the rest.

    GET /api/v1/namespaces[/{ns}]                           limit, cursor
    GET /api/v1/namespaces/{ns}/projects[/{project}]        limit, cursor
    GET /api/v1/namespaces/{ns}/components[/{component}]    limit, cursor, project
    GET /api/v1/namespaces/{ns}/workloads[/{workload}]      limit, cursor, component
    GET /health  /ready  /version  /.well-known/oauth-protected-resource   (public, no auth)

A list answers `{"items": [...], "pagination": {"nextCursor": "..."}}`, with `"pagination": {}`
on its last page. `limit` defaults to 20 and is clamped to 100; 0 or less means the default.
Pages are refilled past hidden items. A bad or expired cursor is a 500 INTERNAL_ERROR. A
`project` filter naming no project is a 404; a `component` filter naming no component lists
nothing; the children of a missing namespace list as nothing. `labelSelector` is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from choreo_ingest.clock import Clock
from choreo_ingest.simulator import oauth
from choreo_ingest.simulator.cursors import (
    CursorPosition,
    CursorRejected,
    CursorTooOld,
    decode_cursor,
    encode_cursor,
    listing_id,
)
from choreo_ingest.simulator.options import SimulatorOptions
from choreo_ingest.simulator.responses import (
    ApiError,
    SimResponse,
    json_response,
    text_response,
)
from choreo_ingest.simulator.world import Hidden, NotFound, V1Page, World

Query = Mapping[str, list[str]]

API_ROOT: Final = "/api/v1"
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
INTEGER: Final = re.compile(r"^[+-]?[0-9]+$")
PUBLIC_ROUTES: Final = {
    "/health": "health",
    "/ready": "ready",
    "/version": "version",
    "/.well-known/oauth-protected-resource": "oauth_protected_resource",
}
COLLECTIONS: Final = {"projects": "project", "components": "component", "workloads": "workload"}
FILTERS: Final = {"list_components": "project", "list_workloads": "component"}
NOT_FOUND_MESSAGES: Final = {
    "organization": "Namespace not found",
    "project": "Project not found",
    "component": "Component not found",
    "workload": "Workload not found",
}
FORBIDDEN_MESSAGE: Final = "You do not have permission to perform this operation"
VERSION: Final = {
    "name": "openchoreo-api",
    "version": "v1.2.3",
    "gitRevision": "5f1c0de4a9b2e7d3c6a8f0b1e2d3c4b5a6f7e8d9",
    "buildTime": "2026-01-15T10:00:00Z",
    "goOS": "linux",
    "goArch": "amd64",
    "goVersion": "go1.24.6",
}


@dataclass(frozen=True)
class Route:
    kind: str
    """`list_namespaces`, `get_namespace`, ..., `get_workload`, a public kind, or `unknown`."""
    names: tuple[str, ...] = ()
    """The namespace, then the resource's name, as the path gives them."""

    @property
    def public(self) -> bool:
        return self.kind in PUBLIC_ROUTES.values()


def route(path: str) -> Route:
    """The v1 route a path names (query string excluded)."""
    if path in PUBLIC_ROUTES:
        return Route(PUBLIC_ROUTES[path])
    if not path.startswith(f"{API_ROOT}/"):
        return Route("unknown")
    parts = [unquote(part) for part in path[len(API_ROOT) + 1 :].rstrip("/").split("/")]
    if "" in parts or parts[0] != "namespaces" or len(parts) > 4:
        return Route("unknown")
    if len(parts) == 1:
        return Route("list_namespaces")
    if len(parts) == 2:
        return Route("get_namespace", (parts[1],))
    if parts[2] not in COLLECTIONS:
        return Route("unknown")
    if len(parts) == 3:
        return Route(f"list_{parts[2]}", (parts[1],))
    return Route(f"get_{COLLECTIONS[parts[2]]}", (parts[1], parts[3]))


class V1Routes:
    """Answers v1 requests from a `World`; thread-safe (the world locks)."""

    def __init__(self, world: World, clock: Clock) -> None:
        self._world = world
        self._clock = clock

    def precheck(self, method: str, found: Route, query: Query) -> SimResponse | None:
        """What the router and parameter binding answer before auth, if anything."""
        if found.kind == "unknown":
            return text_response(404, "404 page not found\n")
        if method.upper() not in ("GET", "HEAD"):
            return text_response(405, "Method Not Allowed\n", {"Allow": "GET, HEAD"})
        raw = _first(query, "limit")
        if found.kind.startswith("list_") and raw is not None and not INTEGER.match(raw):
            return text_response(
                400,
                f"Invalid format for parameter limit: query parameter 'limit' must be an "
                f"integer, got {raw!r}",
            )
        return None

    def public(
        self, found: Route, options: SimulatorOptions, headers: Mapping[str, str]
    ) -> SimResponse:
        if found.kind == "health":
            return text_response(200, "OK")
        if found.kind == "ready":
            return text_response(200, "Ready")
        if found.kind == "version":
            return json_response(200, VERSION)
        return json_response(200, oauth.protected_resource(options, headers))

    def respond(self, found: Route, query: Query, options: SimulatorOptions) -> SimResponse:
        """The answer to an authorized request on a known route; raises ApiError."""
        if found.kind.startswith("get_"):
            return json_response(200, self._get(found, options))
        return json_response(200, self._list(found, query, options))

    def _get(self, found: Route, options: SimulatorOptions) -> dict[str, Any]:
        view = self._world.v1
        getters: dict[str, Callable[..., dict[str, Any]]] = {
            "get_namespace": view.namespace,
            "get_project": view.project,
            "get_component": view.component,
            "get_workload": view.workload,
        }
        if options.forbidden:
            raise ApiError(403, "FORBIDDEN", FORBIDDEN_MESSAGE)
        try:
            return getters[found.kind](*found.names)
        except NotFound as missing:
            raise ApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGES[missing.kind]) from missing
        except Hidden as hidden:
            raise ApiError(403, "FORBIDDEN", FORBIDDEN_MESSAGE) from hidden

    def _list(self, found: Route, query: Query, options: SimulatorOptions) -> dict[str, Any]:
        limit = _limit(query)
        cursor = _first(query, "cursor") or None
        filter_key = FILTERS.get(found.kind)
        filter_value = (_first(query, filter_key) or None) if filter_key else None
        listing = listing_id(("v1", found.kind, *found.names, filter_value or ""))
        now = self._clock.now()
        after, issued_at = None, now
        if cursor is not None:
            position = _decode(cursor, listing, now, options.cursor_ttl)
            after = position.after
            if options.cursor_ttl_from_listing_start:
                issued_at = position.issued_at
        if options.forbidden:
            page = V1Page([], None, False)  # everything filtered out
        else:
            page = self._page(found, after, limit, filter_value)
        next_cursor = None
        if page.has_more and page.last_name is not None:
            next_cursor = encode_cursor(listing, page.last_name, issued_at)
        if options.repeat_cursor_bug and cursor is not None:
            next_cursor = cursor
        pagination = {"nextCursor": next_cursor} if next_cursor else {}
        return {"items": page.items, "pagination": pagination}

    def _page(self, found: Route, after: str | None, limit: int, only: str | None) -> V1Page:
        view = self._world.v1
        if found.kind == "list_namespaces":
            return view.namespaces(after, limit)
        namespace = found.names[0]
        if found.kind == "list_projects":
            return view.projects(namespace, after, limit)
        if found.kind == "list_workloads":
            return view.workloads(namespace, after, limit, only)
        try:
            return view.components(namespace, after, limit, only)
        except NotFound as missing:  # the project filter names no project
            raise ApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGES[missing.kind]) from missing


def error_response(error: ApiError) -> SimResponse:
    """A handler error in v1's shape: `{"error": message, "code": CODE}`."""
    return json_response(error.status, {"error": error.message, "code": error.code}, error.headers)


def server_error(status: int) -> ApiError:
    return ApiError(status, "INTERNAL_ERROR", "Internal server error")


def _limit(query: Query) -> int:
    """The page size: default 20, clamped to 100; 0 or less means the default."""
    raw = _first(query, "limit")
    value = int(raw) if raw is not None else 0
    return DEFAULT_LIMIT if value <= 0 else min(value, MAX_LIMIT)


def _decode(cursor: str, listing: str, now: float, ttl: float | None) -> CursorPosition:
    try:
        return decode_cursor(cursor, listing, now, ttl)
    except CursorRejected as error:
        raise server_error(500) from error
    except CursorTooOld as error:
        expired = ApiError(500, "INTERNAL_ERROR", "Internal server error", cursor_expired=True)
        raise expired from error


def _first(query: Query, key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None
