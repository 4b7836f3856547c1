"""Opening the state DB safely: refuse what is not ours, set the pragmas, run transactions.

What SQLite says about the state file itself (a full disk, an I/O error, a file or directory
this user may not write, corruption) leaves here as a StateError naming the file, translated
once: in `execute`, `executemany` and the rows a cursor yields (`transaction`'s COMMIT too).
So does a table of the state that is not there: one dropped by hand is refused on open (the
tables the applied migrations made are all checked), one dropped since is met by a statement.
Any other sqlite3 error (bad SQL, a broken constraint) is a bug and stays what it is.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from choreo_ingest.errors import NotAStateFile, SchemaTooNew, StateError
from choreo_ingest.store.schema import (
    MIGRATION_NAMES,
    MIGRATION_SET,
    MIGRATIONS_TABLE,
    SCHEMA_VERSION,
    STATE_TABLES,
    UNUSABLE_FILE_ADVICE,
    missing_tables,
)
from choreo_ingest.store.state_file import (
    access_problem,
    accessible,
    create_state_file,
    foreign_wal_files,
    keep_wal_files,
    unreadable_wal_files,
)
from choreo_ingest.store.write_mark import HAS_MARK_TABLE, MARK_WRITE

BUSY_TIMEOUT_MS = 10_000
Tracer = Callable[[str, Any], None]
"""Called before every statement (sqlite-utils' tracer signature); used for SQL debug logging."""


DAMAGE_SHOWN = 3
"""Problems of `quick_check` a damaged state's message names, at most."""
DAMAGE_TEXT_MAX = 300

MIN_SQLITE_VERSION = (3, 35, 0)
"""For `RETURNING` (the inbox's seqs, the counts of deleted entities). Debian 11 and RHEL 9 ship
SQLite 3.34: a Python there needs a newer SQLite of its own."""


def canonical_json(value: object) -> str:
    """The one text form of a JSON value that the store writes (and hashes).

    A lone surrogate (what a JSON string's `"\\ud800"` decodes to) has no UTF-8 form, so no
    database could take the text: it becomes U+FFFD, as Go's encoder writes invalid UTF-8.
    """
    text = _CANONICAL.encode(value)
    if text.isascii():  # constant time in CPython, and the common case
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def storable_text(text: str | None) -> str | None:
    """`text` as a text column of either store can keep it: U+0000 (which PostgreSQL refuses)
    and lone surrogates (which no database takes) become U+FFFD. For what the store is handed
    to keep as it is: an error's message, a provider's fact."""
    if text is None or (text.isascii() and "\0" not in text):
        return text
    return _SURROGATE.sub("\ufffd", text.replace("\0", "\ufffd"))


# One encoder for every call: `json.dumps` with options builds a new one each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_SURROGATE = re.compile("[\ud800-\udfff]")


class Connection:
    """An SQLite connection with our pragmas, explicit transactions and a statement tracer.

    Not thread-safe: it may move between threads (the engine commits pages on a writer thread),
    but only one thread may use it at a time.
    """

    dialect = "sqlite"
    """Which SQL the store's modules write for it (`PgConnection`'s is "postgres")."""

    def __init__(self, path: Path, *, readonly: bool, tracer: Tracer | None = None) -> None:
        self.path = path
        self.readonly = readonly
        self._tracer = tracer
        self.lock_check: Callable[[], None] | None = None
        """Called at the start of each write transaction: the run lock's `check_held`."""
        self._cursors: weakref.WeakSet[_Cursor] = weakref.WeakSet()
        """Every cursor `execute` made that is still referenced (`close`)."""
        self._marks: bool | None = None
        """Whether write transactions replace the write mark (`write_mark`): the file has a
        `store_meta` (None: not looked yet)."""
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StateError(
                f"{path}: choreo-ingest needs SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or "
                f"later; this Python's sqlite3 module uses SQLite {sqlite3.sqlite_version}",
                path=str(path),
            )
        # No plain open() of the state file or its -wal/-shm here or anywhere in the process:
        # closing any descriptor of a file drops all of the process's POSIX locks on it,
        # SQLite's too, and another process would then think this one is gone (and truncate
        # the -shm it maps, or checkpoint and unlink the -wal under it). SQLite itself reads
        # the header first, so a foreign file is refused (SQLITE_NOTADB) before anything is
        # written to it.
        if not readonly:
            create_state_file(path)
            # A reader may have made them with the mode of a file that was read-only then
            # (SQLite gives them the state file's): a writer would open them read-only.
            keep_wal_files(path, create=False)
        conn: sqlite3.Connection | None = None
        try:
            if readonly:
                # Never `immutable=1`: a writer may be appending to the WAL while we read.
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
                # Some builds (Debian's) zero every freed page: a sweep of 100,000 entities then
                # writes six times the WAL. FAST still clears what is deleted from the pages a
                # statement writes anyway; the state holds catalog data, never a secret.
                conn.execute("PRAGMA secure_delete = FAST")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException as error:
            if conn is not None:
                conn.close()  # a refused file must not stay open (ResourceWarning on 3.13+)
            cause = error.__cause__ if isinstance(error, StateError) else error
            if isinstance(cause, sqlite3.DatabaseError):
                raise self._opening_error(cause) from cause
            raise

    def close(self) -> None:
        # A statement still open (a cursor an error's traceback holds, or a read half done)
        # defers SQLite's close, and the checkpoint it makes, to whenever Python frees it: a
        # note of damage taken meanwhile (`damage_note`) then spoke of a file written since.
        for cursor in list(self._cursors):
            with suppress(sqlite3.Error):
                cursor.close()
        self.raw.close()
        if not self.readonly:
            keep_wal_files(self.path, create=True)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        if self._tracer is not None:
            self._tracer(sql, params)
        cursor = self.raw.cursor(_Cursor)
        self._cursors.add(cursor)
        cursor.state_path = self.path
        with translated_errors(self.path):
            cursor.execute(sql, params)
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self._tracer is not None:
            self._tracer(sql, rows)
        with translated_errors(self.path):
            self.raw.executemany(sql, rows)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Generator[Any]:
        """The rows of a query read as they are iterated, never all in memory (for exports)."""
        # Not `yield from`: it would close the cursor when the stream is closed, which fails
        # once the connection is (an export's stream, freed after the error that ended it).
        for row in self.execute(sql, params):  # noqa: UP028
            yield row

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: all of it commits, or none of it (also on KeyboardInterrupt)."""
        if self.lock_check is not None:  # before BEGIN: never a wait on the next run's writes
            self.lock_check()
        self.execute("BEGIN IMMEDIATE")
        try:
            if self._marks is None:
                self._marks = bool(self.scalar(HAS_MARK_TABLE))
            if self._marks:
                self.execute(MARK_WRITE)
            yield
            self.execute("COMMIT")  # may fail too (a full disk): then roll back, as for the rest
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same state of the file, whatever
        other connections commit meanwhile (a read-only connection may hold one too)."""
        self.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            self._rollback()  # nothing was written: ending the read is all there is to do

    def _rollback(self) -> None:
        """End a failed transaction; an error here must not hide the one that caused it."""
        if self.raw.in_transaction:
            # On failure SQLite rolls the transaction back itself when the connection closes.
            with suppress(sqlite3.Error):
                self.raw.execute("ROLLBACK")

    # -- schema ---------------------------------------------------------------------------

    def schema_version(self) -> int:
        return int(self.scalar("PRAGMA user_version") or 0)

    def applied_migrations(self) -> list[str]:
        return self._applied_migrations(self._table_names())

    def _applied_migrations(self, tables: set[str]) -> list[str]:
        if MIGRATIONS_TABLE not in tables:
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
            from choreo_ingest.store.migrations import apply_migrations

            try:
                apply_migrations(self.raw)
            except sqlite3.Error as error:
                raise state_error(self.path, error, doing="migration failed") from error
            finally:
                self._marks = None  # `store_meta` may be new
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

    def damage(self, *, thorough: bool = False) -> str | None:
        """What SQLite's `quick_check` finds wrong with the file's pages (the first few
        problems, with what to do), or None. A command meets damage only when it reads the
        damaged page: a damaged index may first fail the next run's writes. `thorough`:
        `integrity_check`, which also compares each index with its table."""
        pragma = "integrity_check" if thorough else "quick_check"
        found = [text for (text,) in self.execute(f"PRAGMA {pragma}({DAMAGE_SHOWN})")]
        if found == ["ok"]:
            return None
        lines = [" ".join(line.split()) for text in found for line in text.splitlines()]
        problems = "; ".join(line for line in lines if line and not line.startswith("***"))
        if len(problems) > DAMAGE_TEXT_MAX:
            problems = problems[: DAMAGE_TEXT_MAX - 3] + "..."
        return f"state store {self.path}: corrupt ({pragma}: {problems}): {UNUSABLE_FILE_ADVICE}"

    def _table_names(self) -> set[str]:
        rows = self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    def _check_is_ours(self) -> None:
        # Ownership first: other apps set user_version too, and must not read as "too new".
        version = self.schema_version()
        tables = self._table_names()
        if tables == {MIGRATIONS_TABLE} and not self.scalar(f"SELECT count(*) FROM {tables.pop()}"):
            tables = set()  # a new state file: the first migration is being applied right now
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
        applied = self._applied_migrations(tables)
        unknown = set(applied) - set(MIGRATION_NAMES)
        if unknown:
            raise SchemaTooNew(str(self.path), version + len(unknown), SCHEMA_VERSION)
        # From the names read above, no query more: a table dropped by hand (`sqlite3 s.db
        # 'DROP TABLE entities'`) would otherwise pass for an empty one, or fail a run half-way.
        missing = missing_tables(applied, tables)
        if missing:  # read again after `applied`: a migration committed in between made its own
            missing = missing_tables(applied, self._table_names())
        if missing:
            raise NotAStateFile(
                f"{self.path}: not a usable choreo-ingest state file ({missing}); left untouched: "
                + UNUSABLE_FILE_ADVICE,
                path=str(self.path),
            )

    def _opening_error(self, error: sqlite3.DatabaseError) -> StateError:
        path = self.path
        denied = access_problem(path)
        if denied:  # before the -wal and -shm: without the file itself, they do not matter
            return StateError(f"state store {path}: {denied}", path=str(path))
        foreign = foreign_wal_files(path, os.R_OK if self.readonly else os.R_OK | os.W_OK)
        if foreign:  # no run of the state's owner can mend them; SQLite says "unable to open"
            return StateError(f"state store {path}: {foreign}", path=str(path))
        cannot_open = _primary_code(error) == sqlite3.SQLITE_CANTOPEN
        no_shm = getattr(error, "sqlite_errorcode", 0) == _READONLY_DIRECTORY
        if self.readonly and (cannot_open or no_shm):
            problems = unreadable_wal_files(path)
            if problems:  # SQLite's own text ("attempt to write a readonly database") misleads
                return StateError(
                    f"state store {path}: cannot be read without write access to "
                    f"{path.parent}: {', '.join(problems)} (the next `choreo-ingest run` or "
                    "`migrate`, by a user who may write to that directory, puts them back, "
                    "with the state file's mode)",
                    path=str(path),
                )
        if _primary_code(error) == sqlite3.SQLITE_NOTADB:
            return NotAStateFile(
                f"{path}: not an SQLite file, so not a choreo-ingest state file; left untouched",
                path=str(path),
            )
        if _primary_code(error) == sqlite3.SQLITE_CORRUPT:  # an SQLite file, damaged
            return NotAStateFile(
                f"{path}: not a usable choreo-ingest state file ({error}); left untouched: "
                + UNUSABLE_FILE_ADVICE,
                path=str(path),
            )
        return state_error(path, error)


class _Cursor(sqlite3.Cursor):
    """A cursor whose rows, fetched after `execute`, fail as StateError too."""

    state_path = Path()

    def __next__(self) -> Any:
        try:  # no context manager: this runs once a row (an export reads them all)
            return super().__next__()
        except sqlite3.DatabaseError as error:
            if not _about_the_file(error):
                raise
            raise state_error(self.state_path, error) from error

    def fetchone(self) -> Any:
        with translated_errors(self.state_path):
            return super().fetchone()

    def fetchall(self) -> list[Any]:
        with translated_errors(self.state_path):
            return super().fetchall()


_FILE_PROBLEMS = {
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_IOERR: "I/O error",
    sqlite3.SQLITE_READONLY: "not writable",
    sqlite3.SQLITE_CANTOPEN: "cannot open",
    sqlite3.SQLITE_PERM: "not permitted",
    sqlite3.SQLITE_BUSY: "busy",
    sqlite3.SQLITE_LOCKED: "busy",
    sqlite3.SQLITE_CORRUPT: "corrupt",
    sqlite3.SQLITE_NOTADB: "corrupt",
}
"""Primary result codes that mean trouble with the state file, not with our SQL."""
_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_READONLY_DIRECTORY = 1544  # SQLITE_READONLY_DIRECTORY: no -shm, and no right to create one


_NO_SUCH_TABLE = re.compile(r"no such table: (?:\w+\.)?(\w+)")
"""SQLite's words for a table a statement names (a trigger's: `main.entity_counts`) not there."""
_UNDECODABLE = re.compile(r"Could not decode to UTF-8 column '(.*?)' with text ", re.DOTALL)


def _primary_code(error: sqlite3.Error) -> int:
    return int(getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF


def _missing_table(error: sqlite3.Error) -> str | None:
    """The state's own table a statement found missing (dropped since the file was opened), or
    None: a name no state has is a bug in the SQL, and stays one."""
    found = _NO_SUCH_TABLE.fullmatch(str(error))
    return found[1] if found and found[1] in STATE_TABLES else None


LOW_SPACE_BYTES = 1 << 20
"""Free space below which an I/O error of the state is taken for a full disk."""


def _out_of_space(path: Path) -> bool:
    """Whether the state file's file system has (next to) no room left for this user."""
    from choreo_ingest.disk_space import room_at  # on an I/O error only

    try:
        free = room_at(path.parent, reserve=True).free_bytes
    except OSError:
        return False
    return free is not None and free < LOW_SPACE_BYTES


def _undecodable_column(error: sqlite3.Error) -> str | None:
    """The column whose text Python's sqlite3 module could not decode, or None. Everything the
    state holds was written as UTF-8, so that is damage within a page SQLite reads as sound
    (its text, garbage bytes and all, is not repeated)."""
    found = _UNDECODABLE.match(str(error))
    return found[1][:80] if found else None


def _about_the_file(error: sqlite3.Error) -> bool:
    return (
        _primary_code(error) in _FILE_PROBLEMS
        or _missing_table(error) is not None
        or _undecodable_column(error) is not None
    )


@contextmanager
def translated_errors(path: Path) -> Iterator[None]:
    """Raise what SQLite says about the state file as StateError; bugs stay what they are."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        if not _about_the_file(error):
            raise
        raise state_error(path, error) from error


def state_error(path: Path, error: sqlite3.Error, *, doing: str = "") -> StateError:
    """One line naming the state file and what is wrong with it (`state store s.db: disk full`)."""
    table = _missing_table(error)
    if table is not None and not doing:
        return NotAStateFile(
            f"state store {path}: not a usable choreo-ingest state file (no such table: {table}): "
            + UNUSABLE_FILE_ADVICE,
            path=str(path),
        )
    code = _primary_code(error)
    column = _undecodable_column(error)
    known = _FILE_PROBLEMS.get(code)
    if column is not None:  # damage SQLite does not see: the module's decoding finds it
        code = sqlite3.SQLITE_CORRUPT
        problem = f"corrupt (column {column!r} holds bytes that are not UTF-8)"
    elif known is None:
        problem = str(error)
    elif (
        code == sqlite3.SQLITE_READONLY
        and accessible(path, os.W_OK)
        and not accessible(path.parent, os.W_OK)
    ):
        # SQLite's text ("attempt to write a readonly database") blames the file
        problem = (
            f"not writable: directory {path.parent} is not writable, and SQLite makes "
            f"{path.name}-wal and {path.name}-shm beside the file"
        )
    elif code == sqlite3.SQLITE_IOERR and _out_of_space(path):
        # A write that met ENOSPC is an I/O error to SQLite, whose text sends one looking for
        # a failing disk
        problem = f"disk full ({error}, no space left beside the state file)"
    elif code != sqlite3.SQLITE_FULL:  # SQLite's text adds nothing to "disk full"
        problem = f"{known} ({error})"
    else:
        problem = known
    if doing:
        problem = f"{doing}: {problem}"
    if code == sqlite3.SQLITE_CORRUPT:  # a damaged state: what to do, as for a missing table
        problem = f"{problem}: {UNUSABLE_FILE_ADVICE}"
    kind = NotAStateFile if code in _CORRUPT else StateError
    error_said = kind(f"state store {path}: {problem}", path=str(path))
    error_said.damaged = code == sqlite3.SQLITE_CORRUPT
    return error_said
