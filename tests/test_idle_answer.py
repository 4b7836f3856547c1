"""The kept answer of a `run` with nothing due (`idle_answer`): kept by a run that found nothing
due, taken by the next only while everything it was read from is unchanged, and loaded before
anything else."""

from __future__ import annotations

import json
import marshal
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_idle import (
    PROVIDER,
    clock_at_now,
    lean_call,
    resting_state,
    without_run_time,
    write_config,
)

from choreo_ingest.cache_files import ANSWER_SUFFIX, absolute_path, kept_file
from choreo_ingest.cli.lean import lean_main
from choreo_ingest.clock import SystemClock
from choreo_ingest.config import load_config
from choreo_ingest.idle_answer import KEPT_SECONDS, answered, go_float
from choreo_ingest.models import EVENTS_HELD_FACT, REFRESH_REQUESTED_FACT
from choreo_ingest.store import RunLock, SqliteLocation, Store

from sim_support import run_cli

# What a kept answer loads, beyond the bare interpreter: a new module here is a decision.
QUICK_OWN = {
    "choreo_ingest",
    "choreo_ingest.atomic_file",
    "choreo_ingest.cache_files",
    "choreo_ingest.cli",
    "choreo_ingest.idle_answer",
    "choreo_ingest.lazy_exports",
    "choreo_ingest.store",
    "choreo_ingest.store.write_mark",
}
QUICK_FORBIDDEN_STDLIB = {
    "typing", "pathlib", "urllib", "json", "dataclasses", "re", "enum", "inspect", "ast",
    "hashlib", "logging", "subprocess", "ssl", "asyncio", "email", "http", "decimal",
}  # fmt: skip


def kept_path(config_file: Path) -> Path:
    found = kept_file(absolute_path(str(config_file)), ANSWER_SUFFIX, os.environ)
    assert found is not None
    return Path(found)


def token_bytes(answer: Path) -> list[str]:
    """The test tokens found in a kept answer's bytes."""
    held = answer.read_bytes()
    return [token for token in ("token-from-the-environment-0c3a",) if token.encode() in held]


def kept(config_file: Path) -> dict[str, Any]:
    answer: dict[str, Any] = marshal.loads(kept_path(config_file).read_bytes())  # noqa: S302
    return answer


def idle_run(config_file: Path, *more: str) -> None:
    """A `run` through the lean entry, as cron makes it (off a terminal): nothing due."""
    assert lean_main(["--config", str(config_file), *more, "run"]) == 0


def now() -> float:
    return SystemClock().now()


def ask(config_file: Path, *, at: float | None = None, **env: str) -> bool:
    return answered(["--config", str(config_file), "run"], {**os.environ, **env}, at or now())


def resting_state_at(config_file: Path, state: Path) -> None:
    """`resting_state` of the config, at `state` (a config whose `state.path` is a link)."""
    config = load_config(config_file)
    resting_state(replace(config, state_path=state), clock_at_now())


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = write_config(tmp_path)
    resting_state(load_config(path), clock_at_now())
    return path


@pytest.fixture
def answer_kept(config_file: Path) -> Path:
    idle_run(config_file)
    assert kept_path(config_file).exists()
    return config_file


