"""bench/event_fuzz.py, the differential fuzzer of v1 events: it drives the engine, the event
inbox and the simulator through their own interfaces, so a change there must not break it
silently, and it must see a difference when events leave one. Here too: each fuzzer's command
line (the org era's and the mid-cycle one's have their own files for the rest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from choreo_ingest.models import Delta
from choreo_ingest.providers.openchoreo import events_v1

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import event_fuzz  # noqa: E402 - bench/ is not a package; its path is added above


@pytest.mark.parametrize(
    ("script", "length", "played"),
    [
        ("event_fuzz.py", ["--rounds", "3"], "2 seeds, 6 rounds in "),
        ("event_fuzz_orgs.py", ["--rounds", "3"], "2 seeds, 6 rounds in "),
        ("event_fuzz_mid_cycle.py", ["--cycles", "1"], "2 seeds ("),
    ],
)
def test_each_fuzzer_finds_no_difference_and_says_how_much_it_played_from_any_directory(
    tmp_path: Path, script: str, length: list[str], played: str
) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--seeds", "0:2", *length],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(played), done.stdout
    assert done.stdout.rstrip().endswith(": 0 differ"), done.stdout


def test_events_that_change_nothing_leave_a_difference_it_reports_and_shrinks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(events_v1, "_component_event_delta", lambda walk, namespace, name: Delta())

    with structlog.testing.capture_logs():
        outcome = event_fuzz.play_seed(0, 6, event_fuzz.MODES, deps=False)
        event_fuzz.report(outcome, shrinking=True)

    assert outcome.problems, "no difference found with Component and Workload events ignored"
    printed = capsys.readouterr().out
    assert printed.startswith(f"seed 0 (plain) differs after {outcome.rounds} rounds:")
    shortest = printed.partition("  shortest:\n")[2].splitlines()
    assert len(shortest) == 2, printed  # one change, then its events applied as nothing
