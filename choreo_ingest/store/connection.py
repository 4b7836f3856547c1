"""Opening the state DB safely: refuse what is not ours, set the pragmas, run transactions."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from choreo_ingest.errors import NotAStateFile, SchemaTooNew, StateError
from choreo_ingest.store.schema import (
    MIGRATION_NAMES,
    MIGRATION_SET,
    MIGRATIONS_TABLE,
    SCHEMA_VERSION,
)

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 10_000

Tracer = Callable[[str, Any], None]
"""Called before every statement (sqlite-utils' tracer signature); used for SQL debug logging."""


def canonical_json(value: object) -> str:
    """The one text form of a JSON value that the store writes (and hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Connection:
    """An SQLite connection with our pragmas, explicit transactions and a statement tracer.

    Not thread-safe: it may move between threads (the engine commits pages on a writer thread),
    but only one thread may use it at a time.
    """

    def __init__(self, path: Path, *, readonly: bool, tracer: Tracer | None = None) -> None:
        self.path = path
        self.readonly = readonly
        self._tracer = tracer
        _refuse_foreign_file(path)
        conn: sqlite3.Connection | None = None
        try:
            if readonly:
                conn = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.raw = conn
            self._check_is_ours()
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException as error:
            if conn is not None:
                conn.close()  # a refused file must not stay open (ResourceWarning on 3.13+)
            if isinstance(error, sqlite3.DatabaseError):
                raise NotAStateFile(
                    f"{path}: not a usable choreo-ingest state file ({error}); left untouched",
                    path=str(path),
                ) from error
            raise

    def close(self) -> None:
        self.raw.close()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        if self._tracer is not None:
            self._tracer(sql, params)
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self._tracer is not None:
            self._tracer(sql, rows)
        self.raw.executemany(sql, rows)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: all of it commits, or none of it (also on KeyboardInterrupt)."""
        conn = self.raw
        self.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    # -- schema ---------------------------------------------------------------------------

    def schema_version(self) -> int:
        return int(self.scalar("PRAGMA user_version") or 0)

    def applied_migrations(self) -> list[str]:
        if MIGRATIONS_TABLE not in self._table_names():
            return []
        rows = self.execute(
            f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = ? ORDER BY rowid",
            [MIGRATION_SET],
        )
        return [name for (name,) in rows]

    def pending_migrations(self) -> list[str]:
        applied = set(self.applied_migrations())
        return [name for name in MIGRATION_NAMES if name not in applied]

    def migrate(self) -> list[str]:
        """Apply pending migrations (the caller holds the run lock); returns what was applied."""
        pending = self.pending_migrations()
        if pending:
            # Loaded here only: sqlite-utils (with numpy, which it imports when installed)
            # costs every process about 0.1 s.
            from sqlite_utils import Database

            from choreo_ingest.store.migrations import migrations

            try:
                migrations.apply(Database(self.raw, execute_plugins=False))
            except sqlite3.Error as error:
                raise StateError(
                    f"{self.path}: migration failed: {error}", path=str(self.path)
                ) from error
        return pending

    def require_current_schema(self) -> None:
        pending = self.pending_migrations()
        if pending:
            raise StateError(
                f"{self.path}: state schema is not up to date "
                f"({len(pending)} pending migration(s)); "
                "run `choreo-ingest migrate`",
                path=str(self.path),
            )

    def _table_names(self) -> set[str]:
        rows = self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    def _check_is_ours(self) -> None:
        # Ownership first: other apps set user_version too, and must not read as "too new".
        version = self.schema_version()
        tables = self._table_names()
        if tables and (
            MIGRATIONS_TABLE not in tables
            or not self.scalar(
                f"SELECT count(*) FROM {MIGRATIONS_TABLE} WHERE migration_set = ?",
                [MIGRATION_SET],
            )
        ):
            raise NotAStateFile(
                f"{self.path}: an SQLite file, but not a choreo-ingest state file; left untouched",
                path=str(self.path),
            )
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(str(self.path), version, SCHEMA_VERSION)
        if not tables:
            return
        unknown = set(self.applied_migrations()) - set(MIGRATION_NAMES)
        if unknown:
            raise SchemaTooNew(str(self.path), version + len(unknown), SCHEMA_VERSION)


def _refuse_foreign_file(path: Path) -> None:
    """Refuse a non-SQLite file before SQLite gets to touch it (WAL mode would write to it)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as error:
        raise StateError(f"{path}: cannot read: {error.strerror}", path=str(path)) from error
    if header and header != SQLITE_HEADER:
        raise NotAStateFile(
            f"{path}: not an SQLite file, so not a choreo-ingest state file; left untouched",
            path=str(path),
        )
