"""Whole-number options past what the state store (or a port) can hold are usage errors: exit 2,
one line naming the option (and with --json one document), never an OverflowError reported as a
bug. The lean entry (`changes` is one of its commands) leaves them to the full command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from choreo_ingest.cli.lean import MAX_COUNT, lean_main
from choreo_ingest.simulator import World
from choreo_ingest.store import Store

from fakes import FakeClock
from sim_support import ingest_world, one_error_line, run_cli

HUGE = "99999999999999999999"
"""Past 2**63 - 1, the largest SQLite INTEGER."""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        store.migrate()
    return path


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A state whose second cycle saw nothing: its removals are blocked, so listed."""
    path = tmp_path / "blocked.db"
    ingest_world(path, World.generate(1, 1, 2, seed=3), FakeClock())
    outcome = ingest_world(path, World.empty(), FakeClock(), force=True)
    assert outcome.removals_blocked > 0
    return path


@pytest.mark.parametrize("option", ["--limit", "--since"])
@pytest.mark.parametrize("json_output", [[], ["--json"]], ids=["text", "json"])
def test_changes_refuses_a_count_too_large_to_store_as_a_usage_error(
    tmp_path: Path, state: Path, option: str, json_output: list[str]
) -> None:
    done = run_cli("changes", option, HUGE, *json_output, "--db", state, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert line.startswith(f"choreo-ingest: error: changes: Invalid value for '{option}': {HUGE}")
    assert "too large" in line
    assert "internal error" not in line
    if json_output:
        document = json.loads(done.stdout)
        assert document["exitCode"] == 2
        assert option in document["error"]
    else:
        assert done.stdout == ""


def test_changes_takes_the_largest_storable_limit(tmp_path: Path, state: Path) -> None:
    done = run_cli("changes", "--limit", str(MAX_COUNT), "--json", "--db", state, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["changes"] == []


@pytest.mark.parametrize("option", ["--limit", "--since"])
def test_the_lean_entry_leaves_a_count_too_large_to_the_full_command(
    state: Path, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lean_main(["changes", option, HUGE, "--json", "--db", str(state)]) is None
    assert capsys.readouterr() == ("", "")


def test_the_lean_entry_answers_a_count_in_range(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lean_main(["changes", "--limit", str(MAX_COUNT), "--json", "--db", str(state)]) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == []


@pytest.mark.parametrize("json_output", [[], ["--json"]], ids=["text", "json"])
def test_removals_refuses_a_limit_too_large_to_store(
    tmp_path: Path, blocked: Path, json_output: list[str]
) -> None:
    done = run_cli("removals", "--limit", HUGE, *json_output, "--db", blocked, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "removals: Invalid value for '--limit'" in one_error_line(done.stderr)
    if json_output:
        assert json.loads(done.stdout)["exitCode"] == 2


def test_removals_lists_with_the_largest_storable_limit(tmp_path: Path, blocked: Path) -> None:
    done = run_cli("removals", "--limit", str(MAX_COUNT), "--json", "--db", blocked, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    [provider] = json.loads(done.stdout)["providers"]
    assert provider["blocked"]
    assert len(provider["refs"]) == provider["count"] > 0


def test_simulate_serve_refuses_a_port_past_65535(tmp_path: Path) -> None:
    done = run_cli("simulate", "serve", "--port", "70000", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "simulate serve: Invalid value for '--port'" in one_error_line(done.stderr)


def test_simulate_serve_names_its_options_as_typed(tmp_path: Path) -> None:
    done = run_cli("simulate", "serve", "--port", "0", "--oauth-client-id", "x", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert one_error_line(done.stderr).endswith(
        "--oauth-client-id and --oauth-client-secret must be set together"
    )


def test_a_number_of_thousands_of_digits_is_a_usage_error_not_a_bug(
    tmp_path: Path, state: Path
) -> None:
    """`int()` refuses more than 4,300 digits with a ValueError: the lean entry reported it as
    a bug (exit 1); the full command says the value is not valid."""
    digits = "9" * 5000

    done = run_cli("changes", "--limit", digits, "--json", "--db", state, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["exitCode"] == 2
    assert "internal error" not in done.stderr
