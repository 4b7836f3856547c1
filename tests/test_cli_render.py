"""The tables people read (`status`): what a cell holds is shown as it is, never read as rich
markup. An error text comes from the server and a state path from the operator; either may hold
brackets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import invoke, isolate

from choreo_ingest.cli import render
from choreo_ingest.cli.state_commands import show_status
from choreo_ingest.clock import SystemClock, rfc3339
from choreo_ingest.config import Config
from choreo_ingest.models import EVENTS_HELD_FACT, ProviderRecord, ProviderState
from choreo_ingest.reporting import StatusReport, status_report
from choreo_ingest.store import Store, state_location

MARKUP_ERROR = "HTTP 400: bad [/] [bold red]x[/bold red] [link=http://e]y :smile:"
"""Unbalanced markup (rich raises MarkupError on `[/]`), styles, a link and an emoji code."""
T_NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


def failing_state(path: Path, error: str = MARKUP_ERROR) -> Path:
    """A state file whose provider's last burst failed with `error`."""
    with Store.open(path) as store:
        store.migrate()
        record = ProviderRecord(
            name="openchoreo", state=ProviderState.BACKING_OFF, attempts=1, last_error=error
        )
        store.save_provider(record, 0.0)
    return path


@pytest.mark.parametrize("only", [[], ["openchoreo"]], ids=["all", "one-provider"])
def test_status_shows_an_error_with_brackets_as_it_is(tmp_path: Path, only: list[str]) -> None:
    state = failing_state(tmp_path / "state.db")

    result = invoke("status", *only, "--db", state)

    assert result.exit_code == 0, result.output
    assert MARKUP_ERROR in result.stdout


def test_status_of_a_state_file_with_brackets_in_its_path_names_it(tmp_path: Path) -> None:
    directory = tmp_path / "x["
    directory.mkdir()
    state = failing_state(directory / "]y.db", error="down")  # the path reads `x[/]y.db`

    result = invoke("status", "--db", "x[/]y.db")

    assert result.exit_code == 0, result.output
    title = f"{tmp_path}/x[/]y.db (schema version"  # folded where the terminal is narrower
    assert "".join(result.stdout.split()).startswith("".join(title.split()))
    assert state.exists()


def test_a_table_shows_title_columns_and_cells_as_they_are(
    capsys: pytest.CaptureFixture[str],
) -> None:
    render.table("[bold]t[/]", ["[i]c[/i]"], [["[/]"], [None], [":smile:"]])

    lines = [line.strip("|+ ") for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == "[bold]t[/]"
    assert {"[i]c[/i]", "[/]", ":smile:"} <= set(lines)


def test_key_values_show_keys_and_values_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    render.key_values("[red]t[/]", {"[b]k[/b]": "[/] [link=http://e]v", "none": None})

    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == "[red]t[/]"
    assert lines[1].split() == ["[b]k[/b]", "[/]", "[link=http://e]v"]
    assert lines[2].split() == ["none"]


def test_status_says_how_many_events_wait_in_the_inbox_and_nothing_when_none(
    tmp_path: Path,
) -> None:
    state = failing_state(tmp_path / "state.db", error="down")
    quiet = invoke("status", "--db", state)
    with Store.open(state) as store:
        seqs = store.add_events(
            "openchoreo",
            [
                {"kind": "Component", "namespace": "acme", "name": name, "action": "updated"}
                for name in ("cart", "shop", "pay")
            ],
            0.0,
        )
        store.fail_event("openchoreo", seqs[0], "HTTP 500", max_attempts=1)

    waiting = invoke("status", "--db", state)

    assert quiet.exit_code == waiting.exit_code == 0, waiting.output
    assert "events:" not in quiet.stdout
    assert waiting.stdout.splitlines()[-1] == "events: 2 pending, 1 parked"

    def status_held_until(moment: float) -> str:
        with Store.open(state) as store:  # as a drain that met an outage leaves it
            store.set_facts("openchoreo", {EVENTS_HELD_FACT: rfc3339(moment)}, 0.0)
        return str(invoke("status", "--db", state).stdout.splitlines()[-1])

    later = SystemClock().now() + 600
    assert status_held_until(later) == (
        f"events: 2 pending, 1 parked; openchoreo's wait until {rfc3339(later)} (the last "
        "re-read failed)"
    )
    # Past: the next drain clears it; until then it holds nothing back, and neither says it.
    assert status_held_until(later - 1200) == "events: 2 pending, 1 parked"
    [provider] = json.loads(invoke("status", "--json", "--db", state).stdout)["providers"]
    assert "eventsHeldUntil" not in provider


def status_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: ProviderRecord, width: int
) -> StatusReport:
    """`status`'s table of a state holding `record`, on a terminal `width` columns wide."""
    state = tmp_path / "state.db"
    with Store.open(state) as store:
        store.migrate()
        store.save_provider(record, T_NOW)
    monkeypatch.setattr(render, "_out", render._StdoutConsole(width=width))
    report = status_report(state_location(state), Config(), T_NOW)
    show_status(report)
    return report


