"""A crash at any instant leaves a page (or a cycle completion) applied fully or not at all.

Two ways to die are simulated before every statement of a region of the write path, found by
tracing a reference run:

- `commit_page`: everything between the engine asking for page 3 of cycle 2 and asking for page 4;
- `complete_cycle`: everything from asking for the last page to the end of the run (that page's
  commit, then the sweep, which also forgets the events parked before cycle 2 began).

A tracer raises a BaseException before statement N (the process unwinds and SQLite rolls back),
and the DB and its WAL are copied at that same instant (what SIGKILL or a power cut leaves).
Either way the state must be one the engine can legitimately be in: before the region, after
it, or (for `complete_cycle`) with the last page applied and the cycle not yet completed. Then a
later run (fresh Store, no tracer) must converge to exactly the source set. A subprocess test
SIGKILLs a real engine mid-burst over and over and checks the same.
"""

from __future__ import annotations

import functools
import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from store_support import Tables, assert_counts_match, read_tables, versioned_entity

from choreo_ingest.clock import SystemClock
from choreo_ingest.config import Config
from choreo_ingest.engine import BurstEngine
from choreo_ingest.invocation import run_once
from choreo_ingest.models import Entity, EntityIteratorResult, ProviderState
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.store import Store

from event_fakes import component_event
from fakes import FakeClock, FakeProvider, make_config

# Cycle 1 ingests SOURCE_1; cycle 2 sees SOURCE_2: e1 changed, e6 and e7 gone, n0 and n1 new.
SOURCE_1 = [versioned_entity(f"e{i}") for i in range(8)]
SOURCE_2 = [
    *(versioned_entity("e0"), versioned_entity("e2")),  # page 0: unchanged
    *(versioned_entity("e1", 2), versioned_entity("e3")),  # page 1: changed, unchanged
    *(versioned_entity("n0"), versioned_entity("e4")),  # page 2: new, unchanged
    *(versioned_entity("n1"), versioned_entity("e5")),  # page 3: new, unchanged
]
GIVEN_UP = versioned_entity("e7").ref
"""Removed by the traced page (as an API that gave its name up leaves), not by the sweep."""
KEPT = "e5"
"""The scope the traced page keeps (as a namespace whose listing was stepped over): its entity
and index row, which the next page writes again, so that every run converges alike."""
PAGE_SIZE = 2
REST = 60.0

# region -> (page index whose request starts counting, page index whose request stops it)
REGIONS: dict[str, tuple[int, int | None]] = {
    "commit_page": (2, 3),
    "complete_cycle": (3, None),  # to the end of the run
}
TRANSACTIONS = {"commit_page": 1, "complete_cycle": 2}
INDEX = "seen-entity"
"""The lookup-index table the providers of this scenario write, one row per entity."""
"""How many transactions each region holds: one per page, one per cycle completion."""


class Crash(BaseException):
    """The process dies here: not an Exception, so nothing in the engine handles it."""


@dataclass
class CrashingTracer:
    """Counts the statements of a region; raises Crash before statement `crash_at` of it.

    Records the state at the region's start and end and after each COMMIT inside it, and (with
    `snapshot_dir`) copies the DB files at the crash instant.
    """

    state_path: Path
    crash_at: int | None = None
    snapshot_dir: Path | None = None
    statements: list[str] = field(default_factory=list)
    before: Tables | None = None
    after: Tables | None = None
    after_commits: list[Tables] = field(default_factory=list)
    _counting: bool = False
    _commit_pending: bool = False
    _ignored_thread: int | None = None

    def start(self) -> None:
        self.before, self._counting = read_tables(self.state_path), True

    def stop(self) -> None:
        self._settle()
        if self._counting:
            self.after, self._counting = read_tables(self.state_path), False

    @contextmanager
    def not_counting_this_thread(self) -> Iterator[None]:
        self._ignored_thread = threading.get_ident()
        try:
            yield
        finally:
            self._ignored_thread = None

    def __call__(self, sql: str, params: Any) -> None:
        self._settle()
        if not self._counting or threading.get_ident() == self._ignored_thread:
            return
        self.statements.append(_label(sql))
        if len(self.statements) == self.crash_at:
            self._counting = False
            if self.snapshot_dir is not None:
                _copy_db_files(self.state_path, self.snapshot_dir)
            raise Crash(f"simulated crash before statement {self.crash_at}: {sql.split()[0]}")
        self._commit_pending = sql.strip().upper() == "COMMIT"

    def _settle(self) -> None:
        # Called before the next statement runs, so the pending COMMIT has taken effect.
        if self._commit_pending:
            self._commit_pending = False
            self.after_commits.append(read_tables(self.state_path))


