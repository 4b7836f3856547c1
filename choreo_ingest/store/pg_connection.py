"""The state store's connection to PostgreSQL: `connection.Connection`'s counterpart.

Same methods, same meaning, so the store's modules can run their SQL on either: `execute`
(a cursor with `fetchone`, `fetchall`, iteration and `rowcount`), `executemany`, `scalar`,
`transaction()` and `snapshot()`. The SQL keeps SQLite's `?` placeholders (`:name` with a dict);
they become psycopg's `%s` (`%(name)s`) outside string literals, quoted identifiers and comments,
and every `%` becomes `%%`. Not translated: PostgreSQL's JSONB operators `?`, `?|` and `?&`
(write `jsonb_exists()` and friends instead).

Autocommit, as the SQLite connection: a statement outside `transaction()` or `snapshot()` is a
transaction of its own, and between them the session holds no snapshot and no row lock. A
session left "idle in transaction" would keep VACUUM from cleaning up, and a server with
`idle_in_transaction_session_timeout` would end it, and the run's advisory lock with it.
`transaction()` is READ COMMITTED (PostgreSQL's default): one writer at a time is what the run
lock is for. `snapshot()` is REPEATABLE READ, READ ONLY.

Errors: whatever psycopg raises (the server unreachable, a password refused, the connection
lost, a statement refused) leaves here once, as a StateError whose message names the URL with
its password redacted (`redact_url`) and ends with the SQLSTATE; the psycopg error is its cause.
A URL libpq cannot read, or with a value it would refuse, is a ConfigError (`url_options`).

Not thread-safe, like the SQLite one: one thread at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any

from choreo_ingest.errors import ConfigError, LockWaitTimedOut, StateError
from choreo_ingest.logs import masked
from choreo_ingest.store.connection import Tracer
from choreo_ingest.store.dialect import LOCK_NOT_AVAILABLE
from choreo_ingest.store.pg_fence import RunFence
from choreo_ingest.store.pg_placeholders import translate_placeholders
from choreo_ingest.store.pg_url import (
    each_attempt,
    option_value_problem,
    password_hint,
    problem_hint,
    redact_url,
    unreadable_url_problem,
    url_password_candidates,
)
from choreo_ingest.store.schema import MIGRATION_NAMES

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.pq import TransactionStatus
except ImportError as missing:  # pragma: no cover - the extra is installed wherever tests run
    raise ConfigError(
        "a PostgreSQL state store needs psycopg: pip install '.[postgres]' in choreo-ingest's "
        "source tree"
    ) from missing

DEFAULT_SCHEMA = "choreo_ingest"
APPLICATION_NAME = "choreo-ingest"
CONNECT_TIMEOUT = 10
"""Seconds to reach the server, unless the URL says (`?connect_timeout=`): the URL's own
settings win over every default here."""
LOCK_TIMEOUT_SECONDS = 10
"""The longest wait for a lock held elsewhere, as SQLite's busy timeout, unless one is chosen."""
CHOSEN_SOURCES = "'database', 'user', 'database user', 'client', 'session'"  # a 0 kept there

IDLE_SESSION_TIMEOUT_SINCE = 140000
"""The server version (`server_version_num`) that has `idle_session_timeout`."""
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
"""TCP keepalives unless the URL sets its own: a server gone without a word (a network cut,
a failover) ends a waiting statement with StateError in about a minute instead of never."""
STREAM_ROWS = 1000
"""Rows fetched at a time by `stream`'s server-side cursor."""

_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR, TransactionStatus.ACTIVE)
_BIGINT = range(-(2**63), 2**63)


def url_options(url: str, *, origin: str = "state.url") -> dict[str, Any]:
    """libpq's reading of the URL `url` (its options, percent-decoded). A URL libpq cannot read
    (an unknown query parameter, a bad percent-encoding), or with a value libpq refuses only when
    connecting (`sslmode`), is a ConfigError naming where it came from (`origin`: `state.url`,
    `--db`, `$CHOREO_INGEST_DB`, `--copy-to`), never the password: a malformed value, not a
    state store that cannot be used. `configured_location` calls it before any work is done."""
    try:
        options = conninfo_to_dict(url)
    except psycopg.Error as error:
        libpq_says = masked(str(error).replace(url, redact_url(url)), url_password_candidates(url))
        keywords = [option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()]
        raise ConfigError(unreadable_url_problem(url, libpq_says, keywords), path=origin) from error
    problem = option_value_problem(options)
    if problem is not None:
        raise ConfigError(problem, path=origin)
    return options


