"""Plain data shared by every layer: provider states, run outcomes, entities, pages, events."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

JSON = Any
"""A value that survives `json.dumps` / `json.loads` unchanged."""


class ProviderState(enum.StrEnum):
    IDLE = "idle"  # never run, or after `reset`
    BURSTING = "bursting"  # a burst started (seen from another shell, or after a crash)
    INTERSTITIAL = "interstitial"  # a burst ended with work left
    RESTING = "resting"  # a cycle completed
    BACKING_OFF = "backing_off"  # a burst failed


class ProviderAction(enum.StrEnum):
    """What one `run` did for one provider (`--json`: `providers[].action`)."""

    BURST = "burst"  # a burst ran: the cycle completed, or paused with work left
    WAITING = "waiting"  # nothing was due
    FAILED = "failed"  # the burst failed (backoff scheduled), or the provider could not load
    INTERRUPTED = "interrupted"  # SIGTERM/SIGINT ended the burst; the last page was saved


class RunOutcome(enum.StrEnum):
    """What one `run` did overall (`--json`: `outcome`); the CLI maps it to the exit code."""

    BURST = "burst"  # at least one burst ran, none failed
    WAITING = "waiting"  # nothing was due
    FAILED = "failed"  # a provider failed; backoff scheduled
    INTERRUPTED = "interrupted"  # SIGTERM/SIGINT; the last page was checkpointed
    LOCKED = "locked"  # another run holds the lock; nothing done
    ERROR = "error"  # the run could not start or went wrong (config, state store, a bug)


@dataclass(frozen=True)
class Entity:
    """One Backstage catalog entity as a provider emits it."""

    kind: str
    namespace: str
    name: str
    body: Mapping[str, JSON]
    scope: str = ""
    """Where it sits in the source's hierarchy (`org/project/component`), for scoped removal."""

    @property
    def ref(self) -> str:
        return entity_ref(self.kind, self.namespace, self.name)


def entity_ref(kind: str, namespace: str, name: str) -> str:
    """Backstage's full entity ref, lower-cased kind: `component:acme/checkout`."""
    return f"{kind.lower()}:{namespace}/{name}"


@dataclass(frozen=True)
class QueueItem:
    """An item a provider pushes onto one of its durable work queues.

    `key` makes the push idempotent within a cycle: pushing the same key twice keeps the first.
    """

    queue: str
    key: str
    value: JSON


@dataclass(frozen=True)
class QueuedItem:
    """An item read back from a queue, with its position (strictly increasing within a queue)."""

    position: int
    key: str
    value: JSON


Facts = dict[str, str | None]
"""Provider facts to set (None: to remove)."""
PROBLEM_FACT = "problem"
"""A provider fact that is a health problem the provider reports in its pages."""
SKIPPED_FACT = "listingsSkipped"
"""A provider fact that is a health problem: listings its walk stepped over, the server failing
on them every time (`step_over`), their entities kept as an earlier cycle left them; cleared by
the end of a walk that stepped over none."""
SKIPPED_PATHS_FACT = "listingsSkippedPaths"
"""A provider fact, not shown: the paths of the listings `listingsSkipped` names, as JSON."""
UNAVAILABLE_FACT = "unavailable"
"""A provider fact that is a health problem: why the configured provider could not be loaded."""
EVENTS_HELD_FACT = "eventsHeldUntil"
"""A provider fact: until when (RFC 3339) its events wait, the API having failed the last
attempt to re-read one (`events.drain_inbox`)."""
EVENT_RETRIES_FACT = "eventRetries"
"""A provider fact, not shown: when events whose re-reads failed alone may be tried again
(`event_retries.EventRetries`)."""
SOURCE_FACT = "source"
"""A provider fact: what its current cycle reads (`SourceNamingProvider.source`), set as the
cycle begins."""
SOURCE_CYCLE_FACT = "sourceCycle"
"""A provider fact, not shown: the cycle `source` was set for. A cycle a release before it began
(one rolled back to) left a `source` that says nothing of that cycle."""


SOURCE_BEFORE_FACT = "sourceBefore"
"""A provider fact, not shown: the source of the cycle before the current one, where the two
differ."""
SOURCE_BEFORE_CYCLE_FACT = "sourceBeforeCycle"
"""A provider fact, not shown: the cycle `sourceBefore` and `sourcesAlternate` were set for
(a release before them, taking turns on the state, leaves them as they were)."""
API_SOURCE_FACT = "apiSource"
"""A provider fact, not shown: the source where a cycle last found the API it reads (the
OpenChoreo provider's root listing answered there), so that none found there later is not taken
for a setting to mend."""
SOURCES_ALTERNATE_FACT = "sourcesAlternate"
"""A provider fact that is a health problem: cycles read two sources in turn (two callers of
one state that name different sources)."""


