"""The state store: the only package that touches SQLite or PostgreSQL, and what opens and
locks it.

Each name is loaded when first asked for (as the package's own `__init__` does): a `run` with
nothing due reads the state's write mark (`write_mark`) without the rest of the store.
"""

from __future__ import annotations

from choreo_ingest.lazy_exports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy: True)

if TYPE_CHECKING:
    from choreo_ingest.store.change_log import gap_after
    from choreo_ingest.store.connection import Tracer, canonical_json
    from choreo_ingest.store.damage_note import noted_damage
    from choreo_ingest.store.inbox import InboxCounts, InboxEvent
    from choreo_ingest.store.location import (
        PostgresLocation,
        SqliteLocation,
        StateLocation,
        StateRef,
        configured_location,
        keeping_sessions,
        state_location,
        state_shown,
    )
    from choreo_ingest.store.positions import position_name
    from choreo_ingest.store.queries import BlockedRemovals, ChangeRow, CycleRow
    from choreo_ingest.store.readers import StoreIndexReader, StoreQueueReader
    from choreo_ingest.store.run_lock import RunLock
    from choreo_ingest.store.schema import MAX_INTEGER, MIGRATION_NAMES, SCHEMA_VERSION
    from choreo_ingest.store.store import Store, no_state_yet
    from choreo_ingest.store.writes import WALKED, SweepGuards

_EXPORTS = {
    "BlockedRemovals": "choreo_ingest.store.queries",
    "ChangeRow": "choreo_ingest.store.queries",
    "CycleRow": "choreo_ingest.store.queries",
    "InboxCounts": "choreo_ingest.store.inbox",
    "InboxEvent": "choreo_ingest.store.inbox",
    "MAX_INTEGER": "choreo_ingest.store.schema",
    "MIGRATION_NAMES": "choreo_ingest.store.schema",
    "PostgresLocation": "choreo_ingest.store.location",
    "RunLock": "choreo_ingest.store.run_lock",
    "SCHEMA_VERSION": "choreo_ingest.store.schema",
    "SqliteLocation": "choreo_ingest.store.location",
    "StateLocation": "choreo_ingest.store.location",
    "StateRef": "choreo_ingest.store.location",
    "Store": "choreo_ingest.store.store",
    "StoreIndexReader": "choreo_ingest.store.readers",
    "StoreQueueReader": "choreo_ingest.store.readers",
    "SweepGuards": "choreo_ingest.store.writes",
    "Tracer": "choreo_ingest.store.connection",
    "WALKED": "choreo_ingest.store.writes",
    "canonical_json": "choreo_ingest.store.connection",
    "configured_location": "choreo_ingest.store.location",
    "gap_after": "choreo_ingest.store.change_log",
    "keeping_sessions": "choreo_ingest.store.location",
    "no_state_yet": "choreo_ingest.store.store",
    "noted_damage": "choreo_ingest.store.damage_note",
    "position_name": "choreo_ingest.store.positions",
    "state_location": "choreo_ingest.store.location",
    "state_shown": "choreo_ingest.store.location",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "MAX_INTEGER",
    "MIGRATION_NAMES",
    "SCHEMA_VERSION",
    "WALKED",
    "BlockedRemovals",
    "ChangeRow",
    "CycleRow",
    "InboxCounts",
    "InboxEvent",
    "PostgresLocation",
    "RunLock",
    "SqliteLocation",
    "StateLocation",
    "StateRef",
    "Store",
    "StoreIndexReader",
    "StoreQueueReader",
    "SweepGuards",
    "Tracer",
    "canonical_json",
    "configured_location",
    "gap_after",
    "keeping_sessions",
    "no_state_yet",
    "noted_damage",
    "position_name",
    "state_location",
    "state_shown",
]
