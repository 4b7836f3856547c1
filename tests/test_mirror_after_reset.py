"""The YAML mirror after `reset --purge` and `reset --forget`, which renew the store id: the
command rebuilds a mirror in use, so the next cron run finds it in step and says nothing (before,
that run replayed the directory from the start and warned, a cron mail for what the operator had
just done)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from choreo_ingest.cli.app import app
from choreo_ingest.invocation import locked_store, reset
from choreo_ingest.mirror import sync_mirror

from fakes import FakeClock, make_entity
from mirror_support import exported, mirror_config, mirrored, run_cycle


def write_config(tmp_path: Path, providers: str) -> Path:
    path = tmp_path / "choreo-ingest.yaml"
    path.write_text(f"state:\n  path: state.db\ncatalog:\n  directory: catalog\n{providers}")
    return path


def mirrored_state(tmp_path: Path, clock: FakeClock) -> Path:
    """A state of two entities of provider `fake`, and its mirror in step."""
    config = mirror_config(tmp_path)
    assert config.state_path is not None
    run_cycle(config, clock, [make_entity("a"), make_entity("b")])
    assert len(mirrored(tmp_path / "catalog")) == 2
    return config.state_path


def next_runs_mirror(state: Path, catalog: Path) -> list[dict[str, Any]]:
    """What the next run's mirror step (bounded, as a run's is) says."""
    with locked_store(state) as store, structlog.testing.capture_logs() as logs:
        sync_mirror(store, catalog, cancelled=lambda: False)
    return [line for line in logs if line["log_level"] in ("warning", "error")]


@pytest.mark.parametrize(
    ("args", "providers"),
    [
        (["reset", "fake", "--purge", "--yes"], "providers: [fake]\n"),
        (["reset", "fake", "--forget", "--yes"], "providers: [openchoreo]\n"),
    ],
    ids=["purge", "forget"],
)
def test_the_command_leaves_the_mirror_in_step_and_the_next_run_quiet(
    tmp_path: Path, clock: FakeClock, args: list[str], providers: str
) -> None:
    state = mirrored_state(tmp_path, clock)
    config_file = write_config(tmp_path, providers)

    result = CliRunner().invoke(app, [*args, "--config", str(config_file)])

    assert result.exit_code == 0, result.output
    assert mirrored(tmp_path / "catalog") == exported(state) == {}
    assert next_runs_mirror(state, tmp_path / "catalog") == []


def test_a_reset_that_leaves_the_mirror_is_followed_by_a_run_that_says_so(
    tmp_path: Path, clock: FakeClock
) -> None:
    """What `serve`'s reset route does (its own ticks mirror, and log there): the directory is
    marked with the old store id, which the next run cannot vouch for."""
    state = mirrored_state(tmp_path, clock)

    reset(state, "fake", clock, purge=True, config=mirror_config(tmp_path))

    said = next_runs_mirror(state, tmp_path / "catalog")
    assert [line["event"] for line in said] == ["mirror_replayed_from_start"]


def test_a_plain_reset_touches_no_mirror(tmp_path: Path, clock: FakeClock) -> None:
    state = mirrored_state(tmp_path, clock)
    before = {path: path.stat().st_mtime_ns for path in (tmp_path / "catalog").rglob("*")}

    result = CliRunner().invoke(
        app,
        ["reset", "fake", "--yes", "--config", str(write_config(tmp_path, "providers: [fake]\n"))],
    )

    assert result.exit_code == 0, result.output
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "catalog").rglob("*")} == before
    assert next_runs_mirror(state, tmp_path / "catalog") == []