def sources_alternate(facts: Mapping[str, str]) -> str | None:
    """The `sourcesAlternate` problem, if it was set for the cycle the source is stored for."""
    if facts.get(SOURCE_BEFORE_CYCLE_FACT) != facts.get(SOURCE_CYCLE_FACT):
        return None
    return facts.get(SOURCES_ALTERNATE_FACT)


def cycle_source(facts: Mapping[str, str], cycle_id: int) -> str | None:
    """The source stored for cycle `cycle_id` (None: none stored for it)."""
    return facts.get(SOURCE_FACT) if facts.get(SOURCE_CYCLE_FACT) == str(cycle_id) else None


def facts_shown(facts: Mapping[str, str], cycle_id: int, unshown: Sequence[str]) -> dict[str, str]:
    """The facts `status` shows as keys of their own: not those `unshown`, nor `sourceCycle`,
    `sourceBefore*`, `apiSource`, `eventRetries`, `listingsSkippedPaths` or `refreshFloodSince`,
    and `source` only when it was stored for cycle `cycle_id`, the one the record is in."""
    stale = SOURCE_FACT if cycle_source(facts, cycle_id) is None else None
    left_out = {
        *unshown,
        SOURCE_CYCLE_FACT,
        SOURCE_BEFORE_FACT,
        SOURCE_BEFORE_CYCLE_FACT,
        API_SOURCE_FACT,
        EVENT_RETRIES_FACT,
        SKIPPED_PATHS_FACT,
        FLOOD_SINCE_FACT,
        stale,
    }
    return {name: value for name, value in facts.items() if name not in left_out}


PURGED_FACT = "purgedAt"
"""When `reset --purge` emptied the provider's catalog; cleared when its next cycle completes.
Until then its completed cycles speak of a catalog that is gone: the feed does not call the
catalog complete, and `health` does not blame the source for owning nothing."""
REFRESH_REQUESTED_FACT = "refreshRequested"
"""A provider fact set without the run lock (by an event refused because the inbox was full):
the next run makes the provider due at once, as `refresh` would, and clears it."""
REFRESH_REASON_FACT = "refreshReason"
"""Why `refreshRequested` was set: EVENTS_LOST, or EVENT_ASKED (which never replaces it)."""
EVENTS_LOST = "events-lost"
"""Events were refused (the inbox was full) or dropped (too many pending)."""
EVENT_ASKED = "event-asked"
"""An event named what only a walk brings (`Delta.refresh`: a namespace served again)."""
FLOOD_SINCE_FACT = "refreshFloodSince"
"""Set with `refreshRequested` by a drain that dropped events arriving as a flood (`serve`'s,
which sees them arrive): when the flood began. A `run` beside `serve` sees no arrivals; while
the drops go on (the request renewed within a flood's window) it waits for the flood's end as
`serve` does, rather than begin the walk in the middle of it."""


@dataclass(frozen=True)
class IndexEntry:
    """A row of a provider's own durable lookup index: not a catalog entity, but what a provider
    needs to find again by key or by group (e.g. a workload, grouped by its component).

    Rows live across cycles; a row not written again in a completed cycle is pruned at its end.
    `value` None deletes the row.
    """

    table: str
    key: str
    group: str = ""
    value: JSON = None


IndexGroups = Callable[[str, Sequence[str]], Mapping[str, list[IndexEntry]]]
"""Reads the rows of an index table in each of some groups: (table, groups) -> rows by group."""


class SweepFollower(Protocol):
    """What a provider asks of its sweep (`writes.complete_cycle`): the rows of its index
    `tables` that the sweep prunes, in the groups where a row the cycle wrote waits (its value's
    JSON text holds `waiting`), are shown to `events`, which names the events to queue in the
    same transaction (in the provider's inbox, applied by the next drain), reading the rows that
    stay through `current` (those the cycle wrote)."""

    @property
    def tables(self) -> Sequence[str]: ...

    @property
    def waiting(self) -> str: ...

    def events(self, pruned: Sequence[IndexEntry], current: IndexGroups) -> list[JSON]: ...


