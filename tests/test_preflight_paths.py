"""`check`'s checks of the files a run writes (the state file, the metrics textfile): a path
that exists must be a regular file a run can replace, not a directory or a FIFO."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from choreo_ingest.config import Config
from choreo_ingest.models import Check
from choreo_ingest.preflight import run_checks
from choreo_ingest.store import Store

from fakes import FakeClock


def checks_of(tmp_path: Path, textfile: Path, state: Path | None = None) -> dict[str, Check]:
    """The path checks, for a config with no provider to reach."""
    config = Config(providers=(), metrics_textfile=textfile)
    found = run_checks(config, state or tmp_path / "state.db", FakeClock())
    return {item.name: item for item in found if item.name != "config"}


def test_a_directory_is_refused_as_the_metrics_textfile(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()

    check = checks_of(tmp_path, directory)["metrics.textfile"]

    assert not check.ok
    assert check.detail == f"{directory}: is a directory; name a file in it"


def test_a_fifo_is_refused_as_the_metrics_textfile(tmp_path: Path) -> None:
    fifo = tmp_path / "metrics.prom"
    os.mkfifo(fifo)

    check = checks_of(tmp_path, fifo)["metrics.textfile"]

    assert (check.ok, check.detail) == (False, f"{fifo}: not a regular file")


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "new"])
def test_a_regular_metrics_textfile_is_writable(tmp_path: Path, exists: bool) -> None:
    textfile = tmp_path / "metrics.prom"
    if exists:
        textfile.write_text("")

    check = checks_of(tmp_path, textfile)["metrics.textfile"]

    assert (check.ok, check.detail) == (True, f"{textfile}: writable")


def test_a_symlink_to_a_regular_file_is_a_writable_metrics_textfile(tmp_path: Path) -> None:
    (tmp_path / "real.prom").write_text("")
    link = tmp_path / "metrics.prom"
    link.symlink_to(tmp_path / "real.prom")

    assert checks_of(tmp_path, link)["metrics.textfile"].ok


def test_a_directory_is_refused_as_the_state_file(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir()

    check = checks_of(tmp_path, tmp_path / "metrics.prom", state=directory)["state.path"]

    assert (check.ok, check.detail) == (False, f"{directory}: is a directory; name a file in it")


def test_an_existing_state_file_is_writable(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with Store.open(state) as store:
        store.migrate()

    check = checks_of(tmp_path, tmp_path / "metrics.prom", state=state)["state.path"]

    assert (check.ok, check.detail) == (True, f"{state}: writable")
