"""A clean-room fake of the OpenChoreo v1 API, written from `openchoreo-v1-api.md` and OpenChoreo's
own handlers (v1.2.3: `internal/openchoreo-api/api/handlers`, `services/pagination.go`,
`internal/server/middleware/auth/jwt`), not from choreo-ingest's simulator.

Two real HTTP servers on loopback ports of their own: the identity provider (an OAuth2 token
endpoint, `client_secret_post` only, as Thunder holds a client to the method it was registered
with; cleanroom_v1_identity.py) and the API server (here; its storage and list layers are in
cleanroom_v1_storage.py, the HTTP plumbing both share in cleanroom_v1_http.py). What it does
the way the real server does, where a friendlier fake would not:

- Kubernetes storage: every mutation bumps a resource version; a listing is served from the
  snapshot of the version its first page saw; continue tokens are base64url JSON
  `{"v","rv","start"}` (Kubernetes' own); a token older than the compaction point, or one that
  does not decode, is an error the handler turns into 500 INTERNAL_ERROR.
- OpenChoreo's list layers: the project/component filter (`PreFilteredList`, cursor
  `{"c","is"}`) inside the authorization filter (`FilteredList`, cursor `{"c","s"}`), both
  base64url; items the caller may not view are dropped and the page is refilled; a page filled
  exactly at the end of the data has no cursor; the last page's `pagination` is `{}` (or, when
  `end_style` says so, `{"nextCursor": ""}` / `{"nextCursor": null}`).
- `limit`: default 20, clamped to [1, 100]; a non-integer one is 400 `text/plain` before auth.
- 401 from the JWT middleware: `{"error": "MISSING_TOKEN" | "INVALID_TOKEN", "message"}`.
- Namespaces without apiVersion/kind; only those labelled `openchoreo.dev/control-plane=true`
  are listed (and read: v1.2.3's GetNamespace answers 404 for the others).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from cleanroom_v1_http import Request, b64, error_answer, handler_class, json_answer, unb64
from cleanroom_v1_identity import Identity
from cleanroom_v1_storage import ListError, Storage, authz_filtered, pre_filtered

API_VERSION = "openchoreo.dev/v1alpha1"
CONTROL_PLANE = "openchoreo.dev/control-plane"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
KINDS = {"projects": "Project", "components": "Component", "workloads": "Workload"}


class OpenChoreoV1:
    """The API server's behaviour, independent of the HTTP plumbing."""

    def __init__(self, identity: Identity, *, security: bool = True) -> None:
        self.identity = identity
        self.security = security
        self.storage = Storage()
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.hidden: set[tuple[str, str, str]] = set()  # (kind, ns, name) the caller may not view
        # (kind, ns, name) the handlers cannot convert to the API's types (`convertList`): every
        # page that holds one, and its own read, answer 500
        self.unconvertible: set[tuple[str, str, str]] = set()
        self.requests: list[Request] = []
        self.end_style = "empty"  # "empty": pagination {}; "blank": nextCursor ""; "null": null
        self.cursor_style = "base64url"  # or "awkward": standard base64 with + / = and a prefix
        self.refill = True  # False: authorization-filtered pages come short or empty
        self.order = "name"  # or "reverse": items in an order other than Kubernetes'
        self.hooks: list[Callable[[Request], tuple[int, dict[str, str], bytes] | None]] = []
        self.lock = threading.Lock()

    # --- world ---------------------------------------------------------------------------

    def add_namespace(
        self, name: str, *, control_plane: bool = True, phase: str = "Active", **meta: Any
    ) -> None:
        labels = {"kubernetes.io/metadata.name": name}
        if control_plane:
            labels[CONTROL_PLANE] = "true"
        self.namespaces[name] = {
            "metadata": {
                "name": name,
                "uid": _uid(name),
                "labels": labels,
                "creationTimestamp": "2025-03-01T10:00:00Z",
                **meta,
            },
            "status": {"phase": phase},
        }

    def put(self, plural: str, namespace: str, obj: dict[str, Any]) -> None:
        full = {"apiVersion": API_VERSION, "kind": KINDS[plural], **obj}
        full["metadata"] = {
            "namespace": namespace,
            "uid": _uid(f"{namespace}/{obj['metadata']['name']}"),
            "creationTimestamp": "2025-03-02T11:00:00Z",
            **obj["metadata"],
        }
        self.storage.put(plural, namespace, full)

    def delete(self, plural: str, namespace: str, name: str) -> None:
        self.storage.delete(plural, namespace, name)

    # --- requests ------------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.requests.append(request)
        for hook in list(self.hooks):
            answer = hook(request)
            if answer is not None:
                return answer
        path = request.path
        if path == "/health" or path == "/ready":
            return 200, {"Content-Type": "text/plain; charset=utf-8"}, b"OK"
        if path == "/version":
            return json_answer(
                200,
                {
                    "name": "openchoreo-api",
                    "version": "v1.2.3",
                    "gitRevision": "cafe123",
                    "buildTime": "2026-01-01T00:00:00Z",
                    "goOS": "linux",
                    "goArch": "amd64",
                    "goVersion": "go1.25.1",
                },
            )
        if path == "/.well-known/oauth-protected-resource":
            return json_answer(
                200,
                {
                    "resource_name": "OpenChoreo MCP Server",
                    "resource": "http://api/mcp",
                    "authorization_servers": [self.identity.issuer],
                    "scopes_supported": [],
                    "bearer_methods_supported": ["header"],
                    "openchoreo_security_enabled": self.security,
                },
            )
        if not path.startswith("/api/v1/"):
            return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n"
        limit_text = request.param("limit")
        if limit_text is not None:
            try:
                int(limit_text)
            except ValueError:  # the generated wrapper, before any middleware
                body = f"Invalid format for parameter limit: {limit_text!r} is not an integer"
                return 400, {"Content-Type": "text/plain; charset=utf-8"}, body.encode()
        if request.method != "GET":
            return 405, {"Content-Type": "text/plain"}, b"method not allowed"
        if self.security:
            auth = request.headers.get("authorization", "")
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                return json_answer(
                    401,
                    {
                        "error": "MISSING_TOKEN",
                        "message": "missing or invalid authentication token",
                    },
                )
            if not self.identity.valid(auth[7:].strip()):
                return json_answer(
                    401, {"error": "INVALID_TOKEN", "message": "invalid or expired token"}
                )
        parts = [unquote(p) for p in path[len("/api/v1/") :].split("/")]
        try:
            return self._route(parts, request)
        except ListError:
            return error_answer(500, "Internal server error", "INTERNAL_ERROR")

    def _limit(self, request: Request) -> int:
        text = request.param("limit")
        value = DEFAULT_LIMIT if text is None else int(text)
        return max(1, min(MAX_LIMIT, value))

    def _outer(self, cursor: str) -> str:
        if self.cursor_style != "awkward" or not cursor:
            return cursor
        return "oc1:" + base64.b64encode(b"\xfb\xff\xbf" + cursor.encode()).decode() + "~="

    def _inner(self, cursor: str) -> str:
        if self.cursor_style != "awkward" or not cursor:
            return cursor
        if not (cursor.startswith("oc1:") and cursor.endswith("~=")):
            raise ListError("not our cursor")
        try:
            return base64.b64decode(cursor[4:-2], validate=True)[3:].decode()
        except Exception as error:
            raise ListError(str(error)) from None

    def _list_body(
        self, items: list[dict[str, Any]], nxt: str
    ) -> tuple[int, dict[str, str], bytes]:
        nxt = self._outer(nxt)
        if nxt:
            pagination: dict[str, Any] = {"nextCursor": nxt}
        elif self.end_style == "blank":
            pagination = {"nextCursor": ""}
        elif self.end_style == "null":
            pagination = {"nextCursor": None}
        else:
            pagination = {}
        return json_answer(200, {"items": items, "pagination": pagination})

    def _route(self, parts: list[str], request: Request) -> tuple[int, dict[str, str], bytes]:
        limit = self._limit(request)
        cursor = self._inner(request.param("cursor") or "")
        if parts == ["namespaces"]:
            listed = sorted(
                n
                for n, ns in self.namespaces.items()
                if ns["metadata"]["labels"].get(CONTROL_PLANE) == "true"
            )

            def fetch_ns(lim: int, cont: str) -> tuple[list[dict[str, Any]], str]:
                start = ""
                if cont:
                    try:
                        start = unb64(cont)["start"]
                    except Exception as error:
                        raise ListError(str(error)) from None
                names = [n for n in listed if n > start]
                page = names[:lim]
                more = len(names) > lim
                return (
                    [copy.deepcopy(self.namespaces[n]) for n in page],
                    b64({"v": "meta.k8s.io/v1", "rv": self.storage.rv, "start": page[-1]})
                    if more
                    else "",
                )

            items, nxt = authz_filtered(
                fetch_ns,
                lambda ns: ("Namespace", "", ns["metadata"]["name"]) not in self.hidden,
                limit,
                cursor,
            )
            return self._list_body(items, nxt)
        if len(parts) == 2 and parts[0] == "namespaces":
            ns = self.namespaces.get(parts[1])
            if ns is None or ns["metadata"]["labels"].get(CONTROL_PLANE) != "true":
                return error_answer(404, "Namespace not found", "NOT_FOUND")
            return json_answer(200, ns)
        if len(parts) == 3 and parts[0] == "namespaces" and parts[2] in KINDS:
            namespace, plural = parts[1], parts[2]
            kind = KINDS[plural]

            def fetch(lim: int, cont: str) -> tuple[list[dict[str, Any]], str]:
                return self.storage.list(plural, namespace, limit=lim, cont=cont)

            source = fetch
            if plural == "components" and request.param("project"):
                project = request.param("project")
                if self.storage.get("projects", namespace, project) is None:
                    return error_answer(404, "Project not found", "NOT_FOUND")

                def source(
                    lim: int, cont: str, _p: str = project
                ) -> tuple[list[dict[str, Any]], str]:
                    return pre_filtered(
                        fetch, lambda c: c["spec"]["owner"]["projectName"] == _p, lim, cont
                    )

            if plural == "workloads" and request.param("component"):
                wanted = request.param("component")

                def source(
                    lim: int, cont: str, _c: str = wanted
                ) -> tuple[list[dict[str, Any]], str]:
                    return pre_filtered(
                        fetch, lambda w: w["spec"]["owner"].get("componentName") == _c, lim, cont
                    )

            items, nxt = authz_filtered(
                source,
                lambda o: (kind, namespace, o["metadata"]["name"]) not in self.hidden,
                limit,
                cursor,
                refill=self.refill,
            )
            if any((kind, namespace, o["metadata"]["name"]) in self.unconvertible for o in items):
                raise ListError("item: unmarshal into destination")
            if self.order == "reverse":
                items.reverse()
            return self._list_body(items, nxt)
        if len(parts) == 4 and parts[0] == "namespaces" and parts[2] in KINDS:
            namespace, plural, name = parts[1], parts[2], parts[3]
            kind = KINDS[plural]
            obj = self.storage.get(plural, namespace, name)
            if obj is None:
                return error_answer(404, f"{kind} not found", "NOT_FOUND")
            if (kind, namespace, name) in self.hidden:
                return error_answer(
                    403, "You do not have permission to perform this operation", "FORBIDDEN"
                )
            if (kind, namespace, name) in self.unconvertible:
                raise ListError("unmarshal into destination")
            return json_answer(200, obj)
        return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n"

    # --- what tests read -----------------------------------------------------------------

    def api_requests(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith("/api/v1/")]


