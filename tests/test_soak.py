"""The crash-and-fault soak (bench/soak.py), small: 1k components, 15 SIGKILLs.

The soak starts the simulator with 5% server errors, a request-rate cap and short-lived
cursors, kills `choreo-ingest run --force` at random moments while it mutates the world and
feeds events, then lets the runs finish and checks the catalog against the world, the change
log, health and the metrics textfile. Here it runs with a fixed seed; its own checks are the
assertions, and the fault counters prove the faults really happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"
KILLS = 15


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    arguments = [
        "--kills", str(KILLS), "--components", "1000", "--per-project", "250",
        "--seed", "7", "--rate-limit", "200", "--cursor-ttl", "3", "--expire-every", "6",
        "--burst-length", "2", "--json",
    ]  # fmt: skip
    finished = subprocess.run(
        [sys.executable, str(SOAK), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode in (0, 1), finished.stderr[-3000:]
    document: dict[str, Any] = json.loads(finished.stdout)
    return document


@pytest.mark.parametrize(
    "check",
    [
        "simulator world matches the soak's mutations",
        "catalog equals the world",
        "change log replays to the catalog",
        "health is green",
        "metrics textfile parses",
        "simulator raised no internal errors",
    ],
)
def test_soak_check_passes(report: dict[str, Any], check: str) -> None:
    found = {item["name"]: item for item in report["checks"]}
    assert found[check]["passed"], found[check]["detail"]


def test_every_kill_landed_and_every_other_run_exited_as_expected(report: dict[str, Any]) -> None:
    figures = report["figures"]
    assert figures["kills"] == KILLS
    assert set(figures["exit_codes"]) <= {"0", "3"}
    assert figures["runs"] >= KILLS


def test_the_faults_really_happened(report: dict[str, Any]) -> None:
    server = report["figures"]["server"]
    assert server["server_errors_5xx"] > 0
    assert server["rate_limited_429"] > 0
    assert server["expired_cursors_410"] > 0
    assert report["figures"]["cursor_resets"] > 0


def test_the_world_changed_and_events_were_applied(report: dict[str, Any]) -> None:
    figures = report["figures"]
    assert sum(figures["mutations"].values()) > 0
    assert figures["events_fed"] > 0
    assert figures["events"].get("applied", 0) > 0
    assert figures["cycles_completed"] >= 2
