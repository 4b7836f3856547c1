"""Files other users read (the metrics textfile, the YAML mirror) get their modes whatever the
umask of the cron job or unit that wrote them; a writer killed mid-write leaves no temp file
that outlives the next write, and never takes another live writer's; a batch's removals leave no
empty directory below its root."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Collection, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from choreo_ingest import files
from choreo_ingest.files import (
    TEMP_SLOTS,
    DurableBatch,
    absent_directory,
    make_directories,
    replace_atomically,
)
from choreo_ingest.invocation import run_once

from fakes import FakeClock, FakeProvider, make_config, make_entity


@pytest.fixture(params=[0o077, 0o000], ids=["umask-077", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replace_atomically_gives_the_mode_asked_for(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "out.prom"

    replace_atomically(target, b"x 1\n", 0o644)
    replace_atomically(target, b"x 2\n", 0o644)

    assert (mode(target), target.read_bytes()) == (0o644, b"x 2\n")
    assert [p.name for p in tmp_path.iterdir()] == ["out.prom"], "no temp file left behind"


def test_make_directories_gives_new_directories_the_mode(tmp_path: Path, umask: int) -> None:
    existing = tmp_path / "kept"
    existing.mkdir(mode=0o700)
    existing.chmod(0o700)

    make_directories(existing / "a" / "b", 0o755)

    assert (mode(existing / "a"), mode(existing / "a" / "b"), mode(existing)) == (
        0o755,
        0o755,
        0o700,
    )


def test_make_directories_keeps_the_setgid_bit_new_directories_inherit(
    tmp_path: Path, umask: int
) -> None:
    """A Kubernetes fsGroup volume: a setgid directory of the pod's group. What is made below
    it keeps that group, so another UID of the group can still write there."""
    volume = tmp_path / "volume"
    volume.mkdir()
    group = 12345 if os.geteuid() == 0 else os.getegid()
    os.chown(volume, -1, group)
    volume.chmod(0o2775)

    made = make_directories(volume / "catalog" / "openchoreo", 0o755)

    assert [(mode(path), path.stat().st_gid) for path in made] == [(0o2755, group)] * 2


def test_a_run_writes_metrics_and_mirror_readable_by_others(tmp_path: Path, umask: int) -> None:
    config = replace(make_config(tmp_path), catalog_directory=tmp_path / "catalog")
    assert config.state_path is not None
    assert config.metrics_textfile is not None

    run_once(
        config, config.state_path, FakeClock(), providers={"fake": FakeProvider([make_entity("a")])}
    )

    assert mode(config.metrics_textfile) == 0o644
    written = tmp_path / "catalog" / "component" / "default" / "a.yaml"
    assert mode(written) == 0o644
    assert {mode(d) for d in (written.parent, written.parent.parent, tmp_path / "catalog")} == {
        0o755
    }


KILLED_BEFORE_ITS_RENAME = """
import os, pathlib, signal, sys
from choreo_ingest.files import replace_atomically
os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)  # the rename
replace_atomically(pathlib.Path(sys.argv[1]), b"killed\\n", 0o644)
"""

PAUSED_BEFORE_ITS_RENAME = """
import os, pathlib, sys
from choreo_ingest.files import replace_atomically
fsync = os.fsync
def paused(handle):
    print("writing", flush=True)
    sys.stdin.readline()
    fsync(handle)
