"""The YAML mirror follows the change log: one file per entity, atomic writes, crash repair."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
import yaml
from typer.testing import CliRunner

from choreo_ingest import files
from choreo_ingest.cli.app import app
from choreo_ingest.errors import ConfigError, PermanentError
from choreo_ingest.invocation import locked_store, run_once
from choreo_ingest.mirror import (
    _apply_changes,
    _Yaml12SafeDumper,
    entity_yaml,
    mirror_path,
    position_name,
    rebuild_mirror,
    sync_mirror,
)
from choreo_ingest.mirror_marker import MARKER, mark
from choreo_ingest.models import Delta, Entity, EntityIteratorResult
from choreo_ingest.reporting import iter_export
from choreo_ingest.store import MIGRATION_NAMES, SCHEMA_VERSION, Store, SweepGuards
from choreo_ingest.store.migrations import apply_migrations
from choreo_ingest.store.run_lock import RunLock

from fakes import FakeClock, FakeProvider, make_config, make_entity
from mirror_support import (
    exported,
    mirror_config,
    mirrored,
    mirrored_after_one_cycle,
    run_cycle,
)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """The CLI binds logging to the stderr CliRunner closes afterwards; undo that."""
    yield
    structlog.reset_defaults()


def described(name: str, description: str, namespace: str = "default") -> Entity:
    entity = make_entity(name, namespace=namespace)
    body = {**entity.body, "metadata": {**entity.body["metadata"], "description": description}}
    return replace(entity, body=body)


def all_files(directory: Path) -> list[str]:
    """The files in `directory`, but its marker (`mirror_marker`, tested on its own)."""
    files = (p for p in directory.rglob("*") if p.is_file() and p.name != MARKER)
    return sorted(p.relative_to(directory).as_posix() for p in files)


def commit_without_mirror(
    state_path: Path, clock: FakeClock, entities: Sequence[Entity], removals: Sequence[str] = ()
) -> None:
    """What a run that died between its DB commit and its file writes leaves behind."""
    page = EntityIteratorResult(done=False, entities=entities)
    with locked_store(state_path) as store:
        store.commit_page("fake", 1, page, None, clock.now())
        store.apply_delta("fake", 1, Delta(removals=removals), clock.now())


def remounted_empty(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.mkdir()


def emptied_by_shell_glob(directory: Path) -> None:
    """`rm -r catalog/*`: every entry but those starting with a dot."""
    for entry in directory.iterdir():
        if not entry.name.startswith("."):
            shutil.rmtree(entry)


class TestFollowsTheCatalog:
    def test_files_equal_export_after_cycles_with_upserts_and_deletions(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        cycles = [
            [described(n, "v1") for n in ("a", "b", "c", "d", "e")],
            [described("a", "v2"), described("b", "v1"), described("d", "v1")],  # c, e removed
            [described("a", "v2"), described("f", "v1", namespace="acme"), described("c", "v3")],
        ]
        for entities in cycles:
            run_cycle(config, clock, entities)
            assert config.state_path is not None
            assert mirrored(tmp_path / "catalog") == exported(config.state_path)
        assert sorted(mirrored(tmp_path / "catalog")) == [
            "component/acme/f.yaml",
            "component/default/a.yaml",
            "component/default/c.yaml",
        ]
        assert mirrored(tmp_path / "catalog")["component/default/a.yaml"]["metadata"] == {
            "name": "a",
            "namespace": "default",
            "description": "v2",
        }

    def test_file_holds_one_document_with_the_body_in_stored_order(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        run_cycle(config, clock, [described("a", "Ünïcode ✓")])
        text = (tmp_path / "catalog/component/default/a.yaml").read_text(encoding="utf-8")
        assert len(list(yaml.safe_load_all(text))) == 1
        assert text.startswith("apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:")
        assert "Ünïcode ✓" in text

    @pytest.mark.parametrize(
        "name",
        ["my.service_v1", "a_b", "x.y.z", "UPPER.case", "1e3", "0o17"],
        ids=["dots-and-underscore", "underscore", "many-dots", "upper-case", "exponent", "octal"],
    )
    def test_awkward_names_get_their_own_file_and_lose_it_on_removal(
        self, tmp_path: Path, clock: FakeClock, name: str
    ) -> None:
        config = mirror_config(tmp_path)
        run_cycle(config, clock, [make_entity(name), make_entity("keep")])
        path = tmp_path / "catalog" / "component" / "default" / f"{name}.yaml"
        assert yaml.safe_load(path.read_text(encoding="utf-8"))["metadata"]["name"] == name
        run_cycle(config, clock, [make_entity("keep")])
        assert not path.exists()
        assert all_files(tmp_path / "catalog") == ["component/default/keep.yaml"]


class TestYaml:
    @pytest.mark.skipif(not yaml.__with_libyaml__, reason="this PyYAML was built without libyaml")
    def test_entities_are_written_with_libyaml_s_emitter_where_pyyaml_has_it(self) -> None:
        """PyYAML's wheels carry libyaml. Its pure-Python emitter took 400 s to write 500,000
        entities (`export --format yaml`, a first mirror): 610 us an entity, against 125 us.
        Backstage's parser reads both alike (integrations/backstage/test/mirrorYaml.test.ts)."""
        assert issubclass(_Yaml12SafeDumper, yaml.CSafeDumper)

    @pytest.mark.parametrize(
        "text",
        ["1e3", "1.5e3", "+.5", "0o17", "0x1F", "8080", "yes", "null", "1_000"],
        ids=["exponent", "float-exp", "signed-dot", "octal", "hex", "int", "bool", "null", "under"],
    )
    def test_strings_yaml_12_reads_as_numbers_are_quoted(self, text: str) -> None:
        dumped = entity_yaml({"metadata": {"name": text}}).decode()
        assert dumped == f"metadata:\n  name: '{text}'\n"
        assert yaml.safe_load(dumped) == {"metadata": {"name": text}}

    @pytest.mark.parametrize("text", ["y", "Y", "n", "N"])
    def test_yaml_11_one_letter_booleans_are_quoted(self, text: str) -> None:
        """PyYAML reads a plain `y` as text, YAML 1.1 as a boolean (a component named `y`)."""
        dumped = entity_yaml({"metadata": {"name": text}}).decode()
        assert dumped == f"metadata:\n  name: '{text}'\n"
        assert yaml.safe_load(dumped) == {"metadata": {"name": text}}

    @pytest.mark.parametrize(
        "text",
        ["Orders\u2028API", "Line one\x85Line two", "first\n\x85second", "a\u2029", "plain"],
        ids=["line-separator", "next-line", "newline-then-next-line", "paragraph", "plain"],
    )
    def test_unicode_line_breaks_survive_the_round_trip(self, text: str) -> None:
        """Written raw in a quoted scalar, NEL, LS and PS folded into spaces (or broke the file,
        and Backstage dropped the entity)."""
        body = {"metadata": {"name": "x", "title": text, "annotations": {"a/b": text}}}

        dumped = entity_yaml(body).decode()

        assert yaml.safe_load(dumped) == body
        assert not any(brk in dumped for brk in ("\x85", "\u2028", "\u2029"))

    @pytest.mark.parametrize(
        ("kind", "namespace", "name"),
        [
            ("Component", "default", ".hidden"),
            ("Component", "default", "../escape"),
            ("Component", "..", "x"),
            ("Component", "", "x"),
            ("Component", "default", "n" * 300),
        ],
        ids=["leading-dot", "slash", "dot-dot-namespace", "empty-namespace", "too-long"],
    )
    def test_parts_that_cannot_be_file_names_have_no_path(
        self, tmp_path: Path, kind: str, namespace: str, name: str
    ) -> None:
        assert mirror_path(tmp_path, kind, namespace, name) is None

    def test_kind_folder_is_lower_case(self, tmp_path: Path) -> None:
        assert mirror_path(tmp_path, "API", "acme", "pay-v1") == tmp_path / "api/acme/pay-v1.yaml"


