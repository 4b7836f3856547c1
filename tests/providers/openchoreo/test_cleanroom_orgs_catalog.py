"""choreo-ingest end to end against the clean-room organization-era OpenChoreo API
(`tests/cleanroom_orgs.py`, written from `openchoreo-api.md` alone), through the real CLI: what
the catalog holds after a multi-page walk, after changes between cycles and after org-era events;
the mass-deletion guard; API names that meet; `openchoreo.api: auto`; a cycle over many bursts."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from cleanroom_orgs import TOKEN, Server
from cleanroom_orgs_checks import (
    check_catalog,
    check_requests,
    endpoints_of,
    ref,
    validate_with_backstage,
)
from cleanroom_orgs_cli import (
    PROVIDER,
    cli_json,
    event,
    export,
    provider_of,
    queue_events,
    run,
    run_cycle,
    status,
    write_config,
)
from cleanroom_orgs_world import BIG, SMALL, World, add_collision, build_world, component, endpoint
from cli_support import invoke, isolate


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


@pytest.fixture
def big_world() -> World:
    world = build_world(7, BIG)
    add_collision(world, "acme", "proj-0-acme")
    world.projects[("acme", "empty")] = {
        "uid": "uid-empty",
        "name": "empty",
        "orgName": "acme",
        "createdAt": "2024-01-01T00:00:00Z",
    }
    return world


def test_multi_page_world_is_ingested_completely(tmp_path: Path, big_world: World) -> None:
    """A few hundred components over three orgs (one with a 63-char name), pages of 7 with items
    filtered out after paging, every optional field missing somewhere, endpoints of every type."""
    assert len(big_world.visible_components()) > 250
    with Server(big_world) as server:
        config = write_config(tmp_path, server, chunk=7)
        runs = run_cycle(config)
        bodies = export(config)

        check_catalog(big_world, bodies)
        check_requests(server, 7)
        assert all(status == 200 for status in server.statuses()), Counter(server.statuses())
        short = [
            body
            for r, s, body in server.answers
            if s == 200
            and r.param("cursor") is not None
            and (body["data"]["items"] is None)
            and body["data"]["nextCursor"]
        ]
        assert short, "the world should make an empty page that is not the last"
        cursors = [
            b["data"]["nextCursor"]
            for _, st, b in server.answers
            if st == 200 and "nextCursor" in b.get("data", {})
        ]
        assert any(set("+/=") & set(c) for c in cursors)
        assert max(map(len, cursors)) > 450
        state = status(config)
        assert state["state"] == "resting"
        assert state["api"] == "orgs"
        assert state["activeEntities"] == len(bodies)
        assert state["removals"]["blocked"] is False
        assert sum(r["entitiesUpserted"] for r in runs) == len(bodies)
        validate_with_backstage(bodies)


def test_second_cycle_of_an_unchanged_world_changes_nothing(tmp_path: Path) -> None:
    world = build_world(3, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=5)
        run_cycle(config)
        first = export(config)
        [again] = run_cycle(config)
        assert again["entitiesUpserted"] == 0, again
        assert again["entitiesRemoved"] == 0, again
        assert export(config) == first


def test_deletions_and_additions_between_cycles(tmp_path: Path) -> None:
    world = build_world(11, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=5)
        document = yaml.safe_load(config.read_text())
        document["catalog"] = {"directory": str(tmp_path / "mirror")}
        config.write_text(yaml.safe_dump(document))
        run_cycle(config)
        check_catalog(world, export(config))

        world.delete_project("globex", "proj-0-globex")
        gone = [k for k in world.visible_components() if k[0] == "acme"][:4]
        for key in gone:
            del world.components[key]
        with_apis = next(k for k in world.visible_components() if endpoints_of(world, k))
        world.components[with_apis]["_endpoints"] = None  # its APIs go
        added = ("acme", "proj-0-acme", "brand-new")
        world.components[added] = component(
            *added, "deployment/web-app", _endpoints={"api": endpoint("REST", 80, None)}
        )
        [done] = run_cycle(config)
        assert done["entitiesRemoved"] > 0
        bodies = export(config)
        check_catalog(world, bodies)
        check_requests(server, 5)
        mirrored = sorted((tmp_path / "mirror").glob("*/*/*.yaml"))
        assert sorted(map(ref, (yaml.safe_load(f.read_text()) for f in mirrored))) == sorted(
            map(ref, bodies)
        )
        assert {f.relative_to(tmp_path / "mirror").as_posix() for f in mirrored} == {
            f"{b['kind'].lower()}/{b['metadata']['namespace']}/{b['metadata']['name']}.yaml"
            for b in bodies
        }


def test_mass_deletion_is_blocked_then_approved(tmp_path: Path) -> None:
    world = build_world(5, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=5, rejectRemovalsAbovePercentage=10)
        run_cycle(config)
        before = export(config)
        world.delete_org("globex")
        [done] = run_cycle(config)
        assert done["entitiesRemoved"] == 0, done
        assert done["removalsBlocked"] > 0, done
        assert {ref(b) for b in export(config)} == {ref(b) for b in before}
        state = status(config)
        assert state["removals"]["blocked"] is True
        assert state["removals"]["count"] == done["removalsBlocked"]

        code, _listed, _ = cli_json("removals", "--json", "--config", config)
        assert code == 0
        result = invoke("removals", "approve", PROVIDER, "--yes", "--config", config)
        assert result.exit_code == 0, result.stderr
        check_catalog(world, export(config))
        assert status(config)["removals"]["blocked"] is False


def test_events_apply_deltas_in_the_org_era_shape(tmp_path: Path) -> None:
    """Org-era events (README: `{"kind": "Component", ..., "project": "shop", ...}`) re-read what
    they name and are applied by the next `run`, before any new cycle."""
    world = build_world(43, [("acme", 3, 8), ("globex", 3, 6), ("initech", 1, 4)])
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=5)
        run_cycle(config)
        check_catalog(world, export(config))
        visible = world.visible_components()

        new = ("acme", "proj-0-acme", "new-svc")
        feeds = {
            "api": endpoint("REST", 8080, None),
            "Events Feed": endpoint("Websocket", 9000, None),
        }
        world.components[new] = component(*new, "Service", displayName="New", _endpoints=feeds)
        world.projects[("acme", "fresh")] = {
            "uid": "uid-fresh",
            "name": "fresh",
            "orgName": "acme",
            "createdAt": "2024-06-02T00:00:00Z",
        }
        world.components[("acme", "fresh", "fresh-job")] = component(
            "acme", "fresh", "fresh-job", "cronjob/report"
        )
        deleted = next(k for k in visible if k[1] == "proj-2-acme")
        del world.components[deleted]
        vanished = next(k for k in visible if k[1] == "proj-0-acme")  # says updated, answers 404
        del world.components[vanished]
        globex = [k for k in visible if k[0] == "globex" and k[1] != "default"]
        moved = globex[1]
        world.components[moved]["displayName"] = "Renamed without project"
        gone_no_project = globex[2]
        del world.components[gone_no_project]
        world.projects[("acme", "proj-0-acme")]["displayName"] = "Shop (renamed)"
        world.orgs[("globex",)]["displayName"] = "Globex Corporation"
        globex_project = next(
            k
            for k in world.visible_projects()
            if k[0] == "globex" and k[1] != "default" and k not in (moved[:2], gone_no_project[:2])
        )
        world.delete_project(*globex_project)
        world.delete_org("initech")
        world.delete_project("globex", "default")
        events = [
            event("Component", "new-svc", "acme", "created", "proj-0-acme"),
            event("Component", "fresh-job", "acme", "created", "fresh"),
            event("Component", deleted[2], "acme", "deleted", deleted[1]),
            event("Component", vanished[2], "acme", "updated", vanished[1]),
            event("Component", moved[2], "globex", "updated"),
            event("Component", gone_no_project[2], "globex", "deleted"),
            event("Project", "proj-0-acme", "acme", "updated"),
            event("Project", globex_project[1], "globex", "deleted"),
            event("Organization", "globex", "globex", "updated"),
            event("Organization", "initech", "initech", "deleted"),
            event("Project", "default", "globex", "deleted"),
        ]
        queue_events(tmp_path, config, events)
        time.sleep(2.1)  # an `updated` event is applied once it is 2 s old (README)
        code, document = run(config, force=False)
        assert code == 0, document
        assert document["events"]["applied"] == len(events), document["events"]
        assert provider_of(document)["action"] != "burst", "resting: only the events ran"
        check_catalog(world, export(config))
        for request in server.requests:
            assert request.authorization == f"Bearer {TOKEN}"

        [again] = run_cycle(config)
        assert again["entitiesRemoved"] == 0, again
        check_catalog(world, export(config))


def test_auto_finds_the_org_era_api(tmp_path: Path) -> None:
    """`openchoreo.api: auto` at a server whose unknown routes answer Go's text 404."""
    world = build_world(47, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=6, api="auto")
        run_cycle(config)
        check_catalog(world, export(config))
        assert status(config)["api"] == "orgs"


