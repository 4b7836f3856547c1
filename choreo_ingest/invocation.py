"""Whole invocations: `run` (lock, migrate, inbox, bursts, metrics) and the operator's commands."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config
from choreo_ingest.engine import BurstEngine, ProviderOutcome, StopSignal
from choreo_ingest.errors import ChoreoIngestError, ConfigError, LockHeld, StateError
from choreo_ingest.event_backlog import apply_refresh_request
from choreo_ingest.events import DrainStats, EventsBetweenPages, drain_inbox
from choreo_ingest.logs import get_logger
from choreo_ingest.metrics import write_metrics_textfile
from choreo_ingest.mirror import rebuild_after_renewal, sync_mirror
from choreo_ingest.models import (
    UNAVAILABLE_FACT,
    ProviderAction,
    ProviderState,
    RunOutcome,
)
from choreo_ingest.provider_scope import checked_provider
from choreo_ingest.providers.base import EventHandlingProvider, IncrementalEntityProvider
from choreo_ingest.providers.registry import load_provider
from choreo_ingest.reporting import run_metrics
from choreo_ingest.retention import prune_change_log
from choreo_ingest.schedule import after_loaded, after_refresh, after_reset, after_unavailable
from choreo_ingest.store import (
    MIGRATION_NAMES,
    SCHEMA_VERSION,
    PostgresLocation,
    SqliteLocation,
    StateLocation,
    StateRef,
    Store,
    state_location,
)
from choreo_ingest.store.copy import CopyReport

if TYPE_CHECKING:
    from choreo_ingest.store.pg_fence import RunHolder

log = get_logger("choreo_ingest.invocation")


@dataclass
class RunResult:
    outcome: RunOutcome
    providers: list[ProviderOutcome] = field(default_factory=list)
    events: DrainStats = field(default_factory=DrainStats)
    output_errors: list[ChoreoIngestError] = field(default_factory=list)
    """The outputs the run could not write (the YAML mirror, the metrics textfile): the outcome
    is then `error`, beside the bursts' outcomes, which stand (their pages are committed)."""

    @property
    def error(self) -> ChoreoIngestError | None:
        """The first output error, whose exit code the run's is."""
        return self.output_errors[0] if self.output_errors else None

    @property
    def error_text(self) -> str:
        """Every output error, as `--json`'s `error` and serve's record say them."""
        return "; ".join(map(str, self.output_errors))


@dataclass(frozen=True)
class MigrationReport:
    schema_version: int
    supported_version: int
    applied: list[str]
    pending: list[str]
    applied_now: list[str]
    exists: bool = True
    """Whether a state is there (`--status` reports on a location with none: all pending)."""


@contextmanager
def locked_store(state: StateRef, holder: RunHolder | None = None) -> Iterator[Store]:
    """The store under the run lock, migrated: what every writing command needs (`holder`:
    see `open_locked`)."""
    location = state_location(state)
    try:
        with location.open_locked(holder) as store:
            applied = store.migrate()
            if applied:
                log.info("schema_migrated", state=str(location), applied=applied)
            yield store
    except StateError as error:  # damage the read-only commands may not meet: they are told
        location.note_damage(error)
        raise


