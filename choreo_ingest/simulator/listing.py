"""One sorted listing of a world (generated slots merged with overrides), and the lookup errors.

A listing reads its generated items from the `Blueprint` on demand and keeps only what was
changed, so a listing of 200k components costs a few hundred bytes plus its mutations, and
reading a page costs O(page + log n). Not thread-safe on its own: the `World` holds a lock.
"""

from __future__ import annotations

import bisect
import copy
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from choreo_ingest.simulator.records import Blueprint, Record

Kind = Literal["organization", "project", "component", "workload"]
ParentKey = tuple[str, ...]
"""Names of a listing's parents: () for orgs, (org,) for projects, (org, project) for components."""

KINDS: Final[tuple[Kind, Kind, Kind]] = ("organization", "project", "component")


class NotFound(LookupError):
    """The named org, project, component or workload does not exist or is not visible."""

    def __init__(self, kind: Kind, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} not found")


class Hidden(LookupError):
    """The named item exists but the caller may not see it (v1 answers 403, lists skip it)."""

    def __init__(self, kind: Kind, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} is not visible to the caller")


class Slot(NamedTuple):
    """One item of a listing, visible or not."""

    name: str
    hidden: bool
    position: int | None
    """Index of the generated item it is (or overrides); None for an added item."""
    record: Record | None
    """The stored record (the detail, for components); None: generate it from `position`."""


@dataclass(frozen=True)
class Page:
    items: list[Record]
    """The visible items of the page, as list calls return them."""
    last_name: str | None
    """Name of the last item the page covered, hidden or not (where the next page starts)."""
    has_more: bool


class Listing:
    """A sorted listing: generated slots merged with overrides (replacements and deletions)."""

    def __init__(self, blueprint: Blueprint | None, parent: tuple[int, ...]) -> None:
        self._blueprint = blueprint
        self.parent = parent
        """Indices of the generated parents (meaningless when there is no blueprint)."""
        self._overrides: dict[str, Slot | None] = {}
        self._added: list[str] = []  # sorted names whose override is a Slot

    def get(self, name: str) -> Slot | None:
        if name in self._overrides:
            return self._overrides[name]
        if self._blueprint is None:
            return None
        found = self._blueprint.locate(self.parent, name)
        if found is None:
            return None
        index, hidden = found
        return Slot(name, hidden, index, None)

    def put(self, name: str, record: Record, hidden: bool, position: int | None = None) -> None:
        if self._overrides.get(name) is None:
            bisect.insort(self._added, name)
        self._overrides[name] = Slot(name, hidden, position, record)

    def record(self, slot: Slot) -> Record:
        """A private copy of the slot's record (stored, or generated on the spot)."""
        if slot.record is not None:
            return copy.deepcopy(slot.record)
        assert self._blueprint is not None
        assert slot.position is not None
        return self._blueprint.record(self.parent, slot.position)

    def remove(self, name: str) -> None:
        if self._overrides.get(name) is not None:
            del self._added[bisect.bisect_left(self._added, name)]
        self._overrides[name] = None

    def stored_slots(self) -> Iterator[Slot]:
        """The slots that hold a stored record (added or changed items), in name order."""
        for name in self._added:
            slot = self._overrides[name]
            assert slot is not None
            yield slot

    def slots_after(self, after: str | None) -> Iterator[Slot]:
        generated = (s for s in self._generated_after(after) if s.name not in self._overrides)
        start = 0 if after is None else bisect.bisect_right(self._added, after)
        added = (self._overrides[self._added[i]] for i in range(start, len(self._added)))
        return heapq.merge(generated, (s for s in added if s is not None), key=_slot_name)

    def _generated_after(self, after: str | None) -> Iterator[Slot]:
        blueprint, parent = self._blueprint, self.parent
        if blueprint is None:
            return
        count = blueprint.count(parent)
        start = 0
        if after is not None:
            start = bisect.bisect_right(
                range(count), after, key=lambda i: blueprint.name(parent, i)
            )
            if start > 0:  # hidden items between the previous visible one and `start`
                for hidden in blueprint.hidden_names(parent, start - 1):
                    if hidden > after:
                        yield Slot(hidden, True, None, None)
        for index in range(start, count):
            yield Slot(blueprint.name(parent, index), False, index, None)
            for hidden in blueprint.hidden_names(parent, index):
                yield Slot(hidden, True, None, None)


def _slot_name(slot: Slot) -> str:
    return slot.name
