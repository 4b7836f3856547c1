"""A page commit runs the same SQL texts whatever its size, so the connection's statement cache
(and the memory it holds) stops growing after the first page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from choreo_ingest.models import EntityIteratorResult, ProviderState
from choreo_ingest.store import Store

from fakes import make_entity

T0 = 1_800_000_000.0


def test_pages_of_every_size_run_the_same_statements(state_path: Path) -> None:
    statements: set[str] = set()

    def trace(sql: str, params: Any) -> None:
        statements.add(" ".join(sql.split()))

    with Store.open(state_path, tracer=trace) as store:
        store.migrate()
        record = store.load_provider("fake")
        record.cycle_id, record.state = 1, ProviderState.BURSTING
        store.start_cycle(record, T0)
        names = iter(range(10_000))

        def commit(size: int) -> None:
            entities = [make_entity(f"e{next(names)}") for _ in range(size)]
            page = EntityIteratorResult(done=False, entities=entities, cursor={"n": size})
            store.commit_page("fake", 1, page, f'{{"n":{size}}}', T0)

        commit(1)
        after_first_page = set(statements)
        for size in range(2, 120):
            commit(size)

    assert statements == after_first_page
