"""Under JSON logging (`--log-json`, the default off a terminal: cron, a Kubernetes Job) every
line on stderr is a JSON record, the CLI's own error and warning lines too, so that a log
pipeline that parses lines and alerts on `level` sees a failed run. With `--log-console` (or on
a terminal) the plain lines stay as they were; stdout's `--json` document does not change."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.cli import output
from choreo_ingest.clock import SystemClock, log_timestamp
from choreo_ingest.logs import configure_logging, get_logger
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server

from sim_support import run_cli, write_config

SERVER_TOKEN = "server-token-1f7c3a-log-json"
CONFIGURED_TOKEN = "configured-token-9d2e4b-log-json"
RECORD_KEYS = {"message", "event", "level", "logger", "timestamp"}


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def records(stderr: str) -> list[dict[str, Any]]:
    """Every line of `stderr` as the JSON object it must be."""
    return [json.loads(line) for line in stderr.splitlines()]


def cli_records(stderr: str, level: str) -> list[dict[str, Any]]:
    return [
        r for r in records(stderr) if r.get("logger") == "choreo_ingest.cli" and r["level"] == level
    ]


@pytest.fixture
def server_url() -> Iterator[str]:
    options = SimulatorOptions(token=SERVER_TOKEN)
    with start_server(SimulatorApi(World.generate(1, 1, 1, seed=3), options)) as server:
        yield server.url


@pytest.mark.slow
class TestFailedRun:
    @pytest.mark.parametrize("flags", [[], ["--log-json"]], ids=["off-a-terminal", "log-json"])
    def test_a_config_error_is_one_json_record_at_level_error(
        self, tmp_path: Path, flags: list[str]
    ) -> None:
        config = write_config(
            tmp_path / "config.yaml", "http://127.0.0.1:9", token=CONFIGURED_TOKEN, bogus=1
        )

        done = run_cli(*flags, "run", "--config", config, cwd=tmp_path)
        console = run_cli("--log-console", "run", "--config", config, cwd=tmp_path)

        assert (done.returncode, done.stdout, console.returncode) == (2, "", 2)
        [record] = records(done.stderr)
        assert record.keys() == RECORD_KEYS
        assert (record["event"], record["level"], record["logger"]) == (
            "error",
            "error",
            "choreo_ingest.cli",
        )
        assert record["message"].startswith("bogus: unknown key")
        assert console.stderr == f"choreo-ingest: error: {record['message']}\n"
        assert CONFIGURED_TOKEN not in done.stderr + console.stderr

    @pytest.mark.parametrize("flags", [[], ["--log-json"]], ids=["off-a-terminal", "log-json"])
    def test_a_failed_burst_is_one_json_record_at_level_error(
        self, tmp_path: Path, server_url: str, flags: list[str]
    ) -> None:
        config = write_config(tmp_path / "config.yaml", server_url, token=CONFIGURED_TOKEN)

        done = run_cli(*flags, "run", "--config", config, cwd=tmp_path)

        assert (done.returncode, done.stdout) == (2, ""), done.stderr  # a token to mend
        [error] = records(done.stderr)  # said once: the failed burst is logged at info
        assert (error["event"], error["level"], error["logger"]) == (
            "error",
            "error",
            "choreo_ingest.cli",
        )
        assert error["message"].startswith("openchoreo: ")
        assert "check openchoreo.token" in error["message"]
        assert CONFIGURED_TOKEN not in done.stderr
        assert SERVER_TOKEN not in done.stderr

    def test_with_json_a_failed_burst_is_in_the_document_alone(
        self, tmp_path: Path, server_url: str
    ) -> None:
        config = write_config(tmp_path / "config.yaml", server_url, token=CONFIGURED_TOKEN)

        done = run_cli("run", "--json", "--config", config, cwd=tmp_path)

        assert done.returncode == 2, done.stderr
        document = json.loads(done.stdout)
        assert (document["outcome"], document["exitCode"]) == ("failed", 2)
        assert "check openchoreo.token" in document["providers"][0]["error"]
        assert done.stderr == ""
        assert CONFIGURED_TOKEN not in done.stdout

    def test_with_log_console_a_failed_burst_is_the_plain_line(
        self, tmp_path: Path, server_url: str
    ) -> None:
        config = write_config(tmp_path / "config.yaml", server_url, token=CONFIGURED_TOKEN)

        done = run_cli("--log-console", "run", "--config", config, cwd=tmp_path)

        assert done.returncode == 2, done.stderr
        [line] = [line for line in done.stderr.splitlines() if "choreo-ingest: " in line]
        assert line.startswith("choreo-ingest: error: openchoreo: ")
        assert "check openchoreo.token" in line
        assert "{" not in done.stderr  # no JSON record beside it
        assert CONFIGURED_TOKEN not in done.stderr


@pytest.mark.slow
def test_a_check_warning_is_a_json_record_at_level_warning(tmp_path: Path, server_url: str) -> None:
    config = write_config(tmp_path / "config.yaml", server_url, token=SERVER_TOKEN)
    config.chmod(0o644)  # a token in a file others may read: a warning

    done = run_cli("check", "--config", config, "--db", "state.db", cwd=tmp_path)
    console = run_cli(
        "--log-console", "check", "--config", config, "--db", "state.db", cwd=tmp_path
    )

    assert (done.returncode, console.returncode) == (0, 0), done.stderr
    [record] = records(done.stderr)
    assert (record["event"], record["level"], record["logger"]) == (
        "warning",
        "warning",
        "choreo_ingest.cli",
    )
    assert record["message"].startswith("config: ")
    assert console.stderr == f"choreo-ingest: warning: {record['message']}\n"
    assert SERVER_TOKEN not in done.stderr + console.stderr


class TestLines:
    def test_a_record_has_the_keys_of_a_log_record_and_the_text_of_the_plain_line(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        logged = io.StringIO()
        configure_logging(json=True, stream=logged)
        get_logger("choreo_ingest.cli").error("error", message="x")
        output.stderr_lines_in_json(True)

        output.error_line("a\nb [x] é")
        output.warning_line("w")

        error, warning = records(capsys.readouterr().err)
        assert error.keys() == warning.keys() == json.loads(logged.getvalue()).keys()
        assert (error["level"], error["message"]) == ("error", "a\\nb [x] é")
        assert (warning["event"], warning["level"], warning["message"]) == (
            "warning",
            "warning",
            "w",
        )

    def test_a_records_timestamp_is_the_clocks_now_in_utc(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        output.stderr_lines_in_json(True)
        before = SystemClock().now()

        output.error_line("x")

        after = SystemClock().now()
        [record] = records(capsys.readouterr().err)
        assert record["timestamp"].endswith("Z")
        moment = datetime.fromisoformat(record["timestamp"])
        assert moment.utcoffset() == UTC.utcoffset(None)
        assert before - 1e-6 <= moment.timestamp() <= after + 1e-6

    def test_log_timestamp_is_structlogs_iso_utc_stamp(self) -> None:
        assert log_timestamp(1764383056.123456) == "2025-11-29T02:24:16.123456Z"

    def test_unconfigured_a_terminal_gets_the_plain_line(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        terminal = TerminalStream()
        monkeypatch.setattr("sys.stderr", terminal)

        output.error_line("x")

        assert terminal.getvalue() == "choreo-ingest: error: x\n"

    def test_unconfigured_off_a_terminal_the_line_is_a_json_record(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        output.error_line("x")

        [record] = records(capsys.readouterr().err)
        assert (record["level"], record["message"]) == ("error", "x")

    def test_log_console_on_a_pipe_keeps_the_plain_line(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        output.stderr_lines_in_json(False)

        output.warning_line("w")

        assert capsys.readouterr().err == "choreo-ingest: warning: w\n"


def test_the_json_mode_follows_what_configure_logging_decided() -> None:
    assert configure_logging(json=True, stream=io.StringIO()) is True
    assert configure_logging(json=False, stream=io.StringIO()) is False
    assert configure_logging(stream=io.StringIO()) is True  # not a terminal
    assert configure_logging(stream=TerminalStream()) is False
