"""Files other users read (the metrics textfile, the YAML mirror) get their modes whatever the
umask of the cron job or unit that wrote them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from choreo_ingest.files import make_directories, replace_atomically
from choreo_ingest.invocation import run_once

from fakes import FakeClock, FakeProvider, make_config, make_entity


@pytest.fixture(params=[0o077, 0o000], ids=["umask-077", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replace_atomically_gives_the_mode_asked_for(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "out.prom"

    replace_atomically(target, b"x 1\n", 0o644)
    replace_atomically(target, b"x 2\n", 0o644)

    assert (mode(target), target.read_bytes()) == (0o644, b"x 2\n")
    assert [p.name for p in tmp_path.iterdir()] == ["out.prom"], "no temp file left behind"


def test_make_directories_gives_new_directories_the_mode(tmp_path: Path, umask: int) -> None:
    existing = tmp_path / "kept"
    existing.mkdir(mode=0o700)
    existing.chmod(0o700)

    make_directories(existing / "a" / "b", 0o755)

    assert (mode(existing / "a"), mode(existing / "a" / "b"), mode(existing)) == (
        0o755,
        0o755,
        0o700,
    )


def test_a_run_writes_metrics_and_mirror_readable_by_others(tmp_path: Path, umask: int) -> None:
    config = replace(make_config(tmp_path), catalog_directory=tmp_path / "catalog")
    assert config.state_path is not None
    assert config.metrics_textfile is not None

    run_once(
        config, config.state_path, FakeClock(), providers={"fake": FakeProvider([make_entity("a")])}
    )

    assert mode(config.metrics_textfile) == 0o644
    written = tmp_path / "catalog" / "component" / "default" / "a.yaml"
    assert mode(written) == 0o644
    assert {mode(d) for d in (written.parent, written.parent.parent, tmp_path / "catalog")} == {
        0o755
    }
