"""Where the state lives, and what opens and locks it there: nothing above the store takes a
file path (a PostgreSQL location joins SQLite's here)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from choreo_ingest.store.connection import Tracer
from choreo_ingest.store.run_lock import RunLock
from choreo_ingest.store.store import Store


@dataclass(frozen=True)
class SqliteLocation:
    """A state file; its run lock is `<file>.lock` beside it."""

    path: Path

    def __str__(self) -> str:
        """As shown to people (`stateFile` in `status --json`)."""
        return str(self.path)

    def exists(self) -> bool:
        """Whether any state is there yet (read-only commands say "no state yet" otherwise)."""
        return self.path.exists()

    def open(self, *, readonly: bool = False, tracer: Tracer | None = None) -> Store:
        return Store.open(self.path, readonly=readonly, tracer=tracer)

    def run_lock(self) -> RunLock:
        """The lock one burst (or migration, or operator command) holds at a time."""
        return RunLock(self.path)

    @contextmanager
    def open_locked(self) -> Iterator[Store]:
        """The store, opened for writing under the run lock (LockHeld if another holds it).

        SQLite's lock is taken first, so a run turned away never touches the file; a server's
        store would take it on the connection that then does every write, so that the lock
        and the writes end together."""
        with RunLock(self.path), Store.open(self.path) as store:
            yield store

    def lock_held_elsewhere(self) -> bool:
        return RunLock(self.path).is_held_elsewhere()

    def write_problem(self) -> str | None:
        """Why a run could not write the state here (for `check`), or None."""
        path, directory = self.path, self.path.parent
        if not directory.is_dir():
            return f"{path}: directory {directory} does not exist"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{path}: directory {directory} is not writable"
        if path.exists() and not os.access(path, os.W_OK):
            return f"{path}: not writable"
        return None


StateLocation = SqliteLocation
"""Where a state is kept; SQLite's file is the one kind so far."""


def state_location(state: StateLocation | Path | str) -> StateLocation:
    """`state` as a location: a location as it is, a path (or its text) as a state file."""
    if isinstance(state, SqliteLocation):
        return state
    return SqliteLocation(Path(state))


StateRef = StateLocation | Path
"""What the library's entry points take: a location, or a state file's path (tests, scripts)."""
