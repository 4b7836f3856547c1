"""Events that overtook a listing: a page must not undo what an event applied after the listing
it comes from began.

OpenChoreo lists through Kubernetes continue tokens, and Kubernetes serves every page of a
listing as the platform stood when the listing's first page was read. An event applied
meanwhile read its object again, later: a later page of that listing holds an older copy, which
brought back an entity the event had removed (seen in this cycle, so the cycle's sweep kept it)
or undid an update, until the next cycle.

So an event's delta marks what it wrote, with the time it was applied, as rows of the
provider's lookup index written in its transaction: the refs it upserted or removed, the
scopes it removed and the index rows it wrote or deleted (a workload, an API name's claim). A
page leaves out the entities marked (by ref, or by their scope or one above it), the removals of
refs marked and the index rows marked after the time its listing began, which the traversal
cursor keeps (an event applied at that very time was applied first: a run drains its events
before its burst): a workloads page written over a deleted workload's row would give its APIs
back to the component when the components listing, begun after the event, maps it. The marks
are index rows of the cycle they were written in, pruned with the rest of its rows.

The times are the wall clock's, kept in order across a clock stepped back (NTP, a VM restored
from a snapshot): an event's time is after the start of the listing in progress when it was
applied, and a listing's start is no earlier than the events applied before it, so each
listing's start is a mark too.
"""

from __future__ import annotations

import math
from dataclasses import replace

from choreo_ingest.logs import get_logger
from choreo_ingest.models import Delta, Entity, IndexEntry
from choreo_ingest.providers.base import IndexReader
from choreo_ingest.providers.openchoreo.generation import Harvest

EVENT_MARKS = "event"
"""The index table of the marks; each row's value is `{"at": <when the event was applied>}`."""
LISTING = "listing"
"""The key and group of the mark of the latest listing's start, in `EVENT_MARKS`."""

log = get_logger("choreo_ingest.providers.openchoreo")


class EventMarks:
    """A provider's view of the marks: it marks its events' deltas, and holds a page back only
    when an event was applied after the page's listing began, which the latest mark's time says
    (read from the index once a burst or drain, kept up to date by the events it marks itself:
    `serve` applies them between a burst's pages), so that a page costs nothing more without."""

    def __init__(self) -> None:
        self._latest: float | None = None
        self._listing: float | None = None
        self._unwritten: float | None = None
        self._known = self._listing_known = False

    def forget(self) -> None:
        """A burst or a drain begins: another process may have marked events since."""
        self._known = self._listing_known = False
        self._latest, self._listing, self._unwritten = None, None, None

    def listing_began(self, index: IndexReader, now: float) -> float:
        """The time a listing begins at: `now`, or the latest event's if the clock was set
        back since; its mark goes with the next page (`without_overtaken`)."""
        self._load(index)
        at = now if self._latest is None else max(now, self._latest)
        self._listing = self._unwritten = at
        return at

    def marked(self, index: IndexReader, delta: Delta, read_at: float) -> Delta:
        """`delta` with the marks of what it writes, read at `read_at`: marked after the start
        of the listing in progress even if the clock was set back since it began."""
        if not (delta.upserts or delta.removals or delta.removal_scopes or delta.index):
            return delta
        self._load_listing(index)  # one row: a drain reads no other marks
        at = read_at
        if self._listing is not None and at <= self._listing:
            at = math.nextafter(self._listing, math.inf)
        self._note(at)
        return marked(delta, at)

    def without_overtaken(
        self, index: IndexReader, harvest: Harvest, listed_at: float | None, name: str
    ) -> Harvest:
        """`harvest`, less what events applied after its listing began wrote, with the mark
        of the listing's start if it began in this burst."""
        kept = self._kept(index, harvest, listed_at, name)
        if self._unwritten is None:
            return kept
        mark = IndexEntry(EVENT_MARKS, LISTING, LISTING, {"at": self._unwritten})
        self._unwritten = None
        return replace(kept, index=[*kept.index, mark])

    def _kept(
        self, index: IndexReader, harvest: Harvest, listed_at: float | None, name: str
    ) -> Harvest:
        if listed_at is None or not (harvest.entities or harvest.index or harvest.removals):
            return harvest
        self._load(index)
        if self._latest is None or self._latest <= listed_at:
            return harvest
        return without_overtaken(index, harvest, listed_at, name)

    def _load(self, index: IndexReader) -> None:
        """Every mark of the cycle (once a burst: what a page is held back by)."""
        if self._known:
            return
        rows = index.by_group(EVENT_MARKS, ["", LISTING], current_only=True)
        for row in rows[""]:
            self._note(_applied_at(row))
        self._note_listing(rows[LISTING])
        self._known = self._listing_known = True

    def _load_listing(self, index: IndexReader) -> None:
        if not self._listing_known:
            self._note_listing(index.by_group(EVENT_MARKS, [LISTING], current_only=True)[LISTING])
            self._listing_known = True

    def _note_listing(self, rows: list[IndexEntry]) -> None:
        for row in rows:
            at = _applied_at(row)
            self._listing = at if self._listing is None else max(self._listing, at)

    def _note(self, at: float) -> None:
        self._latest = at if self._latest is None else max(self._latest, at)


