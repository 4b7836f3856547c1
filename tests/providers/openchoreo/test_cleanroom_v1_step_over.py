"""A namespace whose listing the server fails every time (one object its handlers cannot convert,
as upstream's `convertList` fails the whole page) is stepped over, against the clean-room
OpenChoreo v1 API (tests/cleanroom_v1.py): the rest of the walk goes on and its cycle completes,
the namespace keeps what the cycle before found there, and `health` says so until a cycle lists
it again. A page asked for with a fresh cursor is stepped over once it failed 3 times in a row
(in one burst, or across bursts for a long listing); a first page, on the second burst in a row
that fails on it. An outage of the whole resource, a gateway's 502 and a burst that failed for
another reason step over nothing."""

from __future__ import annotations

import json
import time
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
Answer = tuple[int, dict[str, str], bytes]


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


def internal_error() -> Answer:
    return error_answer(500, "Internal server error", "INTERNAL_ERROR")


@pytest.mark.parametrize(
    ("kind", "name", "failed_bursts"),
    [("Component", "svc-050", 0), ("Component", "svc-000", 1), ("Workload", "wl-990", 0)],
    ids=["component-page-2", "component-first-page", "workload-page-4"],
)
def test_a_listing_the_server_always_fails_is_stepped_over(
    here: Path, kind: str, name: str, failed_bursts: int
) -> None:
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)
        wanted = change_the_world(server, expected)
        server.api.unconvertible.add((kind, BAD, name))

        failures = [run(config) for _ in range(failed_bursts)]
        held = set(by_ref(export(config)))
        stepped, document = run(config)
        entities = by_ref(export(config))
        troubles = problems(config)
        health = cli("--config", config, "health")

        for code, failure in failures:  # a first page: one failed burst, then the step over
            assert code == 3, failure
            assert f"GET /namespaces/{BAD}/components: HTTP 500" in failure["providers"][0]["error"]
        assert held == expected  # a failed burst changed nothing
        assert stepped == 0, document
        assert document["providers"][0]["cycleCompleted"]
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


def test_a_bad_page_deep_in_a_long_listing_is_stepped_over_across_bursts(here: Path) -> None:
    """Each burst reaches the failing page, restarts the listing and runs out of time re-reading
    it: no burst fails, and the failures at that page are counted in the stored cursor."""
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=10, burstLength=1)
        run_cycle(config, max_runs=40)
        server.api.unconvertible.add(("Component", BAD, "svc-145"))

        def slow(request: Request) -> Answer | None:
            if request.path == f"/api/v1/namespaces/{BAD}/components":
                time.sleep(0.08)  # about 10 pages a burst: fewer than the 15 before svc-145
            return None

        server.api.hooks.append(slow)
        outcomes = [run(config) for _ in range(12)]
        entities = set(by_ref(export(config)))
        troubles = problems(config)

    assert all(code == 0 for code, _ in outcomes), outcomes
    assert any(document["providers"][0]["cycleCompleted"] for _, document in outcomes)
    assert entities == expected
    (trouble,) = troubles
    assert f"GET /namespaces/{BAD}/components" in trouble


def test_a_namespace_still_broken_next_cycle_is_stepped_over_at_once_and_quietly(
    here: Path,
) -> None:
    """A first page takes a failed burst before it is stepped over; the next cycle steps over
    the listing the walk before stepped over at its first failure (no failed burst, no warning
    for cron to mail); the problem stays until a walk lists it."""
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)
        server.api.unconvertible.add(("Component", BAD, "svc-000"))  # on the first page
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


def test_a_failure_of_every_namespace_s_components_steps_over_nothing(here: Path) -> None:
    """Every components listing fails (the resource's conversion webhook down, say) while the
    namespaces, projects and workloads answer: the same listing of the other namespaces fails
    too, so it is an outage; each burst fails and the catalog stays whole."""
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)

        def webhook_down(request: Request) -> Answer | None:
            return internal_error() if request.path.endswith("/components") else None

        server.api.hooks.append(webhook_down)
        outcomes = [run(config) for _ in range(3)]
        checks = [r.path for r in server.api.api_requests() if r.param("limit") == "1"]
        server.api.hooks.remove(webhook_down)
        entities = set(by_ref(export(config)))
        troubles = problems(config)

    assert [code for code, _ in outcomes] == [3, 3, 3]
    assert "/api/v1/namespaces/bulk-b/components" in checks  # asked after the second failure
    assert entities == expected
    assert not any("stepped over" in problem for problem in troubles)


