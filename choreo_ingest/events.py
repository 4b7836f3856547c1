"""Event-driven delta updates: draining the inbox (`event_intake` fills it) at the start of a run,
and between the pages of `serve`'s bursts.

An event says what changed, not the new content: the provider re-reads that one resource and the
resulting delta goes through the same tables as a page, so the sweep, the change log and the
metrics stay exact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from choreo_ingest.clock import Clock, parsed_time, rfc3339
from choreo_ingest.config import Config
from choreo_ingest.engine import burst_context
from choreo_ingest.errors import (
    NO_API_HERE,
    AuthError,
    ChoreoIngestError,
    ConfigError,
    DeadlineExceeded,
    PermanentError,
    ProviderError,
    ServerStalled,
    TransientError,
    UnsupportedEvent,
    needs_mending,
)
from choreo_ingest.event_backlog import backlog_dropped, flood_check
from choreo_ingest.event_input import to_event
from choreo_ingest.event_retries import EventRetries, may_fail_alone, rereads
from choreo_ingest.logs import get_logger, scrub_secrets
from choreo_ingest.models import EVENT_RETRIES_FACT, EVENTS_HELD_FACT
from choreo_ingest.page_writer import log_refused
from choreo_ingest.providers.base import (
    EventCheckingProvider,
    EventHandlingProvider,
    ProbingProvider,
    ReadingAheadProvider,
)
from choreo_ingest.schedule import backoff_step, events_held_at
from choreo_ingest.store import InboxEvent, Store

log = get_logger("choreo_ingest.events")

MAX_EVENT_ATTEMPTS = 5
"""An event whose re-read failed this many times is parked (shown by `status`), not retried."""
PENDING_READ = 1000
"""Pending events a drain reads (it applies what it can of them in one burst)."""
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
class InboxHeld:
    """A drain that stopped on the way to the API failing (upstream trouble, or a setting to
    mend: a token grant refused, a secret file gone): the provider's events wait until `until`."""

    provider: str
    until: float
    error: str
    mendable: bool = False
    """Held by a setting to mend (the identity provider refused the token grant, the API the
    configured token): a `run` says exit 2, as for a burst that met it, not 3."""


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


