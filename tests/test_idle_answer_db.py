"""The kept answer of a `run` given its state with `--db`: kept by such a run that found nothing
due, and taken only by a `run` that gives the same `--db` (with the same working directory),
never by one that gives another, or none."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from test_idle import resting_state, write_config
from test_idle_answer import clock_at_now, kept, kept_path, now

from choreo_ingest.cli.lean import lean_main
from choreo_ingest.config import load_config
from choreo_ingest.idle_answer import answered, run_arguments


@pytest.fixture
def state_apart(tmp_path: Path) -> Path:
    """A config whose resting state lies apart from its `state.path`, where `--db` names it."""
    config_file = write_config(tmp_path)
    config = load_config(config_file)
    resting_state(replace(config, state_path=tmp_path / "apart.db"), clock_at_now())
    return config_file


def run_with(config_file: Path, *db: str) -> list[str]:
    return ["--config", str(config_file), "run", *db]


def test_a_run_given_its_state_keeps_an_answer_the_same_command_line_takes(
    state_apart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(state_apart.parent)
    assert lean_main(run_with(state_apart, "--db", "apart.db")) == 0
    textfile = state_apart.parent / "metrics.prom"
    textfile.unlink()

    assert kept(state_apart)["db"] == "apart.db"
    assert answered(run_with(state_apart, "--db", "apart.db"), os.environ, now()) is True
    assert textfile.exists()
    assert not (state_apart.parent / "state.db").exists()  # the config's state.path: unread


@pytest.mark.parametrize(
    "other",
    [[], ["--db", "state.db"], ["--db", "./apart.db"]],
    ids=["none", "another-file", "another-spelling"],
)
def test_another_db_or_none_leaves_the_run_to_the_lean_entry(
    state_apart: Path, monkeypatch: pytest.MonkeyPatch, other: list[str]
) -> None:
    monkeypatch.chdir(state_apart.parent)
    assert lean_main(run_with(state_apart, "--db", "apart.db")) == 0
    textfile = state_apart.parent / "metrics.prom"
    before = textfile.read_bytes()

    assert answered(run_with(state_apart, *other), os.environ, now()) is False
    assert textfile.read_bytes() == before


def test_the_same_db_from_another_directory_leaves_the_run_to_the_lean_entry(
    state_apart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = state_apart.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(state_apart.parent / "apart.db", elsewhere / "apart.db")
    monkeypatch.chdir(state_apart.parent)
    assert lean_main(run_with(state_apart, "--db", "apart.db")) == 0

    monkeypatch.chdir(elsewhere)

    assert answered(run_with(state_apart, "--db", "apart.db"), os.environ, now()) is False


def test_an_answer_kept_without_db_is_not_taken_by_a_run_given_one(tmp_path: Path) -> None:
    config_file = write_config(tmp_path)
    resting_state(load_config(config_file), clock_at_now())
    assert lean_main(run_with(config_file)) == 0
    assert kept(config_file)["db"] is None
    state = str(tmp_path / "state.db")  # the very file state.path names

    assert answered(run_with(config_file, "--db", state), os.environ, now()) is False
    assert answered(run_with(config_file), os.environ, now()) is True


def test_a_state_file_replaced_under_the_db_path_leaves_the_run_to_the_lean_entry(
    state_apart: Path,
) -> None:
    apart = state_apart.parent / "apart.db"
    assert lean_main(run_with(state_apart, "--db", str(apart))) == 0
    assert answered(run_with(state_apart, "--db", str(apart)), os.environ, now()) is True
    copy = state_apart.parent / "copy.db"
    shutil.copy(apart, copy)

    copy.replace(apart)

    assert answered(run_with(state_apart, "--db", str(apart)), os.environ, now()) is False
    assert kept_path(state_apart).exists()  # the lean entry decides, and keeps a new one


@pytest.mark.parametrize(
    ("args", "given"),
    [
        (["run"], (None, None)),
        (["run", "--db", "s.db"], (None, "s.db")),
        (["--db=s.db", "run"], (None, "s.db")),
        (["-c", "c.yaml", "run", "--db", "s.db"], ("c.yaml", "s.db")),
        (["run", "--config=c.yaml", "--db=s.db"], ("c.yaml", "s.db")),
        (["run", "--db", "s.db", "--db", "t.db"], None),
        (["run", "--db"], None),
        (["run", "--db="], None),
        (["run", "-c=c.yaml"], None),
        (["run", "--db", "s.db", "--json"], None),
        (["--db", "s.db"], None),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_the_command_lines_a_kept_answer_may_take(
    args: list[str], given: tuple[str | None, str | None] | None
) -> None:
    assert run_arguments(args) == given
