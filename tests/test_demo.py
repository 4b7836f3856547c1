"""`choreo-ingest demo`: the simulator on a loopback port, runs until one cycle completes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from choreo_ingest.reporting import iter_export
from choreo_ingest.simulator import World

from sim_support import expected_catalog, expected_counts, expected_refs, ref_of, run_cli

SIZE = ("--orgs", "2", "--projects", "2", "--components", "3")


def test_json_demo_completes_a_v1_cycle_that_matches_the_world(tmp_path: Path) -> None:
    """The demo speaks v1 with OAuth2 client credentials, as an OpenChoreo release does."""
    state_path = tmp_path / "demo.db"
    world = World.generate(2, 2, 3, seed=0)

    done = run_cli("demo", "--json", *SIZE, "--db", state_path, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["cycleCompleted"] is True
    expected = expected_catalog(world)
    kinds = Counter(ref.partition(":")[0] for ref in expected)
    assert result["entities"] == {kind: kinds[kind.lower()] for kind in result["entities"]}
    assert sum(result["entities"].values()) == len(expected)
    assert result["stateFile"] == str(state_path)
    assert result["requests"] == 1 + 3 * 2  # the namespaces, then 3 listings per namespace
    assert {ref_of(body) for body in iter_export(state_path)} == set(expected)


def test_json_demo_of_the_org_era_api_matches_the_world(tmp_path: Path) -> None:
    state_path = tmp_path / "demo.db"
    world = World.generate(2, 2, 3, seed=0)

    done = run_cli("demo", "--json", "--api", "orgs", *SIZE, "--db", state_path, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["entities"] == expected_counts(world)
    assert {ref_of(body) for body in iter_export(state_path)} == expected_refs(world)


def test_text_demo_names_the_state_file_it_made(tmp_path: Path) -> None:
    done = run_cli("demo", *SIZE, cwd=tmp_path, env={"TMPDIR": str(tmp_path)})

    assert done.returncode == 0, done.stderr
    [state_file] = tmp_path.glob("choreo-ingest-demo-*/state.db")
    assert f"state file: {state_file}" in done.stdout
    assert "cycle completed" in done.stdout
