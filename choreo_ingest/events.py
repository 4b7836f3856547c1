"""Event-driven delta updates: taking events into the inbox, and draining it at the start of a run.

An event says what changed, not the new content: the provider re-reads that one resource and the
resulting delta goes through the same tables as a page, so the sweep, the change log and the
metrics stay exact.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from choreo_ingest.clock import Clock, parsed_time, rfc3339
from choreo_ingest.config import DEFAULT_INBOX_CAPACITY, Config
from choreo_ingest.engine import burst_context
from choreo_ingest.errors import (
    AuthError,
    ChoreoIngestError,
    ConfigError,
    ConnectDeadlineExceeded,
    DeadlineExceeded,
    InboxFull,
    LockHeld,
    TransientError,
    needs_mending,
)
from choreo_ingest.event_input import Rejected, parse_events, to_event
from choreo_ingest.logs import get_logger, scrub_secrets
from choreo_ingest.models import (
    EVENT_ASKED,
    EVENTS_HELD_FACT,
    EVENTS_LOST,
    REFRESH_REASON_FACT,
    REFRESH_REQUESTED_FACT,
    ProviderState,
)
from choreo_ingest.providers.base import (
    EventCheckingProvider,
    EventHandlingProvider,
    IncrementalEntityProvider,
    ReadingAheadProvider,
)
from choreo_ingest.providers.registry import load_provider
from choreo_ingest.schedule import after_refresh, backoff_step, events_held_at, refresh_waits
from choreo_ingest.store import InboxEvent, StateRef, Store, state_location

log = get_logger("choreo_ingest.events")

MAX_EVENT_ATTEMPTS = 5
"""An event whose re-read failed this many times is parked (shown by `status`), not retried."""
FLOOD_EVENTS = 200
FLOOD_SECONDS = 5.0
"""More events than FLOOD_EVENTS in FLOOD_SECONDS (40 a second) are a flood (`ArrivalRate`)
when nearly all of them (REPLAY_SHARE) are `created`: the event forwarder's start, which sends
`created` for every object and costs more to re-read (2-3 requests an event) than a walk."""
REPLAY_SHARE = 0.9
"""The share of `created` events that makes a flood the forwarder's start: a deploy or a
controller that changes many objects at once sends `updated`, each worth its re-read."""
READ_AHEAD_EVENTS = 20
"""Events whose reads a drain sends at once (`ReadingAheadProvider`) before it applies them: a
few rounds of `maxConcurrentRequests`, after the drain's first event, which has the whole
`burstLength` to itself. A read-ahead has half the time left (`OpenChoreoClient.read_ahead`);
what it did not read each event reads itself."""
SETTLE_SECONDS = 2.0
"""An `updated` event waits this long after it arrived before it is applied. OpenChoreo's event
forwarder sends the first update of an object and drops the others that follow within 1 s
(`internal/eventforwarder/forwarder.go`, `debounceWindow`): read at once, the object could be
read before the last of them, which no event would then report."""


@dataclass(frozen=True)
class EventReceipt:
    """What became of events handed in (`event`, serve's event routes)."""

    provider: str
    stored: int
    ignored: int
    rejected: list[Rejected]
    created: int = 0
    """Of those stored, the `created` events (what `ArrivalRate` tells a replay by)."""
    made_state: bool = False
    """No state was there: one was made for these events (a new install's, or a mistyped
    `--db`'s)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "ignored": self.ignored,
            "rejected": [{"index": item.index, "problem": item.problem} for item in self.rejected],
        }


def receive_events(
    state: StateRef,
    config: Config,
    provider_name: str,
    text: str,
    clock: Clock,
    *,
    provider: IncrementalEntityProvider | None = None,
) -> EventReceipt:
    """Check events as the provider (loaded, unless given) would apply them and store the valid
    ones in its inbox (no run lock, no API call). InboxFull when the inbox is full: then a
    refresh is scheduled."""
    provider = provider or load_provider(provider_name, config)
    parsed = parse_events(text, provider)
    stored, made = stored_events(
        state,
        provider_name,
        parsed.valid,
        clock,
        rejected=len(parsed.rejected),
        ignored=parsed.ignored,
        capacity=config.inbox_capacity,
    )
    created = sum(body.get("action") == "created" for body in parsed.valid) if stored else 0
    return EventReceipt(provider_name, stored, parsed.ignored, parsed.rejected, created, made)


@dataclass(frozen=True)
class InboxHeld:
    """A drain that stopped on the way to the API failing (upstream trouble, or a setting to
    mend: a token grant refused, a secret file gone): the provider's events wait until `until`."""

    provider: str
    until: float
    error: str
    mendable: bool = False
    """Held by a setting to mend (the identity provider refused the token grant): a `run` says
    exit 2, as for a burst that met it, not 3."""


@dataclass
class DrainStats:
    applied: int = 0
    retried: int = 0
    parked: int = 0
    upserted: int = 0
    removed: int = 0
    dropped: int = 0
    """Events dropped unread because the backlog was past the provider's limit."""
    held: list[InboxHeld] = field(default_factory=list)
    """The drains that stopped on the way to the API failing (a run with any is `failed`)."""

    def counts(self) -> dict[str, int]:
        return {name: value for name, value in vars(self).items() if isinstance(value, int)}

    def add(self, other: DrainStats) -> None:
        for name, value in other.counts().items():
            setattr(self, name, getattr(self, name) + value)
        self.held.extend(other.held)


def stored_events(
    state: StateRef,
    provider: str,
    bodies: list[dict[str, Any]],
    clock: Clock,
    *,
    rejected: int = 0,
    ignored: int = 0,
    capacity: int = DEFAULT_INBOX_CAPACITY,
) -> tuple[int, bool]:
    """Put events in the inbox without the run lock (a burst may be running); count `rejected`
    and `ignored` ones (for `choreo_ingest_events_total{outcome}`). Returns how many were stored,
    and whether the state was made for them (none was there).

    Past `capacity` pending events the new ones are refused (InboxFull) and the next run
    refreshes the provider: the changes they carried reach the catalog through a fresh walk."""
    with state_location(state).open() as store:
        pending = store.pending_migrations()
        made = bool(pending) and not store.applied_migrations()  # asked only of a schema behind
        if pending:
            _migrated(store, state, clock)
        try:
            stored = len(store.add_events(provider, bodies, clock.now(), capacity=capacity))
        except InboxFull:
            request_refresh(store, provider, clock.now())
            raise
        if rejected or ignored:
            store.bump_counters(provider, {"events_rejected": rejected, "events_ignored": ignored})
        return stored, made


SCHEMA_WAIT_SECONDS = 10.0
"""How long `event` waits for a run that holds the lock to migrate the schema, or to let go."""


def _migrated(store: Store, state: StateRef, clock: Clock) -> None:
    """Bring a new (or older) state file's schema up to date, under the run lock. A run that
    holds the lock migrates first thing, and a run of an older release (an upgrade under cron)
    never does but lets go within its burst: wait for either instead of giving up (an event
    must not be lost because cron started a run at the same moment)."""
    give_up_at = clock.monotonic() + SCHEMA_WAIT_SECONDS
    while True:
        try:
            with state_location(state).run_lock():
                store.migrate()
            return
        except LockHeld:
            if not store.pending_migrations():
                return
            if clock.monotonic() >= give_up_at:
                raise
            clock.sleep(0.05)


def purge_events(state: StateRef, provider: str | None = None) -> int:
    """Empty the inbox (of one provider), pending and parked events alike. Takes no run lock, as
    `event` takes none: a drain that meets a purged event has nothing left to delete. Returns how
    many events were removed."""
    if not state_location(state).exists():
        return 0
    with state_location(state).open() as store:
        store.require_current_schema()
        return store.purge_events(provider)


class ArrivalRate:
    """Whether events are arriving as a flood: more than FLOOD_EVENTS in the last
    FLOOD_SECONDS, nearly all `created`. `serve` applies events as they come, so a forwarder's
    start (`created` for every object) never piles up past `maxPending` before a drain, and was
    re-read one object at a time; while the flood lasts, its drains drop the inbox for a fresh
    walk instead. As many `updated` events (a deploy) are applied: dropping them gave up the
    cycle in progress for a walk of the whole platform. Events are counted by whoever stores
    them (another thread); safe to share."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._arrivals: deque[tuple[float, bool]] = deque(maxlen=FLOOD_EVENTS)
        """(monotonic time, whether `created`) of the latest events."""

    def add(self, count: int, created: int = 0) -> None:
        """`count` events arrived, `created` of them `created` events."""
        now = self._clock.monotonic()
        created = min(created, count)
        with self._lock:
            self._arrivals.extend([(now, False)] * min(count - created, FLOOD_EVENTS))
            self._arrivals.extend([(now, True)] * min(created, FLOOD_EVENTS))

    def flooding(self) -> bool:
        with self._lock:
            if len(self._arrivals) < FLOOD_EVENTS:
                return False
            recent = self._clock.monotonic() - self._arrivals[0][0] <= FLOOD_SECONDS
            created = sum(is_created for _, is_created in self._arrivals)
            return recent and created >= REPLAY_SHARE * FLOOD_EVENTS


def drain_inbox(
    store: Store,
    provider: EventHandlingProvider,
    config: Config,
    clock: Clock,
    cancelled: Callable[[], bool],
    deadline: float | None = None,
    flooding: Callable[[], bool] | None = None,
) -> DrainStats:
    """Apply this provider's pending events in arrival order, until `deadline` (monotonic;
    `burstLength` from now by default).

    A failed event keeps its place with one more attempt (parked after MAX_EVENT_ATTEMPTS).
    A transient or auth failure says the API is unwell, and a setting to mend (ConfigError)
    concerns every event too (as does a first event whose connection or token never came up,
    or that timed out after an error answer), so the drain stops there instead of spending
    every event's attempts, and the events wait (`eventsHeldUntil`) for the backoff step of that
    event's attempts: `serve` drains every second, and an outage of seconds would park it.
    Any other failure of a `created`/`updated` event concerns that event alone (bad data, a
    bug in the provider), so the events after it still apply: such an event re-reads the state
    when it is retried, so applying it late cannot undo a newer event. A failed `deleted` event
    (which could) always stops the drain. Running out of the burst's time, or being asked to
    stop, ends the drain without counting an attempt, unless the event ran out of a whole
    `burstLength` of its own.
    """
    stats = DrainStats()
    limit = provider.max_pending_events if isinstance(provider, EventCheckingProvider) else None
    if limit is not None:
        count = store.pending_event_count(provider.name)
        flood = count > 0 and flooding is not None and flooding()
        if count > limit or flood:
            stats.dropped = _drop_backlog(store, provider.name, limit, clock, flood=flood)
            return stats
    now = clock.now()
    held = store.facts(provider.name).get(EVENTS_HELD_FACT)
    if held is not None:
        if events_held_at(parsed_time(held), now, config.incremental):
            return stats
        store.set_facts(provider.name, {EVENTS_HELD_FACT: None}, now)
    pending = [item for item in store.pending_events(provider.name) if _settled(item, now)]
    if not pending:
        return stats
    unwell: tuple[InboxEvent, Exception] | None = None
    cycle_id = store.load_provider(provider.name).cycle_id
    context = burst_context(
        config, store, clock, provider.name, cycle_id, cancelled=cancelled, deadline=deadline
    )
    with provider.around(context) as provider_context:
        for number, item in enumerate(pending):
            if cancelled() or context.remaining() <= 0:
                break
            if number % READ_AHEAD_EVENTS == 1:  # the first goes alone: it may need it all
                ahead = pending[number : number + READ_AHEAD_EVENTS]
                _read_ahead(provider, provider_context, ahead)
                if cancelled() or context.remaining() <= 0:
                    break
            try:
                delta = provider.handle_event(provider_context, to_event(item.body))
            except DeadlineExceeded as error:
                # Out of time: the next run goes on from this event. Unless it had a whole
                # burstLength to itself: then it never fits one, and it counts as failed
                # (parked in the end) rather than holding up every event after it for good.
                if deadline is None and number == 0 and not cancelled():
                    failed = _too_long(error, config)
                    parked = _count_failure(store, provider.name, item.seq, failed, stats)
                    # The way to the API (no connection; an error answer before the timeout),
                    # not this event: all of them wait.
                    if not parked and (isinstance(error, ConnectDeadlineExceeded) or error.status):
                        unwell = item, error
                break
            except Exception as error:
                if cancelled():
                    break
                parked = _count_failure(store, provider.name, item.seq, error, stats)
                api_unwell = isinstance(error, (TransientError, AuthError, ConfigError))
                if not parked and api_unwell:
                    unwell = item, error
                if not parked and (api_unwell or item.body.get("action") == "deleted"):
                    break
                continue
            page, removed = store.apply_event(provider.name, cycle_id, item.seq, delta, clock.now())
            stats.applied += 1
            stats.upserted += page.upserted
            stats.removed += removed
    if unwell is not None:
        item, cause = unwell
        until = clock.now() + backoff_step(item.attempts + 1, config.incremental)
        store.set_facts(provider.name, {EVENTS_HELD_FACT: rfc3339(until)}, clock.now())
        held_by = InboxHeld(provider.name, until, _failure_text(cause), needs_mending(cause))
        stats.held.append(held_by)
    log.info("events_applied", provider=provider.name, **stats.counts())
    return stats


def _too_long(error: DeadlineExceeded, config: Config) -> DeadlineExceeded:
    """The failure of an event that had a whole burstLength, with what to change: not for a
    connection that never came up, whose own advice names the server's address, nor after an
    error answer, which the message names."""
    if isinstance(error, ConnectDeadlineExceeded) or error.status is not None:
        return error
    seconds = config.incremental.burst_length
    return DeadlineExceeded(
        f"{error}: its re-reads do not fit in burstLength ({seconds:g} s); raise "
        "openchoreo.incremental.burstLength",
        method=error.method,
        path=error.path,
        config_key="openchoreo.incremental.burstLength",
    )


def _read_ahead(provider: EventHandlingProvider, context: Any, items: list[InboxEvent]) -> None:
    """Let a provider read at once what the next events will read (`ReadingAheadProvider`):
    as many requests in flight as it allows, instead of one event's at a time."""
    if not isinstance(provider, ReadingAheadProvider):
        return
    try:
        provider.read_ahead(context, [to_event(item.body) for item in items])
    except Exception as error:  # a bug: each event still reads what it needs itself
        log.warning(
            "read_ahead_crashed", provider=provider.name, error=f"{type(error).__name__}: {error}"
        )


