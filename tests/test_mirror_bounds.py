"""The mirror within bounds: a run's mirror stops at the burst's deadline or on SIGTERM, stores how
far it got and leaves the rest to the next run; a batch costs two disk flushes, not one per file."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from choreo_ingest import files
from choreo_ingest.config import Config
from choreo_ingest.engine import StopSignal
from choreo_ingest.files import DurableBatch, sync_filesystem
from choreo_ingest.invocation import locked_store, run_once
from choreo_ingest.mirror import position_name, sync_mirror
from choreo_ingest.models import Entity, EntityIteratorResult, ProviderAction, RunOutcome
from choreo_ingest.store import Store

from fakes import FakeClock, FakeProvider, make_config, make_entity

ENTITIES = [make_entity(f"e{number:02}") for number in range(30)]


def mirrored(directory: Path) -> dict[str, Any]:
    """Every mirror file, relative path -> parsed YAML."""
    return {
        path.relative_to(directory).as_posix(): yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*/*/*.yaml"))
    }


def expected_at(store: Store, position: int) -> dict[str, Any]:
    """What the mirror holds once it has applied the change log up to `position`."""
    expected = {}
    for change in store.changes(0):
        if change.seq > position:
            break
        location = store.entity_location(change.ref)
        if location is not None:
            path = f"{location.kind.lower()}/{location.namespace}/{location.name}.yaml"
            expected[path] = location.body
    return expected


def temp_files(directory: Path) -> list[Path]:
    """The mirror's temp files: in its temp directory, or beside the files (earlier releases)."""
    staged = directory.glob(f"{files.TEMP_DIRECTORY}/*{files.TEMP_SUFFIX}")
    return sorted([*staged, *directory.glob(f"*/*/.*{files.TEMP_SUFFIX}")])


def commit(state_path: Path, clock: FakeClock, entities: Sequence[Entity]) -> None:
    """Entities in the store and its change log, no mirror written."""
    with locked_store(state_path) as store:
        page = EntityIteratorResult(done=False, entities=entities)
        store.commit_page("fake", 1, page, None, clock.now())


@dataclass
class MirrorState:
    """Where the mirror stands after one call: the stored position, and whether the files are
    exactly what the change log up to it says."""

    position: int
    last: int
    consistent: bool


def mirror_state(config: Config) -> MirrorState:
    assert config.state_path is not None
    assert config.catalog_directory is not None
    with Store.open(config.state_path, readonly=True) as store:
        position = store.get_position(position_name(config.catalog_directory))
        return MirrorState(
            position=position,
            last=store.last_change_seq(),
            consistent=mirrored(config.catalog_directory) == expected_at(store, position),
        )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return replace(make_config(tmp_path, burst_length=1.0), catalog_directory=tmp_path / "catalog")


@pytest.fixture
def waiting(config: Config, clock: FakeClock) -> FakeProvider:
    """A provider whose cycle is done: runs after this one only mirror. The mirror is behind by
    ENTITIES (its position was never stored)."""
    assert config.state_path is not None
    provider = FakeProvider(ENTITIES, page_size=len(ENTITIES))
    without_mirror = replace(config, catalog_directory=None)
    run_once(without_mirror, config.state_path, clock, providers={"fake": provider}, force=True)
    return provider


def run(config: Config, clock: FakeClock, provider: FakeProvider, **options: Any) -> RunOutcome:
    assert config.state_path is not None
    return run_once(
        config, config.state_path, clock, providers={"fake": provider}, **options
    ).outcome


