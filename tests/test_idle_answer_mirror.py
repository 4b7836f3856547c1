"""The kept answer of a `run` with nothing due, with a YAML mirror (`catalog.directory`): taken
while the mirror is as the run that kept it found it (its directory, its marker, the entity file
that said it holds some), and never over a mirror emptied, replaced or unmarked since, which the
full run then mends as it always has."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_idle import resting_state, write_config
from test_idle_answer import ask, clock_at_now, idle_run, kept, kept_path, now

from choreo_ingest import idle
from choreo_ingest.cli.lean import lean_main
from choreo_ingest.config import load_config
from choreo_ingest.idle import Keeping, run_if_idle
from choreo_ingest.mirror_marker import MARKER, first_entity_file
from choreo_ingest.store import SqliteLocation


def entity_files(catalog: Path) -> list[Path]:
    return sorted(catalog.glob("*/*/*.yaml"))


@pytest.fixture
def mirrored(tmp_path: Path) -> Path:
    """A config with a mirror in step with a resting state, and the answer its idle run kept."""
    config_file = write_config(tmp_path, catalog={"directory": "catalog"})
    resting_state(load_config(config_file), clock_at_now())
    idle_run(config_file)  # the mirror is in step already: the cycle's run wrote it
    assert entity_files(tmp_path / "catalog")
    assert kept_path(config_file).exists()
    return config_file


def test_a_mirror_in_step_is_answered_from_the_kept_answer(mirrored: Path) -> None:
    catalog = mirrored.parent / "catalog"
    files_before = {path: path.read_bytes() for path in entity_files(catalog)}
    textfile = mirrored.parent / "metrics.prom"
    textfile.unlink()

    assert ask(mirrored) is True

    assert textfile.exists()
    assert {path: path.read_bytes() for path in entity_files(catalog)} == files_before
    watched = [path for path, _ in kept(mirrored)["files"]]
    assert watched == [str(catalog), str(catalog / MARKER), first_entity_file(catalog)]


def remove_the_marker(catalog: Path) -> None:
    (catalog / MARKER).unlink()


def touch_the_marker(catalog: Path) -> None:
    (catalog / MARKER).write_bytes((catalog / MARKER).read_bytes())


def empty_it_but_the_marker(catalog: Path) -> None:
    for kind in catalog.iterdir():
        if kind.is_dir():  # `rm -r catalog/*`: the shell's glob skips the dot file
            shutil.rmtree(kind)


def remove_the_first_entity_file(catalog: Path) -> None:
    first = first_entity_file(catalog)
    assert first is not None
    Path(first).unlink()


def replace_the_directory(catalog: Path) -> None:
    """A volume mounted over it, or the directory moved aside and made again empty."""
    catalog.rename(catalog.with_name("catalog.old"))
    catalog.mkdir()


CHANGES = pytest.mark.parametrize(
    "change",
    [
        remove_the_marker,
        touch_the_marker,
        empty_it_but_the_marker,
        remove_the_first_entity_file,
        replace_the_directory,
    ],
)


@CHANGES
def test_a_mirror_changed_since_is_decided_afresh(
    mirrored: Path, change: Callable[[Path], None]
) -> None:
    change(mirrored.parent / "catalog")

    assert ask(mirrored) is False


@pytest.mark.parametrize("change", [empty_it_but_the_marker, replace_the_directory])
def test_the_run_that_decides_afresh_mends_the_mirror_as_before(
    mirrored: Path, change: Callable[[Path], None]
) -> None:
    catalog = mirrored.parent / "catalog"
    held = [path.relative_to(catalog) for path in entity_files(catalog)]
    change(catalog)

    assert lean_main(["--config", str(mirrored), "run"]) == 0

    assert [path.relative_to(catalog) for path in entity_files(catalog)] == held
    idle_run(mirrored)
    assert ask(mirrored) is True  # in step again: answered again


def test_what_the_mirror_was_is_taken_before_the_decision_reads_it(
    mirrored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror emptied while the run decides (after its last look, at the end of the answer's
    time, before the answer is written) is not covered by that answer: it holds what the mirror
    was before the decision read it."""
    catalog = mirrored.parent / "catalog"
    decided, looks = idle.nothing_to_do, []

    def emptied_meanwhile(*args: Any) -> bool:
        found = decided(*args)
        looks.append(found)
        if len(looks) == 2:  # now and at the answer's end (`_answer_to_keep`)
            empty_it_but_the_marker(catalog)
        return found

    monkeypatch.setattr(idle, "nothing_to_do", emptied_meanwhile)
    config = load_config(mirrored)
    keeping = Keeping(str(mirrored), list(kept(mirrored)["identity"]))
    state = SqliteLocation(mirrored.parent / "state.db")
    assert run_if_idle(config, state, clock_at_now(), keeping) is True

    assert looks == [True, True]
    assert kept_path(mirrored).exists()
    assert ask(mirrored, at=now()) is False


