"""The events a provider's sweep follower names are queued in the cycle's completion, with the
pruning that made them: a crash before any statement of it leaves both or neither, and the
completion run again after the crash queues them once."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from store_support import read_tables

from choreo_ingest.models import (
    JSON,
    EntityIteratorResult,
    IndexEntry,
    IndexGroups,
    ProviderState,
)
from choreo_ingest.store import Store, SweepGuards

from fakes import make_entity

T0 = 1_800_000_000.0
GUARDS = SweepGuards(reject_empty_source_collections=False, reject_removals_above_percentage=None)
TABLE = "claims"


class Crash(BaseException):
    """The process dies here: nothing in the store handles it."""


class FreedNames:
    """A follower as OpenChoreo's: an event about each claimant still current in a group whose
    pruned row held the name."""

    tables: Sequence[str] = (TABLE,)
    waiting = '"holds":false'

    def events(self, pruned: Sequence[IndexEntry], current: IndexGroups) -> list[JSON]:
        freed = sorted({row.group for row in pruned if row.value["holds"]})
        return [
            {"kind": "Component", "name": row.key, "action": "created"}
            for rows in current(TABLE, freed).values()
            for row in rows
            if not row.value["holds"]
        ]


class CrashBefore:
    """A tracer that records statements once `armed`, and raises Crash before statement `at`."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.armed, self.statements = at, False, list[str]()

    def __call__(self, sql: str, params: Any) -> None:
        if not self.armed:
            return
        self.statements.append(" ".join(sql.split()))
        if len(self.statements) == self.at:
            raise Crash(sql)


def _page(done: bool, *rows: IndexEntry) -> EntityIteratorResult:
    return EntityIteratorResult(done, [make_entity("e")], index=rows)


def _two_cycles_walked(path: Path, tracer: CrashBefore) -> int:
    """Cycle 1 writes `holder`, which holds group `g`; cycle 2 writes only `waiting`, and its
    completion (traced) prunes `holder`."""
    with Store.open(path, tracer=tracer) as store:
        store.migrate()
        record = store.load_provider("fake")
        for cycle, rows in (
            (1, [IndexEntry(TABLE, "holder", "g", {"holds": True})]),
            (2, [IndexEntry(TABLE, "waiting", "g", {"holds": False})]),
        ):
            record.cycle_id, record.state = cycle, ProviderState.BURSTING
            store.start_cycle(record, T0)
            store.commit_page("fake", cycle, _page(True, *rows), None, T0)
            record.state = ProviderState.RESTING
            if cycle == 2:
                tracer.armed = True
            sweep = store.complete_cycle(record, GUARDS, T0, FreedNames())
    return sweep.queued


def _completion_statements(directory: Path) -> list[str]:
    tracer = CrashBefore()
    _two_cycles_walked(directory / "reference.db", tracer)
    return tracer.statements


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`crash_at`: each statement of the completion of a reference run."""
    if "crash_at" in metafunc.fixturenames:
        with tempfile.TemporaryDirectory() as directory, structlog.testing.capture_logs():
            statements = _completion_statements(Path(directory))
        metafunc.parametrize("crash_at", range(1, len(statements) + 1))


def _state(path: Path) -> tuple[list[str], list[str], str | None]:
    """The index keys, the queued events' names, and cycle 2's outcome."""
    tables = read_tables(path)
    keys = sorted(row[2] for row in tables["provider_index"])
    with Store.open(path, readonly=True) as store:
        names = [item.body["name"] for item in store.pending_events("fake")]
        cycle = store.last_cycle("fake")
    return keys, names, None if cycle is None else cycle.outcome


def test_the_sweep_queues_an_event_about_the_claimant_a_pruned_holder_kept_waiting(
    tmp_path: Path,
) -> None:
    queued = _two_cycles_walked(tmp_path / "state.db", CrashBefore())

    assert _state(tmp_path / "state.db") == (["waiting"], ["waiting"], "completed")
    assert queued == 1


def test_a_sweep_that_prunes_nothing_it_follows_reads_the_index_once(tmp_path: Path) -> None:
    """A steady cycle (the holder written again): its completion asks for the rows it is to
    prune, gets none, and reads nothing more of the index."""
    path, tracer = tmp_path / "state.db", CrashBefore()
    with Store.open(path, tracer=tracer) as store:
        store.migrate()
        record = store.load_provider("fake")
        for cycle in (1, 2):
            record.cycle_id, record.state = cycle, ProviderState.BURSTING
            store.start_cycle(record, T0)
            row = IndexEntry(TABLE, "holder", "g", {"holds": True})
            store.commit_page("fake", cycle, _page(True, row), None, T0)
            record.state = ProviderState.RESTING
            tracer.armed = cycle == 2
            queued = store.complete_cycle(record, GUARDS, T0, FreedNames()).queued

    assert _state(path) == (["holder"], [], "completed")
    assert queued == 0
    index_reads = [s for s in tracer.statements if s.startswith("SELECT") and "provider_index" in s]
    assert len(index_reads) == 1
    assert not any(s.startswith("INSERT INTO event_inbox") for s in tracer.statements)


def test_a_crash_in_the_completion_leaves_the_pruning_and_its_events_both_or_neither(
    tmp_path: Path, crash_at: int
) -> None:
    path = tmp_path / "state.db"

    with pytest.raises(Crash):
        _two_cycles_walked(path, CrashBefore(crash_at))

    assert _state(path) in (
        (["holder", "waiting"], [], "walked"),  # rolled back: the next run completes it
        (["waiting"], ["waiting"], "completed"),
    )
    with Store.open(path) as store:
        record = store.load_provider("fake")
        if store.last_cycle("fake").outcome == "walked":  # type: ignore[union-attr]
            record.cycle_id, record.state = 2, ProviderState.RESTING
            store.complete_cycle(record, GUARDS, T0, FreedNames())
    assert _state(path) == (["waiting"], ["waiting"], "completed")


class Shown(FreedNames):
    """FreedNames, keeping the pruned rows the sweep showed it."""

    def __init__(self) -> None:
        self.pruned: list[str] = []

    def events(self, pruned: Sequence[IndexEntry], current: IndexGroups) -> list[JSON]:
        self.pruned += [row.key for row in pruned]
        return super().events(pruned, current)


def test_a_sweep_shows_its_follower_the_pruned_rows_of_the_groups_where_a_row_waits_only(
    tmp_path: Path,
) -> None:
    """A large sweep prunes claims by the thousand, nearly all of names no one waits on: it
    reads (and decodes) only those of the groups where a claim the cycle wrote waits."""
    follower = Shown()
    with Store.open(tmp_path / "state.db") as store:
        store.migrate()
        record = store.load_provider("fake")
        for cycle, rows in (
            (1, [IndexEntry(TABLE, f"holder-{g}", g, {"holds": True}) for g in ("g", "h", "k")]),
            (2, [IndexEntry(TABLE, "waiting", "g", {"holds": False}),
                 IndexEntry(TABLE, "holder-k", "k", {"holds": True})]),
        ):  # fmt: skip
            record.cycle_id, record.state = cycle, ProviderState.BURSTING
            store.start_cycle(record, T0)
            store.commit_page("fake", cycle, _page(True, *rows), None, T0)
            record.state = ProviderState.RESTING
            store.complete_cycle(record, GUARDS, T0, follower)

    assert follower.pruned == ["holder-g"]
    assert _state(tmp_path / "state.db") == (["holder-k", "waiting"], ["waiting"], "completed")
