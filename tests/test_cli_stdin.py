"""What the CLI makes of its stdin: the events `event` reads there, and the answer a confirmation
prompt waits for. A stdin closed before the interpreter starts (`<&-`: Python then has no
`sys.stdin` at all) is a usage error saying so, never a bug's traceback, and nothing is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from choreo_ingest.events import store_events
from choreo_ingest.simulator import World
from choreo_ingest.store import Store

from fakes import FakeClock
from sim_support import CLI_TIMEOUT_SECONDS, INHERITED_SETTINGS, ingest_world, write_config

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


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("choreo-ingest: error: "), stderr
    assert "internal error" not in lines[0]
    return lines[0]


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """One completed cycle of `openchoreo`, and one event in its inbox."""
    state = tmp_path / "state.db"
    clock = FakeClock()
    ingest_world(state, World.generate(2, 2, 3, seed=12), clock)
    store_events(state, PROVIDER, [EVENT], clock)
    write_config(tmp_path / "choreo-ingest.yaml", "http://127.0.0.1:9", state={"path": "state.db"})
    return state


def what_the_state_holds(state_path: Path) -> tuple[Any, ...]:
    with Store.open(state_path, readonly=True) as store:
        return store.load_provider(PROVIDER), store.active_count(PROVIDER), store.inbox_counts()


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
        assert (document["exitCode"], document["stored"]) == (2, 0)
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
