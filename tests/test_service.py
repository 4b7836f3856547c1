"""serve's loop without HTTP: ticks, events applied between pages (and winning over the page
before them), the lock shared with cron runs and operator commands, stopping."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from choreo_ingest.errors import LockHeld, StateError, TransientError
from choreo_ingest.event_backlog import FLOOD_EVENTS, FLOOD_SECONDS
from choreo_ingest.event_intake import stored_events
from choreo_ingest.invocation import run_once
from choreo_ingest.logs import QUIET_SECONDS
from choreo_ingest.models import Delta, EntityIteratorResult, Event
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.service import WOKEN_TICK_PAUSE_SECONDS, RepeatedFailures, Service
from choreo_ingest.store import Store
from choreo_ingest.store.run_lock import RunLock

from event_fakes import EventFakeProvider, component_event
from fakes import FakeClock, FakeProvider, make_config, make_entity

NAMES = [f"e{i}" for i in range(10)]


@dataclass
class EventsMidBurst(FakeProvider):
    """Serves `entities` two per page; while page `event_at_page` is being fetched, the event
    `event` arrives (stored and announced, as serve's webhook route does)."""

    event_at_page: int = -1
    event: dict[str, Any] = field(default_factory=dict)
    announce: threading.Event | None = None
    unannounced: bool = False
    """Stored by another process (a replica beside it, an `event` command): not announced."""
    state_path: Path | None = None
    deleted: set[str] = field(default_factory=set)
    handled: list[Event] = field(default_factory=list)
    deadlines: dict[str, set[float]] = field(default_factory=dict)

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        self.deadlines.setdefault("page", set()).add(context.deadline)
        page = super().next(context, cursor)
        offset = 0 if cursor is None else int(cursor["offset"])
        if offset // self.page_size == self.event_at_page:
            assert self.state_path is not None
            assert self.announce is not None
            self.deleted.add(self.event["name"])  # the source deletes it, after serving the page
            context.clock.advance(1.0)  # type: ignore[attr-defined]  # the page took a second
            stored_events(self.state_path, self.name, [self.event], context.clock)
            if not self.unannounced:
                self.announce.set()
        return page

    def handle_event(self, context: BurstContext, event: Event) -> Delta:
        self.deadlines.setdefault("event", set()).add(context.deadline)
        self.handled.append(event)
        found = [e for e in self.entities if e.name == event.name and e.name not in self.deleted]
        return Delta(upserts=found, removal_scopes=[event.name])


@dataclass
class CheckingEvents(EventsMidBurst):
    """EventsMidBurst that checks events itself, with a limit on pending ones."""

    max_pending_events: int = 1000

    def event_problem(self, body: Any) -> str | None:
        return None

    def is_ignored(self, body: Any) -> bool:
        return False


def catalog(state_path: Path) -> set[str]:
    with Store.open(state_path, readonly=True) as store:
        return {body["metadata"]["name"] for body in store.iter_entities()}


def make_service(tmp_path: Path, clock: FakeClock, provider: FakeProvider) -> Service:
    config = make_config(tmp_path, burst_length=3600.0, rest_length=3600.0)
    assert config.state_path is not None
    return Service(config, config.state_path, clock, providers={provider.name: provider})


def deleting(name: str) -> dict[str, Any]:
    return {"kind": "Component", "name": name, "namespace": "acme", "action": "deleted"}


class TestEventsBetweenPages:
    def test_an_event_received_mid_burst_is_applied_in_that_burst(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        provider = EventsMidBurst([make_entity(n) for n in NAMES], event_at_page=3)
        service = make_service(tmp_path, clock, provider)
        provider.state_path, provider.announce = service.state.path, service.events_arrived
        provider.event = deleting("e1")  # served by page 0, long before

        service.tick()

        assert [event.name for event in provider.handled] == ["e1"]
        assert catalog(service.state.path) == set(NAMES) - {"e1"}

    def test_an_event_another_process_stored_mid_burst_is_applied_a_second_later(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A replica beside it on PostgreSQL took the event while this one held the run lock
        for its burst: nothing announces it here, so the burst looks in the inbox once a
        second (the page that stored it took one)."""
        provider = EventsMidBurst([make_entity(n) for n in NAMES], event_at_page=1)
        service = make_service(tmp_path, clock, provider)
        provider.state_path, provider.announce = service.state.path, service.events_arrived
        provider.event, provider.unannounced = deleting("e1"), True

        record = service.tick()

        assert record.result is not None
        assert record.result.events.applied == 1
        assert [event.name for event in provider.handled] == ["e1"]
        assert catalog(service.state.path) == set(NAMES) - {"e1"}

    def test_events_applied_between_pages_keep_to_the_bursts_deadline(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A drain between pages had a `burstLength` of its own, so a steady stream of events
        kept a burst going for as long as it lasted."""
        provider = EventsMidBurst([make_entity(n) for n in NAMES], event_at_page=2)
        service = make_service(tmp_path, clock, provider)
        provider.state_path, provider.announce = service.state.path, service.events_arrived
        provider.event = deleting("e1")

        service.tick()

        assert provider.deadlines["event"] == provider.deadlines["page"]
        assert len(provider.deadlines["page"]) == 1

    def test_a_delete_after_a_page_was_fetched_wins_over_that_page(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The page holding e6 is fetched, then e6's `deleted` event arrives: the page must not
        bring it back, though the page is committed after the event was stored."""
        many = NAMES + [f"filler{i:04}" for i in range(2990)]
        # Big pages: a page's commit takes long enough that an event applied while it is still
        # being written would be overwritten by it.
        provider = EventsMidBurst([make_entity(n) for n in many], page_size=1000, event_at_page=0)
        service = make_service(tmp_path, clock, provider)
        provider.state_path, provider.announce = service.state.path, service.events_arrived
        provider.event = deleting("e6")  # on page 0 itself

        record = service.tick()

        assert record.result is not None
        assert record.result.providers[0].cycle_completed
        assert "e6" not in catalog(service.state.path)
        with Store.open(service.state.path, readonly=True) as store:
            assert store.pending_events(provider.name) == []

    def test_without_news_a_burst_does_not_stop_to_drain(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        provider = EventsMidBurst([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)

        service.tick()

        assert provider.handled == []
        assert catalog(service.state.path) == set(NAMES)


def flood_for_30_seconds(
    service: Service, provider: FakeProvider, clock: FakeClock, *, cron_runs: bool = False
) -> None:
    """A flood `serve` sees arrive, one of its events stored a second; with `cron_runs`, cron's
    `run` beside serve every 10 s, with an event serve has not seen."""
    for second in range(30):
        created = {**deleting(f"x{second}"), "action": "created"}
        stored_events(service.state.path, provider.name, [created], clock)
        service.events_stored(provider.name, FLOOD_EVENTS, created=FLOOD_EVENTS)
        service.tick()
        clock.advance(1.0)
        if cron_runs and second % 10 == 5:
            created = {**deleting(f"y{second}"), "action": "created"}
            stored_events(service.state.path, provider.name, [created], clock)
            run_once(service.config, service.state, clock, providers={provider.name: provider})


class TestFlood:
    def test_events_arriving_as_a_flood_are_dropped_for_a_fresh_walk(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        provider = CheckingEvents([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick()
        stored_events(service.state.path, provider.name, [deleting("e1"), deleting("e2")], clock)

        service.events_stored(
            provider.name, FLOOD_EVENTS, created=FLOOD_EVENTS
        )  # the forwarder's start
        with structlog.testing.capture_logs() as logs:
            record = service.tick()
            clock.advance(FLOOD_SECONDS + 1)  # the flood is over
            service.tick()

        assert record.result is not None
        assert (record.result.events.dropped, record.result.events.applied) == (2, 0)
        assert provider.handled == []
        levels = {line["event"]: line["log_level"] for line in logs}
        # dropped again at each drain while the flood lasts: the one warning is the refresh's
        assert levels["event_backlog_dropped"] == "info"
        [dropped] = [line for line in logs if line["event"] == "event_backlog_dropped"]
        assert "limit" not in dropped  # no backlog limit was passed: the arrival rate was
        assert levels["refresh_requested"] == "warning"

    def test_a_flood_dropped_again_at_each_drain_says_so_at_info_once(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """About 100 INFO lines at `-v` in a forwarder's start before: one per drain."""
        provider = CheckingEvents([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick()
        levels = []
        for round_ in range(3):
            stored_events(service.state.path, provider.name, [deleting(f"e{round_}")], clock)
            service.events_stored(provider.name, FLOOD_EVENTS, created=FLOOD_EVENTS)
            with structlog.testing.capture_logs() as logs:
                record = service.tick()
            assert record.result is not None
            assert record.result.events.dropped == 1
            levels += [
                line["log_level"] for line in logs if line["event"] == "event_backlog_dropped"
            ]
            clock.advance(1.0)

        assert levels == ["info", "debug", "debug"]

    def test_a_flood_longer_than_a_walk_costs_one_walk_after_it(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """An event forwarder's start posts for a minute or more; a walk may take seconds. The
        walk asked for waits for the flood's end: applied at once, each walk that completed
        was followed by another at the next drop, the rest skipped, for as long as it lasted."""
        provider = CheckingEvents([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick()
        pages = len(provider.calls)

        with structlog.testing.capture_logs() as logs:
            flood_for_30_seconds(service, provider, clock)
            assert len(provider.calls) == pages, "no walk while the flood lasts"
            clock.advance(FLOOD_SECONDS)
            service.tick()
            service.tick()

        with Store.open(service.state.path, readonly=True) as store:
            assert store.load_provider(provider.name).cycle_id == 2
        assert len(provider.calls) == 2 * pages, "one walk after it"
        assert [line["event"] for line in logs].count("refresh_requested") == 1

    def test_a_cron_run_beside_serve_waits_for_the_floods_end_as_serve_does(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A `run` sees no events arrive: serve's drops tell it the flood goes on. Applying the
        request at once, a run began the walk in the middle of the flood, and a second gave up
        that cycle for one of its own, which then stood in for the walk serve asked for at the
        flood's end: what the flood's events said after it had passed their listings (an
        `updated` among the `created`) stayed out of the catalog until the next cycle."""
        provider = CheckingEvents([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick()
        pages = len(provider.calls)

        flood_for_30_seconds(service, provider, clock, cron_runs=True)
        assert len(provider.calls) == pages, "no walk while the flood lasts, a run's neither"
        assert provider.handled == [], "a run drops the flood's events as serve does"
        clock.advance(FLOOD_SECONDS)
        service.tick()
        service.tick()

        assert len(provider.calls) == 2 * pages, "one walk after it"
        with Store.open(service.state.path, readonly=True) as store:
            assert store.load_provider(provider.name).cycle_id == 2
            assert store.facts(provider.name) == {}  # the request, and its flood, are done

    def test_as_many_updates_at_once_are_applied_not_dropped(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A deploy that changes many objects at once: dropping its events gave up the cycle in
        progress for a walk of the whole platform."""
        provider = CheckingEvents([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick()
        stored_events(service.state.path, provider.name, [deleting("e1"), deleting("e2")], clock)

        service.events_stored(provider.name, FLOOD_EVENTS, created=FLOOD_EVENTS // 2)
        record = service.tick()

        assert record.result is not None
        assert (record.result.events.dropped, record.result.events.applied) == (0, 2)

    def test_events_arriving_as_usual_are_applied(self, tmp_path: Path, clock: FakeClock) -> None:
        provider = CheckingEvents([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick()
        stored_events(service.state.path, provider.name, [deleting("e1"), deleting("e2")], clock)

        service.events_stored(provider.name, 2)
        record = service.tick()

        assert record.result is not None
        assert (record.result.events.dropped, record.result.events.applied) == (0, 2)


class TestTick:
    def test_a_tick_whose_mirror_cannot_be_written_keeps_its_result_and_says_why(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        (tmp_path / "a-file").write_text("not a directory\n")
        provider = FakeProvider([make_entity("a")])
        service = make_service(tmp_path, clock, provider)
        service.config = replace(service.config, catalog_directory=tmp_path / "a-file" / "c")

        record = service.tick()

        assert record.result is not None
        assert record.result.providers[0].cycle_completed
        assert record.error is not None
        assert record.error.startswith("catalog.directory: ")

    def test_an_output_that_stays_unwritable_is_said_once_a_minute_then_when_written(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The metrics textfile's directory removed: an error line a tick (86,400 a day)."""
        service = make_service(tmp_path, clock, FakeProvider([make_entity("a")]))
        metrics = tmp_path / "gone" / "metrics.prom"
        service.config = replace(service.config, metrics_textfile=metrics)

        with structlog.testing.capture_logs() as logs:
            for _ in range(121):  # two minutes of ticks, a second apart, and one
                service.tick()
                clock.advance(1.0)
            metrics.parent.mkdir()
            service.tick()
            service.tick()

        said = [
            (line["event"], line.get("failures", line.get("failed_before")))
            for line in logs
            if line["event"] in ("output_not_written", "outputs_written_again")
        ]
        assert said == [
            ("output_not_written", 1),
            ("output_not_written", 60),
            ("output_not_written", 60),
            ("outputs_written_again", 121),
        ]
        assert metrics.exists()

    @pytest.mark.parametrize("made_by", ["the-tick", "an-event"])
    def test_a_state_file_removed_while_it_runs_is_made_again_and_said(
        self, tmp_path: Path, clock: FakeClock, made_by: str
    ) -> None:
        """As the advice for a damaged state has it (move it aside, the next run builds a new
        one), but never silently: /changes readers see a new store. Made by the next tick, or
        before it by a webhook's event (or a cron `run`): said by the next tick that runs."""
        service = make_service(tmp_path, clock, FakeProvider([make_entity("a")]))
        service.tick()

        # Held open, the removed file keeps its inode: the new one cannot get its number (the
        # check's one blind spot, for a file made between ticks)
        with structlog.testing.capture_logs() as logs, service.state.path.open("rb"):
            service.tick()  # nothing replaced: nothing said
            for end in ("", "-wal", "-shm"):
                Path(f"{service.state.path}{end}").unlink(missing_ok=True)
            if made_by == "an-event":
                stored_events(service.state.path, "fake", [deleting("a")], clock)
            service.tick()
            service.tick()

        warned = [line for line in logs if line["event"] == "state_file_replaced"]
        assert [line["state"] for line in warned] == [str(service.state.path)]
        assert service.state.path.exists()

    def test_a_state_path_it_cannot_look_at_fails_ticks_and_the_loop_goes_on(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        service = make_service(tmp_path, clock, FakeProvider([make_entity("a")]))
        service.tick()
        good = service.state.path.read_bytes()
        for end in ("", "-wal", "-shm"):
            Path(f"{service.state.path}{end}").unlink(missing_ok=True)
        os.mkfifo(service.state.path)

        failed = service.tick()
        service.state.path.unlink()
        service.state.path.write_bytes(good)
        again = service.tick()

        assert failed.result is None
        assert failed.error is not None
        assert "not a regular file (a FIFO)" in failed.error
        assert again.result is not None

    def test_a_failed_burst_is_logged_as_a_warning(self, tmp_path: Path, clock: FakeClock) -> None:
        """`run` says it in its error line and logs it at info; the service has no such line."""
        provider = FakeProvider([make_entity("a")], fail_at={0: TransientError("GET /x: 503")})
        service = make_service(tmp_path, clock, provider)

        with structlog.testing.capture_logs() as logs:
            service.tick()

        [failed] = [line for line in logs if line["log_level"] == "warning"]
        assert (failed["event"], failed["provider"]) == ("provider_failed", "fake")
        assert "GET /x: 503" in failed["error"]

    def test_events_held_are_logged_once_a_backoff_step_not_each_tick(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """`run` says the hold in its error line; the service's log said only the event's
        failure (an operator could not tell every event waiting from one object waiting)."""
        provider = EventFakeProvider([make_entity("a")])
        provider.failures = {"a": [TransientError("GET /a: 503")] * 5}
        service = make_service(tmp_path, clock, provider)
        service.tick()
        assert service.state.path is not None
        stored_events(service.state.path, "fake", [component_event("a", "created")], clock)

        with structlog.testing.capture_logs() as logs:
            for _ in range(10):
                service.tick()
                clock.advance(1)

        [held] = [line for line in logs if line["event"] == "events_held"]
        assert (held["log_level"], held["provider"], held["mendable"]) == ("warning", "fake", False)
        assert "GET /a: 503" in held["error"]

    def test_a_provider_that_cannot_be_loaded_is_tried_again_after_a_backoff_step(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A tick a second counted (and logged) a failed burst a second: 86,400 a day."""
        config = replace(make_config(tmp_path), providers=("fake", "not-installed"))
        assert config.state_path is not None
        service = Service(config, config.state_path, clock, providers={"fake": FakeProvider([])})

        with structlog.testing.capture_logs() as logs:
            for _ in range(10):
                service.tick()
                clock.advance(1)
            held = stored_attempts(config.state_path, "not-installed")
            clock.advance(config.incremental.backoff[0])
            service.tick()

        assert held == 1
        assert stored_attempts(config.state_path, "not-installed") == 2
        failed = [line for line in logs if line["event"] == "provider_failed"]
        assert [line["provider"] for line in failed] == ["not-installed"] * 2


def stored_attempts(state_path: Path, provider: str) -> int:
    with Store.open(state_path, readonly=True) as store:
        return store.load_provider(provider).attempts


class TestLock:
    def test_a_tick_is_skipped_while_a_cron_run_holds_the_lock(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        provider = FakeProvider([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)

        with RunLock(service.state.path):
            record = service.tick()

        assert record.skipped
        assert provider.calls == []
        assert service.tick().result is not None

    def test_the_lock_is_free_between_ticks(self, tmp_path: Path, clock: FakeClock) -> None:
        service = make_service(tmp_path, clock, FakeProvider([make_entity("a")]))
        service.tick()

        with RunLock(service.state.path):  # a cron `run`, `reset` or `refresh` gets it
            pass

    def test_an_operator_command_waits_for_the_lock_then_runs(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        service = make_service(tmp_path, clock, FakeProvider([make_entity("a")]))
        attempts = []

        def action() -> str:
            attempts.append(clock.monotonic())
            if len(attempts) < 3:
                raise LockHeld("held")
            return "done"

        assert service.while_locked(action) == "done"
        assert len(attempts) == 3

    def test_an_operator_command_gives_up_after_a_burst_and_a_grace(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        service = make_service(tmp_path, clock, FakeProvider([make_entity("a")]))
        started = clock.monotonic()

        def action() -> None:
            raise LockHeld("held")

        with pytest.raises(LockHeld):
            service.while_locked(action)
        waited = clock.monotonic() - started
        assert 3600.0 <= waited <= 3600.0 + 6.0

    def test_an_operator_command_waiting_when_the_service_stops_is_not_taken(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """SIGTERM: the waiting command gives up at once and never runs after its answer."""
        service = make_service(tmp_path, clock, FakeProvider([make_entity("a")]))
        attempts = []

        def action() -> str:
            attempts.append(clock.monotonic())
            if len(attempts) == 2:
                service.stop()  # SIGTERM while the lock is held elsewhere
            if len(attempts) < 5:
                raise LockHeld("held")
            return "done"

        with pytest.raises(LockHeld, match="the service is stopping: nothing was done"):
            service.while_locked(action)
        assert len(attempts) == 2


@dataclass
class FailingAtWill(FakeProvider):
    """FakeProvider whose pages raise `failure` while it is set."""

    failure: Exception | None = None

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        if self.failure is not None:
            raise self.failure
        return super().next(context, cursor)


def store_fails(service: Service, provider: FailingAtWill) -> None:
    """The state store fails mid-burst (a full disk): `tick_failed`."""
    provider.failure = StateError("cannot write the state: disk I/O error")


def store_unreadable(service: Service, provider: FailingAtWill) -> None:
    """The state file is no state any more: the tick cannot open it (`tick_failed`)."""
    service.state.path.write_bytes(bytes(range(256)) * 32)


class TestLastRun:
    """`last_tick_at` (the metrics' last run) moves only with a tick that ran, as a cron `run`
    that exits 75 or 4 leaves the textfile; a burst that failed upstream ran."""

    @pytest.mark.parametrize("break_it", [store_fails, store_unreadable])
    def test_only_a_tick_that_ran_moves_the_last_run(
        self, tmp_path: Path, clock: FakeClock, break_it: Any
    ) -> None:
        provider = FailingAtWill([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        assert service.last_tick_at is None
        provider.failure = TransientError("GET /x: 502")
        assert service.tick().result is not None  # failed upstream, backoff: it ran
        ran_at = clock.now()
        assert service.last_tick_at == ran_at
        clock.advance(3600.0)  # past the backoff

        with RunLock(service.state.path):
            assert service.tick().skipped
        break_it(service, provider)
        failed = service.tick()

        assert (failed.result, failed.skipped) == (None, False)
        assert failed.error is not None
        assert service.last_tick_at == ran_at

    def test_ticks_that_do_not_run_are_a_problem_once_a_run_would_have_ended(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        provider = FailingAtWill([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick()
        allowed = service.run_allowance()

        with RunLock(service.state.path):
            clock.advance(allowed)
            service.tick()
            on_time = service.tick_problem()
            clock.advance(1.0)
            service.tick()
            skipped = service.tick_problem()
        store_fails(service, provider)
        clock.advance(3600.0)  # the provider's rest is over: it bursts, and the store fails
        service.tick()
        failing = service.tick_problem()
        provider.failure = None
        service.tick()

        assert on_time is None
        assert skipped is not None
        assert skipped.startswith(f"serve has run no tick in {allowed + 1:.0f}s (allowed ")
        assert "another process holds the run lock" in skipped
        assert failing is not None
        assert "its ticks fail" in failing
        assert service.tick_problem() is None


class TestLoop:
    def test_stop_ends_the_loop_and_a_stored_event_wakes_it(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        provider = FakeProvider([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick_seconds = 3600.0  # only a wake-up can make it go round again
        thread = threading.Thread(target=service.run)
        thread.start()
        try:
            first = _wait_for(lambda: service.last_tick is not None)
            ticks = service.last_tick
            service.events_stored(provider.name, 1)
            _wait_for(lambda: service.last_tick is not ticks)
        finally:
            service.stop()
            thread.join(timeout=10)
        assert first
        assert not thread.is_alive()
        assert service.alive()

    def test_events_arriving_together_wake_one_tick_after_a_pause(
        self, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A storm of POSTs (a deploy, a forwarder's start, an outage that holds the events)
        woke a tick for each: each opened and locked the state, counted the backlog and wrote
        the metrics, a cost that grows with the inbox. The tick they wake waits a moment and
        drains what arrived meanwhile."""
        provider = FakeProvider([make_entity(n) for n in NAMES])
        service = make_service(tmp_path, clock, provider)
        service.tick_seconds = 3600.0  # only a wake-up can make it go round again
        began: list[float] = []
        tick = service.tick

        def timed_tick() -> Any:
            began.append(time.monotonic())
            return tick()

        monkeypatch.setattr(service, "tick", timed_tick)
        thread = threading.Thread(target=service.run)
        thread.start()
        try:
            assert _wait_for(lambda: len(began) == 1 and service.last_tick is not None)
            woken = time.monotonic()
            for _ in range(50):
                service.events_stored(provider.name, 1)
            assert _wait_for(lambda: len(began) == 2)
            time.sleep(2 * WOKEN_TICK_PAUSE_SECONDS)
        finally:
            service.stop()
            thread.join(timeout=10)
        assert len(began) == 2
        assert began[1] - woken >= 0.8 * WOKEN_TICK_PAUSE_SECONDS  # a timer's rounding aside


def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    waited = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        waited.wait(0.01)
    raise AssertionError("condition not met in time")


class TestFailingTicks:
    """A tick a second that fails the same way (a state file gone) says so once a minute, with
    how many times it failed since, not in a line a tick."""

    def test_the_same_failure_is_said_once_a_minute_with_its_count(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        service = make_service(tmp_path, clock, FakeProvider([make_entity(n) for n in NAMES]))
        service.tick()
        store_unreadable(service, FailingAtWill([]))

        with structlog.testing.capture_logs() as logs:
            for _ in range(121):  # two minutes of ticks, a second apart, and one
                service.tick()
                clock.advance(1.0)

        failed = [
            (line["error"], line["failures"]) for line in logs if line["event"] == "tick_failed"
        ]
        assert [count for _, count in failed] == [1, 60, 60]
        assert len({error for error, _ in failed}) == 1
        assert "state" in failed[0][0]

    def test_failures_that_alternate_are_throttled_apart(self, clock: FakeClock) -> None:
        failures = RepeatedFailures(clock)

        counts = [failures.count(text) for text in ["disk I/O error", "disk full"] * 3]
        clock.advance(QUIET_SECONDS)
        counts += [failures.count("disk full"), failures.count("disk I/O error")]

        assert counts == [1, 1, 0, 0, 0, 0, 3, 3]

    def test_a_tick_that_ran_forgets_the_failures_and_says_how_many(self, clock: FakeClock) -> None:
        failures = RepeatedFailures(clock)
        counts = [failures.count("disk I/O error"), failures.count("disk I/O error")]

        recovered = failures.recovered()

        assert (counts, recovered) == ([1, 0], 2)
        assert failures.count("disk I/O error") == 1  # said at once again
        assert failures.recovered() == 1
        assert failures.recovered() == 0

    def test_a_tick_that_runs_again_says_how_many_failed_before_it(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        service = make_service(tmp_path, clock, FakeProvider([make_entity(n) for n in NAMES]))
        service.tick()
        good = service.state.path.read_bytes()
        store_unreadable(service, FailingAtWill([]))

        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                service.tick()
                clock.advance(1.0)
            service.state.path.write_bytes(good)
            service.tick()
            service.tick()

        said = [(line["event"], line.get("failures", line.get("failed_before"))) for line in logs]
        assert said == [("tick_failed", 1), ("ticks_running_again", 3)]  # the next tick: nothing
        assert (
            next(line for line in logs if line["event"] == "ticks_running_again")["log_level"]
            == "warning"
        )  # the log does not end on its last tick_failed at the default level
