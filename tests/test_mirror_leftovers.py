"""What the mirror leaves behind: no temp file outlives the write after the run killed while
writing it, and no directory outlives the last file in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.config import Config
from choreo_ingest.invocation import locked_store, run_once
from choreo_ingest.mirror import rebuild_mirror, sync_mirror
from choreo_ingest.mirror_marker import MARKER
from choreo_ingest.models import Delta, Entity, EntityIteratorResult
from choreo_ingest.store import position_name

from fakes import FakeClock, FakeProvider, make_entity
from mirror_support import exported, mirror_config, mirrored, run_cycle

TEMP_DIRECTORY = ".choreo-ingest-tmp"
"""Where the mirror stages its files (README: the YAML mirror)."""

KILLED_AT_STEP = """
import os, signal, sys
from pathlib import Path
from choreo_ingest.mirror import rebuild_mirror, sync_mirror
from choreo_ingest.store import Store

state, catalog, kill_at, command = sys.argv[1:]
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT
steps = 0

def step(event, args):
    global steps
    if event == "open":
        counted = str(args[0]).startswith(catalog) and args[2] & WRITES
    else:
        counted = event == "choreo.position" or (
            event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.chmod")
            and str(args[0]).startswith(catalog)
        )
    if counted:
        steps += 1
        if str(steps) == kill_at or event == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

with Store.open(Path(state)) as store:
    set_position = store.set_position
    def audited(name, value):
        sys.audit("choreo.position")
        set_position(name, value)
    store.set_position = audited
    sys.addaudithook(step)
    if command == "rebuild":
        rebuild_mirror(store, Path(catalog), batch_size=2)
    else:
        sync_mirror(store, Path(catalog), cancelled=lambda: False, batch_size=2)
