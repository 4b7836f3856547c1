"""A page commit, and a cycle completion, on PostgreSQL dying before any of their statements:
each transaction applied whole or not at all.

The style of test_crash_safety.py, at the store: a reference run of the region (the last page of
cycle 2; that page and the sweep, which also forgets the events parked before cycle 2 began) is
traced, then, for every statement N of it, a copy of the database as it stood before the region
(CREATE DATABASE … TEMPLATE, what copying the SQLite file is there) runs the region and dies
before statement N, two ways: the process unwinds (a BaseException; the connection rolls back),
or the session is killed (`pg_terminate_backend`; the server rolls back). The state must be the
one after the transactions committed before N; doing the rest again (a fresh store) must give the
reference's state.

Change log seqs are compared apart: PostgreSQL's identity sequence does not roll back, so a
page that committed after a rolled-back attempt has later seqs (gaps, still in order).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from pg_support import PgCluster, require_psycopg

require_psycopg()

import psycopg  # noqa: E402
from store_support import (  # noqa: E402
    Tables,
    assert_counts_match,
    read_pg_tables,
    versioned_entity,
)

from choreo_ingest.clock import SystemClock  # noqa: E402
from choreo_ingest.errors import StateError  # noqa: E402
from choreo_ingest.invocation import run_once  # noqa: E402
from choreo_ingest.models import (  # noqa: E402
    Entity,
    EntityIteratorResult,
    IndexEntry,
    ProviderState,
    QueueItem,
)
from choreo_ingest.store import PostgresLocation, Store, SweepGuards  # noqa: E402
from choreo_ingest.store.pg_connection import PgConnection  # noqa: E402

from event_fakes import component_event  # noqa: E402
from fakes import FakeProvider, make_config  # noqa: E402

pytestmark = pytest.mark.slow

T0 = 1_800_000_000.0
SOURCE_1 = [versioned_entity(f"e{i}") for i in range(6)]
PAGES_2 = [
    [versioned_entity("e0"), versioned_entity("e1", 2)],
    [versioned_entity("n0"), versioned_entity("e2")],
    [versioned_entity("e3", 2), versioned_entity("n1"), versioned_entity("e4")],  # the one
]
NO_GUARDS = SweepGuards(
    reject_empty_source_collections=False, reject_removals_above_percentage=None
)


class Crash(BaseException):
    """The process dies here: not an Exception, so nothing on the way handles it."""


def page(index: int) -> EntityIteratorResult:
    entities = PAGES_2[index]
    return EntityIteratorResult(
        done=False,
        entities=entities,
        cursor={"page": index + 1},
        queue_items=[QueueItem("seen", entity.name, index) for entity in entities],
        index=[IndexEntry("seen-entity", entity.ref, "g", index) for entity in entities],
        facts={"page": str(index)},
        counters={"requests": 1},
        kept_scopes=["e5"] if index == len(PAGES_2) - 1 else (),  # a namespace stepped over
    )


def commit(store: Store, index: int) -> None:
    store.commit_page("fake", 2, page(index), f'{{"page":{index + 1}}}', T0 + 10 + index)


def prepare(location: PostgresLocation) -> None:
    """Cycle 1 whole, then cycle 2 up to (not including) the page under test."""
    with location.open() as store:
        store.migrate()
        record = store.load_provider("fake")
        record.cycle_id, record.state = 1, ProviderState.BURSTING
        store.start_cycle(record, T0)
        done = EntityIteratorResult(done=True, entities=SOURCE_1, cursor=None)
        store.commit_page("fake", 1, done, None, T0)
        record.state = ProviderState.RESTING
        store.complete_cycle(record, NO_GUARDS, T0)
        record.cycle_id, record.state = 2, ProviderState.BURSTING
        store.start_cycle(record, T0 + 10)
        commit(store, 0)
        commit(store, 1)
        for name, received_at in PARKED.items():
            [seq] = store.add_events("fake", [component_event(name, "updated")], received_at)
            assert store.fail_event("fake", seq, "API down", max_attempts=1)


PARKED = {"e1": T0 + 5, "n0": T0 + 15}
"""Parked events, received before cycle 2 began (its completion forgets it) and during its walk
(which may have read the object before the change: kept)."""


def parked(tables: Tables) -> list[str]:
    return sorted(row[3]["name"] for row in tables["event_inbox"] if row[5])


def comparable(tables: Tables) -> Tables:
    """The tables with change log seqs left out (checked to be in order instead)."""
    seqs = [row[0] for row in sorted(tables["changes"])]
    assert seqs == sorted(set(seqs))
    return {**tables, "changes": sorted((row[1:] for row in tables["changes"]), key=repr)}


@dataclass
class Tracer:
    """Records statements; before statement `crash_at`, dies the way `how` says."""

    crash_at: int | None = None
    how: str = "raise"
    statements: list[str] = field(default_factory=list)
    conn: list[PgConnection] = field(default_factory=list)
    armed: bool = False
    """Counting: from the region on (not the statements of opening the store)."""

    def __call__(self, statement: str, params: Any) -> None:
        if not self.armed:
            return
        self.statements.append(" ".join(statement.split())[:60])
        if len(self.statements) != self.crash_at:
            return
        if self.how == "raise":
            raise Crash
        with psycopg.connect(self.conn[0].url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", [self.conn[0].backend_pid])


def last_page(store: Store) -> None:
    commit(store, 2)


def complete(store: Store) -> None:
    record = store.load_provider("fake")
    record.state = ProviderState.RESTING
    store.complete_cycle(record, NO_GUARDS, T0 + 20)


REGIONS: dict[str, list[Callable[[Store], None]]] = {
    "commit_page": [last_page],  # one transaction
    "complete_cycle": [last_page, complete],  # the last page, then the sweep: two
}


def traced(url: str, tracer: Tracer, steps: Sequence[Callable[[Store], None]]) -> None:
    with PostgresLocation(url).open(tracer=tracer) as store:
        conn = store._conn
        assert isinstance(conn, PgConnection)
        tracer.conn.append(conn)
        tracer.armed = True
        for step in steps:
            step(store)


@pytest.mark.parametrize("region", list(REGIONS))
def test_dying_before_any_statement_leaves_each_transaction_whole_or_none_of_it(
    pg_cluster: PgCluster, pg_url: str, region: str
) -> None:
    steps = REGIONS[region]
    prepare(PostgresLocation(pg_url))
    copies: list[str] = []

    def copy() -> str:
        copies.append(pg_cluster.copy_database(pg_url))
        return copies[-1]

    try:
        # The legitimate states: before the region, after each of its transactions.
        states = [comparable(read_pg_tables(pg_url))]
        for done in range(1, len(steps) + 1):
            url = copy()
            with PostgresLocation(url).open() as store:
                for step in steps[:done]:
                    step(store)
            states.append(comparable(read_pg_tables(url)))
            pg_cluster.drop_database(copies.pop())
        assert parked(states[0]) == ["e1", "n0"]
        assert parked(states[-1]) == (["n0"] if region == "complete_cycle" else ["e1", "n0"])
        refs = {row[0] for row in states[-1]["entities"]}
        assert versioned_entity("e5").ref in refs  # not in cycle 2's pages, but in a kept scope
        reference = copy()
        recorded = Tracer()
        traced(reference, recorded, steps)
        assert comparable(read_pg_tables(reference)) == states[-1]
        assert recorded.statements.count("COMMIT") == len(steps)
        assert len(recorded.statements) > 10
        pg_cluster.drop_database(copies.pop())

        for how, raised in (("raise", Crash), ("kill", StateError)):
            for crash_at in range(1, len(recorded.statements) + 1):
                url = copy()
                with pytest.raises(raised):
                    traced(url, Tracer(crash_at=crash_at, how=how), steps)
                # the transactions whose COMMIT came before the crash, and nothing else
                committed = recorded.statements[: crash_at - 1].count("COMMIT")
                tables = read_pg_tables(url)
                assert_counts_match(tables)
                state = comparable(tables)
                assert state == states[committed], f"{how} before statement {crash_at}"
                with PostgresLocation(url).open() as store:  # the next run does the rest
                    for step in steps[committed:]:
                        step(store)
                tables = read_pg_tables(url)
                assert_counts_match(tables)
                assert comparable(tables) == states[-1], f"{how}, {crash_at}, again"
                pg_cluster.drop_database(copies.pop())
    finally:
        for url in copies:
            pg_cluster.drop_database(url)


ENGINE_CHILD = Path(__file__).with_name("engine_child.py")


def run_cycle_here(location: PostgresLocation, source: list[Entity], tmp_path: Path) -> None:
    config = replace(make_config(tmp_path), state_path=None, metrics_textfile=None)
    provider = FakeProvider(source, page_size=2)
    while True:
        result = run_once(config, location, SystemClock(), force=True, providers={"fake": provider})
        if result.providers[0].cycle_completed:
            return


def start_child(url: str, source_file: Path) -> subprocess.Popen[str]:
    """The engine looping over `source_file` in another process, past its start-up."""
    child = subprocess.Popen(
        [sys.executable, str(ENGINE_CHILD), url, str(source_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    first_line = child.stderr.readline()
    if first_line.strip() != "ready":
        child.kill()
        pytest.fail(f"engine child did not start: {first_line}{child.stderr.read()}")
    return child


def test_a_sigkilled_engine_lets_the_lock_go_and_converges_to_exactly_the_source(
    pg_url: str, tmp_path: Path
) -> None:
    """SIGKILL of a process bursting on PostgreSQL: the server ends its session, rolling back
    the page in flight and releasing the run lock; the next run takes the lock at once and
    ends the cycle with exactly the source."""
    rng = random.Random(20261201)
    location = PostgresLocation(pg_url)
    source_file = tmp_path / "source.json"
    first = {f"c{i:02d}": 1 for i in range(24)}
    second = {name: 2 if i % 5 == 0 else 1 for i, name in enumerate(first) if i % 6 != 5}
    second |= {f"new{i}": 1 for i in range(4)}
    source = [versioned_entity(name, version) for name, version in second.items()]
    run_cycle_here(location, [versioned_entity(name) for name in first], tmp_path)
    source_file.write_text(json.dumps(list(second.items())))

    states_at_kill: list[ProviderState] = []
    # At least 8 kills, and on until one lands mid-burst (on a loaded machine the child may
    # spend most of its time between bursts: connecting, migrating, completing).
    while len(states_at_kill) < 8 or (
        ProviderState.BURSTING not in states_at_kill and len(states_at_kill) < 40
    ):
        child = start_child(pg_url, source_file)
        time.sleep(rng.uniform(0.05, 0.4))
        child.kill()
        _, errors = child.communicate(timeout=10)
        assert errors == "", errors
        give_up = time.monotonic() + 10  # the server notices the closed socket at once
        while location.lock_held_elsewhere():
            assert time.monotonic() < give_up, "the run lock outlived its session"
            time.sleep(0.01)
        with location.open(readonly=True) as store:  # as `status` would, after a kill
            states_at_kill.append(store.load_provider("fake").state)
    run_cycle_here(location, source, tmp_path)

    assert ProviderState.BURSTING in states_at_kill, f"no kill landed mid-burst: {states_at_kill}"
    with location.open(readonly=True) as store:
        bodies = {ref_of(body): body for body in store.iter_entities()}
        assert store.load_provider("fake").state is ProviderState.RESTING
        assert store.active_count("fake") == len(source)
        assert store.entity_counts("fake") == {"Component": len(source)}
        changes = store.changes()
    assert_counts_match(read_pg_tables(pg_url))
    assert bodies == {entity.ref: dict(entity.body) for entity in source}
    seqs = [change.seq for change in changes]
    assert seqs == sorted(set(seqs))
    upserts = Counter(c.ref for c in changes if c.op == "upsert")
    deletes = Counter(c.ref for c in changes if c.op == "delete")
    changed = {name for name in second if second[name] != first.get(name, second[name])}
    assert upserts == {
        versioned_entity(name).ref: 2 if name in changed else 1 for name in first | second
    }
    assert deletes == {versioned_entity(name).ref: 1 for name in first.keys() - second.keys()}


def ref_of(body: dict[str, Any]) -> str:
    metadata = body["metadata"]
    return f"{body['kind'].lower()}:{metadata['namespace']}/{metadata['name']}"
