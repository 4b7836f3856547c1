"""Load control for the OpenChoreo client: caps on requests in flight and on starts per second.

Both caps are shared by every thread of one client and hold exactly, as the server sees them:

- at most `max_concurrent` requests hold a slot at any moment (a bounded semaphore);
- requests are counted in a sliding window. For a rate of at least 1/s the window is one
  second holding `floor(rate)` requests; below 1/s it is `1 / rate` seconds holding one. So no
  one-second window ever sees more than `rate` requests (2.5/s is served as 2/s, not 3/s).

The server receives a request at some instant between its start and its end, and network delay
varies, so spacing the starts alone is not enough: a slow request and a fast one can arrive
closer together than they started. The limiter therefore lets the request that is `n` places
after another start only a full window after that other one *ended*. Any `n + 1` requests then
reach the server at least a window apart, whatever the delays; with a fast server this costs
only the round trip per window.

Starts are granted in order under one lock, and waiting for the rate happens outside it
through `clock.sleep`, so a fake clock drives it in tests.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from choreo_ingest.clock import Clock
from choreo_ingest.config import OpenChoreoConfig
from choreo_ingest.errors import DeadlineExceeded

MIN_SLEEP = 0.001
"""Shortest wait; keeps a float rounding error from turning into a busy loop."""


@dataclass
class _Request:
    started_at: float
    ended_at: float | None = None


class RequestLimiter:
    """Caps requests in flight and requests per second; safe to share between threads."""

    def __init__(self, *, max_concurrent: int, max_per_second: float | None, clock: Clock) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        if max_per_second is not None and not 0 < max_per_second < math.inf:
            raise ValueError(f"max_per_second must be a positive number, got {max_per_second}")
        self.max_concurrent = max_concurrent
        self.max_per_second = max_per_second
        self._clock = clock
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._ended = threading.Condition(threading.Lock())
        self._window, per_window = _window_for(max_per_second)
        self._recent: deque[_Request] = deque(maxlen=per_window)

    @contextmanager
    def slot(self, deadline: float | None = None) -> Iterator[None]:
        """Hold one of the concurrent slots, and start only when the rate allows.

        Raises DeadlineExceeded (taking no place in the window) when the rate would make the
        request start at or after `deadline` (a `clock.monotonic()` value).
        """
        self._slots.acquire()
        try:
            request = self._wait_for_rate(deadline)
            try:
                yield
            finally:
                if request is not None:
                    self._end(request)
        finally:
            self._slots.release()

    def _wait_for_rate(self, deadline: float | None) -> _Request | None:
        if self._window is None:
            return None
        while True:
            with self._ended:
                # a window's worth of places back: the request whose end we must wait for
                while (oldest := self._oldest()) is not None and oldest.ended_at is None:
                    self._ended.wait()
                now = self._clock.monotonic()
                if oldest is None or oldest.ended_at is None:
                    ready_at = now
                else:
                    ready_at = oldest.ended_at + self._window
                if now >= ready_at:
                    request = _Request(started_at=now)
                    self._recent.append(request)  # the deque's maxlen drops the oldest
                    return request
            if deadline is not None and ready_at >= deadline:
                raise DeadlineExceeded(
                    f"the request rate cap ({self.max_per_second:g}/s) leaves no room "
                    "before the burst deadline"
                )
            self._clock.sleep(max(ready_at - now, MIN_SLEEP))

    def _oldest(self) -> _Request | None:
        """The request a full window of places back, or None while the window has room."""
        if len(self._recent) < (self._recent.maxlen or 1):
            return None
        return self._recent[0]

    def _end(self, request: _Request) -> None:
        with self._ended:
            request.ended_at = self._clock.monotonic()
            self._ended.notify_all()


def _window_for(max_per_second: float | None) -> tuple[float | None, int]:
    """(window seconds, requests allowed per window); (None, 1) when the rate is not capped."""
    if max_per_second is None:
        return None, 1
    if max_per_second >= 1:
        return 1.0, math.floor(max_per_second)
    return 1.0 / max_per_second, 1


def request_limiter(config: OpenChoreoConfig, clock: Clock) -> RequestLimiter:
    """The caps of `openchoreo.incremental` on requests in flight and per second. Clients made
    one after another in one process (an inbox drain, then a burst) share one, so that the caps
    hold for the process, not for each client."""
    return RequestLimiter(
        max_concurrent=config.incremental.max_concurrent_requests,
        max_per_second=config.incremental.max_requests_per_second,
        clock=clock,
    )
