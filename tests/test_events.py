"""Events: the inbox, the `event` command, and draining at `run`
(with a fake provider that also handles events)."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from choreo_ingest.cli.app import app
from choreo_ingest.cli.run_flow import report_run
from choreo_ingest.clock import rfc3339
from choreo_ingest.config import Config
from choreo_ingest.errors import (
    AuthError,
    ConfigError,
    ConnectDeadlineExceeded,
    DeadlineExceeded,
    GrantRefused,
    PermanentError,
    ProviderError,
    ServerStalled,
    TokenRefused,
    TransientError,
)
from choreo_ingest.event_intake import stored_events
from choreo_ingest.events import MAX_EVENT_ATTEMPTS, SETTLE_SECONDS, drain_inbox
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.models import (
    REFRESH_REQUESTED_FACT,
    Delta,
    EntityIteratorResult,
    Event,
    ProviderState,
)
from choreo_ingest.providers.base import (
    BurstContext,
    EventHandlingProvider,
    IncrementalEntityProvider,
)
from choreo_ingest.reporting import provider_metrics, provider_status
from choreo_ingest.store import Store
from choreo_ingest.store.connection import Connection
from choreo_ingest.store.inbox import (
    InboxFull,
    add_events,
    pending_event_count,
    pending_events,
)
from choreo_ingest.store.run_lock import RunLock

from event_fakes import FIVE, CheckingFake, EventFakeProvider, component_event
from fakes import FakeClock, FakeProvider, make_config, make_entity


class EmptyListing:
    """A source whose listing answers two empty pages (one per burst) while re-reads work."""

    name = "fake"

    @contextmanager
    def around(self, burst: BurstContext) -> Iterator[BurstContext]:
        yield burst

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        if cursor is None:
            context.clock.sleep(context.remaining() + 1)  # the burst ends after this page
        return EntityIteratorResult(done=cursor is not None, entities=[], cursor={"page": 1})

    def handle_event(self, context: BurstContext, event: Event) -> Delta:
        return Delta(upserts=[make_entity(event.name)], removal_scopes=[event.name])


SECRET_GONE = ConfigError(
    "cannot read it: [Errno 2] No such file or directory",
    path="openchoreo.auth.oauth.clientSecretFile",
)
TOKEN_REFUSED = TokenRefused(
    "GET /namespaces/default/components/a: HTTP 401 INVALID_TOKEN: expired; check openchoreo.token",
    status=401,
)
REFUSED = GrantRefused(
    "POST https://idp.test/token: HTTP 401 invalid_client; check "
    "openchoreo.auth.oauth.clientSecretFile",
    config_key="openchoreo.auth.oauth.clientSecretFile",
)


def run(
    config: Config,
    clock: FakeClock,
    *providers: IncrementalEntityProvider,
    flooding: Callable[[str], float | None] | None = None,
) -> RunResult:
    """A `run` (`flooding`: as `serve` tells it whether events arrive as a flood)."""
    assert config.state_path is not None
    return run_once(
        config,
        config.state_path,
        clock,
        providers={provider.name: provider for provider in providers},
        rng=random.Random(0),
        events_flooding=flooding,
    )


def feed(config: Config, clock: FakeClock, *bodies: dict[str, Any], provider: str = "fake") -> None:
    """Store events as `choreo-ingest event` does, long enough before what follows that an
    `updated` one is settled (SETTLE_SECONDS)."""
    assert config.state_path is not None
    stored_events(config.state_path, provider, list(bodies), clock)
    clock.advance(SETTLE_SECONDS)


def catalog_names(config: Config) -> set[str]:
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return {body["metadata"]["name"] for body in store.iter_entities()}


def provider_state(config: Config, name: str = "fake") -> ProviderState:
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return store.load_provider(name).state


def inbox(config: Config, provider: str = "fake") -> list[tuple[str, int]]:
    """(entity name, attempts) of the provider's pending events, in order."""
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return [(item.body["name"], item.attempts) for item in store.pending_events(provider)]


def status_of(config: Config, provider: str = "fake", now: float = 0.0) -> dict[str, Any]:
    """The provider's `status --json` document at `now`."""
    assert config.state_path is not None
    with Store.open(config.state_path, readonly=True) as store:
        return provider_status(store, config, provider, now).to_json()


def events_total(config: Config) -> dict[str, float]:
    assert config.metrics_textfile is not None
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(config.metrics_textfile.read_text())
        for sample in family.samples
        if sample.name == "choreo_ingest_events_total"
    }