def _settled(item: InboxEvent, now: float) -> bool:
    """Whether `item` may be applied now (an `updated` event waits SETTLE_SECONDS; one that
    arrived "later" than now, by a clock set back, does not wait)."""
    age = now - item.received_at
    return item.body.get("action") != "updated" or not 0 <= age < SETTLE_SECONDS


REFRESH_REASONS = {
    EVENTS_LOST: "events were refused (the inbox was full) or dropped (too many pending)",
    EVENT_ASKED: "an event named what only a walk brings (a namespace served again, say)",
}


def request_refresh(store: Store, provider: str, now: float) -> None:
    """Ask for a fresh walk of `provider` in place of events it will not apply (`refreshRequested`
    in `status --json`): the run applies the request once no burst of it is in flight
    (`invocation.run_once`), as a new cycle."""
    requested = {REFRESH_REQUESTED_FACT: rfc3339(now), REFRESH_REASON_FACT: EVENTS_LOST}
    store.set_facts(provider, requested, now)


def apply_refresh_request(store: Store, name: str, clock: Clock) -> None:
    """Make a provider whose events were refused (the inbox was full) or dropped (a backlog
    past the provider's limit) start a new cycle at once: the walk that stands in for them
    begins after them (`schedule.after_refresh(new_cycle=True)`). Call it with no burst of the
    provider in flight. The request is cleared after the record is stored: a run killed in
    between applies it again, which changes nothing before a burst.

    A cycle is given up once between two completed cycles at the most: one begun in place of an
    abandoned one goes on at its own pace (its schedule untouched), else backlogs that come more
    often than a cycle takes would restart the walk for ever, and nothing would ever be swept;
    made due at each, it burst as often as they came (an event forwarder's start floods for
    minutes). What those later events were about the next cycle sees. The first cycle is never
    given up: the request waits for it (`schedule.refresh_waits`)."""
    facts = store.facts(name)
    requested, reason = facts.get(REFRESH_REQUESTED_FACT), facts.get(REFRESH_REASON_FACT)
    if requested is None:
        return
    cleared: dict[str, str | None] = {REFRESH_REQUESTED_FACT: None, REFRESH_REASON_FACT: None}
    now = clock.now()
    record = store.load_provider(name)
    if refresh_waits(record):
        log.debug("refresh_after_first_cycle", provider=name, requested_at=requested)
        return
    completed = store.last_cycle(name, completed=True)
    if record.cycle_id - (completed.cycle_id if completed else 0) > 1:
        store.set_facts(name, cleared, now)
        log.info("refresh_in_progress", provider=name, requested_at=requested)
        return
    crashed = record.state is ProviderState.BURSTING
    store.save_provider(after_refresh(record, now, new_cycle=True), now, crashed_burst=crashed)
    store.set_facts(name, cleared, now)
    asked = reason == EVENT_ASKED
    (log.info if asked else log.warning)(  # only lost events are a problem
        "refresh_requested",
        provider=name,
        requested_at=requested,
        message=f"{REFRESH_REASONS[EVENT_ASKED if asked else EVENTS_LOST]}: "
        "a new cycle walks the platform again",
    )


