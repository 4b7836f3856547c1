"""The note of damage beside a state file (`store.damage_note`): written for the file's own
damage only, read by the read-only opens, and silent about a file put back or written since."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from choreo_ingest.errors import NotAStateFile, StateError
from choreo_ingest.store import SqliteLocation
from choreo_ingest.store.damage_note import note_path

from broken_states import ingested
from fakes import FakeClock


def damage_of(path: Path) -> StateError:
    error = NotAStateFile(f"state store {path}: corrupt (malformed)", path=str(path))
    error.damaged = True
    return error


@pytest.fixture
def state(tmp_path: Path) -> SqliteLocation:
    location = SqliteLocation(tmp_path / "state.db")
    with location.open() as store:
        store.migrate()
    return location


def test_a_file_s_own_damage_is_noted_and_the_read_only_opens_refuse_it(
    state: SqliteLocation,
) -> None:
    state.note_damage(damage_of(state.path))

    with pytest.raises(NotAStateFile, match=r"corrupt \(malformed\) \(met by a command"):
        state.open(readonly=True)
    state.open(readonly=True, despite_damage=True).close()
    state.open().close()  # a run goes on: it is what meets the damage again, or not


def test_another_file_s_damage_is_not_noted_here(state: SqliteLocation, tmp_path: Path) -> None:
    """`migrate --copy-to` holds two stores: the target's damage noted the source too."""
    state.note_damage(damage_of(tmp_path / "target.db"))
    plain = StateError("state store: disk full", path=str(state.path))
    state.note_damage(plain)

    assert not note_path(state.path).exists()
    state.open(readonly=True).close()


def test_a_note_says_nothing_of_the_file_once_it_was_replaced_or_written(
    state: SqliteLocation,
) -> None:
    state.note_damage(damage_of(state.path))
    found = state.path.stat()
    os.utime(state.path, ns=(found.st_atime_ns, found.st_mtime_ns + 1_000_000))

    state.open(readonly=True).close()
    assert state.noted_damage() is None


def test_a_store_closed_in_the_middle_of_a_read_writes_its_file_no_more_once_closed(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A cursor still open (one an error's traceback holds) deferred SQLite's close, and its
    checkpoint, to whenever Python freed it: the note a failed run then took of the file
    spoke of another one, and `status`, `health` and the idle runs read the damaged state
    as sound (exit 0, health green)."""
    state = SqliteLocation(ingested(tmp_path / "state.db", clock))
    store = state.open()
    store.set_facts("openchoreo", {"probe": "1"}, clock.now())  # frames for the checkpoint
    reading = store.iter_entities()
    next(reading)

    store.close()
    closed = state.path.stat()
    del reading
    gc.collect()

    after = state.path.stat()
    assert (after.st_size, after.st_mtime_ns) == (closed.st_size, closed.st_mtime_ns)
