"""Fixtures of the store's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from choreo_ingest.store import StateLocation, Store


@pytest.fixture
def store(any_location: StateLocation) -> Iterator[Store]:
    """A migrated store on each backend in turn (SQLite, PostgreSQL)."""
    with any_location.open() as opened:
        opened.migrate()
        yield opened
