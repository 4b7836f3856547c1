"""How long the change log keeps its changes: `changes.retainDays` and `changes.maxRows`, never
past what the YAML mirror (`catalog.directory`) has yet to apply."""

from __future__ import annotations

from choreo_ingest.config import Config
from choreo_ingest.store import Store, position_name

SECONDS_PER_DAY = 86_400


def prune_change_log(store: Store, config: Config, now: float) -> int:
    """Prune the changes the settings let go; returns how many were pruned."""
    return store.prune_changes(*_limits(store, config, now))


def change_log_prunable(store: Store, config: Config, now: float) -> bool:
    """Whether `prune_change_log` would prune anything now (it reads, never writes)."""
    return store.prunable_changes(*_limits(store, config, now))


def _limits(store: Store, config: Config, now: float) -> tuple[float, int, int | None]:
    """(made before, most rows, never after)."""
    keep_after = None
    if config.catalog_directory is not None:
        keep_after = store.get_position(position_name(config.catalog_directory))
    settings = config.changes
    return now - settings.retain_days * SECONDS_PER_DAY, settings.max_rows, keep_after
