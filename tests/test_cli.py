"""The operator's CLI: commands, options, exit codes, and stdout that carries data only.

Where stdout purity or the exit status of a real process is the point, the tests start
`python -m choreo_ingest` off a TTY; elsewhere typer's CliRunner calls the app in-process.
"""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_support import invoke, isolate
from ports import free_port
from typer.testing import Result

from choreo_ingest.cli import report_early_interrupt
from choreo_ingest.cli.failures import RUN_ERROR_FIELDS, reported
from choreo_ingest.errors import ConfigError, LockHeld
from choreo_ingest.reporting import iter_export
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server
from choreo_ingest.store import MIGRATION_NAMES, Store
from choreo_ingest.store.run_lock import RunLock

from fakes import FakeClock
from sim_support import (
    expected_refs,
    ingest_world,
    one_error_line,
    plain,
    ref_of,
    run_cli,
    write_config,
)

COMMANDS = (
    "run", "status", "providers", "health", "reset", "refresh", "migrate", "removals",
    "export", "changes", "check", "demo", "simulate", "event", "mirror",
)  # fmt: skip
RUN_KEYS = {"outcome", "exitCode", "providers", "events"}
RUN_PROVIDER_KEYS = {
    "name", "action", "state", "pages", "entitiesUpserted", "entitiesUnchanged",
    "entitiesRemoved", "removalsBlocked", "cycleCompleted", "nextActionAt", "error",
}  # fmt: skip
UNREACHABLE_URL = "http://127.0.0.1:9/api/v1"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


def document(result: Result) -> Any:
    return json.loads(result.stdout)


@pytest.fixture
def world() -> World:
    return World.generate(2, 2, 3, seed=12)


@pytest.fixture
def ingested(tmp_path: Path, world: World) -> Path:
    """A state file holding one completed cycle over `world`."""
    state_path = tmp_path / "state.db"
    ingest_world(state_path, world, FakeClock())
    return state_path


@pytest.fixture
def blocked(ingested: Path) -> Path:
    """The state after a second cycle saw nothing: its sweep is blocked."""
    outcome = ingest_world(ingested, World.empty(), FakeClock(), force=True)
    assert outcome.removals_blocked > 0
    return ingested


@pytest.fixture
def server_url(world: World) -> Iterator[str]:
    with start_server(SimulatorApi(world, SimulatorOptions(api="orgs"))) as server:
        yield server.url


@pytest.fixture
def config_file(tmp_path: Path, server_url: str) -> Path:
    return write_config(tmp_path / "config.yaml", server_url, incremental={"chunkSize": 5})


def test_help_lists_every_command(tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path)

    assert done.returncode == 0
    listed = set(re.findall(r"^│ ([a-z]+)\s", done.stdout, flags=re.MULTILINE))
    assert listed >= set(COMMANDS), set(COMMANDS) - listed


def test_help_shows_a_type_only_beside_an_option_that_takes_a_value(tmp_path: Path) -> None:
    top = run_cli("--help", cwd=tmp_path, env={"COLUMNS": "120"})
    run = run_cli("run", "--help", cwd=tmp_path, env={"COLUMNS": "120"})

    rows = {  # an option's first column, and the type shown beside it ("" for none)
        line.split()[1]: (re.findall(r"<[a-z]+>", line) or [""])[0]
        for done in (top, run)
        for line in done.stdout.splitlines()
        if line.startswith("│ --")
    }
    assert rows["--config"] == "<path>"
    assert rows["--provider"] == "<str>"
    flags_and_counts = ("--force", "--json", "--verbose", "--version", "--log-json", "--help")
    assert {flag: rows[flag] for flag in flags_and_counts} == dict.fromkeys(flags_and_counts, "")


def test_migrate_applies_once_then_finds_nothing_pending(tmp_path: Path) -> None:
    db = tmp_path / "state.db"

    first = run_cli("migrate", "--db", db, "--json", cwd=tmp_path)
    second = run_cli("migrate", "--db", db, "--json", cwd=tmp_path)

    assert (first.returncode, second.returncode) == (0, 0)
    assert json.loads(first.stdout)["appliedNow"] == list(MIGRATION_NAMES)
    again = json.loads(second.stdout)
    assert again["appliedNow"] == []
    assert again["pending"] == []
    assert again["applied"] == list(MIGRATION_NAMES)


