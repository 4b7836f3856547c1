"""Whole invocations: `run` (lock, migrate, inbox, bursts, metrics) and the operator's commands."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config
from choreo_ingest.engine import BurstEngine, ProviderOutcome, StopSignal
from choreo_ingest.errors import ChoreoIngestError, ConfigError, StateError
from choreo_ingest.events import DrainStats, drain_inbox
from choreo_ingest.lock import RunLock
from choreo_ingest.metrics import write_metrics_textfile
from choreo_ingest.mirror import sync_mirror
from choreo_ingest.models import UNAVAILABLE_FACT, ProviderState
from choreo_ingest.providers.base import EventHandlingProvider, IncrementalEntityProvider
from choreo_ingest.providers.registry import load_provider
from choreo_ingest.reporting import all_metrics, provider_names
from choreo_ingest.schedule import Event, transition
from choreo_ingest.store import MIGRATION_NAMES, SCHEMA_VERSION, Store

log = structlog.get_logger("choreo_ingest.invocation")


@dataclass
class RunResult:
    outcome: str  # burst | waiting | failed | interrupted
    providers: list[ProviderOutcome] = field(default_factory=list)
    events: DrainStats = field(default_factory=DrainStats)


@dataclass(frozen=True)
class MigrationReport:
    schema_version: int
    supported_version: int
    applied: list[str]
    pending: list[str]
    applied_now: list[str]


@contextmanager
def locked_store(state_path: Path) -> Iterator[Store]:
    """The run lock, then the store, migrated: what every writing command needs."""
    with RunLock(state_path), Store.open(state_path) as store:
        applied = store.migrate()
        if applied:
            log.info("schema_migrated", path=str(state_path), applied=applied)
        yield store


def run_once(
    config: Config,
    state_path: Path,
    clock: Clock,
    *,
    only: str | None = None,
    force: bool = False,
    providers: Mapping[str, IncrementalEntityProvider] | None = None,
    stop: StopSignal | None = None,
    rng: random.Random | None = None,
) -> RunResult:
    """One `choreo-ingest run`: at most one burst per provider (`providers` overrides registry)."""
    names = list(config.providers)
    if only is not None:
        if only not in names:
            raise ConfigError(
                f"provider {only!r} is not configured (configured: {', '.join(names)})",
                path="--provider",
            )
        names = [only]
    stop = stop or StopSignal()
    result = RunResult(outcome="waiting")
    with locked_store(state_path) as store, stop.installed():
        engine = BurstEngine(config, store, clock, rng=rng, stop=stop)
        loaded = {name: _load(name, config, providers) for name in names}
        try:
            for provider in loaded.values():
                if isinstance(provider, EventHandlingProvider) and not stop.is_set():
                    _drain(store, provider, config, clock, stop, result.events)
            for name, provider in loaded.items():
                if stop.is_set():
                    break
                result.providers.append(_run_provider(engine, name, provider, force))
            mirror_error = _sync_mirror(config, store, stop)
        finally:
            _write_metrics(config, store, clock.now())
    if mirror_error is not None:
        raise mirror_error
    result.outcome = _overall_outcome(result.providers, stop)
    return result


def _load(
    name: str, config: Config, overrides: Mapping[str, IncrementalEntityProvider] | None
) -> IncrementalEntityProvider | ChoreoIngestError:
    try:
        return (overrides or {}).get(name) or load_provider(name, config)
    except ChoreoIngestError as error:
        log.error("provider_unavailable", provider=name, error=str(error))
        return error


def _drain(
    store: Store,
    provider: EventHandlingProvider,
    config: Config,
    clock: Clock,
    stop: StopSignal,
    totals: DrainStats,
) -> None:
    try:
        stats = drain_inbox(store, provider, config, clock, stop.is_set)
    except StateError:  # the store failed: nothing else can be written either
        raise
    except ChoreoIngestError as error:  # e.g. the client could not be built: events wait
        log.error("events_not_drained", provider=provider.name, error=str(error))
        return
    for key, value in vars(stats).items():
        setattr(totals, key, getattr(totals, key) + value)


def _run_provider(
    engine: BurstEngine,
    name: str,
    provider: IncrementalEntityProvider | ChoreoIngestError,
    force: bool,
) -> ProviderOutcome:
    store = engine.store
    if isinstance(provider, ChoreoIngestError):
        record = store.load_provider(name)
        record.attempts += 1
        record.last_error = str(provider)
        store.record_unavailable(record, str(provider), engine.clock.now())
        return ProviderOutcome(name=name, action="failed", state=record.state, error=str(provider))
    if UNAVAILABLE_FACT in store.facts(name):  # installed again
        store.set_facts(name, {UNAVAILABLE_FACT: None}, engine.clock.now())
    try:
        return engine.run_provider(provider, force=force)
    except StateError:  # the store failed (a full disk): no other provider can write either
        raise
    except Exception as error:  # a provider's bug must not stop the other providers
        log.error("provider_crashed", provider=name, exc_info=True)
        message = f"internal error in provider {name!r}: {type(error).__name__}: {error}"
        record = engine.store.load_provider(name)
        return ProviderOutcome(name=name, action="failed", state=record.state, error=message)


def _overall_outcome(outcomes: list[ProviderOutcome], stop: StopSignal) -> str:
    actions = {outcome.action for outcome in outcomes}
    if stop.is_set() or "interrupted" in actions:
        return "interrupted"
    if "failed" in actions:
        return "failed"
    if "burst" in actions:
        return "burst"
    return "waiting"


def _sync_mirror(config: Config, store: Store, stop: StopSignal) -> ChoreoIngestError | None:
    """Bring the YAML mirror up to date; an error is returned, to be raised after the metrics."""
    if config.catalog_directory is None or stop.is_set():
        return None  # an interrupted run leaves it to the next one
    try:
        stats = sync_mirror(store, config.catalog_directory)
    except ChoreoIngestError as error:
        log.error("mirror_not_written", error=str(error))
        return error
    log.debug(
        "mirror_synced", written=stats.written, deleted=stats.deleted, position=stats.position
    )
    return None


def _write_metrics(config: Config, store: Store, now: float) -> None:
    if config.metrics_textfile is None:
        return
    try:
        names = provider_names(store, config)
        write_metrics_textfile(config.metrics_textfile, all_metrics(store, names, run_at=now))
    except ChoreoIngestError as error:
        log.error("metrics_not_written", error=str(error))


def migrate(state_path: Path, *, apply: bool = True) -> MigrationReport:
    """Apply pending migrations under the run lock (or only report them)."""
    if not apply:
        if not state_path.exists():
            return MigrationReport(0, SCHEMA_VERSION, [], list(MIGRATION_NAMES), [])
        with Store.open(state_path, readonly=True) as store:
            return _migration_report(store, [])
    with RunLock(state_path), Store.open(state_path) as store:
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
def changing_state(state_path: Path, config: Config | None, clock: Clock) -> Iterator[Store]:
    """`locked_store` for an operator's command that changes state (`reset`, `refresh`,
    `removals approve`): the metrics textfile is rewritten after it, so that what it says (blocked
    removals, state) is not stale until the next run."""
    with locked_store(state_path) as store:
        yield store
        if config is not None:
            _write_metrics(config, store, clock.now())


def reset(
    state_path: Path, name: str, clock: Clock, *, purge: bool, config: Config | None = None
) -> int:
    """Back to idle: the next run starts a fresh cycle. Returns entities removed by `purge`."""
    with changing_state(state_path, config, clock) as store:
        record = store.load_provider(name)
        record.state = transition(record.state, Event.RESET)
        record.cursor = None
        record.next_action_at = None
        record.attempts = 0
        record.last_error = None
        record.blocked_removals = 0
        return store.reset_provider(record, purge=purge, now=clock.now())


def refresh(
    state_path: Path, name: str, clock: Clock, *, config: Config | None = None
) -> ProviderState:
    """Make the provider due now, whatever it waits for."""
    with changing_state(state_path, config, clock) as store:
        record = store.load_provider(name)
        now = clock.now()
        record.state = transition(record.state, Event.REFRESHED)
        record.next_action_at = now
        store.save_provider(record, now)
        return record.state


def approve_removals(
    state_path: Path, name: str, clock: Clock, *, config: Config | None = None
) -> int:
    with changing_state(state_path, config, clock) as store:
        return store.approve_removals(name, clock.now())
