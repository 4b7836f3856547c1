"""The store on PostgreSQL as a whole: a cycle against the simulator gives SQLite's catalog, the
run lock is a session-level advisory lock on the store's own connection, and a lost connection
mid-page rolls the page back, lets the lock go and leaves the next run to resume."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pg_support import PgCluster, require_psycopg

require_psycopg()

import psycopg  # noqa: E402

from choreo_ingest.clock import Clock  # noqa: E402
from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig  # noqa: E402
from choreo_ingest.errors import LockHeld, NotAStateFile, SchemaTooNew, StateError  # noqa: E402
from choreo_ingest.idle import run_if_idle  # noqa: E402
from choreo_ingest.invocation import run_once  # noqa: E402
from choreo_ingest.models import EntityIteratorResult  # noqa: E402
from choreo_ingest.providers.openchoreo import OpenChoreoProvider  # noqa: E402
from choreo_ingest.reporting import iter_export, status_report  # noqa: E402
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World  # noqa: E402
from choreo_ingest.store import (  # noqa: E402
    PostgresLocation,
    SqliteLocation,
    StateLocation,
    state_location,
    writes,
)
from choreo_ingest.store.connection import Tracer  # noqa: E402
from choreo_ingest.store.pg_connection import PgConnection  # noqa: E402

from fakes import FakeClock, FakeProvider, make_entity  # noqa: E402
from pg_tracing import TracingLocation  # noqa: E402
from sim_support import IN_PROCESS_URL, PROVIDER, expected_refs, simulator_transport  # noqa: E402

pytestmark = pytest.mark.slow

WORLD = World.generate(2, 3, 6, seed=11)


def run_world(state: StateLocation, world: World, clock: Clock) -> Any:
    """One `run` against `world` in-process (five items a page), as `sim_support.ingest_world`."""
    config = Config(
        openchoreo=OpenChoreoConfig(
            base_url=IN_PROCESS_URL, incremental=IncrementalConfig(chunk_size=5)
        ),
        providers=(PROVIDER,),
    )
    simulator = SimulatorApi(world, SimulatorOptions(api="orgs"), clock)
    provider = OpenChoreoProvider(config, transport=simulator_transport(simulator))
    return run_once(config, state, clock, providers={PROVIDER: provider})


def catalog(state: StateLocation) -> dict[str, Any]:
    with state.open(readonly=True) as store:
        cycle = store.last_cycle(PROVIDER)
        assert cycle is not None
        return {
            "entities": list(store.iter_entities()),
            "counts": store.entity_counts(PROVIDER),
            "active": store.active_count(PROVIDER),
            "changes": [(c.seq, c.op, c.ref) for c in store.changes()],
            "cycle": (cycle.cycle_id, cycle.pages, cycle.upserted, cycle.outcome),
        }


def test_a_whole_cycle_gives_the_catalog_sqlite_gives(pg_url: str, tmp_path: Path) -> None:
    sqlite = SqliteLocation(tmp_path / "state.db")
    postgres = PostgresLocation(pg_url)
    [on_sqlite] = run_world(sqlite, WORLD, FakeClock()).providers
    [on_postgres] = run_world(postgres, WORLD, FakeClock()).providers

    assert on_sqlite.cycle_completed
    assert on_postgres.cycle_completed
    expected = catalog(sqlite)
    assert {ref_of(body) for body in expected["entities"]} == expected_refs(WORLD)
    assert catalog(postgres) == expected


def ref_of(body: dict[str, Any]) -> str:
    metadata = body["metadata"]
    return f"{body['kind'].lower()}:{metadata['namespace']}/{metadata['name']}"


def test_a_url_is_a_postgres_location_shown_without_its_password() -> None:
    location = state_location("postgresql://app:s3cret@db.example:5432/catalog")
    assert isinstance(location, PostgresLocation)
    assert location.schema == "choreo_ingest"
    assert str(location) == "postgresql://app:***@db.example:5432/catalog"
    assert "s3cret" not in repr(location)
    assert isinstance(state_location("postgres://db/x"), PostgresLocation)
    assert isinstance(state_location("state.db"), SqliteLocation)


class TestRunLock:
    def test_open_locked_excludes_a_second_session_until_released(self, pg_url: str) -> None:
        location = PostgresLocation(pg_url)
        assert not location.exists()
        with location.open_locked() as store:
            store.migrate()
            assert location.exists()
            assert location.lock_held_elsewhere()
            with pytest.raises(LockHeld, match="run lock"), location.open_locked():
                pass
            with pytest.raises(LockHeld), location.run_lock():
                pass
            with pytest.raises(LockHeld):  # run_once is turned away too
                run_world(location, WORLD, FakeClock())
            with location.open(readonly=True) as reader:  # status needs no lock
                assert reader.provider_names() == []
        assert not location.lock_held_elsewhere()
        with location.run_lock():
            assert location.lock_held_elsewhere()

    def test_a_released_run_lock_is_free_before_its_session_has_ended(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The server ends a closed session (and lets its locks go) after close() returns; a
        # run started right after a release must not find the lock held by that session.
        lingering: list[PgConnection] = []
        really_close = PgConnection.close

        def linger(conn: PgConnection) -> None:
            lingering.append(conn)

        monkeypatch.setattr(PgConnection, "close", linger)
        location = PostgresLocation(pg_url)
        with location.run_lock():
            pass
        monkeypatch.undo()
        try:
            assert len(lingering) == 1  # released, its session still alive
            assert not location.lock_held_elsewhere()
        finally:
            for conn in lingering:
                really_close(conn)

    def test_one_lock_per_schema(self, pg_url: str) -> None:
        with PostgresLocation(pg_url, schema="one").open_locked():
            with PostgresLocation(pg_url, schema="two").open_locked() as other:
                assert other.migrate()
            assert PostgresLocation(pg_url, schema="one").lock_held_elsewhere()
            assert not PostgresLocation(pg_url, schema="two").lock_held_elsewhere()

    def test_the_lock_is_held_by_the_store_connection_itself(self, pg_url: str) -> None:
        location = PostgresLocation(pg_url)
        with location.open_locked() as store, psycopg.connect(pg_url, autocommit=True) as admin:
            conn = store._conn
            assert isinstance(conn, PgConnection)
            holders = admin.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            ).fetchall()
            assert holders == [(conn.backend_pid,)]

    def test_write_problem(self, pg_url: str) -> None:
        assert PostgresLocation(pg_url).write_problem() is None
        port_closed = pg_url.rsplit("/", 1)[0].rsplit(":", 1)[0] + ":1/x"
        problem = PostgresLocation(port_closed).write_problem()
        assert problem is not None
        assert "cannot connect" in problem


@dataclass(frozen=True)
class KillingLocation(PostgresLocation):
    """Terminates the store connection's server process just before the `kill_at`th page commit
    updates its cycle row: inside the page's transaction, after its entities were written."""

    kill_at: int = 0
    seen: list[int] = field(default_factory=list, compare=False)

    def _connect(
        self, *, readonly: bool, schema: str | None = None, tracer: Tracer | None = None
    ) -> PgConnection:
        holder: list[PgConnection] = []

        def kill_mid_page(statement: str, params: object) -> None:
            if "SET pages = pages + 1" not in statement:
                return
            self.seen.append(1)
            if len(self.seen) == self.kill_at:
                with psycopg.connect(self.url, autocommit=True) as admin:
                    pid = holder[0].backend_pid
                    admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])

        conn = super()._connect(readonly=readonly, schema=schema, tracer=kill_mid_page)
        holder.append(conn)
        return conn


