"""The event loop's own log lines (the standard library's `asyncio` logger) as `serve`'s lines.

Left alone, they reach stderr as plain text, tracebacks and all, whatever `--log-json` says. And
when accept() fails for want of file descriptors, asyncio logs it with a traceback once for
every connection it tries to take from the backlog (up to 2,048 a turn of the loop, and again at
each retry): hundreds of megabytes a minute. That failure is said in one line, at most once a
`QUIET_SECONDS`, with how many times it happened since the line before.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
from collections.abc import Iterator

from choreo_ingest.clock import Clock
from choreo_ingest.logs import get_logger

log = get_logger("choreo_ingest.server")

QUIET_SECONDS = 60.0
"""At most one line this often about a failure that may repeat thousands of times a second."""
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""The accept() failures asyncio logs and retries a second later."""


class Throttle:
    """Counts something that happens, and says when a line about it is due: the first time,
    then no sooner than `interval` seconds after the line before."""

    def __init__(self, clock: Clock, interval: float = QUIET_SECONDS) -> None:
        self._clock = clock
        self._interval = interval
        self._next_line_at: float | None = None
        self._count = 0

    def count(self) -> int:
        """Counts one more; how many there were since the last line (this one too) if a line is
        due now, else 0."""
        self._count += 1
        now = self._clock.monotonic()
        if self._next_line_at is not None and now < self._next_line_at:
            return 0
        self._next_line_at = now + self._interval
        counted, self._count = self._count, 0
        return counted


class LoopLog(logging.Handler):
    """A handler for the `asyncio` logger: each record as one of our lines, failed accepts
    throttled."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._accept_failures = Throttle(clock)

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError) and error.errno in OUT_OF_RESOURCES:
            if failures := self._accept_failures.count():
                log.error(
                    "connections_not_accepted", message=_cannot_accept(error), failures=failures
                )
            return
        level = "error" if record.levelno >= logging.ERROR else "warning"
        getattr(log, level)("event_loop_reported", message=record.getMessage(), exc_info=error)


def _cannot_accept(error: OSError) -> str:
    reason = error.strerror or os.strerror(error.errno or 0)
    reason = reason[:1].lower() + reason[1:]
    if error.errno == errno.EMFILE:
        reason += f" (ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)[0]})"
    return f"cannot accept connections: {reason}"


@contextlib.contextmanager
def loop_log(clock: Clock) -> Iterator[None]:
    """While inside, the `asyncio` logger writes through `LoopLog` (and nowhere else)."""
    logger = logging.getLogger("asyncio")
    handler, propagated = LoopLog(clock), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagated
