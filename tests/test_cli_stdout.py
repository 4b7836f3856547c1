"""A stdout that cannot be written (a full disk: `/dev/full`; closed: `>&-`) is one line on
stderr and exit 74, never a bug's traceback, and no JSON error document is tried on the stdout
that just failed. What the command did stands: a `run`'s committed pages are neither lost nor
done again. (A reader that leaves early, `export | head -1`, is a quiet exit 0:
`test_cli_input.TestClosedPipe`.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.cli.exit_codes import ExitCode
from choreo_ingest.cli.failures import RUN_ERROR_FIELDS, reported
from choreo_ingest.cli.output import StdoutFailed
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server

from fakes import FakeClock
from sim_support import (
    CLI_TIMEOUT_SECONDS,
    INHERITED_SETTINGS,
    ingest_world,
    plain,
    run_cli,
    write_config,
)

FULL = "choreo-ingest: error: cannot write to stdout: No space left on device\n"
CLOSED = "choreo-ingest: error: cannot write to stdout: it is closed\n"
OUTPUT_FAILED = 74
DEV_FULL = "/dev/full"
FULL_DISK, CLOSED_STDOUT = "> /dev/full", ">&-"


def run_cli_to(stdout: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI off a TTY with its stdout a full disk (`> /dev/full`) or closed (`>&-`: a shell
    closes it before the interpreter starts, which then has no `sys.stdout` at all)."""
    environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
    command = [sys.executable, "-m", "choreo_ingest", *map(str, args)]
    with Path(DEV_FULL).open("w") as full:
        return subprocess.run(
            command if stdout == FULL_DISK else ["/bin/sh", "-c", 'exec "$@" >&-', "sh", *command],
            cwd=cwd,
            env={**environment, "COLUMNS": "200", "NO_COLOR": "1"},
            stdin=subprocess.DEVNULL,
            stdout=full if stdout == FULL_DISK else None,
            stderr=subprocess.PIPE,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )


@pytest.fixture
def ingested(tmp_path: Path) -> Path:
    state_path = tmp_path / "state.db"
    ingest_world(state_path, World.generate(2, 2, 3, seed=12), FakeClock())
    return state_path


READ_COMMANDS = [
    ["export"],
    ["export", "--format", "yaml"],
    ["changes"],
    ["changes", "--json"],
    ["status"],
    ["status", "--json"],
    ["health", "--json"],
    ["providers"],
    ["providers", "--json"],
    ["migrate", "--status"],
    ["removals", "--json"],
]


class TestFullStdout:
    @pytest.mark.parametrize("args", READ_COMMANDS, ids=[" ".join(a) for a in READ_COMMANDS])
    def test_is_one_line_and_exit_74(self, tmp_path: Path, ingested: Path, args: list[str]) -> None:
        done = run_cli_to(FULL_DISK, *args, "--db", ingested, cwd=tmp_path)

        assert (done.returncode, plain(done.stderr)) == (OUTPUT_FAILED, FULL)

    @pytest.mark.parametrize("args", [["--version"], ["--help"], ["run", "--help"]])
    def test_of_typers_own_output_is_one_line_and_exit_74(
        self, tmp_path: Path, args: list[str]
    ) -> None:
        done = run_cli_to(FULL_DISK, *args, cwd=tmp_path)

        assert (done.returncode, plain(done.stderr)) == (OUTPUT_FAILED, FULL)

    def test_under_an_errors_json_document_says_both_and_keeps_the_errors_code(
        self, tmp_path: Path
    ) -> None:
        done = run_cli_to(FULL_DISK, "status", "--bogus", "--json", cwd=tmp_path)

        assert done.returncode == ExitCode.USAGE
        assert plain(done.stderr).splitlines() == [
            "choreo-ingest: error: status: No such option: --bogus "
            "(see `choreo-ingest status --help`)",
            FULL.rstrip("\n"),
        ]