def _label(sql: str) -> str:
    """`insert-entities`, `update-cycles`, `begin-immediate`: what a statement does, to what."""
    words = sql.split()
    table = re.search(r"\b(?:INTO|FROM|UPDATE)\s+(\w+)", sql, re.IGNORECASE)
    return f"{words[0]}-{table.group(1) if table else '-'.join(words[1:2])}".lower().rstrip("-")


def _copy_db_files(state_path: Path, directory: Path) -> None:
    # The -shm file is left behind on purpose: SQLite rebuilds it from the WAL on open.
    directory.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        source = state_path.with_name(state_path.name + suffix)
        if source.exists():
            shutil.copyfile(source, directory / source.name)


@dataclass
class RegionProvider(FakeProvider):
    """A FakeProvider that starts and stops the tracer's region as pages are requested.

    The engine commits page N on its writer thread while page N+1 is requested; a queue read
    waits for the pages in flight, so the region starts and stops between whole transactions.
    """

    tracer: CrashingTracer | None = None
    start_on_page: int = -1
    stop_on_page: int | None = None

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        page_index = 0 if cursor is None else cursor["offset"] // self.page_size
        if self.tracer is not None:
            with self.tracer.not_counting_this_thread():
                context.queues.read("seen", after=len(self.entities), limit=1)
        if self.tracer is not None and page_index == self.stop_on_page:
            self.tracer.stop()
        if self.tracer is not None and page_index == self.start_on_page:
            self.tracer.start()
        return super().next(context, cursor)


def scenario_config(directory: Path) -> Config:
    return make_config(directory, rest_length=REST)


def run_cycle_two_traced(directory: Path, region: str, tracer: CrashingTracer) -> None:
    """Cycle 1 through `run_once`; cycle 2 through the engine on a traced store."""
    config, clock, state_path = scenario_config(directory), FakeClock(), directory / "state.db"
    first = FakeProvider(SOURCE_1, PAGE_SIZE, index_table=INDEX)
    run_once(config, state_path, clock, providers={"fake": first})
    park_events(state_path, clock)
    clock.advance(REST)
    start, stop = REGIONS[region]
    provider = RegionProvider(
        SOURCE_2,
        PAGE_SIZE,
        index_table=INDEX,
        removals={2: [GIVEN_UP]},
        kept={2: [KEPT]},
        tracer=tracer,
        start_on_page=start,
        stop_on_page=stop,
    )
    with Store.open(state_path, tracer=tracer) as store:
        outcome = BurstEngine(config, store, clock, rng=random.Random(0)).run_provider(provider)
    assert outcome.cycle_completed, "the reference run must complete cycle 2 in one burst"
    tracer.stop()


PARKED = ("e1", "e6")
"""Objects whose events are parked between cycles 1 and 2: cycle 2's completion forgets them."""


def park_events(state_path: Path, clock: FakeClock) -> None:
    """Events whose re-read failed until they were parked, received before cycle 2 begins."""
    with Store.open(state_path) as store:
        bodies = [component_event(name, "updated") for name in PARKED]
        for seq in store.add_events("fake", bodies, clock.now()):
            assert store.fail_event("fake", seq, "API down", max_attempts=1)


@dataclass(frozen=True)
class Reference:
    statements: tuple[str, ...]
    before: Tables
    after: Tables
    after_commits: list[Tables]

    @property
    def legitimate_states(self) -> list[Tables]:
        """Before, after, and (complete_cycle) the last page applied with the cycle still open."""
        return [self.before, self.after, *self.after_commits[:1]]


@functools.cache
def reference(region: str) -> Reference:
    """The statements of `region` in an uncrashed run, and the states it passes through."""
    # capture_logs: this also runs at collection time, where nothing captures the output
    with tempfile.TemporaryDirectory() as directory, structlog.testing.capture_logs():
        tracer = CrashingTracer(Path(directory) / "state.db")
        run_cycle_two_traced(Path(directory), region, tracer)
    assert tracer.before is not None
    assert tracer.after is not None
    return Reference(tuple(tracer.statements), tracer.before, tracer.after, tracer.after_commits)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "crash_point" not in metafunc.fixturenames:
        return
    points, ids = [], []
    for region in REGIONS:
        for number, label in enumerate(reference(region).statements, start=1):
            points.append((region, number))
            ids.append(f"{region}-{number:02d}-{label}")
    metafunc.parametrize("crash_point", points, ids=ids)