def run_once(
    config: Config,
    state: StateRef,
    clock: Clock,
    *,
    only: str | None = None,
    force: bool = False,
    providers: Mapping[str, IncrementalEntityProvider] | None = None,
    stop: StopSignal | None = None,
    rng: random.Random | None = None,
    events_arrived: threading.Event | None = None,
    events_flooding: Callable[[str], float | None] | None = None,
    left_out: Collection[str] = (),
    holder: RunHolder | None = None,
) -> RunResult:
    """One `choreo-ingest run`: at most one burst per provider (`providers` overrides registry;
    the configured providers `left_out` are not run, nor loaded: `serve`'s that could not be).

    `events_arrived` (set by whoever stores an event: `serve`) makes a burst apply the inbox
    between its pages too, not only before the burst; while `events_flooding(provider)` says
    how long its events have arrived as a flood (None: they do not), a drain drops them for a
    fresh walk instead, and the walk waits for the flood's end (`event_backlog.ArrivalRate`).
    `holder`: the caller's claim and session for its every turn with the run lock (`open_locked`).
    """
    names = [name for name in config.providers if name not in left_out]
    if only is not None:
        names = [checked_provider(config, state, only, option="--provider")]
    stop = stop or StopSignal()
    result = RunResult(outcome=RunOutcome.WAITING)
    # The handlers first: a signal while the store is opened (migrated) or closed (its WAL
    # checkpointed) only asks the run to stop, as one during the burst does.
    with stop.installed(), locked_store(state, holder) as store:
        loaded = {name: _load(name, config, providers) for name in names}
        between_pages = None
        if events_arrived is not None:
            events_arrived.clear()  # the drain below takes what is stored so far
            handlers = [p for p in loaded.values() if isinstance(p, EventHandlingProvider)]
            between_pages = EventsBetweenPages(
                events_arrived,
                lambda deadline: _drain_all(
                    store, handlers, config, clock, stop, result, deadline, events_flooding
                ),
                lambda: any(store.has_pending_events(handler.name) for handler in handlers),
                clock,
            )
        engine = BurstEngine(config, store, clock, rng=rng, stop=stop, between_pages=between_pages)
        _drain_all(store, loaded.values(), config, clock, stop, result, None, events_flooding)
        for name in names:  # after the drain, which may ask for one
            longest_flood = config.incremental.rest_length
            apply_refresh_request(store, name, clock, events_flooding, longest_flood)
        for name, provider in loaded.items():
            if stop.is_set():
                break
            result.providers.append(_run_provider(engine, name, provider, force))
            if result.providers[-1].events_queued and not stop.is_set():
                # The events its sweep queued (a name freed, handed on: `SweepFollowingProvider`)
                # are applied now, not a run later.
                _drain_all(store, [provider], config, clock, stop, result, None, events_flooding)
        mirror_error = _sync_mirror(config, store, clock, stop, result.providers)
        stopped = stop.is_set()  # a stop from here on cuts nothing short: the run is done
        pruned = prune_change_log(store, config, clock.now())
        if pruned:
            log.debug("changes_pruned", count=pruned)
        # Only a run that got this far writes the textfile, its last run time with it: one that
        # the state store failed (exit 4) or a bug ended leaves it, as one that could not take
        # the lock (75) does, and as serve's failed tick leaves its last run.
        metrics_error = _write_metrics(config, store, clock.now())
    result.output_errors = [e for e in (mirror_error, metrics_error) if e is not None]
    held = bool(result.events.held)
    result.outcome = _overall_outcome(result.providers, stopped, result.error, held)
    return result


def _load(
    name: str, config: Config, overrides: Mapping[str, IncrementalEntityProvider] | None
) -> IncrementalEntityProvider | ChoreoIngestError:
    try:
        return (overrides or {}).get(name) or load_provider(name, config)
    except ChoreoIngestError as error:
        log.info("provider_unavailable", provider=name, error=str(error))
        return error


def _drain_all(
    store: Store,
    providers: Iterable[IncrementalEntityProvider | ChoreoIngestError],
    config: Config,
    clock: Clock,
    stop: StopSignal,
    result: RunResult,
    deadline: float | None,
    flooding: Callable[[str], float | None] | None,
) -> None:
    """Apply each provider's inbox, until `deadline` (a burst's, for a drain between its pages;
    else each drain has `burstLength`)."""
    for provider in providers:
        if isinstance(provider, EventHandlingProvider) and not stop.is_set():
            _drain(store, provider, config, clock, stop, result.events, deadline, flooding)


def _drain(
    store: Store,
    provider: EventHandlingProvider,
    config: Config,
    clock: Clock,
    stop: StopSignal,
    totals: DrainStats,
    deadline: float | None,
    flooding: Callable[[str], float | None] | None,
) -> None:
    try:
        stats = drain_inbox(store, provider, config, clock, stop.is_set, deadline, flooding)
    except StateError:  # the store failed: nothing else can be written either
        raise
    except ChoreoIngestError as error:  # e.g. the client could not be built: events wait
        log.error("events_not_drained", provider=provider.name, error=str(error))
        return
    totals.add(stats)


