"""A clean-room organization-era OpenChoreo API server, written from `openchoreo-api.md` alone
(not from choreo-ingest's own simulator), for `test_cleanroom_orgs_*.py`; the world it serves
comes from `cleanroom_orgs_world.py`.

Where the document leaves room, it takes the least convenient legal reading:

- list routes serve the legacy, unpaginated envelope on a first page that does not ask for
  `pagination=cursor`; the cursor envelope is `{success, data: {items, nextCursor}}`, no more;
- `limit` defaults to 16, is clamped to 1024; `limit <= 0` or a non-integer is 400 `INVALID_INPUT`;
- cursors are opaque: standard base64 (with `+`, `/`, `=`) of a Kubernetes-like continue token
  and a MAC, close to 512 characters, bound to one listing; a cursor of another listing, a forged
  or truncated one is 400 `INVALID_CURSOR_FORMAT`; a cursor older than the last compaction is 410
  `CONTINUE_TOKEN_EXPIRED`;
- items the caller may not see are filtered out *after* paging, so pages come back short or empty
  with a non-empty `nextCursor`; a page that ends exactly at the last item still hands out a
  cursor, whose page is then empty with `nextCursor: ""`; an empty page's `items` is `null` (as Go
  marshals a nil slice);
- order is by name, and the listing carries on after the last name served (items added or deleted
  between pages show up or disappear);
- endpoints only come from the detail route with `include=workload`;
- 401 answers `{error, message}` (not the envelope); other errors `{success: false, error, code}`;
  a route the server does not have answers Go's text `404 page not found`.

Faults are injected through `Server.rules`: callables that see each request before it is served and
may answer it instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cleanroom_orgs_world import Key, World

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaG9yZW8taW5nZXN0In0.c2lnbmF0dXJlLWNsZWFucm9vbQ"
DEFAULT_LIMIT = 16
MAX_LIMIT = 1024
MAX_CURSOR_CHARS = 512
PREFIX = "/api/v1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


Rule = Callable[["Server", Request], Answer | None]


class Server:
    """The API on a loopback port. `world` may be changed between (and during) requests."""

    def __init__(self, world: World, *, token: str | None = TOKEN) -> None:
        self.world = world
        self.token = token
        self.lock = threading.RLock()
        self.secret = b"cleanroom-secret-1"
        self.resource_version = 1000
        self.compacted_below = 0
        self.requests: list[Request] = []
        self.answers: list[tuple[Request, int, Any]] = []
        self.rules: list[Rule] = []
        self.legacy_unless_asked = True
        """A first page without `pagination=cursor` is served unpaginated."""
        self.never_paginates = False
        """A server that ignores `pagination=cursor` (and serves everything in one legacy page)."""
        self.latency = 0.0
        """Seconds each answer takes (requests are served in parallel)."""
        self.repeats_cursor = False
        """The bug the document warns of: the same cursor handed back again."""
        handler = _handler_for(self)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        port = self._http.server_address[1]
        return f"http://127.0.0.1:{port}{PREFIX}"

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    # -- knobs -----------------------------------------------------------------------------

    def expire_cursors(self) -> None:
        """Kubernetes compacted: every cursor handed out so far answers 410."""
        with self.lock:
            self.resource_version += 1
            self.compacted_below = self.resource_version

    def restart_with_new_key(self) -> None:
        """The server restarted: cursors it handed out before no longer decode (400)."""
        with self.lock:
            self.secret = b"cleanroom-secret-" + str(self.resource_version).encode()
            self.resource_version += 1

    def list_requests(self, listing: str | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if _listing_of(r.path) is not None
            and (listing is None or _listing_of(r.path) == listing)
        ]

    def statuses(self) -> list[int]:
        return [status for _, status, _ in self.answers]

    # -- serving -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        if self.latency:
            time.sleep(self.latency)
        with self.lock:
            self.requests.append(request)
            answer = self._answer(request)
            self.answers.append((request, answer.status, answer.body))
            return answer

    def _answer(self, request: Request) -> Answer:
        path = request.path
        if path == "/health":
            return Answer(200, {"status": "ok"})
        if self.token is not None:
            auth = request.authorization
            if not auth:
                return Answer(
                    401, {"error": "MISSING_TOKEN", "message": "authorization header is required"}
                )
            scheme, _, value = auth.partition(" ")
            if scheme != "Bearer" or value != self.token:
                return Answer(
                    401, {"error": "INVALID_TOKEN", "message": "token is invalid or expired"}
                )
        for rule in list(self.rules):
            answer = rule(self, request)
            if answer is not None:
                return answer
        if request.method != "GET":
            return error(405, "METHOD_NOT_ALLOWED", "method not allowed")
        if not path.startswith(PREFIX + "/"):
            return NO_ROUTE
        parts = [unquote(p) for p in path[len(PREFIX) + 1 :].split("/")]
        if parts[0] != "orgs":
            return NO_ROUTE
        world = self.world
        if len(parts) == 1:
            return self._list(
                request, "orgs", [(k[0], world.orgs[k], k) for k in sorted(world.orgs)]
            )
        org = parts[1]
        if (org,) not in world.orgs or (org,) in world.hidden:
            return error(404, "ORGANIZATION_NOT_FOUND", f"organization {org} not found")
        if len(parts) == 2:
            return Answer(200, {"success": True, "data": dict(world.orgs[(org,)])})
        if parts[2] != "projects":
            return error(404, "NOT_FOUND", "no such route")
        if len(parts) == 3:
            items = [(k[1], v, k) for k, v in sorted(world.projects.items()) if k[0] == org]
            return self._list(request, "/".join(parts), items)
        project = parts[3]
        if (org, project) not in world.projects or (org, project) in world.hidden:
            return error(404, "PROJECT_NOT_FOUND", f"project {project} not found")
        if len(parts) == 4:
            return Answer(200, {"success": True, "data": dict(world.projects[(org, project)])})
        if parts[4] != "components":
            return error(404, "NOT_FOUND", "no such route")
        if len(parts) == 5:
            items = [
                (k[2], _list_item(v), k)
                for k, v in sorted(world.components.items())
                if k[:2] == (org, project)
            ]
            return self._list(request, "/".join(parts), items)
        if len(parts) == 6:
            key = (org, project, parts[5])
            if key not in world.components or key in world.hidden:
                return error(404, "COMPONENT_NOT_FOUND", f"component {parts[5]} not found")
            include = [i.strip() for i in (request.param("include") or "").split(",") if i.strip()]
            return Answer(200, {"success": True, "data": _detail(world.components[key], include)})
        return error(404, "NOT_FOUND", "no such route")

    def _list(
        self, request: Request, listing: str, items: list[tuple[str, dict[str, Any], Key]]
    ) -> Answer:
        raw_limit = request.param("limit")
        if raw_limit is None:
            limit = DEFAULT_LIMIT
        else:
            try:
                limit = int(raw_limit)
            except ValueError:
                return error(400, "INVALID_INPUT", f"invalid limit {raw_limit!r}")
            if limit <= 0:
                return error(400, "INVALID_INPUT", "limit must be positive")
            limit = min(limit, MAX_LIMIT)
        cursor = request.param("cursor") or None
        hidden = self.world.hidden
        if cursor is None and (
            self.never_paginates
            or (self.legacy_unless_asked and request.param("pagination") != "cursor")
        ):
            visible = [dict(item) for _, item, key in items if key not in hidden]
            return Answer(
                200,
                {
                    "success": True,
                    "data": {
                        "items": visible,
                        "totalCount": len(visible),
                        "page": 1,
                        "pageSize": len(visible),
                    },
                },
            )
        if cursor is None:
            version, start = self.resource_version, None
        else:
            decoded = self._decode(cursor, listing)
            if isinstance(decoded, Answer):
                return decoded
            version, start = decoded
        remaining = [entry for entry in items if start is None or entry[0] > start]
        taken = remaining[:limit]
        more = len(remaining) > limit
        if more or (taken and len(taken) == limit):
            next_cursor = self._encode(listing, version, taken[-1][0])
        else:
            next_cursor = ""
        if self.repeats_cursor and cursor is not None and next_cursor:
            next_cursor = cursor
        shown = [dict(item) for _, item, key in taken if key not in hidden]
        return Answer(
            200, {"success": True, "data": {"items": shown or None, "nextCursor": next_cursor}}
        )

    def _encode(self, listing: str, version: int, last: str) -> str:
        fields = {"v": "meta.k8s.io/v1", "rv": version, "start": last + "\x00", "key": listing}
        token = json.dumps(fields, separators=(",", ":"))
        # Padded so that cursors come close to the documented 512 characters.
        room = (MAX_CURSOR_CHARS - 8) * 3 // 4 - 18 - len(token) - len(',"pad":""')
        fields["pad"] = "p" * max(room, 0)
        token = json.dumps(fields, separators=(",", ":"))
        mac = hmac.new(self.secret, token.encode(), hashlib.sha256).digest()[:18]
        encoded = base64.b64encode(mac + token.encode()).decode()
        assert len(encoded) <= MAX_CURSOR_CHARS, len(encoded)
        return encoded

    def _decode(self, cursor: str, listing: str) -> tuple[int, str] | Answer:
        bad = error(400, "INVALID_CURSOR_FORMAT", "invalid continue token")
        if len(cursor) > MAX_CURSOR_CHARS:
            return bad
        try:
            raw = base64.b64decode(cursor, validate=True)
        except ValueError:
            return bad
        mac, token = raw[:18], raw[18:]
        if not hmac.compare_digest(mac, hmac.new(self.secret, token, hashlib.sha256).digest()[:18]):
            return bad
        try:
            data = json.loads(token)
        except ValueError:
            return bad
        if data.get("key") != listing or not str(data.get("start", "")).endswith("\x00"):
            return bad
        if data["rv"] < self.compacted_below:
            return Answer(
                410,
                {
                    "success": False,
                    "error": "the provided continue parameter is too old to display a "
                    "consistent list result",
                    "code": "CONTINUE_TOKEN_EXPIRED",
                    "metadata": {"retryable": True, "code": "CONTINUE_TOKEN_EXPIRED"},
                },
            )
        return int(data["rv"]), data["start"][:-1]


NO_ROUTE = Answer(404, "404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"})
"""What Go's mux answers for a route it does not have: text, not JSON."""


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"success": False, "error": message, "code": code}, headers or {})


