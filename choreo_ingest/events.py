"""Event-driven delta updates: taking events into the inbox, and draining it at the start of a run.

An event says what changed, not the new content: the provider re-reads that one resource and the
resulting delta goes through the same tables as a page, so the sweep, the change log and the
metrics stay exact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config
from choreo_ingest.errors import AuthError, ChoreoIngestError, TransientError
from choreo_ingest.lock import RunLock
from choreo_ingest.models import Event
from choreo_ingest.providers.base import BurstContext, EventHandlingProvider
from choreo_ingest.store import Store, StoreQueueReader

log = structlog.get_logger("choreo_ingest.events")

KINDS = ("Organization", "Project", "Component")
ACTIONS = ("created", "updated", "deleted")
MAX_EVENT_ATTEMPTS = 5
"""An event whose re-read failed this many times is parked (shown by `status`), not retried."""
KUBERNETES_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
"""Organization, project and component names: an event naming anything else (`a/b`, `..`) is
refused, since a name becomes one URL path segment and one level of the removal scope."""


@dataclass(frozen=True)
class Rejected:
    index: int
    problem: str

    def __str__(self) -> str:
        return f"event {self.index}: {self.problem}"


@dataclass
class ParsedEvents:
    valid: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


@dataclass
class DrainStats:
    applied: int = 0
    retried: int = 0
    parked: int = 0
    upserted: int = 0
    removed: int = 0


def parse_events(text: str) -> ParsedEvents:
    """One JSON object, a JSON array of them, or NDJSON; each event checked on its own."""
    parsed = ParsedEvents()
    stripped = text.strip()
    if not stripped:
        parsed.rejected.append(Rejected(1, "no events in the input"))
        return parsed
    try:
        document = json.loads(stripped)
        items: list[tuple[int, Any]] = (
            list(enumerate(document, start=1)) if isinstance(document, list) else [(1, document)]
        )
    except json.JSONDecodeError:
        items = []
        for number, line in enumerate(stripped.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                parsed.rejected.append(Rejected(number, f"not JSON ({error.msg})"))
    for index, item in items:
        problem = event_problem(item)
        if problem:
            parsed.rejected.append(Rejected(index, problem))
        else:
            parsed.valid.append(item)
    return parsed


def event_problem(item: object) -> str | None:
    """Why `item` is not a usable OpenChoreo event, or None."""
    if not isinstance(item, Mapping):
        return f"expected a JSON object, got {type(item).__name__}"
    kind, action = item.get("kind"), item.get("action")
    if kind not in KINDS:
        return f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})"
    if action not in ACTIONS:
        return f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})"
    for key in ("name", *_required_scope(str(kind))):
        value = item.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"{kind} event needs a non-empty {key!r}"
        if not KUBERNETES_NAME.fullmatch(value):
            return f"{key} {value!r:.80} is not an OpenChoreo name (lowercase a-z, 0-9, '-', '.')"
    return None


def _required_scope(kind: str) -> tuple[str, ...]:
    return {"Organization": (), "Project": ("namespace",), "Component": ("namespace", "project")}[
        kind
    ]


def to_event(body: Mapping[str, Any]) -> Event:
    return Event(
        kind=body["kind"],
        name=body["name"],
        action=body["action"],
        namespace=body.get("namespace"),
        project=body.get("project"),
    )


def store_events(
    state_path: Path,
    provider: str,
    bodies: list[dict[str, Any]],
    clock: Clock,
    *,
    rejected: int = 0,
) -> int:
    """Put events in the inbox without the run lock (a burst may be running); count `rejected`
    ones (for `choreo_ingest_events_total{outcome="rejected"}`). Returns how many were stored."""
    with Store.open(state_path) as store:
        if store.pending_migrations():
            with RunLock(state_path):
                store.migrate()
        stored = len(store.add_events(provider, bodies, clock.now()))
        if rejected:
            store.bump_counters(provider, {"events_rejected": rejected})
        return stored


def drain_inbox(
    store: Store,
    provider: EventHandlingProvider,
    config: Config,
    clock: Clock,
    cancelled: Callable[[], bool],
) -> DrainStats:
    """Apply this provider's pending events in arrival order.

    A failed event keeps its place with one more attempt (parked after MAX_EVENT_ATTEMPTS).
    A transient or auth failure says the API is unwell, so the drain stops there instead of
    spending every event's attempts. Any other failure of a `created`/`updated` event concerns
    that event alone (bad data, a bug in the provider), so the events after it still apply:
    such an event re-reads the state when it is retried, so applying it late cannot undo a
    newer event. A failed `deleted` event (which could) always stops the drain.
    """
    stats = DrainStats()
    pending = store.pending_events(provider.name)
    if not pending:
        return stats
    context = BurstContext(
        config=config,
        clock=clock,
        deadline=clock.monotonic() + config.incremental.burst_length,
        queues=StoreQueueReader(store, provider.name),
        cancelled=cancelled,
    )
    cycle_id = store.load_provider(provider.name).cycle_id
    with provider.around(context) as provider_context:
        for item in pending:
            if cancelled() or context.remaining() <= 0:
                break
            try:
                delta = provider.handle_event(provider_context, to_event(item.body))
            except Exception as error:
                parked = _count_failure(store, provider.name, item.seq, error, stats)
                api_unwell = isinstance(error, (TransientError, AuthError))
                if not parked and (api_unwell or item.body.get("action") == "deleted"):
                    break
                continue
            page, removed = store.apply_event(provider.name, cycle_id, item.seq, delta, clock.now())
            stats.applied += 1
            stats.upserted += page.upserted
            stats.removed += removed
    log.info("events_applied", provider=provider.name, **vars(stats))
    return stats


def _count_failure(
    store: Store, provider: str, seq: int, error: Exception, stats: DrainStats
) -> bool:
    """One more attempt for event `seq`; True if that parked it."""
    expected = isinstance(error, ChoreoIngestError)
    message = str(error) if expected else f"internal error: {type(error).__name__}: {error}"
    parked = store.fail_event(provider, seq, message, max_attempts=MAX_EVENT_ATTEMPTS)
    stats.parked += parked
    stats.retried += not parked
    log.warning(
        "event_failed",
        provider=provider,
        seq=seq,
        parked=parked,
        error=message,
        exc_info=not expected,
    )
    return parked