def _run_provider(
    engine: BurstEngine,
    name: str,
    provider: IncrementalEntityProvider | ChoreoIngestError,
    force: bool,
) -> ProviderOutcome:
    store = engine.store
    if isinstance(provider, ChoreoIngestError):
        record = after_unavailable(store.load_provider(name), str(provider))
        store.record_unavailable(record, str(provider), engine.clock.now())
        return ProviderOutcome(
            name=name,
            action=ProviderAction.FAILED,
            state=record.state,
            error=str(provider),
            unloadable=True,
        )
    if UNAVAILABLE_FACT in store.facts(name):  # installed again
        store.record_available(after_loaded(store.load_provider(name)), engine.clock.now())
    try:
        return engine.run_provider(provider, force=force)
    except StateError:  # the store failed (a full disk): no other provider can write either
        raise
    except Exception as error:  # a provider's bug must not stop the other providers
        log.error("provider_crashed", provider=name, exc_info=True)
        message = f"internal error in provider {name!r}: {type(error).__name__}: {error}"
        record = engine.store.load_provider(name)
        return ProviderOutcome(
            name=name, action=ProviderAction.FAILED, state=record.state, error=message, crashed=True
        )


def _overall_outcome(
    outcomes: list[ProviderOutcome],
    stopped: bool,
    output_error: ChoreoIngestError | None,
    events_held: bool = False,
) -> RunOutcome:
    """What the run did overall (`stopped`: a stop came before its work was done). An output
    that could not be written makes it an error, as an error that ends a run does: something
    an operator must fix, whatever the bursts did. A drain that stopped on upstream trouble
    (`events_held`: its events wait a backoff step) fails the run as a failed burst does."""
    if output_error is not None:
        return RunOutcome.ERROR
    actions = {outcome.action for outcome in outcomes}
    if stopped or ProviderAction.INTERRUPTED in actions:
        return RunOutcome.INTERRUPTED
    if ProviderAction.FAILED in actions or events_held:
        return RunOutcome.FAILED
    if ProviderAction.BURST in actions:
        return RunOutcome.BURST
    return RunOutcome.WAITING


def _sync_mirror(
    config: Config,
    store: Store,
    clock: Clock,
    stop: StopSignal,
    outcomes: list[ProviderOutcome],
) -> ChoreoIngestError | None:
    """Bring the YAML mirror up to date within the run's time; an error is returned, for the
    run's result (the bursts' outcomes stand beside it).

    The mirror counts inside the burst budget: it goes on until `burstLength` after the start of
    the run's last burst (the whole `burstLength` from now when no burst ran), or until SIGTERM.
    What it leaves, the next run carries on with.
    """
    directory = config.catalog_directory
    if directory is None or stop.is_set():
        return None  # an interrupted run leaves it to the next one
    burst_length = config.incremental.burst_length
    # The engine's deadline (monotonic) is not kept, the burst's start is (wall time): a step of
    # the wall clock costs at most this run's mirror time, never more than burstLength. A provider
    # that could not load had no burst, and its last start is an older run's.
    started = []
    for outcome in outcomes:
        unavailable = UNAVAILABLE_FACT in store.facts(outcome.name)
        if outcome.action == ProviderAction.WAITING or unavailable:
            continue
        last_burst_at = store.load_provider(outcome.name).last_burst_at
        if last_burst_at is not None:
            started.append(last_burst_at)
    elapsed = clock.now() - max(started) if started else 0.0
    deadline = clock.monotonic() + min(max(burst_length - elapsed, 0.0), burst_length)

    def cancelled() -> bool:
        return stop.is_set() or clock.monotonic() >= deadline

    try:
        stats = sync_mirror(store, directory, cancelled=cancelled)
    except StateError:  # the store failed, or the run lock was lost: nothing else is written
        raise
    except ChoreoIngestError as error:
        log.info("mirror_not_written", error=str(error))
        return error
    log.debug(
        "mirror_synced", written=stats.written, deleted=stats.deleted, position=stats.position
    )
    if not stats.caught_up:
        log.info(
            "mirror_cut_short",
            position=stats.position,
            changes_left=store.last_change_seq() - stats.position,
            reason="stopped" if stop.is_set() else "burstLength spent",
        )
    return None


