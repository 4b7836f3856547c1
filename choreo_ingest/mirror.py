"""The YAML mirror: one file per catalog entity, for a Backstage `file` location with a glob.

Files live at `<directory>/<kind, lower-cased>/<namespace>/<name>.yaml`, so the glob
`<directory>/*/*/*.yaml` finds them all. The mirror follows the store's change log from a stored
position: for every ref changed since, it writes the entity's current body or deletes its file,
then stores the new position. Replaying a change is harmless, so a crash between the DB commit
and the file writes is repaired by the next call.

Every write is atomic (a temp file renamed over the target): Backstage reads the old file or the
new one, never a part. A batch of changes costs two disk flushes whatever its size
(`files.DurableBatch`): the new contents reach the disk before any rename, the renames before
the position moves past them. Temp files wait in `<directory>/.choreo-ingest-tmp/`, which the
glob never matches (a hidden directory, one level deep, files ending in `.tmp`); what a killed
run left there goes when the next run writes. A namespace's directory goes with its last file,
and a kind's with its last namespace.

A run gives the mirror what is left of its time (`cancelled`): it stops between two entities,
makes what it wrote durable, stores how far that covers, and the next run carries on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.representer import SafeRepresenter

from choreo_ingest.errors import ConfigError
from choreo_ingest.files import TEMP_SUFFIX, DurableBatch, make_directories
from choreo_ingest.logs import get_logger
from choreo_ingest.mirror_marker import Marker, holds_entity_files, mark, read_marker
from choreo_ingest.store import ChangeRow, Store, position_name
from choreo_ingest.store.queries import EntityLocation

log = get_logger("choreo_ingest.mirror")

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
    caught_up: bool = True
    """False when `cancelled` stopped the call before the end of the change log."""


def sync_mirror(
    store: Store,
    directory: Path,
    *,
    cancelled: Callable[[], bool] | None = None,
    batch_size: int = BATCH_SIZE,
) -> MirrorStats:
    """Bring `directory` up to date with the change log since the stored position.

    Raises ConfigError (`catalog.directory`) when the directory cannot be written.

    Unbounded (`cancelled` None, as `choreo-ingest mirror` calls it), a directory never synced,
    missing, or whose files the state cannot vouch for (`mirror_marker`: emptied, or restored
    apart from the state) is rebuilt.

    Bounded, `cancelled()` is asked before each entity; once it is true, the files written so far
    are made durable, the position moves to the last change they cover, and the stats say
    `caught_up=False`. A bounded call never rebuilds, since a rebuild cannot stop halfway and
    carry on later (it learns which files to delete only once it has written them all): it
    replays the change log from its start instead, which writes every entity the store holds and
    stops and resumes like any sync. Files of entities the store does not hold are left to
    `mirror --rebuild`.

    Bounded or not, when changes the directory has yet to apply were pruned (it was set up, or
    configured again, after the change log lost its start), only a rebuild brings it up to date,
    and it is rebuilt. `feed.prune_change_log` keeps what a configured mirror has yet to apply.
    """
    name = position_name(directory)
    position = store.get_position(name)
    pruned_through, last = store.change_bounds()
    missing = not directory.is_dir()
    marker = Marker("directory missing") if missing else read_marker(directory, store, last)
    problem = marker.problem
    from_start = position == 0 or position > last or problem is not None
    # Replayed over files this state cannot vouch for: those of entities it does not hold stay.
    stray = marker.stray or (problem is not None and not missing and holds_entity_files(directory))
    if not from_start and marker.position is not None and marker.position < position:
        position = marker.position  # the directory stands behind: from there
    if (0 if from_start else position) < pruned_through:
        if cancelled is not None or not from_start:
            log.warning(
                "mirror_rebuilt_after_pruning",
                directory=str(directory),
                position=position,
                pruned_through=pruned_through,
                reason="changes the directory has yet to apply were pruned",
            )
        return rebuild_mirror(store, directory, batch_size=batch_size)
    if cancelled is None and (from_start or marker.stray):
        return rebuild_mirror(store, directory, batch_size=batch_size)
    # Said once: the marker keeps `stray` (no longer `rebuilding`) from the first replay on.
    if from_start and (position != 0 or (stray and (marker.rebuilding or not marker.stray))):
        log.warning(
            "mirror_replayed_from_start",
            directory=str(directory),
            reason=problem or _replay_reason(marker),
            position=position,
            last_change=last,
            advice="`choreo-ingest mirror` deletes the files of entities this state does not hold",
        )
    if from_start and position != 0:
        position = 0
        store.set_position(name, position)
    writer = _Writer(directory)
    caught_up = True
    marked = marker.position
    with _file_errors(directory), writer:
        make_directories(directory, DIRECTORY_MODE)
        while changes := store.changes(position, batch_size):
            covered, caught_up = _apply_changes(store, writer, changes, cancelled)
            store.check_lock()
            writer.flush()
            if covered is not None:
                position = marked = covered
                mark(directory, store, position, stray=stray)  # before the state: a kill
                store.set_position(name, position)  # between the two replays changes
            if not caught_up or len(changes) < batch_size:
                break
        if marked != position or stray != marker.stray or marker.rebuilding:  # before the
            mark(directory, store, position, stray=stray)  # marker, a new one, or now said
    return writer.stats(position, caught_up=caught_up)


def rebuild_after_renewal(directory: Path | None, store: Store) -> None:
    """The YAML mirror in use, rebuilt after `reset --purge` or `--forget` renewed the store id:
    else the next run, finding the directory marked with the old id, replays it from the start
    and warns (a cron mail for what the operator just did). A failure is said, and left to that
    run."""
    if directory is None or not directory.is_dir():
        return
    try:
        sync_mirror(store, directory)
    except ConfigError as error:  # the directory cannot be written
        log.warning("mirror_not_written", error=str(error), advice="run `choreo-ingest mirror`")


def _replay_reason(marker: Marker) -> str:
    return "a rebuild did not finish" if marker.rebuilding else "position past the end of the log"


def _apply_changes(
    store: Store,
    writer: _Writer,
    changes: Sequence[ChangeRow],
    cancelled: Callable[[], bool] | None,
) -> tuple[int | None, bool]:
    """Write or delete the file of each ref in `changes`, once each, in the order of its last
    change, until `cancelled()`. Returns the last seq all of whose refs are done (None for none
    of them) and whether every change was applied.

    In the order of the last changes, a ref removed while another spelling of it lives on (an
    API renamed only in case: the store logs the live one again after the removal) has its file
    deleted before the live one's is written, which on a filesystem that folds case is the same
    file. A ref not yet done has a change after the last seq done, so a run that stops between
    two refs leaves nothing behind the position it stores: replayed, that change writes the
    entity as it is then."""
    last: dict[str, int] = {}
    for change in changes:
        last.pop(change.ref, None)  # a dict keeps the order of insertion: of the last changes
        last[change.ref] = change.seq
    covered = None
    for ref, seq in last.items():
        if cancelled is not None and cancelled():
            return covered, False
        location = store.entity_location(ref)
        if location is None:
            writer.delete(ref)
        else:
            writer.write(location)
        covered = seq
    return covered, True


def rebuild_mirror(store: Store, directory: Path, *, batch_size: int = BATCH_SIZE) -> MirrorStats:
    """Write every entity, delete every mirror file the catalog does not hold, store the position.

    Only `<directory>/*/*/*.yaml` files, this module's own leftover temp files and empty
    `<kind>/<namespace>/` and `<kind>/` directories are touched. Unbounded: it runs to the end
    (`choreo-ingest mirror`), committing every `batch_size` files so that no more temp files
    than that wait for their rename.
    """
    position = store.last_change_seq()  # taken first: later changes are replayed by the next sync
    writer = _Writer(directory)
    with _file_errors(directory), writer:
        make_directories(directory, DIRECTORY_MODE)
        # Until its last file is written, the directory stands at the log's start: a rebuild
        # stopped halfway (a kill, a full disk) is replayed or rebuilt by the next call, never
        # taken for complete (files and no marker: a directory an earlier release mirrored).
        mark(directory, store, 0, rebuilding=True)
        store.set_position(position_name(directory), 0)
        for leftover in directory.glob(f"*/*/.*{TEMP_SUFFIX}"):  # beside the files: releases
            leftover.unlink(missing_ok=True)  # before the temp directory left them there
        for location in store.iter_entity_locations():
            writer.write(location)
            if writer.pending >= batch_size:
                store.check_lock()
                writer.flush()
        for path in sorted(directory.glob("*/*/*.yaml")):
            kind, namespace = path.parent.parent.name, path.parent.name
            if store.entity_location(f"{kind}:{namespace}/{path.stem}") is None:
                writer.remove(path)
        for kind_directory in _subdirectories(directory):  # also those emptied before
            writer.remove_if_empty(kind_directory)
            for namespace_directory in _subdirectories(kind_directory):
                writer.remove_if_empty(namespace_directory)
        store.check_lock()
        writer.flush()
        mark(directory, store, position)
    store.set_position(position_name(directory), position)
    log.info("mirror_rebuilt", directory=str(directory), position=position)
    return writer.stats(position, rebuilt=True)


def _subdirectories(directory: Path) -> list[Path]:
    """The directories in `directory`, but hidden ones (the temp directory) and symlinks."""
    with os.scandir(directory) as entries:
        return [
            Path(entry.path)
            for entry in entries
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
        ]


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
    # A leading dot would hide the file from the glob (and could name the temp directory).
    return (
        bool(part)
        and not part.startswith(".")
        and "/" not in part
        and "\0" not in part
        and len(part.encode()) <= _MAX_FILE_NAME_BYTES - len(TEMP_SUFFIX) - 16
    )


class _Writer:
    """Writes and deletes mirror files, counting them; `flush()` makes them durable and visible.

    Entering its block deletes the temp files killed writers left; leaving it with an exception
    deletes those not yet renamed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written = self.unchanged = self.deleted = self.skipped = 0
        self._batch = DurableBatch(directory, FILE_MODE, DIRECTORY_MODE)

    @property
    def pending(self) -> int:
        return self._batch.pending

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
        self._batch.replace(path, data)
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
        if self._batch.remove(path):
            self.deleted += 1

    def remove_if_empty(self, directory: Path) -> None:
        self._batch.remove_if_empty(directory)

    def flush(self) -> None:
        self._batch.commit()

    def stats(self, position: int, *, rebuilt: bool = False, caught_up: bool = True) -> MirrorStats:
        return MirrorStats(
            written=self.written,
            deleted=self.deleted,
            position=position,
            unchanged=self.unchanged,
            skipped=self.skipped,
            rebuilt=rebuilt,
            caught_up=caught_up,
        )

    def __enter__(self) -> _Writer:
        self._batch.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._batch.__exit__(*exc_info)

    def _skip(self, ref: str) -> None:
        self.skipped += 1
        log.warning("mirror_entity_skipped", ref=ref, reason="not usable as a file path")


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