@pytest.mark.parametrize("before", ["projects", "components"], ids=["elsewhere", "same-listing"])
def test_a_burst_after_one_that_failed_otherwise_steps_over_nothing(
    here: Path, before: str
) -> None:
    """The burst before failed with a proxy's 502 (on another listing, or on this one): a first
    page that then answers 500 on every attempt (an API server starting, say) fails the burst;
    once the server recovers the cycle completes whole."""
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)
        failing = {before: (4, 502)}

        def flaky(request: Request) -> Answer | None:
            listing = request.path.rpartition("/")[2]
            if not request.path.startswith(f"/api/v1/namespaces/{BAD}/"):
                return None
            count, status = failing.get(listing, (0, 0))
            if not count:
                return None
            failing[listing] = (count - 1, status)
            if status == 502:
                return 502, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"
            return internal_error()

        server.api.hooks.append(flaky)
        first = run(config)
        failing["components"] = (4, 500)  # every attempt of the next burst's first page
        second = run(config)
        third = run(config)
        entities = set(by_ref(export(config)))
        troubles = problems(config)

    assert first[0] == 3
    assert f"GET /namespaces/{BAD}/{before}: HTTP 502" in first[1]["providers"][0]["error"]
    assert second[0] == 3
    assert "HTTP 500" in second[1]["providers"][0]["error"]
    assert third[0] == 0
    assert third[1]["providers"][0]["cycleCompleted"]
    assert entities == expected
    assert troubles == []


def test_two_broken_namespaces_side_by_side_are_both_stepped_over(here: Path) -> None:
    """The check after bulk-a's failure meets bulk-b failing too (its first item is the bad
    one), and asks on: bulk-c answers, so one broken neighbour does not hold the walk at bulk-a.
    bulk-b's own first page takes a failed burst, then it is stepped over too."""
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)
        server.api.unconvertible |= {
            ("Component", BAD, "svc-050"),
            ("Component", "bulk-b", "svc-000"),
        }

        failed, first = run(config)
        stepped, second = run(config)
        entities = set(by_ref(export(config)))
        (trouble,) = problems(config)

    assert failed == 3
    assert "GET /namespaces/bulk-b/components: HTTP 500" in first["providers"][0]["error"]
    assert stepped == 0, second
    assert second["providers"][0]["cycleCompleted"]
    assert entities == expected
    assert "stepped over 2 listings" in trouble
    assert f"GET /namespaces/{BAD}/components" in trouble
    assert "GET /namespaces/bulk-b/components" in trouble


def test_the_check_does_not_ask_a_namespace_known_to_be_broken(here: Path) -> None:
    """bulk-a stays broken (its first item); bulk-b breaks too. bulk-b's check skips bulk-a
    (stepped over before: it would fail) and finds bulk-c empty, so the first namespace of
    `/namespaces` answers for them: both are stepped over in one burst."""
    with running() as server:
        expected = bulk(server.api, {BAD: 60, "bulk-b": 60, "bulk-c": 0})
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)
        server.api.unconvertible.add(("Component", BAD, "svc-000"))
        assert run(config)[0] == 3  # a first page: the next burst steps over it
        assert run(config)[1]["providers"][0]["cycleCompleted"]
        server.api.unconvertible.add(("Component", "bulk-b", "svc-050"))

        code, document = run(config)
        asked = [r.path for r in server.api.api_requests() if r.param("limit") == "1"]
        entities = set(by_ref(export(config)))
        (trouble,) = problems(config)

    assert code == 0, document
    assert document["providers"][0]["cycleCompleted"]
    assert entities == expected
    assert "stepped over 2 listings" in trouble
    assert "/api/v1/namespaces/bulk-c/components" in asked


def test_a_gateway_error_is_not_stepped_over(here: Path) -> None:
    with running() as server:
        expected = bulk(server.api)
        config = write_config(here, server, chunk_size=40)
        run_cycle(config)

        def gateway(request: Request) -> Answer | None:
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
