"""What the CLI makes of its stdin: the events `event` reads there, and the answer a confirmation
prompt waits for. A stdin closed before the interpreter starts (`<&-`: Python then has no
`sys.stdin` at all) is a usage error saying so, never a bug's traceback, and nothing is done. A
question answered no on a terminal does nothing and exits 2, as the refusal off a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.event_intake import stored_events
from choreo_ingest.simulator import World
from choreo_ingest.store import Store

from fakes import FakeClock
from sim_support import (
    CLI_TIMEOUT_SECONDS,
    INHERITED_SETTINGS,
    ingest_world,
    one_error_line,
    plain,
    write_config,
)

PROVIDER = "openchoreo"
EVENT = {"kind": "Component", "name": "x", "namespace": "acme", "project": "p", "action": "created"}


def run_cli_without_stdin(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI with descriptor 0 closed by the shell that starts it (`<&-`)."""
    environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
    command = [sys.executable, "-m", "choreo_ingest", *map(str, args)]
    return subprocess.run(
        ["/bin/sh", "-c", 'exec "$@" <&-', "sh", *command],
        cwd=cwd,
        env={**environment, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def run_cli_on_terminal(
    *args: str | Path, cwd: Path, answer: str
) -> subprocess.CompletedProcess[str]:
    """The CLI with its stdin a terminal on which `answer` was typed (stdout, stderr: pipes)."""
    environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", *map(str, args)],
        cwd=cwd,
        env={**environment, "COLUMNS": "200", "NO_COLOR": "1"},
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        os.write(controller, answer.encode())
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:  # still waiting for an answer
            process.kill()
            process.communicate()
        os.close(terminal)
        os.close(controller)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """`openchoreo` after a cycle, then one that saw nothing (its sweep blocked); one event in its
    inbox."""
    state = tmp_path / "state.db"
    clock = FakeClock()
    ingest_world(state, World.generate(2, 2, 3, seed=12), clock)
    assert ingest_world(state, World.empty(), clock, force=True).removals_blocked > 0
    stored_events(state, PROVIDER, [EVENT], clock)
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9", state={"path": "state.db"})
    return state


def what_the_state_holds(state_path: Path) -> tuple[Any, ...]:
    with Store.open(state_path, readonly=True) as store:
        return (
            store.load_provider(PROVIDER),
            store.active_count(PROVIDER),
            store.blocked_removals(PROVIDER),
            store.inbox_counts(),
        )


QUESTIONS = [
    ["reset", PROVIDER],
    ["reset", PROVIDER, "--purge"],
    ["reset", PROVIDER, "--forget"],
    ["event", "purge"],
    ["removals", "approve", PROVIDER],
]
"""Every command that asks before it acts."""


def leave_out_of_the_config(tmp_path: Path, args: list[str]) -> None:
    """`--forget` is for a provider the config no longer has."""
    if "--forget" in args:
        write_config(tmp_path / "choreo-ingest.yaml", None, providers=["successor"],
                     state={"path": "state.db"})  # fmt: skip


class TestClosedStdin:
    @pytest.mark.parametrize("args", [["event", "-"], ["event"]], ids=["event -", "event"])
    def test_event_is_a_usage_error_saying_stdin_is_closed(
        self, tmp_path: Path, state_path: Path, args: list[str]
    ) -> None:
        done = run_cli_without_stdin(*args, cwd=tmp_path)

        assert (done.returncode, done.stdout) == (2, "")
        assert "stdin: closed, nothing to read" in one_error_line(done.stderr)

    def test_event_with_json_prints_one_error_document(
        self, tmp_path: Path, state_path: Path
    ) -> None:
        done = run_cli_without_stdin("event", "--json", cwd=tmp_path)

        assert done.returncode == 2
        document = json.loads(done.stdout)
        assert (document["exitCode"], document["stored"], document["ignored"]) == (2, 0, 0)
        assert set(document) == {"stored", "ignored", "rejected", "exitCode", "error"}
        assert document["error"].startswith("stdin: closed")

    @pytest.mark.parametrize(
        "args",
        [["reset", PROVIDER], ["reset", PROVIDER, "--purge"], ["event", "purge"]],
        ids=["reset", "reset --purge", "event purge"],
    )
    def test_a_question_with_no_stdin_to_answer_it_is_refused_and_nothing_is_done(
        self, tmp_path: Path, state_path: Path, args: list[str]
    ) -> None:
        before = what_the_state_holds(state_path)

        done = run_cli_without_stdin(*args, cwd=tmp_path)

        assert (done.returncode, done.stdout) == (2, "")
        assert "stdin is closed; pass --yes" in one_error_line(done.stderr)
        assert what_the_state_holds(state_path) == before


class TestQuestionAnsweredNo:
    @pytest.mark.parametrize("args", QUESTIONS, ids=[" ".join(args) for args in QUESTIONS])
    def test_says_nothing_was_done_and_exits_2_as_without_yes_off_a_terminal(
        self, tmp_path: Path, state_path: Path, args: list[str]
    ) -> None:
        """It exited 0 without a word: a script could not tell "no" from done."""
        leave_out_of_the_config(tmp_path, args)
        before = what_the_state_holds(state_path)

        declined = run_cli_on_terminal(*args, cwd=tmp_path, answer="n\n")
        off_a_terminal = run_cli_without_stdin(*args, cwd=tmp_path)

        assert declined.returncode == off_a_terminal.returncode == 2
        assert declined.stdout == ""  # the question goes to stderr: stdout carries data only
        assert "not confirmed: nothing was done" in declined.stderr.splitlines()[-1]
        assert what_the_state_holds(state_path) == before

    @pytest.mark.parametrize(
        "answer", ["\n", "maybe\n", "\x04"], ids=["empty-line", "anything-else", "end-of-input"]
    )
    def test_anything_but_yes_is_no(self, tmp_path: Path, state_path: Path, answer: str) -> None:
        """The end of input (Ctrl-D) was an internal error (click's Abort, exit 1), and click
        wrote its "Error: invalid input" and the question again to stdout."""
        before = what_the_state_holds(state_path)

        declined = run_cli_on_terminal("reset", PROVIDER, "--purge", cwd=tmp_path, answer=answer)

        assert (declined.returncode, declined.stdout) == (2, "")
        said = declined.stderr.rpartition("[y/N]: ")[2]  # after the question, on its line
        assert plain(said) == "choreo-ingest: error: not confirmed: nothing was done\n"
        assert what_the_state_holds(state_path) == before

    @pytest.mark.parametrize("args", QUESTIONS, ids=[" ".join(args) for args in QUESTIONS])
    def test_with_json_prints_one_error_document(
        self, tmp_path: Path, state_path: Path, args: list[str]
    ) -> None:
        leave_out_of_the_config(tmp_path, args)

        declined = run_cli_on_terminal(*args, "--json", cwd=tmp_path, answer="n\n")

        assert declined.returncode == 2
        document = json.loads(declined.stdout)  # the question went to stderr
        assert document["exitCode"] == 2
        assert document["error"] == "not confirmed: nothing was done"
