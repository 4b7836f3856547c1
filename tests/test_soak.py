"""The crash-and-fault soak (bench/soak.py), small: 600 components, 8-10 SIGKILLs, once against
the organization-era API and once against OpenChoreo v1, the two side by side.

The soak starts the simulator with 5% server errors, a request-rate cap and short-lived
cursors (v1 also with OAuth2 client credentials and 4 s tokens), kills `choreo-ingest run
--force` at random moments while it mutates the world and feeds events, then lets the runs
finish and checks the catalog against the world, the change log, health and the metrics
textfile (v1 also: no per-component requests). Here it runs with a fixed seed; its own checks
are the assertions, and the fault counters prove the faults really happened.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# One xdist worker takes every test here (pyproject's `--dist loadgroup`): a module split
# between workers would run both soaks on each.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("soak")]

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"
KILLS = {"orgs": 10, "v1": 8}
ARGUMENTS = {
    "orgs": [
        "--api", "orgs", "--kills", str(KILLS["orgs"]), "--components", "600",
        "--per-project", "150", "--seed", "7", "--rate-limit", "60", "--cursor-ttl", "3",
        "--expire-every", "6", "--burst-length", "2", "--json",
    ],
    # A cap a loaded machine's walk still exceeds (at 200 a walk slowed by other work met no
    # 429 at all). v1 makes one request per page and none per component: a lower cap, and
    # 4 s tokens so that runs refresh their token on the way.
    "v1": [
        "--api", "v1", "--kills", str(KILLS["v1"]), "--components", "600",
        "--per-project", "150", "--seed", "7", "--rate-limit", "12", "--cursor-ttl", "3",
        "--expire-every", "4", "--burst-length", "2", "--token-lifetime", "4", "--json",
    ],
}  # fmt: skip
CHECKS = [
    "simulator world matches the soak's mutations",
    "catalog equals the world",
    "change log replays to the catalog",
    "health is green",
    "metrics textfile parses",
    "simulator raised no internal errors",
]


@pytest.fixture(scope="module")
def soaks() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Both soaks, started together: they wait on the simulator's rate cap and kill timings
    far more than they use the CPU, so side by side they take the time of the longer one."""
    started = {
        api: subprocess.Popen(
            [sys.executable, str(SOAK), *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for api, arguments in ARGUMENTS.items()
    }
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
        process.communicate()  # closes the pipes of a soak no test read, too


@functools.cache
def soak(process: subprocess.Popen[str]) -> dict[str, Any]:
    """A soak's JSON report; each soak runs once per session, whichever tests ask for it."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode in (0, 1), stderr[-3000:]
    document: dict[str, Any] = json.loads(stdout)
    return document


@pytest.fixture(scope="module", params=["orgs", "v1"])
def report(
    request: pytest.FixtureRequest, soaks: dict[str, subprocess.Popen[str]]
) -> dict[str, Any]:
    return soak(soaks[request.param])


@pytest.fixture(scope="module")
def v1_report(soaks: dict[str, subprocess.Popen[str]]) -> dict[str, Any]:
    return soak(soaks["v1"])


@pytest.mark.parametrize("check", CHECKS)
def test_soak_check_passes(report: dict[str, Any], check: str) -> None:
    found = {item["name"]: item for item in report["checks"]}
    assert found[check]["passed"], found[check]["detail"]


def test_every_check_passed(report: dict[str, Any]) -> None:
    failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["passed"]]
    assert not failed
    assert report["passed"]


def test_every_kill_landed_and_every_other_run_exited_as_expected(report: dict[str, Any]) -> None:
    figures = report["figures"]
    kills = KILLS[report["options"]["api"]]
    assert figures["kills"] == kills
    assert set(figures["exit_codes"]) <= {"0", "3"}
    assert figures["runs"] >= kills


def test_the_faults_really_happened(report: dict[str, Any]) -> None:
    figures = report["figures"]
    server = figures["server"]
    counts = {
        "server_errors_5xx": server["server_errors_5xx"],
        "rate_limited_429": server["rate_limited_429"],
        "expired_cursors": server["expired_cursors"],  # 410 in the org era, 500 in v1
        "cursor_waits": figures["cursor_waits"],
        "cursor_resets": figures["cursor_resets"],
    }
    assert [name for name, count in counts.items() if count == 0] == [], counts


def test_the_world_changed_and_events_were_applied(report: dict[str, Any]) -> None:
    figures = report["figures"]
    assert sum(figures["mutations"].values()) > 0
    assert figures["events_fed"] > 0
    assert figures["events"].get("applied", 0) > 0
    assert figures["cycles_completed"] >= 2


def test_v1_walk_made_no_per_component_requests(v1_report: dict[str, Any]) -> None:
    found = {item["name"]: item for item in v1_report["checks"]}
    check = found["no per-component requests"]
    assert check["passed"], check["detail"]
    last = v1_report["figures"]["last_cycle"]
    assert last["events_handled"] == 0
    assert set(last["requests_by_route"]) <= {
        "list_namespaces", "list_projects", "list_workloads", "list_components", "token",
    }  # fmt: skip
    assert last["requests_by_route"].get("list_components", 0) > 0


def test_v1_spoke_v1_with_oauth_and_its_events(v1_report: dict[str, Any]) -> None:
    figures = v1_report["figures"]
    routes = figures["server"]["requests_by_route"]
    assert "list_orgs" not in routes
    assert routes.get("list_workloads", 0) > 0
    # every run grants its own token; 4 s tokens are replaced within longer runs
    assert figures["server"]["token_requests"] > 0
    assert figures["last_cycle"]["token_requests"] >= 1
    assert {"Component", "Workload"} <= set(figures["events_fed_by_kind"])
