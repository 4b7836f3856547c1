"""Where the OpenChoreo walk stands, as stored between bursts: the generation, the phase, the
one listing cursor in use and the position reached in the phase's queue (camelCase JSON), also
read from a cursor written before generations existed; and how far a burst has read the
listing in progress, which only the burst knows; why a listing whose cursors kept failing
fails the burst; and when bursts that begin on expired cursors are a problem, and when no more.

A phase that follows the previous one (`Phase.follows_previous`: v1's components, after the
workloads) is walked with it item by item: one namespace's workloads and components, then the
next namespace's, so that a first cycle brings each namespace's components as soon as its own
workloads are listed, not after every namespace's. A cursor says so by naming such a group's
phase with its queue (`namespaces/workloads`), which a release that walked phase by phase
refuses rather than misreads; a cursor such a release stored (`workloads`) finishes its cycle
phase by phase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from choreo_ingest.errors import CursorExpired, CursorRejected, PermanentError, ProviderError
from choreo_ingest.models import JSON
from choreo_ingest.providers.openchoreo.generation import Generation, ListPage, Phase
from choreo_ingest.providers.openchoreo.generations import generation_named

BEFORE_FIRST = -1
"""Queue position before any item (positions are never negative)."""
_LEGACY_PHASES = ("orgs", "projects", "components")
SKIPS_KEPT = 100
"""Listings stepped over that a cursor (and the facts) name; the rest are counted."""
MAX_RESTARTS_PER_BURST = 3
"""Restarts of one listing within one burst before the burst fails."""
FAILURES_STEPPED_OVER = 3
"""Failures in a row of one page on cursors minted in the same burst (`failing`) at which the
listing is taken for one the server fails on (`step_over`), across bursts too."""


@dataclass
class TraversalCursor:
    """Where the walk stands; serialized with camelCase keys."""

    api: str
    phase: int = 0
    api_cursor: str | None = None
    position: int = BEFORE_FIRST
    """Position of the last queue item whose listing is complete (in the phase's queue); walked
    item by item, whose listings of every phase in the group are complete."""
    cursor_reset_count: int = 0
    stale_starts: int = 0
    """Bursts in a row that began on a stored cursor that had expired."""
    listed_at: float | None = None
    """When the listing in progress asked for its first page: its pages show the platform as it
    stood then (`overtaken`). None in a cursor written before it was kept."""
    by_item: bool = True
    """The phase's group (`item_group`) is walked item by item; False only for a cycle an
    older release began, which finishes phase by phase."""
    head: str | None = None
    """The name of the first item of the page last read of the listing in progress: the page
    asked for with its cursor must not begin with it again (`ListingGuard`)."""
    skipped: list[str] = field(default_factory=list)
    """The paths of the first SKIPS_KEPT listings this cycle stepped over (`step_over`)."""
    skipped_count: int = 0
    """Listings this cycle stepped over."""
    failing: str | None = None
    """The listing whose page after the one that began with `failing_after` (`head`) answered
    HTTP 500 on a cursor handed out in the same burst (so not an expired one) `failures` times
    in a row, counted across bursts too."""
    failing_after: str | None = None
    failures: int = 0
    restarts: int = 0
    """Restarts of the listing in progress since it last came to its end, across bursts."""

    def to_json(self, generation: Generation) -> dict[str, JSON]:
        return {
            "api": self.api,
            "phase": _phase_key(generation.phases, self.phase, by_item=self.by_item),
            "apiCursor": self.api_cursor,
            "position": self.position,
            "cursorResetCount": self.cursor_reset_count,
            "staleStarts": self.stale_starts,
            "listedAt": self.listed_at,
            "head": self.head,
            **(
                {"skipped": self.skipped, "skippedCount": self.skipped_count}
                if self.skipped
                else {}
            ),
            **({"listingRestarts": self.restarts} if self.restarts else {}),
            **(
                {
                    "failing": {
                        "path": self.failing,
                        "after": self.failing_after,
                        "count": self.failures,
                    }
                }
                if self.failing
                else {}
            ),
        }

    @classmethod
    def from_json(cls, raw: JSON) -> TraversalCursor:
        """The stored cursor (also one written before generations existed)."""
        if not isinstance(raw, Mapping):
            raise PermanentError(f"not an OpenChoreo traversal cursor: {raw!r:.200}")
        if "api" not in raw and raw.get("phase") in _LEGACY_PHASES:
            return _from_legacy(raw)
        try:
            generation = generation_named(raw.get("api"))
        except PermanentError as error:
            raise PermanentError(
                f"not an OpenChoreo traversal cursor ({error}): {raw!r:.200}"
            ) from None
        phases = generation.phases
        keys = {
            _phase_key(phases, index, by_item=by_item): (index, by_item)
            for index in range(len(phases))
            for by_item in (False, True)  # a phase named alike both ways is walked by item
        }
        if not isinstance(raw.get("phase"), str) or raw["phase"] not in keys:
            raise PermanentError(f"not an OpenChoreo traversal cursor: {raw!r:.200}")
        phase, by_item = keys[raw["phase"]]
        return cls(
            api=generation.name,
            phase=phase,
            by_item=by_item,
            api_cursor=_optional_text(raw, "apiCursor"),
            position=_whole_number(raw, "position", BEFORE_FIRST),
            cursor_reset_count=_whole_number(raw, "cursorResetCount", 0),
            stale_starts=_whole_number(raw, "staleStarts", 0),
            listed_at=_optional_time(raw, "listedAt"),
            head=_optional_text(raw, "head"),
            skipped=_texts(raw, "skipped"),
            skipped_count=_whole_number(raw, "skippedCount", 0),
            restarts=_whole_number(raw, "listingRestarts", 0),
            **_failing(raw),
        )

    def note_skip(self, listing: str) -> None:
        """This cycle stepped over `listing`."""
        self.skipped_count += 1
        if len(self.skipped) < SKIPS_KEPT:
            self.skipped.append(listing)

    def note_failure(self, path: str) -> None:
        """The page of `path` after the one that began with `head` answered HTTP 500 on a cursor
        this burst had (a page after one without items is not placed, so not counted)."""
        if self.head is None:
            return
        self.failures = self.failures_at(path) + 1
        self.failing, self.failing_after = path, self.head

    def failures_at(self, path: str) -> int:
        """How many times in a row the page of `path` after `head` failed (`note_failure`)."""
        same = self.failing == path and self.head is not None and self.failing_after == self.head
        return self.failures if same else 0

    def passed(self, path: str) -> None:
        """The page of `path` after `head` answered: a failure there is over."""
        if self.failures_at(path):
            self.forget_failure()

    def forget_failure(self) -> None:
        self.failing, self.failing_after, self.failures = None, None, 0

    def walked_together(self, phases: Sequence[Phase]) -> range:
        """The phases walked item by item with the current one (itself alone, phase by phase)."""
        if self.by_item:
            return item_group(phases, self.phase)
        return range(self.phase, self.phase + 1)

    def item_done(self, phases: Sequence[Phase], position: int) -> None:
        """The queue item at `position` is walked: the next one, from the group's first phase."""
        self.phase = self.walked_together(phases).start
        self.position = position

    def begin_phase(self, phases: Sequence[Phase], phase: int) -> None:
        """Go on with `phase`, from its queue's first item; a group an older release's cycle
        walks phase by phase stays so to its end."""
        if phase not in item_group(phases, self.phase):
            self.by_item = True
        self.phase = phase
        self.position = BEFORE_FIRST
        self.api_cursor = None


def item_group(phases: Sequence[Phase], index: int) -> range:
    """The phases walked item by item with `index`: it, the phases it follows, and those that
    follow it (`Phase.follows_previous`); most phases stand alone."""
    start, stop = index, index + 1
    while start > 0 and phases[start].follows_previous:
        start -= 1
    while stop < len(phases) and phases[stop].follows_previous:
        stop += 1
    return range(start, stop)


def _phase_key(phases: Sequence[Phase], index: int, *, by_item: bool) -> str:
    """How a cursor names the phase: with its queue when its group is walked item by item."""
    phase = phases[index]
    if by_item and len(item_group(phases, index)) > 1:
        return f"{phase.queue}/{phase.name}"
    return phase.name


@dataclass(frozen=True)
class ListingPlace:
    """How far a burst has read one listing since it asked for the listing's first page."""

    path: str
    pages: int
    items: int


def place_after(
    place: ListingPlace | None, path: str, cursor: str | None, items: int
) -> ListingPlace | None:
    """The place after a page of `path` that was asked for with `cursor` (None: the first page)
    and held `items` items; None when this burst did not read the listing from its start (a
    stored cursor does not say which page it leads to)."""
    if cursor is None:
        return ListingPlace(path, 1, items)
    if place is None or place.path != path:
        return None
    return ListingPlace(path, place.pages + 1, place.items + items)


def next_page_of(place: ListingPlace | None, path: str) -> tuple[int, int] | None:
    """The number of the page of `path` after `place`, and how many items came before it."""
    if place is None or place.path != path:
        return None
    return place.pages + 1, place.items


def _from_legacy(raw: Mapping[str, Any]) -> TraversalCursor:
    """A cursor stored by a choreo-ingest that spoke only the org-era API."""
    phase = _LEGACY_PHASES.index(raw["phase"])
    cursors = ("orgApiCursor", "projectApiCursor", "componentApiCursor")
    positions = (None, "orgPosition", "projectPosition")
    position_key = positions[phase]
    return TraversalCursor(
        api="orgs",
        phase=phase,
        api_cursor=_optional_text(raw, cursors[phase]),
        position=BEFORE_FIRST
        if position_key is None
        else _whole_number(raw, position_key, BEFORE_FIRST),
        cursor_reset_count=_whole_number(raw, "cursorResetCount", 0),
    )


def _optional_text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    raise PermanentError(f"traversal cursor field {key} is not a string: {value!r:.80}")


def _optional_time(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise PermanentError(f"traversal cursor field {key} is not a time: {value!r:.80}")


def _failing(raw: Mapping[str, Any]) -> dict[str, Any]:
    failing = raw.get("failing")
    if failing is None:
        return {}
    if not isinstance(failing, Mapping):
        raise PermanentError(f"traversal cursor field failing is not an object: {failing!r:.80}")
    path, after = _optional_text(failing, "path"), _optional_text(failing, "after")
    count = _whole_number(failing, "count", 0)
    return {"failing": path, "failing_after": after, "failures": count} if path else {}


def _texts(raw: Mapping[str, Any], key: str) -> list[str]:
    value = raw.get(key, [])
    if isinstance(value, list) and all(isinstance(text, str) for text in value):
        return value[:SKIPS_KEPT]
    raise PermanentError(f"traversal cursor field {key} is not a list of strings: {value!r:.80}")


def _whole_number(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PermanentError(f"traversal cursor field {key} is not an integer: {value!r:.80}")


def restart_listing(
    state: TraversalCursor,
    restarts: dict[str, int],
    failed_at: dict[str, list[tuple[int, int] | None]],
    place: ListingPlace | None,
    path: str,
    expired: CursorExpired,
    *,
    fresh: bool,
    fails_at_most: int | None,
) -> tuple[int, tuple[int, int] | None]:
    """Set `state` to read listing `path` from its first page again, its cursor having failed
    with `expired`; the burst's restarts and places of failure by listing are counted in
    `restarts` and `failed_at` (`place`: how far this burst read it; `fresh`: the cursor was
    handed out in this burst, so it cannot have expired). Returns the restart's number and where
    the listing failed (page, items before it), if known.

    Past the limits the burst fails: an expired cursor restarts a listing up to
    MAX_RESTARTS_PER_BURST times in one burst, a rejected one once; a page whose fresh cursors
    answered HTTP 500 `fails_at_most` times in a row (`TraversalCursor.failing`, counted across
    bursts; None: never, for a listing that cannot be stepped over) fails it with an error
    `step_over` may take up."""
    rejected = isinstance(expired, CursorRejected)
    key = f"rejected {path}" if rejected else path
    restarts_now = restarts.get(key, 0) + 1
    where = next_page_of(place, path)
    failed_at.setdefault(key, []).append(where)
    if rejected and restarts_now > 1:
        said = "refused again after the listing restarted once in this burst"
        raise _failed(PermanentError, f"{expired}; {said}", path, expired)
    if fresh and not rejected and expired.status == 500:
        state.note_failure(path)
    failures = state.failures_at(path)
    if fails_at_most is not None and failures >= fails_at_most:
        said = (
            f"the page after the one that begins with {state.head!r} answered HTTP "
            f"{expired.status} {failures} time{'' if failures == 1 else 's'} in a row, on cursors "
            "just handed out: the server fails on a resource in that page (see the "
            "openchoreo-api logs), or its cursors expire faster than a page takes (lower "
            "openchoreo.incremental.chunkSize)"
        )
        raise _failed(ProviderError, f"GET {path}: {said}", path, expired)
    if restarts_now > MAX_RESTARTS_PER_BURST:  # a failure even after committed pages
        said = restarts_exhausted(failed_at[key], expired)
        raise _failed(ProviderError, f"GET {path}: {said}", path, expired)
    restarts[key] = restarts_now
    state.api_cursor = state.head = None
    state.cursor_reset_count += 1
    return restarts_now, where


def _failed(
    kind: type[ProviderError], message: str, path: str, expired: CursorExpired
) -> ProviderError:
    return kind(message, method="GET", path=path, status=expired.status, code=expired.code)


def restarts_exhausted(failed_at: list[tuple[int, int] | None], last: CursorExpired) -> str:
    """Why a listing whose cursors kept failing fails the burst (`last`: the last failure).

    A 5xx on a cursor is taken for an expired cursor, but a server that fails on a resource it
    lists answers the same, and then at the same page every time. Cursors that expire after a
    fixed time can do that too, so a listing that always failed at one page names both causes;
    a cursor's age would not settle it, as the client cannot know how long the server keeps one.
    """
    answer = f"HTTP {last.status} {last.code or ''}".strip() if last.status else ""
    located = [place for place in failed_at if place is not None]
    if may_be_server_fault(last) and len(located) > 1 and len(set(located)) == 1:
        page, items = located[0]
        which = "" if len(located) == len(failed_at) else f", the last {len(located)}"
        told = f" with {answer}" if answer else ""
        return (
            f"the listing failed {len(failed_at)} times in one burst{which} at its page {page} "
            f"(after {items} items){told}; the server may be failing on a resource in that page "
            "(see the openchoreo-api logs), or its cursors expire faster than a page takes "
            "(lower openchoreo.incremental.chunkSize)"
        )
    told = f" (last: {answer})" if answer else ""
    return (
        f"the listing's cursor expired {len(failed_at)} times in one burst{told}; the API may "
        "not keep cursors long enough for a page (lower openchoreo.incremental.chunkSize)"
    )


def may_be_server_fault(expired: CursorExpired) -> bool:
    """Whether the "expired" cursor was a 5xx (v1 has no 410), which a page the server fails
    to build answers too; an org-era 410 says outright that the cursor expired."""
    return expired.status is None or expired.status >= 500


MAX_CURSORS_REMEMBERED = 10_000
"""A listing's cursors kept for the loop guard (a few hundred bytes each), then forgotten."""


class ListingGuard:
    """A burst's guard against a listing that never ends: its cursor handed back again, one it
    returned before (A -> B -> A), or the page a cursor was asked with answered again (a server,
    or a proxy that drops the query, that ignores `cursor` and hands out a new one each time,
    as `check` finds: followed, it would read the first page for ever). The page before is
    known by the name of its first item (`TraversalCursor.head`), kept across bursts."""

    def __init__(self) -> None:
        self._path = ""
        self._cursors: set[str] = set()

    def forget(self) -> None:
        """The listing restarts from its first page."""
        self._path, self._cursors = "", set()

    def check(self, path: str, asked_with: str | None, page: ListPage, head: str | None) -> None:
        """`page` of listing `path`, asked for with cursor `asked_with` (None: the first page)
        after a page whose first item is named `head`."""
        if self._path != path or len(self._cursors) >= MAX_CURSORS_REMEMBERED:
            self._path, self._cursors = path, set()
        if asked_with is not None and page.next_cursor == asked_with:
            self._refuse(path, "returned the same cursor again")
        if asked_with is not None and head is not None and page_head(page.items) == head:
            self._refuse(
                path,
                "answered the page before it again when asked with that page's cursor (does "
                "the server, or a proxy in front of it, ignore the cursor parameter? "
                "`choreo-ingest check` tells)",
            )
        if page.next_cursor in self._cursors:
            self._refuse(path, "returned a cursor it had returned before")
        if page.next_cursor:
            self._cursors.add(page.next_cursor)

    @staticmethod
    def _refuse(path: str, what: str) -> NoReturn:
        raise PermanentError(f"GET {path} {what}; refusing to loop", method="GET", path=path)


def page_head(items: Sequence[Any]) -> str | None:
    """The name of a page's first item (`metadata.name`, else `name`); None without one."""
    first = items[0] if items else None
    if not isinstance(first, Mapping):
        return None
    metadata = first.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else first.get("name")
    return name if isinstance(name, str) and name else None
