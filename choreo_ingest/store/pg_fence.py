"""Fencing the PostgreSQL run lock: a run that has lost the store to another writes no more.

The run lock on PostgreSQL is a session-level advisory lock (`PostgresLocation.open_locked`).
Through a pooler in transaction mode (PgBouncer's `pool_mode = transaction`) each transaction
goes to whichever server connection is free: the lock stays with a server connection that then
serves other clients, and as an advisory lock is re-entrant within its session, a second host's
`pg_try_advisory_lock` landing there succeeds while the first one still bursts. The advisory
lock cannot tell; a row can.

The run holding the lock claims the store once its schema is migrated (`claim`): a token of its
own written to `store_meta` (`meta.RUN_HOLDER`). Every write transaction of its connection then
first reads that row FOR SHARE (`check`) and goes on only while the token is still its own. The
claim is an upsert, which takes the row's update lock: it waits for any write transaction of a
previous holder still open (each holds the row FOR SHARE), and a holder's transaction that
starts after it reads the new token (READ COMMITTED; one waiting on the claim's row lock reads
the row again once the claim commits) and is refused before it writes anything. So a claim and
a holder's transaction never interleave: each transaction of the first run committed before the
second one claimed, or is refused whole, and the second run reads a store the first no longer
writes to. The refused run ends (StateError: exit 4, as for a lost connection); the next call
carries on from the last committed page.

A holder that takes the lock again and again (`serve`, a tick each second) keeps one token for
its life (`holder`): its claim is then a read while the row still holds that token, and it is
not released, so an idle tick writes nothing. A stale token (of a holder that stopped, or
crashed) is harmless: the next claim of any other token overwrites it.

What writes without the run lock (the event inbox, by whichever host receives an event) has no
fence and is never refused; nor are migrations, which take turns on a lock of their own
(`pg_schema.pg_migrate`), nor the idle `run`, which writes nothing and so claims nothing.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from choreo_ingest.errors import StateError
from choreo_ingest.store.meta import RUN_HOLDER

if TYPE_CHECKING:
    from choreo_ingest.store.pg_connection import PgConnection


class RunFence:
    """The claim of one holder of the run lock on its connection (`PgConnection.fence`).

    Armed by `open_locked` when the lock is taken; `claim`ed by `PgConnection.migrate`, which
    every writer under the lock calls first (the claim needs `store_meta`, which a fresh schema
    has only once migrated); checked by `PgConnection.transaction` from then on; `release`d by
    `open_locked` before it lets the lock go."""

    def __init__(self, schema: str, holder: str | None = None) -> None:
        self.schema = schema
        self.token = holder or new_holder()
        self.kept = holder is not None
        """The token is the caller's, for its every turn with the lock: never released."""
        self.claimed = False

    def claim(self, conn: PgConnection) -> None:
        """Take the store for this run: waits for a previous holder's open write transaction.
        Once only: claiming again would take the store back from a run that took it since.

        A kept token the row still holds is not written again: no other run has claimed the
        store since this holder's last turn, so none can have a write transaction open."""
        if self.claimed:
            return
        held_by = "SELECT value FROM store_meta WHERE name = ?"
        if self.kept and conn.scalar(held_by, [RUN_HOLDER]) == self.token:
            self.claimed = True
            return
        conn.execute(
            """INSERT INTO store_meta (name, value) VALUES (?, ?)
               ON CONFLICT (name) DO UPDATE SET value = excluded.value""",
            [RUN_HOLDER, self.token],
        )
        self.claimed = True

    def check(self, conn: PgConnection) -> None:
        """First thing in a write transaction (one statement): refuse it when another run has
        claimed the store since; the row stays locked FOR SHARE until the transaction ends, so
        no claim can come between this check and the commit."""
        if not self.claimed:
            return
        holder = conn.scalar("SELECT value FROM store_meta WHERE name = ? FOR SHARE", [RUN_HOLDER])
        if holder != self.token:
            raise StateError(
                f"state store {conn.display_url}: another choreo-ingest run took the run lock "
                f"of schema {self.schema!r} while this one held it (a pooler in transaction "
                "mode between choreo-ingest and PostgreSQL? see README): nothing of this "
                "transaction was written",
                path=conn.display_url,
            )

    def release(self, conn: PgConnection) -> None:
        """Remove the claim, if it is still this run's: a run that took the store since keeps
        it. Nothing depends on it (the next claim overwrites a stale token, a crashed run's
        too); it leaves no token of a finished run behind. A kept token stays (see above)."""
        if self.claimed and not self.kept:
            conn.execute(
                "DELETE FROM store_meta WHERE name = ? AND value = ?", [RUN_HOLDER, self.token]
            )
        self.claimed = False


class RunHolder:
    """One holder's every turn with the run lock (`serve`'s ticks, a second apart): on
    PostgreSQL one claim token, kept (above), and one session, kept between turns while it is
    sound (`PostgresLocation.open_locked`), so that a tick does not connect anew; `close` ends
    it. A file's lock ignores it. One turn at a time."""

    def __init__(self) -> None:
        self.token = new_holder()
        self._conn: PgConnection | None = None

    def take(self) -> PgConnection | None:
        """The session kept from the last turn, if it is still fit for one."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.reusable():
            conn.close()
            return None
        return conn

    def keep(self, conn: PgConnection) -> None:
        conn.fence = None
        self._conn = conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def new_holder() -> str:
    """A token no other holder has: a run's own, or one a `serve` keeps for all its ticks."""
    return secrets.token_hex(16)
