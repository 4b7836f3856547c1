"""serve's HTTP server on a real socket (uvicorn as `serve` runs it, in a thread): a connection
left without a request is closed after `serve.readTimeout`, a body that does not come whole in
time is answered 408, and past the connection cap the connection waiting longest for a request
is closed; requests go on being answered all along."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from choreo_ingest.clock import SystemClock
from choreo_ingest.config import Config
from choreo_ingest.logs import configure_logging
from choreo_ingest.server.app import build_app
from choreo_ingest.server.connections import Connections
from choreo_ingest.server.context import Server
from choreo_ingest.server.loop_log import loop_log
from choreo_ingest.server.runner import http_server
from choreo_ingest.server.security import Credentials
from choreo_ingest.service import Service

from sim_support import wait_until

pytestmark = pytest.mark.slow

READ_TIMEOUT = 0.5
PATIENCE = 15.0
"""How long a test waits for the server to close a connection: far past READ_TIMEOUT, so that a
loaded machine does not fail it, and short of for ever, which is how long it waits without
the deadline."""
REQUEST = b"GET / HTTP/1.1\r\nHost: serve\r\n\r\n"


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


@contextmanager
def serving(
    app: ASGIApp = hello, read_timeout: float = READ_TIMEOUT, most_connections: int | None = None
) -> Iterator[tuple[str, int]]:
    connections = Connections(read_timeout, most_connections, SystemClock())
    listener = connections.listener(socket.AF_INET)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    server = http_server(app, connections)
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[listener]),))
    thread.start()
    try:
        wait_until(lambda: server.started, PATIENCE, "uvicorn to start")
        yield listener.getsockname()
    finally:
        server.should_exit = True
        thread.join(PATIENCE)
        listener.close()


@contextmanager
def connected(address: tuple[str, int]) -> Iterator[socket.socket]:
    with socket.create_connection(address, timeout=PATIENCE) as client:
        yield client


def answered(client: socket.socket) -> bytes:
    client.sendall(REQUEST)
    return answer_on(client)


def answer_on(client: socket.socket) -> bytes:
    answer = b""
    while not answer.endswith(b"hello"):
        chunk = client.recv(4096)
        assert chunk, f"closed before the answer: {answer!r}"
        answer += chunk
    return answer


def read_to_the_end(client: socket.socket) -> bytes:
    """All the server sends until it closes the connection; fails if it is open after PATIENCE."""
    received = b""
    try:
        while chunk := client.recv(4096):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {PATIENCE} s (received {received!r})") from None
    return received


def still_open(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(1) != b""
    except BlockingIOError:
        return True
    finally:
        client.settimeout(PATIENCE)


def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout() -> None:
    with serving() as address, connected(address) as client:
        assert read_to_the_end(client) == b""


def test_a_connection_that_sends_half_a_request_line_is_closed_after_the_read_timeout() -> None:
    with serving() as address, connected(address) as client:
        client.sendall(b"GET /entities HT")
        assert read_to_the_end(client) == b""


def test_headers_that_never_end_are_closed_after_the_read_timeout() -> None:
    with serving() as address, connected(address) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: serve\r\nX-Slow: 1\r\n")
        assert read_to_the_end(client) == b""


def test_a_kept_alive_connection_answers_its_next_request_and_is_closed_when_idle() -> None:
    with serving(read_timeout=PATIENCE) as address, connected(address) as client:
        assert answered(client).startswith(b"HTTP/1.1 200")
        assert answered(client).startswith(b"HTTP/1.1 200")
        assert read_to_the_end(client) == b""  # uvicorn's keep-alive timeout, 5 s


def test_half_a_request_after_a_response_is_closed_after_the_read_timeout() -> None:
    with serving() as address, connected(address) as client:
        assert answered(client).startswith(b"HTTP/1.1 200")
        client.sendall(b"GET / HTTP/1.1\r\n")
        assert read_to_the_end(client) == b""


def test_a_body_that_does_not_come_whole_in_time_is_answered_408_and_closed(
    config: Config, tmp_path: Path
) -> None:
    config = replace(config, serve=replace(config.serve, read_timeout=READ_TIMEOUT))
    clock = SystemClock()
    service = Service(config, tmp_path / "state.db", clock)
    app = build_app(Server(config, service.state, clock, service, Credentials()))
    with serving(app) as address, connected(address) as client:
        client.sendall(
            b"POST /api/events/http/openchoreo HTTP/1.1\r\nHost: serve\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"kind": '
        )
        answer = read_to_the_end(client)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request body not sent whole within 0.5 s" in answer


def test_a_request_giving_both_a_length_and_chunks_is_refused_and_nothing_after_it_served(
    config: Config, tmp_path: Path
) -> None:
    """Request smuggling: a proxy that went by Content-Length took the request behind the
    chunks for this one's body; served, it would pass the proxy's rules for its path."""
    clock = SystemClock()
    service = Service(config, tmp_path / "state.db", clock)
    app = build_app(Server(config, service.state, clock, service, Credentials()))
    behind = b"GET /status/smuggled HTTP/1.1\r\nHost: serve\r\n\r\n"
    body = b"0\r\n\r\n" + behind
    with serving(app, read_timeout=PATIENCE) as address, connected(address) as client:
        client.sendall(
            b"POST /api/events/http/openchoreo HTTP/1.1\r\nHost: serve\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % len(body) + body
        )
        answer = read_to_the_end(client)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"both Content-Length and Transfer-Encoding given" in answer
    assert answer.count(b"HTTP/1.1 ") == 1


def test_past_the_cap_the_connection_waiting_longest_is_closed_and_the_new_one_answered() -> None:
    with (
        serving(read_timeout=60, most_connections=3) as address,
        connected(address) as oldest,
        connected(address) as older,
        connected(address) as sending,
        connected(address) as newest,
    ):
        sending.sendall(b"GET / HTTP/1.1\r\nHost: serve\r\n")  # its headers are not whole yet

        assert answered(newest).startswith(b"HTTP/1.1 200")
        assert read_to_the_end(oldest) == b""
        assert still_open(older)
        assert still_open(sending)


def test_when_every_connection_is_in_a_request_a_new_one_waits_until_one_is_free() -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    release, held = threading.Event(), threading.Semaphore(0)

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        held.release()
        await asyncio.to_thread(release.wait)
        await hello(scope, receive, send)

    with (
        loop_log(SystemClock()),
        serving(slow, read_timeout=60, most_connections=2) as address,
        connected(address) as first,
        connected(address) as second,
    ):
        first.sendall(REQUEST)
        second.sendall(REQUEST)
        assert held.acquire(timeout=PATIENCE)
        assert held.acquire(timeout=PATIENCE)
        with connected(address) as third:
            third.sendall(REQUEST)
            wait_until(
                lambda: "connections_not_accepted" in stream.getvalue(), PATIENCE, "a refusal"
            )
            release.set()
            assert answer_on(third).startswith(b"HTTP/1.1 200")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [refusal] = [line for line in lines if line["event"] == "connections_not_accepted"]
    assert refusal["message"].startswith(
        "cannot accept connections: 2 connections open, the most serve keeps, all in a request"
    )


def test_a_client_that_goes_away_mid_body_is_logged_as_gone_not_as_a_bug(
    config: Config, tmp_path: Path
) -> None:
    clock = SystemClock()
    service = Service(config, tmp_path / "state.db", clock)
    server = Server(config, service.state, clock, service, Credentials())
    app = build_app(server)
    lines = io.StringIO()
    configure_logging(verbosity=1, stream=lines, json=True)
    with serving(app, read_timeout=PATIENCE) as address:
        with connected(address) as client:
            client.sendall(
                b"POST /api/events/http/openchoreo HTTP/1.1\r\nHost: serve\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"kind": '
            )
        wait_until(lambda: "http_request" in lines.getvalue(), PATIENCE, "the request's line")
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]

    assert [line["event"] for line in logged if line["level"] == "error"] == []
    assert [line["status"] for line in logged if line["event"] == "http_request"] == [499]
