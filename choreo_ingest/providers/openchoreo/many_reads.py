"""Many GETs at once (`OpenChoreoClient.get_many`: the org era's component details; `get_each`:
an event drain's read-ahead), one at a time while the server answers fast, else on a thread
pool; a 404 gives a `Gone` in its place.

It knows nothing of HTTP: it calls the client's `get_json` and times the answers with the
client's clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from choreo_ingest.clock import Clock
from choreo_ingest.errors import NotFoundError, ProviderError, TransientError

Params = Mapping[str, str | int]
FAST_ANSWER_SECONDS = 0.003
"""A server that answers a request in less than this gets its detail calls one at a time: on a
server that answers at once, `maxConcurrentRequests` threads cost a fifth more CPU per request
than one connection (bench/README.md, benchmark 9), for no gain in time."""


@dataclass(frozen=True)
class Gone:
    """The marker, in place of an answer, of a resource that answered 404 (deleted meanwhile)."""

    path: str
    code: str | None = None
    error: NotFoundError | None = field(default=None, compare=False, repr=False)
    """The 404 itself, for telling the API's answer from a proxy's (`confirm_gone`)."""


@dataclass(frozen=True)
class Failed:
    """`get_each`'s marker for a request that failed otherwise."""

    error: ProviderError


NOT_SENT: Any = object()
"""`get_each`'s marker for a request it did not send (a failure for want of a server came
first)."""


class ManyReads:
    """One client's reads of many resources at once, and the thread pool they may use."""

    def __init__(
        self,
        get_json: Callable[[str, Params], Any],
        clock: Clock,
        *,
        max_concurrent: int,
        sequential_below: float = FAST_ANSWER_SECONDS,
    ) -> None:
        self._get_json = get_json
        self._clock = clock
        self._max_concurrent = max_concurrent
        self._sequential_below = sequential_below
        self._answer_time: float | None = None
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def get_many(self, requests: Sequence[tuple[str, Params]]) -> list[Any | Gone]:
        """GET each (path, params); results in input order.

        One at a time while the server answers faster than `sequential_below` (the first
        request of every call is timed alone, and so is each one after it while that holds),
        else the rest with up to `maxConcurrentRequests` in flight: threads hide the time spent
        waiting for answers, and with next to none to hide they only add CPU.

        A 404 gives a `Gone` in its place; any other failure raises (the first one in input
        order among those that failed) and cancels what has not started yet.
        """
        return self._read(requests, self._get_or_not_found)

    def get_each(
        self,
        requests: Sequence[tuple[str, Params]],
        read: Callable[[str, Params], Any],
        stopped: threading.Event,
    ) -> list[Any]:
        """As `get_many`, through `read`, but no failure raises: each comes back in its place,
        a `Failed`. The first failure for want of a working server (a TransientError: an
        outage, a 429, the deadline) sets `stopped`; once it is set, requests not yet sent are
        not sent (NOT_SENT): they would only add to the trouble."""

        def each(path: str, params: Params) -> Any:
            if stopped.is_set():
                return NOT_SENT
            try:
                return _not_found_as_gone(read, path, params)
            except TransientError as error:
                stopped.set()
                return Failed(error)
            except ProviderError as error:
                return Failed(error)

        return self._read(requests, each)

    def _read(
        self, requests: Sequence[tuple[str, Params]], read: Callable[[str, Params], Any]
    ) -> list[Any]:
        results: list[Any] = []
        while len(results) < len(requests) and (not results or self._answers_fast()):
            path, params = requests[len(results)]
            started = self._clock.monotonic()
            results.append(read(path, params))
            self._note_answer_time(self._clock.monotonic() - started)
        if len(results) < len(requests):
            results += self._concurrently(requests[len(results) :], read)
        return results

    def _answers_fast(self) -> bool:
        return self._answer_time is not None and self._answer_time < self._sequential_below

    def _note_answer_time(self, seconds: float) -> None:
        """A moving average of the time one request takes, timed alone: one slow answer (a
        pause of the server's) does not switch a fast server to threads."""
        known = self._answer_time
        self._answer_time = seconds if known is None else 0.9 * known + 0.1 * seconds

    def _concurrently(
        self, requests: Sequence[tuple[str, Params]], read: Callable[[str, Params], Any]
    ) -> list[Any]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self._max_concurrent, thread_name_prefix="openchoreo"
            )
        futures = [self._pool.submit(read, path, params) for path, params in requests]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        failed = [future for future in futures if future in done and future.exception()]
        if failed:
            wait([future for future in pending if not future.cancelled()])
            error = failed[0].exception()
            assert error is not None
            raise error
        return [future.result() for future in futures]

    def _get_or_not_found(self, path: str, params: Params) -> Any | Gone:
        return _not_found_as_gone(self._get_json, path, params)


def _not_found_as_gone(read: Callable[[str, Params], Any], path: str, params: Params) -> Any:
    try:
        return read(path, params)
    except NotFoundError as gone:
        return Gone(path=path, code=gone.code, error=gone)
