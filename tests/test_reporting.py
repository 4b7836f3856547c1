"""`status` on a cycle in progress: the pages it has committed, against the last completed
cycle's (about what it will take), through the real engine and a SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.config import Config
from choreo_ingest.errors import TransientError
from choreo_ingest.invocation import reset, run_once
from choreo_ingest.models import SOURCE_CYCLE_FACT, SOURCE_FACT
from choreo_ingest.reporting import ERROR_QUOTED_CHARS, ProviderStatus, status_report
from choreo_ingest.store import state_location
from choreo_ingest.testing import FakeProvider

from fakes import FakeClock, make_config, make_entity

EIGHT = [make_entity(f"e{i}") for i in range(8)]
"""Four pages of two."""


def burst(config: Config, clock: FakeClock, provider: FakeProvider) -> None:
    assert config.state_path is not None
    run_once(config, config.state_path, clock, providers={"fake": provider}, force=True)
    clock.advance(1.0)


def status(config: Config, clock: FakeClock) -> ProviderStatus:
    assert config.state_path is not None
    [provider] = status_report(state_location(config.state_path), config, clock.now()).providers
    return provider


def progress(shown: ProviderStatus) -> tuple[Any, Any, str]:
    document = shown.to_json()
    return document["cyclePages"], document["lastCyclePages"], shown.cycle_shown


def test_a_first_cycle_shows_its_pages_and_a_later_one_them_against_the_last(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    config = make_config(tmp_path, burst_length=10.0)
    provider = FakeProvider(EIGHT, page_cost=6.0)  # a page takes 6 s of the 10: one a burst

    burst(config, clock, provider)
    assert progress(status(config, clock)) == (1, None, "1 (1 page)")
    burst(config, clock, provider)
    assert progress(status(config, clock)) == (2, None, "1 (2 pages)")
    provider.page_cost = 0.0
    burst(config, clock, provider)  # the cycle's last two pages, and its end
    assert progress(status(config, clock)) == (None, 4, "1")
    provider.page_cost = 6.0
    burst(config, clock, provider)
    assert progress(status(config, clock)) == (1, 4, "2 (1 of ~4 pages)")


def test_a_cycle_past_the_last_ones_pages_says_so_rather_than_more_of_fewer(
    tmp_path: Path,
) -> None:
    """The platform grew: `5 of ~4 pages` read as a broken count."""
    clock = FakeClock()
    config = make_config(tmp_path, burst_length=10.0)
    burst(config, clock, FakeProvider(EIGHT))
    provider = FakeProvider([*EIGHT, *(make_entity(f"n{i}") for i in range(4))], page_cost=6.0)

    for _ in range(5):
        burst(config, clock, provider)

    assert progress(status(config, clock)) == (5, 4, "2 (5 pages; the last cycle took 4)")


def test_a_walk_whose_removals_are_held_back_is_no_longer_in_progress(tmp_path: Path) -> None:
    """Its last page is committed; what it waits for is `removals approve`, not pages: it is
    the last completed cycle (`blocked`)."""
    clock = FakeClock()
    config = make_config(tmp_path, burst_length=10.0, reject_removals_above_percentage=50.0)
    burst(config, clock, FakeProvider(EIGHT))

    burst(config, clock, FakeProvider(EIGHT[:2]))

    shown = status(config, clock)
    assert shown.removals_blocked == 6
    assert progress(shown) == (None, 1, "2")


@pytest.mark.parametrize("purge", [False, True])
def test_a_cycle_a_reset_gave_up_is_no_longer_in_progress(tmp_path: Path, purge: bool) -> None:
    """Idle after `reset`, the provider shows no pages of the cycle it walked: the next run
    begins another. The cycle's row says it was given up, and the one after it counts from 1."""
    clock = FakeClock()
    config = make_config(tmp_path, burst_length=10.0)
    provider = FakeProvider(EIGHT, page_cost=6.0)
    burst(config, clock, provider)
    burst(config, clock, provider)
    assert config.state_path is not None

    reset(state_location(config.state_path), "fake", clock, purge=purge)

    assert progress(status(config, clock)) == (None, None, "1")
    with state_location(config.state_path).open(readonly=True) as store:
        given_up = store.last_cycle("fake")
    assert given_up is not None
    assert (given_up.cycle_id, given_up.pages, given_up.outcome) == (1, 2, "abandoned")
    burst(config, clock, provider)
    assert progress(status(config, clock)) == (1, None, "2 (1 page)")


@pytest.mark.parametrize(("stored_for", "shown"), [(1, True), (0, False)], ids=["it", "another"])
def test_the_source_is_shown_only_for_the_cycle_it_was_stored_for(
    tmp_path: Path, stored_for: int, shown: bool
) -> None:
    """A rolled-back release that stores no source began the cycle: what is stored is older."""
    config, clock = make_config(tmp_path), FakeClock()
    burst(config, clock, FakeProvider([make_entity("a")], page_size=1))
    facts = {SOURCE_FACT: "http://a.test/api/v1", SOURCE_CYCLE_FACT: str(stored_for)}
    with state_location(config.state_path).open() as store:
        store.set_facts("fake", facts, clock.now())

    document = status(config, clock).to_json()

    assert ("source" in document) is shown
    assert "sourceCycle" not in document


def test_a_health_problem_quoting_a_long_error_is_cut_for_showing(tmp_path: Path) -> None:
    """The failed-bursts line ends with the last error, which may be long (an answer's text):
    `health` and `status` show a line, the store keeps all of it (`lastError`)."""
    clock = FakeClock()
    config = make_config(tmp_path, max_attempts=1)
    failing = FakeProvider(EIGHT, fail_at={0: TransientError("GET /x: HTTP 503 " + "y" * 600)})

    burst(config, clock, failing)

    shown = status(config, clock)
    [problem] = shown.health_problems
    head = "1 consecutive failed bursts (maxAttempts 1); the last: "
    assert problem.startswith(head + "GET /x: HTTP 503 yyy")
    assert len(problem) == len(head) + ERROR_QUOTED_CHARS
    assert problem.endswith("y…")
