"""The state file's write mark: a random value every write transaction replaces; and the look
of a state that an answer kept from reading it is checked against.

An answer kept from reading the state (`idle_answer`: what a `run` with nothing due does until
when) holds for as long as the state is what it read. Every write transaction of a state file
(`Connection.transaction`) first gives the mark a new random value, in the same transaction, so
an equal mark means nothing was committed since it was read: by a burst, an event stored, a
`refresh`, a `reset`, whichever process. A migration changes `PRAGMA user_version`, which is
read with it. A copy (`copy-to`) never carries a mark over (`copy.STATE_ROWS`): the target's is
its own.

`read_look`, `state_identity` and `try_run_lock` are how a kept answer of a `run` with nothing
due (`idle_answer`) looks at the state before anything else is imported: with `sqlite3` and
`fcntl` alone (importing this module does not import the rest of the store).
"""

from __future__ import annotations

import fcntl
import marshal
import os
import sqlite3
import stat

from choreo_ingest.cache_files import new_digest

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy: True)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from choreo_ingest.store.dialect import AnyConnection

WRITE_MARK = "write_mark"
MARK_WRITE = (
    f"INSERT INTO store_meta (name, value) VALUES ('{WRITE_MARK}', hex(randomblob(16))) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
"""The first statement of every write transaction of a state file that has a `store_meta`."""
HAS_MARK_TABLE = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'"
_MARK = (
    "SELECT (SELECT value FROM store_meta WHERE name = ?), "
    "(SELECT user_version FROM pragma_user_version)"
)
DECISION_ROWS = (
    "SELECT * FROM openchoreo_incremental_ingestion_state ORDER BY provider",
    "SELECT * FROM provider_facts ORDER BY provider, name",
    "SELECT max(seq) FROM event_inbox",
)
"""What a decision reads first, read again with the mark: the providers' records and facts (a
refresh, a burst, a hold), and the newest event stored. A writer that does not replace the mark
(an earlier release's `serve` or `event`, still running after an upgrade) is seen in them, and
a damaged page among them is met here, as the full run would meet it."""

Look = tuple[str, int, bytes]
"""The mark, the schema version and a digest of `DECISION_ROWS`."""


def current_look(conn: AnyConnection) -> Look | None:
    """The look as `conn` reads it now, in one read; None on PostgreSQL (whose transactions
    keep no mark), or where no write has made a mark yet."""
    if conn.dialect != "sqlite":
        return None
    with conn.snapshot():
        return _look(conn.execute)


def read_look(path: str) -> Look | None:
    """The look of the state file at `path` (absolute, symlinks resolved), read on a read-only
    connection (which, unlike a writer's, never checkpoints or removes the WAL when it closes);
    None where there is none, or anything is in the way (the caller then reads the state as it
    always does, and says what is wrong)."""
    if any(character in path for character in "?#%") or not path.startswith("/"):
        return None  # as a URI it would need quoting: not worth the imports here
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        connection.execute("BEGIN")
        return _look(connection.execute)
    except sqlite3.Error:
        return None
    finally:
        connection.close()


def _look(execute: Callable[..., Any]) -> Look | None:
    mark, version = execute(_MARK, [WRITE_MARK]).fetchone()
    if not isinstance(mark, str) or not isinstance(version, int):
        return None
    digest = new_digest()
    for statement in DECISION_ROWS:
        digest.update(marshal.dumps(execute(statement).fetchall()))
    return mark, version, digest.digest()


def state_identity(path: str) -> list[int] | None:
    """The device and inode of the regular file at `path` (None: not one), so that a state file
    replaced by another (a backup moved over it) is not taken for the one read before."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):  # a FIFO's open would block
        return None
    return [info.st_dev, info.st_ino]


def try_run_lock(path: str) -> int | None:
    """The run lock taken as `RunLock.acquire` takes it (a non-blocking flock on the lock file
    that `path` still names), as the descriptor to close to release it; None if another holds
    it, or it is not there (only a full run makes it), or anything else is in the way."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, named = os.fstat(fd), os.stat(path)
    except OSError:
        os.close(fd)
        return None
    if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
        os.close(fd)  # removed or replaced between the open and the flock
        return None
    return fd
