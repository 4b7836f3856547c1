"""PgConnection against a real PostgreSQL server (tests/pg_support.py starts one per session):
SQLite's placeholders, transactions, snapshots, the error translation (passwords never shown),
a connection killed under it, and the advisory lock the run lock will be made of."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from pg_support import PgCluster, require_psycopg
from sim_support import wait_until

require_psycopg()

import psycopg  # noqa: E402

from choreo_ingest.errors import ConfigError, StateError  # noqa: E402
from choreo_ingest.store.pg_connection import PgConnection, advisory_key  # noqa: E402
from choreo_ingest.store.pg_url import redact_url, url_password_candidates  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def conn(pg_url: str) -> Iterator[PgConnection]:
    with PgConnection(pg_url) as connection:
        connection.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, note TEXT)")
        yield connection


def terminate(cluster: PgCluster, conn: PgConnection) -> None:
    """End `conn`'s server process, as a DBA (or a failover) would, and wait until it is gone."""
    with cluster.admin() as admin:
        assert admin.execute(
            "SELECT pg_terminate_backend(%s, 5000)", [conn.backend_pid]
        ).fetchone() == (True,)


def count(url: str) -> int:
    """Rows of the test table, read by another session: what the database really holds."""
    with PgConnection(url, readonly=True) as other:
        return int(other.scalar("SELECT count(*) FROM t"))


# -- placeholders (their translation: test_pg_placeholders.py) ---------------------------


def test_statements_run_with_sqlite_placeholders(conn: PgConnection) -> None:
    conn.executemany("INSERT INTO t (id, note) VALUES (?, ?)", [(1, "a?"), (2, "50%"), (3, None)])
    conn.executemany("INSERT INTO t (id, note) VALUES (?, ?)", [])  # nothing, no error
    assert conn.scalar("SELECT note FROM t WHERE id = ? AND note LIKE '%\\%'", [2]) == "50%"
    assert conn.execute("SELECT ?, '?', ? || '%'", [1, "x"]).fetchone() == (1, "?", "x%")
    assert conn.execute("SELECT note FROM t WHERE id = :id", {"id": 1}).fetchall() == [("a?",)]
    assert list(conn.execute("SELECT id FROM t ORDER BY id")) == [(1,), (2,), (3,)]
    assert conn.execute("UPDATE t SET note = 'b' WHERE id > ?", [1]).rowcount == 2
    assert conn.scalar("SELECT note FROM t WHERE id = ?", [99]) is None
    # Like sqlite3: a statement without rows has none (psycopg itself would raise).
    done = conn.execute("DELETE FROM t WHERE id = ?", [3])
    assert (done.rowcount, done.fetchone(), done.fetchall(), list(done)) == (1, None, [], [])


def test_the_tracer_sees_the_statements_as_written(pg_url: str) -> None:
    seen: list[tuple[str, Any]] = []
    with PgConnection(pg_url, tracer=lambda sql, params: seen.append((sql, params))) as conn:
        conn.execute("SELECT ?", [1])
        with conn.transaction():
            pass
    assert seen == [("SELECT ?", [1]), ("BEGIN", ()), ("COMMIT", ())]


# -- the schema ------------------------------------------------------------------------------


def test_the_schema_is_made_and_searched(pg_url: str) -> None:
    with PgConnection(pg_url, schema="Mixed Case") as conn:
        conn.execute("CREATE TABLE made_here (x INT)")
        assert conn.scalar("SELECT current_schema()") == "Mixed Case"
    with psycopg.connect(pg_url) as raw:
        found = raw.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'made_here'"
        ).fetchall()
    assert found == [("Mixed Case",)]


