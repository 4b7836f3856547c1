"""The provider interface: what a source of entities implements to be ingested incrementally."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config
from choreo_ingest.models import JSON, Delta, EntityIteratorResult, Event, QueuedItem


class QueueReader(Protocol):
    """Read access to a provider's durable work queues for the current cycle."""

    def read(self, queue: str, after: int, limit: int) -> Sequence[QueuedItem]:
        """Items of `queue` with a position greater than `after`, in order, at most `limit`."""
        ...


@dataclass(frozen=True)
class BurstContext:
    """What the engine hands a provider's `around()` once per burst (or per event drain)."""

    config: Config
    clock: Clock
    deadline: float
    """`clock.monotonic()` value after which no new work may start and no request may run on."""
    queues: QueueReader
    cancelled: Callable[[], bool]
    """True once SIGTERM/SIGINT asked the run to stop."""

    def remaining(self) -> float:
        return self.deadline - self.clock.monotonic()


@runtime_checkable
class IncrementalEntityProvider(Protocol):
    """A source walked in pages across bursts; every page is committed before the next starts.

    `next()` receives the cursor it returned last time (None at the start of a cycle) and returns
    one page. The cursor must survive a JSON round trip and stay small: push growing work lists
    onto the engine's queues (`EntityIteratorResult.queue_items`) and keep only positions.
    """

    @property
    def name(self) -> str: ...

    def around(self, burst: BurstContext) -> AbstractContextManager[Any]:
        """Set up (and afterwards tear down) what a burst needs, e.g. an HTTP client."""
        ...

    def next(self, context: Any, cursor: JSON) -> EntityIteratorResult: ...


@runtime_checkable
class EventHandlingProvider(IncrementalEntityProvider, Protocol):
    """A provider that can also apply delta updates from events."""

    def handle_event(self, context: Any, event: Event) -> Delta: ...


ProviderFactory = Callable[[Config], IncrementalEntityProvider]
"""What the `choreo_ingest.providers` entry point group and the built-in registry hold."""
