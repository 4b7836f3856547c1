"""Clients that hold connections open without asking anything: `serve` closes them, and keeps
file descriptors for everything else.

uvicorn closes an idle connection only once it has answered a request on it (its keep-alive
timeout), and forgets that timeout as soon as any byte arrives: a connection that sends
nothing, or half a request line, stays open for ever. asyncio accepts connections until the
process has no file descriptor left, and then the service's own files (the state, the modules
it imports) cannot be opened either. So `serve`:

- closes a connection that has not sent a request's headers `serve.readTimeout` after it was
  made or after the previous response (uvicorn's h11 protocol, pinned: uvicorn would pick its
  httptools one wherever httptools is installed);
- raises its soft limit of open files to the hard one (`raise_open_file_limit`) and keeps
  its connections RESERVED_FILES short of it: past that, each new connection makes room by
  closing the one that has waited longest for a request, and when every one is in a request,
  accept() waits a second (as asyncio's does when it runs out of file descriptors);
- takes no more connections in a turn of the loop once accept() failed for want of
  resources: asyncio would try (and log) again for each connection of the backlog.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from choreo_ingest.clock import Clock
from choreo_ingest.logs import Throttle, get_logger
from choreo_ingest.server.loop_log import OUT_OF_RESOURCES

log = get_logger("choreo_ingest.server")

KEEP_ALIVE_SECONDS = 5
"""An idle connection is closed this long after its last response (uvicorn's default)."""
RESERVED_FILES = 64
"""File descriptors kept from the connection cap for everything else: the state store, the
connections to OpenChoreo, the modules a burst imports, the log."""


def raise_open_file_limit() -> int | None:
    """Raise the soft limit of open files to the hard one, as servers do; the soft limit now in
    force (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # refused (macOS caps it below the hard limit)
            pass
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(open_files: int | None) -> int | None:
    """The most connections `serve` keeps open under a limit of `open_files`."""
    if open_files is None:
        return None
    return max(open_files - RESERVED_FILES, open_files // 2)


class Connections:
    """One server's connections: its limits, those open, and those that wait for a request
    (longest waiting first)."""

    def __init__(self, read_timeout: float, most: int | None, clock: Clock) -> None:
        self.read_timeout = read_timeout
        self.most = most
        self.waiting: dict[ClosingProtocol, None] = {}
        self.accepted = 0
        self.made = 0
        """Accepted connections given to their protocol: `accepted - made` are on their way."""
        self.lost = 0
        self.paused = False
        self._shed = Throttle(clock)

    def protocol(self) -> type[H11Protocol]:
        """The protocol class for uvicorn's `http`: its connections share these `Connections`."""
        connections = self

        class ServerProtocol(ClosingProtocol):
            shared = connections

        return ServerProtocol

    def listener(self, family: socket.AddressFamily) -> Listener:
        """A TCP socket (so: TCP_NODELAY), not yet bound, whose accept() keeps to the cap."""
        listener = Listener(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.connections = self
        return listener

    def full(self) -> bool:
        return self.most is not None and self.accepted - self.lost >= self.most

    def shed(self) -> None:
        """Close the connection that has waited longest for a request, at once."""
        next(iter(self.waiting)).drop(at_once=True)
        if closed := self._shed.count():
            log.warning(
                "connections_shed",
                message=f"at {self.most:,} open connections, the one waiting longest for a "
                "request is closed for each new one",
                closed=closed,
            )

    def pause_this_turn(self) -> None:
        """accept() takes no more connections in this turn of the loop."""
        self.paused = True
        asyncio.get_running_loop().call_soon(setattr, self, "paused", False)


class AtCapacity(OSError):
    """Every connection `serve` may keep is open and in a request."""


class Listener(socket.socket):
    """The listening socket, whose accept() asyncio calls in a loop, a backlog's worth a turn."""

    connections: Connections

    def accept(self) -> tuple[socket.socket, Any]:
        shared = self.connections
        if shared.paused:  # asyncio's loop of accept() calls would log and retry each call
            raise BlockingIOError
        full = shared.full()
        try:
            if full and not shared.waiting:
                if shared.accepted > shared.made:  # they wait for a request from the next turn
                    raise BlockingIOError
                raise AtCapacity(
                    errno.EMFILE,
                    f"{shared.most:,} connections open, the most serve keeps, all in a request",
                )
            accepted = super().accept()
        except OSError as error:
            if error.errno in OUT_OF_RESOURCES:  # asyncio waits a second, then accepts again
                shared.pause_this_turn()
            raise
        shared.accepted += 1
        if full:
            shared.shed()
            shared.pause_this_turn()  # until the descriptor of the one closed is freed
        return accepted


class ClosingProtocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection left without a request (see above)."""

    shared: ClassVar[Connections]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.shared.made += 1
        super().connection_made(transport)
        self._wait_for_request()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request's headers came in
            self._stop_waiting()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        if self.cycle is cycle and not self.transport.is_closing():  # none pipelined behind it
            self._wait_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self.shared.lost += 1
        super().connection_lost(exc)

    def drop(self, *, at_once: bool = False) -> None:
        self._stop_waiting()
        if at_once:
            self.transport.abort()
        else:
            self.transport.close()

    def _wait_for_request(self) -> None:
        self._stop_waiting()
        self._deadline = self.loop.call_later(self.shared.read_timeout, self.drop)
        self.shared.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.shared.waiting.pop(self, None)
