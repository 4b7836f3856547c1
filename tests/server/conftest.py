"""Fixtures the serve route tests share: a config whose API is unreachable (the routes never
call it) and a directory `nobody` may search."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo_ingest.config import Config, load_config

from privileges import reachable_directory
from sim_support import write_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = write_config(
        tmp_path / "choreo-ingest.yaml",
        "http://127.0.0.1:9/api/v1",
        token="openchoreo-token",
        state={"path": "state.db"},
    )
    return load_config(path)


@pytest.fixture
def directory() -> Iterator[Path]:
    """A 0755 directory (pytest's tmp_path is below a 0700 one `nobody` may not search)."""
    with reachable_directory(0o755) as made:
        yield made
