"""One invocation of `choreo-ingest run`: decide, burst, checkpoint every page, report."""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from choreo_ingest.clock import Clock
from choreo_ingest.config import Config
from choreo_ingest.cycle_source import cycle_facts, log_source_changed, sources
from choreo_ingest.errors import (
    ChoreoIngestError,
    DeadlineExceeded,
    PermanentError,
    ProviderError,
    RetryAfter,
    ServerStalled,
    StateError,
    TransientError,
    needs_mending,
)
from choreo_ingest.heap import HeapTrimmer
from choreo_ingest.logs import get_logger, scrub_secrets
from choreo_ingest.models import (
    JSON,
    Facts,
    ProviderAction,
    ProviderRecord,
    ProviderState,
)
from choreo_ingest.page_writer import PageWriter
from choreo_ingest.providers.base import (
    AdvisingProvider,
    BurstContext,
    IncrementalEntityProvider,
    SourceNamingProvider,
    SweepFollowingProvider,
)
from choreo_ingest.schedule import (
    Burst,
    BurstResult,
    after_burst,
    after_refresh,
    before_burst,
    decide,
    in_cycle,
)
from choreo_ingest.store import (
    WALKED,
    Store,
    StoreIndexReader,
    StoreQueueReader,
    SweepGuards,
    canonical_json,
)

log = get_logger("choreo_ingest.engine")


@dataclass
class ProviderOutcome:
    name: str
    action: ProviderAction
    state: ProviderState
    pages: int = 0
    entities_upserted: int = 0
    entities_unchanged: int = 0
    entities_removed: int = 0
    removals_blocked: int = 0
    cycle_completed: bool = False
    next_action_at: float | None = None
    error: str | None = None
    reason: str | None = None
    unloadable: bool = False
    """The provider could not be loaded (not installed, a bad option): a configuration problem,
    not upstream trouble."""
    crashed: bool = False
    """The provider failed on a bug of its own (not a ProviderError): not upstream trouble."""
    misconfigured: bool = False
    """The burst failed on a setting to mend (a ConfigError: a secret file gone, a proxy that
    cannot be used; a token grant refused: a wrong client secret; the configured token refused):
    not upstream trouble either."""
    events_queued: int = 0
    """Events the completed cycle's sweep queued (`SweepFollowingProvider`), for a drain now."""