def test_a_config_that_adds_a_mirror_ends_the_answer_kept_without_one(tmp_path: Path) -> None:
    config_file = write_config(tmp_path)
    resting_state(load_config(config_file), clock_at_now())
    idle_run(config_file)
    assert ask(config_file) is True
    document = yaml.safe_load(config_file.read_text())

    config_file.write_text(yaml.safe_dump({**document, "catalog": {"directory": "catalog"}}))

    assert ask(config_file) is False
    assert lean_main(["--config", str(config_file), "run"]) == 0  # mirrors the catalog
    assert entity_files(tmp_path / "catalog")


def marked_without_files(catalog: Path) -> None:
    """The mirror of a catalog with no entities, in step: no entity file, a marker that says so."""
    empty_it_but_the_marker(catalog)
    marker = json.loads((catalog / MARKER).read_text())
    (catalog / MARKER).write_text(json.dumps({**marker, "files": False}))


def test_a_mirror_without_an_entity_file_keeps_no_answer(mirrored: Path) -> None:
    """In step, but with no file to watch: an entity file written while the run decided could
    be what it found in step, and then go unseen."""
    marked_without_files(mirrored.parent / "catalog")

    idle_run(mirrored)  # nothing due, the mirror in step

    assert not kept_path(mirrored).exists()  # the answer kept before is gone too
    assert ask(mirrored) is False


def test_entity_files_written_while_the_run_decides_are_not_taken_on_trust(
    mirrored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No entity file when the run looked (its marker says it held some), the files back when
    it decided (written meanwhile by something else): no answer may hide that they go again."""
    catalog = mirrored.parent / "catalog"
    files = {path: path.read_bytes() for path in entity_files(catalog)}
    for path in files:
        path.unlink()
    looked = idle.mirror_identities

    def files_back_meanwhile(*args: Any) -> Any:
        found = looked(*args)
        for path, data in files.items():
            path.write_bytes(data)
        return found

    monkeypatch.setattr(idle, "mirror_identities", files_back_meanwhile)
    idle_run(mirrored)  # in step when it decided
    monkeypatch.setattr(idle, "mirror_identities", looked)
    for path in files:
        path.unlink()

    assert ask(mirrored) is False  # the full run says the mirror was emptied, and mends it


@pytest.mark.parametrize("with_files", [True, False], ids=["files", "no-files"])
def test_an_entry_that_cannot_be_looked_at_is_passed_over(mirrored: Path, with_files: bool) -> None:
    """A symlink loop in the mirror (`is_dir` raises ELOOP) is no file of the mirror's: the
    idle run neither fails on it (exit 1, `a bug`) nor takes it for an entity."""
    catalog = mirrored.parent / "catalog"
    if not with_files:
        marked_without_files(catalog)
    (catalog / "aaa").symlink_to("aaa")
    (catalog / "component").mkdir(exist_ok=True)
    (catalog / "component" / "zz-loop").symlink_to("zz-loop")

    assert lean_main(["--config", str(mirrored), "run"]) == 0

    assert kept_path(mirrored).exists() is with_files