class TestCrashRepair:
    def test_commit_without_file_writes_is_repaired_by_next_sync(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, [described(n, "v1") for n in ("a", "b", "c")])
        commit_without_mirror(
            config.state_path,
            clock,
            [described("a", "v2"), make_entity("z")],
            removals=["component:default/b"],
        )
        assert mirrored(tmp_path / "catalog") != exported(config.state_path)

        with locked_store(config.state_path) as store:
            stats = sync_mirror(store, tmp_path / "catalog")

        assert (stats.written, stats.deleted, stats.rebuilt) == (2, 1, False)
        assert mirrored(tmp_path / "catalog") == exported(config.state_path)

    def test_crash_before_position_is_stored_replays_harmlessly(
        self, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, [described(n, "v1") for n in ("a", "b", "c")])
        commit_without_mirror(
            config.state_path,
            clock,
            [described("a", "v2"), make_entity("z")],
            removals=["component:default/b"],
        )
        with locked_store(config.state_path) as store:
            before = store.get_position(position_name(tmp_path / "catalog"))

            def crash(name: str, value: int) -> None:
                raise KeyboardInterrupt

            monkeypatch.setattr(store, "set_position", crash)
            with pytest.raises(KeyboardInterrupt):
                sync_mirror(store, tmp_path / "catalog", batch_size=1)
            monkeypatch.undo()
            assert store.get_position(position_name(tmp_path / "catalog")) == before
            stats = sync_mirror(store, tmp_path / "catalog", batch_size=1)

        assert stats.position > before
        assert not stats.rebuilt  # the directory's marker, written first, is ahead: replayed
        assert mirrored(tmp_path / "catalog") == exported(config.state_path)

    def test_failed_run_still_mirrors_what_it_committed(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        provider = FakeProvider(
            [make_entity(n) for n in "abcd"], fail_at={1: PermanentError("upstream 400")}
        )
        result = run_once(config, config.state_path, clock, providers={"fake": provider})
        assert result.outcome == "failed"
        assert sorted(mirrored(tmp_path / "catalog")) == [
            "component/default/a.yaml",
            "component/default/b.yaml",
        ]


class TestAtomicWrites:
    def test_existing_file_is_replaced_not_truncated(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        run_cycle(config, clock, [described("a", "old text")])
        path = tmp_path / "catalog/component/default/a.yaml"
        old_inode = path.stat().st_ino
        with path.open("rb") as reader_of_old_file:
            run_cycle(config, clock, [described("a", "new text")])
            assert b"old text" in reader_of_old_file.read()  # the old file is intact
        assert path.stat().st_ino != old_inode
        assert "new text" in path.read_text(encoding="utf-8")
        assert all_files(tmp_path / "catalog") == ["component/default/a.yaml"]

    def test_unchanged_entity_file_is_not_rewritten(self, tmp_path: Path, clock: FakeClock) -> None:
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, [described("a", "same"), described("b", "v1")])
        inode = (tmp_path / "catalog/component/default/a.yaml").stat().st_ino
        run_cycle(config, clock, [described("a", "same"), described("b", "v2")])
        assert (tmp_path / "catalog/component/default/a.yaml").stat().st_ino == inode

    def test_failed_write_keeps_old_file_leaves_no_temp_and_names_the_key(
        self, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, [described("a", "old")])
        commit_without_mirror(config.state_path, clock, [described("a", "new")])

        def disk_full(**paths: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(files, "flush_to_disk", disk_full)
        with locked_store(config.state_path) as store, pytest.raises(ConfigError) as failure:
            sync_mirror(store, tmp_path / "catalog")
        monkeypatch.undo()

        assert failure.value.path == "catalog.directory"
        assert "No space left on device" in str(failure.value)
        assert all_files(tmp_path / "catalog") == ["component/default/a.yaml"]
        assert "old" in (tmp_path / "catalog/component/default/a.yaml").read_text()

    def test_mirror_files_are_world_readable(self, tmp_path: Path, clock: FakeClock) -> None:
        run_cycle(mirror_config(tmp_path), clock, [make_entity("a")])
        mode = (tmp_path / "catalog/component/default/a.yaml").stat().st_mode & 0o777
        assert mode == 0o644


class TestPositionAndRebuild:
    def test_position_is_stored_and_a_sync_without_changes_touches_nothing(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, [make_entity("a"), make_entity("b")])  # replays the log from 0
        run_cycle(config, clock, [make_entity("a"), make_entity("c")])  # follows the change log
        with locked_store(config.state_path) as store:
            last = store.last_change_seq()
            assert last == 4  # upsert a, upsert b, upsert c, delete b
            assert store.get_position(position_name(tmp_path / "catalog")) == last
            stats = sync_mirror(store, tmp_path / "catalog")
        assert (stats.written, stats.deleted, stats.position, stats.rebuilt) == (0, 0, last, False)

    def test_first_sync_of_a_directory_rebuilds_it(self, tmp_path: Path, clock: FakeClock) -> None:
        config = make_config(tmp_path)  # runs without a mirror first
        assert config.state_path is not None
        run_cycle(config, clock, [make_entity("a"), make_entity("b")])
        with locked_store(config.state_path) as store:
            stats = sync_mirror(store, tmp_path / "elsewhere")
        assert stats.rebuilt
        assert mirrored(tmp_path / "elsewhere") == exported(config.state_path)

    def test_position_past_the_end_of_the_log_rebuilds(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirrored_after_one_cycle(tmp_path, clock)
        assert config.state_path is not None
        with locked_store(config.state_path) as store:
            store.set_position(position_name(tmp_path / "catalog"), 10_000)  # an older state file
            stats = sync_mirror(store, tmp_path / "catalog")
            assert stats.rebuilt
            assert store.get_position(position_name(tmp_path / "catalog")) == (
                store.last_change_seq()
            )

    @pytest.mark.parametrize("emptied", [remounted_empty, emptied_by_shell_glob])
    @pytest.mark.parametrize("bounded", [True, False], ids=["run", "mirror-command"])
    def test_a_directory_emptied_under_the_state_is_filled_again(
        self, tmp_path: Path, clock: FakeClock, bounded: bool, emptied: Callable[[Path], None]
    ) -> None:
        """A volume remounted empty (an emptyDir beside a PostgreSQL state, a mount that failed
        and left its mount point), or `rm -r catalog/*` (which keeps the dot file marker): the
        stored position said it was in step, so it stayed empty, and Backstage
        (orphanStrategy: delete) removed the whole catalog."""
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, [make_entity("a"), make_entity("b")])
        directory = tmp_path / "catalog"
        emptied(directory)

        with locked_store(config.state_path) as store:
            stats = sync_mirror(store, directory, cancelled=(lambda: False) if bounded else None)

        assert mirrored(directory) == exported(config.state_path)
        assert stats.rebuilt is not bounded  # a run replays the log; `mirror` rebuilds

    def test_a_state_restored_from_a_backup_rebuilds_the_directory_ahead_of_it(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The directory's own marker says it holds changes the restored state never made: the
        position, kept in the state, was restored with it and could not tell."""
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, [make_entity("a"), make_entity("b")])
        backup = tmp_path / "backup.db"
        with (
            closing(sqlite3.connect(config.state_path)) as live,
            closing(sqlite3.connect(backup)) as copy,
        ):
            live.backup(copy)
        run_cycle(config, clock, [make_entity("a"), make_entity("late")])  # b deleted, late new
        backup.replace(config.state_path)

        with locked_store(config.state_path) as store:
            stats = sync_mirror(store, tmp_path / "catalog")

        assert stats.rebuilt
        assert mirrored(tmp_path / "catalog") == exported(config.state_path)
        assert "component/default/late.yaml" not in mirrored(tmp_path / "catalog")

    def test_a_directory_another_state_mirrored_is_rebuilt_by_the_next_unbounded_sync(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """`state.path` pointed at a new state file: a run's bounded sync writes the new state's
        entities over the old one's files, which it cannot tell apart, and says so once; the
        directory stays marked as holding such files until `choreo-ingest mirror` rebuilds it."""
        config = mirror_config(tmp_path)
        run_cycle(config, clock, [make_entity("old"), make_entity("both")])
        moved = replace(config, state_path=tmp_path / "new.db")
        assert moved.state_path is not None

        with structlog.testing.capture_logs() as logs:
            run_cycle(moved, clock, [make_entity("both"), make_entity("new")])
            run_cycle(moved, clock, [make_entity("both"), make_entity("new"), make_entity("x")])
        left = mirrored(tmp_path / "catalog")
        with locked_store(moved.state_path) as store:
            stats = sync_mirror(store, tmp_path / "catalog")

        said = [line for line in logs if line["event"] == "mirror_replayed_from_start"]
        assert [line["reason"] for line in said] == [
            "its marker names another store id (another state's, or this state's before a "
            "`reset --purge` or `--forget` renewed it)"
        ]
        assert set(left) == {
            f"component/default/{name}.yaml" for name in ("old", "both", "new", "x")
        }
        assert stats.rebuilt
        assert mirrored(tmp_path / "catalog") == exported(moved.state_path)

    def test_it_is_said_once_while_the_runs_have_no_time_left_for_the_mirror(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The first cycle of the new state takes every burst's whole `burstLength`."""
        config = mirror_config(tmp_path)
        run_cycle(config, clock, [make_entity("old")])
        moved = replace(config, state_path=tmp_path / "new.db", catalog_directory=None)
        assert moved.state_path is not None
        run_cycle(moved, clock, [make_entity("new")])

        with locked_store(moved.state_path) as store, structlog.testing.capture_logs() as logs:
            for _ in range(3):
                sync_mirror(store, tmp_path / "catalog", cancelled=lambda: True)

        said = [line for line in logs if line["event"] == "mirror_replayed_from_start"]
        assert len(said) == 1
        assert json.loads((tmp_path / "catalog" / MARKER).read_text())["stray"] is True

    def test_runs_after_a_rebuild_that_did_not_finish_say_so_once_and_mirror_finishes_it(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The rebuild marked the directory first (a kill before it deleted the strays)."""
        config = mirrored_after_one_cycle(tmp_path, clock)
        assert config.state_path is not None
        catalog = tmp_path / "catalog"
        stray = catalog / "component" / "default" / "gone.yaml"
        stray.write_text("kind: Component\n")
        with locked_store(config.state_path) as store:
            mark(catalog, store, 0, rebuilding=True)
            store.set_position(position_name(catalog), 0)

            with structlog.testing.capture_logs() as logs:
                for _ in range(2):
                    sync_mirror(store, catalog, cancelled=lambda: False)
            kept = stray.exists()
            stats = sync_mirror(store, catalog)

        said = [line for line in logs if line["event"] == "mirror_replayed_from_start"]
        assert [line["reason"] for line in said] == ["a rebuild did not finish"]
        assert kept
        assert stats.rebuilt
        assert mirrored(catalog) == exported(config.state_path)

    def test_a_directory_behind_the_stored_position_goes_on_from_where_it_stands(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Two directories at one path (each `serve` replica's own, beside one PostgreSQL
        state) share the stored position: the one that did not follow it skipped changes."""
        config = mirrored_after_one_cycle(tmp_path, clock)
        assert config.state_path is not None
        left_behind = tmp_path / "left-behind"
        shutil.copytree(tmp_path / "catalog", left_behind)
        run_cycle(config, clock, [make_entity("a"), make_entity("b")])  # mirrored elsewhere
        shutil.rmtree(tmp_path / "catalog")
        left_behind.rename(tmp_path / "catalog")

        with locked_store(config.state_path) as store:
            stats = sync_mirror(store, tmp_path / "catalog", cancelled=lambda: False)

        assert (stats.written, stats.rebuilt) == (1, False)
        assert mirrored(tmp_path / "catalog") == exported(config.state_path)

    def test_a_directory_mirrored_before_the_marker_is_trusted_and_marked(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirrored_after_one_cycle(tmp_path, clock)
        assert config.state_path is not None
        (tmp_path / "catalog" / MARKER).unlink()  # as an earlier release left it

        with locked_store(config.state_path) as store:
            stats = sync_mirror(store, tmp_path / "catalog", cancelled=lambda: False)

        assert (stats.written, stats.unchanged, stats.rebuilt) == (0, 0, False)
        assert (tmp_path / "catalog" / MARKER).is_file()

    def test_rebuild_removes_strays_and_temp_files_but_nothing_else(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        assert config.state_path is not None
        run_cycle(config, clock, [make_entity("a"), make_entity("b.c")])
        catalog = tmp_path / "catalog"
        strays = ["component/default/ghost.yaml", "Component/default/a.yaml", "api/x/y.yaml"]
        kept = ["README.md", "component/default/notes.txt", "deep/er/than/the.yaml"]
        for relative in [*strays, *kept, "component/default/.a.yaml.x1y2.tmp"]:
            (catalog / relative).parent.mkdir(parents=True, exist_ok=True)
            (catalog / relative).write_text("kind: Stray\n")
        (catalog / "component/default/a.yaml").write_text("edited: by hand\n")

        with locked_store(config.state_path) as store:
            stats = rebuild_mirror(store, catalog)
            last = store.last_change_seq()

        assert (stats.written, stats.unchanged, stats.deleted) == (1, 1, 3)
        assert stats.position == last
        assert mirrored(catalog) == exported(config.state_path)
        assert all_files(catalog) == sorted(
            [*kept, "component/default/a.yaml", "component/default/b.c.yaml"]
        )

    def test_each_directory_keeps_its_own_position(self, tmp_path: Path, clock: FakeClock) -> None:
        config = mirrored_after_one_cycle(tmp_path, clock)
        assert config.state_path is not None
        with Store.open(config.state_path, readonly=True) as store:
            assert store.get_position(position_name(tmp_path / "catalog")) > 0
            assert store.get_position(position_name(tmp_path / "other")) == 0

    def test_unusable_names_are_skipped_without_writing_outside(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = mirror_config(tmp_path)
        run_cycle(config, clock, [make_entity("../../escape"), make_entity("ok")])
        assert all_files(tmp_path / "catalog") == ["component/default/ok.yaml"]
        assert not (tmp_path / "escape.yaml").exists()


class TestPositionsMigration:
    def test_schema_1_state_file_gains_positions_on_migrate(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        with Store.open(path) as store:
            with closing(sqlite3.connect(store.path, isolation_level=None)) as raw:
                apply_migrations(raw, stop_before="0002_positions")
            pending = list(MIGRATION_NAMES[1:])
            assert (store.schema_version(), store.pending_migrations()) == (1, pending)

            assert store.migrate() == pending

            assert store.schema_version() == SCHEMA_VERSION
            assert store.get_position("mirror:/anywhere") == 0
            store.set_position("mirror:/anywhere", 7)
            store.set_position("mirror:/anywhere", 9)
            assert store.get_position("mirror:/anywhere") == 9


class TestRunHook:
    def test_unwritable_directory_fails_the_run_after_metrics_naming_the_key(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        (tmp_path / "a-file").write_text("not a directory\n")
        config = replace(make_config(tmp_path), catalog_directory=tmp_path / "a-file" / "catalog")
        assert config.state_path is not None
        provider = FakeProvider([make_entity("a")])
        result = run_once(config, config.state_path, clock, providers={"fake": provider})
        assert result.outcome == "error"
        assert isinstance(result.error, ConfigError)
        assert result.error.path == "catalog.directory"
        assert result.providers[0].cycle_completed  # the bursts' outcomes stand beside it
        assert config.metrics_textfile is not None
        assert config.metrics_textfile.exists()
        assert list(iter_export(config.state_path))  # the burst itself was committed

    def test_no_directory_configured_writes_no_mirror(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config = make_config(tmp_path)
        run_cycle(config, clock, [make_entity("a")])
        assert not list(tmp_path.glob("**/*.yaml"))


class TestCli:
    def write_config(self, tmp_path: Path, directory: str | None) -> Path:
        path = tmp_path / "choreo-ingest.yaml"
        catalog = f"catalog:\n  directory: {directory}\n" if directory else ""
        path.write_text(f"state:\n  path: state.db\n{catalog}providers: [fake]\n")
        return path

    def test_mirror_json_brings_directory_up_to_date(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        config_file = self.write_config(tmp_path, "catalog")
        config = make_config(tmp_path)  # same state file, no mirror: the CLI writes it
        assert config.state_path is not None
        run_cycle(config, clock, [make_entity("a"), make_entity("b")])

        result = CliRunner().invoke(app, ["mirror", "--json", "--config", str(config_file)])

        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert document["directory"] == str(tmp_path / "catalog")
        assert (document["written"], document["deleted"]) == (2, 0)
        assert mirrored(tmp_path / "catalog") == exported(config.state_path)

    def test_mirror_rebuild_json_reports_rebuild(self, tmp_path: Path, clock: FakeClock) -> None:
        config_file = self.write_config(tmp_path, "catalog")
        run_cycle(mirror_config(tmp_path), clock, [make_entity("a")])
        (tmp_path / "catalog/component/default/stray.yaml").write_text("kind: Stray\n")

        result = CliRunner().invoke(
            app, ["mirror", "--rebuild", "--json", "--config", str(config_file)]
        )

        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert (document["rebuilt"], document["deleted"], document["unchanged"]) == (True, 1, 1)

    def test_mirror_without_directory_is_a_config_error(self, tmp_path: Path) -> None:
        config_file = self.write_config(tmp_path, None)
        result = CliRunner().invoke(app, ["mirror", "--json", "--config", str(config_file)])
        assert result.exit_code == 2
        assert "catalog.directory" in json.loads(result.stdout)["error"]

    def test_mirror_waits_for_nobody_when_the_run_lock_is_held(self, tmp_path: Path) -> None:
        config_file = self.write_config(tmp_path, "catalog")
        with RunLock(tmp_path / "state.db"):
            result = CliRunner().invoke(app, ["mirror", "--config", str(config_file)])
        assert result.exit_code == 75
        assert not (tmp_path / "catalog").exists()


OPEN_GUARDS = SweepGuards(
    reject_empty_source_collections=False, reject_removals_above_percentage=None
)


class _Recorder:
    """The mirror's file writer as `_apply_changes` drives it: what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def write(self, location: object) -> None:
        self.calls.append(("write", location.name))

    def delete(self, ref: str) -> None:
        self.calls.append(("delete", ref))


class TestOrderWithinABatch:
    """Each ref once, in the order of its last change in the batch: a removed spelling's file
    goes before a live case twin's is written, which a filesystem that folds case keeps as one
    file (the store logs the live twin again after the removal)."""

    @staticmethod
    def renamed_in_case(state_path: Path, clock: FakeClock) -> tuple[Store, int]:
        def api(name: str) -> Entity:
            return replace(make_entity(name, kind="API"), scope="acme/web/cart")

        store = Store.open(state_path)
        store.migrate()
        for name in ("web-cart-httpApi", "web-cart-httpapi"):
            record = store.load_provider("fake")
            record.cycle_id += 1
            store.start_cycle(record, clock.now())
            page = EntityIteratorResult(True, [api(name)])
            store.commit_page("fake", record.cycle_id, page, None, clock.now())
            if name.endswith("httpApi"):
                since = store.last_change_seq()
            store.complete_cycle(record, OPEN_GUARDS, clock.now())
        return store, since

    def test_the_removed_spelling_is_deleted_before_the_live_one_is_written(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        store, since = self.renamed_in_case(tmp_path / "state.db", clock)
        with store:
            changes = store.changes(since)
            assert [(c.op, c.ref) for c in changes] == [
                ("upsert", "api:default/web-cart-httpapi"),
                ("delete", "api:default/web-cart-httpApi"),
                ("upsert", "api:default/web-cart-httpapi"),
            ]
            recorder = _Recorder()

            covered, done = _apply_changes(store, recorder, changes, None)

        assert recorder.calls == [
            ("delete", "api:default/web-cart-httpApi"),
            ("write", "web-cart-httpapi"),
        ]
        assert (covered, done) == (changes[-1].seq, True)

    def test_a_stop_between_refs_stores_the_last_change_of_the_refs_done(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        store, since = self.renamed_in_case(tmp_path / "state.db", clock)
        with store:
            changes = store.changes(since)
            recorder = _Recorder()
            asked = iter([False, True])

            covered, done = _apply_changes(store, recorder, changes, lambda: next(asked))

            assert (covered, done) == (changes[1].seq, False)
            assert recorder.calls == [("delete", "api:default/web-cart-httpApi")]
            rest = store.changes(covered)
        assert [(c.op, c.ref) for c in rest] == [("upsert", "api:default/web-cart-httpapi")]
