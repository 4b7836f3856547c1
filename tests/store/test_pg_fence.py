"""The PostgreSQL run lock fenced: when a second run takes the lock while the first holds it (a
pooler in transaction mode between choreo-ingest and PostgreSQL: `pg_takeover.py`), the first
run's next write transaction is refused whole, with an error that says so, and the second one
writes on; a claim waits for the first run's open write transaction, so the two never
interleave. Runs one after another, and states an older release migrated, are unaffected."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pg_support import PgCluster, require_psycopg

require_psycopg()

import psycopg  # noqa: E402

from choreo_ingest.config import IncrementalConfig  # noqa: E402
from choreo_ingest.errors import StateError  # noqa: E402
from choreo_ingest.event_intake import stored_events  # noqa: E402
from choreo_ingest.invocation import (  # noqa: E402
    approve_removals,
    copy_state,
    forget,
    refresh,
    reset,
    run_once,
)
from choreo_ingest.models import EntityIteratorResult, ProviderState  # noqa: E402
from choreo_ingest.service import Service  # noqa: E402
from choreo_ingest.store import (  # noqa: E402
    PostgresLocation,
    SqliteLocation,
    StateLocation,
    SweepGuards,
)
from choreo_ingest.store.connection import Tracer  # noqa: E402
from choreo_ingest.store.entity_rows import bump_counters  # noqa: E402
from choreo_ingest.store.pg_connection import PgConnection  # noqa: E402
from choreo_ingest.store.pg_fence import RunHolder  # noqa: E402

from event_fakes import component_event  # noqa: E402
from fakes import FakeClock, FakeProvider, make_config, make_entity  # noqa: E402
from pg_takeover import second_run, taken_over_after_migrating  # noqa: E402
from pg_tracing import TracingLocation  # noqa: E402

pytestmark = pytest.mark.slow

TOOK_THE_LOCK = (
    r"another choreo-ingest run took the run lock of schema 'choreo_ingest' while this one "
    r"held it \(a pooler in transaction mode between choreo-ingest and PostgreSQL\? see "
    r"README\): nothing of this transaction was written"
)
SOURCE = [make_entity(f"e{i}") for i in range(10)]
T0 = 1_800_000_000.0


def run_holder(url: str) -> str | None:
    """The token of the run holding the store, as another session reads it."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT value FROM choreo_ingest.store_meta WHERE name = 'run_holder'"
        ).fetchone()
        return None if row is None else str(row[0])


def counters(location: StateLocation) -> dict[str, int]:
    with location.open(readonly=True) as store:
        return store.counters("fake")


def run_fake(location: StateLocation, tmp_path: Path, clock: Any = None, **kwargs: Any) -> Any:
    """One `run` of the fake provider over SOURCE, two entities a page."""
    provider = FakeProvider(SOURCE)
    config = make_config(tmp_path)
    return run_once(config, location, clock or FakeClock(), providers={"fake": provider}, **kwargs)


def test_a_run_whose_lock_another_run_took_writes_nothing_more_and_the_other_writes_on(
    pg_url: str,
) -> None:
    location = PostgresLocation(pg_url)
    with location.open_locked() as first:
        first.migrate()
        first.bump_counters("fake", {"pages": 1})  # the store is the first run's
        with second_run(location) as second:
            with pytest.raises(StateError, match=TOOK_THE_LOCK):
                first.bump_counters("fake", {"pages": 10})
            with pytest.raises(StateError, match=TOOK_THE_LOCK):  # and every write after
                first.set_facts("fake", {"written": "by the first"}, T0)

            second.bump_counters("fake", {"pages": 100})
            # Events are stored without the run lock, by whichever host receives them.
            assert stored_events(location, "fake", [component_event("c1")], FakeClock())[0] == 1

            assert counters(location) == {"pages": 101}
            assert second.facts("fake") == {}
            assert second.pending_event_count("fake") == 1


def test_a_claim_waits_for_the_open_write_transaction_of_the_run_holding_the_store(
    pg_url: str, pg_cluster: PgCluster
) -> None:
    location = PostgresLocation(pg_url)
    claimed, done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def take_over() -> None:
        try:
            with second_run(location) as second:
                claimed.set()
                done.wait(30)
                second.bump_counters("fake", {"pages": 100})
        except BaseException as error:  # reported by the test's thread
            failures.append(error)
            claimed.set()

    with location.open_locked() as first:
        first.migrate()
        conn = first._conn
        assert isinstance(conn, PgConnection)
        thread = threading.Thread(target=take_over, daemon=True)
        with conn.transaction():  # the first run's write transaction, open
            bump_counters(conn, "fake", {"pages": 1})
            thread.start()
            waited_on_the_claim = waiting_for_a_lock(pg_cluster, pg_url, "store_meta")
            assert not claimed.is_set()
        assert waited_on_the_claim
        assert claimed.wait(30)
        assert failures == []
        assert counters(location) == {"pages": 1}  # the open transaction committed whole
        with pytest.raises(StateError, match=TOOK_THE_LOCK):  # and was the first run's last
            first.bump_counters("fake", {"pages": 10})
        done.set()
        thread.join(30)
    assert failures == []
    assert counters(location) == {"pages": 101}


