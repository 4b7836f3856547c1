"""A namespace whose listing the server fails every time (one object its handlers cannot convert,
as upstream's `convertList` fails the whole page) is stepped over on the second failed burst in
a row, against the clean-room OpenChoreo v1 API (tests/cleanroom_v1.py): the rest of the walk
goes on and its cycle completes, the namespace keeps what the cycle before found there, and
`health` says so until a cycle lists it again. An outage, a gateway's 502 and a single failed
burst step over nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cleanroom_v1 import Running, running
from cleanroom_v1_cli import by_ref, cli, export, run_cycle, status, write_config
from cleanroom_v1_http import Request, error_answer
from cleanroom_v1_worlds import bulk, put_service

BAD = "bulk-a"
"""The namespace with the object the server cannot convert: the first walked, so a walk that
stopped there would never reach the others."""


def run(config: Path) -> tuple[int, dict[str, Any]]:
    result = cli("--config", config, "run", "--force", "--json")
    return result.exit_code, json.loads(result.stdout)


def problems(config: Path) -> list[str]:
    return list(status(config)["providers"][0]["problems"])


def change_the_world(server: Running, expected: set[str]) -> set[str]:
    """After the first cycle: a component gone from each of bulk-a and bulk-b, one new in
    bulk-c; the refs the catalog must hold once bulk-a is stepped over (its own gone component
    kept with the rest of what it held)."""
    for namespace in (BAD, "bulk-b"):
        server.api.delete("components", namespace, "svc-001")
    put_service(server.api, "bulk-c", "p0", "svc-new", "wl-new", {})
    return (expected - {"component:bulk-b/svc-001"}) | {"component:bulk-c/svc-new"}


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Component", "svc-050"), ("Component", "svc-000"), ("Workload", "wl-990")],
    ids=["component-page-2", "component-first-page", "workload"],
)
def test_a_listing_the_server_always_fails_is_stepped_over_on_the_second_failed_burst(
    here: Path, kind: str, name: str
) -> None:
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)
        wanted = change_the_world(server, expected)
        server.api.unconvertible.add((kind, BAD, name))

        failed, first = run(config)
        held = set(by_ref(export(config)))
        stepped, second = run(config)
        entities = by_ref(export(config))
        troubles = problems(config)
        health = cli("--config", config, "health")

        assert failed == 3, first
        assert not first["providers"][0]["cycleCompleted"]
        assert "500" in first["providers"][0]["error"]
        assert held == expected  # the failed burst changed nothing
        assert stepped == 0, second
        assert second["providers"][0]["cycleCompleted"]
        assert set(entities) == wanted
        assert entities[f"component:{BAD}/svc-001"]  # kept as the cycle before found it
        plural = kind.lower() + "s"
        (trouble,) = troubles
        assert "stepped over 1 listing" in trouble
        assert f"GET /namespaces/{BAD}/{plural}" in trouble
        assert health.exit_code == 1
        assert f"GET /namespaces/{BAD}/{plural}" in health.stdout

        server.api.unconvertible.clear()
        run_cycle(config)
        mended = set(by_ref(export(config)))
        assert mended == wanted - {f"component:{BAD}/svc-001"}
        assert problems(config) == []


def test_a_namespace_still_broken_next_cycle_is_stepped_over_at_once_and_quietly(
    here: Path,
) -> None:
    """The next cycle steps over the listing the walk before stepped over at its first failure
    (no failed burst, no warning for cron to mail); the problem stays until a walk lists it."""
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)
        server.api.unconvertible.add(("Component", BAD, "svc-050"))
        assert run(config)[0] == 3
        warned = cli("--config", config, "run", "--force", "--json")
        assert json.loads(warned.stdout)["providers"][0]["cycleCompleted"]

        again = cli("--config", config, "run", "--force", "--json")
        (shown,) = status(config)["providers"]
        entities = set(by_ref(export(config)))

    assert "listing_stepped_over" in warned.stderr
    assert again.exit_code == 0, again.stdout
    assert json.loads(again.stdout)["providers"][0]["cycleCompleted"]
    assert "listing_stepped_over" not in again.stderr
    assert entities == expected
    (trouble,) = shown["problems"]
    assert f"GET /namespaces/{BAD}/components" in trouble
    assert "listingsSkippedPaths" not in shown  # the paths the next walk reads, not shown


def test_a_burst_steps_over_nothing_while_the_server_fails_the_check_too(here: Path) -> None:
    """The walk's first page of namespaces answers, then every listing below it fails, and so
    does the check that the server still answers (the first item of the root listing): an
    outage, not one listing; each burst fails and the catalog stays whole."""
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)

        def down(request: Request) -> tuple[int, dict[str, str], bytes] | None:
            below = request.path.startswith("/api/v1/namespaces/")
            if below or request.param("limit") == "1":
                return error_answer(500, "Internal server error", "INTERNAL_ERROR")
            return None

        server.api.hooks.append(down)
        outcomes = [run(config) for _ in range(3)]
        checks = [r for r in server.api.api_requests() if r.param("limit") == "1"]
        server.api.hooks.remove(down)
        entities = set(by_ref(export(config)))
        troubles = problems(config)

    assert [code for code, _ in outcomes] == [3, 3, 3]
    assert len(checks) >= 2  # the bursts after the first asked
    assert entities == expected
    assert not any("stepped over" in problem for problem in troubles)


def test_a_gateway_error_is_not_stepped_over(here: Path) -> None:
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)

        def gateway(request: Request) -> tuple[int, dict[str, str], bytes] | None:
            if request.path == f"/api/v1/namespaces/{BAD}/components":
                return 502, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"
            return None

        server.api.hooks.append(gateway)
        outcomes = [run(config) for _ in range(3)]
        entities = set(by_ref(export(config)))
        troubles = problems(config)

    assert [code for code, _ in outcomes] == [3, 3, 3]
    assert not any(document["providers"][0]["cycleCompleted"] for _, document in outcomes)
    assert entities == expected
    assert not any("stepped over" in problem for problem in troubles)
