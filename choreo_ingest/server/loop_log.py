"""The event loop's and the HTTP server's own log lines (the standard library's `asyncio` and
`uvicorn` loggers) as `serve`'s lines.

Left alone, they reach stderr as plain text, tracebacks and all, whatever `--log-json` says. And
when accept() fails for want of file descriptors, asyncio logs it with a traceback once for
every connection it tries to take from the backlog (up to 2,048 a turn of the loop, and again at
each retry): hundreds of megabytes a minute. That failure is said in one line, at most once a
`logs.QUIET_SECONDS`, with how many times it happened since the line before; so is each of
uvicorn's lines about a client (`Invalid HTTP request received.` for each request a scanner
garbles).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
from collections.abc import Iterator

from choreo_ingest.clock import Clock
from choreo_ingest.logs import Throttle, get_logger

log = get_logger("choreo_ingest.server")

MAX_SERVER_LINE_KINDS = 100
"""Kinds of uvicorn line throttled apart (its templates are few; past this many, start over)."""
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""The accept() failures asyncio logs and retries a second later."""


class LoopLog(logging.Handler):
    """A handler for the `asyncio` logger: each record as one of our lines, failed accepts
    throttled."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self._accept_failures = Throttle(clock)
        self._server_lines: dict[str, Throttle] = {}

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError) and error.errno in OUT_OF_RESOURCES:
            if failures := self._accept_failures.count():
                log.error(
                    "connections_not_accepted", message=_cannot_accept(error), failures=failures
                )
            return
        level = "error" if record.levelno >= logging.ERROR else "warning"
        if record.name.partition(".")[0] == "uvicorn" and level == "warning":
            self._server_line(record, error)
            return
        getattr(log, level)("event_loop_reported", message=record.getMessage(), exc_info=error)

    def _server_line(self, record: logging.LogRecord, error: BaseException | None) -> None:
        """A line of uvicorn's about a client: once a `QUIET_SECONDS` for each kind of line
        (its template), counting them, with the client's error but no traceback."""
        key = str(record.msg)[:200]
        throttle = self._server_lines.get(key)
        if throttle is None:
            if len(self._server_lines) >= MAX_SERVER_LINE_KINDS:
                self._server_lines.clear()
            throttle = self._server_lines[key] = Throttle(self._clock)
        if times := throttle.count():
            message = record.getMessage() + (f" ({error})" if error is not None else "")
            log.warning("http_server_reported", message=message, times=times)


def _cannot_accept(error: OSError) -> str:
    reason = error.strerror or os.strerror(error.errno or 0)
    reason = reason[:1].lower() + reason[1:]
    if error.errno == errno.EMFILE:
        reason += f" (ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)[0]})"
    return f"cannot accept connections: {reason}"


@contextlib.contextmanager
def loop_log(clock: Clock) -> Iterator[None]:
    """While inside, the `asyncio` and `uvicorn` loggers write through one `LoopLog` (and nowhere
    else)."""
    handler = LoopLog(clock)
    loggers = [logging.getLogger(name) for name in ("asyncio", "uvicorn")]
    propagated = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in zip(loggers, propagated, strict=True):
            logger.removeHandler(handler)
            logger.propagate = propagate