def _write_metrics(config: Config, store: Store, now: float) -> ChoreoIngestError | None:
    """Write the metrics textfile, if configured; an error is logged and returned (a run reports
    it as it reports an unwritable mirror).

    Called under the run lock with no burst in flight (after a run's bursts, or an operator's
    command): a `bursting` provider is a burst that did not finish, counted as failed, as the
    idle call counts it. A run whose store failed mid-burst writes no textfile.
    """
    if config.metrics_textfile is None:
        return None
    try:
        metrics = run_metrics(store, config, now)
        write_metrics_textfile(config.metrics_textfile, metrics, config.metrics_labels)
    except ChoreoIngestError as error:
        log.info("metrics_not_written", error=str(error))
        return error
    return None


def migrate(state: StateRef, *, apply: bool = True) -> MigrationReport:
    """Apply pending migrations under the run lock (or only report them)."""
    if not apply:
        if not state_location(state).exists():
            return MigrationReport(0, SCHEMA_VERSION, [], list(MIGRATION_NAMES), [], exists=False)
        with state_location(state).open(readonly=True) as store:
            return _migration_report(store, [])
    with state_location(state).open_locked() as store:
        applied_now = store.migrate()
        return _migration_report(store, applied_now)


def _migration_report(store: Store, applied_now: list[str]) -> MigrationReport:
    return MigrationReport(
        schema_version=store.schema_version(),
        supported_version=store.supported_schema_version,
        applied=store.applied_migrations(),
        pending=store.pending_migrations(),
        applied_now=applied_now,
    )


@contextmanager
def changing_state(
    state: StateRef, config: Config | None, clock: Clock, *, existing: bool = True
) -> Iterator[Store]:
    """`locked_store` for an operator's command that changes state (`reset`, `refresh`,
    `removals approve`): the metrics textfile is rewritten after it, so that what it says (blocked
    removals, state) is not stale until the next run. Unless `existing` is False (`refresh
    --now`, which runs a burst at once), a state that is not there yet is a StateError: created
    here, at a mistyped `--db`, it would take a change meant for another."""
    location = state_location(state)
    if existing and not location.exists():
        raise location.no_state_yet()
    with locked_store(state) as store:
        yield store
        if config is not None:
            _write_metrics(config, store, clock.now())


def reset(
    state: StateRef,
    name: str,
    clock: Clock,
    *,
    purge: bool,
    config: Config | None = None,
    mirror: bool = False,
) -> int:
    """Back to idle: the next run starts a fresh cycle. Returns entities removed by `purge`
    (with `mirror`, the YAML mirror is then rebuilt: `mirror.rebuild_after_renewal`)."""
    with changing_state(state, config, clock) as store:
        stored = store.load_provider(name, strict=False)
        record, crashed = after_reset(stored), stored.state is ProviderState.BURSTING
        removed = store.reset_provider(record, purge=purge, now=clock.now(), crashed_burst=crashed)
        if purge and mirror:
            rebuild_after_renewal(config.catalog_directory if config else None, store)
        return removed


def refresh(
    state: StateRef, name: str, clock: Clock, *, config: Config | None = None, create: bool = False
) -> ProviderState:
    """Make the provider due now, whatever it waits for; a state not there yet is made only
    when `create` (a burst follows at once: `refresh --now`, `serve`)."""
    with changing_state(state, config, clock, existing=not create) as store:
        now = clock.now()
        stored = store.load_provider(name)
        record = after_refresh(stored, now)
        store.save_provider(record, now, crashed_burst=stored.state is ProviderState.BURSTING)
        return record.state