def _drop_backlog(store: Store, provider: str, limit: int, clock: Clock, *, flood: bool) -> int:
    """Too many events to re-read one by one (an event forwarder that just started sends one per
    object): drop them and ask for a fresh walk instead.

    The request is stored before the drop: a run killed between the two leaves the request and
    the events (the next run drops them again, and walks anyway), never the events gone without
    a request. It is not applied here: a drain between a burst's pages (`serve`) runs while
    that burst holds the provider's record, which it stores when it ends."""
    now = clock.now()
    request_refresh(store, provider, now)
    dropped = store.drop_events(provider)
    # A flood is dropped again at every drain while it lasts: the refresh it asks for is the
    # warning (`refresh_requested`), once.
    (log.info if flood else log.warning)(
        "event_backlog_dropped",
        provider=provider,
        dropped=dropped,
        limit=limit,
        message=(
            f"events arrive faster than {FLOOD_EVENTS} in {FLOOD_SECONDS:g} s"
            if flood
            else f"{dropped} pending events are more than {limit}"
        )
        + ": a full walk catches up instead",
    )
    return dropped


def _count_failure(
    store: Store, provider: str, seq: int, error: Exception, stats: DrainStats
) -> bool:
    """One more attempt for event `seq`; True if that parked it."""
    expected = isinstance(error, ChoreoIngestError)
    message = _failure_text(error)
    parked = store.fail_event(provider, seq, message, max_attempts=MAX_EVENT_ATTEMPTS)
    stats.parked += parked
    stats.retried += not parked
    log.warning(
        "event_failed",
        provider=provider,
        seq=seq,
        parked=parked,
        error=message,
        exc_info=not expected,
    )
    return parked


def _failure_text(error: Exception) -> str:
    expected = isinstance(error, ChoreoIngestError)
    text = str(error) if expected else f"internal error: {type(error).__name__}: {error}"
    return scrub_secrets(text)