# libyaml's emitter where PyYAML has it, as its wheels do: the pure-Python one took 400 s to write
# 500,000 entities (`export --format yaml`, a first mirror), this one about 5 times less. The
# resolvers and representers below are Python either way.
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# YAML 1.2 (what Backstage's parser reads) takes some plain scalars as numbers that YAML 1.1 (what
# PyYAML writes) takes as text: `1e3`, `1.5e3`, `0o17`. Teaching the dumper those patterns makes it
# quote such strings, so a name like `1e3` stays a string in Backstage.
class _Yaml12SafeDumper(_SafeDumper):  # type: ignore[misc,valid-type]
    pass


_Yaml12SafeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)
_Yaml12SafeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:0o[0-7]+|0x[0-9a-fA-F]+)$"), ["0"]
)
# YAML 1.1's own booleans that PyYAML leaves out: a parser in 1.1 mode (Backstage's `yaml` can
# be set to it) reads a plain `y` or `n` as true or false.
_Yaml12SafeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN")
)


_UNICODE_BREAKS = ("\x85", "\u2028", "\u2029")
"""NEL, LS and PS: line breaks to YAML. In a plain or single-quoted scalar they fold into spaces
(or end the quote), so a string holding one is written double-quoted, where they are escaped."""


def _represent_str(dumper: SafeRepresenter, text: str) -> yaml.ScalarNode:
    if any(brk in text for brk in _UNICODE_BREAKS):
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"')
    return dumper.represent_str(text)


_Yaml12SafeDumper.add_representer(str, _represent_str)