def test_under_auto_a_namespace_event_at_an_org_era_server_is_parked_at_once(
    tmp_path: Path,
) -> None:
    """The organization era has no namespaces: the event can never apply, so it is parked at
    its first attempt rather than failed at each of the next runs."""
    world = build_world(47, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=6, api="auto")
        run_cycle(config)
        queue_events(tmp_path, config, [event("Namespace", "acme", "", "created")])
        first = run(config)[1]["events"]
        second = run(config)[1]["events"]

    assert (first["parked"], first["retried"], first["applied"]) == (1, 0, 0)
    assert (second["parked"], second["retried"]) == (0, 0)


def test_a_cycle_spread_over_many_bursts_is_complete(tmp_path: Path) -> None:
    """A slow server and a short burstLength: the cycle takes several bursts, each resuming from
    the stored cursor and queue positions."""
    world = build_world(53, [("acme", 3, 10), ("globex", 2, 8)])
    with Server(world) as server:
        server.latency = 0.02
        config = write_config(tmp_path, server, chunk=3, burstLength=0.6)
        runs = run_cycle(config, max_runs=30)
        assert len(runs) >= 2, runs
        check_catalog(world, export(config))
        assert sum(r["entitiesUpserted"] for r in runs) == len(export(config))


def test_a_cycle_that_sees_nothing_removes_nothing(tmp_path: Path) -> None:
    """The client's role binding is gone: every organization is filtered out of the listing
    (pages with no items and a cursor, as the document allows); rejectEmptySourceCollections."""
    world = build_world(59, SMALL)
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=2)
        run_cycle(config)
        before = export(config)
        world.hidden |= set(world.orgs)
        [done] = run_cycle(config)
        assert done["entitiesRemoved"] == 0, done
        assert done["removalsBlocked"] == len(before), done
        assert export(config) == before
        assert status(config)["removals"]["blocked"] is True