class TestRunBudget:
    def test_deadline_stops_the_mirror_with_its_position_stored_and_next_runs_finish_it(
        self, config: Config, clock: FakeClock, waiting: FakeProvider
    ) -> None:
        """Each check of the deadline takes 1/8 s of fake time: a 1 s burstLength mirrors seven
        entities per run, and the run overruns by one check at most (the other 1/8 s is the
        test's own read of the clock)."""
        clock.tick = 0.125
        states = []
        for _ in range(10):
            started = clock.monotonic()
            assert run(config, clock, waiting) == RunOutcome.WAITING
            assert clock.monotonic() - started <= config.incremental.burst_length + 2 * 0.125
            states.append(mirror_state(config))
            if states[-1].position == states[-1].last:
                break

        assert all(state.consistent for state in states)
        positions = [state.position for state in states]
        assert positions == sorted(set(positions)), "every run moved the position on"
        assert 0 < positions[0] < states[0].last
        assert len(states) == 5  # 30 entities, 7 a run
        assert config.catalog_directory is not None
        assert len(mirrored(config.catalog_directory)) == len(ENTITIES)
        assert temp_files(config.catalog_directory) == []

    def test_burst_that_spends_the_budget_leaves_the_mirror_to_the_next_run(
        self, config: Config, clock: FakeClock
    ) -> None:
        provider = FakeProvider(ENTITIES[:6], page_size=3, page_cost=1.5)

        assert config.catalog_directory is not None

        assert run(config, clock, provider, force=True) == RunOutcome.BURST
        after_burst = mirror_state(config), mirrored(config.catalog_directory)
        assert run(config, clock, provider) == RunOutcome.WAITING  # burstInterval not over
        after_waiting = mirror_state(config), mirrored(config.catalog_directory)

        assert after_burst == (MirrorState(position=0, last=3, consistent=True), {})
        assert after_waiting[0] == MirrorState(position=3, last=3, consistent=True)
        assert len(after_waiting[1]) == 3

    def test_burst_that_leaves_time_gives_the_rest_to_the_mirror(
        self, config: Config, clock: FakeClock
    ) -> None:
        provider = FakeProvider(ENTITIES[:6], page_size=3, page_cost=0.3)  # 2 pages, 0.6 s

        assert run(config, clock, provider, force=True) == RunOutcome.BURST

        assert mirror_state(config) == MirrorState(position=6, last=6, consistent=True)

    def test_provider_that_could_not_load_leaves_the_mirror_its_whole_budget(
        self, config: Config, clock: FakeClock
    ) -> None:
        """The stored start of its last burst is an older run's: it must not count as this run's."""
        config = replace(config, providers=("fake", "other"))
        assert config.state_path is not None
        other = FakeProvider([make_entity("o")], name="other")
        providers = {"fake": FakeProvider(ENTITIES[:3]), "other": other}
        without_mirror = replace(config, catalog_directory=None)
        run_once(without_mirror, config.state_path, clock, providers=providers)
        clock.advance(600)  # burstLength is 1 s; restLength (30 min) keeps `fake` waiting

        result = run_once(
            config, config.state_path, clock, providers={"fake": FakeProvider(ENTITIES[:3])}
        )

        assert [outcome.action for outcome in result.providers] == [
            ProviderAction.WAITING,
            ProviderAction.FAILED,
        ]
        state = mirror_state(config)
        assert (state.position, state.consistent) == (state.last, True)

    def test_sigterm_during_the_mirror_stops_it_and_the_next_run_finishes_it(
        self, config: Config, waiting: FakeProvider
    ) -> None:
        stop = StopSignal()
        clock = SigtermAfterReads(stop, reads=5)

        assert run(config, clock, waiting, stop=stop) == RunOutcome.INTERRUPTED
        interrupted = mirror_state(config)
        assert run(config, clock, waiting) == RunOutcome.WAITING
        finished = mirror_state(config)

        assert 0 < interrupted.position < interrupted.last
        assert interrupted.consistent
        assert (finished.position, finished.consistent) == (finished.last, True)


class SigtermAfterReads(FakeClock):
    """A SIGTERM that arrives during the `reads`-th read of the monotonic clock."""

    def __init__(self, stop: StopSignal, reads: int) -> None:
        super().__init__()
        self.stop = stop
        self.reads_left = reads

    def monotonic(self) -> float:
        self.reads_left -= 1
        if self.reads_left == 0:
            self.stop.set(signal.SIGTERM)
        return super().monotonic()


