"""Two providers that emit one ref: the first to write it keeps it, as Backstage keeps an entity
with the location that first had it. Before, they took it from each other every cycle, and
forgetting the one that held it last removed an entity the other still had."""

from __future__ import annotations

import json
import random
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from choreo_ingest.invocation import forget, run_once
from choreo_ingest.models import Entity
from choreo_ingest.store import Store

from fakes import FakeClock, FakeProvider, make_config, make_entity


def described(name: str, description: str) -> Entity:
    entity = make_entity(name)
    body = {**entity.body, "metadata": {**entity.body["metadata"], "description": description}}
    return replace(entity, body=body)


def cycle(config: Any, clock: FakeClock, *providers: FakeProvider) -> None:
    clock.advance(1000.0)
    result = run_once(
        config,
        config.state_path,
        clock,
        providers={provider.name: provider for provider in providers},
        force=True,
        rng=random.Random(0),
    )
    assert all(outcome.cycle_completed for outcome in result.providers)


def owners(path: Path) -> dict[str, tuple[str, str]]:
    """Entity name -> (the provider that has it, its description)."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name, provider, body FROM entities").fetchall()
    return {
        name: (provider, json.loads(body)["metadata"].get("description", ""))
        for name, provider, body in rows
    }


def test_the_first_provider_to_write_a_ref_keeps_it_and_the_other_is_told(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = replace(make_config(tmp_path), providers=("first", "second"))
    first = FakeProvider([described("shared", "by first"), make_entity("a")], name="first")
    second = FakeProvider([described("shared", "by second"), make_entity("b")], name="second")

    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            cycle(config, clock, first, second)

    assert owners(config.state_path) == {
        "shared": ("first", "by first"),
        "a": ("first", ""),
        "b": ("second", ""),
    }
    refused = [line for line in logs if line["event"] == "entities_refused"]
    assert [(line["provider"], line["refs"], line["owned_by"]) for line in refused] == [
        ("second", ["component:default/shared"], ["first"])
    ] * 3
    with Store.open(config.state_path, readonly=True) as store:
        shared = [change for change in store.changes() if change.ref.endswith("/shared")]
    assert [(change.op, change.provider) for change in shared] == [("upsert", "first")]


def test_forgetting_the_other_provider_takes_nothing_of_the_first(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = replace(make_config(tmp_path), providers=("first", "second"))
    first = FakeProvider([make_entity("shared"), make_entity("a")], name="first")
    second = FakeProvider([make_entity("shared"), make_entity("b")], name="second")
    cycle(config, clock, first, second)

    removed = forget(config.state_path, "second", clock)

    assert removed == 1
    assert set(owners(config.state_path)) == {"shared", "a"}


def test_forgetting_the_provider_that_had_it_hands_it_to_the_other_at_its_next_cycle(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = replace(make_config(tmp_path), providers=("first", "second"))
    first = FakeProvider([make_entity("shared")], name="first")
    second = FakeProvider([described("shared", "by second")], name="second")
    cycle(config, clock, first, second)

    forget(config.state_path, "first", clock)
    cycle(replace(config, providers=("second",)), clock, second)

    assert owners(config.state_path) == {"shared": ("second", "by second")}