def test_api_names_that_meet_across_projects_stay_apart_and_stable(tmp_path: Path) -> None:
    """`pay` + `gate-api` and `pay-gate` + `api` in different projects both join to
    `pay-gate-api`; `pay` arrives later, by an event, though it sorts first. An org named
    `default` shares Backstage's namespace with the Domains. Refs stay apart, every
    `providesApis` resolves, and nothing moves from cycle to cycle."""
    world = build_world(61, [("default", 3, 6), ("acme", 3, 6)])
    a, b = add_collision(world, "default", "proj-0-default")
    pay = world.components.pop(a)
    world.components[("default", "proj-2-default", "pay-gate")] = world.components.pop(b)
    world.components[("default", "proj-2-default", "pay-gate")]["projectName"] = "proj-2-default"
    with Server(world) as server:
        config = write_config(tmp_path, server, chunk=4)
        run_cycle(config)
        check_catalog(world, export(config))
        world.components[a] = pay
        queue_events(tmp_path, config, [event("Component", "pay", "default", "created", a[1])])
        code, document = run(config, force=False)
        assert code == 0, document
        assert document["events"]["applied"] == 1, document
        after_event = export(config)
        check_catalog(world, after_event)
        [again] = run_cycle(config)
        assert again["entitiesUpserted"] == 0, again
        assert export(config) == after_event
        events = [
            event("Component", "pay-gate", "default", "created", "proj-2-default"),
            event("Component", "pay", "default", "created"),
        ]
        queue_events(tmp_path, config, events)
        code, document = run(config, force=False)
        assert code == 0, document
        assert document["events"]["applied"] == 2, document
        assert export(config) == after_event