@dataclass
class DiskRecorder:
    """Stands in for the OS's flushes (`files.sync_filesystem`, `os.fsync`) and the store's
    position, writing down what happened in order, with what the directory held then."""

    directory: Path
    has_syncfs: bool = True
    events: list[str] = field(default_factory=list)
    on_flush: Callable[[], None] | None = None

    def sync_filesystem(self, path: Path) -> bool:
        if not self.has_syncfs:
            return False
        self.events.append(self._seen("syncfs"))
        if self.on_flush is not None:
            self.on_flush()
        return True

    def fsync(self, handle: int) -> None:
        self.events.append("fsync")

    def position(self, value: int) -> None:
        self.events.append(self._seen(f"position {value}"))

    def _seen(self, event: str) -> str:
        files_now = len(list(self.directory.glob("*/*/*.yaml")))
        return f"{event}: {files_now} files, {len(temp_files(self.directory))} temp"


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DiskRecorder:
    recorder = DiskRecorder(tmp_path / "catalog")
    monkeypatch.setattr(files, "sync_filesystem", recorder.sync_filesystem)
    monkeypatch.setattr(os, "fsync", recorder.fsync)
    return recorder


def recording_positions(
    store: Store, recorder: DiskRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_position = store.set_position

    def recorded(name: str, value: int) -> None:
        recorder.position(value)
        set_position(name, value)

    monkeypatch.setattr(store, "set_position", recorded)


def never() -> bool:
    return False


class TestBatchedFlushes:
    def test_two_flushes_per_batch_data_before_renames_renames_before_the_position(
        self,
        state_path: Path,
        clock: FakeClock,
        recorder: DiskRecorder,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        commit(state_path, clock, ENTITIES[:25])
        with locked_store(state_path) as store:
            recording_positions(store, recorder, monkeypatch)
            stats = sync_mirror(store, recorder.directory, cancelled=never, batch_size=10)

        assert (stats.written, stats.position, stats.caught_up) == (25, 25, True)
        assert recorder.events == [
            "syncfs: 0 files, 10 temp",  # the new contents, before any rename
            "syncfs: 10 files, 0 temp",  # the renames
            "fsync",  # the directory's marker, before the position (`mirror_marker`)
            "position 10: 10 files, 0 temp",
            "syncfs: 10 files, 10 temp",
            "syncfs: 20 files, 0 temp",
            "fsync",
            "position 20: 20 files, 0 temp",
            "syncfs: 20 files, 5 temp",
            "syncfs: 25 files, 0 temp",
            "fsync",
            "position 25: 25 files, 0 temp",
        ]

    def test_rebuild_flushes_every_batch_and_stores_its_position_once_done(
        self,
        state_path: Path,
        clock: FakeClock,
        recorder: DiskRecorder,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Begun, the directory stands at the log's start (marker and position 0): a rebuild
        stopped halfway is never taken for complete."""
        commit(state_path, clock, ENTITIES[:25])
        with locked_store(state_path) as store:
            recording_positions(store, recorder, monkeypatch)
            stats = sync_mirror(store, recorder.directory, batch_size=10)  # unbounded: rebuilds

        assert (stats.rebuilt, stats.written) == (True, 25)
        assert recorder.events == [
            "fsync",  # the directory's marker, at 0
            "position 0: 0 files, 0 temp",
            "syncfs: 0 files, 10 temp",
            "syncfs: 10 files, 0 temp",
            "syncfs: 10 files, 10 temp",
            "syncfs: 20 files, 0 temp",
            "syncfs: 20 files, 5 temp",
            "syncfs: 25 files, 0 temp",
            "fsync",  # the directory's marker
            "position 25: 25 files, 0 temp",
        ]

    def test_without_syncfs_each_file_and_directory_is_fsynced(
        self, state_path: Path, clock: FakeClock, recorder: DiskRecorder
    ) -> None:
        recorder.has_syncfs = False
        commit(state_path, clock, [*ENTITIES[:3], make_entity("x", namespace="acme")])
        with locked_store(state_path) as store:
            sync_mirror(store, recorder.directory, cancelled=never)

        # 4 files, then their 2 namespace directories, the kind directory and the mirror's own,
        # then the directory's marker
        assert recorder.events == ["fsync"] * (4 + 2 + 2 + 1)

    def test_sigterm_stops_the_mirror_between_batches(
        self, state_path: Path, clock: FakeClock, recorder: DiskRecorder
    ) -> None:
        stop = StopSignal()
        recorder.on_flush = lambda: stop.set(signal.SIGTERM)
        commit(state_path, clock, ENTITIES[:25])
        with locked_store(state_path) as store:
            stopped = sync_mirror(store, recorder.directory, cancelled=stop.is_set, batch_size=10)
            resumed = sync_mirror(store, recorder.directory, cancelled=never, batch_size=10)
            assert mirrored(recorder.directory) == expected_at(store, 25)

        assert (stopped.position, stopped.written, stopped.caught_up) == (10, 10, False)
        assert (resumed.position, resumed.written, resumed.caught_up) == (25, 15, True)

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux's")
    def test_syncfs_is_there_on_linux(self, tmp_path: Path) -> None:
        assert sync_filesystem(tmp_path)


class TestDurableBatch:
    def test_failed_flush_renames_nothing_and_leaves_no_temp_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        target = tmp_path / "a" / "b.yaml"
        target.parent.mkdir()
        target.write_bytes(b"old\n")

        def disk_full(**paths: object) -> None:
            raise OSError(28, "No space left on device")

        def replace_two() -> None:
            with DurableBatch(tmp_path, 0o644, 0o755) as batch:
                batch.replace(target, b"new\n")
                batch.replace(tmp_path / "a" / "c.yaml", b"new\n")
                batch.commit()

        monkeypatch.setattr(files, "flush_to_disk", disk_full)
        with pytest.raises(OSError, match="No space"):
            replace_two()

        assert sorted(p.name for p in target.parent.iterdir()) == ["b.yaml"]
        assert temp_files(tmp_path) == []
        assert target.read_bytes() == b"old\n"

    def test_commit_counts_and_clears_what_is_pending(self, tmp_path: Path) -> None:
        (tmp_path / "gone.yaml").write_bytes(b"x\n")
        with DurableBatch(tmp_path, 0o644, 0o755) as batch:
            batch.replace(tmp_path / "new" / "a.yaml", b"a\n")
            assert batch.remove(tmp_path / "gone.yaml")
            assert not batch.remove(tmp_path / "never.yaml")
            assert batch.pending == 2
            batch.commit()
            assert batch.pending == 0

        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
            files.TEMP_DIRECTORY,
            "new",
            "new/a.yaml",
        ]


class TestReplayInsteadOfRebuild:
    def test_run_replays_the_log_from_the_start_in_bounded_steps_and_keeps_strays(
        self, config: Config, waiting: FakeProvider
    ) -> None:
        """A position past the end of the log (an older state file) would call for a rebuild,
        which cannot stop halfway: a run replays the whole log instead, a budget at a time."""
        assert config.state_path is not None
        assert config.catalog_directory is not None
        stray = config.catalog_directory / "component/default/ghost.yaml"
        stray.parent.mkdir(parents=True)
        stray.write_text("kind: Ghost\n")
        with locked_store(config.state_path) as store:
            store.set_position(position_name(config.catalog_directory), 10_000)
        clock = FakeClock(tick=0.125)

        with structlog.testing.capture_logs() as logs:
            run(config, clock, waiting)
        first = mirror_state(config)
        for _ in range(10):
            if mirror_state(config).position == first.last:
                break
            run(config, clock, waiting)

        replays = [log for log in logs if log["event"] == "mirror_replayed_from_start"]
        assert [log["reason"] for log in replays] == ["position past the end of the log"]
        assert 0 < first.position < first.last
        assert stray.exists()
        with Store.open(config.state_path, readonly=True) as store:
            expected = expected_at(store, store.last_change_seq())
        files_now = mirrored(config.catalog_directory)
        assert files_now.pop("component/default/ghost.yaml") == {"kind": "Ghost"}
        assert files_now == expected

    def test_run_writes_a_deleted_directory_anew(
        self, config: Config, clock: FakeClock, waiting: FakeProvider
    ) -> None:
        assert config.catalog_directory is not None
        run(config, clock, waiting)
        shutil.rmtree(config.catalog_directory)

        run(config, clock, waiting)

        state = mirror_state(config)
        assert (state.position, state.consistent) == (state.last, True)
        assert len(mirrored(config.catalog_directory)) == len(ENTITIES)
