"""choreo-ingest end to end against the clean-room organization-era OpenChoreo API
(`tests/cleanroom_orgs.py`), with faults injected through `Server.rules`: cursors that expire
(410) or are rejected (400) within and between bursts, transient errors and rate limits,
resources deleted while walked (404), servers and credentials that are refused, a cursor handed
back unchanged, `check` on a listing whose first page is empty, and the health problem of
cursors that keep expiring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cleanroom_orgs import Answer, Request, Server, error
from cleanroom_orgs_checks import check_catalog, ref
from cleanroom_orgs_cli import cli_json, export, provider_of, run, run_cycle, status, write_config
from cleanroom_orgs_world import SMALL, build_world, endpoint
from cli_support import invoke, isolate


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


def on_nth(n: int, predicate: Any, act: Any) -> Any:
    """A rule that calls `act(server, request)` on the n-th request matching `predicate`."""
    count = [0]

    def rule(server: Server, request: Request) -> Answer | None:
        if predicate(request):
            count[0] += 1
            if count[0] == n:
                return act(server, request)
        return None

    return rule


def is_components_listing(request: Request) -> bool:
    return request.path.endswith("/components")


def with_cursor(predicate: Any) -> Any:
    return lambda request: predicate(request) and request.param("cursor")


def expire(server: Server, request: Request) -> None:
    server.expire_cursors()  # then served: 410


def too_many_requests(server: Server, request: Request) -> Answer:
    return error(429, "TOO_MANY_REQUESTS", "slow down", {"Retry-After": "3600"})


def test_cursor_expired_within_a_burst_restarts_that_listing(tmp_path: Path) -> None:
    """410 CONTINUE_TOKEN_EXPIRED on the organization listing and on a component listing: each
    listing restarts from its first page, and the cycle completes with nothing lost."""
    world = build_world(13, SMALL)
    with Server(world) as server:
        server.rules.append(on_nth(1, with_cursor(lambda r: r.path.endswith("/orgs")), expire))
        server.rules.append(on_nth(2, with_cursor(is_components_listing), expire))
        config = write_config(tmp_path, server, chunk=2)
        run_cycle(config)
        bodies = export(config)

        check_catalog(world, bodies)
        expired = [r for r, s, _ in server.answers if s == 410]
        assert len(expired) == 2
        for request in expired:
            listing = server.list_requests(request.path.removeprefix("/api/v1/"))
            after = listing[listing.index(request) + 1]
            assert after.param("cursor") is None, "the listing restarts from its first page"
        assert status(config)["cursorResets"] == 2


def test_cursor_expired_between_bursts_restarts_that_listing(tmp_path: Path) -> None:
    """A burst ends on a 429 whose Retry-After does not fit, mid-listing; the cursors expire
    while it rests (Kubernetes keeps them ~5 minutes): the next burst's stored cursor answers
    410."""
    world = build_world(17, SMALL)
    with Server(world) as server:
        server.rules.append(on_nth(3, with_cursor(is_components_listing), too_many_requests))
        config = write_config(tmp_path, server, chunk=3)
        code, first = run(config)
        provider = provider_of(first)
        assert code == 0, first
        assert not provider["cycleCompleted"], first
        assert provider["state"] == "interstitial", provider
        server.expire_cursors()
        runs = run_cycle(config)
        check_catalog(world, export(config))
        assert 410 in server.statuses()
        assert status(config)["cursorResets"] >= 1
        assert runs[-1]["cycleCompleted"]


def test_cursor_rejected_after_server_restart_restarts_that_listing(tmp_path: Path) -> None:
    """A stored cursor the server no longer decodes (400 INVALID_CURSOR_FORMAT): the listing
    restarts once and the cycle completes."""
    world = build_world(19, SMALL)
    with Server(world) as server:
        server.rules.append(on_nth(2, with_cursor(is_components_listing), too_many_requests))
        config = write_config(tmp_path, server, chunk=3)
        code, first = run(config)
        assert code == 0, first
        assert not provider_of(first)["cycleCompleted"], first
        server.restart_with_new_key()
        run_cycle(config)
        check_catalog(world, export(config))
        assert 400 in server.statuses()


def test_transient_errors_and_short_rate_limits_are_ridden_out(tmp_path: Path) -> None:
    world = build_world(23, SMALL)
    with Server(world) as server:
        server.rules.append(
            on_nth(
                2, is_components_listing, lambda s, r: error(503, "INTERNAL_ERROR", "etcd timeout")
            )
        )
        server.rules.append(
            on_nth(
                5,
                lambda r: "/components/" in r.path,
                lambda s, r: Answer(
                    429,
                    {"success": False, "error": "rate limited", "code": "TOO_MANY_REQUESTS"},
                    {"Retry-After": "1"},
                ),
            )
        )
        config = write_config(tmp_path, server, chunk=4)
        [_done] = run_cycle(config)
        check_catalog(world, export(config))
        assert {503, 429} <= set(server.statuses())


def test_resources_deleted_while_walked_are_skipped_then_swept(tmp_path: Path) -> None:
    """404 COMPONENT_NOT_FOUND on a detail call and 404 PROJECT_NOT_FOUND on a component
    listing (the project's own GET answers 404 too): the cycle goes on, and what they held goes."""
    world = build_world(29, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=4)
        run_cycle(config)
        doomed_component = [k for k in world.visible_components() if k[1] == "proj-0-acme"][2]

        def delete_component(server: Server, request: Request) -> None:
            del server.world.components[doomed_component]

        def delete_project(server: Server, request: Request) -> None:
            server.world.delete_project("globex", "proj-0-globex")

        detail_path = "/api/v1/orgs/{}/projects/{}/components/{}".format(*doomed_component)
        server.rules.append(on_nth(1, lambda r: r.path == detail_path, delete_component))
        server.rules.append(
            on_nth(
                1,
                lambda r: r.path == "/api/v1/orgs/globex/projects/proj-0-globex/components",
                delete_project,
            )
        )
        [_done] = run_cycle(config)
        bodies = export(config)
        refs = {ref(b) for b in bodies}
        assert f"component:acme/{doomed_component[2]}" not in refs
        assert not any(
            b["kind"] in ("Component", "API")
            and b["metadata"]["annotations"].get("openchoreo.io/project") == "proj-0-globex"
            for b in bodies
        )
        run_cycle(config)
        check_catalog(world, export(config))


def test_unpaginated_server_is_refused(tmp_path: Path) -> None:
    world = build_world(31, SMALL)
    with Server(world) as server:
        server.never_paginates = True
        config = write_config(tmp_path, server)
        code, document = run(config)
        assert code == 3, document
        assert "does not support cursor pagination" in provider_of(document)["error"]
        assert export(config) == []


def test_cursor_handed_back_unchanged_fails_instead_of_looping(tmp_path: Path) -> None:
    world = build_world(37, SMALL)
    with Server(world) as server:
        server.repeats_cursor = True
        config = write_config(tmp_path, server, chunk=2)
        code, document = run(config)
        assert code == 3, document
        assert len(server.list_requests("orgs")) <= 3
        assert "cursor" in provider_of(document)["error"]


@pytest.mark.parametrize(
    ("answer", "code", "exit_expected"),
    [
        (None, "INVALID_TOKEN", 2),  # the configured token: a setting to mend
        (error(403, "FORBIDDEN", "not allowed to list organizations"), "FORBIDDEN", 3),
    ],
    ids=["401-bad-token", "403-forbidden"],
)
def test_refused_credentials_fail_the_burst_without_retries(
    tmp_path: Path, answer: Answer | None, code: str, exit_expected: int
) -> None:
    world = build_world(41, SMALL)
    with Server(world) as server:
        if answer is not None:
            server.rules.append(lambda s, r: answer)
            config = write_config(tmp_path, server)
        else:
            config = write_config(tmp_path, server, token="eyJ.wrong.token")
        exit_code, document = run(config)
        assert exit_code == exit_expected, document
        message = provider_of(document)["error"]
        assert code in message, message
        if code == "INVALID_TOKEN":
            assert "openchoreo.auth.tokenFile" in message, message  # "check openchoreo.token"
        assert len(server.requests) == 1, [r.path for r in server.requests]
        assert "eyJ.wrong.token" not in json.dumps(document)
        assert export(config) == []


def test_expired_cursors_that_keep_expiring_fail_the_burst_after_three_restarts(
    tmp_path: Path,
) -> None:
    """README: at most 3 restarts of one listing in one burst, then the burst fails and says why."""
    world = build_world(67, SMALL)
    with Server(world) as server:
        listing = "/api/v1/orgs/acme/projects/proj-0-acme/components"
        server.rules.append(
            lambda s, r: expire(s, r) if r.path == listing and r.param("cursor") else None
        )
        config = write_config(tmp_path, server, chunk=3)
        code, document = run(config)
        provider = provider_of(document)
        assert code == 3, document
        assert provider["state"] == "backing_off", provider
        assert "proj-0-acme/components" in (provider["error"] or ""), provider
        assert [s for s in server.statuses() if s == 410] == [410] * 4


def test_a_failed_burst_resumes_at_the_page_that_failed(tmp_path: Path) -> None:
    """A listing page that answers 503 on all 4 attempts fails the burst (exit 3); the next
    burst asks for that very page again, not for the listing from its start."""
    world = build_world(71, SMALL)
    with Server(world) as server:
        failing: list[Request] = []

        def unavailable(s: Server, r: Request) -> Answer | None:
            if (
                is_components_listing(r)
                and r.param("cursor")
                and (not failing or (r.query == failing[0].query and len(failing) < 4))
            ):
                failing.append(r)
                return error(503, "INTERNAL_ERROR", "upstream unavailable")
            return None

        server.rules.append(unavailable)
        config = write_config(tmp_path, server, chunk=3)
        code, document = run(config)
        assert code == 3, document
        assert len(failing) == 4
        server.rules.clear()
        before = len(server.requests)
        run_cycle(config)
        resumed = server.requests[before]
        assert (resumed.path, resumed.query) == (failing[0].path, failing[0].query)
        check_catalog(world, export(config))


def test_an_organization_deleted_while_walked_is_skipped_then_swept(tmp_path: Path) -> None:
    world = build_world(73, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=3)
        run_cycle(config)
        server.rules.append(
            on_nth(
                1,
                lambda r: r.path == "/api/v1/orgs/globex/projects",
                lambda s, r: s.world.delete_org("globex"),
            )
        )
        [_done] = run_cycle(config)
        assert not [b for b in export(config) if b["metadata"]["namespace"] == "globex"]
        assert 404 in server.statuses()
        run_cycle(config)
        check_catalog(world, export(config))


def test_check_does_not_call_a_listing_empty_when_only_its_first_page_is(tmp_path: Path) -> None:
    """The document: a page may hold no items while `nextCursor` is non-empty (items the caller
    may not see are filtered out after paging). `check` reads one page of one item; an org the
    client may not see sorts first."""
    world = build_world(83, [("acme", 1, 2)])
    world.orgs[("aa-not-yours",)] = {"name": "aa-not-yours", "createdAt": "2024-01-01T00:00:00Z"}
    world.hidden.add(("aa-not-yours",))
    with Server(world) as server:
        config = write_config(tmp_path, server)
        code, document, _ = cli_json("check", "--json", "--config", config)
        assert code == 0, document
        [api] = [c for c in document["checks"] if c["name"] == "openchoreo.api"]
        assert api["ok"], api
        assert "lists no orgs" not in api["detail"], api["detail"]


def test_a_cursor_rejected_again_after_its_restart_fails_the_burst(tmp_path: Path) -> None:
    """The document: a 400 on a cursor restarts the listing once, then the burst fails."""
    world = build_world(89, SMALL)
    with Server(world) as server:
        listing = "/api/v1/orgs/acme/projects/proj-0-acme/components"
        server.rules.append(
            lambda s, r: (
                error(400, "INVALID_CURSOR_FORMAT", "invalid continue token")
                if r.path == listing and r.param("cursor")
                else None
            )
        )
        config = write_config(tmp_path, server, chunk=3)
        code, document = run(config)
        assert code == 3, document
        assert provider_of(document)["state"] == "backing_off"
        assert [s for s in server.statuses() if s == 400] == [400, 400]


def test_stored_cursors_that_expire_between_three_bursts_in_a_row_are_a_health_problem(
    tmp_path: Path,
) -> None:
    """README: a listing whose stored cursor has expired at the start of 3 bursts in a row is a
    health problem in `status`/`health`, advising a shorter burstInterval or a longer
    burstLength."""
    world = build_world(97, [("acme", 1, 24)])
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=2)
        for _ in range(4):
            server.rules[:] = [on_nth(2, with_cursor(is_components_listing), too_many_requests)]
            code, document = run(config)
            assert code == 0, document
            assert not provider_of(document)["cycleCompleted"], document
            server.expire_cursors()
        state = status(config)
        assert state["healthy"] is False, state
        assert any("burstInterval" in problem for problem in state["problems"]), state["problems"]
        assert invoke("health", "--config", config).exit_code == 1
        server.rules.clear()
        run_cycle(config)
        check_catalog(world, export(config))


