"""`choreo-ingest demo`: the simulator on a loopback port, runs until one cycle completes."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path

import pytest

from choreo_ingest.reporting import iter_export, reading
from choreo_ingest.simulator import World

from sim_support import (
    CLI_TIMEOUT_SECONDS,
    INHERITED_SETTINGS,
    expected_catalog,
    expected_counts,
    expected_refs,
    plain,
    ref_of,
    run_cli,
)

SIZE = ("--orgs", "2", "--projects", "2", "--components", "3")


def test_json_demo_completes_a_v1_cycle_that_matches_the_world(tmp_path: Path) -> None:
    """The demo speaks v1 with OAuth2 client credentials, as an OpenChoreo release does."""
    state_path = tmp_path / "demo.db"
    world = World.generate(2, 2, 3, seed=0)

    done = run_cli("demo", "--json", *SIZE, "--db", state_path, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["cycleCompleted"] is True
    expected = expected_catalog(world)
    kinds = Counter(ref.partition(":")[0] for ref in expected)
    assert result["entities"] == {kind: kinds[kind.lower()] for kind in result["entities"]}
    assert sum(result["entities"].values()) == len(expected)
    assert result["stateFile"] == str(state_path)
    assert result["requests"] == 1 + 3 * 2  # the namespaces, then 3 listings per namespace
    assert {ref_of(body) for body in iter_export(state_path)} == set(expected)


def test_json_demo_of_the_org_era_api_matches_the_world(tmp_path: Path) -> None:
    state_path = tmp_path / "demo.db"
    world = World.generate(2, 2, 3, seed=0)

    done = run_cli("demo", "--json", "--api", "orgs", *SIZE, "--db", state_path, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["entities"] == expected_counts(world)
    assert {ref_of(body) for body in iter_export(state_path)} == expected_refs(world)


def test_text_demo_names_the_state_file_it_made(tmp_path: Path) -> None:
    done = run_cli("demo", *SIZE, cwd=tmp_path, env={"TMPDIR": str(tmp_path)})

    assert done.returncode == 0, done.stderr
    [state_file] = tmp_path.glob("choreo-ingest-demo-*/state.db")
    assert f"state file: {state_file}" in done.stdout
    assert "cycle completed" in done.stdout


def test_dir_keeps_the_state_in_the_directory_it_creates(tmp_path: Path) -> None:
    directory = tmp_path / "demos" / "first"

    done = run_cli("demo", "--json", *SIZE, "--dir", directory, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["stateFile"] == str(directory / "state.db")
    assert (result["directory"], result["temporaryDirectory"]) == (str(directory), False)
    assert (directory / "state.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos"]


def test_dir_that_exists_is_used_as_it_is(tmp_path: Path) -> None:
    """A second demo in the same directory carries on from the state the first one left."""
    run_cli("demo", *SIZE, "--dir", tmp_path, cwd=tmp_path)

    done = run_cli("demo", "--json", *SIZE, "--dir", tmp_path, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cycleCompleted"] is True
    with reading(tmp_path / "state.db") as store:
        assert store.load_provider("openchoreo").cycle_id == 2


def test_a_second_demo_in_the_same_dir_counts_only_its_own_requests(tmp_path: Path) -> None:
    """It reported the stored lifetime counter: 7 requests, then 14, though each sent 7."""
    first = run_cli("demo", "--json", *SIZE, "--dir", tmp_path, cwd=tmp_path)
    second = run_cli("demo", "--json", *SIZE, "--dir", tmp_path, cwd=tmp_path)
    text = run_cli("demo", *SIZE, "--dir", tmp_path, cwd=tmp_path)

    assert (first.returncode, second.returncode, text.returncode) == (0, 0, 0), text.stderr
    requests = 1 + 3 * 2  # the namespaces, then 3 listings per namespace
    assert json.loads(first.stdout)["requests"] == json.loads(second.stdout)["requests"] == requests
    assert f"cycle completed in 1 run(s), {requests} requests" in text.stdout


def test_text_demo_says_its_temporary_directory_stays(tmp_path: Path) -> None:
    done = run_cli("demo", *SIZE, cwd=tmp_path, env={"TMPDIR": str(tmp_path)})

    assert done.returncode == 0, done.stderr
    [directory] = tmp_path.glob("choreo-ingest-demo-*")
    assert f"the demo's files stay in {directory}" in done.stdout
    assert f"rm -r {directory}" in done.stdout


def test_json_demo_names_its_temporary_directory(tmp_path: Path) -> None:
    done = run_cli("demo", "--json", *SIZE, cwd=tmp_path, env={"TMPDIR": str(tmp_path)})

    assert done.returncode == 0, done.stderr
    [directory] = tmp_path.glob("choreo-ingest-demo-*")
    result = json.loads(done.stdout)
    assert (result["directory"], result["temporaryDirectory"]) == (str(directory), True)


def test_text_demo_in_a_chosen_dir_does_not_call_it_temporary(tmp_path: Path) -> None:
    done = run_cli("demo", *SIZE, "--dir", tmp_path / "mine", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert f"state file: {tmp_path / 'mine' / 'state.db'}" in done.stdout
    assert "stay in" not in done.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--dir", "taken", "--db", "state.db"], "--dir: give --dir or --db, not both"),
        (["--dir", "taken/below"], "--dir: cannot create"),
        (["--dir", "taken"], "--dir: cannot create"),
    ],
    ids=["with-db", "below-a-file", "a-file"],
)
def test_dir_that_cannot_hold_the_state_exits_2(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "taken").write_text("a file, not a directory\n")

    done = run_cli("demo", *SIZE, *args, cwd=tmp_path)

    assert done.returncode == 2
    assert says in done.stderr
    assert done.stdout == ""
    assert not list(tmp_path.glob("**/state.db"))


BIG_ENOUGH_FOR_SEVERAL_RUNS = (
    "--orgs", "5", "--projects", "10", "--components", "40", "--burst-length", "0.5",
)  # fmt: skip
"""About 90 list pages: a cycle takes about four 0.5 s bursts here (a burst that slow machines
cut short still completes its first page), so log lines come while the progress line shows (a
run outlasts a refresh of the live display, 1/8 s)."""
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[")
PROGRESS_LINE = re.compile(r"run \d+: phase ")


def test_logs_on_a_terminal_print_above_the_progress_line(tmp_path: Path) -> None:
    """On a TTY the log lines and the live progress line share stderr: every log line stands on
    a line of its own, and the progress line is one line, below them, drawn once at the end."""
    code, screen = run_cli_on_terminal(
        "demo", *BIG_ENOUGH_FOR_SEVERAL_RUNS, "--db", tmp_path / "demo.db", cwd=tmp_path
    )

    assert code == 0, "\n".join(screen)
    [summary] = [line for line in screen if line.startswith("cycle completed in ")]
    runs = int(summary.split()[3])
    assert runs >= 2, "the world must need more than one burst for this test to prove anything"
    logged = [line for line in screen if LOG_LINE.search(line)]
    glued = [line for line in logged if not LOG_LINE.match(line)]
    assert glued == [], "\n".join(glued)
    assert sum("burst_started" in line for line in logged) == runs
    progress = [index for index, line in enumerate(screen) if PROGRESS_LINE.search(line)]
    assert len(progress) == 1, "\n".join(screen[index] for index in progress)
    assert screen[progress[0]].startswith(f"run {runs}: phase done")
    assert all(index < progress[0] for index, line in enumerate(screen) if LOG_LINE.match(line))


def run_cli_on_terminal(
    *args: str | Path, cwd: Path, columns: int = 250, rows: int = 50
) -> tuple[int, list[str]]:
    """`python -m choreo_ingest ARGS` with stdin, stdout and stderr on a pseudo-terminal: its
    exit code and the lines its output leaves on a terminal of `columns` (scrollback included)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
    environment.update(TERM="xterm", NO_COLOR="1", COLUMNS=str(columns), LINES=str(rows))
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", *map(str, args)],
        cwd=cwd,
        env=environment,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    code = process.wait(timeout=CLI_TIMEOUT_SECONDS)
    screen = Screen(columns)
    screen.feed(output.decode("utf-8", errors="replace"))
    return code, screen.lines()