class TestRun:
    def test_json_is_exactly_one_document_with_the_documented_keys(
        self, tmp_path: Path, config_file: Path, world: World
    ) -> None:
        done = run_cli("run", "--json", "--config", config_file, "--db", "state.db", cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)  # raises if stdout holds anything more
        assert set(result) == RUN_KEYS
        assert (result["outcome"], result["exitCode"]) == ("burst", 0)
        [provider] = result["providers"]
        assert set(provider) == RUN_PROVIDER_KEYS
        assert provider["cycleCompleted"] is True
        assert provider["entitiesUpserted"] == len(expected_refs(world))

    def test_off_a_tty_prints_nothing_on_success(self, tmp_path: Path, config_file: Path) -> None:
        burst = run_cli("run", "--config", config_file, "--db", "state.db", cwd=tmp_path)
        nothing_due = run_cli("run", "--config", config_file, "--db", "state.db", cwd=tmp_path)

        for done in (burst, nothing_due):
            assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert (tmp_path / "state.db").is_file()

    def test_config_warning_is_logged_once_at_v_and_not_mailed_by_cron(
        self, tmp_path: Path, server_url: str
    ) -> None:
        """Off a terminal a config warning is an INFO line: cron would mail a deliberate
        `insecureSkipVerify` every minute. `check`, a terminal and `-v` show it."""
        config = write_config(tmp_path / "config.yaml", server_url, token="s3cret")
        config.chmod(0o644)

        shown = run_cli("-v", "run", "--config", config, "--db", "state.db", cwd=tmp_path)
        under_cron = [
            run_cli("run", "--config", config, "--db", "state.db", cwd=tmp_path) for _ in "ab"
        ]

        assert shown.returncode == 0, shown.stderr
        assert shown.stderr.count("readable by others") == 1
        assert "s3cret" not in shown.stderr
        assert [(done.returncode, done.stdout, done.stderr) for done in under_cron] == [
            (0, "", "")
        ] * 2

    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (["run"], ""),
            (["-v", "run"], "another choreo-ingest run holds"),
            (["run", "--json"], None),
        ],
        ids=["quiet-under-cron", "verbose", "json"],
    )
    def test_exits_75_while_another_run_holds_the_lock(
        self, tmp_path: Path, args: list[str], says: str | None
    ) -> None:
        config = write_config(tmp_path / "config.yaml", UNREACHABLE_URL)
        db = tmp_path / "state.db"

        with RunLock(db):
            done = run_cli(*args, "--config", config, "--db", db, cwd=tmp_path)

        assert done.returncode == 75
        if says is None:
            assert json.loads(done.stdout) == {
                "outcome": "locked",
                "exitCode": 75,
                "providers": [],
                "events": {"applied": 0, "retried": 0, "parked": 0, "dropped": 0, "held": []},
            }
            return
        assert done.stdout == ""
        assert says in done.stderr if says else done.stderr == ""

    def test_a_dropped_event_backlog_is_counted_in_the_json(self, tmp_path: Path) -> None:
        config = tmp_path / "config.yaml"
        document = {"openchoreo": {"baseUrl": UNREACHABLE_URL, "events": {"maxPending": 1}}}
        config.write_text(yaml.safe_dump(document))
        db = tmp_path / "state.db"
        events = [
            {"kind": "Component", "name": f"c{number}", "namespace": "acme", "action": "updated"}
            for number in range(3)
        ]
        stored = run_cli(
            "event", "--config", config, "--db", db, cwd=tmp_path, stdin=json.dumps(events)
        )
        assert stored.returncode == 0, stored.stderr

        done = run_cli("run", "--json", "--config", config, "--db", db, cwd=tmp_path)

        assert json.loads(done.stdout)["events"] == {
            "applied": 0,
            "retried": 0,
            "parked": 0,
            "dropped": 3,
            "held": [],
        }

    def test_every_json_document_has_the_keys_of_a_burst(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        """A script reads `events` (and the rest) whatever the outcome: a burst, a lock held by
        another run, a config error, a usage error."""
        db = tmp_path / "state.db"
        burst = run_cli("run", "--json", "--config", config_file, "--db", db, cwd=tmp_path)
        with RunLock(db):
            locked = run_cli("run", "--json", "--config", config_file, "--db", db, cwd=tmp_path)
        no_api = write_config(tmp_path / "no-api.yaml", None)
        config_error = run_cli("run", "--json", "--config", no_api, "--db", db, cwd=tmp_path)
        usage_error = run_cli("run", "--json", "--bogus", cwd=tmp_path)

        documents = [json.loads(done.stdout) for done in (burst, locked, config_error, usage_error)]
        assert [(d["outcome"], d["exitCode"]) for d in documents] == [
            ("burst", 0),
            ("locked", 75),
            ("error", 2),
            ("error", 2),
        ]
        assert [set(d) - {"error"} for d in documents] == [RUN_KEYS] * 4
        assert [set(d["events"]) for d in documents] == [set(documents[0]["events"])] * 4

    def test_refresh_now_on_a_state_not_there_yet_makes_it_as_run_does(
        self, tmp_path: Path
    ) -> None:
        """Its burst follows at once, as a first `run`'s would; a plain `refresh` is refused."""
        config = write_config(tmp_path / "config.yaml", UNREACHABLE_URL)
        db = tmp_path / "state.db"

        args = ("--config", config, "--db", db)
        done = run_cli("refresh", "openchoreo", "--now", "--json", *args, cwd=tmp_path)

        assert json.loads(done.stdout)["outcome"] == "failed"  # the API is not there
        assert done.returncode == 3
        assert db.exists()

    def test_refresh_now_says_locked_as_run_does(self, tmp_path: Path) -> None:
        config = write_config(tmp_path / "config.yaml", UNREACHABLE_URL)
        db = tmp_path / "state.db"
        args = ("--config", config, "--db", db)
        assert run_cli("migrate", *args, cwd=tmp_path).returncode == 0

        with RunLock(db):
            done = run_cli("refresh", "openchoreo", "--now", "--json", *args, cwd=tmp_path)

        assert done.returncode == 75
        document = json.loads(done.stdout)
        assert (document["outcome"], document["exitCode"]) == ("locked", 75)

    @pytest.mark.parametrize(
        ("yaml_text", "key_path"),
        [
            ("openchoreo: {incremental: {chunkSize: 5000}}\n", "openchoreo.incremental.chunkSize"),
            ("openchoreo: {incremental: {burstLenght: 5}}\n", "openchoreo.incremental.burstLenght"),
            ("mapping:\n  defaultOwner: guests\n", "mapping.defaultOwner"),
            ("providers: openchoreo\n", "providers"),
        ],
        ids=["out-of-range", "misspelt-key", "short-owner-ref", "not-a-list"],
    )
    def test_bad_config_exits_2_naming_the_key_path(
        self, tmp_path: Path, yaml_text: str, key_path: str
    ) -> None:
        config = tmp_path / "bad.yaml"
        config.write_text(yaml_text)

        result = invoke("run", "--config", config, "--db", tmp_path / "state.db")

        assert result.exit_code == 2
        assert f"error: {key_path}:" in plain(result.stderr)
        assert result.stdout == ""
        assert not (tmp_path / "state.db").exists()


class TestStateCommands:
    def test_config_and_db_are_accepted_after_the_command_name(
        self, tmp_path: Path, ingested: Path
    ) -> None:
        config = write_config(tmp_path / "config.yaml", None, state={"path": ingested.name})

        outcomes = [
            invoke("--db", ingested, "status", "--json"),
            invoke("status", "--json", "--db", ingested),
            invoke("--config", config, "status", "--json"),
            invoke("status", "--config", config, "--json"),
        ]

        assert [result.exit_code for result in outcomes] == [0, 0, 0, 0]
        states = [document(result)["providers"][0]["state"] for result in outcomes]
        assert states == ["resting"] * 4
        assert {Path(document(result)["stateFile"]).resolve() for result in outcomes} == {
            ingested.resolve()
        }

    def test_status_json_names_a_state_file_given_relative_by_its_absolute_path(
        self, ingested: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A script that reads `stateFile` may run elsewhere: `var/state.db` named no file."""
        monkeypatch.chdir(ingested.parent)

        result = invoke("status", "--json", "--db", ingested.name)

        assert result.exit_code == 0, result.output
        assert document(result)["stateFile"] == str(ingested.absolute())

    def test_status_json_has_api_null_until_a_cycle_finds_the_api(self, tmp_path: Path) -> None:
        """A script reads `api` as a key: it is there, null, while no burst has reached the API."""
        config = write_config(
            tmp_path / "config.yaml", "http://127.0.0.1:9", token="t", state={"path": "state.db"}
        )
        assert invoke("--config", config, "run").exit_code == 3  # connection refused

        [provider] = document(invoke("--config", config, "status", "--json"))["providers"]

        assert provider["api"] is None
        assert provider["lastError"]

    @pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
    def test_status_on_a_missing_state_file_exits_4(self, tmp_path: Path, as_json: bool) -> None:
        flags = ["--json"] if as_json else []

        result = invoke("status", *flags, "--db", tmp_path / "missing.db")

        assert result.exit_code == 4
        assert "no state file yet" in result.stderr
        if as_json:
            assert document(result)["exitCode"] == 4
        assert not (tmp_path / "missing.db").exists()

    @pytest.mark.parametrize(
        "command",
        [
            ("status",),
            ("status", "--json"),
            ("export",),
            ("changes",),
            ("removals",),
            ("reset", "openchoreo", "--yes"),
            ("removals", "approve", "openchoreo", "--yes"),
            ("refresh", "openchoreo"),
        ],
        ids=" ".join,
    )
    def test_a_state_file_whose_directory_is_missing_says_the_directory_is_missing(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        """`run` and `migrate` would refuse that directory too: "no state file yet" alone sends
        the operator to them."""
        state = tmp_path / "nodir" / "x" / "state.db"

        done = run_cli(*command, "--db", state, cwd=tmp_path)

        assert done.returncode == 4
        assert plain(done.stderr).splitlines()[0] == (
            f"choreo-ingest: error: {state}: no state file yet, and directory "
            f"{state.parent} does not exist: create it (`choreo-ingest run` and `migrate` do not)"
        )
        assert not (tmp_path / "nodir").exists()

    @pytest.mark.parametrize(
        "command",
        [("status",), ("export",), ("changes",), ("check",), ("run",), ("migrate",)],
        ids=" ".join,
    )
    def test_a_state_file_below_a_regular_file_says_that_is_no_directory(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        """Told "create it", the operator would find the file there already."""
        (tmp_path / "afile").write_text("")
        state = tmp_path / "afile" / "state.db"
        (tmp_path / "choreo-ingest.yaml").write_text(
            "openchoreo: {baseUrl: 'http://127.0.0.1:9'}\n"
        )

        done = run_cli(*command, "--db", state, cwd=tmp_path)

        assert done.returncode == 4
        assert f"{tmp_path / 'afile'} is not a directory" in plain(done.stderr)
        assert "does not exist" not in plain(done.stderr)
        assert "create it" not in plain(done.stderr)

    def test_a_state_named_by_the_environment_says_so_where_there_is_none(
        self, tmp_path: Path
    ) -> None:
        """A `$CHOREO_INGEST_DB` left set in a shell points away from the config's state file;
        the error must say where the path it names came from."""
        configured = tmp_path / "configured.db"
        assert run_cli("migrate", "--db", configured, cwd=tmp_path).returncode == 0
        (tmp_path / "choreo-ingest.yaml").write_text(f"state: {{path: {configured}}}\n")
        stray = tmp_path / "stray.db"

        for command in (("status",), ("export",), ("changes",), ("health",)):
            done = run_cli(*command, cwd=tmp_path, env={"CHOREO_INGEST_DB": str(stray)})

            said = plain(done.stdout if command == ("health",) else done.stderr)
            assert str(stray) in said, command
            assert "$CHOREO_INGEST_DB gave this state" in said, command
        assert run_cli("status", cwd=tmp_path).returncode == 0

    def test_health_of_a_state_whose_directory_is_missing_says_to_create_it(
        self, tmp_path: Path
    ) -> None:
        state = tmp_path / "nodir" / "state.db"

        done = run_cli("health", "--json", "--db", state, cwd=tmp_path)

        assert done.returncode == 1
        assert json.loads(done.stdout)["problems"] == [
            f"no state yet at {state}, and directory {state.parent} does not exist: "
            "create it, then run `choreo-ingest run`"
        ]

    def test_a_state_file_missing_from_a_directory_there_says_only_that(
        self, tmp_path: Path
    ) -> None:
        done = run_cli("status", "--db", tmp_path / "state.db", cwd=tmp_path)

        assert (done.returncode, plain(done.stderr)) == (
            4,
            f"choreo-ingest: error: {tmp_path / 'state.db'}: no state file yet "
            "(`choreo-ingest run` or `choreo-ingest migrate` creates it)\n",
        )

    @pytest.mark.parametrize(
        "command",
        [("status",), ("status", "--json"), ("export",), ("changes",), ("removals",)],
        ids=" ".join,
    )
    def test_no_config_found_and_no_state_here_says_no_config_was_found(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        """sudo, cron or a new shell without $CHOREO_INGEST_CONFIG: advice to make a state in
        the current directory would leave a stray one that `health` then calls healthy."""
        done = run_cli(*command, cwd=tmp_path)

        assert (done.returncode, plain(done.stderr)) == (
            4,
            f"choreo-ingest: error: {tmp_path / 'choreo-ingest.db'}: no state file yet, and no "
            "config file was found (--config, $CHOREO_INGEST_CONFIG, ./choreo-ingest.yaml) to "
            "say where the state is\n",
        )
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
    def test_health_with_no_config_found_and_no_state_here_says_no_config_was_found(
        self, tmp_path: Path, as_json: bool
    ) -> None:
        done = run_cli("health", *(["--json"] if as_json else []), cwd=tmp_path)

        problem = (
            f"no state yet at {tmp_path / 'choreo-ingest.db'}, and no config file was found "
            "(--config, $CHOREO_INGEST_CONFIG, ./choreo-ingest.yaml) to say where the state is"
        )
        assert done.returncode == 1
        assert (json.loads(done.stdout)["problems"] if as_json else done.stdout) == (
            [problem] if as_json else f"{problem}\n"
        )

    def test_a_config_without_a_state_path_keeps_the_advice_to_make_the_state(
        self, tmp_path: Path
    ) -> None:
        config = write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9", token="t")

        done = run_cli("status", "--config", config, cwd=tmp_path)

        assert (done.returncode, plain(done.stderr)) == (
            4,
            "choreo-ingest: error: choreo-ingest.db: no state file yet "
            "(`choreo-ingest run` or `choreo-ingest migrate` creates it)\n",
        )

    @pytest.mark.parametrize(
        "command",
        [
            ("reset", "openchoreo", "--yes"),
            ("removals", "approve", "openchoreo", "--yes"),
            ("refresh", "openchoreo"),
        ],
        ids=["reset", "approve", "refresh"],
    )
    def test_a_change_to_a_state_not_there_yet_is_refused_and_creates_none(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        """A mistyped --db must not become a new, empty state that took the change."""
        mistyped = tmp_path / "stat.db"

        result = invoke(*command, "--json", "--db", mistyped)

        assert result.exit_code == 4
        assert "no state file yet" in document(result)["error"]
        assert list(tmp_path.iterdir()) == []

    def test_reset_off_a_tty_needs_yes(self, ingested: Path) -> None:
        refused = invoke("reset", "openchoreo", "--db", ingested)
        still = document(invoke("status", "--json", "--db", ingested))["providers"][0]
        done = invoke("reset", "openchoreo", "--yes", "--purge", "--json", "--db", ingested)
        after = document(invoke("status", "--json", "--db", ingested))["providers"][0]

        assert refused.exit_code == 2
        assert "--yes" in refused.stderr
        assert still["state"] == "resting"
        assert done.exit_code == 0
        assert document(done)["purged"] == still["activeEntities"] > 0
        assert (after["state"], after["activeEntities"]) == ("idle", 0)

    @pytest.mark.parametrize(
        ("column", "value"),
        [("state", "paused"), ("cursor", "{not json")],
        ids=["state", "cursor"],
    )
    def test_a_stored_state_no_version_writes_is_a_state_error_that_reset_clears(
        self, ingested: Path, tmp_path: Path, column: str, value: str
    ) -> None:
        """A newer choreo-ingest's state left behind by a rollback is an error about the state
        (exit 4) naming the provider and the way out, not an internal error (exit 1)."""
        with closing(sqlite3.connect(ingested)) as conn, conn:
            conn.execute(f"UPDATE openchoreo_incremental_ingestion_state SET {column} = ?", [value])

        config = write_config(tmp_path / "config.yaml", UNREACHABLE_URL)
        answers = {
            command: invoke(command, "--json", "--db", ingested, "--config", config)
            for command in ("status", "health", "run")
        }
        reset = invoke("reset", "openchoreo", "--yes", "--db", ingested)
        after = document(invoke("status", "--json", "--db", ingested))["providers"][0]

        for answer in answers.values():
            assert answer.exit_code == 4
            assert "provider 'openchoreo': its stored state cannot be read" in answer.stderr
            assert "`choreo-ingest reset openchoreo`" in answer.stderr
        assert reset.exit_code == 0
        assert after["state"] == "idle"
        assert after["activeEntities"] > 0  # the catalog stays; the next run starts a cycle

    def test_blocked_removals_are_listed_then_applied_on_approval(self, blocked: Path) -> None:
        listed = invoke("removals", "--json", "--db", blocked)
        unconfirmed = invoke("removals", "approve", "openchoreo", "--db", blocked)
        approved = invoke("removals", "approve", "openchoreo", "--yes", "--json", "--db", blocked)
        after = invoke("removals", "openchoreo", "--json", "--db", blocked)

        [pending] = document(listed)["providers"]
        assert pending["blocked"] is True
        assert "rejectEmptySourceCollections" in pending["reason"]
        assert len(pending["refs"]) == min(pending["count"], 100)
        assert unconfirmed.exit_code == 2
        assert document(approved)["removed"] == pending["count"]
        assert document(approved)["cycle"] == pending["cycle"]  # the sweep that held them back
        assert document(after)["providers"][0]["blocked"] is False
        assert list(iter_export(blocked)) == []

    def test_an_approval_pinned_to_another_cycle_removes_nothing(self, blocked: Path) -> None:
        """Reviewed, then a later cycle blocked other removals: `--cycle` approves only what
        was reviewed (a script's `--yes` alone approves whatever is blocked by then)."""
        [pending] = document(invoke("removals", "--json", "--db", blocked))["providers"]
        cycle = pending["cycle"]
        wrong = str(cycle + 1)

        refused = invoke(
            "removals",
            "approve",
            "openchoreo",
            "--cycle",
            wrong,
            "--yes",
            "--json",
            "--db",
            blocked,
        )
        still = document(invoke("removals", "openchoreo", "--json", "--db", blocked))
        approved = invoke(
            "removals", "approve", "openchoreo", "--cycle", str(cycle), "--yes", "--json",
            "--db", blocked,
        )  # fmt: skip

        assert refused.exit_code == 2
        assert f"cycle {cycle}'s {pending['count']:,} removals are blocked now" in refused.stderr
        assert document(refused)["exitCode"] == 2
        assert still["providers"][0]["count"] == pending["count"]
        assert document(approved) == {"provider": "openchoreo", "removed": pending["count"],
                                      "cycle": cycle}  # fmt: skip
        assert list(iter_export(blocked)) == []

    def test_approving_when_nothing_is_blocked_asks_nothing(self, ingested: Path) -> None:
        """The question would name no cycle, and a yes given later would approve whatever a
        cycle had blocked meanwhile, unseen."""
        done = invoke("removals", "approve", "openchoreo", "--db", ingested)

        assert done.exit_code == 0, done.stderr
        assert done.stdout == "openchoreo: no blocked removals\n"

    def test_the_listing_names_the_blocked_cycle_and_how_to_approve_it(self, blocked: Path) -> None:
        [pending] = document(invoke("removals", "--json", "--db", blocked))["providers"]

        listed = invoke("removals", "--db", blocked)

        assert f"removals blocked (cycle {pending['cycle']})" in listed.stdout
        assert f"removals approve openchoreo --cycle {pending['cycle']}" in listed.stdout

    def test_yaml_export_is_a_yaml_stream_of_the_catalog(
        self, tmp_path: Path, ingested: Path, world: World
    ) -> None:
        done = run_cli("export", "--format", "yaml", "--db", ingested, cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        documents = list(yaml.safe_load_all(done.stdout))
        assert documents == list(iter_export(ingested))
        assert {ref_of(body) for body in documents} == expected_refs(world)

    def test_export_by_kind_prints_only_that_kind(self, ingested: Path, world: World) -> None:
        result = invoke("export", "--kind", "system", "--db", ingested)

        kinds = [json.loads(line)["kind"] for line in result.stdout.splitlines()]
        assert kinds == ["System"] * sum(1 for ref in expected_refs(world) if ref[:7] == "system:")

    def test_changes_since_a_sequence_number(self, ingested: Path, world: World) -> None:
        everything = document(invoke("changes", "--json", "--db", ingested))
        window = ("--since", "5", "--limit", "3", "--db", ingested)
        tail = document(invoke("changes", *window, "--json"))
        lines = invoke("changes", *window).stdout

        assert len(everything["changes"]) == len(expected_refs(world))
        assert everything["lastSeq"] == everything["changes"][-1]["seq"]
        assert [row["seq"] for row in tail["changes"]] == [6, 7, 8]
        assert tail["lastSeq"] == 8
        assert [json.loads(line) for line in lines.splitlines()] == tail["changes"]
        assert set(tail["changes"][0]) == {"seq", "at", "op", "ref", "provider"}

    @pytest.mark.parametrize("entry", ["lean", "full"])
    def test_changes_refuses_a_since_it_cannot_read_on_from(
        self, ingested: Path, tmp_path: Path, entry: str
    ) -> None:
        """Pruned changes after `--since`, or a `--since` past the newest change: rows would go
        missing without a word, so the command says so, as serve's /changes answers 410."""
        with Store.open(ingested) as store:
            store.prune_changes(0.0, max_rows=4)  # the newest four kept
            newest = store.last_change_seq()

        def changes(*args: str) -> tuple[int, str, str]:
            if entry == "lean":
                done = run_cli("changes", *args, "--json", "--db", ingested, cwd=tmp_path)
                return done.returncode, done.stdout, done.stderr
            result = invoke("changes", *args, "--json", "--db", ingested)
            return result.exit_code, result.stdout, result.stderr

        pruned = changes("--since", "3")
        ahead = changes("--since", str(newest + 1))
        retained = changes()

        advice = "copy the catalog again (export), then read on from changes --json's newestSeq"
        oldest = newest - 3
        assert pruned[0] == ahead[0] == 2
        assert json.loads(pruned[1])["error"] == (
            f"changes after seq 3 were pruned (oldest retained: {oldest}); {advice}"
        )
        assert json.loads(ahead[1])["error"].startswith(f"seq {newest + 1} is past the newest")
        assert retained[0] == 0, retained[2]
        listing = json.loads(retained[1])
        assert [row["seq"] for row in listing["changes"]] == list(range(oldest, newest + 1))
        assert (listing["oldestSeq"], listing["newestSeq"], listing["lastSeq"]) == (
            oldest,
            newest,
            newest,
        )
        assert listing["storeId"]

    @pytest.mark.parametrize("entry", ["lean", "full"])
    def test_changes_since_at_refuses_a_change_made_at_another_time(
        self, ingested: Path, tmp_path: Path, entry: str
    ) -> None:
        """A state put back from an older copy reuses seqs: the `at` a follower read of its last
        change (`lastAt`) tells the change it followed from another under the same seq."""

        def changes(*args: str) -> tuple[int, dict[str, Any]]:
            if entry == "lean":
                done = run_cli("changes", *args, "--json", "--db", ingested, cwd=tmp_path)
                return done.returncode, json.loads(done.stdout)
            result = invoke("changes", *args, "--json", "--db", ingested)
            return result.exit_code, json.loads(result.stdout)

        _, first = changes("--limit", "3")
        read_at = first["changes"][-1]["at"]
        _, caught_up = changes("--since", str(first["newestSeq"]))
        same = changes("--since", "3", "--since-at", read_at, "--limit", "2")
        other = changes("--since", "3", "--since-at", "2020-01-01T00:00:00Z")
        alone = changes("--since-at", read_at)

        assert first["lastSeq"] == 3
        assert first["lastAt"] == read_at
        assert caught_up["changes"] == []
        assert caught_up["lastSeq"] == first["newestSeq"]
        assert caught_up["lastAt"] is not None
        assert same[0] == 0
        assert [row["seq"] for row in same[1]["changes"]] == [4, 5]
        assert same[1]["lastAt"] == same[1]["changes"][-1]["at"]
        assert other[0] == 2
        assert other[1]["error"] == (
            f"change 3 was made at {read_at}, not at 2020-01-01T00:00:00Z as the one followed: "
            "the state was put back from an older copy; copy the catalog again (export), then "
            "read on from changes --json's newestSeq"
        )
        assert alone[0] == 2
        assert alone[1]["error"].startswith("--since-at: needs --since")


class TestCheck:
    def test_passes_against_a_reachable_simulator(self, tmp_path: Path, config_file: Path) -> None:
        done = run_cli("check", "--json", "--config", config_file, "--db", "state.db", cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["ok"], report["exitCode"]) == (True, 0)
        checks = {check["name"]: check for check in report["checks"]}
        assert checks["openchoreo.server"]["ok"]
        assert checks["openchoreo.api"]["ok"]
        assert "the orgs API, reachable and authorized" in checks["openchoreo.api"]["detail"]

    def test_a_config_warning_passes_as_a_warning(self, tmp_path: Path, server_url: str) -> None:
        """What `run` only warns about (a token in a file others may read) asks for a look;
        it does not fail the preflight."""
        config = write_config(tmp_path / "config.yaml", server_url, token="s3cret")
        config.chmod(0o644)

        report = run_cli("check", "--json", "--config", config, "--db", "state.db", cwd=tmp_path)
        lines = run_cli("check", "--config", config, "--db", "state.db", cwd=tmp_path)

        assert report.returncode == 0, report.stderr
        document = json.loads(report.stdout)
        assert document["ok"] is True
        [warned] = [check for check in document["checks"] if check["warning"]]
        assert warned["name"] == "config"
        assert warned["ok"] is True
        assert "readable by others (mode 0644); chmod 600 it" in warned["detail"]
        assert lines.returncode == 0, lines.stderr
        [line] = plain(lines.stderr).splitlines()  # once: as a check, not also as a log line
        assert line.startswith("choreo-ingest: warning: config: ")
        assert line.endswith("chmod 600 it")
        assert "s3cret" not in report.stdout + report.stderr + lines.stderr

    def test_fails_against_a_dead_port(self, tmp_path: Path) -> None:
        url = f"http://127.0.0.1:{free_port()}/api/v1"
        config = write_config(tmp_path / "config.yaml", url, incremental={"requestTimeout": 1})

        done = run_cli("check", "--json", "--config", config, "--db", "state.db", cwd=tmp_path)

        assert done.returncode == 2
        report = json.loads(done.stdout)
        assert (report["ok"], report["exitCode"]) == (False, 2)  # as every --json error says it
        failed = [check for check in report["checks"] if not check["ok"]]
        assert [check["name"] for check in failed] == ["openchoreo.server"]
        assert "unreachable" in failed[0]["detail"]

    @pytest.mark.parametrize(
        ("db", "says"),
        [
            ("notes.txt", "not an SQLite file, so not a choreo-ingest state file"),
            ("missing/state.db", "directory missing does not exist"),
        ],
        ids=["not-a-state-file", "directory-missing"],
    )
    def test_a_state_store_it_cannot_use_exits_4_as_run_would(
        self, tmp_path: Path, db: str, says: str
    ) -> None:
        """The exit code table's state store error, whatever else failed beside it (`run`
        opens the state store before it calls the API)."""
        (tmp_path / "notes.txt").write_text("not a state\n")
        url = f"http://127.0.0.1:{free_port()}/api/v1"
        config = write_config(tmp_path / "config.yaml", url, incremental={"requestTimeout": 1})

        done = run_cli("check", "--json", "--config", config, "--db", db, cwd=tmp_path)

        assert done.returncode == 4, done.stderr
        report = json.loads(done.stdout)
        assert (report["ok"], report["exitCode"]) == (False, 4)
        failed = {check["name"]: check["detail"] for check in report["checks"] if not check["ok"]}
        assert list(failed) == ["openchoreo.server", "--db"]  # where the store came from
        assert says in failed["--db"]


def test_piped_status_draws_its_table_in_ascii(tmp_path: Path, ingested: Path) -> None:
    """Off a TTY (a pipe, a file, cron's mail) a table needs no box-drawing characters."""
    done = run_cli("status", "--db", ingested, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "openchoreo" in done.stdout
    assert done.stdout.isascii(), sorted({c for c in done.stdout if not c.isascii()})
    assert "+---" in done.stdout


def test_help_offers_shell_completion(tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "--install-completion" in done.stdout
    assert "--show-completion" in done.stdout


def test_shell_completion_completes_command_names(tmp_path: Path) -> None:
    """What the installed completion script asks: bash's words in, candidates out."""
    done = run_cli(
        cwd=tmp_path,
        env={
            "_CHOREO_INGEST_COMPLETE": "complete_bash",
            "COMP_WORDS": "choreo-ingest st",
            "COMP_CWORD": "1",
        },
    )

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.split() == ["status"]


class TestReported:
    @pytest.mark.parametrize(
        ("error", "outcome", "code"),
        [
            (KeyboardInterrupt(), "interrupted", 130),
            (LockHeld("another choreo-ingest run holds the lock"), "locked", 75),
            (ConfigError("bad", path="x"), "error", 2),
        ],
        ids=["interrupted", "locked", "config-error"],
    )
    def test_a_runs_json_outcome_says_what_happened(
        self, capsys: pytest.CaptureFixture[str], error: BaseException, outcome: str, code: int
    ) -> None:
        assert reported(error, True, RUN_ERROR_FIELDS) == code

        document = json.loads(capsys.readouterr().out)
        assert (document["outcome"], document["exitCode"], document["providers"]) == (
            outcome,
            code,
            [],
        )
        assert set(document) - {"error"} == RUN_KEYS

    @pytest.mark.parametrize(
        ("args", "fields"),
        [
            (
                ["run", "--bogus"],
                {
                    "outcome": "error",
                    "providers": [],
                    "events": {"applied": 0, "retried": 0, "parked": 0, "dropped": 0, "held": []},
                },
            ),
            (["health", "--bogus"], {"healthy": False}),
            (["status", "--bogus"], {}),
        ],
        ids=["run", "health", "status"],
    )
    def test_a_usage_errors_json_carries_the_commands_usual_keys(
        self, tmp_path: Path, args: list[str], fields: dict[str, Any]
    ) -> None:
        done = run_cli(*args, "--json", cwd=tmp_path)

        assert done.returncode == 2
        document = json.loads(done.stdout)
        assert document.pop("error").startswith("No such option: --bogus")
        assert document == {**fields, "exitCode": 2}

    @pytest.mark.parametrize(
        ("args", "said"),
        [
            (["export", "--json"], "export: No such option: --json"),
            (["--bogus", "export", "--json"], "No such option: --bogus"),
            (["--log-json", "--log-console", "export", "--json"], "cannot be combined"),
        ],
        ids=["refused-by-export", "refused-before-export", "global-options-clash"],
    )
    def test_a_json_flag_given_to_a_command_without_it_prints_no_document(
        self, tmp_path: Path, args: list[str], said: str
    ) -> None:
        """`export > catalog.ndjson` must not find an error document where its data goes."""
        done = run_cli(*args, "--db", tmp_path / "state.db", cwd=tmp_path)

        assert (done.returncode, done.stdout) == (2, "")
        assert said in one_error_line(done.stderr)

    @pytest.mark.parametrize(
        ("given", "named"),
        [
            ("-v", "-v"),
            ("-vv", "-v"),
            ("--log-json", "--log-json"),
            ("--log-console", "--log-console"),
        ],
    )
    def test_choreo_ingests_own_option_after_the_command_says_where_it_goes(
        self, tmp_path: Path, given: str, named: str
    ) -> None:
        """`run --help` does not list `-v`, so sending the operator there would not help."""
        done = run_cli("run", given, cwd=tmp_path)

        assert done.returncode == 2
        assert one_error_line(done.stderr).endswith(
            f"({named} is choreo-ingest's own option: give it before `run`)"
        )

    def test_a_value_not_among_an_options_choices_is_named_in_plain_words(
        self, tmp_path: Path
    ) -> None:
        done = run_cli("export", "--format", "json", "--db", tmp_path / "state.db", cwd=tmp_path)

        assert done.returncode == 2
        assert one_error_line(done.stderr) == (
            "choreo-ingest: error: export: Invalid value for '--format' / '-f': 'json' is not "
            "one of 'ndjson', 'yaml'. (see `choreo-ingest export --help`)"
        )

    @pytest.mark.parametrize(
        ("args", "fields", "error"),
        [
            (["run", "--json", "--config"], RUN_ERROR_FIELDS, "Option '--config' requires"),
            (["--bogus", "run", "--json"], RUN_ERROR_FIELDS, "No such option: --bogus"),
            (["health", "--json", "-c"], {"healthy": False}, "Option '-c' requires"),
            (["--db", "run", "status", "--json", "--db"], {}, "Option '--db' requires"),
            (["refresh", "p", "--json", "--now", "-c"], RUN_ERROR_FIELDS, "Option '-c' requires"),
            (["refresh", "p", "--json", "-c"], {}, "Option '-c' requires"),
            (["refresh", "--json"], {}, "Missing argument 'PROVIDER'"),
            (["refresh", "p", "--json", "--bogus"], {}, "No such option: --bogus"),
            (["refresh", "--json", "--now"], RUN_ERROR_FIELDS, "Missing argument 'PROVIDER'"),
        ],
        ids=[
            "run-missing-value",
            "global-before-run",
            "health-missing-value",
            "db-named-run",
            "refresh-now-runs",
            "refresh-alone-runs-nothing",
            "refresh-alone-missing-provider",
            "refresh-alone-unknown-option",
            "refresh-now-missing-provider",
        ],
    )
    def test_a_usage_error_click_finds_before_the_command_still_carries_its_keys(
        self, tmp_path: Path, args: list[str], fields: dict[str, Any], error: str
    ) -> None:
        done = run_cli(*args, cwd=tmp_path)

        assert done.returncode == 2
        document = json.loads(done.stdout)
        assert document.pop("error").startswith(error)
        assert document == {**fields, "exitCode": 2}

    @pytest.mark.parametrize(
        ("now", "fields"), [([], {}), (["--now"], RUN_ERROR_FIELDS)], ids=["alone", "now"]
    )
    def test_refresh_reports_an_error_with_a_runs_keys_only_when_it_runs(
        self, tmp_path: Path, now: list[str], fields: dict[str, Any]
    ) -> None:
        """`refresh --json` prints `{provider, state, due}`; with `--now`, a `run` document."""
        done = run_cli("refresh", "nope", "--json", *now, cwd=tmp_path)

        assert done.returncode == 2
        document = json.loads(done.stdout)
        assert document.pop("error").startswith("provider 'nope' is not configured")
        assert document == {**fields, "exitCode": 2}

    @pytest.mark.parametrize(
        ("args", "document"),
        [
            (
                ["--config", "c.yaml", "run", "--json"],
                {**RUN_ERROR_FIELDS, "outcome": "interrupted", "exitCode": 130},
            ),
            (["status", "--json"], {"exitCode": 130}),
            (["--config", "run", "status", "--json"], {"exitCode": 130}),
            (["status"], None),
        ],
        ids=["run-json", "status-json", "config-named-run", "status"],
    )
    def test_an_interrupt_while_modules_load_is_reported_as_a_command_reports_it(
        self, capsys: pytest.CaptureFixture[str], args: list[str], document: dict[str, Any] | None
    ) -> None:
        report_early_interrupt(args)

        out, err = capsys.readouterr()
        assert plain(err) == "choreo-ingest: error: interrupted\n"
        if document is None:
            assert out == ""
        else:
            assert json.loads(out) == {**document, "error": "interrupted"}

    def test_an_interrupt_a_class_statement_wraps_is_an_interrupt_not_a_bug(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = reported(interrupt_as_a_class_is_made(), True, {})

        out, err = capsys.readouterr()
        assert code == 130
        assert plain(err) == "choreo-ingest: error: interrupted\n"
        assert json.loads(out) == {"exitCode": 130, "error": "interrupted"}

    @pytest.mark.parametrize("entry", ["cli.lean.lean_main", "cli.app._invoke"])
    def test_a_sigterm_that_lands_as_a_module_loads_exits_130(
        self, tmp_path: Path, entry: str
    ) -> None:
        """Python 3.11 wraps an interrupt raised in a field's `__set_name__` (a dataclass being
        made, as the lean entry or the typer application is imported) in a RuntimeError: it
        exited 1 with a traceback (a regression check: 2 SIGTERMs in 300)."""
        module, name = entry.rsplit(".", 1)
        wrapper = textwrap.dedent(f"""
            import sys
            import choreo_ingest.cli.lean as lean
            import choreo_ingest.{module} as target

            class Landing:
                def __set_name__(self, owner, name):
                    raise KeyboardInterrupt  # SIGTERM, as a dataclass is made

            def loading(*args):
                type("Loading", (), {{"field": Landing()}})

            lean.lean_main = lambda args: None  # else the lean entry answers `status`
            setattr(target, {name!r}, loading)
            from choreo_ingest.cli import main
            main(sys.argv[1:])
        """)

        done = run_cli("status", "--json", cwd=tmp_path, entry=("-c", wrapper))

        assert done.returncode == 130, done.stderr
        assert one_error_line(done.stderr).endswith("interrupted")
        assert json.loads(done.stdout) == {"exitCode": 130, "error": "interrupted"}


def interrupt_as_a_class_is_made() -> BaseException:
    """What a SIGTERM that lands in a descriptor's `__set_name__` (a dataclass's field, as its
    module loads) raises: on Python 3.11 a RuntimeError around the interrupt, from 3.12 on the
    interrupt itself."""

    class Landing:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    try:
        type("Loading", (), {"field": Landing()})
    except (KeyboardInterrupt, RuntimeError) as error:
        return error
    raise AssertionError("the class was made")
