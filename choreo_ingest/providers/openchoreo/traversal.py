"""The OpenChoreo provider: a walk through one API generation's listings, one page per `next()`.

The generation (`api_v1`, `api_orgs`) says which listings there are, in which order, and what
their items become; this module keeps the place. Its cursor holds the generation, the phase, the
one listing cursor in use and the position reached in the queue the phase iterates, so it stays
small however big the platform is. Queue pushes and index rows ride in the same page as the
listing that found them, which makes restarting a listing harmless.

Under `openchoreo.api: auto` the first request of a cycle decides the generation: the first page
of v1's namespace listing, else of the org-era organization listing. That page is the walk's
first page, so detection costs no request of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from choreo_ingest.api_address import source_address
from choreo_ingest.clock import Clock
from choreo_ingest.config import AuthConfig, Config, effective_chunk_size
from choreo_ingest.errors import (
    ConfigError,
    CursorExpired,
    CursorRejected,
    NotFoundError,
    PermanentError,
    ProviderError,
    UnsupportedEvent,
    WebPageAnswer,
)
from choreo_ingest.logs import get_logger, register_learned_secret, register_secret
from choreo_ingest.models import (
    API_SOURCE_FACT,
    JSON,
    PROBLEM_FACT,
    Check,
    Delta,
    EntityIteratorResult,
    Event,
    QueuedItem,
)
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.providers.openchoreo.auth import Credentials, NoCredentials, credentials_for
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient, form_poster
from choreo_ingest.providers.openchoreo.data_warnings import collecting, said
from choreo_ingest.providers.openchoreo.generation import (
    Generation,
    Harvest,
    ListPage,
    Walk,
    check_parent_gone,
    says_absent,
    takes_event,
)
from choreo_ingest.providers.openchoreo.generations import (
    api_found_at,
    configured_api,
    detect,
    first_root_page,
    generation_named,
    generations,
    root_missing,
)
from choreo_ingest.providers.openchoreo.listing_stuck import (
    listing_age,
    note_expiry,
    stale_starts_over,
    young,
)
from choreo_ingest.providers.openchoreo.names_freed import NAMES_FREED
from choreo_ingest.providers.openchoreo.overtaken import EventMarks
from choreo_ingest.providers.openchoreo.ratelimit import RequestLimiter, request_limiter
from choreo_ingest.providers.openchoreo.step_over import (
    may_step_over,
    remembered,
    step_over,
    walk_ended,
)
from choreo_ingest.providers.openchoreo.traversal_cursor import (
    FAILURES_STEPPED_OVER,
    ListingGuard,
    ListingPlace,
    TraversalCursor,
    page_head,
    place_after,
    restart_listing,
)

log = get_logger("choreo_ingest.providers.openchoreo")


@dataclass
class OpenChoreoContext:
    """What `around()` yields for one burst: the walk's tools and what this burst has seen."""

    walk: Walk
    facts: dict[str, str]
    clock: Clock
    restarts: dict[str, int] = field(default_factory=dict)
    failed_at: dict[str, list[tuple[int, int] | None]] = field(default_factory=dict)
    """Per listing, where each of its failed cursors failed: (page number, items before that
    page), None when the listing had begun on a cursor stored by an earlier burst."""
    place: ListingPlace | None = None
    listed_once: bool = False
    guard: ListingGuard = field(default_factory=ListingGuard)
    detected_api: str | None = None
    """The generation an event drain found the server to speak, when no cycle had said."""
    api_stated: bool = False
    """This burst has checked that the facts say which generation the cycle speaks."""
    last_failure: str | None = None
    """`BurstContext.last_failure`: the listing it names may be stepped over (`step_over`)."""

    @property
    def client(self) -> OpenChoreoClient:
        return self.walk.client