def advisory_key(name: str) -> int:
    """A stable 64-bit advisory lock key for `name` (a schema, say): one lock per name."""
    digest = hashlib.sha256(f"choreo-ingest:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgConnection:
    """A psycopg connection to the state schema, in autocommit, with explicit transactions.

    `url`: a libpq URL (`postgresql://user@host:5432/db?sslmode=require`); `password`, when
    given, wins over one in the URL (else libpq's own: the URL, `PGPASSWORD`, `~/.pgpass`).
    `schema`: where the state's tables live (the session's `search_path`); made when missing
    unless `readonly`. `readonly`: every transaction of the session is read only, as the
    server sees it (`default_transaction_read_only`).
    """

    dialect = "postgres"
    """Which SQL the store's modules write for it (`Connection`'s is "sqlite")."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        readonly: bool = False,
        password: str | None = None,
        application_name: str = APPLICATION_NAME,
        tracer: Tracer | None = None,
    ) -> None:
        self.url = url
        self.display_url = redact_url(url)
        self.schema = schema
        self.readonly = readonly
        self._tracer = tracer
        self._secrets = [password] if password else []
        # Before parsing: libpq's parse error quotes the token it could not read, a password too.
        self._secrets += url_password_candidates(url)
        self._streams = 0
        self.fence: RunFence | None = None
        """Set on the connection that holds the run lock (`PostgresLocation.open_locked`)."""
        self.keeper: Callable[[PgConnection], bool] | None = None
        """Set on a kept session (`pg_sessions`): `close()` hands it back."""
        self.failed = False
        """A statement failed on this session: it is not used again (`reusable`)."""
        self.raw: psycopg.Connection[tuple[Any, ...]] | None = None
        options = url_options(url)
        if options.get("password"):
            self._secrets.append(str(options["password"]))
        defaults: dict[str, Any] = {
            "application_name": application_name,
            "connect_timeout": CONNECT_TIMEOUT,
            **KEEPALIVES,
        }
        extra = {key: value for key, value in defaults.items() if key not in options}
        extra |= {} if password is None else {"password": password}
        try:
            self.raw = psycopg.connect(url, autocommit=True, **extra)
        except psycopg.Error as error:
            doing = "cannot connect" + password_hint(str(error), from_file=password is not None)
            raise self._state_error(error, doing=doing) from error
        try:
            self._enter_schema()
        except BaseException:
            self.raw.close()
            raise

    def _enter_schema(self) -> None:
        raw = self._raw
        with self._translated():
            # The server's side of the keepalives: a client gone without a word (its node
            # lost) would otherwise keep its session, and the run lock with it, for 2 hours.
            raw.execute(
                f"SET tcp_keepalives_idle = {KEEPALIVES['keepalives_idle']}; "
                f"SET tcp_keepalives_interval = {KEEPALIVES['keepalives_interval']}; "
                f"SET tcp_keepalives_count = {KEEPALIVES['keepalives_count']}"
            )
            raw.execute(
                "SELECT set_config(name, %s, false) FROM pg_settings WHERE name = 'lock_timeout' "
                f"AND setting = '0' AND source NOT IN ({CHOSEN_SOURCES})",
                [f"{LOCK_TIMEOUT_SECONDS}s"],
            )
            # The run lock's session waits for the API between writes: an idle_session_timeout
            # (PostgreSQL 14) shorter than a request ended it in every burst.
            if raw.info.server_version >= IDLE_SESSION_TIMEOUT_SINCE:
                raw.execute("SET idle_session_timeout = 0")
            if self.readonly:
                raw.execute("SET default_transaction_read_only = on")
            privilege = "SELECT has_schema_privilege(oid, 'USAGE'), current_user FROM pg_namespace"
            found = raw.execute(f"{privilege} WHERE nspname = %s", [self.schema]).fetchone()
            if found is not None and not found[0]:
                # Else its tables are not seen: "pending migrations", "no schema selected".
                role = sql.Identifier(found[1]).as_string(raw)
                schema = sql.Identifier(self.schema).as_string(raw)
                raise StateError(
                    f"state store {self.display_url}: role {found[1]!r} has no USAGE right on "
                    f"schema {self.schema!r} (GRANT USAGE ON SCHEMA {schema} TO {role}, and "
                    "the rights on its tables)",
                    path=self.display_url,
                )
            if found is None:
                if self.readonly:
                    raise StateError(
                        f"state store {self.display_url}: no schema {self.schema!r} "
                        "(`choreo-ingest migrate` makes it)",
                        path=self.display_url,
                    )
                # IF NOT EXISTS still fails when another session makes it at the same moment.
                with suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
                    raw.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
            raw.execute(
                "SELECT set_config('search_path', %s, false)",
                [sql.Identifier(self.schema).as_string(raw)],
            )

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the session, unless its `keeper` (`KeptSessions.keep`) keeps it."""
        keeper, self.keeper = self.keeper, None
        if keeper is not None and keeper(self):
            return
        if self.raw is not None:
            self.raw.close()

    @property
    def _raw(self) -> psycopg.Connection[tuple[Any, ...]]:
        assert self.raw is not None  # set, or __init__ raised
        return self.raw

    @property
    def backend_pid(self) -> int:
        """The server process of this session (`pg_stat_activity.pid`)."""
        return int(self._raw.info.backend_pid)

    @property
    def in_transaction(self) -> bool:
        return self._raw.info.transaction_status in _IN_TRANSACTION

    # -- statements ---------------------------------------------------------------------

    def execute(self, sql_text: str, params: Sequence[Any] | dict[str, Any] = ()) -> PgCursor:
        if self._tracer is not None:
            self._tracer(sql_text, params)
        named = isinstance(params, dict)
        query = translate_placeholders(sql_text, named=named)
        with self._translated():
            cursor = self._raw.cursor()
            cursor.execute(query, params if isinstance(params, dict) else list(params))
        return PgCursor(cursor, self)

    def executemany(self, sql_text: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self._tracer is not None:
            self._tracer(sql_text, rows)
        query = translate_placeholders(sql_text)
        with self._translated(), self._raw.cursor() as cursor:
            cursor.executemany(query, [list(row) for row in rows])

    def scalar(self, sql_text: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql_text, params).fetchone()
        return None if row is None else row[0]

    def stream(self, sql_text: str, params: Sequence[Any] = ()) -> Generator[Any]:
        """The rows of a query read as they are iterated, `STREAM_ROWS` at a time through a
        server-side cursor, never all in memory (for exports). Outside a transaction the rows
        come from a snapshot of their own, held until the last row is read (or the iterator is
        closed): a named cursor lives in one transaction."""
        if self.in_transaction:
            yield from self._stream(sql_text, params)
            return
        with self.snapshot():
            yield from self._stream(sql_text, params)

    def _stream(self, sql_text: str, params: Sequence[Any]) -> Iterator[Any]:
        if self._tracer is not None:
            self._tracer(sql_text, params)
        query = translate_placeholders(sql_text)
        self._streams += 1
        name = f"choreo_ingest_stream_{self._streams}"
        with self._translated(), self._raw.cursor(name=name) as cursor:
            cursor.itersize = STREAM_ROWS
            cursor.execute(query, list(params))
            while True:
                with self._translated():
                    rows = cursor.fetchmany(STREAM_ROWS)
                if not rows:
                    return
                yield from rows

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: all of it commits, or none of it (also on KeyboardInterrupt).

        Should the connection be lost inside, the server rolls the transaction back and the
        next statement (or the COMMIT) raises StateError. On the run lock's connection, once
        the run has claimed the store, its first statement is the fence's check (`pg_fence`).
        """
        self._begin("BEGIN")
        try:
            if self.fence is not None:
                self.fence.check(self)
            yield
            if self._raw.info.transaction_status == TransactionStatus.INERROR:
                # PostgreSQL answers COMMIT of a failed transaction with a quiet ROLLBACK.
                raise StateError(
                    f"state store {self.display_url}: a statement failed inside the "
                    "transaction, so nothing of it was written",
                    path=self.display_url,
                )
            self._run("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same state of the database (taken
        at its first query), whatever other sessions commit meanwhile; writes are refused."""
        self._begin("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            yield
        finally:
            self._rollback()  # nothing was written: ending the read is all there is to do

    def _begin(self, statement: str) -> None:
        if self.raw is not None and self.in_transaction:
            # SQLite refuses a nested BEGIN; PostgreSQL only warns, and would commit early.
            raise RuntimeError("a transaction is already open on this connection")
        self._run(statement)

    def _run(self, statement: str) -> None:
        if self._tracer is not None:
            self._tracer(statement, ())
        with self._translated():
            self._raw.execute(statement)

    def _rollback(self) -> None:
        """End a failed transaction; an error here must not hide the one that caused it."""
        if self.raw is not None and not self.raw.closed and self.in_transaction:
            with suppress(psycopg.Error):
                self.raw.execute("ROLLBACK")

    # -- schema (pg_schema's migrations; loaded here only, as it imports this module) -----

    def schema_version(self) -> int:
        """How many of the known migrations are applied (SQLite's `user_version`)."""
        return len(set(self.applied_migrations()) & set(MIGRATION_NAMES))

    def applied_migrations(self) -> list[str]:
        from choreo_ingest.store.pg_schema import pg_applied_migrations

        return pg_applied_migrations(self)

    def pending_migrations(self) -> list[str]:
        applied = set(self.applied_migrations())
        return [name for name in MIGRATION_NAMES if name not in applied]

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns what was applied. On the run lock's connection the
        run then claims the store (`pg_fence`): every writer under the lock migrates first."""
        from choreo_ingest.store.pg_schema import pg_migrate

        applied = pg_migrate(self)
        if self.fence is not None:
            self.fence.claim(self)
        return applied

    def require_current_schema(self) -> None:
        pending = self.pending_migrations()
        if pending:
            raise StateError(
                f"state store {self.display_url} (schema {self.schema!r}): state schema is not "
                f"up to date ({len(pending)} pending migration(s)); run `choreo-ingest migrate`",
                path=self.display_url,
            )

    # -- the run lock -------------------------------------------------------------------

    def advisory_lock_try(self, key: int) -> bool:
        """Take the session-level advisory lock `key` if no other session holds it.

        Held until `advisory_unlock` or the end of the session: a connection that dies (or is
        closed) lets it go with everything it had not committed. Re-entrant within a session
        (each success needs its own unlock), so take it once per connection.
        """
        return bool(self._lock_call("SELECT pg_try_advisory_lock(CAST(%s AS bigint))", key))

    def reusable(self) -> bool:
        """Open, no transaction left open, no statement failed: a kept session may serve again
        (`RunHolder`, `KeptSessions`); one the server closed unseen fails its next check."""
        raw = self.raw
        if raw is None or raw.closed or self.failed:
            return False
        return raw.info.transaction_status == TransactionStatus.IDLE

    def advisory_unlock(self, key: int) -> bool:
        """Release `key` once; False when this session did not hold it."""
        return bool(self._lock_call("SELECT pg_advisory_unlock(CAST(%s AS bigint))", key))

    def _lock_call(self, statement: str, key: int) -> Any:
        if key not in _BIGINT:
            raise ValueError(f"advisory lock key {key} is not a 64-bit signed integer")
        with self._translated():
            row = self._raw.execute(statement, [key]).fetchone()
        return None if row is None else row[0]

    # -- errors -------------------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as error:
            self.failed = True
            raise self._state_error(error) from error

    def _state_error(self, error: psycopg.Error, *, doing: str = "") -> StateError:
        """One line naming the (redacted) URL and the problem, SQLSTATE last."""
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        problem = each_attempt(lines) or (lines[0] if lines else type(error).__name__)
        if self.raw is not None and (self.raw.broken or self.raw.closed) and not doing:
            problem = f"connection lost ({problem})"
        if error.sqlstate:
            hint = problem_hint(problem, error.sqlstate)
            problem = f"{problem} [SQLSTATE {error.sqlstate}]{hint}"
        if doing:
            problem = f"{doing}: {problem}"
        if self.url:
            problem = problem.replace(self.url, self.display_url)
        problem = masked(problem, self._secrets)
        kind = LockWaitTimedOut if error.sqlstate == LOCK_NOT_AVAILABLE else StateError
        return kind(f"state store {self.display_url}: {problem}", path=self.display_url)


class PgCursor:
    """The rows of one statement; like sqlite3's cursor, a statement without rows has none
    (psycopg would raise), and errors while reading leave as StateError."""

    def __init__(self, cursor: psycopg.Cursor[tuple[Any, ...]], conn: PgConnection) -> None:
        self.raw = cursor
        self._conn = conn

    @property
    def rowcount(self) -> int:
        return int(self.raw.rowcount)

    @property
    def description(self) -> Any:
        return self.raw.description

    def fetchone(self) -> Any:
        if self.raw.description is None:
            return None
        with self._conn._translated():
            return self.raw.fetchone()

    def fetchall(self) -> list[Any]:
        if self.raw.description is None:
            return []
        with self._conn._translated():
            return self.raw.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        self.raw.close()