"""
"""Runs a mirror write (`sync`, as `run` does, or `rebuild`) in batches of two files, SIGKILLed
before its `kill_at`-th step (or its first of the event `kill_at` names): a file opened for
writing, a rename, an unlink, a directory made, given its mode or removed, the position stored.
Exits 0 when the write has fewer steps."""


def never() -> bool:
    return False


def described(entity: Entity, description: str) -> Entity:
    metadata = {**entity.body["metadata"], "description": description}
    return replace(entity, body={**entity.body, "metadata": metadata})


def commit_without_mirror(
    state_path: Path, clock: FakeClock, entities: Sequence[Entity], removals: Sequence[str]
) -> None:
    """Changes in the store and its change log that the mirror has yet to write."""
    page = EntityIteratorResult(done=False, entities=entities)
    with locked_store(state_path) as store:
        store.commit_page("fake", 1, page, None, clock.now())
        store.apply_delta("fake", 1, Delta(removals=removals), clock.now())


def every_file(directory: Path) -> list[str]:
    """Every file below `directory` (hidden ones too) but the marker."""
    found = (p for p in directory.rglob("*") if not p.is_dir() and p.name != MARKER)
    return sorted(p.relative_to(directory).as_posix() for p in found)


def empty_directories(directory: Path) -> list[str]:
    """The empty directories below `directory`, but its temp directory."""
    found = (p for p in directory.rglob("*") if p.is_dir() and not any(p.iterdir()))
    return sorted(p.relative_to(directory).as_posix() for p in found if p.name != TEMP_DIRECTORY)


def killed_write(
    state_path: Path, catalog: Path, kill_at: int | str, command: str
) -> subprocess.CompletedProcess[bytes]:
    arguments = [str(state_path), str(catalog), str(kill_at), command]
    return subprocess.run([sys.executable, "-c", KILLED_AT_STEP, *arguments], check=False)


OLD = [
    make_entity("a"),
    make_entity("b"),
    make_entity("p", namespace="preview-1"),
    make_entity("x", kind="API", namespace="preview-1"),
]
CHANGED = [described(make_entity("a"), "v2"), make_entity("n", namespace="preview-2")]
REMOVED = ["component:preview-1/p", "api:preview-1/x"]


@dataclass
class Scenario:
    """A mirror in step with OLD, and a store that has since changed `a`, added `n` in a new
    namespace and removed both entities of `preview-1` (the last of kind API)."""

    config: Config
    state_path: Path
    catalog: Path
    old: dict[str, Any]
    new: dict[str, Any]


@pytest.fixture
def scenario(tmp_path: Path, clock: FakeClock) -> Scenario:
    (tmp_path / "work").mkdir()
    config = mirror_config(tmp_path / "work")
    assert config.state_path is not None
    assert config.catalog_directory is not None
    run_cycle(config, clock, OLD)
    old = mirrored(config.catalog_directory)
    commit_without_mirror(config.state_path, clock, CHANGED, REMOVED)
    new = exported(config.state_path)
    assert sorted(old) != sorted(new)
    return Scenario(config, config.state_path, config.catalog_directory, old, new)


def assert_in_step(scenario: Scenario) -> None:
    """The files are the store's entities, one each, and nothing else: no temp file, no empty
    directory."""
    assert mirrored(scenario.catalog) == scenario.new
    assert every_file(scenario.catalog) == sorted(scenario.new)
    assert empty_directories(scenario.catalog) == []
    assert not list((scenario.catalog / TEMP_DIRECTORY).iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sync", "rebuild"], ids=["run", "mirror-rebuild"])
def test_a_kill_between_any_two_steps_of_a_write_loses_nothing_and_the_next_write_cleans_up(
    tmp_path: Path, scenario: Scenario, command: str
) -> None:
    """Killed before each step in turn, the write leaves Backstage each entity's old file or its
    new one (never none, never a temp file); the next run's write then leaves the store's
    entities, one file each, and nothing else."""
    template = tmp_path / "template"
    work = scenario.state_path.parent
    assert scenario.catalog.parent == work
    shutil.copytree(work, template)
    kills = 0
    for kill_at in range(1, 100):
        shutil.rmtree(work)
        shutil.copytree(template, work)  # the same paths: the stored position is the mirror's

        killed = killed_write(scenario.state_path, scenario.catalog, kill_at, command)

        if killed.returncode == 0:
            break
        assert killed.returncode == -9
        kills += 1
        seen = mirrored(scenario.catalog)
        assert all(seen[path] in (scenario.old.get(path), scenario.new.get(path)) for path in seen)
        assert set(scenario.old) & set(scenario.new) <= set(seen), f"lost at step {kill_at}"
        with locked_store(scenario.state_path) as store:
            sync_mirror(store, scenario.catalog, cancelled=never)
            assert store.get_position(position_name(scenario.catalog)) == store.last_change_seq()
        assert_in_step(scenario)
    assert kills >= 17, "every step of the write was killed once"
    assert killed.returncode == 0
    assert_in_step(scenario)


@pytest.mark.slow
@pytest.mark.parametrize("then", ["run", "mirror"])
def test_a_rebuild_of_an_emptied_directory_killed_at_any_step_is_finished_by_the_next_write(
    tmp_path: Path, scenario: Scenario, then: str
) -> None:
    """The volume was remounted empty (marker and all), and `mirror`, rebuilding it, is killed
    (or meets a full disk) after some files: the directory is not taken for complete, one the
    state vouches for, by the next `run` (which replays the log from its start) or `mirror`
    (which rebuilds again)."""
    shutil.rmtree(scenario.catalog)
    template = tmp_path / "template"
    work = scenario.state_path.parent
    shutil.copytree(work, template)
    kills = 0
    for kill_at in range(1, 100):
        shutil.rmtree(work)
        shutil.copytree(template, work)

        killed = killed_write(scenario.state_path, scenario.catalog, kill_at, "rebuild")

        if killed.returncode == 0:
            break
        kills += 1
        with locked_store(scenario.state_path) as store:
            cancelled = never if then == "run" else None
            sync_mirror(store, scenario.catalog, cancelled=cancelled)
        assert mirrored(scenario.catalog) == scenario.new, f"killed at step {kill_at}"
    assert kills >= 8, "every step of the rebuild was killed once"


@pytest.mark.slow
def test_temp_files_of_a_run_killed_mid_write_are_gone_after_the_next_run(
    scenario: Scenario, clock: FakeClock
) -> None:
    """Killed before its first rename, a write leaves a batch of temp files; releases before
    the temp directory kept them until `mirror --rebuild`."""
    killed = killed_write(scenario.state_path, scenario.catalog, "os.rename", "sync")
    assert killed.returncode == -9
    assert len(list(scenario.catalog.rglob("*.tmp"))) == 2, "a batch of two"

    result = run_once(
        scenario.config, scenario.state_path, clock, providers={"fake": FakeProvider(OLD)}
    )

    assert result.error is None
    assert list(scenario.catalog.rglob("*.tmp")) == []
    assert_in_step(scenario)


class TestDirectories:
    def test_a_namespace_loses_its_directory_with_its_last_entity_and_a_kind_with_its_last(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Short-lived namespaces (a preview per pull request) left their directories behind."""
        config = mirror_config(tmp_path)
        run_cycle(config, clock, OLD)

        run_cycle(config, clock, OLD[:2])

        catalog = tmp_path / "catalog"
        assert sorted(p.name for p in catalog.iterdir()) == sorted(
            [TEMP_DIRECTORY, MARKER, "component"]
        )
        assert [p.name for p in (catalog / "component").iterdir()] == ["default"]

    def test_a_directory_holding_a_file_the_mirror_did_not_write_stays(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        run_cycle(config, clock, OLD)
        notes = tmp_path / "catalog/component/preview-1/README.md"
        notes.write_text("kept by a person\n")

        run_cycle(config, clock, OLD[:2])

        assert every_file(tmp_path / "catalog") == [
            "component/default/a.yaml",
            "component/default/b.yaml",
            "component/preview-1/README.md",
        ]
        assert not (tmp_path / "catalog/api").exists()

    def test_rebuild_removes_empty_directories_but_none_holding_anything(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Directories a release before this one left empty, or emptied by a stray's removal;
        not the root, the temp directory, deeper directories or those with other files."""
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, OLD[:2])
        catalog = tmp_path / "catalog"
        for empty in ("component/preview-0", "system", "deep/er/than"):
            (catalog / empty).mkdir(parents=True)
        for relative in ("api/gone/stray.yaml", "notes/README.md"):
            (catalog / relative).parent.mkdir(parents=True)
            (catalog / relative).write_text("kind: Stray\n")

        with locked_store(config.state_path) as store:
            stats = rebuild_mirror(store, catalog)

        assert stats.deleted == 1
        assert sorted(p.name for p in catalog.iterdir()) == sorted(
            [TEMP_DIRECTORY, MARKER, "component", "deep", "notes"]
        )
        assert [p.name for p in (catalog / "component").iterdir()] == ["default"]
        assert empty_directories(catalog) == ["deep/er/than"]

    def test_rebuild_of_a_mirror_left_empty_keeps_its_root(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, OLD[:1])
        catalog = tmp_path / "catalog"
        commit_without_mirror(config.state_path, clock, [], ["component:default/a"])

        with locked_store(config.state_path) as store:
            rebuild_mirror(store, catalog)

        assert sorted(p.name for p in catalog.iterdir()) == sorted([TEMP_DIRECTORY, MARKER])


def test_rebuild_removes_the_temp_files_of_killed_writes_of_this_release_and_earlier_ones(
    scenario: Scenario,
) -> None:
    """Earlier releases staged `.<name>.<random>.tmp` beside the files; this one stages them in
    the temp directory."""
    left = [
        "component/default/.a.yaml.x1y2z3w4.tmp",
        f"{TEMP_DIRECTORY}/a.yaml.k2v9q1x8.tmp",
        f"{TEMP_DIRECTORY}/n.yaml.a8b7c6d5.tmp",
    ]
    for relative in left:
        (scenario.catalog / relative).parent.mkdir(exist_ok=True)
        (scenario.catalog / relative).write_text("kind: Half\n")

    with locked_store(scenario.state_path) as store:
        rebuild_mirror(store, scenario.catalog)

    assert_in_step(scenario)
