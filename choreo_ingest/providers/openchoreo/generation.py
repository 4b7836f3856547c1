"""What an OpenChoreo API generation is, for the shared traversal: its wire format, its walk
as a list of phases, and its events.

A generation module (`api_v1`, `api_orgs`) holds everything that differs between OpenChoreo API
generations: paths, envelope, where a listing ends, which status means an expired cursor, the
resource shapes and how they become entities. The traversal (`traversal.py`) holds what they
share: cursors, queues, restarts, checkpoints. A third generation is one more module plus its
loader in `generations.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config, effective_chunk_size
from choreo_ingest.errors import (
    AuthError,
    CursorExpired,
    CursorRejected,
    NotFoundError,
    PermanentError,
    ProviderError,
    WebPageAnswer,
)
from choreo_ingest.logs import get_logger, scrub_secrets
from choreo_ingest.models import Delta, Entity, Event, IndexEntry, QueuedItem, QueueItem
from choreo_ingest.providers.base import IndexReader, QueueReader
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient

log = get_logger("choreo_ingest.providers.openchoreo")

Resource = dict[str, Any]
KUBERNETES_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
"""A name an event may give (a Kubernetes object name): it becomes one URL path segment and one
level of a removal scope, so `a/b` or `..` is refused."""


@dataclass(frozen=True)
class ListPage:
    """One page of a listing; the listing is finished when `next_cursor` is empty."""

    items: list[Resource]
    next_cursor: str


@dataclass
class Harvest:
    """What one listed page becomes: entities, queue pushes and index rows, committed together."""

    entities: list[Entity] = field(default_factory=list)
    queue_items: list[QueueItem] = field(default_factory=list)
    index: list[IndexEntry] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)
    """Refs the entities replace under another name (`EntityIteratorResult.removals`)."""
    kept_scopes: list[str] = field(default_factory=list)
    """Scopes whose listings were stepped over (`EntityIteratorResult.kept_scopes`)."""

    def add(self, other: Harvest) -> None:
        self.entities += other.entities
        self.queue_items += other.queue_items
        self.index += other.index
        self.removals += other.removals
        self.kept_scopes += other.kept_scopes


@dataclass(frozen=True)
class Walk:
    """What a phase or an event handler may use during one burst (or one inbox drain)."""

    client: OpenChoreoClient
    queues: QueueReader
    index: IndexReader
    config: Config
    provider: str
    clock: Clock


def event_page_size(walk: Walk, api: str) -> int:
    """The `limit` of a listing an event reads: the walk's page size (`openchoreo.incremental.
    chunkSize`, capped at what the `api` generation serves), so that lowering chunkSize (as the
    client's error for an answer too large to read says) makes an event's listings smaller too.
    The cap's warning is left to the walk, which logs it once."""
    size, _ = effective_chunk_size(walk.config, api)
    return size


class Phase(Protocol):
    """One kind of listing in the walk: either a single listing (`queue` None) or one listing per
    item of a queue that an earlier phase filled."""

    @property
    def name(self) -> str: ...

    @property
    def queue(self) -> str | None: ...

    @property
    def follows_previous(self) -> bool:
        """Listed for each queue item right after the phase before it (over the same queue),
        item by item, rather than once that phase has listed every item."""
        ...

    def path(self, item: QueuedItem | None) -> str:
        """The listing's path below the API root, for this queue item."""
        ...

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        """Turn one page of the listing into entities, queue pushes and index rows."""
        ...

    def scope(self, item: QueuedItem) -> str:
        """The scope of what the listings of `item` (of its phase and of those walked with it,
        and of what they queue) bring: kept when one of them is stepped over (`step_over`)."""
        ...


class Generation(Protocol):
    """One OpenChoreo API generation."""

    @property
    def name(self) -> str:
        """What `openchoreo.api` calls it, and what `status` shows: `v1`, `orgs`."""
        ...

    @property
    def phases(self) -> Sequence[Phase]: ...

    @property
    def gone_codes(self) -> Collection[str]:
        """The codes of the API's own 404: the object is not there (`confirm_gone`)."""
        ...

    def list_page(
        self, client: OpenChoreoClient, path: str, *, limit: int, cursor: str | None
    ) -> ListPage:
        """One page of a listing; an expired cursor raises CursorExpired."""
        ...

    def event_problem(self, body: Mapping[str, Any]) -> str | None:
        """Why `body` is not an event of this generation, or None."""
        ...

    def is_ignored(self, body: Mapping[str, Any]) -> bool:
        """A valid event about a kind this provider does not ingest (acknowledged, counted)."""
        ...

    def event_delta(self, walk: Walk, event: Event) -> Delta:
        """Re-read what the event names and say what the catalog must do."""
        ...

    def read_ahead(self, walk: Walk, events: Sequence[Event]) -> None:
        """Read at once what handling the next `events` will read (or nothing), for the walk's
        client to answer their `event_delta` from."""
        ...


def takes_event(generation: Generation, body: Mapping[str, Any]) -> bool:
    """Whether `generation` takes the event `body` and ingests what it names."""
    return generation.event_problem(body) is None and not generation.is_ignored(body)


def name_of(resource: Mapping[str, Any], path: str) -> str:
    """A v1 item's name: `metadata.name` (an item without `metadata`: its `name`)."""
    metadata = resource.get("metadata")
    # A dict (decoded JSON) skips the ABC check: this runs for every listed item.
    if type(metadata) is dict or isinstance(metadata, Mapping):
        name = metadata.get("name")
    else:
        name = resource.get("name")
    if not isinstance(name, str) or not name:
        raise _nameless(resource, path)
    return name


def org_era_name_of(resource: Mapping[str, Any], path: str) -> str:
    """An org-era item's name: its own `name`, whatever else it carries (a `metadata` too)."""
    name = resource.get("name")
    if not isinstance(name, str) or not name:
        raise _nameless(resource, path)
    return name


def _nameless(resource: Mapping[str, Any], path: str) -> PermanentError:
    shown = scrub_secrets(repr(dict(resource)))[:200]
    return PermanentError(f"GET {path}: an item has no name: {shown}", path=path)


def confirm_gone(missing: NotFoundError, codes: Collection[str]) -> None:
    """Return when the 404 `missing` is the API's own answer that the object is not there (its
    error body's code is one of `codes`); else raise: a 404 in another shape (a proxy's or an
    ingress's `404 page not found`) says nothing of the object, and taken for "gone" it would
    remove it. The PermanentError fails an event, which is tried again."""
    if missing.code in codes:
        return
    raise PermanentError(
        f"{missing}; not the API's own answer, which carries code {' or '.join(sorted(codes))} "
        "(a proxy or ingress in front of the API without this route?): nothing is removed for "
        "it meanwhile",
        method=missing.method,
        path=missing.path,
        status=missing.status,
        code=missing.code,
    )


EVENT_LISTING_RESTARTS = 3
"""Restarts of a listing an event reads whose cursor expired, before the event fails (as many as
the walk allows one listing in a burst); a rejected cursor restarts it once, as in the walk."""


def every_item(
    read: Callable[[str | None], ListPage],
    path: str,
    *,
    gone_codes: Collection[str],
    missing_is_empty: bool,
) -> list[Resource]:
    """The items of a listing an event reads, every page, `read(cursor)` giving one page in the
    generation's wire format.

    A first page that answers the API's own 404 (its code one of `gone_codes`) says there is
    nothing to list when `missing_is_empty`, else the 404 is raised; a 404 in another shape fails
    the event (`confirm_gone`). A cursor the generation calls expired (CursorExpired) restarts the
    listing from its first page, as the walk does, up to EVENT_LISTING_RESTARTS times (a rejected
    one: once); sent again it would fail again, and the event would hold up the drain."""
    restarts = {"expired": 0, "rejected": 0}
    while True:
        try:
            return _pages(read, path, gone_codes, missing_is_empty)
        except CursorExpired as expired:
            rejected = isinstance(expired, CursorRejected)
            reason = "rejected" if rejected else "expired"
            restarts[reason] += 1
            if rejected and restarts[reason] > 1:
                text = "refused again after the listing restarted once"
                raise _listing_failed(PermanentError, expired, path, text) from None
            if restarts[reason] > EVENT_LISTING_RESTARTS:
                text = (
                    f"the listing's cursor failed again after {EVENT_LISTING_RESTARTS} restarts "
                    "from its first page: the server may be failing on a resource in it (see the "
                    "openchoreo-api logs), or its cursors expire faster than a page takes"
                )
                raise _listing_failed(ProviderError, expired, path, text) from None
            log.info(
                "event_listing_restarted",
                path=path,
                restarts=restarts[reason],
                reason=f"cursor {reason}",
            )


def _listing_failed(
    kind: type[ProviderError], expired: CursorExpired, path: str, text: str
) -> ProviderError:
    """The error that fails an event whose listing's cursor kept failing: `expired`, then why."""
    return kind(
        f"{expired}; {text}", method="GET", path=path, status=expired.status, code=expired.code
    )


def _pages(
    read: Callable[[str | None], ListPage],
    path: str,
    gone_codes: Collection[str],
    missing_is_empty: bool,
) -> list[Resource]:
    items: list[Resource] = []
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        try:
            page = read(cursor)
        except CursorExpired as expired:
            if cursor is None:  # no cursor to blame: starting again would answer the same
                text = "to the listing's first page, which carried no cursor"
                raise _listing_failed(PermanentError, expired, path, text) from None
            raise
        except NotFoundError as missing:
            confirm_gone(missing, gone_codes)
            if cursor or not missing_is_empty:
                raise
            return []
        items += page.items
        if not page.next_cursor:
            return items
        if page.next_cursor in seen or page.next_cursor == cursor:
            # Taken for the end, a cut-short list would remove what it left out.
            raise PermanentError(
                f"GET {path} returned a cursor it had returned before; refusing to loop",
                method="GET",
                path=path,
            )
        seen.add(page.next_cursor)
        cursor = page.next_cursor


def queued_text(item: QueuedItem | None, key: str) -> str:
    value = item.value.get(key) if item is not None and isinstance(item.value, Mapping) else None
    if not isinstance(value, str) or not value:
        where = item.key if item is not None else "(none)"
        raise PermanentError(f"queue item {where!r} has no {key}")
    return value


ABSENT_STATUSES = (404, 405, 501)
"""What a server that does not serve a generation answers its first listing: no such route,
that method not allowed there, or not implemented."""


def says_absent(error: ProviderError) -> bool:
    """Whether the first listing's failure says the server does not serve that generation (so
    `auto` tries the next one), rather than that it serves it and refused (401, 403, 429, 5xx):
    a 404, or a web page where the listing's JSON was due (a web app answers every path). A
    failed token request (an AuthError, even a 404 from a wrong token URL) says nothing of the
    API."""
    if isinstance(error, AuthError):
        return False
    return isinstance(error, NotFoundError | WebPageAnswer) or (
        isinstance(error, PermanentError) and error.status in ABSENT_STATUSES
    )


def check_parent_gone(
    client: OpenChoreoClient, gone_codes: Collection[str], path: str, missing: NotFoundError
) -> None:
    """Return if the parent of the listing `path` that answered 404 answers the API's own 404
    too (it is gone), else fail the burst: a proxy without the route could answer the listing's
    404 (v1 lists an absent namespace's children as empty), and the sweep would empty the parent."""
    parent = path.rpartition("/")[0]
    try:
        client.get_json(parent)
    except NotFoundError as parent_missing:
        confirm_gone(parent_missing, gone_codes)
        return
    raise PermanentError(
        f"{missing}; yet GET {parent} finds it, so the listing itself is missing (a proxy or "
        "ingress in front of the API without this route?); nothing it lists is removed meanwhile",
        method="GET",
        path=path,
        status=missing.status,
        code=missing.code,
    )


def scope_projects(index: IndexReader, ref: str, parent: str, component: str) -> set[str]:
    """The project the catalog holds component entity `ref` in: its scope names it
    (`<parent>/<project>/<component>`, the namespace or org, in both API generations)."""
    scopes = index.entity_scopes([ref]).values()
    return {
        parts[1]
        for scope in scopes
        if len(parts := scope.split("/")) == 3 and parts[::2] == [parent, component] and parts[1]
    }