def drain_inbox(
    store: Store,
    provider: EventHandlingProvider,
    config: Config,
    clock: Clock,
    cancelled: Callable[[], bool],
    deadline: float | None = None,
    flooding: Callable[[str], float | None] | None = None,
) -> DrainStats:
    """Apply the provider's pending events in arrival order until `deadline` (monotonic; else
    `burstLength` from now), or drop them for a walk (`event_backlog`), mid-drain for a flood.

    A failed event keeps its place with one more attempt (parked after MAX_EVENT_ATTEMPTS).
    A transient or auth failure says the API is unwell, and a setting to mend (ConfigError)
    concerns every event too (as does a first event whose connection or token never came up,
    or that timed out after an error answer): the drain stops there, and the events wait
    (`eventsHeldUntil`) the backoff step of that event's attempts, rather than spend them all
    (`serve` drains every second). Unless the failure may be its object's own (`event_retries`):
    when the next event that re-reads reads fine, the failed event alone waits that step. Any
    other failure of a `created`/`updated` event is that event's (bad data, a bug): the events
    after it still apply (retried, it re-reads the state, so applying it late cannot undo a
    newer event). A failed `deleted` event (which could) stops the drain. Running out of time,
    or being asked to stop, counts no attempt, unless the event had a whole `burstLength`."""
    stats = DrainStats()
    checking = provider if isinstance(provider, EventCheckingProvider) else None
    max_pending = checking.max_pending_events if checking is not None else None
    floods = flood_check(store, provider.name, clock, flooding, checks=max_pending is not None)
    if max_pending is not None:
        dropped = backlog_dropped(store, provider.name, max_pending, clock, floods(provider.name))
        if dropped is not None:
            stats.dropped = dropped
            return stats
    now = clock.now()
    facts = store.facts(provider.name)
    held = facts.get(EVENTS_HELD_FACT)
    if held is not None:
        if events_held_at(parsed_time(held), now, config.incremental):
            return stats
        store.set_facts(provider.name, {EVENTS_HELD_FACT: None}, now)
    read = store.pending_events(provider.name, PENDING_READ)
    retries = EventRetries.from_facts(facts)
    retries.keep_only([item.body for item in read], all_read=len(read) < PENDING_READ)
    _save_retries(store, provider.name, retries, now)
    pending = [
        item
        for item in read
        if _settled(item, now) and not retries.waiting(item.body, now, config.incremental)
    ]
    if not pending:
        return stats
    unwell: tuple[InboxEvent, Exception] | None = None
    suspect: tuple[InboxEvent, Exception] | None = None  # its failure may be its object's own
    cycle_id = store.load_provider(provider.name).cycle_id
    context = burst_context(
        config, store, clock, provider.name, cycle_id, cancelled=cancelled, deadline=deadline
    )
    with provider.around(context) as provider_context:
        for number, item in enumerate(pending):
            if cancelled() or context.remaining() <= 0 or floods(provider.name) is not None:
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
                    if parked:
                        retries.forget(item.body)
                    # The way to the API (no connection; an error answer before the timeout),
                    # not this event: all of them wait.
                    if not parked and (isinstance(error, ServerStalled) or error.status):
                        unwell = item, error
                break
            except Exception as error:
                if cancelled():
                    break
                alone = retries.shown_alone(item.body) and may_fail_alone(error, item.body)
                if suspect is not None and _api_unwell(error) and not alone:
                    # Two in a row: the API, not the suspect's object. The events wait the
                    # suspect's step, for what this one met (a setting to mend: exit 2).
                    _log_uncharged(provider.name, item, error)
                    unwell = suspect[0], error
                    break
                parked = _count_failure(store, provider.name, item.seq, error, stats)
                if parked:
                    retries.forget(item.body)
                if not parked and may_fail_alone(error, item.body):
                    if alone:  # shown before to fail alone: it waits alone again
                        _wait_alone(store, provider.name, retries, item, config, clock, "again")
                        continue
                    if suspect is None:
                        suspect = item, error
                        continue
                api_unwell = _api_unwell(error)
                if not parked and api_unwell:
                    unwell = item, error
                if not parked and (api_unwell or item.body.get("action") == "deleted"):
                    break
                continue
            page, removed = store.apply_event(provider.name, cycle_id, item.seq, delta, clock.now())
            log_refused(provider.name, page)
            stats.applied += 1
            stats.upserted += page.upserted
            stats.removed += removed
            retries.forget(item.body)
            if suspect is not None and rereads(item.body):
                shown = "while the API answered the event after it"
                _wait_alone(store, provider.name, retries, suspect[0], config, clock, shown)
                suspect = None
        flooded = floods(provider.name)  # asked once: its window may close meanwhile
        stopped = cancelled() or context.remaining() <= 0 or flooded is not None
        if suspect is not None and unwell is None and not stopped:
            # No event after it read: the provider's probe of its own tells, where it has one.
            answered, failure = _probe(provider, provider_context, cancelled)
            if answered:
                shown = "while the API answered a probe"
                _wait_alone(store, provider.name, retries, suspect[0], config, clock, shown)
                suspect = None
            elif failure is not None:
                unwell = suspect[0], failure
    _save_retries(store, provider.name, retries, clock.now())
    if max_pending is not None and flooded is not None:  # it began while they were re-read
        dropped = backlog_dropped(store, provider.name, max_pending, clock, flooded)
        if dropped is not None:
            stats.dropped, unwell, suspect = dropped, None, None
    if unwell is None and suspect is not None:  # no event after it read: taken for the API's
        unwell = suspect
    if unwell is not None:
        item, cause = unwell
        until = clock.now() + backoff_step(item.attempts + 1, config.incremental)
        store.set_facts(provider.name, {EVENTS_HELD_FACT: rfc3339(until)}, clock.now())
        held_by = InboxHeld(provider.name, until, _failure_text(cause), needs_mending(cause))
        stats.held.append(held_by)
    log.info("events_applied", provider=provider.name, **stats.counts())
    return stats


def _api_unwell(error: Exception) -> bool:
    """Whether a failed re-read says the API is unwell, or a setting to mend concerns every
    event (no API at `baseUrl` too): then the events wait (`eventsHeldUntil`) rather than spend
    their attempts."""
    no_api = isinstance(error, PermanentError) and error.code == NO_API_HERE
    return no_api or isinstance(error, (TransientError, AuthError, ConfigError))


