"""When events are not worth re-reading one by one, and the fresh walk asked for in their place.

A re-read costs a request or three; a walk, a request a page. So a drain drops its backlog for a
new cycle when the events arrive as a flood (`ArrivalRate`: an event forwarder that starts sends
`created` for every object), or when more are pending than both `openchoreo.events.maxPending`
and the pages of the provider's last complete walk (`backlog_limit`): on a v1 platform of
300,000 components a walk reads 6,000 pages over 37 bursts, and a deploy's 1,500 events, about
a minute of draining, are the cheaper way to the same catalog.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from choreo_ingest.clock import Clock, parsed_time, rfc3339
from choreo_ingest.logs import get_logger
from choreo_ingest.models import (
    EVENT_ASKED,
    EVENTS_LOST,
    FLOOD_SINCE_FACT,
    REFRESH_REASON_FACT,
    REFRESH_REQUESTED_FACT,
    ProviderRecord,
    ProviderState,
)
from choreo_ingest.schedule import after_refresh, in_cycle, refresh_waits
from choreo_ingest.store import Store

log = get_logger("choreo_ingest.events")  # the drain's lines, under the name they always had

FLOOD_EVENTS = 200
FLOOD_SECONDS = 5.0
"""More events than FLOOD_EVENTS in FLOOD_SECONDS (40 a second) are a flood (`ArrivalRate`)
when nearly all of them (REPLAY_SHARE) are `created`: the event forwarder's start, which sends
`created` for every object and costs more to re-read (2-3 requests an event) than a walk."""
REPLAY_SHARE = 0.9
"""The share of `created` events that makes a flood the forwarder's start: a deploy or a
controller that changes many objects at once sends `updated`, each worth its re-read."""


class ArrivalRate:
    """Whether a provider's events are arriving as a flood: more than FLOOD_EVENTS in the last
    FLOOD_SECONDS, nearly all `created`. `serve` applies events as they come, so a forwarder's
    start (`created` for every object) never piles up past `maxPending` before a drain, and was
    re-read one object at a time; while the flood lasts, its drains drop the inbox for a fresh
    walk instead. As many `updated` events (a deploy) are applied: dropping them gave up the
    cycle in progress for a walk of the whole platform. Each provider's events are counted
    apart: one's flood is no reason to drop another's events. Events are counted by whoever
    receives them (another thread), those of kinds not ingested too (`Service.events_ignored`);
    safe to share."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._arrivals: dict[str, deque[tuple[float, bool]]] = {}
        """(monotonic time, whether `created`) of each provider's latest events."""
        self._since: dict[str, float] = {}
        """When each provider's flood in progress was first seen (monotonic)."""

    def add(self, provider: str, count: int, created: int = 0) -> None:
        """`count` events arrived for `provider`, `created` of them `created` events."""
        now = self._clock.monotonic()
        created = min(created, count)
        with self._lock:
            arrivals = self._arrivals.setdefault(provider, deque(maxlen=FLOOD_EVENTS))
            self._flood_seconds(provider, now)  # one that ended unseen is over before this
            arrivals.extend([(now, False)] * min(count - created, FLOOD_EVENTS))
            arrivals.extend([(now, True)] * min(created, FLOOD_EVENTS))
            self._flood_seconds(provider, now)

    def flooding(self, provider: str) -> float | None:
        """How long `provider`'s events have been arriving as a flood, in seconds; None when
        they are not."""
        with self._lock:
            return self._flood_seconds(provider, self._clock.monotonic())

    def _flood_seconds(self, provider: str, now: float) -> float | None:
        arrivals = self._arrivals.get(provider)
        flood = arrivals is not None and len(arrivals) == FLOOD_EVENTS
        if arrivals is not None and flood:
            created = sum(is_created for _, is_created in arrivals)
            recent = now - arrivals[0][0] <= FLOOD_SECONDS
            flood = recent and created >= REPLAY_SHARE * FLOOD_EVENTS
        if not flood:
            self._since.pop(provider, None)
            return None
        return now - self._since.setdefault(provider, now)


@dataclass(frozen=True)
class Limit:
    """How many pending events a drain applies before it drops them for a walk: the more of the
    provider's `maxPending` and the pages its last complete walk read."""

    max_pending: int
    walk_pages: int

    @property
    def count(self) -> int:
        return max(self.max_pending, self.walk_pages)

    def __str__(self) -> str:
        said = f"openchoreo.events.maxPending {self.max_pending}"
        if self.walk_pages > self.max_pending:
            said += f" and the {self.walk_pages} pages of the last complete walk"
        return said


def backlog_limit(store: Store, provider: str, max_pending: int) -> Limit:
    """The limit for `provider`'s backlog (before its first complete walk: `max_pending`)."""
    last = store.last_cycle(provider, completed=True)
    return Limit(max_pending, last.pages if last is not None else 0)


REFRESH_REASONS = {
    EVENTS_LOST: "events were refused (the inbox was full) or dropped (too many pending)",
    EVENT_ASKED: "an event named what only a walk brings (a namespace served again, say)",
}
FLOOD_DROPPED = (
    "events arrived as a flood (an event forwarder's start posts one for every object) "
    "and were dropped"
)


