"""State stores that cannot be read, each made in `directory`: a PostgreSQL server that is down,
a file that is not a state, one of mode 000, one in a directory others may not search (the last
two read as `nobody`: root reads anything)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from ports import free_port

from choreo_ingest.simulator.world import World
from choreo_ingest.store import PostgresLocation, StateLocation

from fakes import FakeClock
from sim_support import ingest_world

PASSWORD = "pg-password-for-tests"
"""The password in `postgresql_down`'s URL, which no answer may show."""


def ingested(path: Path, clock: FakeClock) -> Path:
    """A state file at `path` holding one small completed cycle."""
    ingest_world(path, World.generate(1, 1, 2, seed=4), clock)
    return path


def as_schema_6_left_it(path: Path) -> Path:
    """The state file at `path` taken back to schema version 6, as the releases before
    migration 0007 left it (its indexes dropped, its row gone): an older release's state."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP INDEX event_inbox_by_name")
        conn.execute("DROP INDEX event_inbox_waiting")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0007_inbox_by_name'")
        conn.execute("PRAGMA user_version = 6")
    return path


def postgresql_down(directory: Path, clock: FakeClock) -> StateLocation:
    """A PostgreSQL store on a port nothing listens on; its URL holds a password."""
    port = free_port()
    return PostgresLocation(
        f"postgresql://choreo:{PASSWORD}@127.0.0.1:{port}/choreo?connect_timeout=5"
    )


def garbage(directory: Path, clock: FakeClock) -> Path:
    path = directory / "state.db"
    path.write_bytes(bytes(range(256)) * 32)
    return path


def unreadable(directory: Path, clock: FakeClock) -> Path:
    """A state file of mode 000 (read as `nobody`)."""
    path = ingested(directory / "state.db", clock)
    path.chmod(0o000)
    for end in ("-wal", "-shm"):
        Path(f"{path}{end}").unlink(missing_ok=True)
    return path


def unsearchable(directory: Path, clock: FakeClock) -> Path:
    """A state file in a directory `nobody` may not look into (read as `nobody`)."""
    private = directory / "private"
    private.mkdir(mode=0o700)
    return ingested(private / "state.db", clock)


AS_NOBODY = (unreadable, unsearchable)
"""The stores only `nobody` fails to read."""
