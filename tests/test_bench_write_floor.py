"""bench/write_floor.py, the bound benchmark 9 prints beside the v1 floor ratios: it reads the
store's own statements and schema, so a change there must not break it silently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from choreo_ingest.models import EntityIteratorResult
from choreo_ingest.store import Store

from fakes import make_entity

WRITE_FLOOR = Path(__file__).resolve().parents[1] / "bench" / "write_floor.py"


def test_write_floor_stores_every_entity_of_a_state_file_again(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    entities = [make_entity(f"component-{n}") for n in range(7)]
    with Store.open(state) as store:
        store.migrate()
        page = EntityIteratorResult(done=True, entities=entities)
        store.commit_page("openchoreo", 1, page, None, 1.0)

    done = subprocess.run(
        [sys.executable, str(WRITE_FLOOR), str(state), "--per-page", "3", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert (figures["entities"], figures["transactions"]) == (7, 3)
    assert figures["rows_cpu"] > 0
    assert figures["entities_cpu"] > 0
    assert figures["sql_cpu"] > 0