def request_refresh(
    store: Store, provider: str, now: float, flood_since: float | None = None
) -> None:
    """Ask for a fresh walk of `provider` in place of events it will not apply (`refreshRequested`
    in `status --json`): the run applies the request once no burst of it is in flight
    (`invocation.run_once`), as a new cycle. `flood_since`: the events dropped arrived as a
    flood that began then (`FLOOD_SINCE_FACT`, for a `run` that cannot see it)."""
    requested = {
        REFRESH_REQUESTED_FACT: rfc3339(now),
        REFRESH_REASON_FACT: EVENTS_LOST,
        FLOOD_SINCE_FACT: rfc3339(flood_since),
    }
    store.set_facts(provider, requested, now)


def flood_check(
    store: Store,
    provider: str,
    clock: Clock,
    flooding: Callable[[str], float | None] | None,
    *,
    checks: bool,
) -> Callable[[str], float | None]:
    """How a drain of `provider`'s events asks whether they arrive as a flood (None: they do
    not), when it `checks` (its provider has a `maxPending`): `flooding` (`serve`'s
    `ArrivalRate`), else (a `run`, which sees no events arrive) the flood `serve`'s drops say
    (`stored_flood`), as it stood when the drain began."""
    if not checks:
        return lambda name: None
    if flooding is not None:
        return flooding
    seen = stored_flood(store.facts(provider), clock.now())
    return lambda name: seen


def stored_flood(facts: Mapping[str, str], now: float) -> float | None:
    """How long the flood another process (`serve`) drops events for has lasted, in seconds, as
    the request its drops renew says: None once no drop has renewed it for FLOOD_SECONDS (the
    flood is over), or when the request was not a flood's.

    `serve` alone sees events arrive (`ArrivalRate`); a cron `run` beside it does not, and,
    applying the request at once, began the walk in the middle of the flood: a second such run
    gave up that cycle for another, also begun mid-flood, and the request `serve` made at the
    flood's end was then taken for one already under way (`refresh_in_progress`). The events
    dropped after that walk had passed their listings (an `updated` among the `created`) stayed
    out of the catalog until the next cycle."""
    since = parsed_time(facts.get(FLOOD_SINCE_FACT) or "")
    requested = parsed_time(facts.get(REFRESH_REQUESTED_FACT) or "")
    # Either way: a `run` on another host (a PostgreSQL state) may read another clock.
    if since is None or requested is None or abs(now - requested) > FLOOD_SECONDS:
        return None
    return max(0.0, now - since)


class RefreshVerdict(Enum):
    """What the next run makes of a stored refresh request (`apply_refresh_request`)."""

    AFTER_FIRST_CYCLE = "after-first-cycle"
    """It waits: the provider's first cycle is under way."""
    IN_PROGRESS = "in-progress"
    """It is dismissed: the cycle under way was begun in place of one given up."""
    AFTER_FLOOD = "after-flood"
    """It waits for the flood of events that asked for it to end."""
    APPLIED = "applied"
    """A new cycle begins at once."""


def current_flood(
    facts: Mapping[str, str],
    name: str,
    now: float,
    flooding: Callable[[str], float | None] | None,
) -> float | None:
    """How long `name`'s events have arrived as a flood (None: they do not), as `serve` sees
    them arrive (`flooding`: `ArrivalRate.flooding`), else as its drops stored it."""
    return stored_flood(facts, now) if flooding is None else flooding(name)


def refresh_verdict(
    store: Store, record: ProviderRecord, flood: float | None, longest_flood: float
) -> RefreshVerdict:
    """What a refresh request stored for `record`'s provider comes to now, while its events
    have arrived as a flood for `flood` seconds (`current_flood`)."""
    if refresh_waits(record):
        return RefreshVerdict.AFTER_FIRST_CYCLE
    if cycle_given_up(store, record.name, record.cycle_id):
        return RefreshVerdict.IN_PROGRESS
    if flood is not None and flood < longest_flood:
        return RefreshVerdict.AFTER_FLOOD
    return RefreshVerdict.APPLIED


