"""Fakes shared by the whole suite.

A clock that only moves when told and a provider with pages in memory: the ones provider authors
get from `choreo_ingest.testing`, re-exported; and a config for the fake provider.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from choreo_ingest.config import Config, IncrementalConfig, OpenChoreoConfig
from choreo_ingest.models import EntityIteratorResult
from choreo_ingest.providers.base import BurstContext
from choreo_ingest.testing import FakeClock, FakeProvider, make_entity

__all__ = [
    "DyingEveryTime",
    "FakeClock",
    "FakeProvider",
    "ProcessDied",
    "SourcedProvider",
    "make_config",
    "make_entity",
]


class ProcessDied(BaseException):
    """Stands for the process vanishing mid-burst: nothing in the engine may handle it."""


@dataclass
class SourcedProvider(FakeProvider):
    """A provider that names its source, as OpenChoreo's does (`SourceNamingProvider`)."""

    source: str = "http://a.test/api/v1"
    source_key: str = "fake.url"


@dataclass
class DyingEveryTime(FakeProvider):
    """Serves the first page, then kills its process at every later page."""

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        if cursor is not None:
            raise ProcessDied
        return super().next(context, cursor)


def make_config(tmp_path: Path, **incremental: Any) -> Config:
    settings = replace(IncrementalConfig(), **incremental)
    return Config(
        openchoreo=OpenChoreoConfig(base_url="http://openchoreo.test/api/v1", incremental=settings),
        state_path=tmp_path / "state.db",
        metrics_textfile=tmp_path / "metrics.prom",
        providers=("fake",),
    )