def converge(state_path: Path, clock: FakeClock) -> None:
    """Run as cron would until cycle 2 completes (a crashed burst resumes at once)."""
    provider = FakeProvider(SOURCE_2, PAGE_SIZE, index_table=INDEX)
    config = scenario_config(state_path.parent)
    for _ in range(3):
        result = run_once(config, state_path, clock, providers={"fake": provider})
        if result.providers[0].cycle_completed:
            return
        clock.advance(3600.0)
    pytest.fail("the resumed cycle never completed")


def entity_ref_of(body: dict[str, Any]) -> str:
    return f"{body['kind'].lower()}:{body['metadata']['namespace']}/{body['metadata']['name']}"


def assert_holds_exactly(state_path: Path, source: list[Entity]) -> None:
    with Store.open(state_path, readonly=True) as store:
        bodies = {entity_ref_of(body): body for body in store.iter_entities()}
        seqs = [change.seq for change in store.changes()]
        assert store.load_provider("fake").state is ProviderState.RESTING
    assert bodies == {entity.ref: dict(entity.body) for entity in source}
    tables = read_tables(state_path)
    refs = tables["openchoreo_incremental_entity_refs"]
    assert sorted(row[1] for row in refs) == sorted(entity.ref for entity in source)
    assert seqs == sorted(set(seqs))
    assert_counts_match(tables)
    assert tables["ref_counts"] == [("fake", len(source))]


def assert_cycle_two_converged(state_path: Path) -> None:
    assert_holds_exactly(state_path, SOURCE_2)
    with Store.open(state_path, readonly=True) as store:
        changes = store.changes()
        cycle = store.last_cycle("fake")
        counters = store.counters("fake")
    upserts = Counter(c.ref for c in changes if c.op == "upsert")
    deletes = Counter(c.ref for c in changes if c.op == "delete")
    assert upserts == {
        **{entity.ref: 1 for entity in SOURCE_1 + SOURCE_2},
        versioned_entity("e1").ref: 2,  # once new, once changed; never again
    }
    assert deletes == {versioned_entity("e6").ref: 1, versioned_entity("e7").ref: 1}
    assert cycle is not None
    assert (cycle.cycle_id, cycle.upserted, cycle.unchanged, cycle.removed, cycle.outcome) == (
        2,
        3,
        5,
        2,
        "completed",
    )
    assert counters["entities_upserted"] == 8 + 3
    assert counters["entities_removed"] == 2
    assert counters["cycles_completed"] == 2
    index = read_tables(state_path)["provider_index"]
    assert sorted(row[2] for row in index) == sorted(entity.name for entity in SOURCE_2)
    assert {row[5] for row in index} == {2}, "rows of cycle 1 only are pruned by cycle 2"
    assert read_tables(state_path)["event_inbox"] == [], "parked before cycle 2, kept after it"
    facts = read_tables(state_path)["provider_facts"]
    # "4": a resumed burst asks for the empty page after the last one to learn it is done
    assert [(row[1], row[2]) for row in facts] in ([("lastPage", "3")], [("lastPage", "4")])


