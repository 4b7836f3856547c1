"""The providers' views of their queues and index in the store (`providers.base.QueueReader`,
`IndexReader`), as a burst's context hands them over."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from choreo_ingest.models import IndexEntry, QueuedItem

if TYPE_CHECKING:
    from choreo_ingest.store.store import Store


class StoreQueueReader:
    """A provider's view of its queues (`choreo_ingest.providers.base.QueueReader`).

    `before_read` runs before every read that goes to the DB (the engine passes the wait for the
    page its writer thread is committing). A read that returned all `limit` items it asked for is
    settled: within a cycle queues only grow, at the end, so the items after a position never
    change once there are that many. Settled reads are answered from memory, without waiting.
    """

    _SETTLED_KEPT = 64

    def __init__(
        self, store: Store, provider: str, *, before_read: Callable[[], None] | None = None
    ) -> None:
        self._store = store
        self._provider = provider
        self._before_read = before_read
        self._settled: dict[tuple[str, int, int], list[QueuedItem]] = {}

    def read(self, queue: str, after: int, limit: int) -> Sequence[QueuedItem]:
        key = (queue, after, limit)
        settled = self._settled.get(key)
        if settled is not None:
            return settled
        if self._before_read is not None:
            self._before_read()
        items = self._store.read_queue(self._provider, queue, after, limit)
        if len(items) == limit:
            if len(self._settled) >= self._SETTLED_KEPT:
                self._settled.clear()
            self._settled[key] = items
        return items


class StoreIndexReader:
    """A provider's view of its lookup index (`choreo_ingest.providers.base.IndexReader`).

    `before_read` runs before every read (the engine passes the wait for the page its writer
    thread is committing), so a lookup sees every page `next()` returned before it.
    `current_cycle` is what `current_only` reads mean: rows written in this cycle.
    """

    def __init__(
        self,
        store: Store,
        provider: str,
        current_cycle: int,
        *,
        before_read: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._provider = provider
        self._current_cycle = current_cycle
        self._before_read = before_read

    def by_key(
        self, table: str, keys: Sequence[str], *, current_only: bool = False
    ) -> dict[str, IndexEntry]:
        if self._before_read is not None:
            self._before_read()
        min_cycle = self._current_cycle if current_only else 0
        return self._store.index_by_key(self._provider, table, keys, min_cycle=min_cycle)

    def by_group(
        self, table: str, groups: Sequence[str], *, current_only: bool = False
    ) -> dict[str, list[IndexEntry]]:
        if self._before_read is not None:
            self._before_read()
        min_cycle = self._current_cycle if current_only else 0
        return self._store.index_by_group(self._provider, table, groups, min_cycle=min_cycle)

    def by_group_prefix(self, table: str, prefix: str) -> list[IndexEntry]:
        if self._before_read is not None:
            self._before_read()
        return self._store.index_by_group_prefix(self._provider, table, prefix)

    def entity_scopes(self, refs: Sequence[str]) -> dict[str, str]:
        if self._before_read is not None:
            self._before_read()
        return self._store.entity_scopes(self._provider, refs)
