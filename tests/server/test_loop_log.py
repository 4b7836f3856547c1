"""The event loop's log lines under `serve`: JSON lines like every other, and a failed accept()
said once a minute, not with a traceback for every connection in the backlog."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import resource
from collections.abc import Iterator
from typing import Any

import pytest

from choreo_ingest.logs import QUIET_SECONDS, Throttle, configure_logging
from choreo_ingest.server.loop_log import loop_log

from fakes import FakeClock


@pytest.fixture
def stream() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    return stream


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def accept_failed(loop: asyncio.AbstractEventLoop, number: int = errno.EMFILE) -> None:
    """What asyncio's accept loop hands its exception handler when accept() fails for want of
    resources (it then logs it to the `asyncio` logger, traceback and all)."""
    try:
        raise OSError(number, os.strerror(number))
    except OSError as error:
        failure = error
    loop.call_exception_handler(
        {"message": "socket.accept() out of system resource", "exception": failure}
    )


def test_a_thousand_failed_accepts_are_one_line_a_minute_counting_them(
    stream: io.StringIO, loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    with loop_log(clock):
        for _ in range(1000):
            accept_failed(loop)
        clock.advance(QUIET_SECONDS - 1)
        accept_failed(loop)
        clock.advance(1)
        accept_failed(loop)

    first, second = lines(stream)
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert first["event"] == "connections_not_accepted"
    assert first["level"] == "error"
    assert first["message"] == (
        f"cannot accept connections: too many open files (ulimit -n {soft_limit})"
    )
    assert (first["failures"], second["failures"]) == (1, 1001)
    assert "Traceback" not in stream.getvalue()


def test_a_failed_accept_for_want_of_system_wide_files_says_so(
    stream: io.StringIO, loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    with loop_log(clock):
        accept_failed(loop, errno.ENFILE)

    [line] = lines(stream)
    assert line["message"] == "cannot accept connections: too many open files in system"


def test_another_loop_error_is_one_json_line_with_its_traceback(
    stream: io.StringIO, loop: asyncio.AbstractEventLoop, clock: FakeClock
) -> None:
    try:
        raise ValueError("a callback broke")
    except ValueError as error:
        failure = error
    with loop_log(clock):
        loop.call_exception_handler({"message": "Exception in callback", "exception": failure})
        loop.call_exception_handler({"message": "Exception in callback", "exception": failure})

    first, second = lines(stream)
    assert first["event"] == second["event"] == "event_loop_reported"
    assert first["message"] == "Exception in callback"
    assert "ValueError: a callback broke" in first["exception"]


def test_uvicorns_line_for_each_garbled_request_is_one_json_line_a_minute(
    stream: io.StringIO, clock: FakeClock
) -> None:
    """A scanner's garbled requests each make uvicorn log a warning (plain text, unthrottled,
    whatever --log-json says)."""
    try:
        raise ValueError("Illegal request line")
    except ValueError as error:
        failure = error
    server_log = logging.getLogger("uvicorn.error")
    with loop_log(clock):
        for _ in range(500):
            server_log.warning("Invalid HTTP request received.", exc_info=failure)
        server_log.warning("Unsupported upgrade request.")
        clock.advance(QUIET_SECONDS)
        server_log.warning("Invalid HTTP request received.", exc_info=failure)

    first, other, again = lines(stream)
    assert first["event"] == other["event"] == again["event"] == "http_server_reported"
    assert first["level"] == "warning"
    assert first["message"] == "Invalid HTTP request received. (Illegal request line)"
    assert (first["times"], other["times"], again["times"]) == (1, 1, 500)
    assert other["message"] == "Unsupported upgrade request."
    assert "Traceback" not in stream.getvalue()


@pytest.mark.parametrize("name", ["asyncio", "uvicorn"])
def test_outside_serve_the_loggers_are_left_as_they_were(clock: FakeClock, name: str) -> None:
    logger = logging.getLogger(name)
    before = (list(logger.handlers), logger.propagate)
    with loop_log(clock):
        pass
    assert (list(logger.handlers), logger.propagate) == before


def test_a_throttle_says_when_a_line_is_due_and_how_many_it_counted(clock: FakeClock) -> None:
    throttle = Throttle(clock, interval=10)

    counted = [throttle.count() for _ in range(3)]
    clock.advance(10)
    counted.append(throttle.count())

    assert counted == [1, 0, 0, 3]