def test_a_lost_connection_mid_page_rolls_it_back_and_the_next_run_resumes(
    pg_url: str, tmp_path: Path
) -> None:
    sqlite = SqliteLocation(tmp_path / "state.db")
    run_world(sqlite, WORLD, FakeClock())
    clean = catalog(sqlite)
    killing = KillingLocation(pg_url, kill_at=3)

    with pytest.raises(StateError, match="connection lost"):
        run_world(killing, WORLD, FakeClock())
    assert len(killing.seen) == 3 < clean["cycle"][1]

    location = PostgresLocation(pg_url)
    assert not location.lock_held_elsewhere()  # the lock died with the session
    with location.open(readonly=True) as store:
        record = store.load_provider(PROVIDER)
        cycle = store.last_cycle(PROVIDER)
        assert cycle is not None
        assert (record.cycle_id, cycle.pages, cycle.completed_at) == (1, 2, None)
        assert record.cursor is not None  # the second page's
        assert store.counters(PROVIDER)["pages"] == 2
        written = store.active_count(PROVIDER)
        assert written == cycle.upserted == len(list(store.iter_entities())) > 0

    later = FakeClock()  # the burst that died counts as a failure: resumed after the first step
    later.advance(IncrementalConfig().backoff[0])
    [outcome] = run_world(location, WORLD, later).providers

    assert outcome.cycle_completed
    resumed = catalog(location)
    assert resumed["entities"] == clean["entities"]
    assert resumed["counts"] == clean["counts"]
    assert resumed["cycle"] == clean["cycle"]  # cycle 1, every page once, none twice
    assert [op for _, op, _ in resumed["changes"]] == [op for _, op, _ in clean["changes"]]