class TestInbox:
    def test_events_wait_in_arrival_order(self, tmp_path: Path, clock: FakeClock) -> None:
        config = make_config(tmp_path)
        feed(config, clock, component_event("b", "created"), component_event("a", "deleted"))
        feed(config, clock, component_event("c", "updated"))

        assert inbox(config) == [("b", 0), ("a", 0), ("c", 0)]

    def test_a_batch_is_stored_whole_or_not_at_all(
        self, state_path: Path, clock: FakeClock
    ) -> None:
        unencodable = {**component_event("b", "created"), "extra": object()}
        with Store.open(state_path) as store:
            store.migrate()
            with pytest.raises(TypeError):
                store.add_events("fake", [component_event("a", "created"), unencodable], 1.0)

            assert store.pending_events("fake") == []

    def test_storing_events_does_not_need_the_run_lock(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        run(config, clock, FakeProvider(FIVE))
        assert config.state_path is not None

        with RunLock(config.state_path):  # a burst is running
            feed(config, clock, component_event("a", "created"))

        assert inbox(config) == [("a", 0)]

    def test_an_event_meeting_the_first_migration_half_begun_is_stored(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The first run creates the migrations table, then applies the first migration: an
        event stored in between must not find "not a choreo-ingest state file" (serve would
        answer 503, and the forwarder does not try again)."""
        config = make_config(tmp_path)
        assert config.state_path is not None
        with closing(sqlite3.connect(config.state_path)) as half_begun:
            half_begun.execute(
                "CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, "
                "name TEXT, applied_at TEXT)"
            )
            half_begun.commit()

        feed(config, clock, component_event("a", "created"))

        assert inbox(config) == [("a", 0)]

    def test_the_first_event_creates_and_migrates_the_state_file(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)

        feed(config, clock, component_event("a", "created"))

        assert inbox(config) == [("a", 0)]

    def test_events_are_kept_per_provider(self, tmp_path: Path, clock: FakeClock) -> None:
        config = make_config(tmp_path)
        feed(config, clock, component_event("a", "created"), provider="other")

        assert inbox(config) == []
        assert inbox(config, "other") == [("a", 0)]


class TestCoalescing:
    """Pending events about one object coalesce into the newest, which keeps its place."""

    def bodies(self, config: Config, provider: str = "fake") -> list[dict[str, Any]]:
        assert config.state_path is not None
        with Store.open(config.state_path, readonly=True) as store:
            return [item.body for item in store.pending_events(provider)]

    def test_a_newer_event_replaces_the_pending_one_and_takes_the_newest_place(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))
        feed(config, clock, component_event("a", "deleted"))

        assert [(body["name"], body["action"]) for body in self.bodies(config)] == [
            ("b", "created"),
            ("a", "deleted"),
        ]

    def test_duplicates_in_one_batch_keep_the_last(self, tmp_path: Path, clock: FakeClock) -> None:
        config = make_config(tmp_path)
        arrivals = [("a", "created"), ("b", "updated"), ("a", "updated"), ("b", "deleted")]

        feed(config, clock, *(component_event(name, action) for name, action in arrivals))

        assert [(body["name"], body["action"]) for body in self.bodies(config)] == [
            ("a", "updated"),
            ("b", "deleted"),
        ]

    @pytest.mark.parametrize(
        ("other", "coalesced"),
        [
            ({"namespace": ""}, False),
            ({"namespace": "other"}, False),
            ({"project": "q"}, False),
            ({"kind": "Workload"}, False),
            ({"name": "b"}, False),
            ({"action": "deleted", "extra": 1}, True),
        ],
        ids=["no-namespace", "other-namespace", "other-project", "other-kind", "other-name",
             "other-action"],
    )  # fmt: skip
    def test_the_key_is_provider_kind_namespace_name_and_project(
        self, tmp_path: Path, clock: FakeClock, other: dict[str, Any], coalesced: bool
    ) -> None:
        config = make_config(tmp_path)
        first = component_event("a", "created")

        feed(config, clock, first, {**first, **other})
        feed(config, clock, first, provider="other")

        assert len(self.bodies(config)) == (1 if coalesced else 2)
        assert len(self.bodies(config, "other")) == 1

    def test_a_blank_namespace_is_no_namespace(self, tmp_path: Path, clock: FakeClock) -> None:
        config = make_config(tmp_path)
        bare = {"kind": "Namespace", "name": "acme", "action": "created"}

        feed(config, clock, bare, {**bare, "namespace": ""}, {**bare, "namespace": None})

        assert self.bodies(config) == [{**bare, "namespace": None}]

    def test_a_newer_event_replaces_the_parked_one(self, tmp_path: Path, clock: FakeClock) -> None:
        """The parked event's object is re-read by the new one, at the next run: `status` no
        longer counts it as parked."""
        config = make_config(tmp_path)
        feed(config, clock, component_event("a", "created"))
        assert config.state_path is not None
        with Store.open(config.state_path) as store:
            [parked] = store.pending_events("fake")
            store.fail_event("fake", parked.seq, "down", max_attempts=1)

        feed(config, clock, component_event("a", "updated"))

        with Store.open(config.state_path, readonly=True) as store:
            counts = store.inbox_counts()
        assert (counts.pending, counts.parked) == (1, 0)

    def test_twenty_thousand_identical_events_cost_one_re_read(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        feed(config, clock, *[component_event("e1", "updated")] * 20_000)

        result = run(config, clock, provider)

        assert [(event.name, event.action) for event in provider.handled] == [("e1", "updated")]
        assert result.events.applied == 1

    @pytest.mark.parametrize(
        ("actions", "present"),
        [(("created", "deleted"), False), (("deleted", "created"), True)],
        ids=["deleted-last", "created-last"],
    )
    def test_the_newest_action_decides(
        self, tmp_path: Path, clock: FakeClock, actions: tuple[str, str], present: bool
    ) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        run(config, clock, provider)
        feed(config, clock, *(component_event("e1", action) for action in actions))

        run(config, clock, provider)

        assert [event.action for event in provider.handled] == [actions[-1]]
        assert ("e1" in catalog_names(config)) is present


class TestInboxCapacity:
    def test_events_past_the_capacity_are_refused_whole(self, state_path: Path) -> None:
        with Store.open(state_path) as store:
            store.migrate()
        with closing(Connection(state_path, readonly=False)) as conn:
            add_events(conn, "fake", [component_event("a", "created")], 1.0, capacity=2)
            with pytest.raises(
                InboxFull, match=r"room for 1 more events \(1 pending, the limit is 2\)"
            ):
                add_events(
                    conn,
                    "fake",
                    [component_event("b", "created"), component_event("c", "created")],
                    1.0,
                    capacity=2,
                )
            assert [item.body["name"] for item in pending_events(conn, "fake", 10)] == ["a"]

    def test_a_batch_of_more_distinct_events_than_the_capacity_never_fits(
        self, state_path: Path
    ) -> None:
        with Store.open(state_path) as store:
            store.migrate()
        with closing(Connection(state_path, readonly=False)) as conn:
            batch = [component_event(name, "created") for name in ("a", "b", "c", "a")]
            with pytest.raises(InboxFull, match=r"a batch of 3 events .* never fits") as refused:
                add_events(conn, "fake", batch, 1.0, capacity=2)

            assert refused.value.never_fits
            assert pending_event_count(conn, "fake") == 0

    def test_a_batch_that_fits_an_empty_inbox_is_not_told_it_never_fits(
        self, state_path: Path
    ) -> None:
        with Store.open(state_path) as store:
            store.migrate()
        with closing(Connection(state_path, readonly=False)) as conn:
            add_events(conn, "fake", [component_event("a", "created")], 1.0, capacity=2)
            batch = [component_event(name, "created") for name in ("b", "c", "b")]
            with pytest.raises(InboxFull, match="room for 1 more") as refused:
                add_events(conn, "fake", batch, 1.0, capacity=2)

            assert not refused.value.never_fits

    def test_a_full_inbox_still_takes_events_that_replace_pending_ones(
        self, state_path: Path
    ) -> None:
        with Store.open(state_path) as store:
            store.migrate()
        with closing(Connection(state_path, readonly=False)) as conn:
            events = [component_event("a", "created"), component_event("b", "created")]
            add_events(conn, "fake", events, 1.0, capacity=2)

            add_events(conn, "fake", [component_event("a", "deleted")], 1.0, capacity=2)

            assert pending_event_count(conn, "fake") == 2

    def test_a_refused_event_makes_the_next_run_refresh_the_provider(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path, rest_length=3600.0)
        assert config.state_path is not None
        provider = EventFakeProvider([make_entity("a"), make_entity("b")])
        run(config, clock, provider)  # a whole cycle: resting for an hour
        stored_events(
            config.state_path, "fake", [component_event("a", "updated")], clock, capacity=1
        )
        clock.advance(60.0)
        assert run(config, clock, provider).outcome == "waiting"  # the event was applied

        stored_events(
            config.state_path, "fake", [component_event("a", "updated")], clock, capacity=1
        )
        with pytest.raises(InboxFull):
            stored_events(
                config.state_path, "fake", [component_event("b", "updated")], clock, capacity=1
            )
        with Store.open(config.state_path, readonly=True) as store:
            assert REFRESH_REQUESTED_FACT in store.facts("fake")
            # choreo_ingest_events_total{outcome="dropped"}: before, no metric said it
            assert store.counters("fake").get("events_dropped") == 1

        clock.advance(60.0)
        with structlog.testing.capture_logs() as logs:
            result = run(config, clock, provider)

        assert result.outcome == "burst"
        assert_began_a_requested_cycle(config.state_path)
        assert refresh_lines(logs) == [
            ("warning", "events were refused (the inbox was full) or dropped (too many pending)")
        ]
        assert run(config, clock, provider).outcome == "waiting"

    def test_an_event_whose_delta_asks_for_a_walk_makes_the_same_run_start_a_cycle(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A namespace served again with what it held all along (`events_v1`): the delta asks
        for a fresh walk, stored in its own transaction, and the run that applied it starts one
        rather than rest on."""
        config = make_config(tmp_path, rest_length=3600.0)
        assert config.state_path is not None
        provider = WalkAskingFake([make_entity("a"), make_entity("b")])
        run(config, clock, provider)  # a whole cycle: resting for an hour
        stored_events(config.state_path, "fake", [component_event("a", "updated")], clock)
        clock.advance(60.0)

        with structlog.testing.capture_logs() as logs:
            result = run(config, clock, provider)

        assert result.outcome == "burst"
        assert_began_a_requested_cycle(config.state_path)
        with Store.open(config.state_path, readonly=True) as store:
            assert store.pending_event_count("fake") == 0
        # nothing was lost: no warning for cron to mail, and no word of a full inbox
        assert refresh_lines(logs) == [
            ("info", "an event named what only a walk brings (a namespace served again, say)")
        ]
        assert run(config, clock, provider).outcome == "waiting"


def refresh_lines(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The `refresh_requested` lines: level, and why (their message's cause)."""
    return [
        (line["log_level"], line["message"].removesuffix(": a new cycle walks the platform again"))
        for line in logs
        if line["event"] == "refresh_requested"
    ]


def assert_began_a_requested_cycle(state_path: Path) -> None:
    """The second cycle began, and the request for it is gone."""
    with Store.open(state_path, readonly=True) as store:
        assert store.load_provider("fake").cycle_id == 2
        assert REFRESH_REQUESTED_FACT not in store.facts("fake")


@dataclass
class WalkAskingFake(EventFakeProvider):
    """Its events' deltas ask for a fresh walk (`Delta.refresh`)."""

    def handle_event(self, context: BurstContext, event: Event) -> Delta:
        return replace(super().handle_event(context, event), refresh=True)


class TestEventCommand:
    @pytest.fixture
    def config_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "choreo-ingest.yaml"
        path.write_text("state:\n  path: state.db\nproviders:\n  - openchoreo\n", encoding="utf-8")
        return path

    def invoke(self, *args: str, stdin: str | None = None) -> Any:
        return CliRunner().invoke(app, list(args), input=stdin)

    def pending(self, tmp_path: Path) -> list[str]:
        with Store.open(tmp_path / "state.db", readonly=True) as store:
            return [item.body["name"] for item in store.pending_events("openchoreo")]

    def test_invalid_events_exit_2_and_the_valid_ones_are_stored(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        events = tmp_path / "events.json"
        events.write_text(
            json.dumps(
                [
                    component_event("a", "created"),
                    {"kind": "Component", "namespace": "acme", "project": "p", "action": "created"},
                    component_event("b", "deleted"),
                    {"kind": "Component", "name": "c", "namespace": "acme", "action": " "},
                ]
            ),
            encoding="utf-8",
        )

        result = self.invoke("event", str(events), "--json", "--config", str(config_file))

        assert result.exit_code == 2, result.output
        document = json.loads(result.stdout)
        assert document["stored"] == 2
        assert document["exitCode"] == 2
        assert [item["index"] for item in document["rejected"]] == [2, 4]
        assert "needs a non-empty 'name'" in document["rejected"][0]["problem"]
        assert "needs a non-empty 'action'" in document["rejected"][1]["problem"]
        assert "event 4: event needs a non-empty 'action'" in result.stderr
        assert self.pending(tmp_path) == ["a", "b"]

    def test_ndjson_on_stdin_is_stored_in_order(self, tmp_path: Path, config_file: Path) -> None:
        ndjson = "".join(json.dumps(component_event(n, "updated")) + "\n" for n in ("z", "y"))

        result = self.invoke("event", "-", "--json", "--config", str(config_file), stdin=ndjson)

        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {
            "stored": 2,
            "ignored": 0,
            "rejected": [],
            "exitCode": 0,
        }
        assert self.pending(tmp_path) == ["z", "y"]

    def test_a_v1_event_with_an_action_of_its_own_is_stored(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        body = {"kind": "Component", "name": "c", "namespace": "acme", "action": "patched"}

        result = self.invoke(
            "event", "-", "--json", "--config", str(config_file), stdin=json.dumps(body)
        )

        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["stored"] == 1
        assert self.pending(tmp_path) == ["c"]

    def test_event_succeeds_while_a_run_holds_the_lock(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        first = self.invoke("event", "--config", str(config_file), stdin="[]")
        assert first.exit_code == 0, first.output

        with RunLock(tmp_path / "state.db"):
            result = self.invoke(
                "event",
                "--config",
                str(config_file),
                stdin=json.dumps(component_event("a", "created")),
            )

        assert result.exit_code == 0, result.output
        assert self.pending(tmp_path) == ["a"]

    def test_an_unreadable_file_is_a_usage_error(self, tmp_path: Path, config_file: Path) -> None:
        result = self.invoke("event", str(tmp_path / "missing.json"), "--config", str(config_file))

        assert result.exit_code == 2
        assert "missing.json: cannot read" in result.stderr

    def test_events_for_an_unconfigured_provider_are_refused(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        result = self.invoke(
            "event",
            "--provider",
            "nope",
            "--config",
            str(config_file),
            stdin=json.dumps(component_event("a", "created")),
        )

        assert result.exit_code == 2
        assert "'nope' is not configured" in result.stderr
        assert not (tmp_path / "state.db").exists()

    def test_status_json_counts_pending_and_parked_events(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        events = [component_event(name, "created") for name in ("a", "b", "c")]
        self.invoke("event", "--config", str(config_file), stdin=json.dumps(events))
        with Store.open(tmp_path / "state.db") as store:
            first = store.pending_events("openchoreo")[0]
            store.fail_event("openchoreo", first.seq, "down", max_attempts=1)

        result = self.invoke("status", "--json", "--config", str(config_file))

        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["events"] == {"pending": 2, "parked": 1}


class TestDrain:
    def test_an_update_waits_out_the_forwarders_debounce_window_before_it_is_read(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """OpenChoreo's forwarder drops the updates of an object that follow its first within
        1 s: read at once, the object could miss the last of them. Other events do not wait."""
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        run(config, clock, provider)
        assert config.state_path is not None
        bodies = [component_event("e1", "updated"), component_event("e2", "deleted")]
        stored_events(config.state_path, "fake", bodies, clock)

        clock.advance(SETTLE_SECONDS - 0.1)
        early = run(config, clock, provider)
        waiting = inbox(config)
        clock.advance(0.1)
        settled = run(config, clock, provider)

        assert early.events.applied == 1
        assert waiting == [("e1", 0)]
        assert settled.events.applied == 1
        assert [(event.name, event.action) for event in provider.handled] == [
            ("e2", "deleted"),
            ("e1", "updated"),
        ]
        assert inbox(config) == []

    def test_an_update_received_after_now_by_a_clock_set_back_does_not_wait(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        run(config, clock, provider)
        assert config.state_path is not None
        stored_events(config.state_path, "fake", [component_event("e1", "updated")], clock)

        clock.advance(-60)

        assert run(config, clock, provider).events.applied == 1

    def test_events_apply_in_arrival_order(self, tmp_path: Path, clock: FakeClock) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        run(config, clock, provider)
        provider.entities = [*FIVE[1:], make_entity("new")]  # e0 gone, new added
        arrivals = [("e2", "deleted"), ("e0", "deleted"), ("new", "created"), ("e3", "updated")]
        feed(config, clock, *(component_event(name, action) for name, action in arrivals))

        result = run(config, clock, provider)

        assert [(event.name, event.action) for event in provider.handled] == arrivals
        assert catalog_names(config) == {"e1", "e3", "e4", "new"}
        assert result.events.applied == 4
        assert inbox(config) == []

    @pytest.mark.parametrize(
        ("state", "action"),
        [
            (ProviderState.IDLE, "burst"),
            (ProviderState.INTERSTITIAL, "waiting"),
            (ProviderState.RESTING, "waiting"),
            (ProviderState.BACKING_OFF, "waiting"),
        ],
        ids=["idle", "interstitial", "resting", "backing-off"],
    )
    def test_events_are_drained_whatever_the_provider_state(
        self, tmp_path: Path, clock: FakeClock, state: ProviderState, action: str
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0)
        provider = EventFakeProvider(list(FIVE))
        if state is ProviderState.INTERSTITIAL:
            provider.page_cost = 11.0  # one page per burst
        if state is ProviderState.BACKING_OFF:
            provider.fail_at = {0: TransientError("502")}
        if state is not ProviderState.IDLE:
            run(config, clock, provider)
        provider.page_cost = 0.0
        provider.entities = [*FIVE, make_entity("new")]
        feed(config, clock, component_event("new", "created"))
        assert provider_state(config) is state

        result = run(config, clock, provider)

        assert "new" in catalog_names(config)
        assert result.events.applied == 1
        assert [outcome.action for outcome in result.providers] == [action]

    def test_an_outage_keeps_the_events_and_charges_only_the_first(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The event after a transient failure fails too: the API is unwell, not the first
        event's object. Every event waits; the second is not charged an attempt."""
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        run(config, clock, provider)
        provider.entities = [*FIVE, make_entity("a"), make_entity("b")]
        outage = TransientError("GET /a: HTTP 503")
        provider.failures = {"a": [outage], "b": [outage]}
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))

        first = run(config, clock, provider)

        assert (first.events.applied, first.events.retried) == (0, 1)
        assert inbox(config) == [("a", 1), ("b", 0)]
        assert {"a", "b"}.isdisjoint(catalog_names(config))
        assert [outcome.action for outcome in first.providers] == ["waiting"]
        held = run(config, clock, provider)  # the API failed: the events wait a backoff step
        assert (held.events.applied, held.events.retried) == (0, 0)
        assert inbox(config) == [("a", 1), ("b", 0)]
        clock.advance(config.incremental.backoff[0])

        second = run(config, clock, provider)

        assert second.events.applied == 2
        assert inbox(config) == []
        assert {"a", "b"} <= catalog_names(config)

    def test_running_out_of_burst_time_stops_the_drain_without_counting_an_attempt(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider([*FIVE, make_entity("a"), make_entity("b")])
        provider.failures = {"a": [DeadlineExceeded("GET /a: the burst deadline has passed")]}
        feed(config, clock, component_event("b", "created"), component_event("a", "created"))

        with structlog.testing.capture_logs() as logs:
            first = run(config, clock, provider)

        assert (first.events.applied, first.events.retried, first.events.parked) == (1, 0, 0)
        assert inbox(config) == [("a", 0)]
        assert [line for line in logs if line["log_level"] == "warning"] == []

        second = run(config, clock, provider)

        assert second.events.applied == 1
        assert {"a", "b"} <= catalog_names(config)

    def test_an_event_that_never_fits_a_burst_is_parked_not_left_to_block_the_inbox(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider([*FIVE, make_entity("a"), make_entity("b")])
        provider.failures = {
            "a": [DeadlineExceeded("GET /a: the burst deadline has passed")] * MAX_EVENT_ATTEMPTS
        }
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))

        with structlog.testing.capture_logs() as logs:
            results = [run(config, clock, provider) for _ in range(MAX_EVENT_ATTEMPTS + 1)]

        assert [r.events.retried for r in results] == [1] * (MAX_EVENT_ATTEMPTS - 1) + [0, 0]
        assert [r.events.parked for r in results[-2:]] == [1, 0]
        assert results[-1].events.applied == 1
        assert inbox(config) == []
        assert "b" in catalog_names(config)
        [said, *_] = [line["error"] for line in logs if line["event"] == "event_failed"]
        assert said == (
            "GET /a: the burst deadline has passed: its re-reads do not fit in burstLength "
            "(10 s); raise openchoreo.incremental.burstLength"
        )

    def test_a_first_event_whose_connection_never_came_up_keeps_its_own_advice(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Not "raise burstLength": the address is what to check."""
        config = make_config(tmp_path)
        provider = EventFakeProvider([*FIVE, make_entity("a")])
        said = "GET /a: connecting timed out: check the scheme and port of openchoreo.baseUrl"
        provider.failures = {"a": [ConnectDeadlineExceeded(said)]}
        feed(config, clock, component_event("a", "created"))

        failed_at = clock.now()
        with structlog.testing.capture_logs() as logs:
            assert run(config, clock, provider).events.retried == 1

        assert [line["error"] for line in logs if line["event"] == "event_failed"] == [said]
        # The way to the API, not the event: the inbox waits out a backoff step, as for an
        # unwell API, instead of charging it an attempt every minute (parked in 5).
        held_until = status_of(config, now=clock.now())["eventsHeldUntil"]
        assert held_until == rfc3339(failed_at + config.incremental.backoff[0])
        held = run(config, clock, provider)
        assert (held.events.applied, held.events.retried) == (0, 0)
        assert inbox(config) == [("a", 1)]
        clock.advance(config.incremental.backoff[0])
        assert run(config, clock, provider).events.applied == 1

    def test_a_first_event_whose_server_stalled_holds_the_inbox_without_burst_advice(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The API accepts the connection and never answers (burstLength and requestTimeout
        both 10 s, the defaults): an outage, not an event too large for a burst. Before, it cost
        the event an attempt every minute (parked in 5) and advised raising burstLength."""
        config = make_config(tmp_path)
        provider = EventFakeProvider([*FIVE, make_entity("a")])
        said = "GET /a: timed out: no answer in 9.95 s (requestTimeout)"
        provider.failures = {"a": [ServerStalled(said, code="TIMEOUT")]}
        feed(config, clock, component_event("a", "created"))

        failed_at = clock.now()
        with structlog.testing.capture_logs() as logs:
            result = run(config, clock, provider)

        assert [line["error"] for line in logs if line["event"] == "event_failed"] == [said]
        [held] = result.events.held
        assert (held.error, held.mendable) == (said, False)
        held_until = status_of(config, now=clock.now())["eventsHeldUntil"]
        assert held_until == rfc3339(failed_at + config.incremental.backoff[0])
        clock.advance(config.incremental.backoff[0])
        assert run(config, clock, provider).events.applied == 1

    def test_a_first_event_that_timed_out_after_an_error_answer_holds_the_inbox(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The API answered 500, then its retry ran into the deadline: a failing server, not an
        event too large for burstLength, so the events wait as for any outage."""
        config = make_config(tmp_path)
        provider = EventFakeProvider([*FIVE, make_entity("a")])
        said = "GET /a: timed out at the burst deadline, the attempt before it answered HTTP 500"
        provider.failures = {"a": [DeadlineExceeded(said, status=500)]}
        feed(config, clock, component_event("a", "created"))

        with structlog.testing.capture_logs() as logs:
            result = run(config, clock, provider)

        assert [line["error"] for line in logs if line["event"] == "event_failed"] == [said]
        [held] = result.events.held
        assert (held.error, held.mendable) == (said, False)
        assert "eventsHeldUntil" in status_of(config, now=clock.now())

    def test_a_first_event_cut_short_by_a_stop_is_not_counted(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """SIGTERM while the drain's first event reads: its request runs on to the deadline,
        which says nothing about the event."""
        config = make_config(tmp_path)
        stop = threading.Event()

        @dataclass
        class Stopped(EventFakeProvider):
            def handle_event(self, context: BurstContext, event: Event) -> Delta:
                stop.set()
                raise DeadlineExceeded("GET /a: the burst deadline has passed")

        provider = Stopped([*FIVE, make_entity("a")])
        feed(config, clock, component_event("a", "created"))
        assert config.state_path is not None

        with Store.open(config.state_path) as store:
            stats = drain_inbox(store, provider, config, clock, stop.is_set)

        assert (stats.retried, stats.parked) == (0, 0)
        assert inbox(config) == [("a", 0)]

    @pytest.mark.parametrize(
        "error",
        [
            PermanentError("400 INVALID_INPUT"),
            KeyError("displayName"),  # a bug in the provider's mapping
        ],
        ids=["permanent-error", "provider-bug"],
    )
    def test_failure_of_one_event_does_not_hold_back_the_others_or_the_burst(
        self, tmp_path: Path, clock: FakeClock, error: Exception
    ) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider([*FIVE, make_entity("a"), make_entity("b")])
        provider.failures = {"a": [error]}
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))

        result = run(config, clock, provider)

        assert (result.events.applied, result.events.retried) == (1, 1)
        assert inbox(config) == [("a", 1)]
        assert [outcome.action for outcome in result.providers] == ["burst"]
        assert result.outcome == "burst"

    @pytest.mark.parametrize(
        ("error", "action"),
        [
            (AuthError("401; check openchoreo.token"), "updated"),
            (PermanentError("the source refused the removal"), "deleted"),
        ],
        ids=["auth-error", "failed-deletion"],
    )
    def test_failure_that_may_concern_later_events_stops_the_drain(
        self, tmp_path: Path, clock: FakeClock, error: Exception, action: str
    ) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        provider.failures = {"e1": [error]}
        feed(config, clock, component_event("e1", action), component_event("e2", "created"))

        run(config, clock, provider)

        assert inbox(config) == [("e1", 1), ("e2", 0)]

    @pytest.mark.parametrize(
        ("drain_error", "burst_error", "code"),
        [
            (TransientError("GET /a: 503 INTERNAL_ERROR"), None, 3),
            (REFUSED, None, 2),
            (REFUSED, REFUSED, 2),
            (TransientError("GET /a: 503 INTERNAL_ERROR"), REFUSED, 3),
            (SECRET_GONE, None, 2),
            (REFUSED, TransientError("GET /namespaces: 503 INTERNAL_ERROR"), 3),
            (TOKEN_REFUSED, None, 2),
        ],
        ids=[
            "outage",
            "grant-refused",
            "grant-refused-twice",
            "outage-and-grant-refused",
            "secret-file-gone",
            "grant-refused-and-outage",
            "configured-token-refused",
        ],
    )
    def test_a_drain_held_by_a_setting_to_mend_exits_2_as_a_burst_that_met_it(
        self,
        tmp_path: Path,
        clock: FakeClock,
        capsys: pytest.CaptureFixture[str],
        drain_error: Exception,
        burst_error: ProviderError | None,
        code: int,
    ) -> None:
        """A setting to mend (a refused token grant, a secret file gone) is exit 2 wherever the
        run meets it, and holds the inbox as an outage does (every event would meet it: `serve`
        drains every second); upstream trouble anywhere makes it 3. With events pending, the
        drain always meets it first."""
        config = make_config(tmp_path)
        provider = EventFakeProvider([*FIVE, make_entity("a"), make_entity("b")])
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))
        provider.failures = {"a": [drain_error], "b": [drain_error]}  # every event meets it
        provider.fail_at = {0: burst_error} if burst_error else {}

        result = run(config, clock, provider)

        [held] = result.events.held
        assert held.mendable is (drain_error in (REFUSED, SECRET_GONE, TOKEN_REFUSED))
        assert inbox(config) == [("a", 1), ("b", 0)]  # the event after it was not charged
        assert report_run(result, json_output=False) == code
        capsys.readouterr()

    def test_an_outage_costs_an_event_one_attempt_per_backoff_step_not_per_drain(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """`serve` drains every second: an API outage of seconds parked the event at the head
        of the inbox (5 attempts), never to be retried. The events wait out a backoff step
        after each failed attempt, and `status` says until when."""
        config = make_config(tmp_path)
        provider = EventFakeProvider([*FIVE, make_entity("a")])
        run(config, clock, provider)
        provider.failures = {"a": [TransientError("503")] * 20}
        feed(config, clock, component_event("a", "created"))
        failed_at = clock.now()

        for _ in range(10):  # ten drains, a second apart
            run(config, clock, provider)
            clock.advance(1)
        during = status_of(config, now=clock.now())
        provider.failures = {}
        clock.advance(config.incremental.backoff[0])
        after = run(config, clock, provider)

        assert during["eventsHeldUntil"] == rfc3339(failed_at + config.incremental.backoff[0])
        assert after.events.applied == 1
        assert "eventsHeldUntil" not in status_of(config, now=clock.now())
        assert events_total(config)["retried"] == 1

    def test_event_is_parked_after_its_last_attempt_and_shown_by_status(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        # No cycle begins after the events arrived: its completion would forget the parked one.
        config = make_config(tmp_path, rest_length=86_400.0)
        provider = EventFakeProvider([*FIVE, make_entity("b")])
        provider.failures = {"a": [TransientError("503")] * MAX_EVENT_ATTEMPTS}
        feed(config, clock, component_event("a", "created"), component_event("b", "created"))

        for attempt in range(1, MAX_EVENT_ATTEMPTS):
            run(config, clock, provider)
            assert inbox(config) == [("a", attempt)]  # `b` read fine: `a` failed alone
            clock.advance(max(config.incremental.backoff))  # the events wait that long at most
        last = run(config, clock, provider)

        assert (last.events.parked, last.events.applied) == (1, 0)
        assert inbox(config) == []
        assert config.state_path is not None
        with Store.open(config.state_path, readonly=True) as store:
            counts = store.inbox_counts()
        assert (counts.pending, counts.parked) == (0, 1)
        assert events_total(config) == {
            "applied": 1,
            "parked": 1,
            "retried": MAX_EVENT_ATTEMPTS - 1,
            "rejected": 0,
            "ignored": 0,
            "dropped": 0,
        }

    def test_an_object_that_keeps_changing_while_its_re_read_fails_is_parked_in_the_end(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Each new event about `a` replaces the failing one; its attempts go on counting."""
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        provider.failures = {"a": [TransientError("503")] * (MAX_EVENT_ATTEMPTS + 1)}
        feed(config, clock, component_event("a", "created"))

        for attempt in range(1, MAX_EVENT_ATTEMPTS):
            run(config, clock, provider)
            feed(config, clock, component_event("a", "updated"))
            assert inbox(config) == [("a", attempt)]
            clock.advance(max(config.incremental.backoff))  # the events wait that long at most
        last = run(config, clock, provider)

        assert last.events.parked == 1
        assert inbox(config) == []

    def test_backlog_past_the_limit_is_dropped_and_a_fresh_walk_scheduled(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """An event forwarder that starts sends one event per object: re-reading each would
        cost more than the walk, so past the provider's limit the walk catches up instead."""
        config = make_config(tmp_path)
        provider = CheckingFake(list(FIVE), page_size=5, max_pending_events=3)
        run(config, clock, provider)
        assert provider_state(config) is ProviderState.RESTING
        feed(config, clock, *(component_event(f"e{i}", "updated") for i in range(4)))

        result = run(config, clock, provider)

        assert (result.events.dropped, result.events.applied) == (4, 0)
        assert provider.handled == []
        assert inbox(config) == []
        assert [outcome.action for outcome in result.providers] == ["burst"]
        assert events_total(config)["dropped"] == 4

    @pytest.mark.parametrize("flooding", [True, False], ids=["flood", "no-flood"])
    def test_events_arriving_as_a_flood_are_dropped_for_a_fresh_walk_however_few_are_pending(
        self, tmp_path: Path, clock: FakeClock, flooding: bool
    ) -> None:
        """`serve` drains as events come, so a forwarder's start never piled up past the limit
        and was re-read one object at a time. The walk in their place waits for the flood's
        end (one walk after it stands in for all of it)."""
        config = make_config(tmp_path)
        provider = CheckingFake(list(FIVE), page_size=5, max_pending_events=3)
        run(config, clock, provider)
        feed(config, clock, *(component_event(f"e{i}", "updated") for i in range(2)))

        result = run(config, clock, provider, flooding=lambda _: 0.0 if flooding else None)
        after_it = run(config, clock, provider, flooding=lambda _: None)

        assert (result.events.dropped, result.events.applied) == ((2, 0) if flooding else (0, 2))
        assert [outcome.action for outcome in result.providers] == ["waiting"]
        assert [outcome.action for outcome in after_it.providers] == [
            "burst" if flooding else "waiting"
        ]

    def test_a_flood_that_begins_while_events_are_re_read_drops_the_rest_for_a_walk(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """At a real API's latency `serve`'s drain began with the forwarder's first events and
        re-read them one by one while the rest of its start arrived; by the next drain the
        flood's window had passed, and every object was re-read. The drain watches for it."""
        config = make_config(tmp_path)
        provider = CheckingFake(list(FIVE), page_size=5, max_pending_events=30)
        run(config, clock, provider)
        feed(config, clock, *(component_event(f"e{i}", "created") for i in range(5)))
        provider.handled.clear()

        def after_two(_: str) -> float | None:  # the flood, seen once two are re-read
            return 0.0 if provider.handled[1:] else None

        result = run(config, clock, provider, flooding=after_two)
        after_it = run(config, clock, provider, flooding=lambda _: None)

        assert (result.events.applied, result.events.dropped) == (2, 3)
        assert inbox(config) == []
        assert events_total(config)["dropped"] == 3
        assert [outcome.action for outcome in after_it.providers] == ["burst"]

    def test_a_flood_whose_window_closes_before_the_drain_asks_again_loses_no_event(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The drain stops for a flood seen before its third event, but by the time it asks
        once more (to drop the rest) the flood's window has passed: nothing is dropped, and
        the next drain applies the three it stopped short of, each once."""
        config = make_config(tmp_path)
        provider = CheckingFake(list(FIVE), page_size=5, max_pending_events=30)
        run(config, clock, provider)
        feed(config, clock, *(component_event(f"e{i}", "created") for i in range(5)))
        provider.handled.clear()
        answers: list[float | None] = []

        def seen_once(_: str) -> float | None:  # a flood, for one answer once two are re-read
            answers.append(0.0 if provider.handled[1:] and 0.0 not in answers else None)
            return answers[-1]

        result = run(config, clock, provider, flooding=seen_once)
        assert (result.events.applied, result.events.dropped) == (2, 0)
        assert len(inbox(config)) == 3
        after_it = run(config, clock, provider, flooding=lambda _: None)

        assert (after_it.events.applied, after_it.events.dropped) == (3, 0)
        assert sorted(event.name for event in provider.handled) == [f"e{i}" for i in range(5)]
        assert inbox(config) == []
        assert events_total(config)["dropped"] == 0

    def test_backlog_within_the_pages_of_the_last_walk_is_applied_past_max_pending(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A deploy's events on a large platform: re-reading them costs less than the walk
        that would stand in for them (6,000 pages at 300,000 components)."""
        config = make_config(tmp_path)
        provider = CheckingFake(list(FIVE), page_size=1, max_pending_events=3)
        run(config, clock, provider)
        assert provider_state(config) is ProviderState.RESTING  # a walk of 5 pages
        feed(config, clock, *(component_event(f"e{i}", "updated") for i in range(5)))

        result = run(config, clock, provider)

        assert (result.events.dropped, result.events.applied) == (0, 5)
        assert [outcome.action for outcome in result.providers] == ["waiting"]

    def test_backlog_past_max_pending_and_the_last_walk_is_dropped_saying_both(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        provider = CheckingFake(list(FIVE), page_size=1, max_pending_events=3)
        run(config, clock, provider)
        feed(config, clock, *(component_event(f"e{i}", "updated") for i in range(6)))

        with structlog.testing.capture_logs() as logs:
            result = run(config, clock, provider)

        assert (result.events.dropped, result.events.applied) == (6, 0)
        [dropped] = [line for line in logs if line["event"] == "event_backlog_dropped"]
        assert dropped["limit"] == 5
        assert dropped["message"] == (
            "6 pending events are more than openchoreo.events.maxPending 3 and the 5 pages of "
            "the last complete walk: a full walk catches up instead"
        )

    def test_backlogs_dropped_again_before_the_walk_they_asked_for_completes_warn_once(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Events keep coming while the API is down, and a drop every few seconds asked for
        a walk each: a warning while its request restarts the walk (the first, and the one
        that gives up the cycle begun for it), then INFO, as the request is dismissed
        (`refresh_in_progress`): 41 warnings in 4 minutes of an outage under `serve` before."""
        config = make_config(tmp_path)
        provider = CheckingFake(list(FIVE), page_size=1, max_pending_events=3)
        run(config, clock, provider)
        levels = []
        for round_ in range(4):
            feed(config, clock, *(component_event(f"r{round_}e{i}", "updated") for i in range(6)))
            provider.fail_at = {0: TransientError("GET /a: HTTP 503")}  # the walk gets nowhere
            with structlog.testing.capture_logs() as logs:
                assert run(config, clock, provider).events.dropped == 6
            dropped = [line for line in logs if line["event"] == "event_backlog_dropped"]
            levels += [line["log_level"] for line in dropped]
            clock.advance(3600.0)

        assert levels == ["warning", "warning", "info", "info"]

    def test_backlog_at_the_limit_is_applied(self, tmp_path: Path, clock: FakeClock) -> None:
        config = make_config(tmp_path)
        provider = CheckingFake(list(FIVE), page_size=5, max_pending_events=3)
        feed(config, clock, *(component_event(f"e{i}", "updated") for i in range(3)))

        result = run(config, clock, provider)

        assert (result.events.dropped, result.events.applied) == (0, 3)

    def test_provider_without_handle_event_leaves_its_events_pending(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        provider = FakeProvider(list(FIVE))
        assert not isinstance(provider, EventHandlingProvider)
        feed(config, clock, component_event("e0", "deleted"))

        result = run(config, clock, provider)

        assert result.outcome == "burst"
        assert result.events.applied == 0
        assert inbox(config) == [("e0", 0)]
        assert "e0" in catalog_names(config)

    def test_only_the_named_provider_is_drained(self, tmp_path: Path, clock: FakeClock) -> None:
        config = replace(make_config(tmp_path), providers=("fake", "other"))
        fake = EventFakeProvider(list(FIVE))
        other = EventFakeProvider(list(FIVE), name="other")
        feed(config, clock, component_event("e0", "deleted"))
        feed(config, clock, component_event("e0", "deleted"), provider="other")
        assert config.state_path is not None

        run_once(
            config, config.state_path, clock, only="other", providers={"fake": fake, "other": other}
        )

        assert (inbox(config, "fake"), inbox(config, "other")) == ([("e0", 0)], [])

    def test_event_changes_reach_the_change_log_counters_and_metrics(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        provider = EventFakeProvider(list(FIVE))
        run(config, clock, provider)
        assert config.state_path is not None
        with Store.open(config.state_path, readonly=True) as store:
            since = store.last_change_seq()
            before = store.counters("fake")
        provider.entities = [*FIVE[1:], make_entity("new")]
        feed(
            config,
            clock,
            component_event("e0", "deleted"),
            component_event("new", "created"),
            component_event("e1", "updated"),  # unchanged: no change row, no upsert
        )
        stored_events(config.state_path, "fake", [], clock, rejected=2)

        run(config, clock, provider)

        with Store.open(config.state_path, readonly=True) as store:
            rows = [(row.op, row.ref) for row in store.changes(since)]
            after = store.counters("fake")
            metrics = provider_metrics(
                store, "fake", run_at=None, config=config.incremental, now=clock.now()
            )
        assert rows == [("delete", "component:default/e0"), ("upsert", "component:default/new")]
        assert after["entities_upserted"] - before["entities_upserted"] == 1
        assert after["entities_removed"] - before.get("entities_removed", 0) == 1
        assert metrics.events_total == {"applied": 3, "rejected": 2}
        assert events_total(config) == {
            "applied": 3,
            "rejected": 2,
            "parked": 0,
            "retried": 0,
            "ignored": 0,
            "dropped": 0,
        }


class TestEventsAndTheSweep:
    def test_event_before_the_first_cycle_stays_when_the_first_cycle_sees_it(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0)
        provider = EventFakeProvider(list(FIVE), page_cost=11.0)
        feed(config, clock, component_event("e4", "created"))

        run(config, clock, provider)  # drains at cycle 0, then cycle 1 starts: one page
        provider.page_cost = 0.0
        clock.advance(60)
        run(config, clock, provider)

        assert provider_state(config) is ProviderState.RESTING
        assert catalog_names(config) == {"e0", "e1", "e2", "e3", "e4"}

    def test_event_entity_from_an_older_cycle_is_swept_when_the_new_cycle_no_longer_sees_it(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0)
        provider = EventFakeProvider([*FIVE, make_entity("brief")], page_cost=11.0)
        feed(config, clock, component_event("brief", "created"))
        run(config, clock, provider)
        assert "brief" in catalog_names(config)

        provider.entities = list(FIVE)  # deleted again, and no event said so
        provider.page_cost = 0.0
        clock.advance(60)
        run(config, clock, provider)

        assert provider_state(config) is ProviderState.RESTING
        assert catalog_names(config) == {"e0", "e1", "e2", "e3", "e4"}

    def test_event_during_a_cycle_that_saw_nothing_does_not_defeat_the_empty_source_guard(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path, burst_length=10.0)
        run(config, clock, EventFakeProvider(list(FIVE), page_size=5))
        clock.advance(config.incremental.rest_length + 1)
        broken = EmptyListing()
        run(config, clock, broken)  # cycle 2: an empty first page
        feed(config, clock, component_event("e0", "updated"))  # one re-read still works
        clock.advance(config.incremental.burst_interval + 1)

        run(config, clock, broken)  # the event, then an empty last page: the cycle saw nothing

        assert catalog_names(config) == {"e0", "e1", "e2", "e3", "e4"}
