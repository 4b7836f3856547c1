"""A `run` with nothing due, and the other lean calls: what they do, and what they import.

`run_if_idle` must do exactly what a full `run` does when nothing is due (rewrite the metrics
textfile) and nothing at all otherwise, leaving the work to the full run. The lean entry's import
set is pinned, so that a later change cannot pull a heavy module back into the calls cron and
scripts make every minute.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from choreo_ingest.clock import SystemClock
from choreo_ingest.config import Config, load_config
from choreo_ingest.config_file import cache_directory
from choreo_ingest.errors import NotAStateFile
from choreo_ingest.idle import run_if_idle
from choreo_ingest.invocation import run_once
from choreo_ingest.models import (
    REFRESH_REQUESTED_FACT,
    SOURCE_CYCLE_FACT,
    SOURCE_FACT,
    UNAVAILABLE_FACT,
)
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server
from choreo_ingest.store import RunLock, SqliteLocation, position_name

from fakes import FakeClock, FakeProvider, make_entity
from sim_support import plain, run_cli

PROVIDER = "openchoreo"
REST_SECONDS = 30 * 60

# No third-party package at all: with the config file unchanged since the last call, not even
# PyYAML (config_file.py keeps the parsed document).
ALLOWED_THIRD_PARTY: set[str] = set()
# choreo-ingest's own modules on the lean path: a new one here is a decision, not an accident.
ALLOWED_OWN = {
    "choreo_ingest",
    "choreo_ingest.api_address",  # a cycle begun on another server is due (urllib.parse only)
    "choreo_ingest.atomic_file",  # the textfile's writer, split off files (no pathlib)
    "choreo_ingest.cache_files",  # where the parsed config and the kept answer are
    "choreo_ingest.cli",
    "choreo_ingest.cli.exit_codes",
    "choreo_ingest.cli.failures",
    "choreo_ingest.cli.lean",
    "choreo_ingest.cli.output",
    "choreo_ingest.clock",
    "choreo_ingest.config",
    "choreo_ingest.change_listing",  # `changes`, split off reporting
    "choreo_ingest.config_database_url",  # config_values's PostgreSQL URLs, split off
    "choreo_ingest.config_document",
    "choreo_ingest.config_file",
    "choreo_ingest.config_model",
    "choreo_ingest.config_secrets",  # secret files and masking, split off config
    "choreo_ingest.config_values",
    "choreo_ingest.errors",
    "choreo_ingest.event_retries",  # the objects `status` shows waiting alone (json only)
    "choreo_ingest.files",
    "choreo_ingest.idle",
    "choreo_ingest.idle_answer",  # the kept answer, looked at before anything else
    "choreo_ingest.lazy_exports",  # the package's and the store's names, loaded when asked for
    "choreo_ingest.metrics",
    "choreo_ingest.mirror_marker",
    "choreo_ingest.models",
    "choreo_ingest.provider_scope",
    "choreo_ingest.providers",
    "choreo_ingest.providers.registry",
    "choreo_ingest.reporting",
    "choreo_ingest.retention",
    "choreo_ingest.schedule",
    "choreo_ingest.store",
    "choreo_ingest.store.change_log",
    "choreo_ingest.store.connection",
    "choreo_ingest.store.damage_note",  # a stat of the note a run left beside a damaged file
    "choreo_ingest.store.dialect",
    "choreo_ingest.store.entity_rows",
    "choreo_ingest.store.inbox",
    "choreo_ingest.store.inbox_rows",  # the inbox's row writing, split off inbox
    "choreo_ingest.store.index",
    "choreo_ingest.store.location",
    "choreo_ingest.store.meta",
    "choreo_ingest.store.positions",
    "choreo_ingest.store.queries",
    "choreo_ingest.store.readers",  # the providers' store readers, split off store
    "choreo_ingest.store.run_lock",
    "choreo_ingest.store.schema",
    "choreo_ingest.store.state_file",
    "choreo_ingest.store.store",
    "choreo_ingest.store.write_mark",  # what tells the kept answer nothing was written since
    "choreo_ingest.store.writes",
    "choreo_ingest.version",
    "choreo_ingest.withheld",  # what `status` and `health` withhold from a caller of serve
}
# Standard-library modules that cost a lean call more than it does itself.
FORBIDDEN_STDLIB = {"asyncio", "ssl", "http", "email", "concurrent", "logging", "ctypes", "decimal"}

RECORDER = """
import atexit, json, sys
atexit.register(lambda: open({out!r}, "w").write(json.dumps(sorted(sys.modules))))
{prelude}
{call}
"""
CALL_THE_CLI = "from choreo_ingest.cli import main; main(sys.argv[1:])"


def write_config(tmp_path: Path, **sections: Any) -> Path:
    document: dict[str, Any] = {
        "openchoreo": {"baseUrl": "http://openchoreo.test/api/v1"},
        "state": {"path": "state.db"},
        "metrics": {"textfile": "metrics.prom"},
        "providers": [PROVIDER],
        **sections,
    }
    path = tmp_path / "choreo-ingest.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def resting_state(config: Config, clock: Any) -> SqliteLocation:
    """A state whose provider completed a cycle at `clock.now()` and now rests."""
    assert config.state_path is not None
    location = SqliteLocation(config.state_path)
    entities = [make_entity(f"service-{n}") for n in range(5)]
    provider = FakeProvider(entities, page_size=10, name=PROVIDER)
    run_once(config, location, clock, providers={PROVIDER: provider})
    with location.open(readonly=True) as store:
        assert store.load_provider(PROVIDER).state.value == "resting"
    return location


def interstitial_state(config: Config, clock: Any) -> SqliteLocation:
    """A state whose provider's first cycle has committed one page and waits for its next burst."""
    assert config.state_path is not None
    location = SqliteLocation(config.state_path)
    entities = [make_entity(f"service-{n}") for n in range(5)]
    first_page = FakeProvider(entities, page_size=2, page_cost=60.0, name=PROVIDER)
    run_once(config, location, clock, providers={PROVIDER: first_page})
    return location


