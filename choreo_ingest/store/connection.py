"""Opening the state DB safely: refuse what is not ours, set the pragmas, run transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from choreo_ingest.errors import NotAStateFile, SchemaTooNew, StateError
from choreo_ingest.store.migrations import (
    MIGRATION_NAMES,
    MIGRATION_SET,
    SCHEMA_VERSION,
    migrations,
)

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 10_000

Tracer = Callable[[str, Any], None]
"""Called before every statement (sqlite-utils' tracer signature); used for SQL debug logging."""


class Connection:
    """A sqlite-utils Database with our pragmas, explicit transactions and a statement tracer."""

    def __init__(self, path: Path, *, readonly: bool, tracer: Tracer | None = None) -> None:
        self.path = path
        self.readonly = readonly
        self._tracer = tracer
        _refuse_foreign_file(path)
        conn: sqlite3.Connection | None = None
        try:
            if readonly:
                conn = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
                )
            else:
                conn = sqlite3.connect(str(path), isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db = Database(conn, execute_plugins=False)
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
        self.db.conn.close()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        if self._tracer is not None:
            self._tracer(sql, params)
        return self.db.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self._tracer is not None:
            self._tracer(sql, rows)
        self.db.conn.executemany(sql, rows)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: all of it commits, or none of it (also on KeyboardInterrupt)."""
        conn = self.db.conn
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
        return [m.name for m in migrations.applied(self.db)]

    def pending_migrations(self) -> list[str]:
        applied = set(self.applied_migrations())
        return [name for name in MIGRATION_NAMES if name not in applied]

    def migrate(self) -> list[str]:
        """Apply pending migrations (the caller holds the run lock); returns what was applied."""
        pending = self.pending_migrations()
        if pending:
            try:
                migrations.apply(self.db)
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

    def _check_is_ours(self) -> None:
        # Ownership first: other apps set user_version too, and must not read as "too new".
        version = self.schema_version()
        tables = set(self.db.table_names())
        if tables and (
            migrations.migrations_table not in tables
            or not self.scalar(
                f"SELECT count(*) FROM {migrations.migrations_table} WHERE migration_set = ?",
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
