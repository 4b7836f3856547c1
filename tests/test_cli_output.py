"""What a call prints when things go wrong: an error is one line on stderr whatever its text
holds, and with --json stdout carries exactly one document, even when an interrupt lands as it is
written or before typer has built its commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.cli import output
from choreo_ingest.cli.exit_codes import ExitCode
from choreo_ingest.cli.failures import RUN_ERROR_FIELDS, reported
from choreo_ingest.logs import configure_logging, register_secret
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server

from fakes import FakeClock
from sim_support import ingest_world, one_error_line, plain, run_cli, write_config

INTERRUPTED_LINE = "choreo-ingest: error: interrupted"


class TestErrorLine:
    @pytest.mark.parametrize(
        ("text", "line"),
        [
            ("a\nb", "a\\nb"),
            ("a\r\nb", "a\\r\\nb"),
            ("a\tb", "a\\tb"),
            ("a\x1b[31mb", "a\\x1b[31mb"),
            ("a\u2028b", "a\\u2028b"),
            ("é [x]", "é [x]"),
        ],
        ids=["newline", "crlf", "tab", "escape", "line-separator", "printable"],
    )
    def test_a_plain_line_escapes_control_characters(
        self, capsys: pytest.CaptureFixture[str], text: str, line: str
    ) -> None:
        output.stderr_lines_in_json(False)

        output.error_line(text)

        assert capsys.readouterr().err == f"choreo-ingest: error: {line}\n"

    def test_of_a_config_key_with_a_newline_is_one_line(self, tmp_path: Path) -> None:
        config = tmp_path / "config.yaml"
        config.write_text('openchoreo:\n  "ba\\nseUrl": 1\n', encoding="utf-8")

        done = run_cli("--config", config, "status", cwd=tmp_path)

        assert done.returncode == ExitCode.USAGE
        assert "openchoreo.ba\\nseUrl: unknown key" in one_error_line(done.stderr)

    def test_of_a_config_path_with_a_newline_is_one_line_its_json_keeps_the_text(
        self, tmp_path: Path
    ) -> None:
        done = run_cli("--config", "no\nsuch.yaml", "status", "--json", cwd=tmp_path)

        assert done.returncode == ExitCode.USAGE
        assert one_error_line(done.stderr).startswith("choreo-ingest: error: no\\nsuch.yaml: ")
        assert json.loads(done.stdout)["error"].startswith("no\nsuch.yaml: ")

    def test_of_a_state_path_with_a_newline_is_one_line(self, tmp_path: Path) -> None:
        done = run_cli("status", "--db", tmp_path / "x\ny.db", cwd=tmp_path)

        assert done.returncode != 0
        assert "x\\ny.db: no state file yet" in one_error_line(done.stderr)


def blocked_signals() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


class RecordingStdout:
    """A stdout that records the signals blocked as each write lands."""

    def __init__(self) -> None:
        self.text = ""
        self.blocked: list[set[int]] = []

    def write(self, text: str) -> int:
        self.text += text
        self.blocked.append(blocked_signals())
        return len(text)

    def flush(self) -> None:
        pass


class TestPrintJson:
    def test_blocks_interrupts_while_it_writes_then_restores_the_mask(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        stdout = RecordingStdout()
        monkeypatch.setattr(sys, "stdout", stdout)
        before = blocked_signals()

        output.print_json({"a": 1})

        assert blocked_signals() == before
        assert stdout.blocked
        assert all({signal.SIGINT, signal.SIGTERM} <= blocked for blocked in stdout.blocked)
        assert json.loads(stdout.text) == {"a": 1}

    def test_restores_the_mask_when_stdout_fails(self, monkeypatch: pytest.MonkeyPatch) -> None:
        class FullStdout(RecordingStdout):
            def write(self, text: str) -> int:
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(sys, "stdout", FullStdout())
        monkeypatch.setattr(output, "_discard_stdout", lambda: None)
        before = blocked_signals()

        with pytest.raises(output.StdoutFailed):
            output.print_json({"a": 1})

        assert blocked_signals() == before

    def test_an_interrupt_after_the_document_prints_no_second_one(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        output.print_json({"changes": [1, 2]})

        code = reported(KeyboardInterrupt(), True, RUN_ERROR_FIELDS)

        out, err = capsys.readouterr()
        assert code == ExitCode.INTERRUPTED == 130
        assert json.loads(out) == {"changes": [1, 2]}  # one document, and only it
        assert plain(err) == INTERRUPTED_LINE + "\n"

    def test_a_new_stdout_takes_its_own_error_document(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What was written to another stdout (an earlier call in the same process) does not
        silence this one."""
        monkeypatch.setattr(sys, "stdout", RecordingStdout())
        output.print_json({"earlier": True})
        monkeypatch.undo()

        reported(KeyboardInterrupt(), True, {})

        assert json.loads(capsys.readouterr().out) == {"exitCode": 130, "error": "interrupted"}


