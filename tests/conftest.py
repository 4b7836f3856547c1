"""Fixtures shared by the whole suite; the fakes themselves live in fakes.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from fakes import FakeClock, FakeProvider, make_config, make_entity

__all__ = ["FakeClock", "FakeProvider", "make_config", "make_entity"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """CLI tests configure structlog onto streams CliRunner closes afterwards: start clean."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