def marked(delta: Delta, at: float) -> Delta:
    """`delta` with the marks of what it writes, applied at `at`."""
    keys = [
        *(_ref_key(entity.ref) for entity in delta.upserts),
        *(_ref_key(ref) for ref in delta.removals),
        *(_scope_key(scope) for scope in delta.removal_scopes),
        *(_row_key(row) for row in delta.index),
    ]
    if not keys:
        return delta
    marks = [IndexEntry(EVENT_MARKS, key, "", {"at": at}) for key in dict.fromkeys(keys)]
    return replace(delta, index=[*delta.index, *marks])


def without_overtaken(
    index: IndexReader, harvest: Harvest, listed_at: float | None, provider: str
) -> Harvest:
    """`harvest` of a page whose listing began at `listed_at`, less the entities and index rows
    an event applied after then wrote or removed (None: a cursor written before listings kept
    their start)."""
    if listed_at is None or not (harvest.entities or harvest.index or harvest.removals):
        return harvest
    keys = {_ref_key(entity.ref): None for entity in harvest.entities}
    for entity in harvest.entities:
        keys.update((_scope_key(scope), None) for scope in _scope_and_above(entity.scope))
    keys.update((_row_key(row), None) for row in harvest.index)
    keys.update((_ref_key(ref), None) for ref in harvest.removals)
    marks = index.by_key(EVENT_MARKS, list(keys), current_only=True)
    late = {key for key, row in marks.items() if _applied_at(row) > listed_at}
    if not late:
        return harvest
    entities = [entity for entity in harvest.entities if not _overtaken(entity, late)]
    rows = [row for row in harvest.index if _row_key(row) not in late]
    removals = [ref for ref in harvest.removals if _ref_key(ref) not in late]
    log.info(
        "page_entities_overtaken",
        provider=provider,
        left_out=len(harvest.entities) - len(entities),
        index_rows_left_out=len(harvest.index) - len(rows),
        removals_left_out=len(harvest.removals) - len(removals),
    )
    return replace(harvest, entities=entities, index=rows, removals=removals)


def _overtaken(entity: Entity, late: set[str]) -> bool:
    if _ref_key(entity.ref) in late:
        return True
    return any(_scope_key(scope) in late for scope in _scope_and_above(entity.scope))


def _scope_and_above(scope: str) -> list[str]:
    """`a/b/c` -> `a`, `a/b`, `a/b/c`: a removal scope takes what lies below it."""
    parts = scope.split("/") if scope else []
    return ["/".join(parts[: end + 1]) for end in range(len(parts))]


def _applied_at(row: IndexEntry) -> float:
    value = row.value.get("at") if isinstance(row.value, dict) else None
    return float(value) if isinstance(value, int | float) else float("-inf")


def _ref_key(ref: str) -> str:
    return f"ref {ref}"


def _scope_key(scope: str) -> str:
    return f"scope {scope}"


def _row_key(row: IndexEntry) -> str:
    return f"index {row.table} {row.key}"
