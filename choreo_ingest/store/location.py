"""Where the state lives, and what opens and locks it there: nothing above the store takes a
file path. Two kinds: an SQLite file (`SqliteLocation`) and a schema of a PostgreSQL database
(`PostgresLocation`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from choreo_ingest.atomic_file import absent_directory
from choreo_ingest.config import NO_CONFIG_FOUND, Config, read_secret_file
from choreo_ingest.errors import ConfigError, LockHeld, NotAStateFile, StateError
from choreo_ingest.store.connection import Tracer
from choreo_ingest.store.damage_note import forget_damage, note_damage, noted_damage
from choreo_ingest.store.dialect import pg_session_identity
from choreo_ingest.store.run_lock import RunLock, lock_problem, real_path
from choreo_ingest.store.store import (
    Store,
    check_openable,
    missing_directory,
    no_state_yet,
    state_file_exists,
)


@dataclass(frozen=True)
class SqliteLocation:
    """A state file; its run lock is `<file>.lock` beside it.

    Reached through a symlink, it is opened and locked at its real path: the lock, and the -wal
    and -shm files SQLite and `connection.py` keep, are then beside the one real file, whichever
    name each caller gives it (`--db link.db`, `state.path: state.db`)."""

    path: Path
    guessed: bool = field(default=False, compare=False)
    """The default `./choreo-ingest.db`, taken because no config file was found: where there is
    no state, that is said instead of advice to make one here (`configured_location`)."""
    given_by: str | None = field(default=None, compare=False)
    """`$CHOREO_INGEST_DB` where the location came from it (not the command line or config)."""

    def __str__(self) -> str:
        """As shown to people: as given (`status` names it by its absolute path)."""
        return str(self.path)

    @property
    def guess_said(self) -> str:
        """What follows "no state yet" at a `guessed` location (else nothing)."""
        return f", and {NO_CONFIG_FOUND} to say where the state is" if self.guessed else ""

    @property
    def real_path(self) -> Path:
        """`path` with its symlinks resolved (as given when it has none)."""
        return real_path(self.path)

    def exists(self) -> bool:
        """Whether any state is there yet (read-only commands say "no state yet" otherwise)."""
        return state_file_exists(self.path)

    def might_exist(self) -> bool:
        """`exists()`, for a caller that would open the store next (a stat is cheap)."""
        return self.exists()

    def missing_directory(self) -> Path | None:
        """The directory of a state file that is not there yet, when that is missing too."""
        return missing_directory(self.real_path)

    def no_state_yet(self) -> StateError:
        """What a command that needs a state already there says when there is none."""
        if self.guessed:
            return StateError(
                f"{self.path.absolute()}: no state file yet{self.guess_said}", path=str(self.path)
            )
        return no_state_yet(self, self.missing_directory(), given_by=self.given_by)

    def open(
        self, *, readonly: bool = False, tracer: Tracer | None = None, despite_damage: bool = False
    ) -> Store:
        """The store; read-only, refused (NotAStateFile) where a run found the file damaged
        (`damage_note`), unless `despite_damage` (`check`, which reads every page)."""
        if readonly and not despite_damage and (noted := noted_damage(self.real_path)):
            raise NotAStateFile(
                f"{noted} (met by a command that writes the state; `choreo-ingest check` "
                "forgets it once it finds the file whole)",
                path=str(self.path),
            )
        if readonly and (self.guessed or self.given_by) and not self.exists():
            raise self.no_state_yet()  # said with where the location came from
        return Store.open(self.real_path, readonly=readonly, tracer=tracer)

    def note_damage(self, error: StateError) -> None:
        """Note `error` beside the file if it is damage of this file (not another's: the
        target of `migrate --copy-to`)."""
        own = error.path is not None and real_path(Path(error.path)) == self.real_path
        if error.damaged and own:
            note_damage(self.real_path, str(error))

    def noted_damage(self) -> str | None:
        return noted_damage(self.real_path)

    def forget_damage(self) -> None:
        forget_damage(self.real_path)

    def run_lock(self) -> RunLock:
        """The lock one burst (or migration, or operator command) holds at a time."""
        return RunLock(self.real_path)

    @contextmanager
    def open_locked(self, holder: RunHolder | None = None) -> Iterator[Store]:
        """The store, opened for writing under the run lock (LockHeld if another holds it).
        (`holder` is PostgreSQL's: a file's lock needs no fence, and opening it no session.)

        What cannot be a state file (a FIFO, a device) is refused before the lock is taken;
        SQLite's lock is taken first, so a run turned away never touches the file; a server's
        store would take it on the connection that then does every write, so that the lock
        and the writes end together. A lock file made for a file that turns out not to be a
        state (or cannot be opened) is removed: nothing is left beside it."""
        real = self.real_path
        check_openable(real, readonly=False)
        with RunLock(real) as lock:
            try:
                store = Store.open_checked(real)
            except StateError:
                lock.discard()
                raise
            store.check_lock_before_writes(lock.check_held)
            with store:
                yield store

    def lock_held_elsewhere(self) -> bool:
        return RunLock(self.real_path).is_held_elsewhere()

    def write_problem(self) -> str | None:
        """Why a run could not write the state here (for `check`), or None: where the real file
        is, as SQLite writes its -wal and -shm (and we the lock) beside it; and whether the run
        lock there, if it exists, can be opened as a run opens it."""
        path = self.path
        try:
            exists = state_file_exists(path)
        except StateError as error:
            return str(error)
        directory = self.real_path.parent
        if not directory.is_dir():
            return f"{path}: {absent_directory(directory)}"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{path}: directory {directory} is not writable"
        if exists and not os.access(path, os.W_OK):
            return f"{path}: not writable"
        return lock_problem(path)


if TYPE_CHECKING:  # psycopg is an optional extra: loaded only for a PostgreSQL location
    from choreo_ingest.store.pg_connection import PgConnection
    from choreo_ingest.store.pg_fence import RunHolder
    from choreo_ingest.store.pg_sessions import KeptSessions

DEFAULT_PG_SCHEMA = "choreo_ingest"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class PostgresLocation:
    """A schema of a PostgreSQL database (`url`: a libpq URL; `password` wins over the URL's,
    else libpq's own: the URL, `PGPASSWORD`, `~/.pgpass`).

    The run lock is a session-level advisory lock, one per schema (`advisory_key(schema)`).
    `open_locked` takes it on the store's own connection, so every write of a burst goes
    through the session that holds it: should that session die, the lock and the writes it
    had not committed end together, and a second host that then takes the lock can never
    interleave with a stale writer.
    """

    url: str
    schema: str = DEFAULT_PG_SCHEMA
    password: str | None = field(default=None, repr=False)
    password_error: ConfigError | None = field(default=None, compare=False, repr=False)
    """Why `state.passwordFile` could not be read, kept for `check` to report among its checks
    (`configured_location(defer_password_error=True)`); any session opened here raises it."""
    given_by: str | None = field(default=None, compare=False)
    """`$CHOREO_INGEST_DB` where the location came from it (not the command line or config)."""
    readers: KeptSessions | None = field(default=None, compare=False, repr=False)
    """Read-only sessions kept from one read to the next (`pg_sessions`; `serve` sets them)."""
    writers: KeptSessions | None = field(default=None, compare=False, repr=False)
    """Writing sessions kept from one `open()` to the next (`serve`'s event posts), likewise."""

    def __str__(self) -> str:
        """As shown to people: the URL with its password redacted."""
        from choreo_ingest.store.pg_url import redact_url

        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"PostgresLocation({str(self)!r}, schema={self.schema!r})"

    def _connect(
        self, *, readonly: bool, schema: str | None = None, tracer: Tracer | None = None
    ) -> PgConnection:
        from choreo_ingest.store.pg_connection import PgConnection

        if self.password_error is not None:
            raise self.password_error
        return PgConnection(
            self.url,
            schema=self.schema if schema is None else schema,
            readonly=readonly,
            password=self.password,
            tracer=tracer,
        )

    def _lock_key(self) -> int:
        from choreo_ingest.store.pg_connection import advisory_key

        return advisory_key(self.schema)

    def missing_directory(self) -> Path | None:
        """None: a database has no directory to make first."""
        return None

    def no_state_yet(self) -> StateError:
        """What a command that needs a state already there says when there is none: a schema
        is no file."""
        return no_state_yet(self, None, what="state", given_by=self.given_by)

    def might_exist(self) -> bool:
        """True: telling would cost a session of its own, and opening the store tells."""
        return True

    def exists(self) -> bool:
        """Whether the schema holds any table yet, a state's or another program's (which
        opening it refuses, as for a foreign file: `check` and `health` said "writable" and "no
        state yet" of it); nothing is made."""
        return bool(
            self._catalog_read("SELECT count(*) FROM pg_tables WHERE schemaname = ?", [self.schema])
        )

    def _catalog_read(self, statement: str, params: list[object]) -> object:
        """One value read from PostgreSQL's own catalog (`pg_tables`, `pg_locks`): through a
        read-only session of `readers` when the location has them (and the schema is there to
        connect to), else on a connection to `pg_catalog` of its own."""
        if self.readers is not None:
            with suppress(StateError), closing(self._kept(self.readers, True, None)) as conn:
                return conn.scalar(statement, params)
        with self._connect(readonly=True, schema="pg_catalog") as conn:
            return conn.scalar(statement, params)

    def open(
        self, *, readonly: bool = False, tracer: Tracer | None = None, despite_damage: bool = False
    ) -> Store:
        """The store in the schema (made unless `readonly`); schema is not migrated. Refused
        like a foreign or newer SQLite file: a schema that is not a choreo-ingest state
        (NotAStateFile), or one a newer choreo-ingest migrated (SchemaTooNew). The store goes
        through `readers` (`writers`) when the location has them. (`despite_damage`: as a
        file's; PostgreSQL keeps no note of damage.)"""
        sessions = self.readers if readonly else self.writers
        if sessions is not None:
            return Store(self._kept(sessions, readonly, tracer))
        return Store(self._checked(self._connect(readonly=readonly, tracer=tracer)))

    def _kept(self, sessions: KeptSessions, readonly: bool, tracer: Tracer | None) -> PgConnection:
        """A kept session, checked as a new one is (one the server has ended since fails its
        check), else a new one; handed back to `sessions` when the store closes."""
        conn = None
        kept = sessions.take()
        if kept is not None:
            with suppress(StateError):
                conn = self._checked(kept)
        if conn is None:
            conn = self._checked(self._connect(readonly=readonly, tracer=tracer))
        conn.keeper = sessions.keep
        return conn

    @staticmethod
    def _checked(conn: PgConnection) -> PgConnection:
        from choreo_ingest.store.pg_schema import check_is_ours

        try:
            check_is_ours(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def note_damage(self, error: StateError) -> None:
        """Nothing: PostgreSQL answers every reader alike about damage it finds."""

    def noted_damage(self) -> str | None:
        """None: no note is kept (`note_damage`)."""
        return None

    def forget_damage(self) -> None:
        """Nothing to forget (`note_damage`)."""

    def run_lock(self) -> PgRunLock:
        """The run lock on a connection of its own: for where the store is already open (a
        migration by the event path); a burst takes it with `open_locked` instead."""
        return PgRunLock(self)

    @contextmanager
    def open_locked(self, holder: RunHolder | None = None) -> Iterator[Store]:
        """The store, opened for writing, holding the run lock on its own connection (LockHeld
        if another session holds it); released on exit.

        The lock arms the connection's fence (`pg_fence`): once the store is migrated, the run
        claims it, and a write transaction after another run has claimed it since (the lock
        taken twice through a pooler in transaction mode) is refused with StateError. The claim
        is the run's own, or `holder`'s, kept for its every turn (`serve`), as is the
        connection: back to `holder` once the lock is let go, if it is sound."""
        from choreo_ingest.store.pg_fence import RunFence

        conn = self._locking_connection(holder)
        sound = True  # a session turned away by the lock is as good as it was
        try:
            key = self._lock_key()
            if not conn.advisory_lock_try(key):
                raise LockHeld(
                    f"another choreo-ingest run holds the run lock of {self} "
                    f"(schema {self.schema!r}); nothing done",
                    path=str(self),
                )
            sound = False
            fence = conn.fence = RunFence(self.schema, None if holder is None else holder.token)
            try:
                yield Store(conn)
                sound = True
            finally:
                # A lost session has let the lock go already; closing ends it anyway.
                with suppress(StateError):
                    fence.release(conn)
                unlocked = False
                with suppress(StateError):
                    unlocked = conn.advisory_unlock(key)
                sound = sound and unlocked
        finally:
            # Only after a turn that went well: one that failed may have failed for its session
            # (a server demoted to a standby refuses writes); the next turn connects anew.
            if holder is not None and sound and conn.reusable():
                holder.keep(conn)
            else:
                conn.close()

    def _locking_connection(self, holder: RunHolder | None) -> PgConnection:
        """`holder`'s session from its last turn, checked as a new one is, or a new one: a kept
        session the server has ended since (a restart, an idle timeout) fails its check."""
        kept = None if holder is None else holder.take()
        if kept is not None:
            with suppress(StateError):
                return self._checked(kept)
        return self._checked(self._connect(readonly=False))

    def lock_held_elsewhere(self) -> bool:
        """Whether another session holds the run lock (for `status`), read from `pg_locks`."""
        return bool(self._lock_holders("count(*)", "AND pid <> pg_backend_pid()"))

    def run_lock_holder(self) -> str | None:
        """The session holding the run lock, as `Store.server_session` names one (the server's
        start and the session's pid), or None when none holds it."""
        holder = self._lock_holders(pg_session_identity("pid"), "LIMIT 1")
        return None if holder is None else str(holder)

    def _lock_holders(self, selected: str, rest: str) -> object:
        """`selected` of the sessions holding the run lock, from `pg_locks`."""
        key = self._lock_key()
        return self._catalog_read(
            f"""SELECT {selected} FROM pg_locks WHERE locktype = 'advisory' AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND CAST(classid AS BIGINT) = ? AND CAST(objid AS BIGINT) = ?
                AND objsubid = 1 {rest}""",
            [(key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF],
        )

    def write_problem(self) -> str | None:
        """Why a run could not write the state here (for `check`), or None."""
        try:
            with self._connect(readonly=True, schema="pg_catalog") as conn:
                has_schema = conn.scalar(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = ?", [self.schema]
                )
                if has_schema:  # USAGE first: `run` refuses a schema without it before all
                    missing = [
                        right
                        for right in ("USAGE", "CREATE")
                        if not conn.scalar(
                            "SELECT has_schema_privilege(?, ?)", [self.schema, right]
                        )
                    ]
                    where = f"schema {self.schema!r}"
                else:
                    allowed = conn.scalar(
                        "SELECT has_database_privilege(current_database(), 'CREATE')"
                    )
                    missing = [] if allowed else ["CREATE"]
                    where = f"the database (to make schema {self.schema!r})"
        except StateError as error:
            return str(error)
        if missing:
            return f"{self}: no {' or '.join(missing)} right on {where}"
        return None


class PgRunLock:
    """The PostgreSQL run lock held by a connection of its own (`PostgresLocation.run_lock`)."""

    def __init__(self, location: PostgresLocation) -> None:
        self._location = location
        self._conn: PgConnection | None = None

    def acquire(self) -> None:
        conn = self._location._connect(readonly=False)
        try:
            taken = conn.advisory_lock_try(self._location._lock_key())
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            raise LockHeld(
                f"another choreo-ingest run holds the run lock of {self._location} "
                f"(schema {self._location.schema!r}); nothing done",
                path=str(self._location),
            )
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            # Unlocked first: a closed session's locks go only when its server process has
            # ended, after close() returns, and a run started right after would find it held.
            with suppress(StateError):
                self._conn.advisory_unlock(self._location._lock_key())
            self._conn.close()
            self._conn = None

    def is_held_elsewhere(self) -> bool:
        return self._location.lock_held_elsewhere()

    def __enter__(self) -> PgRunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


StateLocation = SqliteLocation | PostgresLocation
"""Where a state is kept: an SQLite file or a PostgreSQL schema."""


def state_shown(location: StateLocation) -> str:
    """The location as a document for scripts names it (`stateFile`): a file by its absolute
    path (a relative `--db` names no file to a script run elsewhere), a URL redacted."""
    return str(location.path.absolute() if isinstance(location, SqliteLocation) else location)


def is_postgres_url(text: str) -> bool:
    return text.startswith(POSTGRES_SCHEMES)


def state_location(state: StateLocation | Path | str) -> StateLocation:
    """`state` as a location: a location as it is, a `postgresql://` (or `postgres://`) URL as
    the default schema of that database, a path (or its text) as a state file."""
    if isinstance(state, (SqliteLocation, PostgresLocation)):
        return state
    if isinstance(state, str) and is_postgres_url(state):
        return PostgresLocation(state)
    return SqliteLocation(Path(state))


StateRef = StateLocation | Path
"""What the library's entry points take: a location, or a state file's path (tests, scripts)."""


@contextmanager
def keeping_sessions(state: StateRef) -> Iterator[StateLocation]:
    """`state`'s location, with its sessions kept from one use to the next (PostgreSQL:
    `pg_sessions`, read-only and writing ones apart; a file is opened each time), ended on exit:
    for a long-lived process that reads and stores events often (`serve`)."""
    location = state_location(state)
    if not isinstance(location, PostgresLocation):
        yield location
        return
    from choreo_ingest.store.pg_sessions import KeptSessions

    readers, writers = KeptSessions(), KeptSessions()
    try:
        yield replace(location, readers=readers, writers=writers)
    finally:
        readers.close()
        writers.close()


def configured_location(
    resolved: Path | str, config: Config, *, origin: str, defer_password_error: bool = False
) -> StateLocation:
    """The location `--db`, $CHOREO_INGEST_DB or `state.*` name (`resolve_state_path`): a state
    file, or a PostgreSQL schema (its password from `state.passwordFile`, else libpq's
    PGPASSWORD or ~/.pgpass). A URL libpq cannot read (`url_options`) is a ConfigError naming
    `origin` (`state_origin`: `state.url`, `--db`, ...), here, before any work is done; psycopg
    is loaded for a URL only, which is opened next anyway. So is a `state.passwordFile` that
    cannot be read, unless `defer_password_error`: then it is kept in the location's
    `password_error`, for `check`, whose other checks still run."""
    given_by = origin if origin.startswith("$") else None  # not typed in the command line
    if isinstance(resolved, Path):
        guessed = config.source is None and origin == "state.path" and config.state_path is None
        return SqliteLocation(resolved, guessed=guessed, given_by=given_by)
    from choreo_ingest.store.pg_connection import url_options

    url_options(resolved, origin=origin)
    try:
        password = read_secret_file(config.state_password_file, "state.passwordFile")
    except ConfigError as error:
        if not defer_password_error:
            raise
        return PostgresLocation(
            resolved, schema=config.state_schema, password_error=error, given_by=given_by
        )
    return PostgresLocation(
        resolved, schema=config.state_schema, password=password, given_by=given_by
    )