def test_readonly_makes_no_schema_and_writes_nothing(pg_url: str) -> None:
    with pytest.raises(StateError, match=r"no schema 'choreo_ingest' \(`choreo-ingest migrate`"):
        PgConnection(pg_url, readonly=True)
    with psycopg.connect(pg_url) as raw:
        assert (
            raw.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'choreo_ingest'").fetchone()
            is None
        )
    PgConnection(pg_url).close()
    with PgConnection(pg_url, readonly=True) as reader:
        with pytest.raises(StateError, match=r"read-only transaction.*\[SQLSTATE 25006\]"):
            reader.execute("CREATE TABLE nope (x INT)")
        with pytest.raises(StateError, match="SQLSTATE 25006"), reader.transaction():
            reader.execute("CREATE TABLE nope (x INT)")
        assert not reader.in_transaction


# -- transactions and snapshots --------------------------------------------------------------


def test_a_transaction_commits_all_of_it(conn: PgConnection, pg_url: str) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO t (id) VALUES (1)")
        conn.execute("INSERT INTO t (id) VALUES (2)")
        assert conn.in_transaction
        assert count(pg_url) == 0  # not yet seen by anyone else
    assert not conn.in_transaction
    assert count(pg_url) == 2


@pytest.mark.parametrize("error", [ValueError("bug"), KeyboardInterrupt()])
def test_a_transaction_rolls_back_on_any_exception(
    conn: PgConnection, pg_url: str, error: BaseException
) -> None:
    def write_then_fail() -> None:
        with conn.transaction():
            conn.execute("INSERT INTO t (id) VALUES (1)")
            raise error

    with pytest.raises(type(error)):
        write_then_fail()
    assert not conn.in_transaction
    assert count(pg_url) == 0
    conn.execute("INSERT INTO t (id) VALUES (1)")  # the connection is fine afterwards
    assert count(pg_url) == 1


def test_a_failed_statement_caught_inside_still_writes_nothing(
    conn: PgConnection, pg_url: str
) -> None:
    """PostgreSQL ends a transaction at its first error (COMMIT then rolls back, quietly):
    one that goes on as if nothing happened must not look committed."""

    def write_twice() -> None:
        with conn.transaction():
            conn.execute("INSERT INTO t (id) VALUES (1)")
            with pytest.raises(StateError, match=r"duplicate key.*SQLSTATE 23505"):
                conn.execute("INSERT INTO t (id) VALUES (1)")

    with pytest.raises(StateError, match="a statement failed inside the transaction"):
        write_twice()
    assert count(pg_url) == 0


def test_a_transaction_inside_a_transaction_is_a_bug(conn: PgConnection) -> None:
    with conn.transaction():
        with pytest.raises(RuntimeError, match="already open"), conn.transaction():
            pass
        with pytest.raises(RuntimeError, match="already open"), conn.snapshot():
            pass


def test_a_snapshot_sees_one_state_whatever_others_commit(conn: PgConnection, pg_url: str) -> None:
    conn.execute("INSERT INTO t (id) VALUES (1)")
    with PgConnection(pg_url) as writer, PgConnection(pg_url, readonly=True) as reader:
        with reader.snapshot():
            assert reader.scalar("SELECT count(*) FROM t") == 1
            with writer.transaction():
                writer.execute("INSERT INTO t (id) VALUES (2)")
            writer.execute("DELETE FROM t WHERE id = 1")
            assert reader.scalar("SELECT count(*) FROM t") == 1
            assert reader.scalar("SELECT min(id) FROM t") == 1
            assert conn.scalar("SELECT count(*) FROM t WHERE id = 2") == 1  # outside: news
        assert not reader.in_transaction
        assert reader.execute("SELECT id FROM t").fetchall() == [(2,)]