@pytest.mark.parametrize("width", [80, 200], ids=["narrow", "wide"])
def test_status_keeps_names_states_and_times_whole_on_a_terminal_of_any_width(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    width: int,
) -> None:
    """Only the error folds: on 80 columns, where the table's other cells do not fit on one
    line each, each provider is shown as lines of `column value` instead."""
    record = ProviderRecord(
        name="openchoreo",
        state=ProviderState.BACKING_OFF,
        attempts=1,
        last_error="HTTP 503: " + "down " * 30,
        last_burst_at=T_NOW,
        next_action_at=T_NOW + 30,
    )

    report = status_shown(tmp_path, monkeypatch, record, width)

    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= width
    shown = "\n".join(lines)
    for whole in ("openchoreo", "backing_off", report.providers[0].to_json()["nextActionAt"]):
        assert whole in shown
    header = [[cell.strip() for cell in line.split("|")][1:-1] for line in lines]
    assert (["provider", "api", "state"] in [cells[:3] for cells in header]) == (width == 200)


@pytest.mark.parametrize("width", [80, 120], ids=["narrow", "wide"])
def test_status_shows_the_end_of_a_long_error_where_its_cause_is(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    width: int,
) -> None:
    """A refused grant's cause and advice come after the token URL: cut at 80 characters, the
    table showed the URL and lost them (an operator review)."""
    error = (
        "token request to openchoreo.auth.oauth.tokenUrl (https://thunder.openchoreo.example.com"
        "/oauth2/token): HTTP 401 invalid_client: the client was refused: check "
        "openchoreo.auth.oauth.clientId and clientSecretFile"
    )
    record = ProviderRecord(name="openchoreo", state=ProviderState.BACKING_OFF, last_error=error)

    status_shown(tmp_path, monkeypatch, record, width)

    shown = capsys.readouterr().out
    assert "invalid_client" in shown
    assert "clientSecretFile" in shown


def test_a_table_without_rows_is_drawn_even_where_a_row_would_be_too_wide(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No provider: the table's header says what there would be, not a title alone."""
    monkeypatch.setattr(render, "_out", render._StdoutConsole(width=40))

    render.table("t", ["a-long-column-name", "another-long-name", "error"], [], folding="error")

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].strip() == "t"
    assert len(lines) > 1


def test_status_says_a_bursting_provider_no_run_holds_was_killed(tmp_path: Path) -> None:
    """`bursting` with no process behind it read as a hung run; its error says it was killed."""
    state = tmp_path / "state.db"
    with Store.open(state) as store:
        store.migrate()
        killed = ProviderRecord(name="openchoreo", state=ProviderState.BURSTING, cycle_id=1)
        store.start_cycle(killed, T_NOW)

    shown = invoke("status", "--db", state)
    document = invoke("status", "--json", "--db", state)

    assert shown.exit_code == 0, shown.output
    assert "bursting (no run holds the lock)" in " ".join(shown.stdout.split())
    assert '"state": "bursting"' in document.stdout  # scripts read the stored state


def test_status_says_the_health_problems_under_its_table(tmp_path: Path) -> None:
    """A row such as `interstitial | 1 (144 pages) | attempts 0` reads as progress while a
    listing can never finish (an operator QA pass): the problems `health` reports follow it."""
    state = tmp_path / "state.db"
    with Store.open(state) as store:
        store.migrate()
        failing = ProviderRecord(
            name="openchoreo",
            state=ProviderState.BACKING_OFF,
            attempts=9,
            last_error="HTTP 503: down",
            last_burst_at=T_NOW,
            next_action_at=T_NOW + 30,
        )
        store.save_provider(failing, T_NOW)
    healthy = failing_state(tmp_path / "healthy.db", error="down")

    shown = invoke("status", "--db", state)
    quiet = invoke("status", "--db", healthy)

    assert shown.exit_code == quiet.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[-1] == (
        "health: openchoreo: 9 consecutive failed bursts (maxAttempts 5); the last: HTTP 503: down"
    )
    assert "health:" not in quiet.stdout
