"""`Store.copy_to` (`migrate --copy-to`) holds neither a whole table nor a batch of any size:
the source is read as a stream, and a batch ends at BATCH_CHARS of text as well as BATCH_ROWS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.models import Delta
from choreo_ingest.store import PostgresLocation, Store, copy
from choreo_ingest.store.pg_connection import PgConnection

from fakes import make_entity

T0 = 1_800_000_000.0


def filled(store: Store, count: int, description_chars: int) -> None:
    store.migrate()
    entities = [make_entity(f"e{number:03}") for number in range(count)]
    for entity in entities:
        entity.body["metadata"]["description"] = "x" * description_chars
    store.apply_delta("fake", 1, Delta(upserts=entities), T0)


def test_a_batch_ends_at_batch_chars_of_text(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL takes a batch as one statement: 1,000 entities of 200 KB made one of 200 MB."""
    filled(store, 20, description_chars=2_000)
    batches: list[int] = []
    insert = copy._insert

    def counted(target: Any, table: str, columns: Any, rows: list[tuple[Any, ...]]) -> None:
        if table == "entities":
            batches.append(len(rows))
        insert(target, table, columns, rows)

    monkeypatch.setattr(copy, "BATCH_CHARS", 5_000)
    monkeypatch.setattr(copy, "_insert", counted)
    with Store.open(tmp_path / "copy.db") as target:
        target.migrate()
        report = store.copy_to(target)

        assert report.rows["entities"] == 20 == sum(batches)
        assert max(batches) <= 3  # each entity's text is over 2,000 characters
        assert sorted(target.iter_entities(), key=str) == sorted(store.iter_entities(), key=str)


def test_a_postgresql_source_is_read_through_server_side_cursors(
    pg_url: str, tmp_path: Path
) -> None:
    """Its client held a whole table's answer: 1 GB to copy 476,000 entities to a file."""
    with PostgresLocation(pg_url).open() as source, Store.open(tmp_path / "copy.db") as target:
        filled(source, 5, description_chars=100)
        target.migrate()
        connection = source._conn
        assert isinstance(connection, PgConnection)
        before = connection._streams

        source.copy_to(target)

        assert connection._streams - before == len(copy.STATE_TABLES)
