"""What the simulator counts about the requests it serves, and its rate limiter.

Requests fall in three families: "api" (the resource routes, whatever they answer), "public"
(health, readiness, version, the protected-resource metadata) and "token" (the OAuth2 token
endpoint). `total_requests` counts all three; `api_requests` is what a client's walk costs.
"""

from __future__ import annotations

import copy
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from choreo_ingest.clock import Clock

RouteFamily = Literal["api", "public", "token"]

WINDOW_SECONDS = 1.0


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    has_authorization: bool
    status: int


@dataclass
class SimulatorStats:
    total_requests: int = 0
    api_requests: int = 0
    """Requests to the API's resource routes (known or not): neither public nor token."""
    public_requests: int = 0
    """Requests to the public routes (/health, /ready, /version, /.well-known/...)."""
    token_requests: int = 0
    """Requests to the OAuth2 token endpoint."""
    requests_by_route: dict[str, int] = field(default_factory=dict)
    """Per route kind: `list_namespaces`, `get_workload`, `list_orgs`, `unknown`, `health`,
    `token`, ..."""
    responses_by_status: dict[int, int] = field(default_factory=dict)
    max_in_flight: int = 0
    """Most requests ever being handled at the same moment."""
    max_requests_per_second: int = 0
    """Most requests that arrived within any one-second window (sliding)."""
    expired_cursors: int = 0
    """Requests refused for an expired cursor (410 in orgs, 500 in v1)."""
    rate_limited: int = 0
    """429 responses served."""
    server_errors: int = 0
    """5xx responses served."""
    webhook_events: int = 0
    """Events queued for the `webhooks` (changes made through the control routes)."""
    webhook_dropped: int = 0
    """Events dropped unsent: the forwarder's queue (1024) was full."""
    webhook_posts: int = 0
    """Webhook POSTs answered 2xx."""
    webhook_failures: int = 0
    """Webhook POSTs that failed (not 2xx, refused, timed out); each is tried once."""
    webhook_last_error: str | None = None


class RequestMeter:
    """Thread-safe counters, a sliding one-second window, the request log and the rate limiter."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stats = SimulatorStats()
        self._in_flight = 0
        self._arrivals: deque[float] = deque()
        self._admitted: deque[float] = deque()
        self._log: list[LoggedRequest] = []

    def enter(self, route: str, family: RouteFamily = "api") -> None:
        now = self._clock.monotonic()
        with self._lock:
            stats = self._stats
            stats.total_requests += 1
            stats.api_requests += family == "api"
            stats.public_requests += family == "public"
            stats.token_requests += family == "token"
            stats.requests_by_route[route] = stats.requests_by_route.get(route, 0) + 1
            self._in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, self._in_flight)
            _slide(self._arrivals, now)
            self._arrivals.append(now)
            stats.max_requests_per_second = max(stats.max_requests_per_second, len(self._arrivals))

    def admit(self, requests_per_second: float | None) -> int | None:
        """None if the request fits under the cap, else the seconds to wait (`Retry-After`)."""
        if requests_per_second is None:
            return None
        cap = max(1, int(requests_per_second))
        now = self._clock.monotonic()
        with self._lock:
            _slide(self._admitted, now)
            if len(self._admitted) >= cap:
                return max(1, math.ceil(self._admitted[0] + WINDOW_SECONDS - now))
            self._admitted.append(now)
            return None

    def leave(
        self, status: int, logged: LoggedRequest | None, cursor_expired: bool = False
    ) -> None:
        with self._lock:
            stats = self._stats
            self._in_flight -= 1
            stats.responses_by_status[status] = stats.responses_by_status.get(status, 0) + 1
            stats.expired_cursors += status == 410 or cursor_expired
            stats.rate_limited += status == 429
            stats.server_errors += status >= 500
            if logged is not None:
                self._log.append(logged)

    def snapshot(self) -> SimulatorStats:
        with self._lock:
            return copy.deepcopy(self._stats)

    def request_log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Forget counters and the log (requests in flight stay counted as in flight)."""
        with self._lock:
            self._stats = SimulatorStats()
            self._arrivals.clear()
            self._log.clear()


def _slide(window: deque[float], now: float) -> None:
    while window and window[0] <= now - WINDOW_SECONDS:
        window.popleft()