class TestTracedCrash:
    @pytest.mark.parametrize("region", REGIONS)
    def test_region_is_whole_transactions(self, region: str) -> None:
        ref = reference(region)
        begins = [i for i, s in enumerate(ref.statements) if s == "begin-immediate"]
        commits = [i for i, s in enumerate(ref.statements) if s == "commit"]
        assert len(begins) == len(commits) == TRANSACTIONS[region]
        assert begins[0] == 0
        assert commits[-1] == len(ref.statements) - 1
        assert len(ref.after_commits) == TRANSACTIONS[region]
        assert ref.before != ref.after

    def test_page_write_path_covers_entities_refs_queue_cursor_counters(self) -> None:
        statements = " ".join(reference("commit_page").statements)
        for table in (
            "entities",
            "changes",
            "openchoreo_incremental_entity_refs",
            "queue_items",
            "openchoreo_incremental_ingestion_state",
            "cycles",
            "counters",
            "provider_index",
            "provider_facts",
        ):
            assert table in statements
        for removal in ("delete-entities", "delete-openchoreo_incremental_entity_refs"):
            assert removal in statements  # the page's removal of GIVEN_UP
        for kept in ("update-openchoreo_incremental_entity_refs", "update-provider_index"):
            assert kept in statements  # the page's kept scope

    def test_cycle_completion_prunes_the_lookup_index(self) -> None:
        statements = reference("complete_cycle").statements

        assert "delete-provider_index" in statements

    def test_cycle_completion_forgets_the_parked_events_in_its_transaction(self) -> None:
        ref = reference("complete_cycle")
        statements = ref.statements

        completion = max(i for i, s in enumerate(statements) if s == "begin-immediate")
        forget = statements.index("delete-event_inbox")
        assert completion < forget < len(statements) - 1 == statements.index("commit", completion)
        assert "update-cycles" in statements[completion:forget]
        assert len(ref.before["event_inbox"]) == len(PARKED)
        assert ref.after_commits[0]["event_inbox"] == ref.before["event_inbox"]
        assert ref.after["event_inbox"] == []

    def test_crash_leaves_operation_whole_and_next_run_converges(
        self, tmp_path: Path, crash_point: tuple[str, int]
    ) -> None:
        region, crash_at = crash_point
        ref = reference(region)
        state_path, killed_dir = tmp_path / "state.db", tmp_path / "killed"
        tracer = CrashingTracer(state_path, crash_at=crash_at, snapshot_dir=killed_dir)

        with pytest.raises(Crash):
            run_cycle_two_traced(tmp_path, region, tracer)

        assert tuple(tracer.statements) == ref.statements[:crash_at]
        unwound = read_tables(state_path)
        assert unwound in ref.legitimate_states, "half an operation survived the rollback"
        assert_counts_match(unwound)
        killed_path = killed_dir / "state.db"
        killed = read_tables(killed_path)
        assert killed in ref.legitimate_states, "half an operation survived"
        assert_counts_match(killed)

        converge(state_path, FakeClock(start=1_800_010_000.0))
        assert_cycle_two_converged(state_path)
        converge(killed_path, FakeClock(start=1_800_010_000.0))
        assert_cycle_two_converged(killed_path)


ENGINE_CHILD = Path(__file__).with_name("engine_child.py")


def start_child(state_path: Path, source_file: Path) -> subprocess.Popen[str]:
    """The engine looping over `source_file` in another process, past its start-up."""
    child = subprocess.Popen(
        [sys.executable, str(ENGINE_CHILD), str(state_path), str(source_file)],
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


def run_cycle_here(state_path: Path, source: list[Entity]) -> None:
    config = replace(make_config(state_path.parent), metrics_textfile=None)
    provider = FakeProvider(source, page_size=PAGE_SIZE)
    while True:
        result = run_once(
            config, state_path, SystemClock(), force=True, providers={"fake": provider}
        )
        if result.providers[0].cycle_completed:
            return


@pytest.mark.slow
def test_sigkilled_engine_converges_to_exactly_the_source(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    state_path, source_file = tmp_path / "state.db", tmp_path / "source.json"
    first = {f"c{i:02d}": 1 for i in range(24)}
    second = {name: 2 if i % 5 == 0 else 1 for i, name in enumerate(first) if i % 6 != 5}
    second |= {f"new{i}": 1 for i in range(4)}
    source = [versioned_entity(name, version) for name, version in second.items()]
    run_cycle_here(state_path, [versioned_entity(name) for name in first])
    source_file.write_text(json.dumps(list(second.items())))

    states_at_kill = []
    for _ in range(10):
        child = start_child(state_path, source_file)
        time.sleep(rng.uniform(0.005, 0.1))
        child.kill()
        _, errors = child.communicate(timeout=10)
        assert errors == "", errors
        with Store.open(state_path, readonly=True) as store:  # as `status` would, after a kill
            states_at_kill.append(store.load_provider("fake").state)
    run_cycle_here(state_path, source)

    assert ProviderState.BURSTING in states_at_kill, f"no kill landed mid-burst: {states_at_kill}"
    assert_holds_exactly(state_path, source)
    with Store.open(state_path, readonly=True) as store:
        changes = store.changes()
    upserts = Counter(c.ref for c in changes if c.op == "upsert")
    deletes = Counter(c.ref for c in changes if c.op == "delete")
    changed = {name for name in second if second[name] != first.get(name, second[name])}
    assert upserts == {
        versioned_entity(name).ref: 2 if name in changed else 1 for name in first | second
    }
    assert deletes == {versioned_entity(name).ref: 1 for name in first.keys() - second.keys()}
    with closing(sqlite3.connect(state_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
