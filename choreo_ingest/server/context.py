"""What every route of `serve` stands on: the `Server` (the settings, the service, the secrets,
the registry), and the one way a route reaches the core: `in_thread`, in a worker thread, the
core's errors turned into the HTTP status each means.

Every look at the state store is made there, `exists()` and the check of a provider's name
(`provider_of`, `require_state`) included: the store may be PostgreSQL, whose connect alone can
take up to its timeout, and the event loop (the event webhook's, `/healthz`'s) never waits on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config
from choreo_ingest.errors import (
    AnswerTooLarge,
    ChangesGone,
    ChoreoIngestError,
    ConfigError,
    InboxFull,
    LockHeld,
    StateError,
)
from choreo_ingest.provider_scope import ProviderScope, checked_provider
from choreo_ingest.reporting import no_state_health
from choreo_ingest.server.requests import HTTPProblem
from choreo_ingest.server.security import Credentials
from choreo_ingest.service import Service
from choreo_ingest.store import SqliteLocation, StateLocation

INBOX_FULL_RETRY_SECONDS = 60
UNAVAILABLE_RETRY_SECONDS = 30
"""The `Retry-After` of any other 503 (the state store cannot be read, or there is none yet)."""
OPERATOR_THREADS = 4
"""Operator requests (refresh, reset, approve) that may hold a worker thread at once."""


@dataclass
class Server:
    """What the routes need: the settings, the loop they report to, the secrets they check."""

    config: Config
    state: StateLocation
    clock: Clock
    service: Service
    credentials: Credentials = field(default_factory=Credentials)
    hosts: frozenset[str] | None = None
    """The names besides localhost and IP addresses it answers (`security.answered_hosts`);
    None: every name."""
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    operator_turns: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
    """Made in the event loop of the first operator request (`as_operator`), with that loop."""
    inbox_writes: threading.Lock = field(default_factory=threading.Lock)
    """Taken by each event request while it writes an inbox in SQLite (`event_turn`)."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set at SIGTERM while `serve.shutdownDelay` runs: every answer closes its connection and
    `/readyz` is not ready, so that callers move to another replica before the port closes."""

    def __post_init__(self) -> None:
        # No `choreo_ingest_http_requests_created`: `/metrics` is the textfile's series plus
        # these, written alike (no `_created` samples; a counter's start is its first scrape).
        # prometheus-client has no per-registry switch: this is the process's, serve's alone.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.requests = Counter(
            "choreo_ingest_http_requests",
            "HTTP requests served by `choreo-ingest serve`, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )


Handler = Callable[[Request], Awaitable[Response]]


def in_thread(server: Server, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`work` in a worker thread, its ChoreoIngestError turned into the HTTP status it means."""

    async def call() -> Any:
        try:
            return await run_in_threadpool(work, *args, **kwargs)
        except ChangesGone as error:
            position = {"storeId": error.store_id, "oldestSeq": error.oldest_seq}
            raise HTTPProblem(410, str(error), fields=position) from None
        except AnswerTooLarge as error:
            raise HTTPProblem(413, str(error)) from None
        except InboxFull as error:
            if error.never_fits:
                raise HTTPProblem(413, str(error)) from None
            retry = {"Retry-After": str(INBOX_FULL_RETRY_SECONDS)}
            raise HTTPProblem(503, str(error), retry) from None
        except LockHeld as error:
            retry = {"Retry-After": str(int(server.config.incremental.burst_length) + 1)}
            raise HTTPProblem(409, str(error), retry) from None
        except StateError as error:
            raise HTTPProblem(503, str(error)) from None
        except ConfigError as error:
            raise HTTPProblem(400, str(error)) from None
        except ChoreoIngestError as error:
            raise HTTPProblem(500, str(error)) from None

    return call()


async def as_operator(server: Server, work: Callable[..., Any], *args: Any) -> Any:
    """`in_thread` for a request that may wait for the run lock (up to a burst): at most
    OPERATOR_THREADS of them hold a worker thread at once, the others wait their turn here, so
    that waiting operators never take every thread the reads and the events need."""
    loop = asyncio.get_running_loop()
    if server.operator_turns is None or server.operator_turns[0] is not loop:
        server.operator_turns = (loop, asyncio.Semaphore(OPERATOR_THREADS))
    async with server.operator_turns[1]:
        return await in_thread(server, work, *args)


async def provider_of(server: Server, request: Request, scope: ProviderScope) -> str:
    """The request's provider, checked in a worker thread (a name the config lacks is looked
    for in the state): 404 unknown, 503 the store cannot be read."""
    name = request.path_params.get("provider") or request.query_params.get("provider")
    if not name:
        raise HTTPProblem(400, "name the provider: /providers/{provider}/... or ?provider=")

    def check() -> str:
        try:
            return checked_provider(server.config, server.state, name, scope)
        except ConfigError as error:
            raise HTTPProblem(404, str(error)) from None

    checked: str = await in_thread(server, check)
    return checked


EVENT_TURN_SECONDS = 7.0
"""How long an event post waits for its turn to write the inbox."""
EVENT_ANSWER_SECONDS = 9.0
"""How long its turn and its write may take together: under the 10 s OpenChoreo's event
forwarder gives a whole request, so that its 503 reaches a sender still waiting (one that has
hung up takes the post as cancelled, and does not retry even where retries are set)."""
LEAST_WRITE_SECONDS = 0.5
"""The wait for SQLite's write lock a post that had its turn late still gets."""


@contextmanager
def event_turn(server: Server) -> Iterator[float | None]:
    """For a worker thread: an event post's turn to write an inbox in SQLite, and how long its
    write may wait for SQLite's lock (a cron `run`'s page, a checkpoint). Concurrent posts
    (the forwarder has 4 workers; a flood more) take turns here rather than poll SQLite's busy
    lock, which lets one wait past its timeout (a 503: the forwarder tries once) while others
    write; past EVENT_TURN_SECONDS without one, a 503 as SQLite's busy timeout gave. PostgreSQL
    takes concurrent writers as they come: no turns (one would wait for another's connect)."""
    if not isinstance(server.state, SqliteLocation):
        yield None
        return
    started = server.clock.monotonic()
    if not server.inbox_writes.acquire(timeout=EVENT_TURN_SECONDS):
        raise StateError(f"state store {server.state}: busy (other event posts are being stored)")
    try:
        waited = server.clock.monotonic() - started
        yield max(EVENT_ANSWER_SECONDS - waited, LEAST_WRITE_SECONDS)
    finally:
        server.inbox_writes.release()


def no_state_problem(server: Server) -> str | None:
    """For a worker thread: that there is no state yet, in `/health`'s words; None when there is
    one (a store that cannot say raises StateError)."""
    if server.state.exists():
        return None
    problem: str = no_state_health(server.state)["problems"][0]
    return problem


def require_state(server: Server) -> None:
    """For a worker thread: 503 when there is no state yet (a store that cannot say, StateError,
    is `in_thread`'s 503)."""
    problem = no_state_problem(server)
    if problem is not None:
        raise HTTPProblem(503, problem)


def carries_token(server: Server, request: Request) -> bool:
    """Whether the request may read catalog content: it carries the API token, or none is set."""
    return server.credentials.api_allows(request.headers.get("authorization"))


def require_token(server: Server, request: Request) -> None:
    if not carries_token(server, request):
        raise HTTPProblem(
            401, "a valid bearer token is required", {"WWW-Authenticate": 'Bearer realm="api"'}
        )
