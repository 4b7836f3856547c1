"""The change feed: what a consumer that keeps a copy of the catalog reads (the HTTP service serves
it, a Backstage module follows it).

A consumer copies the catalog with `entities_page` (no cursor, then each `nextCursor` until it is
null), then follows `changes_page` from the `newestSeq` the copy reported, fetching the refs of
upserts with `entities_batch`. Every answer carries the `storeId`: when it changes, or a call
raises ChangesGone, the copy is made again from the start.

`/changes` and `/entities` also say whether the catalog is complete (`catalogComplete`): every
provider (those the config names, for `serve`) has completed a cycle. Until then (a new state
file's first cycle, which takes many bursts) an entity the catalog does not hold may be one not
read yet, rather than one gone: a consumer that removes what a walk did not see waits for it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from choreo_ingest.change_listing import check_since_at, rollback_seen
from choreo_ingest.clock import rfc3339
from choreo_ingest.errors import AnswerTooLarge, ChangesGone, ConfigError
from choreo_ingest.models import PURGED_FACT
from choreo_ingest.store import ChangeRow, Store, gap_after

MAX_CHANGES = 10_000
"""The most changes one `changes_page` returns."""
MAX_REFS = 1_000
"""The most refs one `entities_batch` asks for."""
MAX_ENTITIES = 1_000
"""The most entities one `entities_page` returns."""
MAX_ANSWER_CHARS = 16 * 1024 * 1024
"""The most characters of entity text one `entities_page` or `entities_batch` answers with (one
entity over it comes alone): the service holds an answer in memory several times over while it
makes it, and a v1 API's inline schema can make an entity a megabyte (500 of them: 500 MB)."""


@dataclass(frozen=True)
class ChangesPage:
    store_id: str
    oldest_seq: int
    """The oldest seq the log may still hold: every change before it was pruned."""
    newest_seq: int
    changes: list[ChangeRow]
    catalog_complete: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "storeId": self.store_id,
            "oldestSeq": self.oldest_seq,
            "newestSeq": self.newest_seq,
            "catalogComplete": self.catalog_complete,
            "changes": [change.to_json() for change in self.changes],
        }


@dataclass(frozen=True)
class EntitiesBatch:
    store_id: str
    entities: list[dict[str, Any]]
    missing: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"storeId": self.store_id, "entities": self.entities, "missing": self.missing}


@dataclass(frozen=True)
class EntitiesPage:
    store_id: str
    newest_seq: int
    entities: list[dict[str, Any]]
    next_cursor: str | None
    newest_at: str | None = None
    """When change `newest_seq` was made (None: no change yet, or pruned): the `sinceAt` of the
    consumer's first `/changes` after the walk."""
    catalog_complete: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "storeId": self.store_id,
            "newestSeq": self.newest_seq,
            "newestAt": self.newest_at,
            "catalogComplete": self.catalog_complete,
            "entities": self.entities,
            "nextCursor": self.next_cursor,
        }


@dataclass(frozen=True)
class _Cursor:
    after: str
    seq: int
    store_id: str


def changes_page(
    store: Store,
    since: int,
    limit: int,
    since_at: str | None = None,
    providers: Collection[str] | None = None,
) -> ChangesPage:
    """Up to `limit` changes after seq `since`, oldest first.

    Raises ChangesGone when some change after `since` was pruned (`since` below
    `oldestSeq - 1`), or when `since` is past the newest change (the state file is an older
    copy than the one the consumer followed), or when change `since` was made at another time
    than `since_at`, the `at` the consumer read of it: the state was put back from an older copy
    and has made other changes under the same seqs since (`since` past the newest no longer
    says so once it has made as many).
    """
    _check_count("limit", limit, MAX_CHANGES)
    _check_seq("since", since)
    check_since_at(since_at, path="sinceAt")
    with store.snapshot():
        store_id = store.store_id()
        pruned_through, newest = store.change_bounds()
        _require_changes_after(since, store_id, pruned_through, newest)
        rolled_back = rollback_seen(store, since, since_at)
        if rolled_back is not None:
            raise ChangesGone(rolled_back, store_id=store_id, oldest_seq=pruned_through + 1)
        changes = _kept_with_twins(store.changes(since, limit + 1), limit)
        complete = catalog_complete(store, providers)
    return ChangesPage(store_id, pruned_through + 1, newest, changes, complete)


def catalog_complete(store: Store, providers: Collection[str] | None = None) -> bool:
    """Whether every one of `providers` (default: the state's) has completed a cycle since its
    catalog was last purged (`reset --purge`); one the state holds no record of has not, nor
    has a catalog of no provider."""
    names = store.provider_names() if providers is None else providers
    return bool(names) and all(
        store.load_provider(name, strict=False).last_completed_at is not None
        and PURGED_FACT not in store.facts(name)
        for name in names
    )


def _kept_with_twins(changes: list[ChangeRow], limit: int) -> list[ChangeRow]:
    """The first `limit` of `changes` (which holds one more, if there is one), ending the page
    before a delete that the row after the page pairs with: an upsert of a ref that differs
    from it only in case, logged right after it (`entity_rows._log_deletes_with_twins`). A
    consumer that folds case (Backstage) would apply the delete to the live entity and bring
    it back a page later, a new entity; in one page the upsert wins. A page of one holds both."""
    page = changes[:limit]
    if len(changes) > limit:
        last, after = page[-1], changes[limit]
        if (
            last.op == "delete"
            and after.op == "upsert"
            and after.ref != last.ref
            and after.ref.lower() == last.ref.lower()
        ):
            return page[:-1] if len(page) > 1 else changes[: limit + 1]
    return page


