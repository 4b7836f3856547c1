"""The YAML mirror's own record of what it holds: a marker file in the directory.

The mirror's position (how far into the change log the files are) lives in the state, so the
state alone cannot tell that the directory changed apart from it: a volume remounted empty, a
mount that failed and left a bare mount point, `rm -r catalog/*`, or a state file restored from
a backup while the directory holds what came after. So every sync also writes
`<directory>/.choreo-ingest-mirror`: the state's store id, the position, the time of that
position's change, and whether the directory held entity files then. A directory whose marker
is missing (while it holds nothing), names another state, names a change this state does not
have, or says it held files where none are left (`rm -r catalog/*` keeps the marker) is not
trusted: the mirror starts it again. Started again over files it cannot vouch for, by a run
that may not rebuild it, it is marked `stray` until `mirror` does. Files deleted in part are not
seen: `mirror --rebuild`.

A marker ahead of the stored position is expected (it is written before the position is stored,
so a kill between the two leaves it ahead: replaying changes is harmless); one past the log's
end, or naming a change the log holds from another time, is another timeline. One behind it (a
marker whose rename a power cut lost, or another directory at the same path, as each `serve`
replica's own beside one PostgreSQL state) says where the directory stands: the sync goes on
from there. A directory
without a marker that holds entity files was written by a release before the marker: it is
trusted, and marked.

The marker starts with a dot: Backstage's glob `*/*/*.yaml` never reads it. This module is light
(no YAML): the idle `run` asks it whether the mirror is in step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from choreo_ingest.files import replace_atomically
from choreo_ingest.store import Store

MARKER = ".choreo-ingest-mirror"
REBUILDING = "rebuild"
"""The marker's `stray` while a rebuild has not finished (and no run has said so since)."""
MARKER_MODE = 0o644


class Marker(NamedTuple):
    """What a directory's marker says: why its files cannot be trusted (`problem`), or how far
    they go (`position`; None for a directory from before the marker), and whether files of
    entities the state does not hold may lie among them (`stray`: it was replayed over what
    another state, or a rebuild that did not finish, left, which only a rebuild deletes)."""

    problem: str | None = None
    position: int | None = None
    stray: bool = False
    rebuilding: bool = False
    """Stray as a rebuild marked it before it began: no run has said so since."""


def read_marker(directory: Path, store: Store, last: int) -> Marker:
    """The marker of `directory` (which exists), checked against the state, whose change log
    ends at `last`."""
    try:
        recorded = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:  # mirrored by an earlier release, or emptied since
        return Marker(
            None if holds_entity_files(directory) else "the directory holds no entity files"
        )
    except (OSError, UnicodeDecodeError, ValueError):
        return Marker("its marker file cannot be read")
    if not isinstance(recorded, dict) or recorded.get("storeId") != store.store_id():
        return Marker(
            "its marker names another store id (another state's, or this state's before a "
            "`reset --purge` or `--forget` renewed it)"
        )
    position, at = recorded.get("position"), recorded.get("at")
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        return Marker("its marker file cannot be read")
    if position > last:
        return Marker("it holds changes this state does not have (a state restored from a backup?)")
    logged_at = _change_time(store, position) if position else None
    if logged_at is not None and at != logged_at:  # pruned since: nothing to tell it by
        return Marker(
            "it holds changes this state made otherwise (a state restored from a backup?)"
        )
    if recorded.get("files") is True and not holds_entity_files(directory):
        # `rm -r catalog/*` leaves the marker (the shell's glob skips dot files)
        return Marker("the directory holds no entity files, as it did when marked (emptied?)")
    stray = recorded.get("stray")
    return Marker(
        position=position, stray=stray in (True, REBUILDING), rebuilding=stray == REBUILDING
    )


def mark(
    directory: Path, store: Store, position: int, *, stray: bool = False, rebuilding: bool = False
) -> None:
    """Record that `directory` holds the catalog as of `position` (durably, atomically), and
    whether files the state does not hold may be left among its files (`Marker.stray`; a rebuild
    begins `rebuilding`)."""
    recorded = {
        "storeId": store.store_id(),
        "position": position,
        "at": _change_time(store, position) if position else None,
        "files": holds_entity_files(directory),
        **({"stray": REBUILDING if rebuilding else True} if stray or rebuilding else {}),
    }
    data = json.dumps(recorded, separators=(",", ":")).encode()
    path = directory / MARKER
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    replace_atomically(path, data, MARKER_MODE)


def _change_time(store: Store, seq: int) -> float | None:
    """When change `seq` was logged; None when the log no longer holds it (pruned)."""
    rows = store.changes(seq - 1, 1)
    return rows[0].at if rows and rows[0].seq == seq else None


def holds_entity_files(directory: Path) -> bool:
    """Whether `directory` holds an entity's file (`<kind>/<namespace>/<name>.yaml`), looking no
    further than the first: the idle call asks, and a namespace may hold 100,000 files (a glob
    lists each directory whole)."""
    return first_entity_file(directory) is not None


def first_entity_file(directory: Path) -> str | None:
    """The path of the first entity file `holds_entity_files` meets; None for none. While that
    file is there, `directory` holds one (a kept idle answer looks at it alone)."""
    return next(
        (
            entry.path
            for kind in _directories(str(directory))
            for namespace in _directories(kind.path)
            for entry in _entries(namespace.path)
            if _is_entity_file(entry)
        ),
        None,
    )


def _directories(path: str) -> Iterator[os.DirEntry[str]]:
    return (entry for entry in _entries(path) if entry.name[0] != "." and _is(entry.is_dir))


def _entries(path: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            yield from entries
    except OSError:  # gone, or not a directory: nothing in it
        return


def _is_entity_file(entry: os.DirEntry[str]) -> bool:
    return entry.name.endswith(".yaml") and entry.name[0] != "." and _is(entry.is_file)


def _is(test: Callable[[], bool]) -> bool:
    """`DirEntry.is_dir` or `is_file`, False for an entry that cannot be looked at (a symlink
    loop, a link into a directory this user may not read): no file of the mirror's own."""
    try:
        return test()
    except OSError:
        return False
