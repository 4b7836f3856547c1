"""bench/event_fuzz_mid_cycle.py, the differential fuzzer of v1 events applied while a cycle is
under way: it drives bursts, the event inbox and the simulator through their own interfaces, so
a change there must not break it silently, and it must see a difference when events leave one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import structlog

from choreo_ingest.models import Delta
from choreo_ingest.providers.openchoreo import events_v1

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import event_fuzz_mid_cycle  # noqa: E402 - bench/ is not a package; its path is added above


def test_events_that_change_nothing_leave_a_difference_it_reports_and_shrinks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(events_v1, "_component_event_delta", lambda walk, namespace, name: Delta())
    settings = ("lose_deleted", "pages", "live")

    with structlog.testing.capture_logs():
        outcome = event_fuzz_mid_cycle.play_seed(2, settings, 1, deps=False)
        event_fuzz_mid_cycle.report(outcome, settings, last=4, shrinking=True)

    assert outcome.finding is not None, "no difference found with v1 events applied as nothing"
    assert outcome.finding.where.startswith("cycle 1"), outcome.finding.where
    printed = capsys.readouterr().out
    assert printed.startswith(f"seed 2 ({', '.join(settings)}) at {outcome.finding.where}:")
    shortest = printed.partition("  shortest (")[2].splitlines()
    changes = [line for line in shortest if line.strip().startswith("world.")]
    assert len(changes) == 1, printed  # one change, its events applied as nothing


@pytest.mark.parametrize(
    ("seed", "settings"),
    [(3231, ("dup", "latency", "snapshot"))],
    ids=["a-component-moved-and-made-again-while-its-events-wait"],
)
def test_a_seed_whose_difference_a_rule_mends_stays_clean(
    seed: int, settings: tuple[str, str, str]
) -> None:
    """Seeds that differ when one rule of the v1 events is taken out, the rule no unit test
    reaches: 3231, `events_v1._stored_projects` (the project the stored Component is in, which
    an event that met the component before it was made again in another project wrote it to)."""
    with structlog.testing.capture_logs():
        outcome = event_fuzz_mid_cycle.play_seed(seed, settings, 3, deps=False)

    assert outcome.finding is None, outcome.finding
    assert outcome.artefact is None, outcome.artefact
