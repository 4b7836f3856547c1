"""The request log of `serve`: an ASGI middleware around the routes.

Each request gives one log line (shown at -v) and one count in
`choreo_ingest_http_requests_total`, by route template, method and status: a path that holds
the events secret is never logged or counted as itself.

A bug in a route ends here too: the client has its `{"error": ...}` 500 (the application's own
handler answers it, else this middleware), and the log one `http_request_crashed` line, the
traceback only at -vv; the server (uvicorn) never sees the exception, so it writes no traceback
of its own to stderr. Nor does it for a request its stop cuts short (its body still coming in
when the shutdown's grace ran out): the client has a 503 to send it again.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from choreo_ingest.clock import Clock
from choreo_ingest.logs import get_logger

log = get_logger("choreo_ingest.server")


def internal_error_document(error: BaseException) -> dict[str, str]:
    """What a client is told of a bug: its kind, not its text (which may hold what the
    request sent, or a path of the server's)."""
    return {"error": f"internal error: {type(error).__name__} (a bug; the server's log says more)"}


class RequestLog:
    """One log line per request (at -v) and the request counter; the path's events secret, if
    any, never reaches either: routes are logged and counted by their template."""

    def __init__(self, app: ASGIApp, clock: Clock, requests: Counter) -> None:
        self.app = app
        self.clock = clock
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = self.clock
        started = clock.monotonic()
        status = 500
        responded = False

        async def sending(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:  # cut by the server's stop (a body still coming in)
            status = 503
            if not responded:
                stopping = JSONResponse(
                    {"error": "serve is stopping: send it again"},
                    503,
                    {"Connection": "close", "Retry-After": "5"},
                )
                await stopping(scope, receive, send)
        except Exception as error:  # a bug: one line, not the server's traceback on stderr
            log.error(
                "http_request_crashed",
                method=scope["method"],
                route=_route_template(scope),
                error=f"{type(error).__name__}: {error}",
            )
            log.debug("http_request_crashed", exc_info=error)
            if not responded:
                await JSONResponse(internal_error_document(error), 500)(scope, receive, send)
        finally:
            route = _route_template(scope)
            self.requests.labels(route, _method_label(scope), str(status)).inc()
            log.info(
                "http_request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round((clock.monotonic() - started) * 1000, 1),
            )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method_label(scope: Scope) -> str:
    """The method as a label value: any name a client sends (`X1`, `X2`, ... from a scanner)
    would be a series of its own for as long as `serve` runs."""
    method = scope["method"]
    return method if method in _METHODS else "other"


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path.replace(":path}", "}")  # the label, as before a secret could hold "/"
    return "unmatched"
