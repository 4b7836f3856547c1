"""PostgreSQL sessions kept between the uses of one process (`serve`: its HTTP routes' reads,
the status page, `/health`, `/metrics`, the change feed; and the event posts' inbox writes), so
that a request does not connect anew: a connection each, with its TLS handshake and
authentication, and a line each in the server's log where connections are logged.

A location has two sets (`keeping_sessions`): read-only sessions for `open(readonly=True)` and
writing ones for `open()`. Either takes a kept session of its kind, checks it as a new one is
checked (one the server has ended since fails its check, and a new one is opened in its place),
and the store's `close()` hands it back: kept while it is sound (open, no transaction left open,
no statement failed on it: a primary demoted to a standby refuses every write of its sessions)
and fewer than `most` are kept, else closed; a session a statement failed on ends the idle ones
of its kind with it. The run lock's session is never one of them (`RunHolder`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from choreo_ingest.store.pg_connection import PgConnection

MOST_KEPT = 4
"""Idle sessions of a kind kept at most: the routes' reads and the inbox writes are short, a few
run at once."""


class KeptSessions:
    """Idle sessions of one kind (read-only, or writing) of one location, for any thread;
    `close` ends them (and any handed back after)."""

    def __init__(self, most: int = MOST_KEPT) -> None:
        self.most = most
        self._idle: list[PgConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> PgConnection | None:
        """A kept session that is still fit for use, or None."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if conn.reusable():
                return conn
            conn.close()

    def keep(self, conn: PgConnection) -> bool:
        """Keep `conn` for a later use; False (the caller closes it) when it is not sound, or
        enough are kept, or the sessions are closed. A statement failed on `conn`: the idle ones
        are ended too, as they are sessions to the same server (a primary demoted to a standby
        refuses the writes of each: one refused post each, where a new session reaches the new
        primary; a restart ended them all). A new session costs a connection, a refused post an
        event."""
        if not conn.reusable():
            if conn.failed:
                self._end_idle()
            return False
        with self._lock:
            if self._closed or len(self._idle) >= self.most:
                return False
            self._idle.append(conn)
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._end_idle()

    def _end_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)