@dataclass(frozen=True)
class EntityIteratorResult:
    """What one `next()` call produced: one page, committed by the engine in one transaction."""

    done: bool
    entities: Sequence[Entity] = ()
    cursor: JSON = None
    queue_items: Sequence[QueueItem] = ()
    counters: Mapping[str, int] = field(default_factory=dict)
    """Increments for persistent per-provider counters (e.g. `cursor_resets`, `requests`)."""
    index: Sequence[IndexEntry] = ()
    """Rows for the provider's lookup index, written in the page's transaction."""
    facts: Mapping[str, str | None] = field(default_factory=dict)
    """What the provider learnt about its source (`api: v1`), shown by `status` and the metrics;
    the fact `problem` is a health problem. None removes a fact."""
    removal_scopes: Sequence[str] = ()
    """Scopes a plugin's source says are gone: their entities leave with this page, as for a
    `deleted` event (`Delta.removal_scopes`), without the sweep's guards. The OpenChoreo provider
    sends none: a parent gone mid-walk is skipped and its subtree left to the guarded sweep."""
    removals: Sequence[str] = ()
    """Refs that this page's entities replace under another name (an API moved to a hashed name
    when a newcomer took its plain one): they leave before the page's entities are written, as a
    `Delta`'s removals do, and a ref the page writes is kept."""
    kept_scopes: Sequence[str] = ()
    """Scopes the cycle could not list (the OpenChoreo provider's listing the server keeps
    failing on): their entities and index rows count as seen in this cycle, so its sweep keeps
    them as the last cycle left them."""


@dataclass(frozen=True)
class Event:
    """An OpenChoreo change notification: says what changed, not the new content."""

    kind: str  # the resource's kind, in the source's own vocabulary (Component, Workload, ...)
    name: str
    action: str  # created | updated | deleted
    namespace: str | None = None  # the organization or namespace, for namespaced kinds
    project: str | None = None  # for org-era components

    def body(self) -> dict[str, str]:
        """The event as its JSON body (`event_input.to_event`'s input), `namespace` "" if none."""
        body = {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace or "",
            "action": self.action,
        }
        if self.project is not None:
            body["project"] = self.project
        return body


def in_scope(name: str, scope: str) -> bool:
    """Whether `name` (an entity's scope, an index key) is `scope` or below it."""
    return name == scope or name.startswith(scope + "/")


@dataclass(frozen=True)
class Delta:
    """What handling one event produced: entities to upsert and refs to remove."""

    upserts: Sequence[Entity] = ()
    removals: Sequence[str] = ()
    """Refs that leave, before the upserts are written (a reader of the change log that folds
    case then ends on the upsert of a live twin); a ref among the upserts is kept."""
    removal_scopes: Sequence[str] = ()
    """Remove every entity whose scope is one of these or lies below (`acme` takes `acme/x/y`),
    except the upserts of this delta: an updated component drops the APIs it no longer has."""
    index: Sequence[IndexEntry] = ()
    """Rows for the provider's lookup index, written in the delta's transaction."""
    refresh: bool = False
    """What the event names holds more than an event can bring (a namespace OpenChoreo serves
    again, its projects and components there all along): a fresh walk is requested, in the
    delta's transaction (the fact `refreshRequested`, as for events a full inbox refused)."""

    def then(self, later: Delta) -> Delta:
        """One delta that does this one's work, then `later`'s: where both write an entity or
        an index row, `later`'s stands, and an entity this one upserts that `later` removes
        (by ref, or in a scope it removes) leaves, unless `later` upserts it too."""
        scopes = tuple(later.removal_scopes)
        removed = set(later.removals)
        kept = [
            entity
            for entity in self.upserts
            if entity.ref not in removed and not any(in_scope(entity.scope, s) for s in scopes)
        ]
        upserts = {entity.ref: entity for entity in [*kept, *later.upserts]}
        return Delta(
            upserts=list(upserts.values()),
            removals=[*self.removals, *later.removals],
            removal_scopes=[*self.removal_scopes, *later.removal_scopes],
            index=[*self.index, *later.index],
            refresh=self.refresh or later.refresh,
        )


@dataclass
class ProviderRecord:
    """One row of `openchoreo_incremental_ingestion_state`."""

    name: str
    state: ProviderState = ProviderState.IDLE
    cycle_id: int = 0
    cursor: JSON = None
    next_action_at: float | None = None
    attempts: int = 0
    last_error: str | None = None
    last_burst_at: float | None = None
    last_burst_duration: float | None = None
    cycle_started_at: float | None = None
    last_completed_at: float | None = None
    last_cycle_duration: float | None = None
    blocked_removals: int = 0
    cursor_bytes: int = 0


@dataclass(frozen=True)
class PageStats:
    upserted: int
    unchanged: int
    refused: tuple[tuple[str, str], ...] = ()
    """(ref, the provider that has it): entities another provider wrote first, not written."""


@dataclass(frozen=True)
class SweepResult:
    removed: int
    blocked: int
    reason: str | None = None
    remaining: int | None = None
    """The provider's active entities once the sweep is done."""
    queued: int = 0
    """Events its follower (`SweepFollower`) named: queued with it, or pending already."""


@dataclass(frozen=True)
class Check:
    """One line of `choreo-ingest check`: what was checked, whether it passed, and what was
    found (or what to do about it). A warning passes but asks for a look."""

    name: str
    ok: bool
    detail: str
    warning: bool = False
    state_store: bool = False
    """A check of the state store: failed, it is a state store error (exit 4), as in `run`."""
