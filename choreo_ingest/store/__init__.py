"""The state store: the only package that touches SQLite or PostgreSQL, and what opens and
locks it."""

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
)
from choreo_ingest.store.positions import position_name
from choreo_ingest.store.queries import BlockedRemovals, ChangeRow, CycleRow
from choreo_ingest.store.readers import StoreIndexReader, StoreQueueReader
from choreo_ingest.store.run_lock import RunLock
from choreo_ingest.store.schema import MAX_INTEGER, MIGRATION_NAMES, SCHEMA_VERSION
from choreo_ingest.store.store import Store, no_state_yet
from choreo_ingest.store.writes import WALKED, SweepGuards

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
]