def _list_item(component: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in component.items() if not k.startswith("_")}


def _detail(component: dict[str, Any], include: list[str]) -> dict[str, Any]:
    data = _list_item(component)
    if component.get("_workflow"):
        data["componentWorkflow"] = component["_workflow"]
    if "workload" in include:
        endpoints = component.get("_endpoints")
        if endpoints:
            data["workload"] = {"name": component["name"] + "-workload", "endpoints": endpoints}
        else:
            style = component.get("_workload_style")
            if style == "empty":
                data["workload"] = {"endpoints": {}}
            elif style == "null-endpoints":
                data["workload"] = {"name": component["name"], "endpoints": None}
    return data


def _listing_of(path: str) -> str | None:
    if not path.startswith(PREFIX + "/"):
        return None
    parts = [unquote(p) for p in path[len(PREFIX) + 1 :].split("/")]
    if parts == ["orgs"] or (
        len(parts) in (3, 5) and parts[0] == "orgs" and parts[-1] in ("projects", "components")
    ):
        return "/".join(parts)
    return None


def _handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: 40 ms a request

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._serve()

        def _serve(self) -> None:
            split = urlsplit(self.path)
            request = Request(
                self.command,
                split.path,
                parse_qs(split.query, keep_blank_values=True),
                self.headers.get("Authorization"),
            )
            answer = server.handle(request)
            text = isinstance(answer.body, str)
            payload = (answer.body if text else json.dumps(answer.body)).encode()
            try:
                self.send_response(answer.status)
                if "Content-Type" not in answer.headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its deadline)
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