os.fsync = paused
replace_atomically(pathlib.Path(sys.argv[1]), b"from the other writer\\n", 0o644)
"""


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_writes_killed_before_their_rename_leave_one_temp_file_the_next_write_removes(
    tmp_path: Path,
) -> None:
    target = tmp_path / "metrics.prom"
    for _ in range(3):
        killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_ITS_RENAME, str(target)])
        assert killed.returncode == -9

    assert len(temp_files(tmp_path)) == 1, "one per target, not one per kill"
    replace_atomically(target, b"x 1\n", 0o644)

    assert temp_files(tmp_path) == []
    assert (target.read_bytes(), mode(target)) == (b"x 1\n", 0o644)


def test_a_writer_mid_write_keeps_its_temp_file_while_another_writes(tmp_path: Path) -> None:
    """`status` and `run` may both write the metrics textfile at once."""
    target = tmp_path / "metrics.prom"
    other = subprocess.Popen(
        [sys.executable, "-c", PAUSED_BEFORE_ITS_RENAME, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout is not None
    try:
        assert other.stdout.readline() == "writing\n"
        [held] = temp_files(tmp_path)

        replace_atomically(target, b"from this writer\n", 0o644)

        assert target.read_bytes() == b"from this writer\n"
        assert temp_files(tmp_path) == [held]
    finally:
        other.communicate("\n", timeout=30)
    assert other.returncode == 0
    assert target.read_bytes() == b"from the other writer\n"
    assert temp_files(tmp_path) == []


def test_temp_files_an_earlier_release_left_go_once_well_older_than_the_target(
    tmp_path: Path,
) -> None:
    target = tmp_path / "metrics.prom"
    subprocess.run([sys.executable, "-c", KILLED_BEFORE_ITS_RENAME, str(target)])  # a recovery
    old = tmp_path / ".metrics.prom.k2v9_q1x.tmp"  # tempfile.mkstemp's name, from a kill long ago
    recent = tmp_path / ".metrics.prom.a8b7c6d5.tmp"  # maybe a live writer's
    others = [tmp_path / ".other.prom.k2v9_q1x.tmp", tmp_path / "metrics.prom.k2v9_q1x.tmp"]
    for path in (old, recent, *others):
        path.write_bytes(b"x")
    os.utime(old, (1, 1))
    os.utime(others[0], (1, 1))
    os.utime(others[1], (1, 1))

    replace_atomically(target, b"x 1\n", 0o644)

    assert temp_files(tmp_path) == sorted(p.name for p in (recent, *others))


def test_a_file_written_where_the_mount_says_another_user_owns_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS squashing root, or a CIFS mount's `uid=`, shows the writer's own new temp file as
    another user's: taken for someone else's leftover, every slot was refused ("16 writers of
    it at once") and every run exited 2. Here the writer's uid is what differs."""
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242)
    target = tmp_path / "metrics.prom"

    replace_atomically(target, b"x 1\n", 0o644)
    replace_atomically(target, b"x 2\n", 0o644)

    assert target.read_bytes() == b"x 2\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.prom"]


