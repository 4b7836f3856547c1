"""Answers that never end: a server (hostile, broken, or a proxy in between) that sends its
headers and then a byte now and then. Each read comes within the timeout, so httpx's timeout,
which holds for each read alone, never fires: the client bounds the whole answer, its size, and
stops reading it once the run is asked to stop, so the burst ends and the run lock is let go."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from choreo_ingest.clock import SystemClock
from choreo_ingest.config import AuthConfig, IncrementalConfig, OAuthConfig, OpenChoreoConfig
from choreo_ingest.errors import DeadlineExceeded, ProviderError, TransientError
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient

HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"


@pytest.fixture
def dripping_server() -> Iterator[str]:
    """Answers every connection with HEADERS, then a space every 0.1 s until it is closed, for
    at most 10 s (a client that does not bound its read fails its test, and does not hang)."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def drip(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            try:
                connection.sendall(HEADERS)
                ends = time.monotonic() + 10.0
                while not done.wait(0.1) and time.monotonic() < ends:
                    connection.sendall(b" ")
            except OSError:  # the client hung up: what it should do
                pass

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        listener.close()


def client(base_url: str, cancelled: threading.Event | None = None) -> OpenChoreoClient:
    config = OpenChoreoConfig(base_url=base_url, incremental=IncrementalConfig(request_timeout=1.0))
    stop = cancelled or threading.Event()
    return OpenChoreoClient(
        config, clock=SystemClock(), deadline=None, rng=lambda: 0.0, cancelled=stop.is_set
    )


def test_an_answer_that_never_ends_times_out_after_the_request_timeout(
    dripping_server: str,
) -> None:
    started = time.monotonic()
    with (
        client(dripping_server) as api,
        pytest.raises(TransientError, match=r"GET /version: ReadTimeout"),
    ):
        api.get_public("/version")

    assert time.monotonic() - started < 5.0  # one attempt: a probe is never retried


def test_a_stop_ends_the_read_of_a_slow_answer(dripping_server: str) -> None:
    """SIGTERM while a slow answer comes in: the read ends within about a second."""
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()

    with client(dripping_server, stop) as api, pytest.raises(TransientError):
        api.get_json("/namespaces")

    assert time.monotonic() - started < 1.0 + 1.0


def test_a_token_answer_that_never_ends_ends_at_the_burst_deadline(dripping_server: str) -> None:
    """The identity provider drips its answer: the grant's whole answer is bounded as a page's
    is, so the burst (and the run lock) ends near its deadline, not when the server stops."""
    oauth = OAuthConfig(
        token_url=f"{dripping_server}/oauth2/token", client_id="c", client_secret="s"
    )
    config = OpenChoreoConfig(
        base_url=dripping_server,
        auth=AuthConfig(oauth=oauth),
        incremental=IncrementalConfig(request_timeout=1.0),
    )
    started = time.monotonic()
    with (
        OpenChoreoClient(
            config, clock=SystemClock(), deadline=started + 1.5, rng=lambda: 0.0
        ) as api,
        pytest.raises(ProviderError) as raised,
    ):
        api.get_json("/namespaces")

    assert time.monotonic() - started < 4.0
    assert isinstance(raised.value, DeadlineExceeded | TransientError)
    assert "/oauth2/token" in str(raised.value)