class TestClosedStdout:
    @pytest.mark.parametrize(
        "args",
        [["status"], ["status", "--json"], ["export"], ["health", "--json"], ["--version"]],
        ids=["status", "status --json", "export", "health --json", "--version"],
    )
    def test_is_one_line_and_exit_74(self, tmp_path: Path, ingested: Path, args: list[str]) -> None:
        done = run_cli_to(CLOSED_STDOUT, *args, "--db", ingested, cwd=tmp_path)

        assert (done.returncode, plain(done.stderr)) == (OUTPUT_FAILED, CLOSED)

    def test_a_command_that_prints_nothing_succeeds(self, tmp_path: Path, ingested: Path) -> None:
        """Off a terminal a healthy `health` prints nothing: there is nothing to lose."""
        done = run_cli_to(CLOSED_STDOUT, "health", "--db", ingested, cwd=tmp_path)

        assert (done.returncode, done.stderr) == (0, "")


class TestRun:
    @pytest.fixture
    def config_file(self, tmp_path: Path) -> Iterator[Path]:
        world = World.generate(2, 2, 3, seed=12)
        with start_server(SimulatorApi(world, SimulatorOptions(api="orgs"))) as server:
            yield write_config(tmp_path / "config.yaml", server.url, incremental={"chunkSize": 5})

    @pytest.mark.parametrize(
        ("stdout", "says"), [(FULL_DISK, FULL), (CLOSED_STDOUT, CLOSED)], ids=["full", "closed"]
    )
    def test_json_to_a_failed_stdout_keeps_the_bursts_work(
        self, tmp_path: Path, config_file: Path, stdout: str, says: str
    ) -> None:
        args = ("--config", config_file, "--db", tmp_path / "state.db")

        done = run_cli_to(stdout, "run", "--force", "--json", *args, cwd=tmp_path)
        status = subprocess_json(tmp_path, "status", "--json", *args)
        again = subprocess_json(tmp_path, "run", "--json", *args)

        assert (done.returncode, plain(done.stderr)) == (OUTPUT_FAILED, says)
        [provider] = status["providers"]
        assert provider["lastCompletedAt"] is not None  # the cycle was committed
        assert again["outcome"] == "waiting"  # and is not done a second time

    def test_a_failed_burst_to_a_failed_stdout_is_said_on_stderr_with_its_own_code(
        self, tmp_path: Path
    ) -> None:
        """The failure was only in the JSON document: lost with it, the call said nothing of it
        and exited 74 instead of 3."""
        config = write_config(tmp_path / "config.yaml", "http://127.0.0.1:9/api/v1")

        done = run_cli_to(FULL_DISK, "run", "--force", "--json", "--config", config, cwd=tmp_path)

        assert done.returncode == int(ExitCode.BURST_FAILED)
        said = plain(done.stderr).splitlines()
        lines = [line for line in said if line.startswith("choreo-ingest: error: ")]
        assert len(lines) == 2
        assert lines[0].startswith("choreo-ingest: error: openchoreo: GET /namespaces: ")
        assert lines[1] + "\n" == FULL

    def test_with_nothing_due_to_a_full_stdout_succeeds(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        """Nothing to print, nothing lost: the last flush wrote an empty string, a write of
        nothing that /dev/full refuses, and the call exited 74."""
        args = ("--config", config_file, "--db", tmp_path / "state.db")
        subprocess_json(tmp_path, "run", "--force", "--json", *args)

        done = run_cli_to(FULL_DISK, "run", *args, cwd=tmp_path)

        assert (done.returncode, done.stderr) == (0, "")

    def test_without_json_to_a_closed_stdout_is_quiet_as_usual(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        args = ("--config", config_file, "--db", tmp_path / "state.db")

        done = run_cli_to(CLOSED_STDOUT, "run", "--force", *args, cwd=tmp_path)

        assert (done.returncode, done.stderr) == (0, "")
        [provider] = subprocess_json(tmp_path, "status", "--json", *args)["providers"]
        assert provider["lastCompletedAt"] is not None


def subprocess_json(cwd: Path, *args: str | Path) -> Any:
    """The one JSON document a CLI call prints."""
    done = run_cli(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class TestReported:
    def test_a_failed_stdout_is_said_on_stderr_only_even_with_json(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = reported(StdoutFailed("No space left on device"), True, RUN_ERROR_FIELDS)

        assert code == OUTPUT_FAILED == ExitCode.OUTPUT_FAILED
        out, err = capsys.readouterr()
        assert (out, plain(err)) == ("", FULL)
