"""The YAML mirror: one file per catalog entity, for a Backstage `file` location with a glob.

Files live at `<directory>/<kind, lower-cased>/<namespace>/<name>.yaml`, so the glob
`<directory>/*/*/*.yaml` finds them all. The mirror follows the store's change log from a stored
position: for every ref changed since, it writes the entity's current body or deletes its file,
then stores the new position. Replaying a change is harmless, so a crash between the DB commit
and the file writes is repaired by the next call.

Every write is atomic (a temp file in the same directory, fsync, rename): Backstage reads the old
file or the new one, never a part. Temp files start with a dot and end in `.tmp`, so the glob
never matches them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml

from choreo_ingest.errors import ConfigError
from choreo_ingest.files import TEMP_SUFFIX, make_directories, replace_atomically
from choreo_ingest.store import Store
from choreo_ingest.store.queries import EntityLocation

log = structlog.get_logger("choreo_ingest.mirror")

BATCH_SIZE = 1000
"""Change log rows read (and files touched) between two stored positions."""
FILE_MODE = 0o644  # Backstage usually runs as another user
DIRECTORY_MODE = 0o755
_MAX_FILE_NAME_BYTES = 255


@dataclass(frozen=True)
class MirrorStats:
    written: int
    deleted: int
    position: int
    """The change log sequence number the directory now reflects."""
    unchanged: int = 0
    """Files that already held the entity's current YAML (not rewritten)."""
    skipped: int = 0
    """Entities whose kind, namespace or name cannot be a file name (see the log)."""
    rebuilt: bool = False


def position_name(directory: Path) -> str:
    """The stored position of the mirror in `directory` (another directory starts afresh)."""
    return f"mirror:{directory.resolve()}"


def sync_mirror(store: Store, directory: Path, *, batch_size: int = BATCH_SIZE) -> MirrorStats:
    """Bring `directory` up to date with the change log since the stored position.

    A directory never synced (or a position past the end of the log, as after restoring an older
    state file) is rebuilt from scratch instead. Raises ConfigError (`catalog.directory`) when the
    directory cannot be written.
    """
    name = position_name(directory)
    position = store.get_position(name)
    if position == 0 or position > store.last_change_seq() or not directory.is_dir():
        return rebuild_mirror(store, directory)
    writer = _Writer(directory)
    with _file_errors(directory):
        while changes := store.changes(position, batch_size):
            for ref in dict.fromkeys(change.ref for change in changes):
                location = store.entity_location(ref)
                if location is None:
                    writer.delete(ref)
                else:
                    writer.write(location)
            writer.flush()
            position = changes[-1].seq
            store.set_position(name, position)
            if len(changes) < batch_size:
                break
    return writer.stats(position)


def rebuild_mirror(store: Store, directory: Path) -> MirrorStats:
    """Write every entity, delete every mirror file the catalog does not hold, store the position.

    Only `<directory>/*/*/*.yaml` files (and this module's own leftover temp files) are touched.
    """
    position = store.last_change_seq()  # taken first: later changes are replayed by the next sync
    writer = _Writer(directory)
    with _file_errors(directory):
        make_directories(directory, DIRECTORY_MODE)
        for location in store.iter_entity_locations():
            writer.write(location)
        for path in sorted(directory.glob("*/*/*.yaml")):
            kind, namespace = path.parent.parent.name, path.parent.name
            if store.entity_location(f"{kind}:{namespace}/{path.stem}") is None:
                writer.remove(path)
        for leftover in directory.glob(f"*/*/.*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)
        writer.flush()
    store.set_position(position_name(directory), position)
    log.info("mirror_rebuilt", directory=str(directory), position=position)
    return writer.stats(position, rebuilt=True)


def entity_yaml(body: Any) -> bytes:
    """One entity as a YAML document, keys in the stored order, readable by YAML 1.1 and 1.2."""
    text = yaml.dump(body, Dumper=_Yaml12SafeDumper, sort_keys=False, allow_unicode=True)
    return text.encode("utf-8")


def mirror_path(directory: Path, kind: str, namespace: str, name: str) -> Path | None:
    """Where the entity's file goes; None when a part cannot be a single file name."""
    parts = (kind.lower(), namespace, f"{name}.yaml")
    if not all(_is_file_name(part) for part in parts):
        return None
    return directory.joinpath(*parts)


def _is_file_name(part: str) -> bool:
    # A leading dot would hide the file from the glob (and is how temp files are told apart).
    return (
        bool(part)
        and not part.startswith(".")
        and "/" not in part
        and "\0" not in part
        and len(part.encode()) <= _MAX_FILE_NAME_BYTES - len(TEMP_SUFFIX) - 16
    )


class _Writer:
    """Writes and deletes mirror files, counting them; `flush()` makes the renames durable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written = self.unchanged = self.deleted = self.skipped = 0
        self._touched: set[Path] = set()

    def write(self, location: EntityLocation) -> None:
        path = mirror_path(self.directory, location.kind, location.namespace, location.name)
        if path is None:
            self._skip(f"{location.kind}:{location.namespace}/{location.name}")
            return
        data = entity_yaml(location.body)
        with suppress(FileNotFoundError):
            if path.read_bytes() == data:
                self.unchanged += 1
                return
        if not path.parent.is_dir():
            make_directories(path.parent, DIRECTORY_MODE)
            self._touched.update((path.parent.parent, self.directory))
        replace_atomically(path, data, FILE_MODE)
        self._touched.add(path.parent)
        self.written += 1

    def delete(self, ref: str) -> None:
        kind, _, rest = ref.partition(":")
        namespace, _, name = rest.partition("/")
        path = mirror_path(self.directory, kind, namespace, name)
        if path is None:
            self._skip(ref)
            return
        self.remove(path)

    def remove(self, path: Path) -> None:
        with suppress(FileNotFoundError):
            path.unlink()
            self._touched.add(path.parent)
            self.deleted += 1

    def flush(self) -> None:
        _fsync_directories(self._touched)
        self._touched.clear()

    def stats(self, position: int, *, rebuilt: bool = False) -> MirrorStats:
        return MirrorStats(
            written=self.written,
            deleted=self.deleted,
            position=position,
            unchanged=self.unchanged,
            skipped=self.skipped,
            rebuilt=rebuilt,
        )

    def _skip(self, ref: str) -> None:
        self.skipped += 1
        log.warning("mirror_entity_skipped", ref=ref, reason="not usable as a file path")


def _fsync_directories(directories: Iterable[Path]) -> None:
    """Make renames and unlinks in `directories` durable before the position moves past them."""
    for directory in directories:
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@contextmanager
def _file_errors(directory: Path) -> Iterator[None]:
    """Turn an OSError into a ConfigError naming `catalog.directory`."""
    try:
        yield
    except OSError as error:
        where = error.filename or directory
        raise ConfigError(
            f"cannot update the YAML mirror at {where}: {error.strerror or error}",
            path="catalog.directory",
        ) from error


# YAML 1.2 (what Backstage's parser reads) takes some plain scalars as numbers that YAML 1.1 (what
# PyYAML writes) takes as text: `1e3`, `1.5e3`, `0o17`. Teaching the dumper those patterns makes it
# quote such strings, so a name like `1e3` stays a string in Backstage.
class _Yaml12SafeDumper(yaml.SafeDumper):
    pass


_Yaml12SafeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)
_Yaml12SafeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:0o[0-7]+|0x[0-9a-fA-F]+)$"), ["0"]
)
