"""The child process of test_crash_safety's SIGKILL test (not a test module).

    python engine_child.py STATE SOURCE_JSON

STATE: a state file's path, or a `postgresql://` URL (the default schema of that database).

Runs `run_once(force=True)` over a FakeProvider serving SOURCE_JSON (`[[name, version], ...]`)
in a loop, each page taking a few real milliseconds, until it is killed. Prints `ready` on
stderr once imports are done, so the parent can time its kill inside a burst rather than inside
interpreter start-up.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared fakes

from store_support import versioned_entity  # beside this script, so on sys.path already

from choreo_ingest.clock import SystemClock
from choreo_ingest.invocation import run_once
from choreo_ingest.store import state_location

from fakes import FakeProvider, make_config

PAGE_COST = 0.003
"""Real seconds each page takes."""


def main(state: str, source_path: Path) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pairs = json.loads(source_path.read_text())
    source = [versioned_entity(name, version) for name, version in pairs]
    location = state_location(state)
    config = replace(make_config(source_path.parent), state_path=None, metrics_textfile=None)
    provider = FakeProvider(source, page_size=2, page_cost=PAGE_COST)
    print("ready", file=sys.stderr, flush=True)
    while True:
        run_once(config, location, SystemClock(), force=True, providers={"fake": provider})
        provider.calls.clear()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
