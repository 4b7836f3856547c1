"""bench/event_fuzz_orgs.py, the differential fuzzer of org-era events: it drives the engine, the
event inbox and the org-era simulator through their own interfaces, so a change there must not
break it silently, and it must see a difference when events leave one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import structlog

from event_fakes import org_component_events_applied_as_nothing

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import event_fuzz_orgs  # noqa: E402 - bench/ is not a package; its path is added above


def test_component_events_applied_as_nothing_leave_a_difference_it_reports_and_shrinks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    org_component_events_applied_as_nothing(monkeypatch)

    with structlog.testing.capture_logs():
        outcome = event_fuzz_orgs.play_seed(0, 6, event_fuzz_orgs.MODES)
        event_fuzz_orgs.report(outcome, shrinking=True)

    assert outcome.problems, "no difference found with Component events ignored"
    printed = capsys.readouterr().out
    assert printed.startswith(f"seed 0 (plain) differs after {outcome.rounds} rounds:")
    shortest = printed.partition("  shortest:\n")[2].splitlines()
    assert len(shortest) == 2, printed  # one change, then its events applied as nothing
    assert "'Component'" in shortest[1], printed
