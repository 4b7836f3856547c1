"""`run` when an output it writes after the bursts cannot be written (the YAML mirror, the
metrics textfile): the bursts' outcomes stay in the `--json` document, the error stands beside
them, and the exit code is the error's, the same for either output."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from choreo_ingest.cli.run_flow import outcome_line, report_run
from choreo_ingest.config import Config
from choreo_ingest.engine import ProviderOutcome, StopSignal
from choreo_ingest.errors import ConfigError
from choreo_ingest.events import InboxHeld
from choreo_ingest.invocation import RunResult, run_once
from choreo_ingest.models import EntityIteratorResult, ProviderAction, ProviderState, RunOutcome
from choreo_ingest.providers.base import BurstContext

from fakes import FakeClock, FakeProvider, make_config, make_entity
from sim_support import plain


def run(config: Config, clock: FakeClock) -> RunResult:
    """One run, its log lines kept out of the output under test."""
    assert config.state_path is not None
    provider = FakeProvider([make_entity("a"), make_entity("b")])
    with structlog.testing.capture_logs():
        return run_once(config, config.state_path, clock, providers={"fake": provider})


def unwritable_mirror(tmp_path: Path) -> Config:
    (tmp_path / "a-file").write_text("not a directory\n")
    return replace(make_config(tmp_path), catalog_directory=tmp_path / "a-file" / "catalog")


def unwritable_metrics(tmp_path: Path) -> Config:
    (tmp_path / "metrics-dir").mkdir()
    return replace(make_config(tmp_path), metrics_textfile=tmp_path / "metrics-dir")


@pytest.mark.parametrize(
    ("configured", "setting"),
    [(unwritable_mirror, "catalog.directory"), (unwritable_metrics, "metrics.textfile")],
    ids=["mirror", "metrics-textfile"],
)
def test_run_json_keeps_the_bursts_beside_an_output_it_could_not_write(
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    configured: Callable[[Path], Config],
    setting: str,
) -> None:
    config = configured(tmp_path)

    code = report_run(run(config, clock), json_output=True)

    printed = capsys.readouterr()
    document = json.loads(printed.out)
    assert (code, document["outcome"], document["exitCode"]) == (2, "error", 2)
    [provider] = document["providers"]
    assert (provider["name"], provider["action"], provider["cycleCompleted"]) == (
        "fake",
        "burst",
        True,
    )
    assert provider["entitiesUpserted"] == 2
    assert document["error"].startswith(f"{setting}: ")
    assert document["error"] in printed.err


def test_run_text_names_the_output_it_could_not_write(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    code = report_run(run(unwritable_mirror(tmp_path), clock), json_output=False)

    assert code == 2
    assert "catalog.directory: cannot update the YAML mirror" in capsys.readouterr().err


def test_run_json_with_its_outputs_written_says_no_error(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    config = replace(make_config(tmp_path), catalog_directory=tmp_path / "catalog")

    code = report_run(run(config, clock), json_output=True)

    document = json.loads(capsys.readouterr().out)
    assert (code, document["outcome"], document["exitCode"]) == (0, "burst", 0)
    assert "error" not in document
    assert document["providers"][0]["cycleCompleted"] is True


def test_both_outputs_unwritten_are_each_named_in_json_and_on_stderr(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    config = unwritable_mirror(tmp_path)
    config = replace(config, metrics_textfile=unwritable_metrics(tmp_path).metrics_textfile)

    code = report_run(run(config, clock), json_output=True)

    printed = capsys.readouterr()
    document = json.loads(printed.out)
    assert (code, document["outcome"], document["exitCode"]) == (2, "error", 2)
    mirror, _ = document["error"].split("; metrics.textfile: ")
    assert mirror.startswith("catalog.directory: ")
    lines = plain(printed.err).splitlines()
    assert [line.split(": ")[2] for line in lines] == ["catalog.directory", "metrics.textfile"]


def test_a_wait_shown_to_a_person_says_how_to_burst_now() -> None:
    """Run by hand after mending what failed (a rotated secret), a backoff of up to 30 minutes
    must not look like the tool doing nothing."""
    waiting = ProviderOutcome(
        name="openchoreo",
        action=ProviderAction.WAITING,
        state=ProviderState.BACKING_OFF,
        next_action_at=1_764_806_400.0,
        reason="backing off after a failed burst",
    )

    assert outcome_line(waiting) == (
        "openchoreo: nothing due (backing off after a failed burst) until 2025-12-04T00:00:00Z; "
        "`choreo-ingest run --force` bursts now"
    )


@dataclass
class StoppedOnSecondPage(FakeProvider):
    """SIGTERM (a Job's deadline) while the second page is fetched."""

    stop: StopSignal | None = None

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        if cursor is not None and self.stop is not None:
            self.stop.set(signal.SIGTERM)
        return super().next(context, cursor)


def test_an_interrupted_run_says_so_in_one_line_off_a_terminal(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kubectl logs` of a Job ended by its deadline must not be empty."""
    config = make_config(tmp_path)
    assert config.state_path is not None
    stop = StopSignal()
    provider = StoppedOnSecondPage([make_entity(name) for name in "abcdef"], stop=stop)
    with structlog.testing.capture_logs():
        result = run_once(config, config.state_path, clock, providers={"fake": provider}, stop=stop)

    code = report_run(result, json_output=False)

    printed = capsys.readouterr()
    assert (code, printed.out) == (130, "")
    assert plain(printed.err) == (
        "choreo-ingest: error: fake: interrupted after 2 page(s); the next run goes on from the "
        "last one\n"
    )


@dataclass
class UnusableProxy(FakeProvider):
    """Every burst meets a setting to mend: the proxy the environment sets cannot be used."""

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        raise ConfigError("the proxy cannot be used; fix or unset it", path="$HTTPS_PROXY")


def test_a_burst_failed_on_a_setting_to_mend_exits_2_as_check_does(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not 3, upstream trouble: the failure is recorded and backed off all the same."""
    config = make_config(tmp_path)
    assert config.state_path is not None
    with structlog.testing.capture_logs():
        result = run_once(config, config.state_path, clock, providers={"fake": UnusableProxy([])})

    code = report_run(result, json_output=False)

    assert (code, result.providers[0].state) == (2, ProviderState.BACKING_OFF)
    assert plain(capsys.readouterr().err) == (
        "choreo-ingest: error: fake: $HTTPS_PROXY: the proxy cannot be used; fix or unset it\n"
    )


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_events_held_by_upstream_trouble_exit_3_and_say_until_when(
    capsys: pytest.CaptureFixture[str], json_output: bool
) -> None:
    """A resting provider's drain met an outage: cron sees it as it sees a failed burst, beside a
    waiting provider whose own line stays a person's."""
    waiting = ProviderOutcome(
        name="fake", action=ProviderAction.WAITING, state=ProviderState.RESTING
    )
    result = RunResult(outcome=RunOutcome.FAILED, providers=[waiting])
    result.events.retried = 1
    result.events.held.append(InboxHeld("fake", 1_700_000_060.0, "GET /x: 503 INTERNAL_ERROR"))

    code = report_run(result, json_output=json_output)

    printed = capsys.readouterr()
    said = "GET /x: 503 INTERNAL_ERROR"
    assert code == 3
    if not json_output:
        assert plain(printed.err) == (
            f"choreo-ingest: error: fake: events wait until 2023-11-14T22:14:20Z: {said}\n"
        )
        return
    assert printed.err == ""  # the document says it, as it says a failed burst
    document = json.loads(printed.out)
    assert (document["outcome"], document["exitCode"]) == ("failed", 3)
    assert document["events"] == {
        "applied": 0,
        "retried": 1,
        "parked": 0,
        "dropped": 0,
        "held": [{"provider": "fake", "until": "2023-11-14T22:14:20Z", "error": said}],
    }


REFUSED = "POST https://idp.test/token: HTTP 401 invalid_client; check the client secret"
OUTAGE = "GET /x: 503 INTERNAL_ERROR"
HELD_AT = 1_700_000_060.0  # 2023-11-14T22:14:20Z


def failed(name: str, error: str, **kind: bool) -> ProviderOutcome:
    state = ProviderState.BACKING_OFF
    return ProviderOutcome(name, ProviderAction.FAILED, state, error=error, **kind)


@pytest.mark.parametrize(
    ("outcomes", "held", "code", "lines"),
    [
        (
            [failed("a", REFUSED, misconfigured=True)],
            [InboxHeld("a", HELD_AT, REFUSED, mendable=True)],
            2,
            [f"a: {REFUSED} (its events wait until 2023-11-14T22:14:20Z too)"],
        ),
        (
            [failed("a", REFUSED, misconfigured=True)],
            [InboxHeld("b", HELD_AT, OUTAGE)],
            3,
            [f"b: events wait until 2023-11-14T22:14:20Z: {OUTAGE}", f"a: {REFUSED}"],
        ),
        (
            [failed("a", "cannot load it", unloadable=True)],
            [InboxHeld("b", HELD_AT, REFUSED, mendable=True)],
            2,
            [f"b: events wait until 2023-11-14T22:14:20Z: {REFUSED}", "a: cannot load it"],
        ),
        (
            [failed("a", "internal error in provider 'a': KeyError: 'x'", crashed=True)],
            [InboxHeld("b", HELD_AT, REFUSED, mendable=True)],
            1,
            [
                f"b: events wait until 2023-11-14T22:14:20Z: {REFUSED}",
                "a: internal error in provider 'a': KeyError: 'x'",
            ],
        ),
    ],
    ids=["refused-twice-said-once", "mend-and-outage", "unloadable-and-mend", "bug-first"],
)
def test_failed_bursts_and_held_drains_of_several_providers_decide_the_code_together(
    capsys: pytest.CaptureFixture[str],
    outcomes: list[ProviderOutcome],
    held: list[InboxHeld],
    code: int,
    lines: list[str],
) -> None:
    result = RunResult(outcome=RunOutcome.FAILED, providers=outcomes)
    result.events.held.extend(held)

    assert report_run(result, json_output=False) == code
    said = plain(capsys.readouterr().err).splitlines()
    assert said == [f"choreo-ingest: error: {line}" for line in lines]