class OpenChoreoProvider:
    """Walks one OpenChoreo API (whichever generation it serves) into catalog entities."""

    sweep_follower = NAMES_FREED

    def __init__(
        self, config: Config, *, name: str = "openchoreo", transport: object | None = None
    ) -> None:
        self._config = config
        self._name = name
        self._transport = transport
        self._warned_limit: set[str] = set()
        self._marks = EventMarks()
        self._credentials: Credentials | None = None
        """One per process: an OAuth token is granted once and reused across bursts."""
        self._limiter: RequestLimiter | None = None
        """One per process: the drains and the burst of a run share the request caps."""

    @property
    def name(self) -> str:
        return self._name

    source_key = "openchoreo.baseUrl"

    @property
    def source(self) -> str:
        return source_address(self._config.openchoreo.base_url or "")

    @property
    def max_pending_events(self) -> int:
        return self._config.openchoreo.events.max_pending

    def preflight(self, clock: Clock) -> list[Check]:
        from choreo_ingest.providers.openchoreo.preflight import auth_for_check, openchoreo_checks

        try:
            credentials = self._credentials_for(auth_for_check(self._config.openchoreo.auth), clock)
        except ConfigError:  # a secret the config cannot give: said after the server's check
            credentials = NoCredentials()
        return openchoreo_checks(self._config, clock, credentials, self._transport)

    def no_page_advice(self) -> str:
        return "raise openchoreo.incremental.burstLength or lower openchoreo.incremental.chunkSize"

    def around(self, burst: BurstContext) -> AbstractContextManager[OpenChoreoContext]:
        return self._around(burst)

    def credentials(self, clock: Clock) -> Credentials:
        """The process's credentials (secrets and files are read only when a request needs them)."""
        if self._credentials is None:
            self._credentials = self._credentials_for(self._config.openchoreo.auth, clock)
        return self._credentials

    def _credentials_for(self, auth: AuthConfig, clock: Clock) -> Credentials:
        if self._config.secrets_withheld:  # a bug: such a config is for calls that send nothing
            raise RuntimeError("a config read without its secrets cannot make requests")
        return credentials_for(
            auth,
            clock=clock,
            post_form=form_poster(self._config.openchoreo, clock, self._transport),
            on_secret=register_secret,  # a client secret read from its file
            on_token=register_learned_secret,  # token-file contents, issued tokens
        )

    @contextmanager
    def _around(self, burst: BurstContext) -> Iterator[OpenChoreoContext]:
        if self._limiter is None:
            self._limiter = request_limiter(self._config.openchoreo, burst.clock)
        with OpenChoreoClient(
            self._config.openchoreo,
            clock=burst.clock,
            deadline=burst.deadline,
            transport=self._transport,
            credentials=self.credentials(burst.clock),
            cancelled=burst.cancelled,
            limiter=self._limiter,
        ) as client:
            walk = Walk(client, burst.queues, burst.index, self._config, self._name, burst.clock)
            self._marks.forget()
            facts = dict(burst.facts)  # with `apiSource` once this burst finds the API
            yield OpenChoreoContext(walk, facts, burst.clock, last_failure=burst.last_failure)

    # -- events ---------------------------------------------------------------------------

    def event_problem(self, body: Mapping[str, Any]) -> str | None:
        """Why `body` is not an event any configured generation takes, or None."""
        problems = [generation.event_problem(body) for generation in self._event_generations()]
        if any(problem is None for problem in problems):
            return None
        return problems[0]

    def is_ignored(self, body: Mapping[str, Any]) -> bool:
        """Ignored when no generation that takes the event ingests what it names."""
        taking = [g for g in self._event_generations() if g.event_problem(body) is None]
        return bool(taking) and all(generation.is_ignored(body) for generation in taking)

    def handle_event(self, context: OpenChoreoContext, event: Event) -> Delta:
        """Re-read the resource the event names (delta updates between cycles).

        Under `auto`, before any cycle has said which API the server speaks (a new state file,
        or one from before the facts were kept), the server is asked first: an event read
        through the other generation's routes would answer 404 and remove what it names. For
        the same reason only the generation the server speaks handles its events: one that
        generation refuses (an org-era Component event without `project`, a `Namespace` event
        at an org-era server) is unsupported, not read through the other's routes.
        """
        # When what it reads was read (no later than its read-ahead, if there was one): what a
        # listing begun after that shows.
        applied_at, ahead = context.clock.now(), context.client.kept.read_at
        applied_at = applied_at if ahead is None else min(applied_at, ahead)
        spoken = context.facts.get("api") or context.detected_api
        if spoken is None and configured_api(self._config) == "auto":
            spoken = context.detected_api = self._detect(context)[0].name
        candidates = self._event_generations(spoken)
        if spoken is not None:
            candidates = [generation for generation in candidates if generation.name == spoken]
        body = event.body()
        for generation in candidates:
            if takes_event(generation, body):
                with collecting() as warnings:
                    delta = generation.event_delta(context.walk, event)
                if warnings:
                    delta = replace(
                        delta, index=[*delta.index, *said(context.walk.index, warnings)]
                    )
                return self._marks.marked(context.walk.index, delta, applied_at)
        speaks = "" if spoken is None else f": the server speaks the {spoken} API"
        raise UnsupportedEvent(f"unsupported {event.kind} event for {event.name!r}{speaks}")

    def read_ahead(self, context: OpenChoreoContext, events: Sequence[Event]) -> None:
        """Read at once what the next `events` will read (`Generation.read_ahead`; this drain's
        client keeps the answers), through the generation `handle_event` takes them to: none
        under `auto` before the server said which it speaks (the first event asks it)."""
        spoken = context.facts.get("api") or context.detected_api
        if spoken is None and configured_api(self._config) == "auto":
            return
        for generation in self._event_generations(spoken):
            if spoken is None or generation.name == spoken:
                taken = [event for event in events if takes_event(generation, event.body())]
                generation.read_ahead(context.walk, taken)
                return

    def probe(self, context: OpenChoreoContext) -> None:
        """One item of the root listing of the API spoken (`generations.first_root_page`)."""
        spoken = context.facts.get("api") or context.detected_api
        unknown = spoken is None and configured_api(self._config) == "auto"
        candidates = self._event_generations(spoken)
        first_root_page(context.client, candidates, lambda _: 1, unknown=unknown)

    def _event_generations(self, spoken: str | None = None) -> list[Generation]:
        api = configured_api(self._config)
        if api != "auto":
            return [generation_named(api)]
        return list(generations(first=spoken))

    # -- the walk ---------------------------------------------------------------------------

    def next(self, context: OpenChoreoContext, cursor: JSON) -> EntityIteratorResult:
        sent_before = context.client.requests_sent
        facts: dict[str, str | None] = {}
        if cursor is None:
            began = context.clock.now()
            state, generation, first = self._start_cycle(context, facts)
            state.listed_at = self._marks.listing_began(context.walk.index, began)
        else:
            try:
                state = TraversalCursor.from_json(cursor)
            except PermanentError as error:
                raise PermanentError(
                    f"{error}; written by another choreo-ingest version? `choreo-ingest reset "
                    f"{self._name}` starts the cycle again"
                ) from None
            generation, first = generation_named(state.api), None
            if not context.api_stated and context.facts.get("api") != generation.name:
                facts["api"] = generation.name  # a cycle an earlier release began did not say
        context.api_stated = True
        resets_before = state.cursor_reset_count
        harvest, done = self._step(context, state, generation, first, facts)
        if done:
            walk_ended(state, facts, context.facts)
        counters = {"requests": context.client.requests_sent - sent_before}
        if state.cursor_reset_count > resets_before:
            counters["cursor_resets"] = state.cursor_reset_count - resets_before
        return EntityIteratorResult(
            done=done,
            entities=harvest.entities,
            cursor=None if done else state.to_json(generation),
            queue_items=harvest.queue_items,
            counters=counters,
            index=harvest.index,
            facts=facts,
            removals=harvest.removals,
            kept_scopes=harvest.kept_scopes,
        )

    def _start_cycle(
        self, context: OpenChoreoContext, facts: dict[str, str | None]
    ) -> tuple[TraversalCursor, Generation, ListPage | None]:
        """The generation for this cycle, and the first page of its first listing if detecting
        it needed that page."""
        api = configured_api(self._config)
        first: ListPage | None = None
        if api == "auto":
            generation, first = self._detect(context)
        else:
            generation = generation_named(api)
        facts["api"] = generation.name
        facts[PROBLEM_FACT] = None
        return TraversalCursor(api=generation.name), generation, first

    def _detect(self, context: OpenChoreoContext) -> tuple[Generation, ListPage]:
        detected = detect(context.client, context.facts, self.source, self._limit, self._name)
        context.listed_once = True
        return detected

    def _step(
        self,
        context: OpenChoreoContext,
        state: TraversalCursor,
        generation: Generation,
        first: ListPage | None,
        facts: dict[str, str | None],
    ) -> tuple[Harvest, bool]:
        phases = generation.phases
        while state.phase < len(phases):
            phase = phases[state.phase]
            together = state.walked_together(phases)
            item: QueuedItem | None = None
            if phase.queue is not None:
                item = _item_after(context, phase.queue, state.position)
                if item is None:
                    state.begin_phase(phases, together.stop)
                    continue
            path = phase.path(item)
            try:
                listed = first or self._list(context, state, generation, path, facts)
            except ProviderError as error:
                failed, known = context.last_failure, context.facts
                if item is None or not may_step_over(
                    context.walk, generation, state, item, error, last_failure=failed, known=known
                ):
                    raise
                context.guard.forget()
                context.place = None
                skipped = step_over(state, generation, item, path, error, facts, known, self._name)
                return skipped, False
            if isinstance(listed, Harvest):  # restarted, or the parent is gone
                return listed, False
            context.guard.check(path, state.api_cursor, listed, state.head)
            if item is None and state.api_cursor is None:  # the API answers at this address
                facts[API_SOURCE_FACT] = context.facts[API_SOURCE_FACT] = self.source
            state.passed(path)
            state.head = page_head(listed.items) if listed.next_cursor else None
            context.place = place_after(context.place, path, state.api_cursor, len(listed.items))
            with collecting() as warnings:
                harvest = phase.harvest(context.walk, item, listed.items)
            harvest.index += said(context.walk.index, warnings)
            harvest = self._marks.without_overtaken(
                context.walk.index, harvest, state.listed_at, self._name
            )
            if listed.next_cursor:
                state.api_cursor = listed.next_cursor
                return harvest, False
            state.api_cursor = None
            stale_starts_over(state, facts, ended=True)  # the listing that kept restarting
            if item is None:
                state.begin_phase(phases, state.phase + 1)
                return harvest, state.phase >= len(phases)
            if state.phase + 1 < together.stop:  # the item's next listing
                state.phase += 1
                return harvest, False
            state.item_done(phases, item.position)
            last = together.stop == len(phases)
            done = last and _item_after(context, phase.queue or "", item.position) is None
            return harvest, done
        return Harvest(), True

    def _list(
        self,
        context: OpenChoreoContext,
        state: TraversalCursor,
        generation: Generation,
        path: str,
        facts: dict[str, str | None],
    ) -> ListPage | Harvest:
        """One page of the current listing; instead, nothing when the listing restarts (its cursor
        expired) or its parent is gone (deleted mid-walk: the walk goes on with the next parent, and
        the sweep, behind its guards, removes what it held); the state says what comes next."""
        stored = not context.listed_once and state.api_cursor is not None
        context.listed_once = True
        if state.api_cursor is None:
            state.listed_at = self._marks.listing_began(context.walk.index, context.clock.now())
        try:
            listed = generation.list_page(
                context.client, path, limit=self._limit(generation), cursor=state.api_cursor
            )
        except CursorExpired as expired:
            if state.api_cursor is None:
                raise
            age = listing_age(state, context.clock.now())
            listing = generation.phases[state.phase].name
            stuck_now = note_expiry(state, listing, facts, expired, stored=stored, age=age)
            self._restart(
                context, state, generation, path, expired, fresh=not stored and young(age)
            )
            if stuck_now:  # once a streak, and only as the page that says it lands: cron mails it
                log.warning("listing_stuck", provider=self._name, problem=facts.get(PROBLEM_FACT))
            return Harvest()
        except PermanentError as missing:
            phase = generation.phases[state.phase]
            first = state.phase == 0 and state.api_cursor is None  # the root listing's first page
            absent = first and says_absent(missing)  # there a 405 or 501 too, as `auto` takes it
            if not (absent or isinstance(missing, NotFoundError | WebPageAnswer)):
                raise
            if phase.queue is None or not isinstance(missing, NotFoundError):
                stated = first and configured_api(self._config) != "auto"
                found = generation.name if api_found_at(context.facts, self.source) else None
                raise root_missing(context.client, generation, missing, stated, found) from None
            check_parent_gone(context.client, generation.gone_codes, path, missing)
            state.api_cursor = state.head = None
            stale_starts_over(state, facts, ended=True)
            item = _item_after(context, phase.queue, state.position)
            if item is None:
                return Harvest()
            state.item_done(generation.phases, item.position)
            log.info("listing_parent_gone", provider=self._name, path=path)
            return Harvest()
        if stored:
            stale_starts_over(state, facts)
        return listed

    def _restart(
        self,
        context: OpenChoreoContext,
        state: TraversalCursor,
        generation: Generation,
        path: str,
        expired: CursorExpired,
        *,
        fresh: bool,
    ) -> None:
        """Read the listing from its first page again (`restart_listing`: past its limits the
        burst fails)."""
        steps_over = generation.phases[state.phase].queue is not None  # not the root listing
        remembered_here = path in remembered(context.facts)
        restarts, failed_at = restart_listing(
            state,
            context.restarts,
            context.failed_at,
            context.place,
            path,
            expired,
            fresh=fresh,
            fails_at_most=(1 if remembered_here else FAILURES_STEPPED_OVER) if steps_over else None,
        )
        context.place = None
        context.guard.forget()
        log.info(
            "listing_restarted",
            provider=self._name,
            api=generation.name,
            path=path,
            restarts=restarts,
            reason="cursor rejected" if isinstance(expired, CursorRejected) else "cursor expired",
            page=None if failed_at is None else failed_at[0],
        )

    def _limit(self, generation: Generation) -> int:
        size, warning = effective_chunk_size(self._config, generation.name)
        if warning and generation.name not in self._warned_limit:
            self._warned_limit.add(generation.name)
            # Configured, like a config warning: INFO, shown on a terminal, by -v and `check`
            message = f"openchoreo.incremental.chunkSize: {warning}"
            log.info("chunk_size_capped", provider=self._name, message=message)
        return size


def _item_after(context: OpenChoreoContext, queue: str, position: int) -> QueuedItem | None:
    items = context.walk.queues.read(queue, after=position, limit=1)
    return items[0] if items else None