def apply_refresh_request(
    store: Store,
    name: str,
    clock: Clock,
    flooding: Callable[[str], float | None] | None = None,
    longest_flood: float = 0.0,
) -> None:
    """Make a provider whose events were refused (the inbox was full) or dropped (a backlog
    past the provider's limit) start a new cycle at once: the walk that stands in for them
    begins after them (`schedule.after_refresh(new_cycle=True)`). Call it with no burst of the
    provider in flight. The request is cleared after the record is stored: a run killed in
    between applies it again, which changes nothing before a burst.

    While `flooding(name)` says its events still arrive as a flood, the request waits: one walk
    after the flood stands in for all of it (without `flooding`, a `run`, which sees no events
    arrive, asks `serve`'s drops: `stored_flood`). Applied as it came, a walk shorter than the
    flood (an event forwarder's start posts for a minute or more) was followed by another, and
    another, each in place of the rest. A flood that goes on for `longest_flood` seconds (a
    rest's length) or more has its walk all the same, with a warning.

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
    cleared: dict[str, str | None] = {
        REFRESH_REQUESTED_FACT: None,
        REFRESH_REASON_FACT: None,
        FLOOD_SINCE_FACT: None,
    }
    now = clock.now()
    record = store.load_provider(name)
    flood = current_flood(facts, name, now, flooding)
    verdict = refresh_verdict(store, record, flood, longest_flood)
    if verdict is RefreshVerdict.AFTER_FIRST_CYCLE:
        log.debug("refresh_after_first_cycle", provider=name, requested_at=requested)
        return
    if verdict is RefreshVerdict.IN_PROGRESS:
        store.set_facts(name, cleared, now)
        log.info("refresh_in_progress", provider=name, requested_at=requested)
        return
    if verdict is RefreshVerdict.AFTER_FLOOD:
        log.debug("refresh_after_flood", provider=name, requested_at=requested)
        return
    if flood is not None:
        log.warning(
            "flood_ongoing",
            provider=name,
            requested_at=requested,
            message=f"events have arrived as a flood for {flood:.0f} s, a rest or more: the "
            "walk asked for in their place begins all the same",
        )
    crashed = record.state is ProviderState.BURSTING
    given_up = record.cycle_id if in_cycle(record) else None
    store.save_provider(after_refresh(record, now, new_cycle=True), now, crashed_burst=crashed)
    store.set_facts(name, cleared, now)
    asked = reason == EVENT_ASKED
    said = REFRESH_REASONS[EVENT_ASKED if asked else EVENTS_LOST]
    if not asked and facts.get(FLOOD_SINCE_FACT):
        said = FLOOD_DROPPED
    instead = "" if given_up is None else f"cycle {given_up}, in progress, is given up and "
    (log.info if asked else log.warning)(  # only lost events are a problem
        "refresh_requested",
        provider=name,
        requested_at=requested,
        abandoned_cycle=given_up,
        message=f"{said}: {instead}a new cycle walks the platform again",
    )


def cycle_given_up(store: Store, name: str, cycle_id: int) -> bool:
    """Whether cycle `cycle_id` of `name` was begun in place of one given up since the last
    completed cycle (`apply_refresh_request` gives a cycle up once between two at the most)."""
    completed = store.last_cycle(name, completed=True)
    return cycle_id - (completed.cycle_id if completed else 0) > 1


def backlog_dropped(
    store: Store, provider: str, max_pending: int, clock: Clock, flooding: float | None
) -> int | None:
    """How many of `provider`'s pending events were dropped for a fresh walk, as they arrive
    as a flood (for `flooding` seconds, `ArrivalRate.flooding`) or are past its limit
    (`backlog_limit`); None when they are to be re-read."""
    count = store.pending_event_count(provider)
    flood = flooding is not None and count > 0
    if count > max_pending or flood:
        limit = backlog_limit(store, provider, max_pending)
        if count > limit.count or flood:
            return drop_backlog(store, provider, limit, clock, flooding if flood else None)
    return None


def drop_backlog(
    store: Store, provider: str, limit: Limit, clock: Clock, flooding: float | None
) -> int:
    """Too many events to re-read one by one (an event forwarder that just started sends one per
    object): drop them and ask for a fresh walk instead.

    The request is stored before the drop: a run killed between the two leaves the request and
    the events (the next run drops them again, and walks anyway), never the events gone without
    a request. It is not applied here: a drain between a burst's pages (`serve`) runs while
    that burst holds the provider's record, which it stores when it ends. `flooding`: how long
    the events have arrived as a flood (None: the backlog is past its limit)."""
    now = clock.now()
    flood = flooding is not None
    # Asked before this drop's own request: one already waiting, or a cycle already begun in
    # place of a given-up one (which dismisses this request), says the drops go on, as while
    # the API is down and events keep coming: warned of once, not at every drop.
    facts = store.facts(provider)
    again = REFRESH_REQUESTED_FACT in facts or cycle_given_up(
        store, provider, store.load_provider(provider).cycle_id
    )
    flood_said = flood and FLOOD_SINCE_FACT in facts  # an earlier drain dropped this flood
    request_refresh(store, provider, now, None if flooding is None else now - flooding)
    dropped = store.drop_events(provider)
    # A flood is dropped again at every drain while it lasts: the refresh it asks for is the
    # warning (`refresh_requested`), once.
    if flood:  # the arrival rate, not the backlog's size, is what was past its limit
        message, passed = f"events arrive faster than {FLOOD_EVENTS} in {FLOOD_SECONDS:g} s", {}
    else:
        message, passed = f"{dropped} pending events are more than {limit}", {"limit": limit.count}
    # The same flood dropped again at a later drain (a hundred times in a forwarder's start)
    # is said at DEBUG: its first drop was said, and its refresh is the warning.
    say = log.debug if flood_said else log.info if flood or again else log.warning
    say(
        "event_backlog_dropped",
        provider=provider,
        dropped=dropped,
        **passed,
        message=f"{message}: a full walk catches up instead",
    )
    return dropped
