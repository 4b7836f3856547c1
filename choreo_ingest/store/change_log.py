"""How much of the change log is kept: pruning its oldest rows, and the bounds consumers read.

Pruning only ever removes a prefix of the log: every change at or below `changes_pruned_through`
is gone, every change after it is kept.
"""

from __future__ import annotations

from choreo_ingest.store.dialect import AnyConnection, is_postgres
from choreo_ingest.store.meta import PRUNED_THROUGH, raise_pruned_through

_NEWEST_SEQ = """max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0),
                    coalesce((SELECT max(seq) FROM changes), 0))"""
"""The last seq ever given to a change (the AUTOINCREMENT's counter): pruned rows count too."""
_PG_NEWEST_SEQ = f"""greatest(coalesce((SELECT max(seq) FROM changes), 0),
    (SELECT CAST(value AS BIGINT) FROM store_meta WHERE name = '{PRUNED_THROUGH}'))"""
"""The same on PostgreSQL, whose identity sequence also counts seqs of rolled-back changes:
the newest change kept, else the last one pruned (pruning never goes past the newest)."""


def _newest_seq_sql(conn: AnyConnection) -> str:
    return _PG_NEWEST_SEQ if is_postgres(conn) else _NEWEST_SEQ


def newest_seq(conn: AnyConnection) -> int:
    return int(conn.scalar(f"SELECT {_newest_seq_sql(conn)}"))


def change_bounds(conn: AnyConnection) -> tuple[int, int]:
    """(pruned through, newest seq), read by one statement: one state of the file."""
    row = conn.execute(
        f"""SELECT (SELECT CAST(value AS BIGINT) FROM store_meta WHERE name = ?),
                   {_newest_seq_sql(conn)}""",
        [PRUNED_THROUGH],
    ).fetchone()
    return int(row[0]), int(row[1])


def gap_after(seq: int, pruned_through: int, newest: int) -> str | None:
    """Why the log cannot give every change after `seq`, or None when it can: some were
    pruned, or `seq` is past the newest change (the state is an older copy than the one the
    consumer followed)."""
    if seq < pruned_through:
        return f"changes after seq {seq} were pruned (oldest retained: {pruned_through + 1})"
    if seq > newest:
        return (
            f"seq {seq} is past the newest change ({newest}): the state is an older copy than "
            "the one followed"
        )
    return None


def prune_changes(
    conn: AnyConnection, older_than: float, max_rows: int, keep_after: int | None = None
) -> int:
    """Delete, in one transaction, the oldest changes: those made before `older_than` and those
    beyond the newest `max_rows`, never one after `keep_after` (a consumer's position); raise
    `changes_pruned_through` to the highest seq deleted. Returns how many were deleted.

    By age, what goes is the longest run of oldest changes all made before `older_than`: after
    a step back of the wall clock, an old change newer than a young one waits for the next prune.

    Read first, outside a transaction: most calls (every `serve` tick's) find nothing to prune,
    and then take no write lock and write nothing.
    """
    if _prune_through(conn, older_than, max_rows, keep_after) is None:
        return 0
    with conn.transaction():
        highest = _prune_through(conn, older_than, max_rows, keep_after)
        if highest is None:
            return 0
        deleted = conn.execute("DELETE FROM changes WHERE seq <= ?", [highest]).rowcount
        raise_pruned_through(conn, highest)
    return int(deleted)


def prunable_changes(
    conn: AnyConnection, older_than: float, max_rows: int, keep_after: int | None = None
) -> bool:
    """Whether `prune_changes` with the same arguments would delete anything."""
    return _prune_through(conn, older_than, max_rows, keep_after) is not None


def _prune_through(
    conn: AnyConnection, older_than: float, max_rows: int, keep_after: int | None
) -> int | None:
    """The highest seq `prune_changes` deletes, or None when it deletes nothing."""
    oldest, newest = conn.execute(
        "SELECT (SELECT min(seq) FROM changes), (SELECT max(seq) FROM changes)"
    ).fetchone()
    first_young = conn.scalar(
        "SELECT seq FROM changes WHERE at >= ? ORDER BY seq LIMIT 1", [older_than]
    )
    by_age = int(newest or 0) if first_young is None else int(first_young) - 1
    beyond_rows = None
    # The log's span of seqs bounds its rows. Within `max_rows` nothing goes by count, and the
    # OFFSET (which walks `max_rows` entries of the index: 25-56 ms at 585,000 changes) is not
    # read by every idle call and `serve` tick.
    if newest is not None and int(newest) - int(oldest) + 1 > max_rows:
        beyond_rows = conn.scalar(
            "SELECT seq FROM changes ORDER BY seq DESC LIMIT 1 OFFSET ?", [max(max_rows, 0)]
        )
    through = max(by_age, 0 if beyond_rows is None else int(beyond_rows))
    if keep_after is not None:
        through = min(through, keep_after)
    highest = conn.scalar("SELECT max(seq) FROM changes WHERE seq <= ?", [through])
    return None if highest is None else int(highest)
