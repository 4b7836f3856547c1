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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from choreo_ingest.config import Config
from choreo_ingest.errors import AuthError, NotFoundError, PermanentError, ProviderError
from choreo_ingest.logs import scrub_secrets
from choreo_ingest.models import Delta, Entity, Event, IndexEntry, QueuedItem, QueueItem
from choreo_ingest.providers.base import IndexReader, QueueReader
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient

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

    def add(self, other: Harvest) -> None:
        self.entities += other.entities
        self.queue_items += other.queue_items
        self.index += other.index


@dataclass(frozen=True)
class Walk:
    """What a phase or an event handler may use during one burst (or one inbox drain)."""

    client: OpenChoreoClient
    queues: QueueReader
    index: IndexReader
    config: Config
    provider: str


class Phase(Protocol):
    """One kind of listing in the walk: either a single listing (`queue` None) or one listing per
    item of a queue that an earlier phase filled."""

    @property
    def name(self) -> str: ...

    @property
    def queue(self) -> str | None: ...

    def path(self, item: QueuedItem | None) -> str:
        """The listing's path below the API root, for this queue item."""
        ...

    def harvest(self, walk: Walk, item: QueuedItem | None, resources: list[Resource]) -> Harvest:
        """Turn one page of the listing into entities, queue pushes and index rows."""
        ...


class Generation(Protocol):
    """One OpenChoreo API generation."""

    @property
    def name(self) -> str:
        """What `openchoreo.api` calls it, and what `status` shows: `v1`, `orgs`."""
        ...

    @property
    def max_limit(self) -> int:
        """The largest page the API serves; larger `limit` values are clamped by the server."""
        ...

    @property
    def phases(self) -> Sequence[Phase]: ...

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
    `auto` tries the next one), rather than that it serves it and refused (401, 403, 429, 5xx).
    A failed token request (an AuthError, even a 404 from a wrong token URL) says nothing of the
    API."""
    if isinstance(error, AuthError):
        return False
    return isinstance(error, NotFoundError) or (
        isinstance(error, PermanentError) and error.status in ABSENT_STATUSES
    )