def _probe(
    provider: EventHandlingProvider, context: Any, cancelled: Callable[[], bool]
) -> tuple[bool, Exception | None]:
    """Whether the source answered the provider's probe (`ProbingProvider`), and the failure
    that said it is unwell; (False, None): no answer either way (no probe, out of time, asked
    to stop, a bug of the probe's, which is logged, or an error of another kind: a 404 from a
    proxy whose API is down is no answer of the API's)."""
    if not isinstance(provider, ProbingProvider):
        return False, None
    try:
        provider.probe(context)
    except DeadlineExceeded:
        return False, None
    except (ProviderError, ConfigError) as error:
        if cancelled():
            return False, None
        _log_uncharged(provider.name, None, error)
        return False, error if _api_unwell(error) else None
    except Exception as error:
        log.warning(
            "probe_crashed", provider=provider.name, error=f"{type(error).__name__}: {error}"
        )
        return False, None
    return True, None


def _save_retries(store: Store, provider: str, retries: EventRetries, now: float) -> None:
    if retries.changed:
        store.set_facts(provider, {EVENT_RETRIES_FACT: retries.fact()}, now)
        retries.changed = False


def _wait_alone(
    store: Store,
    provider: str,
    retries: EventRetries,
    item: InboxEvent,
    config: Config,
    clock: Clock,
    shown: str,
) -> None:
    """Event `item` failed alone (the API answered the event after it, or it was `shown` to
    before): it waits the backoff step of its attempts by itself, and the others go on."""
    now = clock.now()
    until = now + backoff_step(item.attempts + 1, config.incremental)
    retries.wait_alone(item.body, until)
    _save_retries(store, provider, retries, now)
    log.info(
        "event_waits_alone",
        provider=provider,
        seq=item.seq,
        until=rfc3339(until),
        message=f"its re-read failed {shown}: it alone waits",
    )


def _too_long(error: DeadlineExceeded, config: Config) -> DeadlineExceeded:
    """The failure of an event that had a whole burstLength, with what to change: not for a
    connection that never came up, whose own advice names the server's address, nor after an
    error answer, which the message names."""
    if isinstance(error, ServerStalled) or error.status is not None:
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


def _log_uncharged(provider: str, item: InboxEvent | None, error: Exception) -> None:
    """The failure that showed the API unwell, right after another's (or the probe's: `item`
    None): not an attempt of its own (the events wait for the first), but said."""
    log.warning(
        "event_failed" if item is not None else "probe_failed",
        provider=provider,
        **({"seq": item.seq, "parked": False, "charged": False} if item is not None else {}),
        error=_failure_text(error),
        exc_info=not isinstance(error, ChoreoIngestError),
    )


def _count_failure(
    store: Store, provider: str, seq: int, error: Exception, stats: DrainStats
) -> bool:
    """One more attempt for event `seq`; True if that parked it."""
    expected = isinstance(error, ChoreoIngestError)
    message = _failure_text(error)
    # One that can never apply is parked at once rather than warned about at every attempt.
    attempts = 1 if isinstance(error, UnsupportedEvent) else MAX_EVENT_ATTEMPTS
    parked = store.fail_event(provider, seq, message, max_attempts=attempts)
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


EVENT_LOOK_SECONDS = 1.0
"""How often a burst of `serve` looks in the inbox between its pages for events that another
process stored (a replica beside it on PostgreSQL, an `event` command): its own wake it at once."""


class EventsBetweenPages:
    """`serve`'s events between a burst's pages: at once for those it stored itself
    (`arrived`), and at most `EVENT_LOOK_SECONDS` later for those another process stored."""

    def __init__(
        self,
        arrived: threading.Event,
        drain: Callable[[float], None],
        pending: Callable[[], bool],
        clock: Clock,
    ) -> None:
        self.arrived, self.drain, self.pending, self.clock = arrived, drain, pending, clock
        self.next_look = clock.monotonic() + EVENT_LOOK_SECONDS

    def wanted(self) -> bool:
        return self.arrived.is_set() or self.clock.monotonic() >= self.next_look

    def __call__(self, deadline: float) -> None:
        self.next_look = self.clock.monotonic() + EVENT_LOOK_SECONDS
        announced = self.arrived.is_set()
        self.arrived.clear()
        if announced or self.pending():
            self.drain(deadline)
