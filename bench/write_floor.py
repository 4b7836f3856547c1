"""What storing a cycle's entities costs by itself: a lower bound on any cycle that keeps them.

    python bench/write_floor.py STATE.db --per-page N [--json]

Reads the entities a finished cycle left in STATE.db and writes them again into a fresh state
file of the current schema, a transaction per N entities (a page's worth), measuring the CPU of
this thread (`time.thread_time`) for each of:

- `rows`: the three rows a seen entity takes (the entity with its stored text and hash, its ref
  for the sweep, its change-log row), with the store's own statements, count triggers and
  pragmas, from rows prepared beforehand: no mapping, no JSON, no hashing;
- `entities`: the store's own entity write (`entity_rows.upsert_entities`: canonical JSON, hashes,
  the lookup of existing hashes and the same three rows) from decoded entities;
- `sql`: the same three rows written by SQLite itself, one `INSERT ... SELECT ... FROM
  json_each(?)` a table, from the page's entities as one JSON text (as a design that mapped in
  SQL would hand it over): no Python per row, no hash, no look-up.

Neither includes the requests, the mapping, the workload index, the cursor and counters a page
also commits, or the interpreter's start-up. Benchmark 9 (bench/lean.py) sets these against the
CPU a target ratio leaves beyond the floor walk: `(target - 1) x floor CPU`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from choreo_ingest.models import Entity
from choreo_ingest.store import entity_rows
from choreo_ingest.store.connection import Connection, canonical_json

PROVIDER = "openchoreo"
NOW = 1.0e9


@dataclass(frozen=True)
class WriteFloor:
    entities: int
    transactions: int
    rows_cpu: float
    entities_cpu: float
    sql_cpu: float


def stored_entities(state: Path) -> list[Entity]:
    with closing(sqlite3.connect(f"{state.resolve().as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT kind, namespace, name, scope, body FROM entities ORDER BY rowid")
        return [
            Entity(kind=kind, namespace=namespace, name=name, body=json.loads(body), scope=scope)
            for kind, namespace, name, scope, body in rows
        ]


def fresh_store(directory: Path, name: str) -> Connection:
    conn = Connection(directory / name, readonly=False)
    conn.migrate()
    return conn


def time_rows(conn: Connection, pages: list[list[Entity]]) -> float:
    prepared = [
        [
            (
                entity.ref,
                entity.kind,
                entity.namespace,
                entity.name,
                entity.scope,
                text := canonical_json(entity.body),
                hashlib.sha256(text.encode()).hexdigest()[:32],
                PROVIDER,
                NOW,
            )
            for entity in page
        ]
        for page in pages
    ]
    marks = entity_rows._ENTITY_MARKS
    entity_sql = f"{entity_rows._ENTITIES_INSERT} VALUES ({marks}) {entity_rows._ENTITIES_CONFLICT}"
    ref_sql = f"{entity_rows._REFS_INSERT} VALUES (?, ?, ?, ?, ?, ?) {entity_rows._REFS_CONFLICT}"
    change_sql = "INSERT INTO changes (at, op, ref, provider) VALUES (?, 'upsert', ?, ?)"
    began = time.thread_time()
    for rows in prepared:
        with conn.transaction():
            conn.executemany(entity_sql, rows)
            conn.executemany(ref_sql, [(PROVIDER, row[0], 1, 1, NOW, NOW) for row in rows])
            conn.executemany(change_sql, [(NOW, row[0], PROVIDER) for row in rows])
    return time.thread_time() - began


def time_entities(conn: Connection, pages: list[list[Entity]]) -> float:
    began = time.thread_time()
    for page in pages:
        with conn.transaction():
            entity_rows.upsert_entities(conn, PROVIDER, 1, page, NOW)
    return time.thread_time() - began


def time_sql(conn: Connection, pages: list[list[Entity]]) -> float:
    texts = [
        json.dumps([[e.ref, e.kind, e.namespace, e.name, e.scope, e.body] for e in page])
        for page in pages
    ]
    entity_sql = f"""{entity_rows._ENTITIES_INSERT} SELECT value->>0, value->>1, value->>2,
        value->>3, value->>4, value->'$[5]', '', '{PROVIDER}', ? FROM json_each(?) WHERE true
        {entity_rows._ENTITIES_CONFLICT}"""
    ref_sql = f"""{entity_rows._REFS_INSERT} SELECT '{PROVIDER}', value->>0, 1, 1, ?, ?
        FROM json_each(?) WHERE true {entity_rows._REFS_CONFLICT}"""
    change_sql = f"""INSERT INTO changes (at, op, ref, provider)
        SELECT ?, 'upsert', value->>0, '{PROVIDER}' FROM json_each(?)"""
    began = time.thread_time()
    for text in texts:
        with conn.transaction():
            conn.execute(entity_sql, (NOW, text))
            conn.execute(ref_sql, (NOW, NOW, text))
            conn.execute(change_sql, (NOW, text))
    return time.thread_time() - began


def measure(state: Path, per_page: int) -> WriteFloor:
    entities = stored_entities(state)
    pages = [entities[start : start + per_page] for start in range(0, len(entities), per_page)]
    with tempfile.TemporaryDirectory(prefix="write-floor-") as scratch:
        directory = Path(scratch)
        conns = [fresh_store(directory, f"{name}.db") for name in ("rows", "entities", "sql")]
        try:
            rows_cpu = time_rows(conns[0], pages)
            entities_cpu = time_entities(conns[1], pages)
            sql_cpu = time_sql(conns[2], pages)
            for conn in conns:
                held = conn.scalar("SELECT count(*) FROM entities")
                if held != len(entities):
                    raise RuntimeError(f"{conn.path.name} holds {held} of {len(entities)} entities")
        finally:
            for conn in conns:
                conn.close()
    return WriteFloor(len(entities), len(pages), rows_cpu, entities_cpu, sql_cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("state", type=Path, help="a state file holding a finished cycle")
    parser.add_argument("--per-page", type=int, default=75, help="entities per transaction")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    floor = measure(args.state, max(1, args.per_page))
    if args.json:
        print(json.dumps(asdict(floor)))
    else:
        print(
            f"{floor.entities:,} entities in {floor.transactions:,} transactions: "
            f"rows {floor.rows_cpu:.3f} s ({floor.rows_cpu / floor.entities * 1e6:.1f} us each), "
            f"entities {floor.entities_cpu:.3f} s "
            f"({floor.entities_cpu / floor.entities * 1e6:.1f} us each), "
            f"in SQL {floor.sql_cpu:.3f} s ({floor.sql_cpu / floor.entities * 1e6:.1f} us each)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
