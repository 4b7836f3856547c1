"""What the YAML mirror holds, and what it should hold, for tests of the mirror on real files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from choreo_ingest.config import Config
from choreo_ingest.invocation import run_once
from choreo_ingest.models import Entity
from choreo_ingest.reporting import iter_export

from fakes import FakeClock, FakeProvider, make_config, make_entity


def mirrored(directory: Path) -> dict[str, Any]:
    """What Backstage's glob reads, relative path -> parsed YAML (pathlib's `*` matches hidden
    names too, node's does not)."""
    return {
        path.relative_to(directory).as_posix(): yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*/*/*.yaml"))
    }


def exported(state_path: Path) -> dict[str, Any]:
    """What `choreo-ingest export` prints, keyed by where the mirror should put each entity."""
    return {
        f"{body['kind'].lower()}/{body['metadata']['namespace']}/{body['metadata']['name']}.yaml": (
            body
        )
        for body in iter_export(state_path)
    }


def mirror_config(tmp_path: Path) -> Config:
    return replace(make_config(tmp_path), catalog_directory=tmp_path / "catalog")


def mirrored_after_one_cycle(tmp_path: Path, clock: FakeClock) -> Config:
    """A config that mirrors to `tmp_path / "catalog"` (its state file set), after one cycle of
    entity `a`."""
    config = mirror_config(tmp_path)
    assert config.state_path is not None
    run_cycle(config, clock, [make_entity("a")])
    return config


def run_cycle(config: Config, clock: FakeClock, entities: Sequence[Entity]) -> None:
    """One complete cycle of the fake provider serving `entities` (the sweep removes the rest)."""
    assert config.state_path is not None
    provider = FakeProvider(list(entities))
    result = run_once(config, config.state_path, clock, providers={"fake": provider}, force=True)
    assert result.outcome == "burst"
    assert result.providers[0].cycle_completed