def entities_batch(store: Store, refs: list[str]) -> EntitiesBatch:
    """The bodies of `refs`, in the order asked (a ref asked twice comes once), and the refs
    the catalog does not hold. AnswerTooLarge when their text is over MAX_ANSWER_CHARS."""
    wanted = list(dict.fromkeys(_checked_refs(refs)))
    with store.snapshot():
        store_id = store.store_id()
        bodies = store.entity_bodies(wanted, MAX_ANSWER_CHARS)
    if bodies is None:
        raise AnswerTooLarge(
            f"the {len(wanted):,} entities asked for hold more than "
            f"{MAX_ANSWER_CHARS // 2**20} MiB of text, more than one answer holds: ask for fewer"
        )
    return EntitiesBatch(
        store_id,
        entities=[bodies[ref] for ref in wanted if ref in bodies],
        missing=[ref for ref in wanted if ref not in bodies],
    )


def entities_page(
    store: Store, cursor: str | None, limit: int, providers: Collection[str] | None = None
) -> EntitiesPage:
    """One page of a walk over the whole catalog in ref order: `cursor` None starts a walk,
    `nextCursor` (null on the last page) goes on with it.

    Every page of a walk reports the `newestSeq` the walk started at. The pages are not a frozen
    snapshot: each shows the entities as they are when it is read, so the copy they make is at
    least as new as `newestSeq`, and every entity that changed while the walk went on has a
    change after it. A consumer that applies `changes_page(since=newestSeq)` (and the pages after
    it) once the walk is done holds the current catalog.

    A page holds fewer than `limit` entities, with a `nextCursor`, once it holds
    MAX_ANSWER_CHARS of their text.

    Raises ConfigError (`cursor`) for a cursor this function did not make, and ChangesGone for
    one from another state file (another storeId) or whose `newestSeq` is no longer followable
    (changes after it were pruned): the consumer starts its walk again.
    """
    _check_count("limit", limit, MAX_ENTITIES)
    position = None if cursor is None else _decode_cursor(cursor)
    with store.snapshot():
        store_id = store.store_id()
        pruned_through, newest = store.change_bounds()
        if position is None:
            after, seq = None, newest
        else:
            if position.store_id != store_id:
                raise ChangesGone(
                    f"the cursor is from another state store ({position.store_id}, not {store_id})",
                    store_id=store_id,
                    oldest_seq=pruned_through + 1,
                )
            _require_changes_after(position.seq, store_id, pruned_through, newest)
            after, seq = position.after, position.seq
        page, more = store.entities_after(after, limit, MAX_ANSWER_CHARS)
        newest_at = rfc3339(store.change_at(seq))
        complete = catalog_complete(store, providers)
    next_cursor = _encode_cursor(_Cursor(page[-1][0], seq, store_id)) if more else None
    bodies = [body for _, body in page]
    return EntitiesPage(store_id, seq, bodies, next_cursor, newest_at, complete)


def _require_changes_after(seq: int, store_id: str, pruned_through: int, newest: int) -> None:
    gap = gap_after(seq, pruned_through, newest)
    if gap is not None:
        raise ChangesGone(gap, store_id=store_id, oldest_seq=pruned_through + 1)


def _check_count(name: str, value: object, most: int) -> None:
    if not _is_int(value) or not 1 <= value <= most:
        raise ConfigError(f"must be a whole number from 1 to {most:,}, got {value!r}", path=name)


def _check_seq(name: str, value: object) -> None:
    if not _is_int(value) or value < 0:
        raise ConfigError(
            f"must be a change seq (a whole number, 0 or more), got {value!r}", path=name
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_refs(refs: object) -> list[str]:
    if isinstance(refs, str) or not isinstance(refs, Sequence):
        raise ConfigError(f"expected a list of entity refs, got {type(refs).__name__}", path="refs")
    if len(refs) > MAX_REFS:
        raise ConfigError(f"at most {MAX_REFS:,} refs at a time, got {len(refs):,}", path="refs")
    for number, ref in enumerate(refs):
        if not isinstance(ref, str):
            raise ConfigError(
                f"expected an entity ref (a string), got {type(ref).__name__}",
                path=f"refs[{number}]",
            )
    return list(refs)


def _encode_cursor(cursor: _Cursor) -> str:
    fields = {"after": cursor.after, "seq": cursor.seq, "storeId": cursor.store_id}
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: object) -> _Cursor:
    problem = ConfigError("not a cursor from a page of GET /entities", path="cursor")
    if not isinstance(cursor, str) or not cursor.isascii():
        raise problem
    try:
        text = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        fields = json.loads(text)
    except (ValueError, RecursionError) as error:  # binascii, Unicode, JSON, nested too deep
        raise problem from error
    if not isinstance(fields, dict):
        raise problem
    after, seq, store_id = fields.get("after"), fields.get("seq"), fields.get("storeId")
    if isinstance(after, str) and _is_int(seq) and seq >= 0 and isinstance(store_id, str):
        return _Cursor(after, seq, store_id)
    raise problem