def approve_removals(
    state: StateRef,
    name: str,
    clock: Clock,
    *,
    config: Config | None = None,
    cycle: int | None = None,
) -> tuple[int, int | None]:
    """Remove what the blocked sweep held back; with `cycle`, only if the blocked sweep is still
    that cycle's (the one reviewed), else a ConfigError saying what is blocked now. Returns how
    many were removed and the cycle whose sweep held them back (None: none was blocked)."""
    with changing_state(state, config, clock) as store:
        blocked = store.blocked_removals(name)
        removed = store.approve_removals(name, clock.now(), cycle=cycle)
        if removed is not None:
            return removed, blocked.cycle_id
    now_blocked = (
        f"cycle {blocked.cycle_id}'s {blocked.count:,} removals are blocked now"
        if blocked.cycle_id is not None
        else "no removals are blocked now"
    )
    raise ConfigError(
        f"{name}: {now_blocked}, not cycle {cycle}'s; nothing removed "
        f"(review them with: choreo-ingest removals {name})",
        path="--cycle",
    )


def forget(
    state: StateRef, name: str, clock: Clock, *, config: Config | None = None, mirror: bool = False
) -> int:
    """Remove what the state holds of a provider the config dropped. Returns entities removed
    (with `mirror`, the YAML mirror is then rebuilt: `mirror.rebuild_after_renewal`)."""
    with changing_state(state, config, clock) as store:
        removed = store.forget_provider(name, clock.now())
        if mirror:
            rebuild_after_renewal(config.catalog_directory if config else None, store)
        return removed


def copy_state(source: StateRef, target: StateRef, *, force: bool = False) -> CopyReport:
    """The whole state of `source` copied to `target` (both migrated first), holding both run
    locks; a target that holds a state is refused unless `force`, and a source with none (a
    mistyped `--db`) is refused before anything is created or copied. So is a source an older
    release wrote, which migrating would take out of that release's reach, and the copy too:
    the copy an operator makes before an upgrade is the one to roll back with."""
    copied, copy = state_location(source), state_location(target)
    if not copied.exists():
        raise StateError(f"no state at {copied}: nothing to copy")
    report = migrate(source, apply=False)
    if report.pending:
        raise StateError(
            f"{copied}: schema version {report.schema_version}, an older release's (this one's "
            f"is {report.supported_version}): the copy would migrate it and itself first, and "
            "neither could go back to that release. For a copy to roll back with, run "
            "`migrate --copy-to` with that release (or copy the file with its -wal and -shm "
            "while no call runs); to copy it at this release's schema, run `choreo-ingest "
            "migrate` first",
            path=str(copied),
        )
    itself = ConfigError(f"{copy} is the state being copied", path="--copy-to")
    if _same_store(copied, copy):
        raise itself
    with ExitStack() as stack:
        origin = stack.enter_context(locked_store(source))
        try:
            destination = stack.enter_context(locked_store(target))
        except LockHeld:
            if _locked_by(copy, origin):  # the same schema of the same database, spelt otherwise
                raise itself from None
            raise
        return origin.copy_to(destination, force=force)


def _locked_by(location: StateLocation, store: Store) -> bool:
    """Whether `store`'s own session holds `location`'s run lock: PostgreSQL URLs that differ
    (`localhost` for `127.0.0.1`, an added `?sslmode=`) but reach one schema. A look that
    fails says no: the lock held elsewhere is what there is to report."""
    if not isinstance(location, PostgresLocation):
        return False
    try:
        session = store.server_session()
        return session is not None and location.run_lock_holder() == session
    except StateError:
        return False


def _same_store(one: StateLocation, other: StateLocation) -> bool:
    """Whether two locations are one store: for files, by path or by inode (a hard link)."""
    if isinstance(one, SqliteLocation) and isinstance(other, SqliteLocation):
        if one.path.resolve() == other.path.resolve():
            return True
        try:
            return one.path.samefile(other.path)
        except OSError:  # one of them is not there yet
            return False
    return str(one) == str(other)


# The documents `--json` prints and serve answers, for the commands that change state.


def refresh_json(provider: str, state: ProviderState) -> dict[str, Any]:
    return {"provider": provider, "state": state.value, "due": True}


def reset_json(provider: str, *, forgotten: bool, removed: int) -> dict[str, Any]:
    return {"provider": provider, "reset": True, "forgotten": forgotten, "purged": removed}


def approval_json(provider: str, removed: int, cycle: int | None = None) -> dict[str, Any]:
    return {"provider": provider, "removed": removed, "cycle": cycle}
