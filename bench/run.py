"""choreo-ingest benchmarks against the physical floor (see bench/README.md).

    python bench/run.py [--quick] [--only overhead,memory,scale,load,requests,idle,floor]

Each benchmark starts the built-in simulator as its own process on loopback and measures the
client processes it starts (user+system CPU, wall time, peak RSS through `os.wait4`). Prints one
table (target, measured figure, PASS/FAIL) and exits 1 if any target is missed. `--quick` uses
smaller platforms where a benchmark's figure does not depend on the size (it says which) and,
without `--only`, runs benchmarks 1-5 (under 3 minutes).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import lean
import load
import memory
import overhead
import request_cost
import scale
from common import Result, World, compile_package, machine, summarize


@dataclass(frozen=True)
class Plan:
    overhead_shape: World
    overhead_repeats: int
    memory_small: World
    memory_large: World
    sweep_active: int
    sweep_stale: int
    status_refs: int
    capped_components: int
    bounded_bursts: int
    request_worlds: tuple[World, ...]
    idle_size: World
    idle_runs: int
    floor_sizes: tuple[World, ...]
    floor_repeats: int


FULL = Plan(
    overhead_shape=World(4, 25, 200),
    overhead_repeats=3,
    memory_small=World(4, 25, 100),
    memory_large=World(4, 500, 100),
    sweep_active=200_000,
    sweep_stale=100_000,
    status_refs=1_000_000,
    capped_components=600,
    bounded_bursts=6,
    request_worlds=request_cost.FULL,
    idle_size=lean.IDLE_SIZE,
    idle_runs=lean.IDLE_RUNS,
    floor_sizes=lean.FLOOR_SIZES,
    floor_repeats=3,
)
QUICK = Plan(
    overhead_shape=World(2, 20, 150),
    overhead_repeats=2,
    memory_small=World(2, 10, 100),
    memory_large=World(2, 100, 100),
    sweep_active=200_000,
    sweep_stale=100_000,
    # `status` reads counts kept as refs are written, not the refs: its figure does not depend
    # on their number, and committing 700,000 more took half a minute.
    status_refs=300_000,
    capped_components=300,
    bounded_bursts=4,
    request_worlds=request_cost.QUICK,
    idle_size=lean.IDLE_SIZE,  # the goal is set at 50,000 entities: one cycle builds them
    idle_runs=lean.IDLE_RUNS,
    floor_sizes=lean.QUICK_FLOOR_SIZES,  # 1k and 10k
    floor_repeats=3,
)

BENCHMARKS: dict[str, Callable[[Plan], list[Result]]] = {
    "overhead": lambda plan: overhead.run(plan.overhead_shape, plan.overhead_repeats),
    "memory": lambda plan: memory.run(plan.memory_small, plan.memory_large),
    "scale": lambda plan: scale.run(plan.sweep_active, plan.sweep_stale, plan.status_refs),
    "load": lambda plan: load.run(plan.capped_components, plan.bounded_bursts),
    "requests": lambda plan: request_cost.run(plan.request_worlds),
    "idle": lambda plan: lean.run_idle(plan.idle_size, plan.idle_runs),
    "floor": lambda plan: lean.run_floor(plan.floor_sizes, plan.floor_repeats),
}


QUICK_DEFAULT = ("overhead", "memory", "scale", "load", "requests")
"""What `--quick` runs unless `--only` says: benchmarks 1-5, within 3 minutes (8 and 9, issue
13's, add about two more: `--quick --only idle,floor`)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller platforms; alone, benchmarks 1-5 (under 3 minutes)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated: " + ",".join(BENCHMARKS) + " (default: all; with --quick: 1-5)",
    )
    args = parser.parse_args(argv)
    only = args.only or ",".join(QUICK_DEFAULT if args.quick else BENCHMARKS)
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    plan = QUICK if args.quick else FULL
    print(f"machine: {machine()}; {'--quick' if args.quick else 'full'} run", flush=True)
    compile_package()
    results: list[Result] = []
    started = time.perf_counter()
    for name in chosen:
        began = time.perf_counter()
        found = BENCHMARKS[name](plan)
        results += found
        print(f"{name}: done in {time.perf_counter() - began:.0f} s", flush=True)
    return summarize(results, started)


if __name__ == "__main__":
    sys.exit(main())
