"""`serve` keeps its sessions to a PostgreSQL state from one use to the next (`pg_sessions`):
the reads' read-only ones and the event posts' writing ones apart; no connection a request, a
session the server ended replaced unseen, none kept past `most`, in a transaction, after a
statement failed on it, or once the sessions are closed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import replace
from pathlib import Path

import pytest

from pg_support import PgCluster, require_psycopg

require_psycopg()

from choreo_ingest.errors import StateError  # noqa: E402
from choreo_ingest.event_intake import stored_events  # noqa: E402
from choreo_ingest.reporting import status_report  # noqa: E402
from choreo_ingest.store import PostgresLocation, keeping_sessions  # noqa: E402
from choreo_ingest.store.pg_sessions import KeptSessions  # noqa: E402

from fakes import FakeClock, make_config  # noqa: E402
from pg_tracing import TracingLocation  # noqa: E402

pytestmark = pytest.mark.slow

T0 = 1_800_000_000.0


@pytest.fixture
def location(pg_url: str) -> Iterator[TracingLocation]:
    with PostgresLocation(pg_url).open() as store:
        store.migrate()
    readers, writers = KeptSessions(most=2), KeptSessions(most=2)
    yield TracingLocation(pg_url, readers=readers, writers=writers)
    readers.close()
    writers.close()


def read(location: PostgresLocation) -> int:
    with location.open(readonly=True) as store:
        return store.schema_version()


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


@pytest.mark.parametrize(
    ("readonly", "statement"),
    [(True, "BEGIN"), (False, "SELECT * FROM no_such_table")],
    ids=["left-in-a-transaction", "a-statement-failed-on-it"],
)
def test_a_session_left_in_a_transaction_or_a_statement_failed_on_is_not_kept(
    location: TracingLocation, readonly: bool, statement: str
) -> None:
    with suppress(StateError), location.open(readonly=readonly) as store:
        store._conn.execute(statement)
    [conn] = location.connections
    sessions = location.readers if readonly else location.writers
    assert sessions is not None
    assert len(sessions) == 0
    assert conn.raw is not None
    assert conn.raw.closed


def test_reads_and_writes_one_after_another_each_go_through_one_session_of_their_kind(
    location: TracingLocation,
) -> None:
    for _ in range(3):
        with location.open() as store:
            store.bump_counters("fake", {"pages": 1})
        assert read(location) > 0

    writer, reader = location.connections
    assert not writer.readonly
    assert reader.readonly
    assert location.writers is not None
    assert len(location.writers) == 1
    assert location.readers is not None
    assert len(location.readers) == 1


@pytest.mark.parametrize("kept", [1, 2])
def test_writing_sessions_that_turned_read_only_cost_one_refused_post_however_many_are_kept(
    location: TracingLocation, kept: int
) -> None:
    """A primary demoted to a standby refuses every write of its sessions: one event post is
    refused (the forwarder's own retries, or the next cycle, carry it), and the next connects
    anew (to the new primary, through the URL's host list or a proxy) instead of failing for
    ever; the sessions kept beside the refused one, to the same server, are ended with it, or
    each would refuse one more post (`most` lost in all, not one)."""
    clock = FakeClock(T0)
    with ExitStack() as stack:  # `kept` sessions, as posts at once
        for store in [stack.enter_context(location.open()) for _ in range(kept)]:
            store.bump_counters("fake", {"pages": 1})
    assert location.writers is not None
    assert len(location.writers) == kept
    for conn in location.connections:
        assert conn.raw is not None
        conn.raw.execute("SET default_transaction_read_only = on")  # as a standby answers

    with pytest.raises(StateError, match="read-only transaction"):
        stored_events(location, "fake", [{"name": "a"}], clock)
    assert stored_events(location, "fake", [{"name": "b"}], clock) == (1, False)

    assert len(location.connections) == kept + 1
    assert all(conn.raw is not None and conn.raw.closed for conn in location.connections[:kept])
    with location.open(readonly=True) as store:
        assert [event.body["name"] for event in store.pending_events("fake")] == ["b"]


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
    """`keeping_sessions`, as `serve` opens its state: the status document, read by request
    threads one after another and at once, connects only for reads made at once."""
    with PostgresLocation(pg_url).open() as store:
        store.migrate()
    config = make_config(tmp_path)
    traced = TracingLocation(pg_url)
    with keeping_sessions(traced) as location:
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


def test_serve_stores_event_posts_one_after_another_through_one_session(pg_url: str) -> None:
    with PostgresLocation(pg_url).open() as store:
        store.migrate()
    traced = TracingLocation(pg_url)
    with keeping_sessions(traced) as location:
        for name in ("a", "b", "c", "d"):
            stored_events(location, "fake", [{"name": name}], FakeClock(T0))
        assert len(traced.connections) == 1
        [kept] = traced.connections
        assert not kept.readonly
    assert kept.raw is not None
    assert kept.raw.closed


def test_a_location_without_sessions_connects_for_each_read(pg_url: str) -> None:
    with PostgresLocation(pg_url).open() as store:
        store.migrate()
    traced = TracingLocation(pg_url)
    for _ in range(3):
        read(traced)
    assert len(traced.connections) == 3
    assert replace(traced, readers=None, writers=None) == traced  # sessions take no part in it


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
