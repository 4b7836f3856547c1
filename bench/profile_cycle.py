"""Profile one full cycle (the choreo-ingest side of benchmark 9) with cProfile.

    python bench/profile_cycle.py [--api orgs|v1] [--shape 5x10x200] [--timer wall|cpu|threads]
                                  [--top 25] [--out FILE.prof] [--steady]

Starts the simulator as benchmark 9 does (org era: `--endpoints-max 1`; v1: OAuth2 client
credentials), warms it with one floor walk, then runs
`python -m cProfile -o FILE -m choreo_ingest --config C run --force --json` on a fresh state
file (with `--steady`: on the state file an unprofiled cycle just left, so that nothing has
changed) (`--timer wall`, the default: cProfile's own clock, so waits for the server and for the
detail threads show up, under `acquire`, `recv`, `poll`), or the same under
`cProfile.Profile(time.thread_time)` (`--timer cpu`: the main thread's CPU only; the detail
threads and the page writer are not profiled by cProfile in either mode). Prints the top
entries by cumulative and by internal time. `--timer threads` profiles nothing: it reads every
thread's user+system CPU from /proc/PID/task/*/stat while the unprofiled cycle runs (every
0.05 s, the last reading of each thread kept) and prints the main thread's and each other
thread's share (Python 3.11 does not name OS threads: the others are told apart by id only).
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lean
from common import World, cli, compile_package, fetch_token, scratch

CPU_RUNNER = """
import cProfile, runpy, sys, time
out = sys.argv[1]
sys.argv = ["choreo-ingest", *sys.argv[2:]]
profile = cProfile.Profile(time.thread_time)
profile.enable()
try:
    runpy.run_module("choreo_ingest", run_name="__main__")
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


def thread_cpu(argv: list[str]) -> tuple[int, dict[int, float], float]:
    """Run argv; (pid, CPU seconds by thread id, wall seconds), read from /proc while it runs."""
    tick = os.sysconf("SC_CLK_TCK")
    began = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    seen: dict[int, float] = {}
    while process.poll() is None:
        try:
            tasks = list(Path(f"/proc/{process.pid}/task").iterdir())
        except FileNotFoundError:
            break
        for task in tasks:
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            seen[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
        time.sleep(0.05)
    process.wait()
    return process.pid, seen, time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--api", choices=lean.APIS, default="orgs")
    parser.add_argument("--shape", default="5x10x200", help="namespaces x projects x components")
    parser.add_argument("--timer", choices=("wall", "cpu", "threads"), default="wall")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--steady",
        action="store_true",
        help="profile a cycle on the state the first (unprofiled) cycle left: nothing changed",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    size = World(*(int(part) for part in args.shape.split("x")))
    out = args.out or Path(tempfile.gettempdir()) / f"choreo-{args.api}-{size.label}.prof"
    compile_package()
    with lean.simulator_for(args.api, size) as simulator, scratch("profile") as directory:
        token = None
        if args.api == "v1":
            token = fetch_token(simulator, lean.OAUTH_CLIENT, lean.OAUTH_SECRET)
        lean.floor_walk(simulator, token)
        config = lean.config_for(
            directory, simulator, burstLength=86_400, chunkSize=lean.CHUNK_SIZE
        )
        command = ["--config", str(config), "run", "--force", "--json"]
        if args.steady:
            subprocess.run([*cli(), *command], check=True, stdout=subprocess.DEVNULL)
        if args.timer == "threads":
            pid, seen, wall = thread_cpu([*cli(), *command])
            total = sum(seen.values())
            print(f"{args.api} {size}: {wall:.2f} s wall, {total:.2f} s CPU seen in threads")
            for tid, cpu in sorted(seen.items(), key=lambda item: -item[1]):
                label = "main" if tid == pid else f"thread {tid}"
                print(f"  {label:>14}: {cpu:6.2f} s ({cpu / total:.0%})")
            return 0
        if args.timer == "wall":
            argv_ = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "choreo_ingest"]
        else:
            argv_ = [sys.executable, "-c", CPU_RUNNER, str(out)]
        subprocess.run([*argv_, *command], check=True, stdout=subprocess.DEVNULL)
    print(f"{args.api} {size}, timer {args.timer}: {out}")
    for key in ("cumulative", "tottime"):
        pstats.Stats(str(out)).sort_stats(key).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
