"""Events that wait alone: one object whose re-read keeps failing while the API answers the
events after it (`event_retries`, through `run_once` and `drain_inbox` with a fake provider)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from choreo_ingest.cli.app import app
from choreo_ingest.cli.run_flow import report_run
from choreo_ingest.clock import SystemClock, rfc3339
from choreo_ingest.config import Config, IncrementalConfig
from choreo_ingest.errors import (
    AuthError,
    ConfigError,
    DeadlineExceeded,
    GrantRefused,
    NotFoundError,
    PermanentError,
    RetryAfter,
    TokenUnavailable,
    TransientError,
)
from choreo_ingest.event_intake import stored_events
from choreo_ingest.event_retries import EventRetries, event_key, may_fail_alone, object_path
from choreo_ingest.events import MAX_EVENT_ATTEMPTS, drain_inbox
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.metrics import ProviderMetrics
from choreo_ingest.models import EVENT_RETRIES_FACT, EVENTS_HELD_FACT, Facts, RunOutcome
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.reporting import ERROR_WITHHELD, provider_metrics, provider_status
from choreo_ingest.store import Store

from event_fakes import FIVE, EventFakeProvider, component_event
from fakes import FakeClock, make_config, make_entity

BROKEN = TransientError("GET /namespaces/default/components/a: HTTP 500 INTERNAL_ERROR")


def run(config: Config, clock: FakeClock, provider: EventFakeProvider) -> RunResult:
    assert config.state_path is not None
    return run_once(
        config, config.state_path, clock, providers={"fake": provider}, rng=random.Random(0)
    )


def feed(config: Config, clock: FakeClock, *bodies: dict[str, Any]) -> None:
    assert config.state_path is not None
    stored_events(config.state_path, "fake", list(bodies), clock)


def inbox(config: Config) -> list[tuple[str, int]]:
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return [(item.body["name"], item.attempts) for item in store.pending_events("fake")]


def facts(config: Config) -> dict[str, str]:
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return store.facts("fake")


def catalog_names(config: Config) -> set[str]:
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return {body["metadata"]["name"] for body in store.iter_entities()}


def handled(provider: EventFakeProvider) -> list[str]:
    names = [event.name for event in provider.handled]
    provider.handled.clear()
    return names


def a_failed_alone(config: Config, clock: FakeClock, provider: EventFakeProvider) -> None:
    """`a`'s event fails, `b`'s after it reads fine: `a` waits alone."""
    feed(config, clock, component_event("a", "created"), component_event("b", "created"))
    result = run(config, clock, provider)
    assert (result.events.applied, result.events.held) == (1, [])


@pytest.fixture
def world(tmp_path: Path, clock: FakeClock) -> tuple[Config, EventFakeProvider]:
    """A first cycle done; `a` to `d` exist, and every re-read of `a` answers 500."""
    config = make_config(tmp_path, rest_length=86_400.0)
    provider = EventFakeProvider(list(FIVE))
    run(config, clock, provider)
    provider.entities = [*FIVE, *(make_entity(name) for name in "abcd")]
    provider.failures = {"a": [BROKEN] * 20}
    return config, provider


class TestOneObjectFailingAlone:
    def test_the_events_after_it_apply_and_it_alone_waits_its_backoff_step(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        config, provider = world
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))

        result = run(config, clock, provider)

        assert (result.events.applied, result.events.retried, result.events.held) == (1, 1, [])
        assert result.outcome is not RunOutcome.FAILED  # exit 0: the API is well
        assert inbox(config) == [("a", 1)]
        assert "b" in catalog_names(config)
        assert EVENTS_HELD_FACT not in facts(config)
        step = config.incremental.backoff[0]
        waits = json.loads(facts(config)[EVENT_RETRIES_FACT])
        assert waits == {event_key(component_event("a")): rfc3339(clock.now() + step)}

    def test_events_arriving_while_it_waits_apply_at_once_without_trying_it(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """`serve` drains every second: each new event applies at the next drain, and `a` is
        not tried again before its step."""
        config, provider = world
        a_failed_alone(config, clock, provider)
        handled(provider)

        for name in "cd":
            clock.advance(1)
            feed(config, clock, component_event(name, "created"))
            result = run(config, clock, provider)
            assert (result.events.applied, result.events.held) == (1, [])
            assert handled(provider) == [name]

        assert {"b", "c", "d"} <= catalog_names(config)
        assert inbox(config) == [("a", 1)]

    def test_once_shown_to_fail_alone_it_waits_alone_again_with_no_event_after_it(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        config, provider = world
        a_failed_alone(config, clock, provider)
        clock.advance(config.incremental.backoff[0])

        again = run(config, clock, provider)
        clock.advance(1)
        feed(config, clock, component_event("c", "created"))
        after = run(config, clock, provider)

        assert (again.events.retried, again.events.held) == (1, [])  # nothing else to ask
        assert inbox(config) == [("a", 2)]
        assert after.events.applied == 1
        assert "c" in catalog_names(config)

    def test_it_is_parked_after_its_attempts_and_its_retry_time_forgotten(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        config, provider = world
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))

        for _ in range(MAX_EVENT_ATTEMPTS):
            run(config, clock, provider)
            clock.advance(max(config.incremental.backoff))
        run(config, clock, provider)  # the drain after it forgets its retry time

        assert inbox(config) == []
        assert config.state_path is not None
        with Store.open(config.state_path, readonly=True) as store:
            assert store.inbox_counts("fake").parked == 1
        assert EVENT_RETRIES_FACT not in facts(config)

    def test_parked_for_running_out_of_a_whole_burst_it_is_forgotten(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        config, provider = world
        too_long = DeadlineExceeded("GET /namespaces/default/components/a: out of time")
        provider.failures = {"a": [BROKEN] * (MAX_EVENT_ATTEMPTS - 1) + [too_long]}
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))
        for _ in range(MAX_EVENT_ATTEMPTS - 1):
            run(config, clock, provider)
            clock.advance(max(config.incremental.backoff))
        assert EVENT_RETRIES_FACT in facts(config)

        last = run(config, clock, provider)

        assert last.events.parked == 1
        assert EVENT_RETRIES_FACT not in facts(config)

    def test_a_newer_event_about_it_takes_over_its_wait_and_attempts(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """The object, not its event, waits: a change does not buy it a re-read before its
        step, as it did not buy it attempts of its own."""
        config, provider = world
        a_failed_alone(config, clock, provider)
        handled(provider)
        provider.failures = {}  # mended by the change the next event reports
        clock.advance(1)
        feed(config, clock, component_event("a", "created"))  # replaces the waiting one

        during = run(config, clock, provider)
        clock.advance(config.incremental.backoff[0])
        after = run(config, clock, provider)

        assert during.events.applied == 0
        assert handled(provider) == ["a"]  # once, after the step
        assert after.events.applied == 1
        assert "a" in catalog_names(config)

    def test_an_object_that_keeps_changing_is_re_read_once_a_step_and_parked_in_the_end(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """`a` answers 500 and changes every 3 s while other objects change beside it (the
        review's repro: each change re-read it at once and parked it within 15 s)."""
        config, provider = world
        a_failed_alone(config, clock, provider)
        handled(provider)

        for second in range(3, 121, 3):
            clock.advance(3)
            other = "c" if second % 2 else "d"
            feed(config, clock, component_event("a", "created"), component_event(other, "created"))
            result = run(config, clock, provider)
            assert result.events.held == []

        assert handled(provider).count("a") == 2  # at 30 s and at 30 + 60 s
        assert inbox(config) == [("a", 3)]

    def test_a_newer_event_about_an_object_shown_to_fail_alone_waits_alone_when_it_fails(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """With nothing else pending, its failure is still its own: no hold of every event."""
        config, provider = world
        a_failed_alone(config, clock, provider)
        clock.advance(config.incremental.backoff[0])
        feed(config, clock, component_event("a", "created"))

        alone = run(config, clock, provider)
        clock.advance(5)
        feed(config, clock, component_event("c", "created"))
        after = run(config, clock, provider)

        assert (alone.events.retried, alone.events.held) == (1, [])
        assert EVENTS_HELD_FACT not in facts(config)
        assert after.events.applied == 1
        assert inbox(config) == [("a", 2)]

    def test_a_deleted_event_about_a_waiting_object_applies_at_once(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """A removal never waits behind newer events (it could undo them), and once applied
        its object no longer counts as failing alone."""
        config, provider = world
        a_failed_alone(config, clock, provider)
        provider.failures = {}
        clock.advance(1)
        feed(config, clock, component_event("a", "deleted"), component_event("c", "created"))

        result = run(config, clock, provider)

        assert result.events.applied == 2
        assert "a" not in catalog_names(config)
        assert inbox(config) == []
        assert EVENT_RETRIES_FACT not in facts(config)

    def test_once_it_applies_a_later_failure_asks_the_api_again(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """Mended, `a` applied: an outage met by its next event alone is the API's again, not
        a failure of its own (every event waits, exit 3)."""
        config, provider = world
        a_failed_alone(config, clock, provider)
        provider.failures = {}
        clock.advance(config.incremental.backoff[0])
        mended = run(config, clock, provider)
        provider.failures = {"a": [BROKEN]}
        feed(config, clock, component_event("a", "created"))

        outage = run(config, clock, provider)

        assert mended.events.applied == 1
        assert EVENT_RETRIES_FACT not in facts(config)
        assert [held.provider for held in outage.events.held] == ["fake"]
        assert outage.outcome is RunOutcome.FAILED

    def test_status_names_the_object_that_waits_and_until_when(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        config, provider = world
        a_failed_alone(config, clock, provider)
        until = rfc3339(clock.now() + config.incremental.backoff[0])

        assert config.state_path is not None
        with Store.open(config.state_path, readonly=True) as store:
            shown = provider_status(store, config, "fake", clock.now()).to_json()
            pending = store.inbox_counts("fake").pending
            clock.advance(config.incremental.backoff[0])
            after = provider_status(store, config, "fake", clock.now()).to_json()

        assert pending == 1
        assert shown["eventsWaitingAlone"] == [
            {
                "kind": "Component",
                "namespace": "default",
                "name": "a",
                "project": "p",
                "until": until,
            }
        ]
        assert EVENT_RETRIES_FACT not in shown
        assert EVENTS_HELD_FACT not in shown
        assert "eventsWaitingAlone" not in after  # its wait is over: the next drain tries it

    def test_status_text_says_which_object_waits(self, tmp_path: Path) -> None:
        """The `status` line of the events, with the state written at the real time (the
        command reads the system clock)."""
        config_file = tmp_path / "choreo-ingest.yaml"
        config_file.write_text("state:\n  path: state.db\nproviders:\n  - openchoreo\n")
        event = {"kind": "Component", "name": "cart", "namespace": "acme", "action": "created"}
        stored_events(tmp_path / "state.db", "openchoreo", [event], SystemClock())
        until = rfc3339(time.time() + 600)
        with Store.open(tmp_path / "state.db") as store:
            fact = json.dumps({event_key(event): until})
            store.set_facts("openchoreo", {EVENT_RETRIES_FACT: fact}, time.time())

        result = CliRunner().invoke(app, ["--config", str(config_file), "status"])

        assert result.exit_code == 0, result.output
        said = "openchoreo's Component acme/cart waits alone until"
        assert f"{said} {until} (its re-reads fail)" in " ".join(result.stdout.split())


class TestTheApiUnwell:
    @pytest.mark.parametrize(
        "error",
        [
            RetryAfter("GET /a: HTTP 429", retry_after=30.0),
            TokenUnavailable("POST /token: HTTP 503"),
        ],
        ids=["rate-limited", "token-endpoint"],
    )
    def test_a_429_or_the_token_endpoint_holds_every_event_though_the_next_would_read(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock, error: Exception
    ) -> None:
        config, provider = world
        provider.failures = {"a": [error]}
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))

        result = run(config, clock, provider)

        assert handled(provider) == ["a"]
        assert inbox(config) == [("a", 1), ("b", 0)]
        assert [held.provider for held in result.events.held] == ["fake"]
        assert result.outcome is RunOutcome.FAILED

    def test_the_failure_that_showed_the_api_unwell_is_said_and_decides_the_exit(
        self,
        world: tuple[Config, EventFakeProvider],
        clock: FakeClock,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`b` met a refused token grant right after `a`'s 500: a setting to mend (exit 2),
        logged, not charged; the events wait `a`'s step."""
        config, provider = world
        refused = GrantRefused(
            "POST https://idp.test/token: HTTP 401 invalid_client",
            config_key="openchoreo.auth.oauth.clientSecretFile",
        )
        provider.failures["b"] = [refused]
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))

        with structlog.testing.capture_logs() as logs:
            result = run(config, clock, provider)

        [held] = result.events.held
        assert (held.mendable, "invalid_client" in held.error) == (True, True)
        assert held.until == clock.now() + config.incremental.backoff[0]
        assert report_run(result, json_output=False) == 2
        assert inbox(config) == [("a", 1), ("b", 0)]
        failed = [line for line in logs if line["event"] == "event_failed"]
        assert [(line["seq"], line.get("charged", True)) for line in failed] == [
            (1, True),
            (2, False),
        ]
        capsys.readouterr()

    def test_an_event_after_it_that_needs_no_request_tells_nothing(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """An org-era `deleted` event applies without asking the API: the failure is taken
        for the API's, as when no event comes after it."""
        config, provider = world
        feed(config, clock, component_event("a", "created"), component_event("e1", "deleted"))

        result = run(config, clock, provider)

        assert result.events.applied == 1
        assert inbox(config) == [("a", 1)]
        assert EVENTS_HELD_FACT in facts(config)
        assert EVENT_RETRIES_FACT not in facts(config)

    def test_a_failure_of_its_own_in_the_event_after_it_asks_the_one_after_that(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """A bad item (not the API) in between says nothing of the API; the next read does."""
        config, provider = world
        provider.failures["b"] = [PermanentError("bad item")]
        feed(
            config,
            clock,
            component_event("a", "created"),
            component_event("b", "created"),
            component_event("c", "created"),
        )

        result = run(config, clock, provider)

        assert (result.events.applied, result.events.held) == (1, [])
        assert inbox(config) == [("a", 1), ("b", 1)]
        assert list(json.loads(facts(config)[EVENT_RETRIES_FACT])) == [
            event_key(component_event("a"))
        ]

    def test_a_deleted_event_that_fails_holds_every_event(
        self, world: tuple[Config, EventFakeProvider], clock: FakeClock
    ) -> None:
        """Applied after newer events, a removal could undo them: it never waits alone."""
        config, provider = world
        feed(config, clock, component_event("a", "deleted"), component_event("b", "created"))

        result = run(config, clock, provider)

        assert handled(provider) == ["a"]
        assert inbox(config) == [("a", 1), ("b", 0)]
        assert result.events.held


@dataclass
class ProbingFake(EventFakeProvider):
    """An EventFakeProvider with a probe of its own (`ProbingProvider`): `probe_failures` are
    raised by the next probes, one each; the probes made are counted."""

    probe_failures: list[Exception] = field(default_factory=list)
    probes: int = 0

    def probe(self, context: BurstContext) -> None:
        self.probes += 1
        if self.probe_failures:
            raise self.probe_failures.pop(0)


class TestAProbeWhenNoEventFollows:
    """`serve` drains as each event comes: the broken object's event is alone in its drain."""

    @pytest.fixture
    def probing(self, world: tuple[Config, EventFakeProvider]) -> tuple[Config, ProbingFake]:
        config, plain = world
        return config, ProbingFake(plain.entities, failures=plain.failures)

    def test_the_probe_answering_makes_it_wait_alone_and_the_next_event_apply(
        self, probing: tuple[Config, ProbingFake], clock: FakeClock
    ) -> None:
        config, provider = probing
        feed(config, clock, component_event("a", "created"))

        alone = run(config, clock, provider)
        clock.advance(1)
        feed(config, clock, component_event("b", "created"))
        after = run(config, clock, provider)

        assert (alone.events.held, alone.outcome is RunOutcome.FAILED) == ([], False)
        assert provider.probes == 1
        assert after.events.applied == 1
        assert inbox(config) == [("a", 1)]

    @pytest.mark.parametrize(
        ("failure", "alone"),
        [
            (TransientError("GET /namespaces: HTTP 503"), False),
            (NotFoundError("GET /namespaces: HTTP 404", status=404), False),
            (KeyError("a bug of the probe's"), False),
            (ConfigError("cannot read it", path="openchoreo.auth.tokenFile"), False),
        ],
        ids=["unwell", "a-proxys-404", "crashed", "setting-to-mend"],
    )
    def test_what_the_probe_meets_decides(
        self,
        probing: tuple[Config, ProbingFake],
        clock: FakeClock,
        failure: Exception,
        alone: bool,
    ) -> None:
        config, provider = probing
        provider.probe_failures = [failure]
        feed(config, clock, component_event("a", "created"))

        result = run(config, clock, provider)

        assert (result.events.held == [], EVENTS_HELD_FACT not in facts(config)) == (alone, alone)
        assert (EVENT_RETRIES_FACT in facts(config)) is alone
        if isinstance(failure, TransientError | ConfigError):  # the hold says what it met
            [held] = result.events.held
            assert str(failure) in held.error
            assert held.mendable is isinstance(failure, ConfigError)  # exit 2, not 3

    def test_a_stop_during_the_probe_is_no_verdict_of_the_apis(
        self, probing: tuple[Config, ProbingFake], clock: FakeClock
    ) -> None:
        """The client stopping answers the probe "not sent: the run is stopping": the events
        are held for the failed event's own error, as without a probe."""
        config, provider = probing
        stopping = [False]

        def stop_then_fail(context: BurstContext) -> None:
            stopping[0] = True
            raise TransientError("GET /namespaces: not sent: the run is stopping")

        provider.probe = stop_then_fail  # type: ignore[method-assign]
        feed(config, clock, component_event("a", "created"))
        assert config.state_path is not None

        with Store.open(config.state_path) as store:
            stats = drain_inbox(store, provider, config, clock, cancelled=lambda: stopping[0])

        [held] = stats.held
        assert "HTTP 500" in held.error

    def test_no_probe_when_an_event_after_it_told(
        self, probing: tuple[Config, ProbingFake], clock: FakeClock
    ) -> None:
        config, provider = probing
        a_failed_alone(config, clock, provider)

        assert provider.probes == 0


class KilledWritingRetries(Exception):
    """Stands for a kill between applying the event that told and storing the retry time."""


class StoreKilledAtRetries(Store):
    def set_facts(self, provider: str, facts: Facts, now: float) -> None:
        if EVENT_RETRIES_FACT in facts and facts[EVENT_RETRIES_FACT] is not None:
            raise KilledWritingRetries
        super().set_facts(provider, facts, now)


def test_a_kill_before_the_retry_time_is_stored_loses_and_repeats_nothing(
    world: tuple[Config, EventFakeProvider], clock: FakeClock
) -> None:
    """The event that told was applied (once); the failed one keeps its place and its attempt,
    and is asked about again by the next drain."""
    config, provider = world
    feed(config, clock, component_event("a", "created"), component_event("b", "created"))
    assert config.state_path is not None

    with (
        StoreKilledAtRetries.open(config.state_path) as store,
        pytest.raises(KilledWritingRetries),
    ):
        drain_inbox(store, provider, config, clock, cancelled=lambda: False)

    assert inbox(config) == [("a", 1)]
    assert "b" in catalog_names(config)
    assert EVENT_RETRIES_FACT not in facts(config)
    handled(provider)
    clock.advance(1)
    feed(config, clock, component_event("c", "created"))
    result = run(config, clock, provider)
    assert handled(provider) == ["a", "c"]
    assert (result.events.applied, result.events.held) == (1, [])
    assert inbox(config) == [("a", 2)]


@pytest.mark.parametrize(
    ("error", "action", "alone"),
    [
        (BROKEN, "created", True),
        (BROKEN, "updated", True),
        (TransientError("GET /a: timed out", code="TIMEOUT"), "updated", True),
        (BROKEN, "deleted", False),
        (RetryAfter("GET /a: HTTP 429", retry_after=1.0), "updated", False),
        (TokenUnavailable("POST /token: HTTP 503"), "updated", False),
        (DeadlineExceeded("GET /a: out of time"), "updated", False),
        (AuthError("GET /a: HTTP 401 INVALID_TOKEN"), "updated", False),
        (PermanentError("bad item"), "updated", False),
    ],
    ids=[
        "500-created",
        "500-updated",
        "timeout",
        "deleted",
        "429",
        "token",
        "deadline",
        "401",
        "not-transient",
    ],
)
def test_which_failures_may_be_the_objects_own(error: Exception, action: str, alone: bool) -> None:
    assert may_fail_alone(error, component_event("a", action)) is alone


class TestTheFact:
    def test_it_round_trips_and_forgets_objects_no_event_is_pending_about(self) -> None:
        a, b, c = (component_event(name) for name in "abc")
        retries = EventRetries({event_key(a): 1_000.0, event_key(b): 2_000.0})
        retries.keep_only([a, c], all_read=True)

        assert retries.changed
        again = EventRetries.from_facts({EVENT_RETRIES_FACT: retries.fact() or ""})
        assert (again.shown_alone(a), again.shown_alone(b)) == (True, False)

    def test_past_the_events_read_nothing_is_forgotten(self) -> None:
        retries = EventRetries({event_key(component_event("a")): 1_000.0})
        retries.keep_only([], all_read=False)  # `a`'s event may be past the limit

        assert not retries.changed
        assert retries.shown_alone(component_event("a"))

    def test_the_key_is_the_inboxs_kind_namespace_name_and_project(self) -> None:
        blank = component_event("a", namespace="")
        unset = {key: value for key, value in component_event("a").items() if key != "namespace"}
        other_project = component_event("a", project="q")

        assert event_key(blank) == event_key(unset)
        assert event_key(component_event("a", "deleted")) == event_key(component_event("a"))
        assert event_key(other_project) != event_key(component_event("a"))

    @pytest.mark.parametrize(
        "text",
        [
            "{not json",
            "[1, 2]",
            '{"x": 5}',
            '{"x": "not a time"}',
            '{"Component/acme/cart": "2027-01-15T08:00:00Z"}',
            '{"[1, 2, 3, 4]": "2027-01-15T08:00:00Z"}',
        ],
        ids=str,
    )
    def test_a_damaged_fact_is_no_retries_and_is_rewritten(self, text: str) -> None:
        retries = EventRetries.from_facts({EVENT_RETRIES_FACT: text})

        assert retries.changed
        assert retries.fact() is None

    def test_a_clock_set_back_waits_no_longer_than_the_longest_step(self) -> None:
        config = IncrementalConfig(backoff=(30.0, 60.0))
        a = component_event("a")
        retries = EventRetries({event_key(a): 10_000.0})

        assert retries.waiting(a, 9_950.0, config)
        assert not retries.waiting(a, 1_000.0, config)  # 9,000 s ahead: a clock set back
        assert not retries.waiting(a, 10_000.0, config)
        assert not retries.waiting(component_event("b"), 9_950.0, config)

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({"kind": "Component", "namespace": "acme", "name": "cart"}, "acme/cart"),
            ({"kind": "Component", "namespace": "acme", "project": "shop", "name": "cart"},
             "acme/shop/cart"),
            ({"kind": "Namespace", "namespace": "", "name": "acme"}, "acme"),
        ],
        ids=["v1", "org-era", "namespace"],
    )  # fmt: skip
    def test_status_says_where_the_object_is(self, body: dict[str, str], path: str) -> None:
        retries = EventRetries({event_key(body): 1_000.0})

        [wait] = retries.waits(990.0, IncrementalConfig())

        assert object_path(wait) == path


def test_withheld_names_keep_their_keys_and_a_null_stays_null(
    world: tuple[Config, EventFakeProvider], clock: FakeClock
) -> None:
    """`serve` without its token: names are catalog content, a missing namespace is none."""
    config, _ = world
    namespace_event = {"kind": "Namespace", "name": "acme", "namespace": "", "action": "updated"}
    waits = {event_key(namespace_event): rfc3339(clock.now() + 20)}
    assert config.state_path is not None
    with Store.open(config.state_path) as store:
        store.set_facts("fake", {EVENT_RETRIES_FACT: json.dumps(waits)}, clock.now())
        shown = provider_status(store, config, "fake", clock.now())

    [withheld] = replace(shown, error_withheld=True).to_json()["eventsWaitingAlone"]

    assert withheld == {
        "kind": "Namespace",
        "namespace": None,
        "name": ERROR_WITHHELD,
        "until": rfc3339(clock.now() + 20),
    }


def test_the_metrics_say_how_many_objects_wait_alone_and_until_when_all_are_held(
    world: tuple[Config, EventFakeProvider], clock: FakeClock
) -> None:
    config, provider = world
    a_failed_alone(config, clock, provider)
    alone = metrics_of(config, clock)
    provider.failures = {"c": [BROKEN]}
    clock.advance(1)
    feed(config, clock, component_event("c", "created"))  # alone in the inbox: no probe here
    run(config, clock, provider)
    held = metrics_of(config, clock)

    assert (alone.events_waiting_alone, alone.events_held_until) == (1, None)
    step = config.incremental.backoff[0]
    assert held.events_held_until == clock.now() + step


def metrics_of(config: Config, clock: FakeClock) -> ProviderMetrics:
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return provider_metrics(
            store, "fake", run_at=None, config=config.incremental, now=clock.now()
        )
