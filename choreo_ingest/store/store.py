"""`Store`: the narrow interface the engine and CLI use; the only way in to the state DB."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from choreo_ingest.config import DEFAULT_INBOX_CAPACITY
from choreo_ingest.errors import StateError
from choreo_ingest.files import absent_directory, not_a_regular_file
from choreo_ingest.models import (
    JSON,
    Delta,
    EntityIteratorResult,
    Facts,
    IndexEntry,
    PageStats,
    ProviderRecord,
    QueuedItem,
    SweepFollower,
    SweepResult,
)
from choreo_ingest.store import (
    change_log,
    entity_rows,
    inbox,
    index,
    meta,
    positions,
    queries,
    writes,
)
from choreo_ingest.store.connection import Connection, Tracer
from choreo_ingest.store.dialect import AnyConnection, pg_session_identity
from choreo_ingest.store.inbox import InboxCounts, InboxEvent
from choreo_ingest.store.queries import BlockedRemovals, ChangeRow, CycleRow, EntityLocation
from choreo_ingest.store.schema import SCHEMA_VERSION
from choreo_ingest.store.write_mark import Look, current_look
from choreo_ingest.store.writes import SweepGuards

if TYPE_CHECKING:
    from choreo_ingest.store.copy import CopyReport


def state_file_exists(path: Path) -> bool:
    """Whether a state file is at `path` (a symlink counts as what it points to), in one stat.

    A StateError naming the file otherwise: what the OS refuses to look up (a directory on the
    way this user may not search, a name too long, a symlink loop), and a FIFO, a device or a
    socket, which SQLite would open as it is (its open() of a FIFO blocks until a writer
    comes, deaf to SIGTERM; a device gets -journal, -wal and -shm files beside it). A directory
    is left to the opening, which names it."""
    info = _looked_up(path)
    if info is None:
        return False
    problem = not_a_regular_file(path, info.st_mode)
    if problem is not None:
        raise StateError(problem, path=str(path))
    return True


def _looked_up(path: Path) -> os.stat_result | None:
    """`path`'s stat, or None when nothing is there (or a file stands where a directory of its
    path should be: `Path.exists` says the same); what else the OS refuses is a StateError."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise StateError(
            f"{path}: permission denied: this user may not look into {path.parent}",
            path=str(path),
        ) from None
    except OSError as error:
        raise StateError(
            f"{path}: cannot look up the state file: {error.strerror}", path=str(path)
        ) from None


def check_openable(path: Path, *, readonly: bool) -> None:
    """Refuse, before anything opens or locks it, what `Store.open` may not open at `path`: no
    state file yet (`readonly`), a missing directory to make one in, or a path that cannot be
    a state file (`state_file_exists`). One stat when the file is there."""
    if state_file_exists(path):
        return
    if readonly:
        raise no_state_yet(path, missing_directory(path))
    if _looked_up(path.parent) is None:
        raise StateError(f"{path}: {absent_directory(path.parent)}", path=str(path))


def missing_directory(path: Path) -> Path | None:
    """The directory of a state file that is not there yet, when that is missing too: `run`
    and `migrate` make the file, never its directory."""
    return None if state_file_exists(path) or path.parent.is_dir() else path.parent


def no_state_yet(
    state: object,
    missing_directory: Path | None,
    *,
    what: str = "state file",
    given_by: str | None = None,
) -> StateError:
    """For a command that needs a state already there (`what`: "state" for a PostgreSQL schema,
    which is no file). `run` and `migrate` make a state file, never its directory: when that is
    missing too (`missing_directory`), it is named, or the advice would send the operator to a
    command that fails as well. `given_by`: `$CHOREO_INGEST_DB` where the location came from it:
    a variable left set in a shell points away from the config's state, and only this says so."""
    given = f"; {given_by} gave this {what}" if given_by else ""
    if missing_directory is not None:
        absent = absent_directory(missing_directory)
        advice = (
            ""
            if missing_directory.exists()
            else ": create it (`choreo-ingest run` and `migrate` do not)"
        )
        return StateError(f"{state}: no {what} yet, and {absent}{advice}{given}", path=str(state))
    return StateError(
        f"{state}: no {what} yet (`choreo-ingest run` or `choreo-ingest migrate` creates it)"
        f"{given}",
        path=str(state),
    )


