"""`run` with nothing due: most cron calls (59 of 60 while a provider rests), answered from the
stored state before anything a burst needs is imported.

`run_if_idle` takes the run lock and reads the providers' stored state. When a `run` would only
rewrite the metrics textfile, it does that and returns True. When there is anything else to do
(a provider due, events waiting, a refresh requested, the YAML mirror behind, changes to prune,
a migration, a provider that is not built in) or anything is wrong (the lock held, a config or
state error), it changes nothing (on PostgreSQL, opening a database without the schema makes the
empty schema, as the full run's open would next) and returns False: the full run
(`invocation.run_once`) then does the work, or reports the problem, as it always has. The two
cannot disagree on what is due: both ask `schedule.decide`, and neither waits out a cycle begun
on another server (`baseUrl`).

This module's imports are the idle call's whole cost; `tests/test_idle.py` pins them.
"""

from __future__ import annotations

from choreo_ingest.api_address import source_address
from choreo_ingest.clock import Clock
from choreo_ingest.config import Config, require_api
from choreo_ingest.errors import ChoreoIngestError
from choreo_ingest.metrics import write_metrics_textfile
from choreo_ingest.mirror_marker import read_marker
from choreo_ingest.models import REFRESH_REQUESTED_FACT, UNAVAILABLE_FACT, cycle_source
from choreo_ingest.providers.registry import BUILT_IN
from choreo_ingest.reporting import run_metrics
from choreo_ingest.retention import change_log_prunable
from choreo_ingest.schedule import Burst, decide, in_cycle, refresh_waits
from choreo_ingest.store import SCHEMA_VERSION, StateLocation, Store, position_name


def run_if_idle(config: Config, state: StateLocation, clock: Clock) -> bool:
    """Do what a `run` with nothing to do does (rewrite the metrics textfile) and return True,
    or change nothing and return False (the full run has work to do, or a problem to report)."""
    if any(name not in BUILT_IN for name in config.providers):
        return False  # another package's provider may do its own work when loaded
    try:
        require_api(config)
        if not state.might_exist():
            return False  # made by the full run, which says where
        with state.open_locked() as store:
            if not nothing_to_do(store, config, clock.now()):
                return False
            if config.metrics_textfile is not None:
                metrics = run_metrics(store, config, clock.now())
                write_metrics_textfile(config.metrics_textfile, metrics, config.metrics_labels)
    except ChoreoIngestError:  # the lock held, a config or state problem: the full run says so
        return False
    return True


def nothing_to_do(store: Store, config: Config, now: float) -> bool:
    """Whether a run now would find every configured provider waiting and nothing else to do."""
    if store.schema_version() != SCHEMA_VERSION:
        return False
    for name in config.providers:
        facts, record = store.facts(name), store.load_provider(name)
        if UNAVAILABLE_FACT in facts:
            return False
        if REFRESH_REQUESTED_FACT in facts and not refresh_waits(record):
            return False
        if store.pending_event_count(name):
            return False
        source = cycle_source(facts, record.cycle_id)
        if source is not None and in_cycle(record) and source != _source(config):
            return False  # begun on another server: the engine begins it again at once
        if isinstance(decide(record, config.incremental, now), Burst):
            return False
    directory = config.catalog_directory
    if directory is not None:
        newest = store.change_bounds()[1]
        if not directory.is_dir() or store.get_position(position_name(directory)) != newest:
            return False
        marker = read_marker(directory, store, newest)
        behind = marker.position is not None and marker.position < newest
        if marker.problem is not None or behind:
            return False
    return not change_log_prunable(store, config, now)


def _source(config: Config) -> str:
    """What the built-in provider (the only one the idle call answers for) reads."""
    return source_address(config.openchoreo.base_url or "")
