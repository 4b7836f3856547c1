"""What the store knows, shaped for `status`, `health` and the metrics textfile."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from choreo_ingest.atomic_file import absent_directory
from choreo_ingest.clock import parsed_time, rfc3339, rfc3339_due
from choreo_ingest.config import Config, IncrementalConfig
from choreo_ingest.event_retries import EventRetries
from choreo_ingest.metrics import BURST_OUTCOMES, CYCLE_OUTCOMES, EVENT_OUTCOMES, ProviderMetrics
from choreo_ingest.models import (
    EVENTS_HELD_FACT,
    PROBLEM_FACT,
    PURGED_FACT,
    REFRESH_REQUESTED_FACT,
    SKIPPED_FACT,
    SOURCE_BEFORE_FACT,
    SOURCE_FACT,
    SOURCES_ALTERNATE_FACT,
    UNAVAILABLE_FACT,
    ProviderRecord,
    ProviderState,
    facts_shown,
    sources_alternate,
)
from choreo_ingest.provider_scope import ProviderScope, checked_provider
from choreo_ingest.providers.registry import available_providers
from choreo_ingest.schedule import (
    crash_counted,
    events_held_at,
    failures_cause,
    health_problems,
    next_action_time,
)
from choreo_ingest.store import (
    InboxCounts,
    PostgresLocation,
    SqliteLocation,
    StateRef,
    Store,
    noted_damage,
    state_location,
    state_shown,
)
from choreo_ingest.withheld import ERROR_WITHHELD, NAMES_WITHHELD, paths_withheld

PROBLEM_FACTS = (PROBLEM_FACT, SKIPPED_FACT, UNAVAILABLE_FACT, SOURCES_ALTERNATE_FACT)
"""Provider facts that are health problems, shown in `problems` rather than as keys."""
ERROR_QUOTED_CHARS = 200
"""The last error as a health problem quotes it (`status`'s `lastError` shows more)."""
ERROR_SHOWN_CHARS = 500
"""`status` shows this much of the last error; the store keeps all of it."""


@dataclass(frozen=True)
class ProviderStatus:
    record: ProviderRecord
    """As reported: a burst that did not finish counted as the failure it is."""
    next_action_at: float | None
    """When a `run` bursts next (`schedule.next_action_time`), not the stored time."""
    active_entities: int
    removals_blocked: int
    removals_reason: str | None
    cursor_resets: int
    health_problems: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    """What the provider learnt about its source (`api`), shown as keys of its own."""
    error_withheld: bool = False
    """The last error's text is left out (ERROR_WITHHELD in its place), not whether there is one."""
    cycle_pages: int | None = None
    """Pages the cycle in progress has committed (None: none in progress)."""
    last_cycle_pages: int | None = None
    """Pages of the last completed cycle: about what the one in progress will take."""
    events_waiting_alone: list[dict[str, str | None]] = field(default_factory=list)
    """The objects whose events wait alone, their re-reads failing (`event_retries`); their
    names withheld with the error's text."""

    @property
    def cycle_shown(self) -> str:
        """The cycle, and how far the one in progress is: `3 (240 of ~610 pages)`."""
        shown = str(self.record.cycle_id)
        if self.cycle_pages is None:
            return shown
        pages = f"{self.cycle_pages:,} page{'' if self.cycle_pages == 1 else 's'}"
        if self.last_cycle_pages is None:
            return f"{shown} ({pages})"
        if self.cycle_pages > self.last_cycle_pages:  # the platform grew since the last cycle
            return f"{shown} ({pages}; the last cycle took {self.last_cycle_pages:,})"
        return f"{shown} ({self.cycle_pages:,} of ~{self.last_cycle_pages:,} pages)"

    @property
    def problems_shown(self) -> list[str]:
        """`health_problems`, less what the last error's text and the API paths they quote say
        where `error_withheld` (the namespaces, projects and components those name)."""
        if not self.error_withheld:
            return self.health_problems
        cause = failures_cause(shorten(self.record.last_error, ERROR_QUOTED_CHARS))
        instead = failures_cause(ERROR_WITHHELD)
        sources = [self.facts.get(name) for name in (SOURCE_FACT, SOURCE_BEFORE_FACT)]
        shown = []
        for problem in self.health_problems:
            problem = paths_withheld(problem.replace(cause, instead) if cause else problem)
            for source in filter(None, sources):  # the API's address: cycles that read two
                problem = problem.replace(source, ERROR_WITHHELD)
            shown.append(problem)
        return shown

    @property
    def shown_facts(self) -> dict[str, str]:
        """The facts shown as keys of their own (`models.facts_shown`); where the API is
        (`source`) withheld with the error's text: the deployment's, not the provider's state."""
        facts = facts_shown(self.facts, self.record.cycle_id, PROBLEM_FACTS)
        if self.error_withheld and SOURCE_FACT in facts:
            facts[SOURCE_FACT] = ERROR_WITHHELD
        return facts

    def to_json(self) -> dict[str, Any]:
        record = self.record
        withheld = self.error_withheld and record.last_error is not None
        error = ERROR_WITHHELD if withheld else shorten(record.last_error)
        facts = self.shown_facts
        waiting = self.events_waiting_alone
        if self.error_withheld:  # the objects' names are catalog content, as the error's text
            waiting = [
                {
                    key: ERROR_WITHHELD if key in NAMES_WITHHELD and name else name
                    for key, name in wait.items()
                }
                for wait in waiting
            ]
        return {
            "api": None,  # in every document (a script reads it as a key), until a cycle finds it
            **facts,  # first: a fact a provider calls `state` cannot hide the state
            "name": record.name,
            "state": record.state.value,
            "cycleId": record.cycle_id,
            "cycleStartedAt": rfc3339(record.cycle_started_at),
            "cyclePages": self.cycle_pages,
            "lastCyclePages": self.last_cycle_pages,
            "nextActionAt": rfc3339_due(self.next_action_at),
            "attempts": record.attempts,
            "lastError": error,
            "lastBurstAt": rfc3339(record.last_burst_at),
            "lastCompletedAt": rfc3339(record.last_completed_at),
            "activeEntities": self.active_entities,
            "cursorBytes": record.cursor_bytes,
            "cursorResets": self.cursor_resets,
            "removals": {
                "blocked": self.removals_blocked > 0,
                "count": self.removals_blocked,
                "reason": self.removals_reason,
            },
            **({"eventsWaitingAlone": waiting} if waiting else {}),
            "healthy": not self.health_problems,
            "problems": self.problems_shown,
        }


def shorten(text: str | None, limit: int = ERROR_SHOWN_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def provider_names(store: Store, config: Config) -> list[str]:
    """The configured providers, then any others the state file knows."""
    names = list(config.providers)
    names += [name for name in store.provider_names() if name not in names]
    return names


def _facts_in_force(facts: dict[str, str], now: float, config: IncrementalConfig) -> dict[str, str]:
    """The facts, less a hold of the events that no longer holds them (the next drain clears
    it), as the drain decides."""
    held = facts.get(EVENTS_HELD_FACT)
    if held is None or events_held_at(parsed_time(held), now, config):
        return facts
    return {key: value for key, value in facts.items() if key != EVENTS_HELD_FACT}


def provider_status(
    store: Store,
    config: Config,
    name: str,
    now: float,
    *,
    running: bool = False,
    flooding: Callable[[str], float | None] | None = None,
) -> ProviderStatus:
    """What `status` says of a provider; `running`: a run holds the lock (so a `bursting`
    provider is bursting now, not a burst that did not finish); `flooding`: `serve`'s arrivals
    (`ArrivalRate.flooding`), which its runs wait on as `status` then does."""
    stored = store.load_provider(name)
    record = stored if running else crash_counted(stored)
    blocked = store.blocked_removals(name)
    all_facts = store.facts(name)
    facts = _facts_in_force(all_facts, now, config.incremental)
    next_action_at = next_action_time(stored, config.incremental, now, running=running)
    refresh = REFRESH_REQUESTED_FACT in all_facts and name in config.providers
    if refresh and _refresh_applies(store, stored, all_facts, config, now, flooding):
        next_action_at = now  # the next run begins the cycle asked for, whatever the schedule
    active = store.active_count(name)
    configured = name in config.providers
    problems = _problems(record, config.incremental, now, blocked.count, active, facts, configured)
    cycle_pages, last_cycle_pages = _cycle_pages(store, name, stored.cycle_id)
    return ProviderStatus(
        record=record,
        next_action_at=next_action_at,
        active_entities=active,
        removals_blocked=blocked.count,
        removals_reason=blocked.reason,
        cursor_resets=store.counters(name).get("cursor_resets", 0),
        health_problems=problems,
        facts=facts,
        cycle_pages=cycle_pages,
        last_cycle_pages=last_cycle_pages,
        events_waiting_alone=EventRetries.from_facts(facts).waits(now, config.incremental),
    )


def _refresh_applies(
    store: Store,
    record: ProviderRecord,
    facts: Mapping[str, str],
    config: Config,
    now: float,
    flooding: Callable[[str], float | None] | None,
) -> bool:
    """Whether the next `run` applies the refresh request stored (`apply_refresh_request`)."""
    from choreo_ingest.event_backlog import RefreshVerdict, current_flood, refresh_verdict

    flood = current_flood(facts, record.name, now, flooding)
    verdict = refresh_verdict(store, record, flood, config.incremental.rest_length)
    return verdict is RefreshVerdict.APPLIED


def _problems(
    record: ProviderRecord,
    config: IncrementalConfig,
    now: float,
    blocked: int,
    active: int,
    facts: Mapping[str, str],
    configured: bool,
) -> list[str]:
    """What `health` says of a provider (of one the config no longer names, only that: what its
    schedule says no longer matters, as no run will act on it)."""
    if not configured:
        return [
            f"not among the configured providers: its {active:,} entities are kept as they are; "
            f"`choreo-ingest reset {record.name} --forget --yes` removes them"
        ]
    # A source that is never empty; not since a purge emptied it (its cycle is still to come).
    owned = active if SOURCE_FACT in facts and PURGED_FACT not in facts else None
    quoted = replace(record, last_error=shorten(record.last_error, ERROR_QUOTED_CHARS))
    problems = health_problems(quoted, config, now, blocked_removals=blocked, owned=owned)
    said = [name for name in PROBLEM_FACTS if name in facts and name != SOURCES_ALTERNATE_FACT]
    in_turn = sources_alternate(facts)  # not one an older release left behind its cycles
    return problems + [facts[name] for name in said] + ([in_turn] if in_turn else [])


def _cycle_pages(store: Store, name: str, cycle_id: int) -> tuple[int | None, int | None]:
    """The pages of cycle `cycle_id` while it is walked (None once its walk ended, or before it
    began), and of the last completed cycle (None before the first)."""
    current = store.last_cycle(name)
    if current is not None and current.completed_at is not None:
        return None, current.pages
    completed = store.last_cycle(name, completed=True)
    last = None if completed is None else completed.pages
    if current is None or current.outcome is not None or current.cycle_id != cycle_id:
        return None, last  # its last page is in (its sweep to come), or it was given up
    return current.pages, last


def provider_metrics(
    store: Store,
    name: str,
    *,
    run_at: float | None,
    config: IncrementalConfig,
    now: float,
    running: bool = False,
    configured: bool = True,
) -> ProviderMetrics:
    """The provider's metrics; `running` as for `provider_status`; `configured`: whether the
    config names it (its health problems are those `status` gives)."""
    stored = store.load_provider(name)
    record = stored if running else crash_counted(stored)
    totals = store.counters(name)
    inbox = store.inbox_counts(name)  # the provider's share of what `status` counts
    blocked = store.blocked_removals(name).count
    facts = _facts_in_force(store.facts(name), now, config)
    active = store.active_count(name)
    problems = _problems(record, config, now, blocked, active, facts, configured)
    return ProviderMetrics(
        provider=name,
        state=record.state,
        last_run_at=run_at if run_at is not None else record.last_burst_at,
        last_burst_at=record.last_burst_at,
        last_success_at=record.last_completed_at,
        last_cycle_duration=record.last_cycle_duration,
        last_burst_duration=record.last_burst_duration,
        next_action_at=next_action_time(stored, config, now, running=running),
        consecutive_failures=record.attempts,
        entities_by_kind=store.entity_counts(name),
        entities_upserted_total=totals.get("entities_upserted", 0),
        entities_removed_total=totals.get("entities_removed", 0),
        pages_total=totals.get("pages", 0),
        removals_blocked=blocked,
        cycles_total={outcome: totals.get(f"cycles_{outcome}", 0) for outcome in CYCLE_OUTCOMES},
        cursor_resets_total=totals.get("cursor_resets", 0),
        events_total={
            outcome: totals[f"events_{outcome}"]
            for outcome in EVENT_OUTCOMES
            if f"events_{outcome}" in totals
        },
        bursts_total=_bursts_total(
            totals, crashed=not running and stored.state is ProviderState.BURSTING
        ),
        events_pending=inbox.pending,
        events_parked=inbox.parked,
        events_oldest_pending_at=inbox.oldest_pending_at,
        events_held_until=parsed_time(facts.get(EVENTS_HELD_FACT) or ""),
        events_waiting_alone=len(EventRetries.from_facts(facts).waits(now, config)),
        api=facts.get("api"),
        health_problems=len(problems),
    )


def _bursts_total(totals: Mapping[str, int], *, crashed: bool) -> dict[str, int]:
    """Bursts by outcome; `crashed`: with the burst that did not finish, which the write that
    moves its record on counts (`Store.save_provider`), so the counter never goes back."""
    bursts = {outcome: totals.get(f"bursts_{outcome}", 0) for outcome in BURST_OUTCOMES}
    bursts["failed"] += crashed
    return bursts


def all_metrics(
    store: Store,
    names: Sequence[str],
    *,
    run_at: float | None,
    config: IncrementalConfig,
    now: float,
    running: bool = False,
    configured: Collection[str] | None = None,
) -> list[ProviderMetrics]:
    """Each provider's metrics; `configured`: the names the config gives (None: all of them)."""
    return [
        provider_metrics(
            store,
            name,
            run_at=run_at,
            config=config,
            now=now,
            running=running,
            configured=configured is None or name in configured,
        )
        for name in names
    ]


def run_metrics(store: Store, config: Config, now: float) -> list[ProviderMetrics]:
    """The metrics a `run` at `now` writes: of the configured providers, then the state's others.
    A state file a run found damaged (`store.damage_note`), which `health` refuses, is a health
    problem of every provider: a run with nothing due reads none of its damaged pages."""
    names = provider_names(store, config)
    metrics = all_metrics(
        store, names, run_at=now, config=config.incremental, now=now, configured=config.providers
    )
    if store.path is None or noted_damage(store.path) is None:
        return metrics
    return [replace(item, health_problems=item.health_problems + 1) for item in metrics]


@dataclass(frozen=True)
class StatusReport:
    state_file: str
    """Where the state is, as shown to people."""
    schema_version: int
    running: bool
    providers: list[ProviderStatus]
    events: InboxCounts
    problems: list[str] = field(default_factory=list)
    """Problems of the process reporting, not of a provider (`serve`: its ticks do not run)."""
    state_schema: str | None = None
    """The PostgreSQL schema the state is in (None for a file): two states may share a URL."""

    def to_json(self) -> dict[str, Any]:
        document = {
            "stateFile": self.state_file,
            "schemaVersion": self.schema_version,
            "running": self.running,
            "providers": [status.to_json() for status in self.providers],
            "events": {"pending": self.events.pending, "parked": self.events.parked},
        }
        if self.state_schema is not None:
            document["stateSchema"] = self.state_schema
        if self.problems:
            document["problems"] = self.problems
        return document

    @property
    def healthy(self) -> bool:
        return not self.problems and all(not item.health_problems for item in self.providers)

    def errors_withheld(self) -> StatusReport:
        """The report for a caller who may not read catalog content (`serve` without its token,
        when one is set): each provider's last error is said to be there, not what it says,
        since its text can name the API path that failed (namespaces, projects, components);
        nor where the state and the API are (the deployment's, not providers, counts, times and
        states)."""
        return replace(
            self,
            state_file=ERROR_WITHHELD,
            state_schema=None if self.state_schema is None else ERROR_WITHHELD,
            providers=[replace(item, error_withheld=True) for item in self.providers],
        )

    def health_json(self) -> dict[str, Any]:
        """The `health --json` document (and serve's `/health`, with `problems` of its own
        when its ticks do not run)."""
        document: dict[str, Any] = {
            "healthy": self.healthy,
            "providers": [
                {
                    "name": item.record.name,
                    "healthy": not item.health_problems,
                    "problems": item.problems_shown,
                }
                for item in self.providers
            ],
        }
        if self.problems:
            document["problems"] = self.problems
        return document


def no_state_health(state: StateRef) -> dict[str, Any]:
    """`health --json` before the first run made a state file: unhealthy."""
    location = state_location(state)
    directory = location.missing_directory()
    if isinstance(location, SqliteLocation) and location.guessed:
        problem = f"no state yet at {location.path.absolute()}{location.guess_said}"
    elif directory is None:
        problem = f"no state yet at {state}: run `choreo-ingest run`"
    elif directory.exists():
        problem = f"no state yet at {state}, and {absent_directory(directory)}"
    else:
        problem = (
            f"no state yet at {state}, and {absent_directory(directory)}: create it, "
            "then run `choreo-ingest run`"
        )
    if location.given_by:
        problem += f" ({location.given_by} gave this state)"
    return {"healthy": False, "providers": [], "problems": [problem]}


def providers_json(config: Config) -> dict[str, Any]:
    """The `providers --json` document: installed providers, and which the config runs."""
    configured = set(config.providers)
    rows: list[dict[str, Any]] = [
        {"name": info.name, "source": info.source, "configured": info.name in configured}
        for info in available_providers()
    ]
    known = {row["name"] for row in rows}
    rows += [
        {"name": name, "source": "not installed", "configured": True}
        for name in config.providers
        if name not in known
    ]
    return {"providers": rows}


def removals_json(found: Sequence[PendingRemovals]) -> dict[str, Any]:
    return {"providers": [item.to_json() for item in found]}


@contextmanager
def reading(state: StateRef) -> Iterator[Store]:
    """The store opened read-only, schema checked; never takes the run lock, never writes."""
    with state_location(state).open(readonly=True) as store:
        store.require_current_schema()
        yield store


def status_report(
    state: StateRef,
    config: Config,
    now: float,
    *,
    only: str | None = None,
    flooding: Callable[[str], float | None] | None = None,
) -> StatusReport:
    if only is not None:
        checked_provider(config, state, only, ProviderScope.KNOWN)
    location = state_location(state)
    # PostgreSQL's run lock is read on a session of its own: before the reading one opens, so
    # that `status` and `health` need one connection at a time, as `run` does. A state file's
    # is read after: opening it first says what is wrong with an unusable path.
    held = location.lock_held_elsewhere() if isinstance(location, PostgresLocation) else None
    with reading(state) as store:
        names = [only] if only is not None else provider_names(store, config)
        running = held if held is not None else location.lock_held_elsewhere()
        return StatusReport(
            # Absolute, as a config's state.path is: a relative --db names no file to a script.
            state_file=state_shown(location),
            state_schema=location.schema if isinstance(location, PostgresLocation) else None,
            schema_version=store.schema_version(),
            running=running,
            providers=[
                provider_status(store, config, name, now, running=running, flooding=flooding)
                for name in names
            ],
            events=store.inbox_counts(),
        )


@dataclass(frozen=True)
class PendingRemovals:
    provider: str
    count: int
    reason: str | None
    refs: list[str]
    cycle: int | None = None
    """The cycle whose sweep was blocked: `removals approve --cycle` pins the approval to it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.provider,
            "blocked": self.count > 0,
            "count": self.count,
            "reason": self.reason,
            "cycle": self.cycle if self.count else None,
            "refs": self.refs,
        }


def pending_removals(
    state: StateRef, config: Config, *, only: str | None = None, limit: int | None = None
) -> list[PendingRemovals]:
    if only is not None:
        checked_provider(config, state, only, ProviderScope.KNOWN)
    with reading(state) as store:
        names = [only] if only is not None else provider_names(store, config)
        found = []
        for name in names:
            blocked = store.blocked_removals(name)
            refs = store.pending_removal_refs(name, limit) if blocked.count else []
            found.append(
                PendingRemovals(name, blocked.count, blocked.reason, refs, blocked.cycle_id)
            )
        return found


def iter_export(state: StateRef, kind: str | None = None) -> Iterator[dict[str, Any]]:
    with reading(state) as store:
        yield from store.iter_entities(kind)