class TestOpening:
    def test_a_schema_holding_other_tables_is_refused_and_left_untouched(self, pg_url: str) -> None:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("CREATE SCHEMA app")
            admin.execute("CREATE TABLE app.users (id BIGINT PRIMARY KEY)")
        location = PostgresLocation(pg_url, schema="app")
        for opening in (location.open, lambda: location.open(readonly=True)):
            with pytest.raises(NotAStateFile, match="not a choreo-ingest state"):
                opening()
        with pytest.raises(NotAStateFile), location.open_locked():
            pass
        with psycopg.connect(pg_url, autocommit=True) as admin:
            tables = admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'app'")
            assert tables.fetchall() == [("users",)]

    def test_a_schema_a_newer_version_migrated_is_refused(self, pg_url: str) -> None:
        location = PostgresLocation(pg_url)
        with location.open() as store:
            store.migrate()
            store._conn.execute(
                "INSERT INTO _migrations (migration_set, name) VALUES ('choreo_ingest', '9999_x')"
            )
        with pytest.raises(SchemaTooNew):
            location.open(readonly=True)

    def test_readonly_open_of_a_missing_schema_makes_nothing(self, pg_url: str) -> None:
        location = PostgresLocation(pg_url, schema="nothing_yet")
        with pytest.raises(StateError, match="no schema"):
            location.open(readonly=True)
        assert not location.exists()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            found = admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'nothing_yet'")
            assert found.fetchone() is None

    def test_a_readonly_store_refuses_writes(self, pg_url: str) -> None:
        location = PostgresLocation(pg_url)
        with location.open() as store:
            store.migrate()
        with location.open(readonly=True) as reader, pytest.raises(StateError, match="read-only"):
            reader.set_position("mirror", 3)


def test_iter_entities_streams_through_a_server_side_cursor(pg_url: str) -> None:
    location = PostgresLocation(pg_url)
    entities = [make_entity(f"e{i:04}") for i in range(2500)]
    with location.open() as store:
        store.migrate()
        record = store.load_provider("fake")
        record.cycle_id = 1
        store.start_cycle(record, 1.0)
        store.commit_page("fake", 1, EntityIteratorResult(done=True, entities=entities), None, 1.0)

    with location.open(readonly=True) as reader:
        conn = reader._conn
        assert isinstance(conn, PgConnection)
        bodies = reader.iter_entities()
        first = next(bodies)
        assert conn.in_transaction  # a snapshot of its own, held while the rows are read
        cursors = conn.execute("SELECT count(*) FROM pg_cursors WHERE NOT is_holdable").fetchone()
        assert cursors == (1,)
        rest = list(bodies)
        assert not conn.in_transaction  # ended with the last row
        assert [first, *rest] == [entity.body for entity in sorted(entities, key=lambda e: e.ref)]
        assert [b["metadata"]["name"] for b in reader.iter_entities("COMPONENT")][:2] == [
            "e0000",
            "e0001",
        ]
        abandoned = reader.iter_entities()
        next(abandoned)
        abandoned.close()
        assert not conn.in_transaction
        with reader.snapshot():  # inside a caller's snapshot, in that one
            assert len(list(reader.iter_entity_locations())) == 2500
            assert conn.in_transaction