def always_failing(listing: str) -> Any:
    """A rule that answers every request for `listing` HTTP 500 (a resource it cannot serve)."""

    def rule(server: Server, request: Request) -> Answer | None:
        if request.path.endswith(listing):
            return error(500, "INTERNAL_ERROR", "internal server error")
        return None

    return rule


def test_a_project_whose_component_listing_always_fails_is_stepped_over(tmp_path: Path) -> None:
    """HTTP 500 on every request for one project's components (a resource the server cannot
    serve): the second failed burst in a row steps over that project, keeping what it held, and
    the walk goes on past it: a project deleted after it is swept, and the cycle completes."""
    world = build_world(13, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=2)
        run_cycle(config)
        (org, project), (gone_org, gone_project) = (
            world.visible_projects()[0],
            (world.visible_projects()[-1]),
        )
        assert gone_org != org
        broken = f"/orgs/{org}/projects/{project}/components"
        server.rules.append(always_failing(broken))
        world.delete_project(gone_org, gone_project)
        failed, _ = run(config)
        stepped, document = run(config)
        bodies = export(config)
        (problem,) = status(config)["problems"]

    assert failed == 3
    assert stepped == 0, document
    assert provider_of(document)["cycleCompleted"]
    check_catalog(world, bodies)  # the broken project's components kept, the gone one's swept
    assert f"GET {broken}" in problem


