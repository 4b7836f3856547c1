"""`serve`'s reads of a PostgreSQL state keep their read-only sessions from one read to the
next (`pg_readers`): no connection a request, a session the server ended replaced unseen, none
kept past `most`, in a transaction, or once the sessions are closed; writes never kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from pg_support import PgCluster, require_psycopg

require_psycopg()

from choreo_ingest.reporting import status_report  # noqa: E402
from choreo_ingest.store import PostgresLocation, keeping_readers  # noqa: E402
from choreo_ingest.store.pg_readers import ReaderSessions  # noqa: E402

from fakes import make_config  # noqa: E402
from pg_tracing import TracingLocation  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def location(pg_url: str) -> Iterator[TracingLocation]:
    with PostgresLocation(pg_url).open() as store:
        store.migrate()
    readers = ReaderSessions(most=2)
    yield TracingLocation(pg_url, readers=readers)
    readers.close()


def read(location: PostgresLocation) -> int:
    with location.open(readonly=True) as store:
        return store.schema_version()


def test_reads_one_after_another_go_through_one_session(location: TracingLocation) -> None:
    versions = {read(location) for _ in range(5)}

    assert len(versions) == 1
    assert len(location.connections) == 1
    assert location.readers is not None
    assert len(location.readers) == 1


def test_reads_at_once_each_have_a_session_and_no_more_than_most_are_kept(
    location: TracingLocation,
) -> None:
    with ExitStack() as stack:
        stores = [stack.enter_context(location.open(readonly=True)) for _ in range(3)]
        assert len({id(store) for store in stores}) == 3
    assert len(location.connections) == 3
    assert location.readers is not None
    assert len(location.readers) == 2
    closed = [conn for conn in location.connections if conn.raw is not None and conn.raw.closed]
    assert len(closed) == 1


def test_a_session_the_server_ended_is_replaced_unseen(
    location: TracingLocation, pg_url: str, pg_cluster: PgCluster
) -> None:
    read(location)
    [kept] = location.connections
    with pg_cluster.admin(pg_url.rsplit("/", 1)[1]) as admin:  # a restart, an idle timeout
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [kept.backend_pid])

    read(location)

    assert len(location.connections) == 2
    assert kept.raw is not None
    assert kept.raw.closed


def test_a_session_left_in_a_transaction_is_not_kept(location: TracingLocation) -> None:
    with location.open(readonly=True) as store:
        store._conn.execute("BEGIN")
    [conn] = location.connections
    assert location.readers is not None
    assert len(location.readers) == 0
    assert conn.raw is not None
    assert conn.raw.closed


def test_writes_are_never_kept(location: TracingLocation) -> None:
    with location.open() as store:
        store.bump_counters("fake", {"pages": 1})
    [conn] = location.connections
    assert conn.raw is not None
    assert conn.raw.closed
    assert location.readers is not None
    assert len(location.readers) == 0


def test_closing_the_sessions_ends_the_kept_ones_and_any_handed_back_after(
    location: TracingLocation,
) -> None:
    read(location)
    assert location.readers is not None
    held = location.open(readonly=True)  # the kept one, in use
    read(location)  # a second one, kept

    location.readers.close()
    held.close()

    assert all(conn.raw is not None and conn.raw.closed for conn in location.connections)
    assert len(location.readers) == 0


def test_serve_keeps_one_session_for_reads_from_many_threads(pg_url: str, tmp_path: Path) -> None:
    """`keeping_readers`, as `serve` opens its state: the status document, read by request
    threads one after another and at once, connects only for reads made at once."""
    with PostgresLocation(pg_url).open() as store:
        store.migrate()
    config = make_config(tmp_path)
    traced = TracingLocation(pg_url)
    with keeping_readers(traced) as location:
        assert isinstance(location, TracingLocation)
        for _ in range(3):
            status_report(location, config, 0.0)
        assert len(traced.connections) == 1  # the lock check, then the status read, in turn
        threads = [
            threading.Thread(target=status_report, args=(location, config, 0.0)) for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert 1 <= len(traced.connections) <= 3  # one a thread at most
        kept = list(traced.connections)
    assert all(conn.raw is not None and conn.raw.closed for conn in kept)


def test_a_location_without_sessions_connects_for_each_read(pg_url: str) -> None:
    with PostgresLocation(pg_url).open() as store:
        store.migrate()
    traced = TracingLocation(pg_url)
    for _ in range(3):
        read(traced)
    assert len(traced.connections) == 3
    assert replace(traced, readers=None) == traced  # sessions take no part in equality


def test_a_store_closed_twice_hands_its_session_back_once(location: TracingLocation) -> None:
    first = location.open(readonly=True)
    first.close()
    second = location.open(readonly=True)  # the same session, in use again
    first.close()

    assert location.readers is not None
    assert len(location.readers) == 0  # not handed to another reader while in use
    assert second.schema_version() > 0
    second.close()
    [conn] = location.connections
    assert len(location.readers) == 1
    assert conn.reusable()
