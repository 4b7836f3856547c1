"""Run `serve`: the service loop in a thread, uvicorn in the main one, one orderly stop.

SIGTERM (or SIGINT) stops both: the burst in flight ends after its page, uvicorn stops accepting
connections and finishes the requests it has, and the process exits 0. With
`serve.shutdownDelay`, uvicorn goes on answering for that long first, each answer closing its
connection and `/readyz` not ready (`Server.stopping`), while a Service stops sending it new
ones; a second signal ends the delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import threading
from collections.abc import Iterator
from functools import partial

import uvicorn
from starlette.types import ASGIApp

from choreo_ingest.clock import Clock
from choreo_ingest.config import OPEN_EVENTS_WARNING, Address, Config, short_secret
from choreo_ingest.errors import (
    AddressInUse,
    ConfigError,
    NotAStateFile,
    SchemaTooNew,
    StateError,
    StateOutgrown,
)
from choreo_ingest.logs import get_logger
from choreo_ingest.server.app import build_app
from choreo_ingest.server.connections import (
    KEEP_ALIVE_SECONDS,
    Connections,
    connection_cap,
    raise_open_file_limit,
)
from choreo_ingest.server.context import Server
from choreo_ingest.server.loop_log import loop_log
from choreo_ingest.server.security import answered_hosts, check_exposure, load_credentials
from choreo_ingest.service import Service
from choreo_ingest.store import StateLocation, StateRef, keeping_sessions, state_location

log = get_logger("choreo_ingest.server")

HTTP_SHUTDOWN_SECONDS = 5
"""Requests still open this long after SIGTERM are cut."""


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` stops it together with the loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve(
    config: Config,
    state: StateRef,
    clock: Clock,
    *,
    listen: str | None = None,
    insecure_no_auth: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT. ConfigError for a bad address or a missing token;
    AddressInUse for a busy port."""
    address = Address.parse(listen or config.serve.listen)
    given_by = "--listen" if listen else "serve.listen"
    credentials = load_credentials(config)
    if check_exposure(address, credentials, insecure_no_auth, given_by=given_by):
        log.warning(
            "api_exposed_without_auth",
            listen=str(address),
            message="--insecure-no-auth: anyone who reaches this address can reset providers "
            "and read the catalog",
        )
    if not address.is_loopback and credentials.events_secret is None:
        log.warning("events_open", listen=str(address), message=OPEN_EVENTS_WARNING)
    for what, secret in (
        ("token", credentials.api_token),
        ("events secret", credentials.events_secret),
    ):
        if secret is not None and (short := short_secret(secret)) is not None:
            log.warning("serve_secret_short", secret=what, message=f"the {what} is {short}")
    _refuse_what_holds_no_state(state_location(state))
    most = connection_cap(raise_open_file_limit())
    connections = Connections(config.serve.read_timeout, most, clock)
    sock = _bind(address, given_by, connections)
    with keeping_sessions(state) as location:
        service = Service(config, location, clock)
        hosts = answered_hosts(address, credentials, config)
        context = Server(config, service.state, clock, service, credentials, hosts)
        server = http_server(build_app(context), connections)
        loop_thread = threading.Thread(
            target=service.run, name="choreo-ingest-service", daemon=True
        )
        loop_thread.start()
        log.info("serving", listen=str(address), state_file=str(state))
        try:
            with loop_log(clock):
                asyncio.run(_serve(server, context, sock))
        finally:
            service.stop()  # the burst in flight ends after its page
            loop_thread.join(timeout=config.incremental.burst_length + 30)
            sock.close()
        if service.ended_by is not None:
            raise StateOutgrown(
                f"{service.ended_by}: serve ends, to be started again (with the release that "
                "migrated the state, once installed here)"
            )


def http_server(app: ASGIApp, connections: Connections) -> uvicorn.Server:
    """uvicorn serving `app` on the sockets given to its `serve` (made by `connections`), which
    closes the connections left without a request."""
    return _Uvicorn(
        uvicorn.Config(
            app,
            http=connections.protocol(),
            ws="none",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=HTTP_SHUTDOWN_SECONDS,
            server_header=False,
        )
    )


async def _serve(server: uvicorn.Server, context: Server, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    delay = context.config.serve.shutdown_delay

    def stop(**why: str) -> None:
        context.service.stop()
        if delay and not context.stopping.is_set():
            log.info("stopping", **why, after_seconds=delay)
            context.stopping.set()
            loop.call_later(delay, setattr, server, "should_exit", True)
            return
        log.info("stopping", **why)
        server.should_exit = True

    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, partial(stop, signal=signal.Signals(number).name))
    outgrown = partial(stop, reason="a newer release migrated the state")

    def on_end() -> None:  # from the service's thread
        loop.call_soon_threadsafe(outgrown)

    context.service.on_end = on_end
    await server.serve(sockets=[sock])


def _refuse_what_holds_no_state(location: StateLocation) -> None:
    """Another program's file, or a newer release's state, is refused at the start (exit 4): no
    tick could ever open it. A store that cannot be reached now (PostgreSQL down, a file locked)
    is left to the ticks, which say why (`tick_failed`) and try again."""
    try:  # read-only: nothing is made (no state yet is a StateError too, left to the ticks)
        location.open(readonly=True).close()
    except (NotAStateFile, SchemaTooNew):
        raise
    except StateError:
        return


def _bind(address: Address, given_by: str, connections: Connections) -> socket.socket:
    sock = connections.listener(socket.AF_INET6 if ":" in address.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        refused = AddressInUse if error.errno == errno.EADDRINUSE else ConfigError
        raise refused(
            f"cannot listen on {address}: {error.strerror or error}", path=given_by
        ) from None
    sock.set_inheritable(True)
    return sock
