"""Benchmark 5: what one full v1 cycle costs in requests, against the fewest list pages a flat
walk needs and against OpenChoreo's own provider's per-component pattern. (Named request_cost,
not requests: a bench/requests.py would shadow the requests package for every script here.)

    python bench/request_cost.py [--quick]

For each world (namespaces x projects x components per project) the simulator serves the v1
API with OAuth2 client credentials. Three counts:

- the cycle: one `choreo-ingest run --force` (`openchoreo.api: auto`, `chunkSize: 100`, OAuth) on
  a fresh state file, counted by the simulator (`/_control/stats`): API requests by route, and
  token and public requests apart;
- the floor: the list pages of a flat walk at `limit=100`, counted by walking them directly
  with httpx against the same simulator (namespaces, then per namespace its projects,
  workloads and components, following `nextCursor`). Pages are refilled past items the caller
  may not see, so the count is the server's, not `ceil(items / 100)`;
- OpenChoreo's own Backstage provider: the namespace, project and component pages of the same
  walk plus one `workloads?component=<c>` call per component (each is one page: a component
  has one or two workloads), computed from the floor's counts.

Targets (the issue): requests <= 1.01 x list pages, and no per-component request
(`get_component`, `get_workload`, a `workloads` page beyond the flat listing's).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
from common import (
    Measured,
    Result,
    SimulatorProcess,
    World,
    compile_package,
    fetch_token,
    ingest,
    machine,
    print_table,
    scratch,
    write_config,
)

LIMIT = 100
"""v1 serves at most 100 items a page; the cycle asks for as many (`chunkSize: 100`)."""
RATIO_TARGET = 1.01
OAUTH_CLIENT = "choreo-ingest-bench"
OAUTH_SECRET = "bench-client-secret"  # noqa: S105 (a loopback simulator's, made up here)
LISTINGS = ("namespaces", "projects", "workloads", "components")
SINGLE_READS = ("get_namespace", "get_project", "get_component", "get_workload")


FULL = (World(5, 10, 200), World(5, 10, 1000))
QUICK = (World(5, 10, 200),)


@dataclass
class FlatWalk:
    """Pages and items of each listing of a direct walk at `limit=100`."""

    pages: dict[str, int]
    items: dict[str, int]

    @property
    def list_pages(self) -> int:
        return sum(self.pages.values())

    @property
    def openchoreo_pattern(self) -> int:
        """OpenChoreo's provider: namespaces, projects and components pages, then one
        `workloads?component=` call per component."""
        listed = self.pages["namespaces"] + self.pages["projects"] + self.pages["components"]
        return listed + self.items["components"]


def flat_walk(simulator: SimulatorProcess) -> FlatWalk:
    """Every list page of the v1 walk, read directly: the fewest requests the cycle can make."""
    pages = dict.fromkeys(LISTINGS, 0)
    items = dict.fromkeys(LISTINGS, 0)
    headers = {
        "Authorization": f"Bearer {fetch_token(simulator, OAUTH_CLIENT, OAUTH_SECRET)}",
        "Accept": "application/json",
    }
    with httpx.Client(base_url=simulator.url.rstrip("/") + "/", headers=headers) as client:

        def listing(kind: str, path: str) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": LIMIT}
                if cursor:
                    params["cursor"] = cursor
                response = client.get(path, params=params, timeout=60.0)
                response.raise_for_status()
                body = response.json()
                pages[kind] += 1
                items[kind] += len(body["items"])
                found += body["items"]
                cursor = (body.get("pagination") or {}).get("nextCursor")
                if not cursor:
                    return found

        for namespace in listing("namespaces", "namespaces"):
            name = namespace["metadata"]["name"]
            for kind in LISTINGS[1:]:
                listing(kind, f"namespaces/{name}/{kind}")
    return FlatWalk(pages, items)


@dataclass
class Cycle:
    run: Measured
    stats: dict[str, Any]
    entities: int


def full_cycle(simulator: SimulatorProcess) -> Cycle:
    """One `run --force` with a burst long enough for the whole cycle, on a fresh state file."""
    with scratch("requests") as directory:
        oauth = {"tokenUrl": simulator.token_url, "clientId": OAUTH_CLIENT}
        config = write_config(
            directory,
            simulator.url,
            oauth={**oauth, "clientSecret": OAUTH_SECRET},
            burstLength=86_400,
            chunkSize=LIMIT,
        )
        simulator.reset_stats()
        run = ingest(config, "run", "--force", "--json").check()
        stats = simulator.stats()
        outcome = run.json()["providers"][0]
        if not outcome["cycleCompleted"]:
            raise RuntimeError(f"the cycle did not complete in one burst: {outcome}")
        return Cycle(run, stats, int(outcome["entitiesUpserted"]))


def measure(world: World) -> list[Result]:
    with SimulatorProcess(
        world.namespaces,
        world.projects,
        world.components,
        api="v1",
        oauth_client_id=OAUTH_CLIENT,
        oauth_client_secret=OAUTH_SECRET,
    ) as simulator:
        floor = flat_walk(simulator)
        cycle = full_cycle(simulator)
    stats = cycle.stats
    routes: dict[str, int] = stats["requests_by_route"]
    api_requests = int(stats["api_requests"])
    listed = {kind: routes.get(f"list_{kind}", 0) for kind in LISTINGS}
    singles = {route: routes[route] for route in SINGLE_READS if routes.get(route)}
    extra_workload_pages = listed["workloads"] - floor.pages["workloads"]
    per_component = sum(singles.values()) + max(0, extra_workload_pages)
    ratio = api_requests / floor.list_pages
    pattern = floor.openchoreo_pattern
    label = f"5 requests, {world.total // 1000}k"
    pages_text = ", ".join(f"{floor.pages[kind]:,} {kind}" for kind in LISTINGS)
    listed_text = ", ".join(f"{listed[kind]:,} {kind}" for kind in LISTINGS)
    return [
        Result(
            f"{label}: API requests per cycle",
            f"<= {RATIO_TARGET} x list pages",
            f"{api_requests:,} ({listed_text}) vs {floor.list_pages:,} list pages of the flat "
            f"walk ({pages_text}): {ratio:.3f}; {world}, {floor.items['workloads']:,} workloads, "
            f"{cycle.entities:,} entities",
            ratio <= RATIO_TARGET,
        ),
        Result(
            f"{label}: per-component requests",
            "0",
            f"{per_component} ({', '.join(f'{k} {v}' for k, v in singles.items()) or 'no single '}"
            f"reads, {max(0, extra_workload_pages)} workload pages beyond the flat listing's)",
            per_component == 0,
        ),
        Result(
            f"{label}: token / public requests",
            "-",
            f"{stats['token_requests']} token (OAuth2 client credentials), "
            f"{stats['public_requests']} public; not API requests",
            None,
        ),
        Result(
            f"{label}: OpenChoreo's provider's pattern",
            "-",
            f"{pattern:,} requests (namespace, project and component pages + "
            f"{floor.items['components']:,} workloads?component= calls): "
            f"{pattern / api_requests:.1f}x ours",
            None,
        ),
        Result(
            f"{label}: the cycle's cost",
            "-",
            f"{cycle.run.wall:.1f} s wall, {cycle.run.cpu:.1f} s CPU, "
            f"{cycle.run.maxrss_kib / 1024:.1f} MiB peak RSS",
            None,
        ),
    ]


def run(worlds: tuple[World, ...]) -> list[Result]:
    results: list[Result] = []
    for world in worlds:
        results += measure(world)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="only the 10k-component world")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    compile_package()
    started = time.perf_counter()
    results = run(QUICK if args.quick else FULL)
    print_table(results)
    failed = [result for result in results if result.passed is False]
    print(f"{len(failed)} target(s) missed; {time.perf_counter() - started:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
