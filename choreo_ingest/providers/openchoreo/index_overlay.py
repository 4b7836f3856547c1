"""A walk whose index shows the rows a delta is about to write: an event's delta is computed on
what its own rows will have made of the index (a component's fresh workload rows, a claim on an
API name it gave up), before they are committed."""

from __future__ import annotations

from collections.abc import Sequence

from choreo_ingest.models import IndexEntry
from choreo_ingest.providers.base import IndexReader
from choreo_ingest.providers.openchoreo.generation import Walk


class OverlayIndex:
    """The walk's index with the rows a delta is about to write laid over it, as `write_index`
    writes them: the last entry of a key stands, and one without a value deletes its row."""

    def __init__(self, walk: Walk, entries: Sequence[IndexEntry]):
        written = {(row.table, row.key): row for row in entries}
        self._index = walk.index
        self._rows = [row for row in written.values() if row.value is not None]
        self._removed = {key for key, row in written.items() if row.value is None}

    def by_key(
        self, table: str, keys: Sequence[str], *, current_only: bool = False
    ) -> dict[str, IndexEntry]:
        found = self._index.by_key(table, keys, current_only=current_only)
        for row in self._rows:
            if row.table == table and row.key in keys:
                found[row.key] = row
        return {k: v for k, v in found.items() if (table, k) not in self._removed}

    def by_group(
        self, table: str, groups: Sequence[str], *, current_only: bool = False
    ) -> dict[str, list[IndexEntry]]:
        found = self._index.by_group(table, groups, current_only=current_only)
        gone = self._removed | {(row.table, row.key) for row in self._rows}  # moved too
        for group in groups:
            mine = {row.key: row for row in self._rows if row.table == table and row.group == group}
            kept = [row for row in found[group] if (table, row.key) not in gone]
            found[group] = sorted([*kept, *mine.values()], key=lambda row: row.key)
        return found

    def by_group_prefix(self, table: str, prefix: str) -> list[IndexEntry]:
        gone = self._removed | {(row.table, row.key) for row in self._rows}
        kept = [
            row
            for row in self._index.by_group_prefix(table, prefix)
            if (table, row.key) not in gone
        ]
        mine = [row for row in self._rows if row.table == table and row.group.startswith(prefix)]
        return sorted([*kept, *mine], key=lambda row: (row.group, row.key))

    def entity_scopes(self, refs: Sequence[str]) -> dict[str, str]:
        return self._index.entity_scopes(refs)

    @property
    def under(self) -> IndexReader:
        return self._index


def stored(walk: Walk) -> IndexReader:
    """The index `walk` reads as committed, under any overlays laid on it."""
    index = walk.index
    while isinstance(index, OverlayIndex):
        index = index.under
    return index


def with_rows(walk: Walk, entries: Sequence[IndexEntry]) -> Walk:
    """`walk`, its index showing `entries` as written (`OverlayIndex`)."""
    overlay = OverlayIndex(walk, entries)
    return Walk(walk.client, walk.queues, overlay, walk.config, walk.provider, walk.clock)
