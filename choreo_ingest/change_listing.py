"""The change log as `changes` lists it, and the checks a follower's position takes (`feed`
serves the same log to the catalog module)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from choreo_ingest.clock import parse_rfc3339, rfc3339
from choreo_ingest.errors import ChangesGone, ConfigError
from choreo_ingest.reporting import reading
from choreo_ingest.store import ChangeRow, StateRef, Store, gap_after


class ChangeListing(NamedTuple):
    store_id: str
    oldest_seq: int
    newest_seq: int
    rows: list[ChangeRow]
    last_at: float | None = None
    """When the change `lastSeq` names was made (None: no change yet, or pruned)."""


RESYNC_ADVICE = "copy the catalog again (export), then read on from changes --json's newestSeq"


def list_changes(
    state: StateRef, since: int | None, limit: int | None, since_at: str | None = None
) -> ChangeListing:
    """The change log after `since` (None: all it still holds). A `since` that changes after
    it were pruned from, or past the newest change (an older copy of the state), or whose change
    was made at another time than `since_at` (a state put back from a copy) raises ChangesGone,
    as the feed does: reading on from it would miss changes without a word."""
    check_since_at(since_at, path="--since-at")
    with reading(state) as store, store.snapshot():
        store_id = store.store_id()
        pruned_through, newest = store.change_bounds()
        oldest = pruned_through + 1
        gap = None if since is None else gap_after(since, pruned_through, newest)
        if since is not None and gap is None:
            gap = rollback_seen(store, since, since_at)
        if gap is not None:
            raise ChangesGone(gap, store_id=store_id, oldest_seq=oldest, advice=RESYNC_ADVICE)
        rows = store.changes(since or 0, limit)
        last = _last_seq(rows, since, newest)
        last_at = rows[-1].at if rows else store.change_at(last)
    return ChangeListing(store_id, oldest, newest, rows, last_at)


_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
"""An RFC 3339 time, as a change's `at` is written (`2026-12-04T09:06:17Z`) or another spelling
of it (`...17.000Z`, `...17+00:00`, `...t...z`)."""


def _since_at_time(since_at: str) -> str | None:
    """`since_at` as a change's `at` is written (`2026-12-04T09:06:17Z`: whole seconds, UTC),
    or None when it is no RFC 3339 time a change can have been made at."""
    spelt = since_at.upper()
    if not _AT.fullmatch(spelt):
        return None
    try:
        return rfc3339(parse_rfc3339(spelt))
    except (ValueError, OverflowError, OSError):  # a date, or a time past the years Python has
        return None


def check_since_at(since_at: str | None, *, path: str) -> None:
    """ConfigError (naming `path`) for a `since_at` that cannot be the `at` of a change: no
    RFC 3339 time (a consumer's mistake, not a state put back from an older copy)."""
    if since_at is not None and _since_at_time(since_at) is None:
        raise ConfigError("must be the `at` of a change (2026-12-04T09:06:17Z)", path=path)


def rollback_seen(store: Store, since: int, since_at: str | None) -> str | None:
    """Why reading on from change `since` would go wrong, when it was made at another time than
    `since_at`, the `at` the consumer read of it: the state was put back from an older copy and
    has made other changes under the same seqs since. None when it was not (or is pruned)."""
    made = rfc3339(store.change_at(since)) if since_at is not None else None
    if made is None or since_at is None or made == _since_at_time(since_at):
        return None  # the same time, however spelt (`at`s are whole seconds)
    return (
        f"change {since} was made at {made}, not at {since_at} as the one followed: the state "
        "was put back from an older copy"
    )


def _last_seq(rows: Sequence[ChangeRow], since: int | None, newest: int) -> int:
    """The seq a follower reads on from: the last row's, else where it stood."""
    return rows[-1].seq if rows else (newest if since is None else since)


def changes_json(listing: ChangeListing, since: int | None) -> dict[str, Any]:
    """The `changes --json` document: the rows, the seq to read on from with the `at` of its
    change (the follower's next `--since-at`), and the bounds and storeId a follower checks (a
    new storeId: the state was rebuilt, copy the catalog again)."""
    last_at = None if listing.last_at is None else rfc3339(listing.last_at)
    return {
        "storeId": listing.store_id,
        "oldestSeq": listing.oldest_seq,
        "newestSeq": listing.newest_seq,
        "changes": [row.to_json() for row in listing.rows],
        "lastSeq": _last_seq(listing.rows, since, listing.newest_seq),
        "lastAt": last_at,
    }
