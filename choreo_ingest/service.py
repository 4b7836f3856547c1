"""What `serve` runs besides HTTP: the decisions of `run` on a short tick, one burst at a time.

The run lock is taken for each tick (a burst, or a drain of the inbox), never for the service's
life: `status`, `event`, the operator's commands and a cron `run` work beside it. A tick that
finds the lock held (a cron `run` is bursting) is skipped.

A tick that ran (it decided, and burst, waited or rested, a burst that failed upstream
included) moves `last_tick_at`, the metrics' last run; a skipped tick or one that failed
(`tick_failed`, `tick_crashed`) does not, as a cron `run` that exits 75 or 4 leaves the
textfile as it was. When none has run for longer than a run may hold the lock, `tick_problem`
says why, and `/health` and the status page say it too.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from choreo_ingest.clock import Clock, rfc3339, rfc3339_due
from choreo_ingest.config import Config
from choreo_ingest.engine import StopSignal
from choreo_ingest.errors import ChoreoIngestError, LockHeld, SchemaTooNew
from choreo_ingest.event_backlog import ArrivalRate
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.logs import Throttle, get_logger
from choreo_ingest.models import ProviderAction
from choreo_ingest.providers.base import IncrementalEntityProvider
from choreo_ingest.providers.registry import load_provider
from choreo_ingest.schedule import backoff_step
from choreo_ingest.store import SqliteLocation, StateRef, state_location
from choreo_ingest.store.pg_fence import RunHolder

log = get_logger("choreo_ingest.service")

T = TypeVar("T")

TICK_SECONDS = 1.0
"""How often the service asks whether a provider is due (an event wakes it at once)."""
WOKEN_TICK_PAUSE_SECONDS = 0.1
"""A tick woken early (an event stored, an operator's command) waits this long first, so that
what else arrives meanwhile is drained with it: under a storm of events each POST woke a tick
of its own (the state opened and locked, the backlog counted, the metrics written), whose cost
grows with the inbox (7.5 ms of CPU a POST with 25,000 events held by an API that is down,
4.4 ms with none)."""
LOCK_WAIT_GRACE_SECONDS = 5.0
"""An operator's command waits for a burst in progress this long past `burstLength`."""


@dataclass
class TickRecord:
    started_at: float  # monotonic
    result: RunResult | None = None
    """What the tick's run did; None when it did not run (skipped, or failed)."""
    skipped: bool = False
    error: str | None = None


class Service:
    """The loop of `serve`. `run` blocks until `stop()`; the HTTP side calls `events_stored()`
    after it commits events and `while_locked()` for commands that need the run lock."""

    def __init__(
        self,
        config: Config,
        state: StateRef,
        clock: Clock,
        *,
        providers: Mapping[str, IncrementalEntityProvider] | None = None,
        rng: random.Random | None = None,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self.config = config
        self.state = state_location(state)
        self.clock = clock
        self._providers = dict(providers or {})
        self._providers_lock = threading.Lock()
        self.rng = rng or random.Random()
        self.tick_seconds = tick_seconds
        self.stop_signal = StopSignal()
        self.events_arrived = threading.Event()
        self.arrivals = ArrivalRate(clock)
        self._wake = threading.Event()
        self.run_holder = RunHolder()
        """The ticks' one claim of a PostgreSQL store and their one session (`pg_fence`): an idle
        tick neither connects nor writes."""
        self._operators_waiting = 0
        self._operators_lock = threading.Lock()
        self.last_tick: TickRecord | None = None
        self.last_tick_at: float | None = None
        """When the last tick that ran ended (wall time): the metrics' last run. A skipped or
        failed tick leaves it."""
        self._last_ran = clock.monotonic()
        """When the last tick that ran ended, or the service started (monotonic)."""
        self.heartbeat = clock.monotonic()
        """When the loop last went round (monotonic): `/healthz` says whether it is alive."""
        self._failures = RepeatedFailures(clock)
        self._output_failures = RepeatedFailures(clock)
        self._state_identity: tuple[int, int] | None = None
        """The state file the last tick that ran used (device, inode): `_note_state_file`."""
        self._unloadable: dict[str, tuple[int, float]] = {}
        """Providers that could not be loaded: how many ticks in a row, and when (monotonic) to
        load them again: a tick a second would count (and log) a failure a second."""
        self.ended_by: SchemaTooNew | None = None
        """Why the loop ended by itself: a newer release migrated the state (`serve` exits 75)."""
        self.on_end: Callable[[], None] = lambda: None
        """Called from the loop's thread when it ends by itself (`serve` stops answering)."""

    def alive(self) -> bool:
        """The loop went round recently enough: a burst, its mirror and a tick fit in between."""
        allowed = 3 * self.config.incremental.burst_length + 10 * self.tick_seconds + 30
        return self.clock.monotonic() - self.heartbeat <= allowed

    def tick_problem(self) -> str | None:
        """Why ticks are not running, once none has run for longer than a run may hold the
        lock (`run_allowance`): skipped (another process holds the run lock) or failing (the
        state store cannot be opened, say); None while they run."""
        allowed = self.run_allowance()
        waited = self.clock.monotonic() - self._last_ran
        if waited <= allowed:
            return None
        last = self.last_tick
        if last is not None and last.skipped:
            why = "another process holds the run lock (a cron `run`, another `serve`)"
        elif last is not None and last.result is None:
            why = "its ticks fail (its `tick_failed` log lines say why)"
        else:
            why = "its loop has not gone round since (see `/healthz`)"
        return f"serve has run no tick in {waited:.0f}s (allowed {allowed:.0f}s): {why}"

    def run_allowance(self) -> float:
        """How long ticks may not run before `tick_problem` says so: a run holding the lock
        (each provider's drain and burst, and the drain of the events its sweep queued, and the
        mirror, each within `burstLength`), then an operator's command waiting its turn, and
        some ticks."""
        burst_length = self.config.incremental.burst_length
        run = (3 * len(self.config.providers) + 1) * burst_length
        return run + burst_length + LOCK_WAIT_GRACE_SECONDS + 10 * self.tick_seconds + 30

    def run(self) -> None:
        """Tick until stopped; a burst in progress when `stop()` comes ends after its page."""
        log.info("service_started", state_file=str(self.state))
        try:
            while not self.stop_signal.is_set():
                self.heartbeat = self.clock.monotonic()
                if not self._operators_waiting:
                    self.tick()
                if self._wake.wait(self.tick_seconds):
                    self.stop_signal.wait(WOKEN_TICK_PAUSE_SECONDS)
                self._wake.clear()
        finally:
            self.run_holder.close()
        log.info("service_stopped")

    def tick(self) -> TickRecord:
        record = TickRecord(started_at=self.clock.monotonic())
        waiting = {n for n, (_, at) in self._unloadable.items() if record.started_at < at}
        try:
            missing = self._state_file_identity() is None
            record.result = run_once(
                self.config,
                self.state,
                self.clock,
                providers=self._loaded_providers(waiting),
                stop=self.stop_signal,
                rng=self.rng,
                events_arrived=self.events_arrived,
                events_flooding=self.arrivals.flooding,
                left_out=waiting,
                holder=self.run_holder,
            )
            self.last_tick_at, self._last_ran = self.clock.now(), self.clock.monotonic()
            self._note_state_file(missing)
            self._note_unloadable(record.result)
            _log_failures(record.result)
            self._log_output_errors(record.result)
            if record.result.output_errors:
                record.error = record.result.error_text
        except LockHeld:
            record.skipped = True
            log.debug("tick_skipped", reason="another run holds the lock")
        except SchemaTooNew as error:  # a newer release migrated the state: no tick of this
            record.error = str(error)  # process can ever run again, so it ends (exit 75), for
            self.ended_by = error  # its supervisor to start the release installed now
            self.stop()
            self.on_end()
        except ChoreoIngestError as error:
            record.error = str(error)
            if failures := self._failures.count(record.error):
                log.error("tick_failed", error=record.error, failures=failures)
        except Exception as error:  # a bug must not end the service: the next tick tries again
            record.error = f"internal error: {type(error).__name__}: {error}"
            if failures := self._failures.count(record.error):
                log.error("tick_crashed", failures=failures, exc_info=True)
        if record.result is not None and (failures := self._failures.recovered()):
            # At the failure's own level of attention: the log must not end on tick_failed
            log.warning("ticks_running_again", failed_before=failures)
        self.last_tick = record
        return record

    def _state_file_identity(self) -> tuple[int, int] | None:
        """The state file's (device, inode); None when there is none (or it is a PostgreSQL
        schema: its check would be a query a tick)."""
        if not isinstance(self.state, SqliteLocation):
            return None
        try:
            found = self.state.real_path.stat()
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def _note_state_file(self, missing_before: bool) -> None:
        """Warn when the state file is not the one the last tick that ran used: removed while
        serve ran and made anew (by this tick, or by an event or a cron `run` before it: told by
        its inode, unless the new file got the old one's number), or another put in its place."""
        identity = self._state_file_identity()
        if identity is None:
            return
        if self._state_identity is not None and (
            missing_before or identity != self._state_identity
        ):
            log.warning(
                "state_file_replaced",
                state=str(self.state),
                problem="not the state file the last tick used: removed and made anew (a fresh "
                "walk of the platform), or another put in its place; /changes readers whose "
                "store id changed start again",
            )
        self._state_identity = identity

    def _log_output_errors(self, result: RunResult) -> None:
        """An output (the metrics textfile, the mirror) not written is said as a failing tick
        is: once, then once a minute while it repeats, and when it is written again."""
        for error in result.output_errors:
            if failures := self._output_failures.count(str(error)):
                log.error("output_not_written", error=str(error), failures=failures)
        if not result.output_errors and (failures := self._output_failures.recovered()):
            log.warning("outputs_written_again", failed_before=failures)

    def _loaded_providers(self, waiting: set[str]) -> dict[str, IncrementalEntityProvider]:
        """The configured providers, each loaded once for the service's life (its client and
        credentials with it: one OAuth grant per process, as for `run`). One that cannot load
        is left to `run_once`, which records why, and is tried again once the backoff step of
        its failures has passed (until then it is `waiting`)."""
        for name in self.config.providers:
            if name not in waiting:
                with contextlib.suppress(ChoreoIngestError):
                    self.provider(name)
        with self._providers_lock:
            return dict(self._providers)

    def _note_unloadable(self, result: RunResult) -> None:
        now = self.clock.monotonic()
        for outcome in result.providers:
            if outcome.unloadable:
                failures = self._unloadable.get(outcome.name, (0, now))[0] + 1
                retry_at = now + backoff_step(failures, self.config.incremental)
                self._unloadable[outcome.name] = (failures, retry_at)
            else:
                self._unloadable.pop(outcome.name, None)

    def provider(self, name: str) -> IncrementalEntityProvider:
        """The provider `name`, loaded once (ProviderLoadError when it cannot be)."""
        with self._providers_lock:
            if name not in self._providers:
                self._providers[name] = load_provider(name, self.config)
            return self._providers[name]

    def stop(self) -> None:
        self.stop_signal.set()
        self._wake.set()

    def wake(self) -> None:
        """Look again now (an operator made a provider due)."""
        self._wake.set()

    def events_stored(self, provider: str, count: int, created: int = 0) -> None:
        """`count` events for `provider` (`created` of them `created`) were committed to the
        inbox: apply them now, mid-burst or at the next tick (or, in a forwarder's start, drop
        them for a fresh walk)."""
        self.arrivals.add(provider, count, created)
        self.events_arrived.set()
        self._wake.set()

    def events_ignored(self, provider: str, count: int, created: int = 0) -> None:
        """`count` events for `provider` about kinds it does not ingest (`created` of them
        `created`) were acknowledged: nothing to apply, but arrivals all the same. A forwarder's
        start sends them with the rest, and a platform may hold many more of them (releases,
        bindings, workflow runs) than of the kinds ingested: counted alone, those came slower
        than a flood, and each was re-read, one object at a time, in place of one walk."""
        self.arrivals.add(provider, count, created)

    def while_locked(self, action: Callable[[], T]) -> T:
        """Run `action` (which takes the run lock itself), waiting for a burst in progress to end
        rather than failing at once; new ticks wait meanwhile. LockHeld after the wait, or as
        soon as the service is stopping (the action is not taken then: SIGTERM must not wait for
        it, nor leave it to run after the answer)."""
        give_up_at = (
            self.clock.monotonic() + self.config.incremental.burst_length + LOCK_WAIT_GRACE_SECONDS
        )
        with self._operator_turn():
            while True:
                if self.stop_signal.is_set():
                    raise LockHeld("the service is stopping: nothing was done; ask again later")
                try:
                    return action()
                except LockHeld:
                    if self.clock.monotonic() >= give_up_at:
                        raise
                    self.clock.sleep(0.1)

    @contextmanager
    def _operator_turn(self) -> Iterator[None]:
        with self._operators_lock:
            self._operators_waiting += 1
        try:
            yield
        finally:
            with self._operators_lock:
                self._operators_waiting -= 1
            self._wake.set()


def _log_failures(result: RunResult) -> None:
    """What `run` prints as its error lines, as log lines: the service's only report of them."""
    for outcome in result.providers:
        if outcome.action == ProviderAction.FAILED:
            log.warning(
                "provider_failed",
                provider=outcome.name,
                next_action_at=rfc3339_due(outcome.next_action_at),
                error=outcome.error,
            )
    for held in result.events.held:  # set once a backoff step: the drains in between skip
        log.warning(
            "events_held",
            provider=held.provider,
            until=rfc3339(held.until),
            error=held.error,
            mendable=held.mendable,
            message="every event waits until then: the API failed, or a setting to mend",
        )


MAX_FAILURE_KINDS = 20
"""Failures (texts) throttled apart; past this many, the one seen least lately is forgotten (said
at once if it comes back)."""


class RepeatedFailures:
    """When failing ticks are said: each failure (its text) the first time, then at most once a
    `QUIET_SECONDS` with how many times it failed since, while it repeats (a state file gone fails
    every tick, a second apart: a line each was 86,400 a day). Failures that alternate are
    throttled apart; once a tick runs again, `recovered` says how many there were."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._kinds: dict[str, Throttle] = {}
        self._failures = 0

    def count(self, text: str) -> int:
        """Counts one more failure; how many of it since its last line if one is due now, else 0."""
        self._failures += 1
        throttle = self._kinds.pop(text, None) or Throttle(self._clock)
        self._kinds[text] = throttle  # the latest last: the first to go past MAX_FAILURE_KINDS
        if len(self._kinds) > MAX_FAILURE_KINDS:
            del self._kinds[next(iter(self._kinds))]
        return throttle.count()

    def recovered(self) -> int:
        """A tick ran: how many ticks failed since the last that ran; they are forgotten."""
        failures, self._failures = self._failures, 0
        self._kinds.clear()
        return failures
