"""Stepping over a listing the server keeps failing on, so that the rest of the walk goes on.

One object the API server cannot serve makes every page that holds it answer 500, every time:
OpenChoreo converts a page's custom resources to its API types all at once and fails the whole
page on one (`handlers/convert.go`, `convertList`), and Kubernetes fails a namespace's whole
list when one of its objects cannot be decoded or converted (a CRD upgraded under it). The walk
would stop at that listing for good: its cycle would never complete, so nothing would be swept,
and the namespaces after it would never be walked.

So a burst that fails on a listing of one queued item (a namespace's projects, workloads or
components; the org era's projects of an organization, components of a project) steps over that
item for the cycle, when all of these hold:

- the listing answered HTTP 500 again and again, which is not an outage's answer (a timeout, a
  connection error, a proxy's 502-504, the burst's deadline) nor an expired cursor's:
  - a page asked for with a cursor handed out in the same burst (one that cannot have expired
    unless the server keeps cursors for less than a page takes) failed FAILURES_STEPPED_OVER
    times in a row at the same place (`TraversalCursor.failing`, counted across bursts: a long
    listing re-read from its start may not reach that page again within one burst);
  - or a request answered 500 on every attempt (a listing's first page; any org-era page) and
    the burst before this one failed with a 500 to that same listing;
  - either once, when the walk before stepped over this listing: a namespace that stays broken
    costs no failed burst (and no cron mail) a cycle;
- the server answers, right after, the same listing of other items (`server_answers`): a
  failure that hits every such listing (the resource's conversion webhook down) is an outage,
  and the burst fails as before. The root listing is never stepped over.

The item's entities and index rows are kept as the cycle before left them (`kept_scopes`: the
item's scope, the whole organization's for an org-era project, whose API names the organization
holds; not what a blocked sweep holds back) and the walk goes on with the next item. The fact
`listingsSkipped` makes it a health problem until a walk ends without stepping over anything
(`GET <path>` in it names each listing), and the hidden `listingsSkippedPaths` remembers the
paths for the next walk.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

from choreo_ingest.errors import (
    DeadlineExceeded,
    NotFoundError,
    ProviderError,
    TokenUnavailable,
    TransientError,
)
from choreo_ingest.logs import get_logger
from choreo_ingest.models import SKIPPED_FACT, SKIPPED_PATHS_FACT, QueuedItem
from choreo_ingest.providers.openchoreo.generation import Generation, Harvest, Phase, Walk
from choreo_ingest.providers.openchoreo.generations import first_root_page
from choreo_ingest.providers.openchoreo.listing_stuck import stale_starts_over
from choreo_ingest.providers.openchoreo.traversal_cursor import (
    BEFORE_FIRST,
    FAILURES_STEPPED_OVER,
    SKIPS_KEPT,
    TraversalCursor,
)

log = get_logger("choreo_ingest.providers.openchoreo")

SKIPS_NAMED = 5
"""Listings stepped over that the health problem names (it counts the rest)."""
NEIGHBOURS_ASKED = 3
"""Other items whose same listing `server_answers` asks at most."""
FAILED_ON_CONTENT = 500
"""The status of a page the server fails to build; a gateway's 502-504 are not stepped over."""


def may_step_over(
    walk: Walk,
    generation: Generation,
    state: TraversalCursor,
    item: QueuedItem,
    error: ProviderError,
    *,
    last_failure: str | None,
    known: Mapping[str, str],
) -> bool:
    """Whether the listing of `item` in the current phase of `state`, which failed with
    `error`, is stepped over (the module's rules); `last_failure`: why the burst before this one
    failed, if it did; `known`: the facts stored, which name the listings stepped over before."""
    phase = generation.phases[state.phase]
    path = phase.path(item)
    if not fails_on_content(error, path):
        return False
    broken = remembered(known)
    before = path in broken
    if isinstance(error, TransientError):  # one request's every attempt (any org-era page)
        evident = before or (last_failure or "").startswith(f"GET {path}: HTTP 500")
    else:  # a page whose fresh cursors kept failing (`traversal_cursor.restart_listing`)
        evident = state.failures_at(path) >= (1 if before else FAILURES_STEPPED_OVER)
    return evident and server_answers(walk, generation, phase, item, {*broken, *state.skipped})