class TestOtherRoles:
    def test_a_role_without_create_on_the_schema_is_a_write_problem(
        self, pg_cluster: PgCluster, pg_url: str
    ) -> None:
        """Each right the role lacks, USAGE first, as `run` names it when it refuses."""
        with PostgresLocation(pg_url).open() as store:  # the schema, made by its owner
            store.migrate()
        as_other = pg_cluster.password_url(pg_url)
        location = PostgresLocation(as_other, password=pg_cluster.password)
        problem = location.write_problem()
        with pg_cluster.admin(pg_url.rsplit("/", 1)[1]) as admin:
            admin.execute(f"GRANT USAGE ON SCHEMA choreo_ingest TO {pg_cluster.password_user}")
        with_usage = location.write_problem()
        assert problem is not None
        assert "no USAGE or CREATE right on schema 'choreo_ingest'" in problem
        assert pg_cluster.password not in problem
        assert with_usage is not None
        assert with_usage.endswith("no CREATE right on schema 'choreo_ingest'")
        assert (
            PostgresLocation(as_other, schema="own", password=pg_cluster.password).write_problem()
            is None
        )

    @pytest.mark.parametrize("readonly", [True, False], ids=["status", "run"])
    def test_a_role_without_usage_on_the_schema_is_told_so_not_to_migrate(
        self, pg_cluster: PgCluster, pg_url: str, readonly: bool
    ) -> None:
        """Without USAGE the schema's tables are not seen: readers said "6 pending migrations;
        run `choreo-ingest migrate`", and `run` and `migrate` "no schema has been selected to
        create in". A second host's role, a schema a DBA made without a grant."""
        with PostgresLocation(pg_url).open() as store:  # the schema, made by its owner
            store.migrate()
        as_other = PostgresLocation(pg_cluster.password_url(pg_url), password=pg_cluster.password)

        with pytest.raises(StateError) as refused:
            as_other.open(readonly=readonly).close()

        role = pg_cluster.password_user
        assert str(refused.value).endswith(
            f"role {role!r} has no USAGE right on schema 'choreo_ingest' (GRANT USAGE ON SCHEMA "
            f'"choreo_ingest" TO "{role}", and the rights on its tables)'
        )
        assert pg_cluster.password not in str(refused.value)

    def test_a_wrong_password_is_a_state_error_that_never_shows_it(
        self, pg_cluster: PgCluster, pg_url: str
    ) -> None:
        url = pg_cluster.password_url(pg_url, password="wrong-secret")
        location = state_location(url)
        assert "wrong-secret" not in str(location)
        with pytest.raises(StateError) as refused:
            location.open()
        assert "wrong-secret" not in str(refused.value)
        problem = location.write_problem()
        assert problem is not None
        assert "wrong-secret" not in problem

    def test_several_hosts_each_say_why_they_failed(
        self, pg_cluster: PgCluster, pg_url: str
    ) -> None:
        """libpq's first line names only the last host tried (a standby down on purpose), not
        the password the first one refused."""
        one = pg_cluster.password_url(pg_url, password="wrong-secret")
        server = f"{pg_cluster.host}:{pg_cluster.port}"
        url = one.replace(server, f"{server},127.0.0.1:1")

        with pytest.raises(StateError) as refused:
            state_location(url).open()

        problem = str(refused.value)
        assert "\n" not in problem
        assert f"{server}: " in problem
        assert "password authentication failed" in problem
        assert "127.0.0.1:1: Connection refused" in problem
        assert "wrong-secret" not in problem