SIGNAL_MID_DOCUMENT = """
import os, signal, sys
from choreo_ingest.cli import main, output

write = output._write

def write_in_two_halves(text, *, flush=False):
    half = len(text) // 2
    write(text[:half], flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # lands as a slow reader has taken half the document
    write(text[half:], flush=flush)

output._write = write_in_two_halves
main()
"""

INTERRUPT_AS_TYPER_BUILDS = """
import sys
import typer.main

def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

typer.main.get_command = interrupted
from choreo_ingest.cli import main
main()
"""

INTERRUPT_AS_TYPER_PARSES = """
import typer.core

def interrupted(self, ctx, args):
    raise KeyboardInterrupt  # as SIGTERM lands while typer reads the command's options

typer.core.TyperCommand.parse_args = interrupted
from choreo_ingest.cli import main
main()
"""

SECOND_SIGNAL = """
import atexit, os, signal, sys
import typer.core
from choreo_ingest.cli import failures, lean

entry, when = sys.argv.pop(1), sys.argv.pop(1)

def term():
    os.kill(os.getpid(), signal.SIGTERM)

def interrupted(*args):
    raise KeyboardInterrupt  # the first signal

if entry == "lean":  # as the lean entry loads
    lean.lean_main = interrupted
else:  # as typer reads the command's options
    typer.core.TyperCommand.parse_args = interrupted
if when == "report":
    fields = failures.command_fields
    def signalled(args):
        term()  # the second, as the first is reported
        return fields(args)
    failures.command_fields = signalled
else:  # the second as Python ends, once the first was reported
    atexit.register(term)
from choreo_ingest.cli import main
main()
"""


SIGNAL_AFTER_THE_RUN = """
import atexit, os, signal, sys
from choreo_ingest.cli import main, run_flow
from choreo_ingest.store import Store

where = sys.argv.pop(1)

def term():
    os.kill(os.getpid(), signal.SIGTERM)

if where == "store-close":  # the run's store, closed after its burst
    from choreo_ingest.engine import BurstEngine
    burst = BurstEngine.run_provider
    bursts = []
    def bursting(*args, **kwargs):
        bursts.append(1)
        return burst(*args, **kwargs)
    BurstEngine.run_provider = bursting
    close = Store.close
    def closing_signalled(self):
        if bursts:
            term()
        close(self)
    Store.close = closing_signalled
elif where == "report":  # `run` and `refresh --now` both report through run_flow
    report_run = run_flow.report_run
    def reporting_signalled(*args, **kwargs):
        term()
        return report_run(*args, **kwargs)
    run_flow.report_run = reporting_signalled
else:  # as Python ends
    atexit.register(term)
main()
"""