@dataclass
class StopSignal:
    """Set by SIGTERM/SIGINT; checked between pages so the current page is committed first."""

    _event: threading.Event = field(default_factory=threading.Event)
    signal_number: int | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Whether it was set within `seconds` (returns at once when it is)."""
        return self._event.wait(seconds)

    def set(self, signal_number: int | None = None) -> None:
        self.signal_number = signal_number
        self._event.set()

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """Route SIGTERM and SIGINT to this flag for the duration (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(number: int, frame: FrameType | None) -> None:
            self.set(number)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class BetweenPages(Protocol):
    """Work a burst makes room for after a committed page (`serve` applies events received
    meanwhile), so that what it writes comes after that page and wins over it; called with the
    burst's deadline (monotonic), which it keeps to."""

    def wanted(self) -> bool: ...

    def __call__(self, deadline: float) -> None: ...


class BurstEngine:
    """Runs at most one burst per provider against a store the caller has opened and locked."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        stop: StopSignal | None = None,
        heap: HeapTrimmer | None = None,
        between_pages: BetweenPages | None = None,
    ) -> None:
        self.between_pages = between_pages
        self.config = config
        self.store = store
        self.clock = clock
        self.rng = rng or random.Random()
        self.stop = stop or StopSignal()
        self.heap = heap or HeapTrimmer()

    def run_provider(
        self, provider: IncrementalEntityProvider, *, force: bool = False
    ) -> ProviderOutcome:
        settings = self.config.incremental
        record = self.store.load_provider(provider.name)
        now = self.clock.now()
        source, before, stored = sources(provider, self.store.facts, record.cycle_id)
        begun_again = before is not None and in_cycle(record)
        if begun_again:  # finished here, the cycle would hold both sources' pages
            crashed = record.state is ProviderState.BURSTING
            record = after_refresh(record, now, new_cycle=True)
            if crashed:  # counted as every way on from a burst that did not finish counts it
                self.store.save_provider(record, now, crashed_burst=True)
        decision = decide(record, settings, now, force=force)
        if not isinstance(decision, Burst):
            return ProviderOutcome(
                name=record.name,
                action=ProviderAction.WAITING,
                state=record.state,
                next_action_at=decision.until,
                reason=decision.reason,
            )
        if decision.new_cycle and before is not None:
            log_source_changed(provider, before, source, begun_again=begun_again)
        facts = cycle_facts(provider, before, stored, begun_again=begun_again)
        begun = self._begin_burst(record, decision, now, facts)
        return self._burst(provider, begun)

    def _begin_burst(
        self,
        record: ProviderRecord,
        decision: Burst,
        now: float,
        facts: Callable[[int], Facts],
    ) -> ProviderRecord:
        crashed = record.state is ProviderState.BURSTING  # under the run lock: it did not finish
        record = before_burst(record, decision, now)
        if decision.new_cycle:
            self.store.start_cycle(record, now, facts(record.cycle_id))
        else:
            self.store.save_provider(record, now, crashed_burst=crashed)
        log.info(
            "burst_started",
            provider=record.name,
            cycle=record.cycle_id,
            new_cycle=decision.new_cycle,
            reason=decision.reason,
        )
        return record

    def _burst(
        self, provider: IncrementalEntityProvider, record: ProviderRecord
    ) -> ProviderOutcome:
        started = self.clock.monotonic()
        writer = PageWriter(self.store, record.name, record.cycle_id, record.cursor)
        if self._walked(record):  # the run that committed the last page died before the sweep
            log.info("cycle_walked_before", provider=record.name, cycle=record.cycle_id)
            walked = BurstResult(cursor=None, duration=0.0, done=True)
            return self._end_burst(record, walked, writer, None, provider)
        context = burst_context(
            self.config,
            self.store,
            self.clock,
            provider.name,
            record.cycle_id,
            cancelled=self.stop.is_set,
            before_read=writer.wait,
            last_failure=record.last_error if record.attempts else None,
        )
        done = False
        error: Exception | None = None
        try:
            with writer, provider.around(context) as provider_context:
                done = self._walk(provider, provider_context, writer, context.deadline)
        except Exception as caught:
            error = caught
        duration = self.clock.monotonic() - started
        retry_after = error.retry_after if isinstance(error, RetryAfter) else None
        if isinstance(error, TransientError) and writer.pages and not error.exhausted:
            # Cut short after pages were committed (the deadline, a 429, a 5xx whose retry did
            # not fit): the burst made progress, so this is a pause, not a failure; for a 429,
            # "end the burst and come back" after its Retry-After. Trouble that outlasted every
            # retry fails the burst all the same (it resumes from its last page after backoff).
            if retry_after is not None:
                log.info("burst_rate_limited", provider=record.name, retry_after=retry_after)
            elif not isinstance(error, DeadlineExceeded) or error.status is not None:
                log.info("burst_cut_short", provider=record.name, error=str(error))
            error = None
        if isinstance(error, StateError):  # the store failed, not the source: no backoff
            raise error
        interrupted = self.stop.is_set()
        if error is not None and interrupted:
            _log_stopped(record.name, error)
            error = None
        result = BurstResult(
            cursor=writer.cursor,
            duration=duration,
            done=done,
            error=None if error is None else _failure_message(error, provider, self.config),
            retry_after=retry_after,
            interrupted=interrupted,
            pages=writer.pages,
        )
        return self._end_burst(record, result, writer, error, provider)

    def _end_burst(
        self,
        record: ProviderRecord,
        result: BurstResult,
        writer: PageWriter,
        error: Exception | None,
        provider: IncrementalEntityProvider,
    ) -> ProviderOutcome:
        """Store what `schedule.after_burst` makes of the record, the burst counted by how it
        ended (`metrics.BURST_OUTCOMES`); raise a failure that is a bug."""
        now = self.clock.now()
        record = after_burst(record, result, self.config.incremental, now, self.rng)
        outcome = ProviderOutcome(
            name=record.name,
            action=ProviderAction.BURST,
            state=record.state,
            pages=writer.pages,
            entities_upserted=writer.upserted,
            entities_unchanged=writer.unchanged,
            next_action_at=record.next_action_at,
        )
        if error is not None:
            bug = not isinstance(error, ChoreoIngestError)  # a ConfigError (a secret file gone
            try:  # while `serve` runs) is a failure the operator must mend, not a bug
                self._record_failure(record, outcome, now)
            except StateError as unrecorded:
                if not bug:
                    raise
                error.add_note(f"recording this failure failed too: {unrecorded}")
            outcome.misconfigured = needs_mending(error)
            if bug:
                raise error
        elif result.done:
            self._complete_cycle(record, outcome, now, provider)
        else:
            self.store.end_burst(record, "interrupted" if result.interrupted else "ok", now)
            if result.interrupted:
                outcome.action = ProviderAction.INTERRUPTED
        return outcome

    def _walked(self, record: ProviderRecord) -> bool:
        """Whether this cycle's last page is committed already (its completion is not)."""
        last = self.store.last_cycle(record.name)
        return last is not None and last.cycle_id == record.cycle_id and last.outcome == WALKED

    def _walk(
        self,
        provider: IncrementalEntityProvider,
        provider_context: Any,
        writer: PageWriter,
        deadline: float,
    ) -> bool:
        """Fetch and submit pages until the cycle is done (True), the deadline or a stop.

        A page is not begun when the one before it took longer than the time left: the
        deadline would cut its request short, and the next burst would ask for it again.
        """
        cursor = writer.cursor
        facts = self.store.facts(provider.name)
        while True:
            started = self.clock.monotonic()
            page = provider.next(provider_context, cursor)
            _log_changed_facts(provider.name, facts, page.facts)
            writer.submit(page, _checked_cursor(provider.name, page.cursor), self.clock.now())
            cursor = page.cursor
            self.heap.page_done()
            if self.between_pages is not None and self.between_pages.wanted():
                writer.wait()  # the page is committed before what comes after it
                self.between_pages(deadline)
            if page.done:
                return True
            now = self.clock.monotonic()
            if self.stop.is_set() or now + (now - started) > deadline:
                return False

    def _complete_cycle(
        self,
        record: ProviderRecord,
        outcome: ProviderOutcome,
        now: float,
        provider: IncrementalEntityProvider,
    ) -> None:
        """A provider that names its source (OpenChoreo's, whose every install serves a
        namespace): a cycle that leaves it nothing is a client that may see nothing. One that
        follows its sweep has the events it names queued with it (`SweepFollowingProvider`)."""
        named = isinstance(provider, SourceNamingProvider)
        follower = provider.sweep_follower if isinstance(provider, SweepFollowingProvider) else None
        settings = self.config.incremental
        guards = SweepGuards(
            reject_empty_source_collections=settings.reject_empty_source_collections,
            reject_removals_above_percentage=settings.reject_removals_above_percentage,
        )
        sweep = self.store.complete_cycle(record, guards, now, follower)
        if sweep.reason:
            log.warning(
                "removals_blocked", provider=record.name, count=sweep.blocked, reason=sweep.reason
            )
        log.info(
            "cycle_completed",
            provider=record.name,
            cycle=record.cycle_id,
            removed=sweep.removed,
            blocked=sweep.blocked,
        )
        if named and sweep.remaining == 0:
            log.warning(
                "cycle_completed_empty",
                provider=record.name,
                advice="its source listed nothing: an empty platform, or a client that may see "
                "none of it; `choreo-ingest check` says what it lists",
            )
        outcome.cycle_completed = True
        outcome.entities_removed = sweep.removed
        outcome.removals_blocked = sweep.blocked
        outcome.events_queued = sweep.queued

    def _record_failure(self, record: ProviderRecord, outcome: ProviderOutcome, now: float) -> None:
        self.store.record_failure(record, now)
        # Info: the outcome carries the error, which `run` prints as its one error line and
        # `serve` logs as a warning; a warning here too put it in a cron mail twice.
        log.info(
            "burst_failed",
            provider=record.name,
            attempts=record.attempts,
            retry_in=round((record.next_action_at or now) - now, 1),
            error=record.last_error,
        )
        outcome.action = ProviderAction.FAILED
        outcome.error = record.last_error


def _log_stopped(provider: str, error: Exception) -> None:
    """An error a burst ended with after SIGTERM/SIGINT is logged, not recorded: the request in
    flight when the signal came went on and ran into the deadline (or was cut short), so the
    burst was stopped, not failed: no attempt counted, no backoff, no advice about burstLength.
    A bug is logged with its traceback; the next burst meets any error again if it stays."""
    if isinstance(error, ProviderError):
        log.info("burst_interrupted", provider=provider, error=str(error))
    else:
        log.warning("burst_interrupted", provider=provider, error=repr(error), exc_info=error)


def _failure_message(error: Exception, provider: IncrementalEntityProvider, config: Config) -> str:
    """What `status` shows for a failed burst, no secret in it; a deadline that no page fitted
    in says what to change (here only when no page was committed), unless the attempt before
    was answered with an error, which the message names (a failing server, not a slow one)."""
    message = str(error) or type(error).__name__
    if (
        isinstance(error, DeadlineExceeded)
        and not isinstance(error, ServerStalled)
        and error.status is None  # else an error answer came first, and the message names it
    ):
        advice = (
            provider.no_page_advice()
            if isinstance(provider, AdvisingProvider)
            else "raise openchoreo.incremental.burstLength"
        )
        message += (
            "; no page was completed within burstLength "
            f"({config.incremental.burst_length:g} s): {advice}"
        )
    return scrub_secrets(message)


def burst_context(
    config: Config,
    store: Store,
    clock: Clock,
    provider: str,
    cycle_id: int,
    *,
    cancelled: Callable[[], bool],
    before_read: Callable[[], None] | None = None,
    deadline: float | None = None,
    last_failure: str | None = None,
) -> BurstContext:
    """What a provider's `around()` gets for one burst or one inbox drain: a `deadline`
    (monotonic; `burstLength` from now by default), and its queues, index and facts as the
    store holds them (reads wait for `before_read` first: the page the writer thread is
    committing)."""
    if deadline is None:
        deadline = clock.monotonic() + config.incremental.burst_length
    return BurstContext(
        config=config,
        clock=clock,
        deadline=deadline,
        queues=StoreQueueReader(store, provider, before_read=before_read),
        cancelled=cancelled,
        index=StoreIndexReader(store, provider, cycle_id, before_read=before_read),
        facts=store.facts(provider),
        last_failure=last_failure,
    )


def _log_changed_facts(
    provider: str, known: dict[str, str], facts: Mapping[str, str | None]
) -> None:
    """Log each fact a page changes (`api` from v1 to orgs, say); `known` is kept up to date."""
    for name, value in facts.items():
        if known.get(name) == value:
            continue
        log.info(
            "provider_fact_changed", provider=provider, fact=name, before=known.get(name), now=value
        )
        if value is None:
            known.pop(name, None)
        else:
            known[name] = value


def _checked_cursor(provider: str, cursor: JSON) -> str | None:
    """The cursor as stored JSON text; refuses one that does not survive a JSON round trip."""
    if cursor is None:
        return None
    try:
        text = canonical_json(cursor)
        same = json.loads(text) == cursor
    except (TypeError, ValueError) as error:
        raise PermanentError(
            f"provider {provider!r} returned a cursor that is not JSON: {error}"
        ) from error
    if not same:
        raise PermanentError(
            f"provider {provider!r} returned a cursor that does not survive a JSON round trip "
            "(tuples, non-string keys or NaN are not allowed)"
        )
    return text