class Store:
    """The state, over an SQLite `Connection` or a PostgreSQL `PgConnection`: the same methods
    and the same guarantees on both (`dialect` says which it is)."""

    def __init__(self, conn: AnyConnection) -> None:
        self._conn = conn
        self._closed = False
        self.dialect = conn.dialect
        self.path: Path | None = conn.path if isinstance(conn, Connection) else None  # SQLite's

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, tracer: Tracer | None = None) -> Store:
        """Open (or, unless `readonly`, create) the state DB at `path`; schema is not migrated."""
        check_openable(path, readonly=readonly)
        return cls.open_checked(path, readonly=readonly, tracer=tracer)

    @classmethod
    def open_checked(
        cls, path: Path, *, readonly: bool = False, tracer: Tracer | None = None
    ) -> Store:
        """`open`, for a caller that has just called `check_openable` (before taking the run
        lock, say): the idle `run` pays for one stat of the state file, not two."""
        return cls(Connection(path, readonly=readonly, tracer=tracer))

    def limit_lock_wait(self, seconds: float) -> None:
        """Wait at most `seconds` for a state file's write lock (SQLite's busy timeout) from now
        on; PostgreSQL's `lock_timeout` stays as it is."""
        if isinstance(self._conn, Connection):
            self._conn.execute(f"PRAGMA busy_timeout = {max(int(seconds * 1000), 1)}")

    def check_lock_before_writes(self, check: Callable[[], None]) -> None:
        """Call `check` (the run lock's `check_held`) at the start of every write transaction of
        a state file (PostgreSQL fences its run lock itself: `pg_fence`)."""
        if isinstance(self._conn, Connection):
            self._conn.lock_check = check

    def check_lock(self) -> None:
        """Raise LockLost if the run lock its writes check is lost: for a writer of files the
        store vouches for (the mirror), before it puts them in place."""
        if isinstance(self._conn, Connection) and self._conn.lock_check is not None:
            self._conn.lock_check()

    def server_session(self) -> str | None:
        """PostgreSQL: this store's session, by the server's start and its pid, as
        `PostgresLocation.run_lock_holder` names the one holding a lock; SQLite: None."""
        if isinstance(self._conn, Connection):
            return None
        return str(self._conn.scalar(f"SELECT {pg_session_identity('pg_backend_pid()')}"))

    def damage(self, *, thorough: bool = False) -> str | None:
        """A state file's damage `quick_check` (`thorough`: `integrity_check`) finds, or None."""
        conn = self._conn
        return conn.damage(thorough=thorough) if isinstance(conn, Connection) else None

    def close(self) -> None:
        """Closes its connection once: a kept PostgreSQL session goes back to be used again
        (`pg_sessions`), where a second close would end it under another user."""
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    supported_schema_version = SCHEMA_VERSION

    def schema_version(self) -> int:
        return self._conn.schema_version()

    def applied_migrations(self) -> list[str]:
        return self._conn.applied_migrations()

    def pending_migrations(self) -> list[str]:
        return self._conn.pending_migrations()

    def migrate(self) -> list[str]:
        return self._conn.migrate()

    def require_current_schema(self) -> None:
        self._conn.require_current_schema()

    # -- the write path ---------------------------------------------------------------------

    def save_provider(
        self, record: ProviderRecord, now: float, *, crashed_burst: bool = False
    ) -> None:
        """Store `record`. `crashed_burst`: it moves on from a burst that did not finish (a
        `bursting` record found under the run lock), counted with it as a failed burst."""
        with self._conn.transaction():
            if crashed_burst:
                writes.count_crashed_burst(self._conn, record.name)
            writes.save_provider(self._conn, record, now)

    def start_cycle(self, record: ProviderRecord, now: float, facts: Facts | None = None) -> None:
        writes.start_cycle(self._conn, record, now, facts or {})

    def commit_page(
        self,
        provider: str,
        cycle_id: int,
        page: EntityIteratorResult,
        cursor_text: str | None,
        now: float,
    ) -> PageStats:
        return writes.commit_page(self._conn, provider, cycle_id, page, cursor_text, now)

    def complete_cycle(
        self,
        record: ProviderRecord,
        guards: SweepGuards,
        now: float,
        follower: SweepFollower | None = None,
    ) -> SweepResult:
        return writes.complete_cycle(self._conn, record, guards, now, follower)

    def end_burst(self, record: ProviderRecord, ended: str, now: float) -> None:
        """A burst ended with work left (`ok`, or `interrupted`): stored and counted at once."""
        writes.end_burst(self._conn, record, ended, now)

    def record_failure(self, record: ProviderRecord, now: float) -> None:
        writes.record_failure(self._conn, record, now)

    def approve_removals(
        self, provider: str, now: float, *, cycle: int | None = None
    ) -> int | None:
        return writes.approve_removals(self._conn, provider, now, cycle=cycle)

    def apply_delta(
        self, provider: str, cycle_id: int, delta: Delta, now: float
    ) -> tuple[PageStats, int]:
        return writes.apply_delta(self._conn, provider, cycle_id, delta, now)

    def reset_provider(
        self, record: ProviderRecord, *, purge: bool, now: float, crashed_burst: bool = False
    ) -> int:
        return writes.reset_provider(
            self._conn, record, purge=purge, now=now, crashed_burst=crashed_burst
        )

    def record_unavailable(self, record: ProviderRecord, problem: str, now: float) -> None:
        """A configured provider that could not be loaded: its failure counted and kept as the
        fact `unavailable` (what `health` reports) until it loads again."""
        writes.record_unavailable(self._conn, record, problem, now)

    def record_available(self, record: ProviderRecord, now: float) -> None:
        """A provider that could not be loaded loads again: the fact `unavailable` goes, and
        `record` (its load failures forgotten) is stored, in one transaction."""
        writes.record_available(self._conn, record, now)

    def set_facts(self, provider: str, facts: Facts, now: float) -> None:
        writes.set_facts(self._conn, provider, facts, now)

    def forget_provider(self, provider: str, now: float) -> int:
        return writes.forget_provider(self._conn, provider, now)

    def bump_counters(self, provider: str, increments: dict[str, int]) -> None:
        with self._conn.transaction():
            entity_rows.bump_counters(self._conn, provider, increments)

    # -- the event inbox -------------------------------------------------------------------

    def add_events(
        self,
        provider: str,
        bodies: Sequence[JSON],
        now: float,
        *,
        capacity: int = DEFAULT_INBOX_CAPACITY,
    ) -> list[int]:
        return inbox.add_events(self._conn, provider, bodies, now, capacity=capacity)

    def pending_events(self, provider: str, limit: int = 1000) -> list[InboxEvent]:
        return inbox.pending_events(self._conn, provider, limit)

    def pending_event_count(self, provider: str) -> int:
        return inbox.pending_event_count(self._conn, provider)

    def has_pending_events(self, provider: str) -> bool:
        return inbox.has_pending_events(self._conn, provider)

    def drop_events(self, provider: str) -> int:
        return inbox.drop_events(self._conn, provider)

    def purge_events(self, provider: str | None = None) -> int:
        return inbox.purge_events(self._conn, provider)

    def apply_event(
        self, provider: str, cycle_id: int, seq: int, delta: Delta, now: float
    ) -> tuple[PageStats, int]:
        return inbox.apply_event(self._conn, provider, cycle_id, seq, delta, now)

    def fail_event(self, provider: str, seq: int, error: str, *, max_attempts: int) -> bool:
        return inbox.fail_event(self._conn, provider, seq, error, max_attempts=max_attempts)

    def inbox_counts(self, provider: str | None = None) -> InboxCounts:
        """Pending and parked events in the inbox: all of them, or `provider`'s."""
        return inbox.inbox_counts(self._conn, provider)

    # -- reads ----------------------------------------------------------------------------

    def load_provider(self, name: str, *, strict: bool = True) -> ProviderRecord:
        return queries.load_provider(self._conn, name, strict=strict)

    def provider_names(self) -> list[str]:
        return queries.provider_names(self._conn)

    def active_count(self, provider: str) -> int:
        return entity_rows.active_count(self._conn, provider)

    def entity_counts(self, provider: str) -> dict[str, int]:
        return queries.entity_counts(self._conn, provider)

    def counters(self, provider: str) -> dict[str, int]:
        return queries.counters(self._conn, provider)

    def blocked_removals(self, provider: str) -> BlockedRemovals:
        return queries.blocked_removals(self._conn, provider)

    def pending_removal_refs(self, provider: str, limit: int | None = None) -> list[str]:
        return queries.pending_removal_refs(self._conn, provider, limit)

    def last_cycle(self, provider: str, *, completed: bool = False) -> CycleRow | None:
        return queries.last_cycle(self._conn, provider, completed=completed)

    def read_queue(self, provider: str, queue: str, after: int, limit: int) -> list[QueuedItem]:
        return queries.read_queue(self._conn, provider, queue, after, limit)

    def iter_entities(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        return queries.iter_entities(self._conn, kind)

    def entity_body(self, ref: str) -> dict[str, Any] | None:
        return queries.entity_body(self._conn, ref)

    def entity_location(self, ref: str) -> EntityLocation | None:
        return queries.entity_location(self._conn, ref)

    def iter_entity_locations(self) -> Iterator[EntityLocation]:
        return queries.iter_entity_locations(self._conn)

    def changes(self, since: int = 0, limit: int | None = None) -> list[ChangeRow]:
        return queries.changes(self._conn, since, limit)

    def change_at(self, seq: int) -> float | None:
        return queries.change_at(self._conn, seq)

    def last_change_seq(self) -> int:
        return queries.last_change_seq(self._conn)

    def index_by_key(
        self, provider: str, table: str, keys: Sequence[str], *, min_cycle: int = 0
    ) -> dict[str, IndexEntry]:
        return index.index_by_key(self._conn, provider, table, keys, min_cycle=min_cycle)

    def index_by_group(
        self, provider: str, table: str, groups: Sequence[str], *, min_cycle: int = 0
    ) -> dict[str, list[IndexEntry]]:
        return index.index_by_group(self._conn, provider, table, groups, min_cycle=min_cycle)

    def index_by_group_prefix(self, provider: str, table: str, prefix: str) -> list[IndexEntry]:
        return index.index_by_group_prefix(self._conn, provider, table, prefix)

    def facts(self, provider: str) -> dict[str, str]:
        return index.read_facts(self._conn, provider)

    def entity_bodies(
        self, refs: Sequence[str], max_chars: int | None = None
    ) -> dict[str, dict[str, Any]] | None:
        return queries.entity_bodies(self._conn, refs, max_chars)

    def entity_scopes(self, provider: str, refs: Sequence[str]) -> dict[str, str]:
        return queries.entity_scopes(self._conn, provider, refs)

    def entities_after(
        self, ref: str | None, limit: int, max_chars: int | None = None
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        return queries.entities_after(self._conn, ref, limit, max_chars)

    # -- the change feed: the store's identity and the change log's bounds ----------------

    def snapshot(self) -> AbstractContextManager[None]:
        """Reads inside see one state of the file (a read transaction); no writes inside."""
        return self._conn.snapshot()

    def store_id(self) -> str:
        return meta.store_id(self._conn)

    def look(self) -> Look | None:
        """The state file's write mark, schema version and decision rows (`write_mark`), or
        None (PostgreSQL, or no mark yet)."""
        return current_look(self._conn)

    def new_write_mark(self) -> Look | None:
        """A write mark for a state file that has none yet (written before marks were): an
        empty write transaction gives it one."""
        with self._conn.transaction():
            pass
        return current_look(self._conn)

    def renew_store_id(self, now: float) -> str:
        with self._conn.transaction():
            return meta.renew_store_id(self._conn, now)

    def change_bounds(self) -> tuple[int, int]:
        """(pruned through, newest seq): every change at or below the first is gone; the second
        is the last seq ever given, pruned or not (0 for none)."""
        return change_log.change_bounds(self._conn)

    def prune_changes(self, older_than: float, max_rows: int, keep_after: int | None = None) -> int:
        return change_log.prune_changes(self._conn, older_than, max_rows, keep_after)

    def prunable_changes(
        self, older_than: float, max_rows: int, keep_after: int | None = None
    ) -> bool:
        return change_log.prunable_changes(self._conn, older_than, max_rows, keep_after)

    def copy_to(self, target: Store, *, force: bool = False) -> CopyReport:
        """This whole state, written over `target` (same schema; the caller holds both run
        locks); ConfigError if `target` holds a state and not `force`."""
        newest = {"changes": self.change_bounds()[1]}
        from choreo_ingest.store.copy import copy_state  # `migrate --copy-to` only

        return copy_state(self._conn, target._conn, newest_seqs=newest, force=force)

    # -- positions of change log consumers --------------------------------------------------

    def get_position(self, name: str) -> int:
        return positions.get_position(self._conn, name)

    def set_position(self, name: str, value: int) -> None:
        positions.set_position(self._conn, name, value)