class TestSignalAfterTheRun:
    """A SIGTERM that lands once a burst has ended (a Job's deadline, a unit stopped) cuts
    nothing short: the call ends with its own outcome, said once, never killed (143) nor made
    an interrupt after it was printed."""

    @pytest.mark.parametrize("where", ["store-close", "report", "python-ends"])
    @pytest.mark.parametrize(
        "command", [["run", "--force"], ["refresh", "openchoreo", "--now"]], ids=["run", "refresh"]
    )
    def test_leaves_the_runs_own_outcome(
        self, tmp_path: Path, where: str, command: list[str]
    ) -> None:
        world = World.generate(1, 1, 2, seed=5)
        with start_server(SimulatorApi(world, SimulatorOptions(api="v1"))) as server:
            config = write_config(tmp_path / "config.yaml", server.url)
            done = run_cli(
                "--config", config, *command, "--json",
                cwd=tmp_path, entry=("-c", SIGNAL_AFTER_THE_RUN, where),
            )  # fmt: skip

        assert (done.returncode, done.stderr) == (0, "")
        document: Any = json.loads(done.stdout)  # exactly one document
        assert (document["outcome"], document["exitCode"]) == ("burst", 0)


class TestInterruptedCall:
    @pytest.mark.parametrize(
        "args", [["changes", "--json"], ["status", "--json"]], ids=["changes", "status"]
    )
    def test_as_its_document_is_written_prints_that_document_alone(
        self, tmp_path: Path, args: list[str]
    ) -> None:
        state = tmp_path / "state.db"
        ingest_world(state, World.generate(2, 2, 3, seed=12), FakeClock())

        done = run_cli(*args, "--db", state, cwd=tmp_path, entry=("-c", SIGNAL_MID_DOCUMENT))

        assert done.returncode == ExitCode.INTERRUPTED
        assert plain(done.stderr) == INTERRUPTED_LINE + "\n"
        document: Any = json.loads(done.stdout)  # exactly one document, whole
        assert "error" not in document

    @pytest.mark.parametrize(
        ("args", "document"),
        [
            (["providers", "--json"], {"exitCode": 130, "error": "interrupted"}),
            (
                ["check", "--json"],
                {"ok": False, "checks": [], "exitCode": 130, "error": "interrupted"},
            ),
            (["providers"], None),
        ],
        ids=["providers --json", "check --json", "providers"],
    )
    def test_as_typer_builds_its_commands_is_reported(
        self, tmp_path: Path, args: list[str], document: Any
    ) -> None:
        done = run_cli(*args, cwd=tmp_path, entry=("-c", INTERRUPT_AS_TYPER_BUILDS))

        assert done.returncode == ExitCode.INTERRUPTED
        assert plain(done.stderr) == INTERRUPTED_LINE + "\n"
        assert (json.loads(done.stdout) if document is not None else done.stdout) == (
            document if document is not None else ""
        )

    @pytest.mark.parametrize(
        ("args", "document"),
        [
            (
                ["check", "--json"],
                {"ok": False, "checks": [], "exitCode": 130, "error": "interrupted"},
            ),
            (["reset", "openchoreo", "--yes", "--json"], {"exitCode": 130, "error": "interrupted"}),
            (["reset", "openchoreo", "--yes"], None),
        ],
        ids=["check --json", "reset --json", "reset"],
    )
    def test_as_typer_reads_the_commands_options_is_reported(
        self, tmp_path: Path, args: list[str], document: Any
    ) -> None:
        """typer turns an interrupt in its own parsing into a silent exit 130 (click before it
        into its Abort): no line on stderr, and no document for a script to read."""
        done = run_cli(*args, cwd=tmp_path, entry=("-c", INTERRUPT_AS_TYPER_PARSES))

        assert done.returncode == ExitCode.INTERRUPTED
        assert plain(done.stderr) == INTERRUPTED_LINE + "\n"
        assert (json.loads(done.stdout) if document is not None else done.stdout) == (
            document if document is not None else ""
        )

    @pytest.mark.parametrize("when", ["report", "python-ends"])
    @pytest.mark.parametrize(
        ("entry", "args"), [("lean", ["status"]), ("typer", ["check"])], ids=["lean", "typer"]
    )
    def test_a_second_signal_leaves_the_first_ones_report_whole(
        self, tmp_path: Path, entry: str, args: list[str], when: str
    ) -> None:
        """A second SIGTERM as the first was reported left no document and no line (or a
        traceback, in the instant before the report began), or, as Python ended, killed the
        call (143) after its document said 130: the default handler was back."""
        done = run_cli(entry, when, *args, "--json", cwd=tmp_path, entry=("-c", SECOND_SIGNAL))

        assert done.returncode == ExitCode.INTERRUPTED
        assert plain(done.stderr) == INTERRUPTED_LINE + "\n"
        assert json.loads(done.stdout)["error"] == "interrupted"


