"""The OpenChoreo provider: a three-phase walk, one API list page per `next()` call.

    orgs        GET /orgs                                   -> Domain entities, push each org
    projects    per queued org: GET /orgs/{org}/projects    -> System entities, push each project
    components  per queued project: GET .../components, then one detail call per component
                (`include=type,workload`)                   -> Component + API entities

The cursor holds only the three listings' API cursors and the positions reached in the engine's
durable org and project queues, so it stays small however big the platform is. Queue pushes ride
in the same page as the listing that found them; the engine drops a re-push of a key it already
holds in this cycle, which makes restarting a listing harmless.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from choreo_ingest.config import Config
from choreo_ingest.errors import CursorExpired, PermanentError
from choreo_ingest.models import (
    JSON,
    Delta,
    Entity,
    EntityIteratorResult,
    Event,
    QueuedItem,
    QueueItem,
)
from choreo_ingest.providers.base import BurstContext, QueueReader
from choreo_ingest.providers.openchoreo.client import (
    MAX_PAGE_LIMIT,
    ListPage,
    NotFound,
    NotFoundError,
    OpenChoreoClient,
    default_user_agent,
)
from choreo_ingest.providers.openchoreo.deltas import event_delta
from choreo_ingest.providers.openchoreo.entities import (
    being_deleted,
    component_entities,
    live,
    organization_entity,
    project_entity,
)

Phase = Literal["orgs", "projects", "components"]
PHASES: tuple[Phase, ...] = ("orgs", "projects", "components")
ORG_QUEUE = "orgs"
PROJECT_QUEUE = "projects"
BEFORE_FIRST = -1
"""Queue position before any item (positions are never negative)."""
DETAIL_PARAMS = {"include": "type,workload"}


@dataclass
class TraversalCursor:
    """Where the walk stands; serialized with the camelCase keys of DESIGN.md."""

    phase: Phase = "orgs"
    org_api_cursor: str | None = None
    project_api_cursor: str | None = None
    component_api_cursor: str | None = None
    org_position: int = BEFORE_FIRST
    """Position of the last org whose projects are all listed."""
    project_position: int = BEFORE_FIRST
    """Position of the last project whose components are all listed."""
    cursor_reset_count: int = 0
    bad_cursor_restarts: int = 0
    """Restarts of the current listing after a 400 on its cursor; a second 400 fails the burst."""

    def to_json(self) -> dict[str, JSON]:
        return {
            "phase": self.phase,
            "orgApiCursor": self.org_api_cursor,
            "projectApiCursor": self.project_api_cursor,
            "componentApiCursor": self.component_api_cursor,
            "orgPosition": self.org_position,
            "projectPosition": self.project_position,
            "cursorResetCount": self.cursor_reset_count,
            "badCursorRestarts": self.bad_cursor_restarts,
        }

    @classmethod
    def from_json(cls, raw: JSON) -> TraversalCursor:
        """The cursor the engine stored; None starts a new cycle."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping) or raw.get("phase") not in PHASES:
            raise PermanentError(f"not an OpenChoreo traversal cursor: {raw!r:.200}")
        return cls(
            phase=raw["phase"],
            org_api_cursor=_optional_text(raw, "orgApiCursor"),
            project_api_cursor=_optional_text(raw, "projectApiCursor"),
            component_api_cursor=_optional_text(raw, "componentApiCursor"),
            org_position=_whole_number(raw, "orgPosition", BEFORE_FIRST),
            project_position=_whole_number(raw, "projectPosition", BEFORE_FIRST),
            cursor_reset_count=_whole_number(raw, "cursorResetCount", 0),
            bad_cursor_restarts=_whole_number(raw, "badCursorRestarts", 0),
        )

    def finish_listing(self) -> None:
        self.org_api_cursor = self.project_api_cursor = self.component_api_cursor = None
        self.bad_cursor_restarts = 0


@dataclass(frozen=True)
class OpenChoreoContext:
    """What `around()` yields for one burst."""

    client: OpenChoreoClient
    queues: QueueReader


