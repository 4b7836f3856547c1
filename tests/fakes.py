"""Fakes shared by the whole suite.

A clock that only moves when told and a provider with pages in memory: the ones provider authors
get from `choreo_ingest.testing`, re-exported; and a config for the fake provider.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.testing import FakeClock, FakeProvider, make_entity

__all__ = ["FakeClock", "FakeProvider", "make_config", "make_entity"]


def make_config(tmp_path: Path, **incremental: Any) -> Config:
    settings = replace(IncrementalConfig(), **incremental)
    return Config(
        openchoreo=OpenChoreoConfig(base_url="http://openchoreo.test/api/v1", incremental=settings),
        state_path=tmp_path / "state.db",
        metrics_textfile=tmp_path / "metrics.prom",
        providers=("fake",),
    )