class TestUnexpectedError:
    def test_a_bugs_text_never_shows_a_registered_secret(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        register_secret("Zq9-bug-echoed-secret")
        configure_logging(json=True, verbosity=2)  # as `-vv`: the bug's traceback is logged too
        try:
            code = reported(RuntimeError("failed with Zq9-bug-echoed-secret in hand"), True, {})
        finally:
            configure_logging()

        out, err = capsys.readouterr()
        assert code == ExitCode.INTERNAL_ERROR
        assert (
            plain(err).splitlines()[-1].startswith("choreo-ingest: error: internal error: Runtime")
        )
        assert "Zq9-bug-echoed-secret" not in out + err
        assert json.loads(out)["error"] == (
            "internal error: RuntimeError: failed with *** in hand "
            "(a bug; run with -vv for details)"
        )


class TestSecretsInErrors:
    @pytest.mark.parametrize(
        "args", [["status", "--json"], ["run", "--json"]], ids=["status", "run"]
    )
    def test_an_error_never_shows_the_token_a_path_holds(
        self, tmp_path: Path, args: list[str]
    ) -> None:
        """A token pasted into `state.path` too (here as a directory): the state store's error
        quotes the path, and is said with the token masked, on stderr and in the document."""
        token = "Zk3q9X7vLm2Pw8Rt5Yh1Nc"
        config = tmp_path / "choreo-ingest.yaml"
        state = tmp_path / token / "x.db"
        config.write_text(
            f"openchoreo: {{baseUrl: 'http://openchoreo.test', token: {token}}}\n"
            f"state: {{path: '{state}'}}\n",
            encoding="utf-8",
        )
        config.chmod(0o600)

        done = run_cli("--config", config, *args, cwd=tmp_path)

        assert done.returncode == ExitCode.STATE_ERROR
        assert token not in done.stdout + done.stderr
        assert f"{tmp_path}/***/x.db" in json.loads(done.stdout)["error"]


class TestStdoutEncoding:
    @pytest.mark.parametrize(
        "args", [["export"], ["export", "--format", "yaml"]], ids=["ndjson", "yaml"]
    )
    @pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
    def test_data_is_utf8_whatever_the_locale_encodes(
        self, tmp_path: Path, args: list[str], encoding: str
    ) -> None:
        state = tmp_path / "state.db"
        ingest_world(state, World.generate(2, 2, 3, seed=12), FakeClock(), api="v1")
        utf8 = run_cli(*args, "--db", state, cwd=tmp_path)
        assert not utf8.stdout.isascii()  # names the locale's encoding cannot take

        done = run_cli(*args, "--db", state, cwd=tmp_path, env={"PYTHONIOENCODING": encoding})

        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout == utf8.stdout

    def test_a_path_that_is_not_utf8_is_written_as_its_bytes(self, tmp_path: Path) -> None:
        state = os.fsdecode(b"lat\xe9.db")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CHOREO_INGEST")}

        done = subprocess.run(
            [sys.executable, "-m", "choreo_ingest", "--db", state, "status", "--json"],
            cwd=tmp_path,
            env={**environment, "PYTHONIOENCODING": "ascii"},
            capture_output=True,
            check=False,
            timeout=60,
        )

        assert done.returncode == ExitCode.STATE_ERROR
        document = json.loads(done.stdout.decode("utf-8", "surrogateescape"))
        assert document["error"].startswith(f"{state}: no state file yet")
        assert plain(done.stderr.decode("utf-8", "surrogateescape")).count("error:") == 1
