"""Benchmark 1: a full choreo-ingest cycle against the physical floor (a bare httpx walk).

Both run as their own processes against the same simulator process, make exactly the same
requests (checked with the simulator's counters) with the same page size and the same detail
concurrency, and are measured with `os.wait4`. The best of `repeats` runs of each is compared,
alternating floor and cycle so that both see the same machine.
"""

from __future__ import annotations

import sys

from common import (
    BENCH_DIR,
    Measured,
    Result,
    SimulatorProcess,
    World,
    ingest,
    run_measured,
    scratch,
    write_config,
)

API = "orgs"
"""The organization-era API: the floor walk (bench/floor_walk.py) speaks it."""
CHUNK_SIZE = 50
CONCURRENCY = 5
CPU_RATIO_TARGET = 1.5
WALL_RATIO_TARGET = 1.3


def floor_walk(url: str) -> Measured:
    script = str(BENCH_DIR / "floor_walk.py")
    limits = ["--limit", str(CHUNK_SIZE), "--concurrency", str(CONCURRENCY)]
    return run_measured([sys.executable, script, url, *limits]).check()


def full_cycle(url: str, label: str) -> tuple[Measured, int]:
    """One `run --force` with a burst long enough for the whole cycle; (cost, entities)."""
    with scratch(label) as directory:
        config = write_config(
            directory,
            url,
            api=API,
            burstLength=86_400,
            chunkSize=CHUNK_SIZE,
            maxConcurrentRequests=CONCURRENCY,
        )
        run = ingest(config, "run", "--force", "--json").check()
        outcome = run.json()["providers"][0]
        if not outcome["cycleCompleted"]:
            raise RuntimeError(f"the cycle did not complete in one burst: {outcome}")
        return run, int(outcome["entitiesUpserted"])


def startup(url: str) -> tuple[Measured, Measured]:
    """The fixed cost of a process: `status --json` on a fresh state file, and the floor's
    interpreter with httpx imported."""
    with scratch("startup") as directory:
        config = write_config(directory, url, api=API)
        ingest(config, "migrate").check()
        cli_process = ingest(config, "status", "--json").check()
    return cli_process, run_measured([sys.executable, "-c", "import httpx"]).check()


def run(shape: World, repeats: int) -> list[Result]:
    floors: list[Measured] = []
    cycles: list[Measured] = []
    with SimulatorProcess(shape.namespaces, shape.projects, shape.components, api=API) as simulator:
        floor_walk(simulator.url)  # warm the simulator's name caches for both sides
        for attempt in range(repeats):
            simulator.reset_stats()
            floors.append(floor_walk(simulator.url))
            floor_requests = simulator.stats()["total_requests"]
            simulator.reset_stats()
            cycle, entities = full_cycle(simulator.url, f"overhead{attempt}")
            cycles.append(cycle)
            cycle_requests = simulator.stats()["total_requests"]
            if cycle_requests != floor_requests:
                raise RuntimeError(
                    f"not the same requests: floor {floor_requests}, cycle {cycle_requests}"
                )
        fixed, bare = startup(simulator.url)
    floor = min(floors, key=lambda m: m.cpu)
    cycle = min(cycles, key=lambda m: m.cpu)
    floor_wall = min(m.wall for m in floors)
    cycle_wall = min(m.wall for m in cycles)
    cpu_ratio = cycle.cpu / floor.cpu
    wall_ratio = cycle_wall / floor_wall
    per = 1e6 / entities
    where = f"{shape}, {floor_requests:,} requests, {entities:,} entities, best of {repeats}"
    return [
        Result(
            "1 overhead: client CPU per entity",
            "-",
            f"floor {floor.cpu * per:.0f} us, choreo-ingest {cycle.cpu * per:.0f} us "
            f"({floor.cpu:.2f} s vs {cycle.cpu:.2f} s; {where})",
            None,
        ),
        Result(
            "1 overhead: CPU ratio",
            f"<= {CPU_RATIO_TARGET}",
            f"{cpu_ratio:.2f}",
            cpu_ratio <= CPU_RATIO_TARGET,
        ),
        Result(
            "1 overhead: wall ratio",
            f"<= {WALL_RATIO_TARGET}",
            f"{wall_ratio:.2f} (floor {floor_wall:.2f} s, choreo-ingest {cycle_wall:.2f} s)",
            wall_ratio <= WALL_RATIO_TARGET,
        ),
        Result(
            "1 overhead: CPU ratio without start-up",
            "-",
            f"{(cycle.cpu - fixed.cpu) / (floor.cpu - bare.cpu):.2f} (each side's fixed cost "
            "below taken off)",
            None,
        ),
        Result(
            "1 overhead: fixed start-up cost",
            "-",
            f"`status --json` process {fixed.cpu:.2f} s CPU, {fixed.wall:.2f} s wall; "
            f"python + httpx import {bare.cpu:.2f} s CPU",
            None,
        ),
    ]
