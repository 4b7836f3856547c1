"""The provider interface: what a source of entities implements to be ingested incrementally."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config
from choreo_ingest.models import (
    JSON,
    Check,
    Delta,
    EntityIteratorResult,
    Event,
    IndexEntry,
    QueuedItem,
    SweepFollower,
)


class QueueReader(Protocol):
    """Read access to a provider's durable work queues for the current cycle."""

    def read(self, queue: str, after: int, limit: int) -> Sequence[QueuedItem]:
        """Items of `queue` with a position greater than `after`, in order, at most `limit`."""
        ...


class IndexReader(Protocol):
    """Read access to a provider's durable lookup index (`EntityIteratorResult.index`)."""

    def by_key(
        self, table: str, keys: Sequence[str], *, current_only: bool = False
    ) -> dict[str, IndexEntry]:
        """The rows of `table` with these keys (`current_only`: written in the current cycle);
        absent keys are left out."""
        ...

    def by_group(
        self, table: str, groups: Sequence[str], *, current_only: bool = False
    ) -> dict[str, list[IndexEntry]]:
        """Each group's rows ordered by key (`current_only`: written in the current cycle)."""
        ...

    def by_group_prefix(self, table: str, prefix: str) -> list[IndexEntry]:
        """The rows of the groups that begin with `prefix`, ordered by group and key: a scan of
        the table, for what is rare."""
        ...

    def entity_scopes(self, refs: Sequence[str]) -> dict[str, str]:
        """The scopes of those of `refs` the provider's catalog holds, by ref (where a removed
        entity was, when nothing else says it)."""
        ...


class NoIndex:
    """The index of a provider that has none (custom providers built before the index)."""

    def by_key(
        self, table: str, keys: Sequence[str], *, current_only: bool = False
    ) -> dict[str, IndexEntry]:
        return {}

    def by_group(
        self, table: str, groups: Sequence[str], *, current_only: bool = False
    ) -> dict[str, list[IndexEntry]]:
        return {group: [] for group in groups}

    def by_group_prefix(self, table: str, prefix: str) -> list[IndexEntry]:
        return []

    def entity_scopes(self, refs: Sequence[str]) -> dict[str, str]:
        return {}


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
    index: IndexReader = field(default_factory=NoIndex)
    """The provider's lookup index; sees every page `next()` returned before."""
    facts: Mapping[str, str] = field(default_factory=dict)
    """The facts the provider's pages stored last (`EntityIteratorResult.facts`)."""
    last_failure: str | None = None
    """Why the provider's burst before this one failed (None: it did not, or an event drain)."""

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


@runtime_checkable
class SweepFollowingProvider(IncrementalEntityProvider, Protocol):
    """A provider with events to queue when its sweep prunes rows of its index (OpenChoreo:
    a name freed by a claimant gone, handed on by the next drain)."""

    @property
    def sweep_follower(self) -> SweepFollower: ...


@runtime_checkable
class ReadingAheadProvider(EventHandlingProvider, Protocol):
    """An event-handling provider that can read, at once, what its next events will read."""

    def read_ahead(self, context: Any, events: Sequence[Event]) -> None:
        """Read what handling `events` (the next ones, in order) will read, as its handling
        would read it; `handle_event` may then answer from that. Called within the `around()`
        its events are handled in, after all of them arrived."""
        ...


@runtime_checkable
class ProbingProvider(EventHandlingProvider, Protocol):
    """An event-handling provider that can ask its source something small of its own."""

    def probe(self, context: Any) -> None:
        """Read one small thing of the source that is no event's object (OpenChoreo: the first
        item of its root listing), raising as a read does: whether the source answers at all,
        when an event's read failed and no event after it read (`events.drain_inbox`). Called
        within the `around()` its events are handled in."""
        ...


@runtime_checkable
class EventCheckingProvider(EventHandlingProvider, Protocol):
    """An event-handling provider that checks events before they are queued."""

    @property
    def max_pending_events(self) -> int | None:
        """Past this many pending events, and past as many as the pages of the provider's last
        complete walk (`event_backlog.Limit`: re-reading fewer events than a walk has pages is
        taken to cost less than the walk), the backlog is dropped and a fresh walk scheduled."""
        ...

    def event_problem(self, body: Mapping[str, Any]) -> str | None:
        """Why `body` is not an event this provider can apply, or None."""
        ...

    def is_ignored(self, body: Mapping[str, Any]) -> bool:
        """A valid event about something the provider does not ingest (counted, not queued)."""
        ...


@runtime_checkable
class CheckingProvider(IncrementalEntityProvider, Protocol):
    """A provider that can check, before any run, that its source is reachable and usable."""

    def preflight(self, clock: Clock) -> list[Check]: ...


@runtime_checkable
class AdvisingProvider(IncrementalEntityProvider, Protocol):
    """A provider that knows which of its settings to change when a burst commits no page."""

    def no_page_advice(self) -> str: ...


@runtime_checkable
class SourceNamingProvider(IncrementalEntityProvider, Protocol):
    """A provider that can say what it reads (a server's address; never a credential): a cycle
    in progress that was begun on another source is begun again rather than finished on this
    one, whose pages would be mixed with the other's and swept by what it had."""

    @property
    def source(self) -> str: ...

    @property
    def source_key(self) -> str:
        """The setting that names the source, for the line that says it changed."""
        ...


ProviderFactory = Callable[[Config], IncrementalEntityProvider]
"""What the `choreo_ingest.providers` entry point group and the built-in registry hold."""