def test_when_every_slot_is_someone_elses_the_write_goes_on_under_a_name_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a mount that reports another owner, what killed writers left cannot be told from a
    live writer's temp file: after TEMP_SLOTS kills every write failed."""
    target = tmp_path / "metrics.prom"
    for slot in range(TEMP_SLOTS):
        (tmp_path / f".metrics.prom{f'.{slot}' if slot else ''}.tmp").write_bytes(b"left")
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242)

    replace_atomically(target, b"x 1\n", 0o644)

    assert target.read_bytes() == b"x 1\n"
    assert len(list(tmp_path.glob(".metrics.prom*.tmp"))) == TEMP_SLOTS


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_replace_atomically_leaves_a_fifo_or_socket_in_place_and_says_so(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "metrics.prom"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(str(path))
        listening.close()
    before = os.lstat(path).st_mode

    with pytest.raises(OSError, match="not a regular file"):
        replace_atomically(path, b"x 1\n", 0o644)

    assert os.lstat(path).st_mode == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.prom"]


def test_replace_atomically_replaces_a_symlink_to_a_special_file_not_its_target(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "a.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "metrics.prom"
    link.symlink_to(fifo)

    replace_atomically(link, b"x 1\n", 0o644)

    assert link.read_bytes() == b"x 1\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_run_with_the_metrics_textfile_a_fifo_fails_naming_the_key_and_keeps_the_fifo(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "metrics.prom"
    os.mkfifo(fifo)
    config = replace(make_config(tmp_path), metrics_textfile=fifo)
    assert config.state_path is not None

    result = run_once(config, config.state_path, FakeClock(), providers={"fake": FakeProvider([])})

    assert str(result.error).startswith("metrics.textfile: ")
    assert "not a regular file" in str(result.error)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


KILLED_BEFORE_ITS_RENAMES = """
import os, pathlib, signal, sys
from choreo_ingest.files import DurableBatch
pathlib.Path.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
root = pathlib.Path(sys.argv[1])
with DurableBatch(root, 0o644, 0o755) as batch:
    for name in ("a", "b", "c"):
        batch.replace(root / "component" / "default" / f"{name}.yaml", b"killed\\n")
    batch.commit()
"""

TEMP_DIRECTORY = ".choreo-ingest-tmp"


def tree(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


class TestDurableBatch:
    def test_staged_files_wait_in_the_temp_directory_where_no_entity_glob_looks(
        self, tmp_path: Path
    ) -> None:
        """Backstage reads `<root>/*/*/*.yaml`: a temp file one level deep in a hidden
        directory, ending in `.tmp`, is never read, even by a glob that matches hidden names."""
        target = tmp_path / "component" / "default" / "a.yaml"
        target.parent.mkdir(parents=True)
        target.write_bytes(b"old\n")

        with DurableBatch(tmp_path, 0o644, 0o755) as batch:
            batch.replace(target, b"new\n")
            batch.replace(tmp_path / "api" / "default" / "a.yaml", b"new\n")
            staged = tree(tmp_path / TEMP_DIRECTORY)
            seen = sorted(tmp_path.glob("*/*/*.yaml")), sorted(tmp_path.glob("**/*.yaml"))
            batch.commit()

        assert [name.split(".")[:2] for name in staged] == [["a", "yaml"], ["a", "yaml"]]
        assert all(name.endswith(".tmp") for name in staged)
        assert seen == ([target], [target])
        assert target.read_bytes() == b"new\n"
        assert tree(tmp_path / TEMP_DIRECTORY) == []

    def test_a_batch_removes_the_temp_files_a_batch_killed_before_its_renames_left(
        self, tmp_path: Path
    ) -> None:
        killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_ITS_RENAMES, str(tmp_path)])
        assert killed.returncode == -9
        assert len(tree(tmp_path / TEMP_DIRECTORY)) == 3

        with DurableBatch(tmp_path, 0o644, 0o755):
            pass

        assert tree(tmp_path / TEMP_DIRECTORY) == []
        assert tree(tmp_path / "component") == ["default"]

    def test_the_last_removal_in_a_directory_removes_it_and_each_parent_it_empties_not_the_root(
        self, tmp_path: Path
    ) -> None:
        for relative in ("kind/ns/a.yaml", "kind/ns/b.yaml", "top.yaml"):
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relative).write_bytes(b"x\n")

        with DurableBatch(tmp_path, 0o644, 0o755) as batch:
            batch.remove(tmp_path / "kind/ns/a.yaml")
            batch.commit()
            after_one = tree(tmp_path)
            batch.remove(tmp_path / "kind/ns/b.yaml")
            batch.remove(tmp_path / "top.yaml")
            batch.commit()

        assert after_one == ["kind", "kind/ns", "kind/ns/b.yaml", "top.yaml"]
        assert tree(tmp_path) == []

    def test_a_directory_holding_another_file_or_a_staged_one_stays(self, tmp_path: Path) -> None:
        for relative in ("kind/ns/a.yaml", "kind/README.md", "other/ns/b.yaml"):
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relative).write_bytes(b"x\n")

        with DurableBatch(tmp_path, 0o644, 0o755) as batch:
            batch.remove(tmp_path / "kind/ns/a.yaml")
            batch.remove(tmp_path / "other/ns/b.yaml")
            batch.replace(tmp_path / "other/ns/c.yaml", b"new\n")
            batch.commit()

        assert tree(tmp_path) == [
            TEMP_DIRECTORY,
            "kind",
            "kind/README.md",
            "other",
            "other/ns",
            "other/ns/c.yaml",
        ]

    @pytest.mark.parametrize(
        "killed_after",
        ["kind/ns/a.yaml", "kind/ns"],
        ids=["file-removed", "namespace-removed"],
    )
    def test_directories_a_killed_batch_emptied_go_when_the_removal_is_replayed(
        self, tmp_path: Path, killed_after: str
    ) -> None:
        """A batch killed between removing a file and its directories: the next run replays the
        removal, of a file that is no longer there."""
        (tmp_path / "kind/ns").mkdir(parents=True)
        (tmp_path / "kind/other").mkdir()
        (tmp_path / "kind/other/b.yaml").write_bytes(b"x\n")
        (tmp_path / "kind/other/b.yaml").unlink()  # the other namespace went the same way
        if killed_after == "kind/ns":
            (tmp_path / "kind/ns").rmdir()

        with DurableBatch(tmp_path, 0o644, 0o755) as batch:
            assert not batch.remove(tmp_path / "kind/ns/a.yaml")
            assert not batch.remove(tmp_path / "kind/other/b.yaml")
            batch.commit()

        assert tree(tmp_path) == []

    def test_a_directory_removal_is_flushed_in_its_parent(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        flushed: list[set[Path]] = []

        def recorded(*, files: object = (), directories: Collection[Path] = ()) -> None:
            flushed.append(set(directories))

        (tmp_path / "kind/ns").mkdir(parents=True)
        (tmp_path / "kind/ns/a.yaml").write_bytes(b"x\n")
        (tmp_path / "kind/ns2").mkdir()
        monkeypatch.setattr(files, "flush_to_disk", recorded)

        with DurableBatch(tmp_path, 0o644, 0o755) as batch:
            batch.remove(tmp_path / "kind/ns/a.yaml")
            batch.commit()

        assert flushed == [{tmp_path / "kind"}]
        assert tree(tmp_path) == ["kind", "kind/ns2"]


def test_a_directory_that_is_not_there_is_said_as_what_is_there_instead(tmp_path: Path) -> None:
    """The advice to create it would fail where a file, or a symlink to nothing, is there."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")

    assert (
        absent_directory(tmp_path / "nothing") == f"directory {tmp_path / 'nothing'} does not exist"
    )
    assert absent_directory(tmp_path / "afile") == f"{tmp_path / 'afile'} is not a directory"
    assert absent_directory(tmp_path / "dangling") == (
        f"{tmp_path / 'dangling'} is a symlink to {tmp_path / 'gone'}, which does not exist"
    )