def step_over(
    state: TraversalCursor,
    generation: Generation,
    item: QueuedItem,
    path: str,
    error: ProviderError,
    facts: dict[str, str | None],
    known: Mapping[str, str],
    provider: str,
) -> Harvest:
    """Go on with the item after `item`, keeping what its listings brought in the cycle before;
    `facts` gets the health problem, which until the walk's end also names the listings `known`
    says the cycle before stepped over."""
    phases = generation.phases
    scope = phases[state.phase].scope(item)
    before = remembered(known)
    state.note_skip(path)
    overflow = state.skipped_count - len(state.skipped)
    facts.update(skipped_facts(list(dict.fromkeys(state.skipped + before)), overflow))
    state.api_cursor = state.head = None
    state.forget_failure()
    stale_starts_over(state, facts, ended=True)
    state.item_done(phases, item.position)
    # A warning (cron mails it) the first time; after that the problem `health` shows says it.
    (log.info if path in before else log.warning)(
        "listing_stepped_over", provider=provider, path=path, kept=scope, error=str(error)
    )
    return Harvest(kept_scopes=[scope])


def walk_ended(
    state: TraversalCursor, facts: dict[str, str | None], known: Mapping[str, str]
) -> None:
    """The walk's end: `facts` says what it stepped over, or that it stepped over nothing."""
    if state.skipped_count or SKIPPED_PATHS_FACT in known:
        facts.update(skipped_facts(state.skipped, state.skipped_count - len(state.skipped)))


def remembered(known: Mapping[str, str]) -> list[str]:
    """The listings the facts say were stepped over (an unreadable fact: none)."""
    try:
        paths = json.loads(known.get(SKIPPED_PATHS_FACT) or "[]")
    except ValueError:
        return []
    if not isinstance(paths, list):
        return []
    return [path for path in paths if isinstance(path, str)]


def skipped_facts(paths: list[str], overflow: int) -> dict[str, str | None]:
    """The facts of listings stepped over: `paths` and `overflow` more (none: both removed)."""
    if not paths:
        return {SKIPPED_FACT: None, SKIPPED_PATHS_FACT: None}
    kept = paths[:SKIPS_KEPT]
    return {
        SKIPPED_FACT: skipped_problem(kept, overflow + len(paths) - len(kept)),
        SKIPPED_PATHS_FACT: json.dumps(kept),
    }


def fails_on_content(error: ProviderError, path: str) -> bool:
    """Whether `error` is the answer of a server failing on what a page of listing `path`
    holds: HTTP 500 to that listing's request on every attempt (not cut short by the burst's
    deadline or a stop; not the token endpoint's), or on fresh cursors again and again; not a
    sign that the server cannot be reached or is slow."""
    if error.status != FAILED_ON_CONTENT or error.path != path or error.method != "GET":
        return False
    if isinstance(error, DeadlineExceeded | TokenUnavailable):
        return False
    return not isinstance(error, TransientError) or error.exhausted


def server_answers(
    walk: Walk, generation: Generation, phase: Phase, item: QueuedItem, broken: Collection[str]
) -> bool:
    """Whether the server answers, right after, the same listing of other items (up to
    NEIGHBOURS_ASKED, not those `broken` names), so that it does not fail every such listing, as
    when the resource's conversion webhook is down: one holding items settles it; else one that
    failed says no; when none is at hand (a single namespace) or those asked are empty (an empty
    listing needs no conversion), the first item of the root listing answers for them."""
    queue = phase.queue or ""
    others = {
        other.position: other
        for after in (item.position, BEFORE_FIRST)
        for other in walk.queues.read(queue, after=after, limit=NEIGHBOURS_ASKED + 1)
        if other.position != item.position and phase.path(other) not in broken
    }
    failed = False
    for other in list(others.values())[:NEIGHBOURS_ASKED]:
        try:
            page = generation.list_page(walk.client, phase.path(other), limit=1, cursor=None)
        except NotFoundError:  # gone meanwhile: says nothing of the server
            continue
        except ProviderError:
            failed = True
            continue
        if page.items:
            return True
    if failed:
        return False
    try:
        first_root_page(walk.client, [generation], lambda _: 1, unknown=False)
    except ProviderError:
        return False
    return True


def skipped_problem(paths: list[str], overflow: int) -> str:
    """The health problem of a walk that stepped over the listings `paths` and `overflow` more."""
    count = len(paths) + overflow
    named = ", ".join(f"GET {path}" for path in paths[:SKIPS_NAMED])
    more = count - min(len(paths), SKIPS_NAMED)
    held, them = ("it", "it") if count == 1 else ("they", "them")
    return (
        f"the walk stepped over {count} listing{'' if count == 1 else 's'} the server failed "
        f"with HTTP 500 again and again: {named}{f' and {more} more' if more else ''}; what "
        f"{held} held is kept as the cycle before found it. The openchoreo-api logs name a "
        "resource it cannot serve (repair or delete it; if they name none, its cursors may "
        "expire faster than a page takes: lower openchoreo.incremental.chunkSize); each cycle "
        f"lists {them} again"
    )