def test_a_snapshot_writes_nothing(conn: PgConnection, pg_url: str) -> None:
    with pytest.raises(StateError, match="SQLSTATE 25006"), conn.snapshot():
        conn.execute("INSERT INTO t (id) VALUES (1)")
    assert not conn.in_transaction
    assert count(pg_url) == 0


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cr%40t@db:5432/x?sslmode=require", "postgresql://u:***@db:5432/x?sslmode=require"),
        ("postgresql://u:s3/cr@db/x", "postgresql://u:***@db/x"),
        ("postgresql://weird:p@ss:w/rd%41#?x@db:5439/ci", "postgresql://weird:***@db:5439/ci"),
        ("postgresql://u@db/x?sslmode=verify-full&password=s3", "postgresql://u@db/x?sslmode=verify-full&password=***"),
        ("postgresql://u@db/x?pass%77ord=s3&sslmode=require", "postgresql://u@db/x?pass%77ord=***&sslmode=require"),
        ("postgres://:s3@[::1]/x", "postgres://:***@[::1]/x"),
        ("postgresql://u@h1:5432,h2:5433/x", "postgresql://u@h1:5432,h2:5433/x"),
        ("host=db user=u password='s 3' dbname=x", "host=db user=u password=*** dbname=x"),
    ],
)  # fmt: skip
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_error_names_the_url_without_its_password(pg_cluster: PgCluster) -> None:
    secret = "Sup3rSecretValue"
    url = f"postgresql://postgres:{secret}@{pg_cluster.host}:{pg_cluster.port}/no_such_db"
    with pytest.raises(StateError) as caught:
        PgConnection(url)
    message = str(caught.value)
    assert secret not in message
    assert message.startswith(f"state store {redact_url(url)}: cannot connect: ")
    assert 'database "no_such_db" does not exist' in message
    assert caught.value.path == redact_url(url)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


def test_a_refused_password_is_never_shown(pg_cluster: PgCluster, pg_url: str) -> None:
    right = pg_cluster.password
    url = pg_cluster.password_url(pg_url)
    at_url = pg_cluster.password_url(pg_url, password=right + "x")
    for attempt in (lambda: PgConnection(url, password=right + "x"), lambda: PgConnection(at_url)):
        with pytest.raises(StateError, match="password authentication failed") as caught:
            attempt()
        assert right not in str(caught.value)
    # the password of state.passwordFile wins over one in the URL: the error says whose it was
    with pytest.raises(StateError) as caught:
        PgConnection(pg_cluster.password_url(pg_url, password=right), password=right + "x")
    assert "cannot connect (password: state.passwordFile's): " in str(caught.value)
    assert "password authentication failed" in str(caught.value)
    with PgConnection(url, password=right) as conn:  # the right one, as an argument
        assert conn.scalar("SELECT current_user") == pg_cluster.password_user
    with PgConnection(pg_cluster.password_url(pg_url, password=right)) as conn:  # in the URL
        assert conn.scalar("SELECT current_user") == pg_cluster.password_user


def test_a_connection_without_any_password_says_where_one_is_read_from(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`migrate --copy-to postgresql://user@host/db` with no password anywhere: libpq's own
    words (`fe_sendauth: no password supplied`) named neither a setting nor a variable."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))

    with pytest.raises(StateError) as caught:
        PgConnection(pg_cluster.password_url(pg_url))

    assert "no password supplied" in str(caught.value)
    assert "(no password: set state.passwordFile, PGPASSWORD or a password file, ~/.pgpass)" in (
        str(caught.value)
    )


def test_a_server_that_is_not_there(pg_cluster: PgCluster) -> None:
    url = f"postgresql://postgres:hidden@127.0.0.1:{_closed_port()}/postgres"
    with pytest.raises(StateError, match=r"cannot connect: .*refused") as caught:
        PgConnection(url)
    assert "hidden" not in str(caught.value)


def test_a_url_libpq_cannot_read_is_a_config_error_not_a_state_error() -> None:
    """A malformed value, not a store that cannot be used (tests/store/test_pg_url.py)."""
    with pytest.raises(ConfigError, match=r"^state\.url: unknown query parameter") as caught:
        PgConnection("postgresql://u:hidden@db/x?no_such_option=1")
    assert "hidden" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:Zq9%ZZsecret@127.0.0.1:1/db",
        "postgresql://u:Zq9 secret@127.0.0.1:1/db",
        "postgresql://u:Zq9%00secret@127.0.0.1:1/db",
        "postgresql://u:Zq9a@b%ZZsecret@127.0.0.1:1/db",
        "postgresql://u:Zq9a@b:%ZZsecret@127.0.0.1:1/db",
        "postgresql://u@127.0.0.1:1/db?password=Zq9%ZZsecret",
        "postgresql://u@127.0.0.1:1/db?sslmode=disable&password=Zq9%00secret",
    ],
    ids=[
        "bad-percent",
        "space",
        "nul",
        "at-in-password",
        "at-and-colon-in-password",
        "query-percent",
        "query-nul",
    ],
)
def test_a_url_libpq_cannot_parse_never_shows_its_password(url: str) -> None:
    """libpq's parse error quotes the token it could not read: the password, as written."""
    with pytest.raises(ConfigError, match=r"^state\.url: ") as caught:
        PgConnection(url)
    assert "secret" not in str(caught.value)
    assert "Zq9" not in str(caught.value)