def _uid(seed: str) -> str:

    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@dataclass
class Running:
    api: OpenChoreoV1
    identity: Identity
    api_url: str
    token_url: str


@contextmanager
def running(
    client_id: str = "choreo-ingest",
    client_secret: str = "s3cr3t+/=value",  # noqa: S107 (the fake's own)
) -> Iterator[Running]:
    """Both servers on free loopback ports, stopped on exit."""
    identity = Identity(client_id=client_id, client_secret=client_secret)

    def idp(request: Request) -> tuple[int, dict[str, str], bytes]:
        if request.method == "POST" and request.path == "/oauth2/token":
            return identity.grant(request)
        return 404, {"Content-Type": "text/plain"}, b"not found"

    id_server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class(idp))
    identity.issuer = f"http://127.0.0.1:{id_server.server_address[1]}/oauth2/token"
    api = OpenChoreoV1(identity)
    api_server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class(api.handle))
    for server in (id_server, api_server):
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
    try:
        yield Running(
            api=api,
            identity=identity,
            api_url=f"http://127.0.0.1:{api_server.server_address[1]}",
            token_url=f"http://127.0.0.1:{id_server.server_address[1]}/oauth2/token",
        )
    finally:
        for server in (api_server, id_server):
            server.shutdown()
            server.server_close()