def state_dump(location: SqliteLocation) -> dict[str, Any]:
    with location.open(readonly=True) as store:
        record = store.load_provider(PROVIDER)
        return {
            "record": record,
            "facts": store.facts(PROVIDER),
            "counters": store.counters(PROVIDER),
            "entities": store.entity_counts(PROVIDER),
            "changes": store.change_bounds(),
            "events": store.pending_event_count(PROVIDER),
        }


def without_run_time(metrics: str) -> list[str]:
    return [line for line in metrics.splitlines() if "last_run_timestamp" not in line]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)


class TestRunIfIdle:
    def test_rewrites_only_the_metrics_and_changes_no_state(self, config_file: Path) -> None:
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)
        assert config.metrics_textfile is not None
        written_by_the_run = config.metrics_textfile.read_text()
        before = state_dump(location)
        clock.advance(60)

        assert run_if_idle(config, location, clock) is True

        assert state_dump(location) == before
        metrics = config.metrics_textfile.read_text()
        assert without_run_time(metrics) == without_run_time(written_by_the_run)
        assert f'last_run_timestamp_seconds{{provider="{PROVIDER}"}} 1.80000006e+09' in metrics
        assert not RunLock(location.path).is_held_elsewhere()

    def test_writes_the_textfile_the_full_run_writes_parked_events_and_bursts_included(
        self, config_file: Path
    ) -> None:
        """A parked event is no work (only a newer event or a cycle clears it): the idle path
        writes the inbox gauges and burst counters as the full run did."""
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)
        with location.open() as store:
            body = {"kind": "Component", "namespace": "acme", "name": "cart"}
            [seq] = store.add_events(PROVIDER, [body], clock.now())
            assert store.fail_event(PROVIDER, seq, "GET /x: 404", max_attempts=1)
        provider = FakeProvider([], name=PROVIDER)
        run_once(config, location, clock, providers={PROVIDER: provider})  # the full run
        assert config.metrics_textfile is not None
        written_by_the_run = config.metrics_textfile.read_text()
        clock.advance(60)

        assert run_if_idle(config, location, clock) is True

        metrics = config.metrics_textfile.read_text()
        assert without_run_time(metrics) == without_run_time(written_by_the_run)
        assert f'choreo_ingest_events_parked{{provider="{PROVIDER}"}} 1.0' in metrics
        assert f'choreo_ingest_events_pending{{provider="{PROVIDER}"}} 0.0' in metrics
        ok = f'choreo_ingest_bursts_total{{outcome="ok",provider="{PROVIDER}"}} 1.0'
        assert ok in metrics

    def test_the_configured_labels_are_on_every_series_the_full_and_the_idle_run_write(
        self, tmp_path: Path
    ) -> None:
        path = write_config(
            tmp_path, metrics={"textfile": "metrics.prom", "labels": {"platform": "prod"}}
        )
        config = load_config(path)
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)  # the full run writes it
        assert config.metrics_textfile is not None
        by_the_run = config.metrics_textfile.read_text()
        clock.advance(60)

        assert run_if_idle(config, location, clock) is True

        for text in (by_the_run, config.metrics_textfile.read_text()):
            samples = [line for line in text.splitlines() if not line.startswith("#")]
            assert samples
            assert all('platform="prod"' in line for line in samples)

    def test_a_state_a_run_found_damaged_is_a_health_problem_in_the_metrics(
        self, config_file: Path
    ) -> None:
        """`health` refuses it; a run with nothing due reads none of its damaged pages and
        exits 0, so the metrics must say it, or no alert fires until the provider is due."""
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)
        damage = NotAStateFile(f"state store {location.path}: malformed", path=str(location.path))
        damage.damaged = True
        location.note_damage(damage)
        assert config.metrics_textfile is not None
        healthy = f'choreo_ingest_health_problems{{provider="{PROVIDER}"}} 0.0'
        assert healthy in config.metrics_textfile.read_text()
        clock.advance(60)

        assert run_if_idle(config, location, clock) is True
        idle = config.metrics_textfile.read_text()
        run_once(config, location, clock, providers={PROVIDER: FakeProvider([], name=PROVIDER)})
        full = config.metrics_textfile.read_text()

        problem = f'choreo_ingest_health_problems{{provider="{PROVIDER}"}} 1.0'
        assert problem in idle
        assert problem in full
        location.forget_damage()  # `check` found the file whole
        assert run_if_idle(config, location, clock) is True
        assert healthy in config.metrics_textfile.read_text()

    @pytest.mark.parametrize(
        "make_work",
        [
            pytest.param(lambda store, clock: clock.advance(REST_SECONDS), id="rest-over"),
            pytest.param(
                lambda store, clock: store.add_events(PROVIDER, [{"kind": "x"}], clock.now()),
                id="an-event-waits",
            ),
            pytest.param(
                lambda store, clock: store.set_facts(
                    PROVIDER, {REFRESH_REQUESTED_FACT: "2026-12-01T00:00:00Z"}, clock.now()
                ),
                id="refresh-requested",
            ),
            pytest.param(
                lambda store, clock: store.set_facts(
                    PROVIDER, {UNAVAILABLE_FACT: "was not installed"}, clock.now()
                ),
                id="was-unavailable",
            ),
        ],
    )
    def test_leaves_the_work_to_the_full_run(
        self, config_file: Path, make_work: Callable[[Any, FakeClock], Any]
    ) -> None:
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)
        assert config.metrics_textfile is not None
        config.metrics_textfile.unlink()
        with location.open() as store:
            make_work(store, clock)
        before = state_dump(location)

        assert run_if_idle(config, location, clock) is False

        assert state_dump(location) == before
        assert not config.metrics_textfile.exists()

    def test_a_refresh_that_waits_for_the_first_cycle_is_no_work_between_its_bursts(
        self, config_file: Path
    ) -> None:
        """The request changes nothing until the first cycle completes (`refresh_waits`): the
        calls between that cycle's bursts stay idle ones."""
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        location = interstitial_state(config, clock)
        with location.open() as store:
            assert store.load_provider(PROVIDER).state.value == "interstitial"
            store.set_facts(PROVIDER, {REFRESH_REQUESTED_FACT: "2026-12-01T00:00:00Z"}, clock.now())
        before = state_dump(location)

        assert run_if_idle(config, location, clock) is True

        assert state_dump(location) == before

    @pytest.mark.parametrize(
        ("source", "idle"),
        [("http://openchoreo.test/api/v1", True), ("http://elsewhere.test/api/v1", False)],
        ids=["same-server", "another-server"],
    )
    def test_a_cycle_begun_on_another_server_is_work(
        self, config_file: Path, source: str, idle: bool
    ) -> None:
        """The engine begins it again at once (`SourceNamingProvider`): a cron call that waited
        out the interval (or a backoff) would leave the catalog half of each server meanwhile."""
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        location = interstitial_state(config, clock)
        with location.open() as store:
            record = store.load_provider(PROVIDER)
            assert record.state.value == "interstitial"
            facts = {SOURCE_FACT: source, SOURCE_CYCLE_FACT: str(record.cycle_id)}
            store.set_facts(PROVIDER, facts, clock.now())

        assert run_if_idle(config, location, clock) is idle

    def test_a_mirror_behind_the_change_log_is_work(self, tmp_path: Path) -> None:
        config = load_config(write_config(tmp_path, catalog={"directory": "catalog"}))
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)  # the run wrote the mirror: it is up to date
        assert config.catalog_directory is not None
        assert run_if_idle(config, location, clock) is True

        with location.open() as store:
            store.set_position(position_name(config.catalog_directory), 1)
        assert run_if_idle(config, location, clock) is False

    @pytest.mark.parametrize("marker_kept", [False, True], ids=["remounted", "rm-glob"])
    def test_a_mirror_directory_emptied_under_the_state_is_work(
        self, tmp_path: Path, marker_kept: bool
    ) -> None:
        """Its position says it is in step; its files are gone, and its marker with them (a
        volume remounted empty) or not (`rm -r catalog/*` skips the dot file)."""
        config = load_config(write_config(tmp_path, catalog={"directory": "catalog"}))
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)
        directory = config.catalog_directory
        assert directory is not None
        for entry in directory.iterdir():
            if not (marker_kept and entry.name.startswith(".")):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

        assert run_if_idle(config, location, clock) is False

    def test_changes_old_enough_to_prune_are_work(self, tmp_path: Path) -> None:
        config = load_config(write_config(tmp_path, changes={"retainDays": 1}))
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)
        clock.advance(2 * 86_400)  # the cycle's changes are now two days old
        with location.open() as store:  # and the provider rests on
            record = store.load_provider(PROVIDER)
            store.save_provider(replace(record, next_action_at=clock.now() + 3600), clock.now())

        assert run_if_idle(config, location, clock) is False

    def test_another_run_holding_the_lock_is_left_to_the_full_run(self, config_file: Path) -> None:
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)
        with RunLock(location.path):
            assert run_if_idle(config, location, clock) is False

    def test_a_provider_that_is_not_built_in_is_left_to_the_full_run(
        self, config_file: Path
    ) -> None:
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        location = resting_state(config, clock)
        assert run_if_idle(replace(config, providers=(PROVIDER, "csv")), location, clock) is False

    def test_no_state_yet_and_no_api_settings_are_left_to_the_full_run(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        config = load_config(config_file)
        clock = FakeClock(1_800_000_000.0)
        assert run_if_idle(config, SqliteLocation(tmp_path / "none.db"), clock) is False
        location = resting_state(config, clock)
        no_api = replace(config, openchoreo=replace(config.openchoreo, base_url=None))
        assert run_if_idle(no_api, location, clock) is False


def lean_call(
    tmp_path: Path, *args: str, prelude: str = "", call: str = CALL_THE_CLI
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """The CLI as a process (off a TTY), and the modules it loaded beyond what the bare
    interpreter loads here (site's .pth files, say)."""
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    script = RECORDER.format(out=str(out), prelude=prelude, call=call)
    done = run_cli(*args, cwd=tmp_path, entry=("-c", script))
    loaded = set(json.loads(out.read_text()))
    if call == "pass":
        return done, loaded
    return done, loaded - lean_call(tmp_path, call="pass")[1]


def import_violations(modules: set[str]) -> list[str]:
    top_level = {name.partition(".")[0] for name in modules}
    third_party = {
        name
        for name in top_level
        if name not in sys.stdlib_module_names and name not in {"__main__", "choreo_ingest"}
    }
    own = {name for name in modules if name.startswith("choreo_ingest")}
    problems = [f"third-party: {name}" for name in sorted(third_party - ALLOWED_THIRD_PARTY)]
    problems += [f"own: {name}" for name in sorted(own - ALLOWED_OWN)]
    problems += [f"stdlib: {name}" for name in sorted(top_level & FORBIDDEN_STDLIB)]
    return problems


def assert_parsed_then_kept(tmp_path: Path, config_file: Path) -> None:
    """Two idle runs: the first parses the config file (PyYAML), the second reads its copy."""
    for parses in (True, False):
        done, modules = lean_call(tmp_path, "--config", str(config_file), "run")
        assert done.returncode == 0, done.stderr
        assert ("yaml" in modules) is parses


LEAN_CALLS = [
    ["run"],
    ["status", "--json"],
    ["health"],
    ["health", "--json"],
    ["export"],
    ["changes", "--json"],
    ["changes", "--since", "2", "--limit", "1"],
]


@pytest.mark.slow
class TestLeanEntry:
    @pytest.mark.parametrize("args", LEAN_CALLS, ids=[" ".join(call) for call in LEAN_CALLS])
    @pytest.mark.parametrize(
        "token", [None, "token-in-file-7d"], ids=["no-secret", "token-in-the-file"]
    )
    def test_answers_without_heavy_imports_what_the_full_command_answers(
        self, tmp_path: Path, args: list[str], token: str | None
    ) -> None:
        # A token written in the file is left out of its kept copy, which answers all the same.
        openchoreo = {"baseUrl": "http://openchoreo.test/api/v1", "token": token}
        config_file = write_config(tmp_path, openchoreo=openchoreo)
        config_file.chmod(0o600)
        resting_state(load_config(config_file), clock_at_now())  # and keeps the parsed copy
        lean, modules = lean_call(tmp_path, "--config", str(config_file), *args)

        assert import_violations(modules) == []
        assert "typer" not in modules  # it took the lean path
        assert "yaml" not in modules  # it read the copy
        full = run_cli("-v", "--config", config_file, *args, cwd=tmp_path)  # -v: the full path
        assert (lean.returncode, lean.stdout) == (full.returncode, full.stdout)
        assert lean.stderr == ""

    @pytest.mark.parametrize("json_flag", [["--json"], []], ids=["json", "text"])
    def test_a_state_no_release_writes_is_reported_in_one_line_as_the_full_command_reports_it(
        self, tmp_path: Path, config_file: Path, json_flag: list[str]
    ) -> None:
        """A state row no release writes (a newer one's, or edited by hand) gave a bare
        traceback, then an internal error: it is a state error, naming the way out."""
        location = resting_state(load_config(config_file), clock_at_now())
        with closing(sqlite3.connect(location.path)) as conn:
            conn.execute("UPDATE openchoreo_incremental_ingestion_state SET state = 'bogus'")
            conn.commit()

        lean, _ = lean_call(tmp_path, "--config", str(config_file), "status", *json_flag)
        full = run_cli("-v", "--config", config_file, "status", *json_flag, cwd=tmp_path)

        message = (
            "provider 'openchoreo': its stored state cannot be read ('bogus' is not a valid "
            "ProviderState); a newer choreo-ingest may have written it: upgrade, or start the "
            "provider again with `choreo-ingest reset openchoreo`"
        )
        assert (lean.returncode, lean.stdout) == (full.returncode, full.stdout) == (4, lean.stdout)
        assert plain(lean.stderr).splitlines() == [f"choreo-ingest: error: {message}"]
        if json_flag:
            assert json.loads(lean.stdout)["error"].startswith(message)

    def test_an_edited_config_is_parsed_again_and_then_kept(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        resting_state(load_config(config_file), clock_at_now())
        config_file.write_text(config_file.read_text() + "# edited\n")

        assert_parsed_then_kept(tmp_path, config_file)

    def test_a_client_secret_in_the_file_is_left_out_of_its_copy_and_read_for_a_burst(
        self, tmp_path: Path
    ) -> None:
        # The file holds the OAuth client secret in plain text (chmod 600): the calls with
        # nothing to do answer from the kept copy, which holds no secret; a burst reads it again.
        secret = "client-secret-in-the-file-3b9c"
        options = SimulatorOptions(oauth_client_id="reader", oauth_client_secret=secret)
        server = start_server(SimulatorApi(World.generate(1, 2, 3, seed=7), options))
        oauth = {
            "tokenUrl": f"{server.root_url}/oauth2/token",
            "clientId": "reader",
            "clientSecret": secret,
        }
        config_file = write_config(
            tmp_path, openchoreo={"baseUrl": server.url, "auth": {"oauth": oauth}}
        )
        config_file.chmod(0o600)
        try:
            resting_state(load_config(config_file), clock_at_now())
            # Touched since this process kept its copy: the next call parses it again.
            os.utime(config_file, ns=(1, config_file.stat().st_mtime_ns + 1))
            assert_parsed_then_kept(tmp_path, config_file)

            burst, modules = lean_call(
                tmp_path, "--config", str(config_file), "run", "--force", "--json"
            )
        finally:
            server.stop()

        assert (burst.returncode, burst.stderr) == (0, ""), burst.stderr
        [outcome] = json.loads(burst.stdout)["providers"]
        assert outcome["entitiesUpserted"] > 0  # with a token granted for the secret
        assert "yaml" in modules  # the file read again, for its secret
        directory = cache_directory()
        assert directory is not None
        kept = [path.read_text() for path in directory.glob("config-*.json")]
        assert kept
        assert not any(secret in text for text in kept)

    def test_the_pin_catches_a_heavy_import(self, tmp_path: Path, config_file: Path) -> None:
        resting_state(load_config(config_file), clock_at_now())
        _, modules = lean_call(
            tmp_path, "--config", str(config_file), "run", prelude="import httpx"
        )
        assert "third-party: httpx" in import_violations(modules)

    @pytest.mark.parametrize("new_state", [False, True], ids=["resting", "new-state-file"])
    def test_a_run_with_work_to_do_bursts_without_typer_rich_or_pydantic(
        self, tmp_path: Path, config_file: Path, new_state: bool
    ) -> None:
        # A state that rests (or none yet: the first run makes and migrates it), and a burst
        # forced (that fails to reach the API: exit 3).
        if not new_state:
            resting_state(load_config(config_file), clock_at_now())
        done, modules = lean_call(tmp_path, "--config", str(config_file), "run", "--force")

        assert done.returncode == 3, done.stderr
        assert "GET /namespaces: ConnectError" in done.stderr
        assert "choreo_ingest.engine" in modules
        top_level = {name.partition(".")[0] for name in modules}
        heavy = {"typer", "click", "rich", "pygments", "pydantic", "sqlite_utils", "numpy"}
        assert top_level & heavy == set()
        # The failure is said once, in the error line (off a terminal a JSON record at level
        # error): no log line repeats it (cron mails stderr), so structlog is not even loaded.
        [line] = done.stderr.splitlines()
        failed = json.loads(line)
        assert (failed["event"], failed["level"]) == ("error", "error")
        assert failed["message"].startswith("openchoreo: GET /namespaces: ConnectError")
        assert "structlog" not in modules

    def test_a_burst_that_goes_well_writes_nothing_and_never_loads_structlog(
        self, tmp_path: Path
    ) -> None:
        # Off a terminal only warnings are written; importing structlog would cost this call
        # about 70 ms of CPU (and asyncio, which structlog.stdlib imports) for nothing.
        server = start_server(SimulatorApi(World.generate(1, 2, 3, seed=7), SimulatorOptions()))
        try:
            config = write_config(tmp_path, openchoreo={"baseUrl": server.url})
            done, modules = lean_call(tmp_path, "--config", str(config), "run", "--force")
        finally:
            server.stop()

        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert "choreo_ingest.engine" in modules
        with SqliteLocation(tmp_path / "state.db").open(readonly=True) as store:
            assert store.load_provider(PROVIDER).cycle_id == 1
            assert sum(store.entity_counts(PROVIDER).values()) > 0
        top_level = {name.partition(".")[0] for name in modules}
        assert top_level & {"structlog", "asyncio"} == set()
        # `openchoreo.api: auto` met a v1 server first: the org era's module is not loaded.
        assert "choreo_ingest.providers.openchoreo.api_v1" in modules
        assert "choreo_ingest.providers.openchoreo.api_orgs" not in modules

    def test_a_burst_does_not_load_trio_where_it_is_installed(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        # httpcore imports trio when it can (for async clients under trio), which costs a
        # burst 85 ms where trio is installed. A stand-in trio on the path shows the import.
        fake = tmp_path / "site" / "trio"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("")
        path = f"import sys; sys.path.insert(0, {str(fake.parent)!r})"
        resting_state(load_config(config_file), clock_at_now())

        done, modules = lean_call(
            tmp_path, "--config", str(config_file), "run", "--force", prelude=path
        )
        assert done.returncode == 3, done.stderr
        assert "httpx" in modules
        assert "trio" not in modules
        control_call = f"{path}; import httpx; httpx.Client().close()"
        _, control = lean_call(tmp_path, prelude=control_call, call="pass")
        assert "trio" in control

    def test_the_idle_run_leaves_the_state_alone_and_rewrites_the_metrics(
        self, tmp_path: Path, config_file: Path
    ) -> None:
        location = resting_state(load_config(config_file), clock_at_now())
        metrics = tmp_path / "metrics.prom"
        metrics.unlink()
        before = state_dump(location)

        done, _ = lean_call(tmp_path, "--config", str(config_file), "run")

        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        assert state_dump(location) == before
        assert "choreo_ingest_state" in metrics.read_text()


def clock_at_now() -> FakeClock:
    """The wall clock's now, held still: a cycle run with it rests until half an hour from now,
    as the processes under test see it."""
    return FakeClock(SystemClock().now())