def test_status_reads_without_the_lock_and_shows_the_url_without_its_password(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    owner = PostgresLocation(pg_url)
    run_world(owner, WORLD, FakeClock())
    config = Config(openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL), providers=(PROVIDER,))
    shown = pg_cluster.password_url(pg_url, password=pg_cluster.password)
    with psycopg.connect(pg_url, autocommit=True) as admin:  # a monitoring role may read
        admin.execute(f"GRANT USAGE ON SCHEMA choreo_ingest TO {pg_cluster.password_user}")
        admin.execute(
            f"GRANT SELECT ON ALL TABLES IN SCHEMA choreo_ingest TO {pg_cluster.password_user}"
        )

    with owner.open_locked():  # a burst is running
        report = status_report(shown, config, 1_800_000_000.0).to_json()

    assert report["stateFile"] == shown.replace(pg_cluster.password, "***")
    assert report["stateSchema"] == "choreo_ingest"
    assert pg_cluster.password not in json.dumps(report)
    assert report["running"] is True
    [provider] = report["providers"]
    assert provider["name"] == PROVIDER
    assert status_report(pg_url, config, 1_800_000_000.0).to_json()["running"] is False
    exported = list(iter_export(pg_url))
    assert {ref_of(body) for body in exported} == expected_refs(WORLD)


@pytest.mark.parametrize(("stale", "analyzed"), [(3, True), (2, False)])
def test_a_large_sweep_first_refreshes_the_planners_statistics(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, stale: int, analyzed: bool
) -> None:
    """Rows a cycle wrote seconds ago look like none to PostgreSQL's planner until autovacuum
    analyses them: a large sweep then probed 200k refs one by one (3 s, over its 2 s target)."""
    monkeypatch.setattr(writes, "LARGE_SWEEP", 3)
    location = TracingLocation(pg_url)
    clock = FakeClock()
    config = Config(
        openchoreo=OpenChoreoConfig(
            incremental=IncrementalConfig(
                reject_removals_above_percentage=None, reject_empty_source_collections=False
            )
        ),
        providers=("fake",),
    )
    entities = [make_entity(f"e{i}") for i in range(stale)]
    run_once(config, location, clock, providers={"fake": FakeProvider(entities, page_size=10)})
    location.statements.clear()

    run_once(config, location, clock, force=True, providers={"fake": FakeProvider([])})

    assert any(sql.startswith("ANALYZE") for sql in location.statements) is analyzed
    with location.open(readonly=True) as store:
        assert store.active_count("fake") == 0


def test_a_run_with_nothing_due_opens_one_session(pg_url: str, tmp_path: Path) -> None:
    """Cron's call every minute: the locked store's session, not one before it to ask whether
    the schema is there (a connection, a backend and, to a remote server, a TLS handshake)."""
    location, clock = TracingLocation(pg_url), FakeClock()
    assert run_world(location, WORLD, clock).providers[0].cycle_completed
    config = Config(
        openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL),
        providers=(PROVIDER,),
        metrics_textfile=tmp_path / "choreo_ingest.prom",
    )
    location.connections.clear()

    assert run_if_idle(config, location, clock)

    assert len(location.connections) == 1
    assert (tmp_path / "choreo_ingest.prom").exists()


def test_a_run_on_an_empty_database_is_left_to_the_full_run(pg_url: str) -> None:
    location = PostgresLocation(pg_url)
    config = Config(openchoreo=OpenChoreoConfig(base_url=IN_PROCESS_URL), providers=(PROVIDER,))

    assert not run_if_idle(config, location, FakeClock())

    assert run_world(location, WORLD, FakeClock()).providers[0].cycle_completed
