"""The request log of `serve`: an ASGI middleware around the routes.

Each request gives one log line (shown at -v) and one count in
`choreo_ingest_http_requests_total`, by route template, method and status: a path that holds
the events secret is never logged or counted as itself.
"""

from __future__ import annotations

from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from choreo_ingest.clock import Clock
from choreo_ingest.logs import get_logger

log = get_logger("choreo_ingest.server")


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

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = _route_template(scope)
            self.requests.labels(route, scope["method"], str(status)).inc()
            log.info(
                "http_request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round((clock.monotonic() - started) * 1000, 1),
            )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path.replace(":path}", "}")  # the label, as before a secret could hold "/"
    return "unmatched"