class Screen:
    """Just enough of a terminal to see what rich's live display leaves on it: text that wraps
    at `columns`, carriage return, line feed, erase line (ESC[2K) and cursor up/down (ESC[nA,
    ESC[nB); colours, cursor visibility and other controls change no text."""

    CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|[\r\n]")

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.rows: list[list[str]] = [[]]
        self.row = self.column = 0

    def feed(self, text: str) -> None:
        position = 0
        for control in self.CONTROL.finditer(text):
            self._write(text[position : control.start()])
            position = control.end()
            token, argument, command = control.group(0), control.group(1), control.group(2)
            if token == "\r":
                self.column = 0
            elif token == "\n":
                self._move_to(self.row + 1)
            elif command == "K" and argument == "2":
                self.rows[self.row] = []
            elif command == "A":
                self._move_to(max(self.row - int(argument or 1), 0))
            elif command == "B":
                self._move_to(self.row + int(argument or 1))
        self._write(text[position:])

    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.rows]

    def _move_to(self, row: int) -> None:
        self.row = row
        while len(self.rows) <= row:
            self.rows.append([])

    def _write(self, text: str) -> None:
        for character in text:
            if self.column >= self.columns:
                self.column = 0
                self._move_to(self.row + 1)
            line = self.rows[self.row]
            line.extend(" " * (self.column + 1 - len(line)))
            line[self.column] = character
            self.column += 1


def test_interrupted_demo_stops_and_says_where_its_files_stay(tmp_path: Path) -> None:
    """Ctrl-C ends the demo (exit 130) at once, not after the cycle: `run` takes the signal as
    a request to stop after the page in flight, and the demo must not start another run."""
    environment = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
    environment.update(TMPDIR=str(tmp_path), NO_COLOR="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo_ingest", "-v", "demo", *BIG_ENOUGH_FOR_SEVERAL_RUNS],
        cwd=tmp_path,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:  # -v: INFO events as JSON lines
            if json.loads(line)["event"] == "burst_started":
                process.send_signal(signal.SIGINT)
                break
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()

    [directory] = tmp_path.glob("choreo-ingest-demo-*")
    assert process.returncode == 130, stderr
    assert "cycle_completed" not in stderr
    assert "choreo-ingest: error: interrupted" in plain(stderr)
    assert f"the demo's files stay in {directory}" in stderr
    assert stdout == ""