def waiting_for_a_lock(cluster: PgCluster, url: str, table: str, timeout: float = 10) -> bool:
    """Whether a session of the database at `url` comes to wait for a lock in a statement
    naming `table`, within `timeout` seconds."""
    database = url.rsplit("/", 1)[1]
    give_up_at = time.monotonic() + timeout
    with cluster.admin(database) as admin:
        while time.monotonic() < give_up_at:
            waiting = admin.execute(
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND wait_event_type = 'Lock' AND query LIKE %s""",
                [f"%{table}%"],
            ).fetchone()[0]
            if waiting:
                return True
            time.sleep(0.05)
    return False


@dataclass(frozen=True)
class TakenOverMidBurst(PostgresLocation):
    """A second run takes the store over between the first run's page commits: just before
    the write transaction after the `after`th page (a second host through the pooler)."""

    after: int = 2
    stack: ExitStack = field(default_factory=ExitStack, compare=False)
    pages: list[int] = field(default_factory=list, compare=False)
    taken: list[bool] = field(default_factory=list, compare=False)

    def _connect(
        self, *, readonly: bool, schema: str | None = None, tracer: Tracer | None = None
    ) -> PgConnection:
        def take_over_between_pages(statement: str, params: object) -> None:
            if "SET pages = pages + 1" in statement:
                self.pages.append(1)
            elif statement == "BEGIN" and len(self.pages) == self.after and not self.taken:
                self.taken.append(True)
                self.stack.enter_context(second_run(PostgresLocation(self.url)))

        return super()._connect(readonly=readonly, schema=schema, tracer=take_over_between_pages)


def test_a_burst_whose_lock_another_run_took_ends_and_the_next_run_resumes_its_cycle(
    pg_url: str, tmp_path: Path
) -> None:
    taken = TakenOverMidBurst(pg_url, after=2)
    with taken.stack, pytest.raises(StateError, match=TOOK_THE_LOCK):
        run_fake(taken, tmp_path)
    assert taken.taken

    location = PostgresLocation(pg_url)
    with location.open(readonly=True) as store:
        cycle = store.last_cycle("fake")
        assert cycle is not None
        assert (cycle.cycle_id, cycle.pages, cycle.completed_at) == (1, 2, None)
        assert store.active_count("fake") == 4  # two pages of two, the third not written
        assert store.load_provider("fake").cursor is not None

    later = FakeClock()  # the burst that ended counts as a failure: resumed after the backoff
    later.advance(IncrementalConfig().backoff[0])
    [outcome] = run_fake(location, tmp_path, later).providers
    assert outcome.cycle_completed
    with location.open(readonly=True) as store:
        assert sorted(e["metadata"]["name"] for e in store.iter_entities()) == sorted(
            e.name for e in SOURCE
        )
        cycle = store.last_cycle("fake")
        assert cycle is not None
        assert (cycle.cycle_id, cycle.pages) == (1, 5)  # every page once, none twice


def blocked_removals(location: PostgresLocation) -> None:
    """A state whose second cycle's sweep held back 8 removals (`removals approve` has work)."""
    guarded = SweepGuards(
        reject_empty_source_collections=False, reject_removals_above_percentage=10
    )
    with location.open() as store:
        store.migrate()
        for entities in (SOURCE, SOURCE[:2]):
            record = store.load_provider("fake")
            record.cycle_id += 1
            record.state = ProviderState.BURSTING
            store.start_cycle(record, T0)
            page = EntityIteratorResult(True, entities)
            store.commit_page("fake", record.cycle_id, page, None, T0)
            record.state = ProviderState.RESTING
            store.complete_cycle(record, guarded, T0)
        assert store.blocked_removals("fake").count == 8


COMMANDS: dict[str, Callable[[PostgresLocation, Path], object]] = {
    "run": lambda location, tmp_path: run_fake(location, tmp_path, force=True),
    "refresh": lambda location, _: refresh(location, "fake", FakeClock()),
    "reset --purge": lambda location, _: reset(location, "fake", FakeClock(), purge=True),
    "removals approve": lambda location, _: approve_removals(location, "fake", FakeClock()),
    "reset --forget": lambda location, _: forget(location, "fake", FakeClock()),
    "migrate --copy-to": lambda location, tmp_path: copy_state(
        SqliteLocation(tmp_path / "source.db"), location, force=True
    ),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_writing_under_the_run_lock_is_refused_once_another_run_took_it(
    command: str, pg_url: str, tmp_path: Path
) -> None:
    location = PostgresLocation(pg_url)
    blocked_removals(location)
    run_fake(SqliteLocation(tmp_path / "source.db"), tmp_path)
    before = read_state(location)

    with taken_over_after_migrating(pg_url) as seconds, pytest.raises(StateError) as refused:
        COMMANDS[command](location, tmp_path)

    assert seconds  # a second run did take the store over
    assert refused.match(TOOK_THE_LOCK)
    assert read_state(location) == before


def read_state(location: PostgresLocation) -> dict[str, Any]:
    with location.open(readonly=True) as store:
        return {
            "record": store.load_provider("fake"),
            "entities": list(store.iter_entities()),
            "blocked": store.blocked_removals("fake"),
            "changes": store.changes(),
            "counters": store.counters("fake"),
        }


def test_runs_one_after_another_each_claim_the_store_and_leave_no_claim_behind(
    pg_url: str, tmp_path: Path
) -> None:
    location = PostgresLocation(pg_url)
    holders = []
    for _ in range(2):
        with location.open_locked() as store:
            store.migrate()
            holders.append(run_holder(pg_url))
            store.bump_counters("fake", {"pages": 1})
        assert run_holder(pg_url) is None
    assert None not in holders
    assert len(set(holders)) == 2
    assert counters(location) == {"pages": 2}

    [outcome] = run_fake(location, tmp_path).providers  # a whole cycle, as ever
    assert outcome.cycle_completed
    assert run_holder(pg_url) is None


def test_a_claim_a_crashed_run_left_is_taken_over_by_the_next_run(
    pg_url: str, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    location = PostgresLocation(pg_url)
    with location.open_locked() as store:
        store.migrate()
        stale = run_holder(pg_url)
        assert isinstance(store._conn, PgConnection)
        with pg_cluster.admin(pg_url.rsplit("/", 1)[1]) as admin:  # the run's session dies
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", [store._conn.backend_pid])
    assert stale is not None
    assert run_holder(pg_url) == stale  # no release: the claim stays behind

    [outcome] = run_fake(location, tmp_path).providers

    assert outcome.cycle_completed
    assert run_holder(pg_url) is None


def test_a_state_an_older_release_migrated_is_claimed_and_every_write_is_checked(
    pg_url: str, tmp_path: Path
) -> None:
    with PostgresLocation(pg_url).open() as store:  # as a release before the fence left it
        store.migrate()
        store.bump_counters("fake", {"pages": 1})
    assert run_holder(pg_url) is None
    statements: list[str] = []
    traced = TracingLocation(pg_url, statements=statements)

    [outcome] = run_fake(traced, tmp_path).providers

    assert outcome.cycle_completed
    assert counters(PostgresLocation(pg_url))["pages"] == 1 + 5
    begins = [i for i, statement in enumerate(statements) if statement == "BEGIN"]
    claims = [i for i, statement in enumerate(statements) if "INSERT INTO store_meta" in statement]
    assert len(claims) == 1
    checked = [i for i in begins if i > claims[0]]
    assert len(checked) >= 5  # a page a transaction, at least
    assert all("FOR SHARE" in statements[i + 1] for i in checked)


def test_which_run_holds_a_store_is_neither_copied_nor_replaced_by_a_copy(
    pg_url: str, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    location = PostgresLocation(pg_url)
    run_fake(location, tmp_path)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as a crashed run leaves it
        conn.execute(
            "INSERT INTO choreo_ingest.store_meta (name, value) VALUES ('run_holder', 'stale')"
        )
    copied = SqliteLocation(tmp_path / "copy.db")
    other = pg_cluster.fresh_database()
    try:
        copy_state(location, copied)
        copy_state(location, PostgresLocation(other))
        # Replaced by the source's claim, the copying run's own would not have been released.
        assert run_holder(other) is None
        assert stored_id(PostgresLocation(other)) == stored_id(location)
    finally:
        pg_cluster.drop_database(other)
    assert stored_id(copied) == stored_id(location)
    assert "run_holder" not in store_meta_names(copied)


def stored_id(location: StateLocation) -> str:
    with location.open(readonly=True) as store:
        return store.store_id()


def store_meta_names(location: SqliteLocation) -> list[str]:
    import sqlite3

    with closing(sqlite3.connect(location.path)) as conn:
        return [name for (name,) in conn.execute("SELECT name FROM store_meta")]


WRITES = ("INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "BEGIN")


def serving(pg_url: str, tmp_path: Path) -> tuple[TracingLocation, FakeClock, Service]:
    """A `serve`'s service over the fake provider, its statements and connections traced (the
    caller closes `service.run_holder`, as `Service.run` does when it stops)."""
    location, clock = TracingLocation(pg_url), FakeClock(T0)
    providers = {"fake": FakeProvider(SOURCE)}
    return location, clock, Service(make_config(tmp_path), location, clock, providers=providers)


def test_serve_keeps_one_claim_and_one_session_for_all_its_ticks_and_an_idle_tick_writes_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    location, clock, service = serving(pg_url, tmp_path)
    try:
        service.tick()  # the whole first cycle
        [session] = location.connections
        assert counters(PostgresLocation(pg_url))["pages"] == 5
        assert run_holder(pg_url) == service.run_holder.token  # kept, not released

        for _ in range(3):
            clock.advance(1)
            location.statements.clear()
            record = service.tick()
            assert record.result is not None
            assert record.result.outcome == "waiting"
            writes = [s for s in location.statements if s.split()[0].upper() in WRITES]
            assert writes == []
            assert not any("FOR SHARE" in s or "xact_lock" in s for s in location.statements)
        assert location.connections == [session]  # no new connection a tick
        assert run_holder(pg_url) == service.run_holder.token

        # Between two ticks the lock is free: a cron run takes it, claims and releases.
        [outcome] = run_fake(location, tmp_path, clock, force=True).providers
        assert outcome.cycle_completed
        assert run_holder(pg_url) is None
        clock.advance(1)
        location.statements.clear()
        service.tick()  # the service claims the store again
        assert run_holder(pg_url) == service.run_holder.token
        assert [s for s in location.statements if "INSERT INTO store_meta" in s] != []
        assert location.connections[-1] is not session  # the cron run's own
    finally:
        service.run_holder.close()
    assert session.raw is not None
    assert session.raw.closed


def test_a_tick_whose_kept_session_the_server_ended_opens_another(
    pg_url: str, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    location, clock, service = serving(pg_url, tmp_path)
    try:
        service.tick()
        [session] = location.connections
        with pg_cluster.admin(pg_url.rsplit("/", 1)[1]) as admin:  # a restart, an idle timeout
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", [session.backend_pid])
        clock.advance(1)
        record = service.tick()
        assert record.result is not None, record.error
        assert record.error is None
        assert len(location.connections) == 2
        assert session.raw is not None
        assert session.raw.closed
        clock.advance(1)
        service.tick()
        assert len(location.connections) == 2  # the new one kept in turn
    finally:
        service.run_holder.close()


def test_a_kept_claim_is_fenced_like_a_runs_own_and_its_session_is_not_kept_locked(
    pg_url: str,
) -> None:
    location = PostgresLocation(pg_url)
    holder = RunHolder()
    try:
        with location.open_locked(holder) as first:
            first.migrate()
            first.bump_counters("fake", {"pages": 1})
        with location.open_locked(holder) as first:  # the holder's next turn, same session
            first.migrate()
            with second_run(location) as second:
                with pytest.raises(StateError, match=TOOK_THE_LOCK):
                    first.bump_counters("fake", {"pages": 10})
                second.bump_counters("fake", {"pages": 100})
        assert run_holder(pg_url) is None  # the second run released its claim
        assert counters(location) == {"pages": 101}
        with location.open_locked() as other:  # the kept session holds no lock
            other.migrate()
    finally:
        holder.close()


def test_a_turn_that_fails_does_not_keep_its_session(pg_url: str) -> None:
    """A write refused for the session's sake (a primary demoted to a standby answers every
    write with an error, and would for ever) must not be kept for the next turn."""
    location = PostgresLocation(pg_url)
    holder = RunHolder()
    try:
        with location.open_locked(holder) as store:
            store.migrate()
        kept = holder.take()
        assert kept is not None
        holder.keep(kept)

        with pytest.raises(StateError, match="read-only"):
            a_turn_on_a_standby(location, holder)

        assert holder.take() is None
        assert kept.raw is not None
        assert kept.raw.closed
        with location.open_locked() as other:  # and the lock went with it
            other.migrate()
    finally:
        holder.close()


def a_turn_on_a_standby(location: PostgresLocation, holder: RunHolder) -> None:
    with location.open_locked(holder) as store:
        store.migrate()
        assert isinstance(store._conn, PgConnection)
        store._conn.execute("SET default_transaction_read_only = on")  # as a standby's
        store.bump_counters("fake", {"pages": 1})