class _Outcome(enum.Enum):
    GONE = "gone"  # the listed org or project answered 404: skip it
    RESTARTED = "restarted"  # the listing's cursor was refused: read its first page next


GONE = _Outcome.GONE
RESTARTED = _Outcome.RESTARTED


@dataclass
class _Page:
    """What one `next()` call gathers before it becomes an EntityIteratorResult."""

    entities: list[Entity] = field(default_factory=list)
    queue_items: list[QueueItem] = field(default_factory=list)
    cursor_resets: int = 0
    done: bool = False


class OpenChoreoProvider:
    """Walks organizations, projects and components of one OpenChoreo API."""

    def __init__(
        self, config: Config, *, name: str = "openchoreo", transport: object | None = None
    ) -> None:
        self._config = config
        self._name = name
        self._transport = transport
        self._limit = min(config.incremental.chunk_size, MAX_PAGE_LIMIT)

    @property
    def name(self) -> str:
        return self._name

    def around(self, burst: BurstContext) -> AbstractContextManager[OpenChoreoContext]:
        return self._around(burst)

    @contextmanager
    def _around(self, burst: BurstContext) -> Iterator[OpenChoreoContext]:
        with OpenChoreoClient(
            self._config.openchoreo,
            clock=burst.clock,
            deadline=burst.deadline,
            transport=self._transport,
            user_agent=default_user_agent(),
        ) as client:
            yield OpenChoreoContext(client=client, queues=burst.queues)

    def handle_event(self, context: OpenChoreoContext, event: Event) -> Delta:
        """Re-read the resource the event names (delta updates between cycles)."""
        return event_delta(context.client, event, self._config.mapping, self._name)

    def next(self, context: OpenChoreoContext, cursor: JSON) -> EntityIteratorResult:
        state = TraversalCursor.from_json(cursor)
        sent_before = context.client.requests_sent
        page = self._step(context, state)
        counters = {"requests": context.client.requests_sent - sent_before}
        if page.cursor_resets:
            counters["cursor_resets"] = page.cursor_resets
        return EntityIteratorResult(
            done=page.done,
            entities=page.entities,
            cursor=None if page.done else state.to_json(),
            queue_items=page.queue_items,
            counters=counters,
        )

    def _step(self, context: OpenChoreoContext, state: TraversalCursor) -> _Page:
        if state.phase == "orgs":
            return self._orgs_page(context, state)
        if state.phase == "projects":
            org = _item_after(context.queues, ORG_QUEUE, state.org_position)
            if org is not None:
                return self._projects_page(context, state, org)
            state.phase = "components"
            state.finish_listing()
        project = _item_after(context.queues, PROJECT_QUEUE, state.project_position)
        if project is None:
            return _Page(done=True)
        return self._components_page(context, state, project)

    def _orgs_page(self, context: OpenChoreoContext, state: TraversalCursor) -> _Page:
        listed = self._list(context, state, "/orgs", state.org_api_cursor, skippable=False)
        if not isinstance(listed, ListPage):  # restarted: /orgs is never skipped
            return _Page(cursor_resets=1)
        page = _Page()
        for org in listed.items:
            name = _name_of(org, "/orgs")
            page.entities.append(organization_entity(org, self._config.mapping, self._name))
            page.queue_items.append(QueueItem(queue=ORG_QUEUE, key=name, value={"name": name}))
        if listed.next_cursor:
            state.org_api_cursor = listed.next_cursor
        else:
            state.phase = "projects"
            state.finish_listing()
        return page

    def _projects_page(
        self, context: OpenChoreoContext, state: TraversalCursor, queued: QueuedItem
    ) -> _Page:
        org = _queued_name(queued, "name")
        path = f"/orgs/{quote(org, safe='')}/projects"
        listed = self._list(context, state, path, state.project_api_cursor, skippable=True)
        if listed is RESTARTED:
            return _Page(cursor_resets=1)
        page = _Page()
        if isinstance(listed, ListPage):
            for project in live(listed.items):
                name = _name_of(project, path)
                page.entities.append(project_entity(project, org, self._config.mapping, self._name))
                page.queue_items.append(
                    QueueItem(
                        queue=PROJECT_QUEUE,
                        key=f"{org}/{name}",
                        value={"org": org, "project": name},
                    )
                )
            if listed.next_cursor:
                state.project_api_cursor = listed.next_cursor
                return page
        state.org_position = queued.position
        state.finish_listing()
        return page

    def _components_page(
        self, context: OpenChoreoContext, state: TraversalCursor, queued: QueuedItem
    ) -> _Page:
        org = _queued_name(queued, "org")
        project = _queued_name(queued, "project")
        path = f"/orgs/{quote(org, safe='')}/projects/{quote(project, safe='')}/components"
        listed = self._list(context, state, path, state.component_api_cursor, skippable=True)
        if listed is RESTARTED:
            return _Page(cursor_resets=1)
        page = _Page()
        if isinstance(listed, ListPage):
            names = [_name_of(component, path) for component in live(listed.items)]
            details = context.client.get_many(
                [(f"{path}/{quote(name, safe='')}", DETAIL_PARAMS) for name in names]
            )
            for detail in details:
                if not isinstance(detail, NotFound) and not being_deleted(detail):
                    page.entities.extend(
                        component_entities(detail, org, project, self._config.mapping, self._name)
                    )
            if listed.next_cursor:
                state.component_api_cursor = listed.next_cursor
                return page
        state.project_position = queued.position
        state.finish_listing()
        page.done = _item_after(context.queues, PROJECT_QUEUE, queued.position) is None
        return page

    def _list(
        self,
        context: OpenChoreoContext,
        state: TraversalCursor,
        path: str,
        api_cursor: str | None,
        *,
        skippable: bool,
    ) -> ListPage | _Outcome:
        """One page of a listing; GONE when its parent answered 404 (if `skippable`), RESTARTED
        when its cursor was refused and the listing starts over (the state already says so)."""
        try:
            listed = context.client.list_page(path, limit=self._limit, cursor=api_cursor)
        except CursorExpired:
            if api_cursor is None:
                raise
            _restart(state)
            return RESTARTED
        except NotFoundError:
            if not skippable:
                raise
            return GONE
        except PermanentError as error:
            if error.status != 400 or api_cursor is None or state.bad_cursor_restarts:
                raise
            _restart(state)
            state.bad_cursor_restarts = 1
            return RESTARTED
        if api_cursor is not None and listed.next_cursor == api_cursor:
            raise PermanentError(
                f"GET {path} returned the same cursor again; refusing to loop",
                method="GET",
                path=path,
            )
        return listed


def _restart(state: TraversalCursor) -> None:
    """Drop the current listing's API cursor so the next call reads its first page again."""
    if state.phase == "orgs":
        state.org_api_cursor = None
    elif state.phase == "projects":
        state.project_api_cursor = None
    else:
        state.component_api_cursor = None
    state.cursor_reset_count += 1


def _item_after(queues: QueueReader, queue: str, position: int) -> QueuedItem | None:
    items = queues.read(queue, after=position, limit=1)
    return items[0] if items else None


def _name_of(item: Mapping[str, Any], path: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise PermanentError(f"GET {path}: an item has no name: {dict(item)!r:.200}", path=path)
    return name


def _queued_name(queued: QueuedItem, key: str) -> str:
    value = queued.value.get(key) if isinstance(queued.value, Mapping) else None
    if not isinstance(value, str) or not value:
        raise PermanentError(f"queue item {queued.key!r} has no {key}: {queued.value!r:.200}")
    return value


def _optional_text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    raise PermanentError(f"traversal cursor field {key} is not a string: {value!r:.80}")


def _whole_number(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PermanentError(f"traversal cursor field {key} is not an integer: {value!r:.80}")
