"""The state file's write mark: replaced by every write transaction, so that a kept answer of an
idle `run` (`idle_answer`) can tell that nothing was committed since it was read. That holds only
if no statement writes outside a write transaction: checked here over what writes a state."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.invocation import approve_removals, forget, refresh, reset, run_once
from choreo_ingest.store import SqliteLocation
from choreo_ingest.store.connection import Connection
from choreo_ingest.store.write_mark import read_look, state_identity, try_run_lock

from fakes import FakeClock, FakeProvider, make_config, make_entity

TEN = [make_entity(f"e{i}") for i in range(10)]
WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every statement the store's SQLite connections run, and whether a transaction was open."""
    seen: list[tuple[str, bool]] = []
    execute, executemany = Connection.execute, Connection.executemany

    def spied_execute(self: Connection, sql: str, params: Any = ()) -> Any:
        seen.append((sql, self.raw.in_transaction))
        return execute(self, sql, params)

    def spied_executemany(self: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        seen.append((sql, self.raw.in_transaction))
        executemany(self, sql, rows)

    monkeypatch.setattr(Connection, "execute", spied_execute)
    monkeypatch.setattr(Connection, "executemany", spied_executemany)
    return seen


def test_no_statement_writes_a_state_outside_a_write_transaction(
    tmp_path: Path, statements: list[tuple[str, bool]]
) -> None:
    config = make_config(tmp_path, rest_length=60.0, reject_removals_above_percentage=10.0)
    state, clock = tmp_path / "state.db", FakeClock(1_800_000_000.0)

    def run(*entities: Any) -> None:
        provider = FakeProvider(list(entities), page_size=5)
        run_once(config, state, clock, providers={"fake": provider}, rng=random.Random(0))
        clock.advance(120)

    run(*TEN)  # a first cycle (the schema made, pages committed, a sweep)
    with SqliteLocation(state).open() as store:  # events, as `event` and `serve` store them
        store.add_events("fake", [{"kind": "Component", "namespace": "a", "name": "e1"}], 0.0)
    run(*TEN)  # the events drained, a second cycle
    run(*TEN[5:])  # a sweep blocked by the guard
    approve_removals(state, "fake", clock, config=config)
    refresh(state, "fake", clock, config=config)
    reset(state, "fake", clock, purge=True, config=config)
    forget(state, "fake", clock, config=config)

    writes = [sql for sql, in_transaction in statements if WRITES.match(sql)]
    outside = [
        sql for sql, in_transaction in statements if WRITES.match(sql) and not in_transaction
    ]
    assert len(writes) > 50
    assert outside == []


def test_the_look_of_an_idle_run_at_the_state(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    run_once(make_config(tmp_path), state, FakeClock(1_800_000_000.0), providers={
        "fake": FakeProvider(TEN, page_size=5),
    })  # fmt: skip
    with SqliteLocation(state).open(readonly=True) as store:
        look = store.look()

    assert look is not None
    assert read_look(str(state)) == look
    assert read_look(str(tmp_path / "none.db")) is None
    assert read_look("state.db") is None  # not absolute
    assert state_identity(str(state)) == [state.stat().st_dev, state.stat().st_ino]
    assert state_identity(str(tmp_path)) is None  # not a regular file
    lock = try_run_lock(str(state) + ".lock")
    assert lock is not None
    try:
        assert try_run_lock(str(state) + ".lock") is None  # held
    finally:
        os.close(lock)
    assert try_run_lock(str(tmp_path / "none.lock")) is None  # only a full run makes it