def test_a_stepped_over_project_keeps_its_apis_names_against_newcomers(tmp_path: Path) -> None:
    """Two components whose APIs want one plain name (`pay` + `gate-api`, `pay-gate` + `api`):
    the holder's project is stepped over for two cycles, and its API keeps the plain name (its
    claim is kept with the organization's scope), not taken over by the other."""
    world = build_world(13, SMALL)
    org = "acme"
    projects = sorted(project for (owner, project) in world.visible_projects() if owner == org)
    first, later = projects[0], projects[-1]

    def service(project: str, name: str, endpoint_name: str, day: int) -> dict[str, Any]:
        return {
            "type": "deployment/service",
            "autoDeploy": True,
            "orgName": org,
            "uid": f"uid-{name}",
            "name": name,
            "projectName": project,
            "createdAt": f"2024-01-0{day}T00:00:00Z",  # the older one holds the plain name
            "_endpoints": {endpoint_name: endpoint("REST", 8080, None)},
        }

    world.components[(org, first, "pay")] = service(first, "pay", "gate-api", 1)
    world.components[(org, later, "pay-gate")] = service(later, "pay-gate", "api", 2)

    def owners(bodies: list[dict[str, Any]]) -> dict[str, str]:
        return {
            body["metadata"]["name"]: body["spec"]["system"]
            for body in bodies
            if body["kind"] == "API" and body["metadata"]["name"].startswith("pay-gate-api")
        }

    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=50)
        run_cycle(config)
        before = owners(export(config))
        server.rules.append(always_failing(f"/orgs/{org}/projects/{first}/components"))
        assert run(config)[0] == 3
        outcomes = [run(config), run(config)]  # stepped over, then at once the next cycle
        after = owners(export(config))

    assert [provider_of(document)["cycleCompleted"] for _, document in outcomes] == [True, True]
    assert before["pay-gate-api"] == first
    assert after == before