def test_url_password_candidates() -> None:
    assert url_password_candidates("postgresql://u:a%20b@h/db?password=c%ZZd&x=1") == [
        "a%20b",
        "c%ZZd",
        "a b",
    ]
    assert url_password_candidates("postgresql://u:p1@p2@h:5432/db") == [
        "p1",
        "p1@p2",
        "p2@h",
        "p2@h:5432",
    ]
    assert url_password_candidates("postgresql://u@h/db") == []
    assert url_password_candidates("host=h password=x") == []


def test_statement_errors_are_state_errors_naming_the_url(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    password = pg_cluster.password
    url = pg_cluster.password_url(pg_url, password=password)
    with PgConnection(url) as conn:
        with pytest.raises(StateError) as caught:
            conn.execute("SELEC 1")
        assert str(caught.value).startswith(f"state store {redact_url(url)}: syntax error")
        assert str(caught.value).endswith("[SQLSTATE 42601]")
        assert password not in str(caught.value)
        assert isinstance(caught.value.__cause__, psycopg.errors.SyntaxError)
        with pytest.raises(StateError, match="no_table"):
            conn.executemany("INSERT INTO no_table VALUES (?)", [(1,)])
        assert conn.scalar("SELECT 1") == 1  # autocommit: the session goes on


# -- a connection lost -----------------------------------------------------------------------


def test_a_killed_connection_rolls_back_and_says_so(
    conn: PgConnection, pg_cluster: PgCluster, pg_url: str
) -> None:
    conn.execute("INSERT INTO t (id) VALUES (1)")

    def page_killed_midway() -> None:
        with conn.transaction():
            conn.execute("INSERT INTO t (id) VALUES (2)")
            terminate(pg_cluster, conn)
            conn.execute("INSERT INTO t (id) VALUES (3)")

    with pytest.raises(StateError, match="connection lost") as caught:
        page_killed_midway()
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert count(pg_url) == 1  # the page in flight is gone, the one before it is not
    with pytest.raises(StateError, match="connection lost"):
        conn.scalar("SELECT 1")
    with pytest.raises(StateError, match="connection lost"), conn.transaction():
        pass


def test_a_connection_killed_between_statements(conn: PgConnection, pg_cluster: PgCluster) -> None:
    terminate(pg_cluster, conn)
    with pytest.raises(StateError, match=r"connection lost \(.*administrator command"):
        conn.execute("SELECT 1")


def test_a_connection_killed_before_commit(
    conn: PgConnection, pg_cluster: PgCluster, pg_url: str
) -> None:
    def killed_before_commit() -> None:
        with conn.transaction():
            conn.execute("INSERT INTO t (id) VALUES (1)")
            terminate(pg_cluster, conn)

    with pytest.raises(StateError, match="connection lost"):
        killed_before_commit()
    assert count(pg_url) == 0


# -- the advisory lock -----------------------------------------------------------------------


def test_the_server_sends_keepalives_too(conn: PgConnection) -> None:
    """A client gone without a word (its node lost) kept its session, and the run lock with it,
    for the server's default of 2 hours and more: every other replica skipped its bursts."""
    settings = {
        name: conn.scalar(f"SHOW {name}")
        for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
    }

    assert settings == {
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
    }


def test_the_advisory_lock_excludes_other_sessions(pg_url: str) -> None:
    key = advisory_key("choreo_ingest")
    with PgConnection(pg_url) as first, PgConnection(pg_url) as second:
        assert first.advisory_lock_try(key)
        assert not second.advisory_lock_try(key)
        assert second.advisory_lock_try(key + 1)  # another key: another lock
        with first.transaction():
            pass
        assert not second.advisory_lock_try(key)  # held across transactions: session-level
        assert not second.advisory_unlock(key)  # not the holder
        assert first.advisory_unlock(key)
        assert second.advisory_lock_try(key)
        assert not first.advisory_lock_try(key)
    with PgConnection(pg_url) as third:  # closing the holder let it go, once its server
        # process has ended: that happens after the client's close returns
        wait_until(lambda: third.advisory_lock_try(key), 10, "the closed session's lock to go")


def test_the_advisory_lock_dies_with_its_connection(pg_url: str, pg_cluster: PgCluster) -> None:
    key = advisory_key("choreo_ingest")
    with PgConnection(pg_url) as holder, PgConnection(pg_url) as waiter:
        assert holder.advisory_lock_try(key)
        assert not waiter.advisory_lock_try(key)
        terminate(pg_cluster, holder)
        assert waiter.advisory_lock_try(key)
        with pytest.raises(StateError, match="connection lost"):
            holder.advisory_unlock(key)


def test_advisory_keys() -> None:
    assert advisory_key("choreo_ingest") == advisory_key("choreo_ingest")
    assert advisory_key("choreo_ingest") != advisory_key("other")
    assert -(2**63) <= advisory_key("x") < 2**63


def test_a_key_beyond_64_bits_is_refused(conn: PgConnection) -> None:
    with pytest.raises(ValueError, match="64-bit"):
        conn.advisory_lock_try(2**63)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_role_idle_session_timeout_does_not_end_the_session(pg_cluster: PgCluster) -> None:
    """The run lock's session waits for the API between its writes: a role whose sessions
    the server ends after 50 ms idle failed every burst ("terminating connection due to
    idle-session timeout")."""
    url = pg_cluster.fresh_database()
    idling = pg_cluster.role_on(url, options="; SET idle_session_timeout = '50ms'")

    with PgConnection(idling) as connection:
        time.sleep(0.3)  # idle, as while a burst waits for an answer

        assert connection.scalar("SELECT 1") == 1
    pg_cluster.drop_database(url)


# -- waiting for locks -------------------------------------------------------------------------


def with_options(url: str, options: str) -> str:
    return f"{url}?options={quote(options)}"


def test_a_statement_waits_for_a_lock_held_elsewhere_ten_seconds_at_most(
    conn: PgConnection, pg_url: str
) -> None:
    """A `LOCK TABLE` left open in a DBA's psql held every `run`, `status` and `health` for as
    long, silently, and cron added a stuck call each minute."""
    assert conn.scalar("SHOW lock_timeout") == "10s"
    with PgConnection(with_options(pg_url, "-c lock_timeout=300ms")) as waiting:
        assert waiting.scalar("SHOW lock_timeout") == "300ms"  # the URL's own setting wins
        with conn.transaction():
            conn.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(StateError) as caught:
                waiting.scalar("SELECT count(*) FROM t")
            waited = time.monotonic() - started
        assert waiting.scalar("SELECT count(*) FROM t") == 0  # it goes on once the lock is free

    assert 0.2 < waited < 5
    assert str(caught.value).endswith(
        "canceling statement due to lock timeout [SQLSTATE 55P03]: another session held a lock "
        "it needed past lock_timeout (pg_locks and pg_stat_activity name that session); the "
        "next call tries again"
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("-c lock_timeout=0", "0"),  # an operator's choice to wait forever, as before
        ("-c lock_timeout=4s", "4s"),
        ("; SET lock_timeout = '3s'", "3s"),  # the role's own
        ("; SET lock_timeout = 0", "0"),
        ("database", "0"),  # ALTER DATABASE ... SET lock_timeout = 0
    ],
    ids=["url-zero", "url", "role", "role-zero", "database-zero"],
)
def test_a_lock_timeout_set_elsewhere_is_kept(
    pg_url: str, pg_cluster: PgCluster, options: str, expected: str
) -> None:
    if options == "database":
        with pg_cluster.admin() as admin:
            name = pg_url.rsplit("/", 1)[1]
            admin.execute(f'ALTER DATABASE "{name}" SET lock_timeout = 0')
        url = pg_url
    elif options.startswith(";"):
        url = pg_cluster.role_on(pg_url, options=options)
    else:
        url = with_options(pg_url, options)

    with PgConnection(url) as connection:
        assert connection.scalar("SHOW lock_timeout") == expected


