"""A PostgreSQL location that records every statement its stores run (imported by the
PostgreSQL tests once `require_psycopg` passed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from choreo_ingest.store import PostgresLocation
from choreo_ingest.store.connection import Tracer
from choreo_ingest.store.pg_connection import PgConnection


@dataclass(frozen=True)
class TracingLocation(PostgresLocation):
    """Records every statement of the store connections it opens, in `statements`, and each
    connection it opens, in `connections`."""

    statements: list[str] = field(default_factory=list, compare=False)
    connections: list[PgConnection] = field(default_factory=list, compare=False)

    def _connect(
        self, *, readonly: bool, schema: str | None = None, tracer: Tracer | None = None
    ) -> PgConnection:
        def record(statement: str, params: object) -> None:
            self.statements.append(statement)

        conn = super()._connect(readonly=readonly, schema=schema, tracer=record)
        self.connections.append(conn)
        return conn