class TestTheKeptAnswer:
    def test_answers_the_next_run_with_the_textfile_the_full_path_writes(
        self, answer_kept: Path
    ) -> None:
        textfile = answer_kept.parent / "metrics.prom"
        by_the_lean_entry = textfile.read_text()
        at = now() + 1.5

        assert ask(answer_kept, at=at) is True

        written = textfile.read_text()
        assert without_run_time(written) == without_run_time(by_the_lean_entry)
        run_time = f'choreo_ingest_last_run_timestamp_seconds{{provider="{PROVIDER}"}}'
        assert f"{run_time} {go_float(at)}\n" in written
        families = {family.name: family for family in text_string_to_metric_families(written)}
        [sample] = families["choreo_ingest_last_run_timestamp_seconds"].samples
        assert sample.value == pytest.approx(at)
        assert oct(textfile.stat().st_mode & 0o777) == oct(0o644)

    def test_holds_until_the_rest_ends_and_says_nothing_of_the_state(
        self, answer_kept: Path
    ) -> None:
        answer = kept(answer_kept)
        location = SqliteLocation(answer_kept.parent / "state.db")
        with location.open(readonly=True) as store:
            due = store.load_provider(PROVIDER).next_action_at

        assert answer["until"] == due
        assert answer["made"] < due <= answer["made"] + KEPT_SECONDS
        assert oct(kept_path(answer_kept).stat().st_mode & 0o777) == oct(0o600)
        assert ask(answer_kept, at=due - 0.01) is True
        assert ask(answer_kept, at=due) is False  # due: the lean entry bursts

    def test_a_long_rest_is_answered_an_hour_at_a_time(self, tmp_path: Path) -> None:
        path = write_config(tmp_path, openchoreo={
            "baseUrl": "http://openchoreo.test/api/v1", "incremental": {"restLength": 1440},
        })  # fmt: skip
        resting_state(load_config(path), clock_at_now())
        idle_run(path)

        answer = kept(path)

        assert answer["until"] == answer["made"] + KEPT_SECONDS

    def test_a_kept_answer_holds_no_secret(self, tmp_path: Path) -> None:
        token = "token-in-the-file-5f1e"
        path = write_config(
            tmp_path, openchoreo={"baseUrl": "http://openchoreo.test/api/v1", "token": token}
        )
        path.chmod(0o600)
        resting_state(load_config(path), clock_at_now())
        idle_run(path)

        assert token.encode() not in kept_path(path).read_bytes()
        assert ask(path) is True

    @pytest.mark.parametrize(
        "args",
        [
            ["run", "--config", "{config}"],
            ["-c", "{config}", "run"],
            ["run", "--config={config}"],
        ],
        ids=["after", "short", "equals"],
    )
    def test_the_config_may_be_given_as_the_lean_entry_takes_it(
        self, answer_kept: Path, args: list[str]
    ) -> None:
        given = [arg.format(config=answer_kept) for arg in args]
        assert answered(given, os.environ, now()) is True

    def test_the_config_the_environment_names_is_answered_for(
        self, config_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CHOREO_INGEST_CONFIG", str(config_file))
        assert lean_main(["run"]) == 0

        assert answered(["run"], os.environ, now()) is True

    def test_the_config_found_in_the_working_directory_is_answered_for(
        self, config_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(config_file.parent)
        assert lean_main(["run"]) == 0  # ./choreo-ingest.yaml

        assert answered(["run"], os.environ, now()) is True


def store_an_event(config_file: Path, state: Path | None = None) -> None:
    with SqliteLocation(state or config_file.parent / "state.db").open() as store:
        body = {"kind": "Component", "namespace": "acme", "name": "cart"}
        store.add_events(PROVIDER, [body], now())


def request_a_refresh(config_file: Path) -> None:
    with SqliteLocation(config_file.parent / "state.db").open() as store:
        store.set_facts(PROVIDER, {REFRESH_REQUESTED_FACT: "yes"}, now())


def commit_nothing(config_file: Path) -> None:
    location = SqliteLocation(config_file.parent / "state.db")
    with location.open_locked() as store:
        store.new_write_mark()  # an empty write transaction, as any write's first statement


def edit_the_config(config_file: Path) -> None:
    config_file.write_text(config_file.read_text() + "# edited\n")


def replace_the_state_with_its_copy(config_file: Path) -> None:
    state = config_file.parent / "state.db"
    shutil.copy2(state, config_file.parent / "copy.db")
    (config_file.parent / "copy.db").replace(state)  # the same content, mark and all


def migrate_the_schema(config_file: Path) -> None:
    with closing(sqlite3.connect(config_file.parent / "state.db")) as raw:
        raw.execute("PRAGMA user_version = 99")  # no write transaction of ours: no new mark


def note_damage(config_file: Path) -> None:
    (config_file.parent / "state.db.damaged").write_text("{}")


def upgrade_the_installation(config_file: Path) -> None:
    """As a new release (another idle_answer.py) sees the answer an earlier one kept."""
    answer = kept(config_file)
    answer["format"] = [*answer["format"][:-1], answer["format"][-1] + 1]
    kept_path(config_file).write_bytes(marshal.dumps(answer))


def tear_the_answer(config_file: Path) -> None:
    answer = kept_path(config_file)
    answer.write_bytes(answer.read_bytes()[:40])


def store_an_event_without_the_mark(config_file: Path) -> None:
    """As a writer that does not replace the mark would (an earlier release's `event`)."""
    with closing(sqlite3.connect(config_file.parent / "state.db")) as raw, raw:
        body = '{"kind": "Component", "namespace": "acme", "name": "cart"}'
        raw.execute(
            "INSERT INTO event_inbox (provider, body, received_at) VALUES (?, ?, 0)",
            [PROVIDER, body],
        )


def request_a_refresh_without_the_mark(config_file: Path) -> None:
    with closing(sqlite3.connect(config_file.parent / "state.db")) as raw, raw:
        raw.execute(
            "INSERT INTO provider_facts (provider, name, value, updated_at) VALUES (?, ?, ?, 0)",
            [PROVIDER, REFRESH_REQUESTED_FACT, "yes"],
        )


def damage_the_providers_table(config_file: Path) -> None:
    """A page of the table every decision reads overwritten: the file's inode, size and
    mark are as they were; SQLite meets the damage once it reads that page."""
    state = config_file.parent / "state.db"
    with closing(sqlite3.connect(state)) as raw:
        [(root,)] = raw.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?",
            ["openchoreo_incremental_ingestion_state"],
        ).fetchall()
        [(size,)] = raw.execute("PRAGMA page_size").fetchall()
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    descriptor = os.open(state, os.O_WRONLY)
    try:
        os.pwrite(descriptor, b"\xff" * size, (root - 1) * size)
    finally:
        os.close(descriptor)


def point_the_state_link_elsewhere(config_file: Path) -> None:
    link = config_file.parent / "current.db"
    shutil.copy2(config_file.parent / "state.db", config_file.parent / "other.db")
    store_an_event(config_file, config_file.parent / "other.db")
    link.unlink()
    link.symlink_to("other.db")


def open_the_answer_to_others(config_file: Path) -> None:
    kept_path(config_file).chmod(0o644)


CHANGES: dict[str, Callable[[Path], None]] = {
    "an event stored": store_an_event,
    "a refresh requested": request_a_refresh,
    "any write transaction": commit_nothing,
    "the config file edited": edit_the_config,
    "the state file replaced by its copy": replace_the_state_with_its_copy,
    "the schema migrated": migrate_the_schema,
    "the state noted damaged": note_damage,
    "the answer file torn": tear_the_answer,
    "kept by another installation": upgrade_the_installation,
    "an event stored by a writer of no mark": store_an_event_without_the_mark,
    "a refresh requested by a writer of no mark": request_a_refresh_without_the_mark,
    "a damaged page the decision reads": damage_the_providers_table,
    "the answer file writable by others": open_the_answer_to_others,
}


class TestWhatEndsIt:
    @pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
    def test_a_change_since_it_was_kept_leaves_the_run_to_the_lean_entry(
        self, answer_kept: Path, change: Callable[[Path], None]
    ) -> None:
        textfile = answer_kept.parent / "metrics.prom"
        before = textfile.read_bytes()

        change(answer_kept)

        assert ask(answer_kept) is False
        assert textfile.read_bytes() == before  # nothing done

    def test_a_state_link_pointed_at_another_file_leaves_the_run_to_the_lean_entry(
        self, tmp_path: Path
    ) -> None:
        path = write_config(tmp_path, state={"path": "current.db"})
        (tmp_path / "state.db").touch()
        resting_state_at(path, tmp_path / "state.db")
        (tmp_path / "current.db").symlink_to("state.db")
        idle_run(path)
        assert ask(path) is True

        point_the_state_link_elsewhere(path)

        assert ask(path) is False

    def test_a_variable_the_file_names_through_a_yaml_escape_is_seen(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DEPLOY_ENV", "blue")
        path = write_config(tmp_path)
        text = path.read_text().replace(
            "metrics:\n", 'metrics:\n  labels: {env: "\\x24{DEPLOY_ENV}"}\n'
        )
        path.write_text(text)
        resting_state(load_config(path), clock_at_now())
        idle_run(path)
        assert ask(path) is True
        assert 'env="blue"' in (tmp_path / "metrics.prom").read_text()

        assert ask(path, DEPLOY_ENV="green") is False

    @pytest.mark.parametrize("token", [None, "a-token with-a-space"], ids=["unset", "unusable"])
    def test_a_token_the_environment_no_longer_gives_as_it_did_ends_it(
        self, tmp_path: Path, token: str | None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A run refuses it (exit 2): the kept answer must not hide that."""
        monkeypatch.setenv("OC_TOKEN", "token-from-the-environment-0c3a")
        openchoreo = {"baseUrl": "http://openchoreo.test/api/v1", "token": "${OC_TOKEN}"}
        path = write_config(tmp_path, openchoreo=openchoreo)
        resting_state(load_config(path), clock_at_now())
        idle_run(path)
        assert ask(path) is True
        env = {key: value for key, value in os.environ.items() if key != "OC_TOKEN"}
        if token is not None:
            env["OC_TOKEN"] = token

        assert answered(["--config", str(path), "run"], env, now()) is False
        assert token_bytes(kept_path(path)) == []  # a salted digest of it, never the token

    def test_a_token_file_removed_ends_it(self, tmp_path: Path) -> None:
        (tmp_path / "token").write_text("token-in-a-file-9d2e\n")
        (tmp_path / "token").chmod(0o600)
        openchoreo = {"baseUrl": "http://openchoreo.test/api/v1", "auth": {"tokenFile": "token"}}
        path = write_config(tmp_path, openchoreo=openchoreo)
        resting_state(load_config(path), clock_at_now())
        idle_run(path)
        assert ask(path) is True

        (tmp_path / "token").unlink()

        assert ask(path) is False

    def test_a_stale_note_of_damage_keeps_no_answer_it_would_not_take(
        self, config_file: Path
    ) -> None:
        note_damage(config_file)  # names no file: `health` ignores it, the look-up would not
        idle_run(config_file)

        assert not kept_path(config_file).exists()

    def test_events_held_keep_no_answer(self, config_file: Path) -> None:
        """Held events show in the metrics only within a window of time."""
        with SqliteLocation(config_file.parent / "state.db").open() as store:
            store.set_facts(PROVIDER, {EVENTS_HELD_FACT: "2999-01-01T00:00:00Z"}, now())
        idle_run(config_file)

        assert not kept_path(config_file).exists()

    def test_an_idle_run_from_a_directory_since_removed_still_answers(
        self, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gone = tmp_path / "gone"
        gone.mkdir()
        monkeypatch.chdir(gone)
        gone.rmdir()

        idle_run(config_file)  # exit 0, as before answers were kept

    @pytest.mark.parametrize(
        "env",
        [
            {"CHOREO_INGEST_DB": "/elsewhere/state.db"},
            {"HOME": "/elsewhere"},
            {"OC_URL": "http://other.test/api/v1"},
        ],
        ids=["state-given-apart", "another-home", "a-variable-the-file-names"],
    )
    def test_another_environment_leaves_the_run_to_the_lean_entry(
        self, tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OC_URL", "http://openchoreo.test/api/v1")
        path = write_config(tmp_path, openchoreo={"baseUrl": "${OC_URL}"})
        resting_state(load_config(path), clock_at_now())
        idle_run(path)
        assert ask(path) is True

        assert ask(path, **env) is False

    def test_another_working_directory_or_user_leaves_the_run_to_the_lean_entry(
        self, answer_kept: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with monkeypatch.context() as patched:
            patched.chdir(answer_kept.parent.parent)
            assert ask(answer_kept) is False
        with monkeypatch.context() as patched:
            patched.setattr(os, "geteuid", lambda: os.getuid() + 4242)
            assert ask(answer_kept) is False
        assert ask(answer_kept) is True

    def test_a_clock_set_back_before_it_was_kept_leaves_the_run_to_the_lean_entry(
        self, answer_kept: Path
    ) -> None:
        assert ask(answer_kept, at=kept(answer_kept)["made"] - 1) is False

    def test_the_run_lock_held_leaves_the_run_to_the_lean_entry(self, answer_kept: Path) -> None:
        with RunLock(answer_kept.parent / "state.db"):
            assert ask(answer_kept) is False
        assert ask(answer_kept) is True

    def test_a_terminal_is_told_what_the_run_does(
        self, answer_kept: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(os, "isatty", lambda descriptor: descriptor == 2)
        assert ask(answer_kept) is False

    @pytest.mark.parametrize(
        "args",
        [
            ["run", "--force"],
            ["run", "--json"],
            ["-v", "run"],
            ["run", "--provider", PROVIDER],
            ["run", "--db", "state.db"],
            ["status"],
            ["run", "run"],
            ["run", "--config"],
            ["run", "--config="],
            [],
        ],
        ids=lambda args: " ".join(args) or "nothing",
    )
    def test_any_other_command_line_is_left_to_the_lean_entry(
        self, answer_kept: Path, args: list[str]
    ) -> None:
        given = ["--config", str(answer_kept), *args] if args else []
        assert answered(given, os.environ, now()) is False


class TestWhatIsNotKept:
    def test_a_state_from_before_write_marks_is_given_one_once(self, config_file: Path) -> None:
        with closing(sqlite3.connect(config_file.parent / "state.db")) as raw, raw:
            raw.execute("DELETE FROM store_meta WHERE name = 'write_mark'")

        idle_run(config_file)

        assert ask(config_file) is True


class TestTheWriteMark:
    def test_every_committed_write_transaction_replaces_it_and_a_failed_one_does_not(
        self, config_file: Path
    ) -> None:
        location = SqliteLocation(config_file.parent / "state.db")

        def mark() -> Any:
            with location.open(readonly=True) as store:
                return store.look()

        first = mark()
        store_an_event(config_file)
        second = mark()
        with location.open() as store, pytest.raises(RuntimeError):
            rolled_back(store)

        assert first != second
        assert mark() == second
        assert first is not None
        assert first[1] == second[1]

    def test_a_copy_of_the_state_gets_a_mark_of_its_own(self, config_file: Path) -> None:
        source = SqliteLocation(config_file.parent / "state.db")
        tmp = config_file.parent
        target = tmp / "target.db"

        copied_by = run_cli(
            "--config", config_file, "migrate", "--copy-to", target, cwd=target.parent
        )

        assert copied_by.returncode == 0, copied_by.stderr
        with source.open(readonly=True) as store:
            original = store.look()
        with SqliteLocation(target).open(readonly=True) as store:
            copied = store.look()

        assert copied is not None
        assert original is not None
        assert copied[0] != original[0]


def rolled_back(store: Store) -> None:
    """A write transaction that fails before its commit."""
    with store._conn.transaction():
        store._conn.execute("INSERT INTO store_meta (name, value) VALUES ('rolled', 'back')")
        raise RuntimeError("fails before its commit")


class TestWhatItLoads:
    def test_the_second_idle_run_loads_only_the_kept_answer_s_modules(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        first, _ = lean_call(tmp_path, "--config", str(config_file), "run")
        second, modules = lean_call(tmp_path, "--config", str(config_file), "run")

        assert (first.returncode, second.returncode) == (0, 0)
        assert (second.stdout, second.stderr) == ("", "")
        assert quick_violations(modules) == []
        assert "choreo_ingest.idle_answer" in modules

    @pytest.mark.parametrize(
        ("heavy", "said"),
        [
            ("choreo_ingest.config", "own: choreo_ingest.config"),
            ("yaml", "third-party: yaml"),
            ("logging", "stdlib: logging"),
        ],
        ids=["own", "third-party", "stdlib"],
    )
    def test_the_pin_catches_a_heavy_import(
        self, tmp_path: Path, config_file: Path, heavy: str, said: str
    ) -> None:
        lean_call(tmp_path, "--config", str(config_file), "run")
        done, modules = lean_call(
            tmp_path, "--config", str(config_file), "run", prelude=f"import {heavy}"
        )
        assert done.returncode == 0
        assert said in quick_violations(modules)

    def test_a_python_without_blake2_runs_every_command_as_before(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        without = "sys.modules['_blake2'] = None"  # as a Python built without it
        for _ in range(2):  # deciding, keeping (SHA-256), then answered
            done, _ = lean_call(tmp_path, "--config", str(config_file), "run", prelude=without)
            assert (done.returncode, done.stderr) == (0, "")
        status, _ = lean_call(
            tmp_path, "--config", str(config_file), "status", "--json", prelude=without
        )
        assert status.returncode == 0
        assert json.loads(status.stdout)["providers"][0]["state"] == "resting"


def quick_violations(modules: set[str]) -> list[str]:
    own = {name for name in modules if name.startswith("choreo_ingest")}
    top_level = {name.partition(".")[0] for name in modules}
    third_party = top_level - set(sys.stdlib_module_names) - {"__main__", "choreo_ingest"}
    problems = [f"third-party: {name}" for name in sorted(third_party)]
    problems += [f"own: {name}" for name in sorted(own - QUICK_OWN)]
    problems += [f"stdlib: {name}" for name in sorted(top_level & QUICK_FORBIDDEN_STDLIB)]
    return problems