def test_statistics_are_not_waited_for_behind_a_vacuum(conn: PgConnection, pg_url: str) -> None:
    """ANALYZE before a large sweep is a hint: a VACUUM (manual, or against wraparound) holds
    the lock it needs for minutes, which failed the cycle's completion at every attempt."""
    from choreo_ingest.store.dialect import refresh_statistics

    with PgConnection(pg_url) as vacuum, vacuum.transaction():
        vacuum.execute("LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE")  # VACUUM's own lock
        started = time.monotonic()
        with conn.transaction():
            refresh_statistics(conn, "t")
            waited = time.monotonic() - started
            timeout = conn.scalar("SHOW lock_timeout")
            conn.execute("INSERT INTO t (id) VALUES (1)")

    assert 1.9 < waited < 5  # twice deadlock_timeout (1 s): an autovacuum would have yielded
    assert timeout == "10s"  # and then the session's wait again
    assert count(pg_url) == 1
    with conn.transaction():
        refresh_statistics(conn, "t")  # no VACUUM: it runs
        assert conn.scalar("SHOW lock_timeout") == "10s"


def test_statistics_skipped_behind_a_vacuum_leave_the_session_fit_to_keep(
    conn: PgConnection, pg_url: str
) -> None:
    """The lock timeout is expected there, and undone: `serve`'s tick (`RunHolder`) keeps its
    session after such a sweep, rather than connecting anew at the next tick."""
    from choreo_ingest.store.dialect import refresh_statistics

    with PgConnection(pg_url) as vacuum, vacuum.transaction():
        vacuum.execute("LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE")
        with conn.transaction():
            refresh_statistics(conn, "t")
            conn.execute("INSERT INTO t (id) VALUES (1)")

    assert conn.reusable()
    assert count(pg_url) == 1


