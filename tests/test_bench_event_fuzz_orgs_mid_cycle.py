"""bench/event_fuzz_orgs_mid_cycle.py, the differential fuzzer of org-era events applied while a
cycle is under way: it drives bursts, the event inbox and the org-era simulator through their own
interfaces, so a change there must not break it silently, and it must see a difference when
events leave one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import structlog

from event_fakes import org_component_events_applied_as_nothing

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import event_fuzz_orgs_mid_cycle  # noqa: E402 - bench/ is not a package; its path is added above


def test_component_events_applied_as_nothing_leave_a_difference_it_reports(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    org_component_events_applied_as_nothing(monkeypatch)

    with structlog.testing.capture_logs():
        outcome = event_fuzz_orgs_mid_cycle.play_seed(0, 2, event_fuzz_orgs_mid_cycle.MODES)
        event_fuzz_orgs_mid_cycle.report(outcome, last=6)

    assert outcome.problems, "no difference found with Component events applied as nothing"
    assert outcome.where.startswith("cycle 1, mid-cycle"), outcome.where
    printed = capsys.readouterr().out
    assert printed.startswith(f"seed 0 (plain) differs at {outcome.where}:\n  ! "), printed
    steps = printed.partition(f" of {len(outcome.steps)} steps:\n")[2].splitlines()
    assert len(steps) == 6, printed
    assert steps[-1].startswith("    events: [('Component', "), printed  # applied as nothing


@pytest.mark.parametrize(
    "seed",
    [915, 62, 17],
    ids=["a-freed-name-a-page-met-first", "a-move-a-page-met-first", "a-move-four-cycles-in"],
)
def test_a_seed_whose_difference_claimed_orgs_mends_stays_clean(seed: int) -> None:
    """Seeds that differed before session 50's fixes in `claimed_orgs`: 915 (in its third cycle)
    before f086595 (a page wrote a component's claimed row with its current claims only, so its
    event released no claim of an endpoint the page found gone, and the name's waiting claimant
    kept its hashed API), 62 and 17 (in their first and fourth) before 10bcf6c (a component a
    page listed in its new project kept its APIs in the old one after its event)."""
    with structlog.testing.capture_logs():
        outcome = event_fuzz_orgs_mid_cycle.play_seed(seed, 4, event_fuzz_orgs_mid_cycle.MODES)

    assert outcome.problems == [], (outcome.where, outcome.problems)
    assert outcome.cycles == 4
    assert outcome.counts["comparisons"] > 4  # mid-cycle ones as well as each cycle's end