def test_statistics_wait_no_longer_than_the_session_would(pg_url: str) -> None:
    from choreo_ingest.store.dialect import refresh_statistics

    with PgConnection(pg_url) as setup:
        setup.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")
    short = with_options(pg_url, "-c lock_timeout=300ms")
    with PgConnection(pg_url) as vacuum, vacuum.transaction(), PgConnection(short) as conn:
        vacuum.execute("LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE")
        started = time.monotonic()
        with conn.transaction():
            refresh_statistics(conn, "t")
        waited = time.monotonic() - started

    assert waited < 1.5


def test_a_migration_waits_for_another_sessions_migration_however_long(pg_url: str) -> None:
    """Its turn is no lock a stuck session holds: the other migration ends, and then it runs."""
    from choreo_ingest.store.pg_schema import _take_turn

    short = with_options(pg_url, "-c lock_timeout=200ms")
    with PgConnection(short) as first, PgConnection(short) as second:
        with first.transaction():
            _take_turn(first)
            released = threading.Timer(0.8, first._raw.commit)  # ends the first one's turn
            started = time.monotonic()
            released.start()
            try:
                with second.transaction():
                    _take_turn(second)
            finally:
                released.join()
        assert time.monotonic() - started > 0.6
        assert second.scalar("SHOW lock_timeout") == "200ms"  # for its migration's turn only
