"""The example CSV provider (examples/custom_provider), loaded the way an installed plugin is.

It is not pip-installed here: its folder goes on sys.path and `entry_points` is faked to list it
in the `choreo_ingest.providers` group next to the real entries.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from choreo_ingest.cli.app import app
from choreo_ingest.config import Config, load_config
from choreo_ingest.errors import ConfigError, PermanentError
from choreo_ingest.invocation import run_once
from choreo_ingest.models import EntityIteratorResult, ProviderState
from choreo_ingest.providers import registry
from choreo_ingest.providers.base import (
    BurstContext,
    IncrementalEntityProvider,
    SourceNamingProvider,
)
from choreo_ingest.providers.registry import ProviderLoadError, load_provider
from choreo_ingest.reporting import iter_export, status_report
from choreo_ingest.store import Store

from fakes import FakeClock, FakeProvider, make_config, make_entity
from sim_support import run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_provider"
BACKSTAGE = Path(__file__).resolve().parent / "backstage"
GROUP = registry.ENTRY_POINT_GROUP
CSV_ENTRY_POINT = EntryPoint(
    name="csv", value="choreo_ingest_csv_provider:create_provider", group=GROUP
)
HEADER = "kind,namespace,name,owner,type,lifecycle,system,domain,description\n"


@dataclass(frozen=True)
class LoadedEntryPoint:
    """An entry point whose target is already in hand (registry uses name, value and load())."""

    name: str
    target: Callable[[Config], Any]
    group: str = GROUP

    @property
    def value(self) -> str:
        return f"tests:{self.name}"

    def load(self) -> Callable[[Config], Any]:
        return self.target


FAKE_ENTITIES = [make_entity("fake-a"), make_entity("fake-b"), make_entity("fake-c")]
FAKE_ENTRY_POINT = LoadedEntryPoint("fake", lambda config: FakeProvider(FAKE_ENTITIES))


class NoNext:
    name = "nonext"

    def around(self, burst: BurstContext) -> Any:
        return burst


BROKEN_ENTRY_POINTS = {
    "import": EntryPoint(name="broken", value="choreo_ingest_no_such_module:create", group=GROUP),
    "protocol": LoadedEntryPoint("broken", lambda config: NoNext()),
}
BROKEN_MESSAGES = {
    "import": "failed to load: ModuleNotFoundError",
    "protocol": "does not implement IncrementalEntityProvider (missing next)",
}


class Buggy(FakeProvider):
    """Fails on its second page with a bug of its own, not a ProviderError."""

    def next(self, context: BurstContext, cursor: Any) -> EntityIteratorResult:
        if cursor is not None:
            raise KeyError("spec")
        return super().next(context, cursor)


BUGGY_ENTRY_POINT = LoadedEntryPoint(
    "buggy", lambda config: Buggy(FAKE_ENTITIES, name="buggy", page_size=1)
)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """The CLI binds logging to the stderr CliRunner closes afterwards; undo that."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def csv_package(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example package importable from its folder, as if installed."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return importlib.import_module("choreo_ingest_csv_provider")


def install_entry_points(monkeypatch: pytest.MonkeyPatch, *extra: Any) -> None:
    real = registry.entry_points

    def entry_points(**selection: str) -> list[Any]:
        faked = [ep for ep in extra if all(getattr(ep, k) == v for k, v in selection.items())]
        return [*real(**selection), *faked]

    monkeypatch.setattr(registry, "entry_points", entry_points)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch, csv_package: ModuleType) -> None:
    install_entry_points(monkeypatch, CSV_ENTRY_POINT, FAKE_ENTRY_POINT)


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    return path


def csv_config(tmp_path: Path, csv_file: str = "services.csv", **options: Any) -> Config:
    return replace(
        make_config(tmp_path),
        providers=("csv",),
        provider_options={"csv": {"path": csv_file, **options}},
        source=tmp_path / "choreo-ingest.yaml",
    )


def context(config: Config, clock: FakeClock) -> BurstContext:
    class NoQueues:
        def read(self, queue: str, after: int, limit: int) -> list[Any]:
            return []

    return BurstContext(config, clock, clock.monotonic() + 10, NoQueues(), lambda: False)


def walk(provider: IncrementalEntityProvider, config: Config, clock: FakeClock) -> list[Any]:
    """Every page of one cycle, as the engine would ask for them."""
    pages, cursor = [], None
    while True:
        page = provider.next(context(config, clock), cursor)
        pages.append(page)
        if page.done:
            return pages
        cursor = page.cursor


ROWS = [
    "Domain,,payments,group:default/pay,,,,,Money",
    "System,,checkout,,,,,payments,",
    'Component,,checkout-web,,website,,checkout,,"Pages, for browsers"',
    "API,,checkout-api,,,,checkout,,",
    "Resource,acme,orders-db,,database,,,,",
    "Component,,ledger.worker_v2,,,experimental,checkout,,",
]


class TestCsvProvider:
    def test_reads_the_file_page_by_page_with_a_byte_cursor(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        write_csv(tmp_path / "services.csv", ROWS)
        config = csv_config(tmp_path, pageSize=4)
        pages = walk(load_provider("csv", config), config, clock)
        assert [len(page.entities) for page in pages] == [4, 2]
        assert [page.done for page in pages] == [False, True]
        first_cursor = pages[0].cursor
        assert first_cursor["row"] == 4
        assert first_cursor["byte"] == len((HEADER + "".join(f"{r}\n" for r in ROWS[:4])).encode())
        assert [e.ref for page in pages for e in page.entities] == [
            "domain:default/payments",
            "system:default/checkout",
            "component:default/checkout-web",
            "api:default/checkout-api",
            "resource:acme/orders-db",
            "component:default/ledger.worker_v2",
        ]

    def test_resumes_at_the_byte_offset_without_reading_earlier_rows(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        path = write_csv(tmp_path / "services.csv", ROWS)
        config = csv_config(tmp_path, pageSize=2)
        provider = load_provider("csv", config)
        first = provider.next(context(config, clock), None)
        # Overwrite the rows already read with bytes that are neither UTF-8 nor CSV, keeping the
        # file's inode, size and mtime: resuming must not even look at them.
        before = path.stat()
        header_end = len(HEADER.encode())
        with path.open("r+b") as file:
            file.seek(header_end)
            file.write(b"\xff" * (first.cursor["byte"] - header_end))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

        second = provider.next(context(config, clock), first.cursor)

        assert [e.name for e in second.entities] == ["checkout-web", "checkout-api"]
        assert second.cursor["row"] == 4
        assert "cursor_resets" not in second.counters

    def test_changed_file_restarts_the_listing_from_the_first_row(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        path = write_csv(tmp_path / "services.csv", ROWS)
        config = csv_config(tmp_path, pageSize=2)
        provider = load_provider("csv", config)
        first = provider.next(context(config, clock), None)
        write_csv(path, ["Component,,replaced,,,,,,", *ROWS])

        again = provider.next(context(config, clock), first.cursor)

        assert [e.name for e in again.entities] == ["replaced", "payments"]
        assert again.counters == {"cursor_resets": 1}

    def test_names_its_file_as_its_source(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        """Another file named mid-cycle begins the cycle again (`SourceNamingProvider`)."""
        path = write_csv(tmp_path / "services.csv", ROWS)
        provider = load_provider("csv", csv_config(tmp_path))

        assert isinstance(provider, SourceNamingProvider)
        assert (provider.source, provider.source_key) == (str(path), "providers: csv: path")

    def test_builds_backstage_entities_per_kind(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        write_csv(tmp_path / "services.csv", ROWS)
        config = csv_config(tmp_path, pageSize=100)
        (page,) = walk(load_provider("csv", config), config, clock)
        bodies = {entity.ref: dict(entity.body) for entity in page.entities}

        web = bodies["component:default/checkout-web"]
        assert web["apiVersion"] == "backstage.io/v1alpha1"
        assert web["metadata"]["description"] == "Pages, for browsers"
        assert web["metadata"]["annotations"]["backstage.io/managed-by-location"] == "provider:csv"
        assert web["metadata"]["annotations"]["backstage.io/managed-by-origin-location"] == (
            "provider:csv"
        )
        assert web["spec"] == {
            "type": "website",
            "lifecycle": "production",
            "owner": "group:default/guests",
            "system": "checkout",
        }
        assert bodies["domain:default/payments"]["spec"] == {"owner": "group:default/pay"}
        assert bodies["system:default/checkout"]["spec"] == {
            "owner": "group:default/guests",
            "domain": "payments",
        }
        assert bodies["api:default/checkout-api"]["spec"]["definition"].strip()
        assert bodies["api:default/checkout-api"]["spec"]["type"] == "openapi"
        assert "description" not in bodies["api:default/checkout-api"]["metadata"]

    @pytest.mark.slow
    def test_entities_pass_backstages_validators(
        self, tmp_path: Path, clock: FakeClock, plugins: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.syspath_prepend(str(BACKSTAGE))
        validator = importlib.import_module("backstage_validator")
        validator.skip_unless_backstage_validator()
        rows = [row.replace("Resource,acme,", "Resource,,") for row in ROWS]
        write_csv(tmp_path / "services.csv", rows)
        config = csv_config(tmp_path, pageSize=100)
        (page,) = walk(load_provider("csv", config), config, clock)

        lines = validator.entity_lines(entity.body for entity in page.entities)

        assert validator.run_backstage_validator(lines) == []

    @pytest.mark.parametrize(
        ("row", "reason"),
        [
            ("Group,,team-a,,,,,,", "kind 'Group'"),
            ("Component,,-bad-,,,,,,", "name '-bad-'"),
            ("Component,Not_A_Label,x,,,,,,", "namespace 'Not_A_Label'"),
            ("Component,,,,,,,,", "name ''"),
        ],
        ids=["unsupported-kind", "bad-name", "bad-namespace", "no-name"],
    )
    def test_bad_rows_are_skipped_and_counted(
        self,
        tmp_path: Path,
        clock: FakeClock,
        plugins: None,
        csv_package: ModuleType,
        row: str,
        reason: str,
    ) -> None:
        write_csv(tmp_path / "services.csv", [row, "Component,,good,,,,,,"])
        config = csv_config(tmp_path)
        (page,) = walk(load_provider("csv", config), config, clock)
        assert [e.name for e in page.entities] == ["good"]
        assert page.counters == {"rows_rejected": 1}
        entities = importlib.import_module("choreo_ingest_csv_provider.entities")
        with pytest.raises(entities.RowRejected, match=reason):
            csv_package.row_entity(
                dict(zip(HEADER.strip().split(","), row.split(","), strict=True)),
                csv_package.Defaults("group:default/guests", "production"),
                "csv",
                1,
            )

    def test_blank_lines_and_a_byte_order_mark_are_ignored(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        text = "\ufeff" + HEADER + "\nComponent,,a,,,,,,\n\n\nComponent,,b,,,,,,\n\n"
        (tmp_path / "services.csv").write_text(text, encoding="utf-8")
        config = csv_config(tmp_path, pageSize=1)
        pages = walk(load_provider("csv", config), config, clock)
        assert [e.name for page in pages for e in page.entities] == ["a", "b"]

    def test_missing_file_is_a_permanent_error_naming_it(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        config = csv_config(tmp_path, csv_file="nowhere.csv")
        with pytest.raises(PermanentError, match=r"nowhere\.csv: no such CSV file"):
            load_provider("csv", config).next(context(config, clock), None)


class TestCsvOptions:
    def test_relative_path_is_relative_to_the_config_file(
        self, tmp_path: Path, plugins: None, csv_package: ModuleType
    ) -> None:
        (tmp_path / "conf").mkdir()
        config_file = tmp_path / "conf" / "choreo-ingest.yaml"
        config_file.write_text("providers:\n  - name: csv\n    path: data/services.csv\n")
        provider = load_provider("csv", load_config(config_file))
        assert isinstance(provider, csv_package.CsvProvider)
        assert provider.path == tmp_path / "conf" / "data" / "services.csv"

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({}, "providers.csv.path: expected a non-empty string"),
            ({"path": "a.csv", "pagesize": 5}, "unknown option(s) pagesize"),
            ({"path": "a.csv", "pageSize": 0}, "providers.csv.pageSize: expected a whole number"),
        ],
        ids=["no-path", "typo", "zero-page-size"],
    )
    def test_bad_options_fail_loading_by_name(
        self, tmp_path: Path, plugins: None, options: dict[str, Any], message: str
    ) -> None:
        config = replace(
            make_config(tmp_path), providers=("csv",), provider_options={"csv": options}
        )
        with pytest.raises(ProviderLoadError) as failure:
            load_provider("csv", config)
        assert failure.value.name == "csv"
        assert message in str(failure.value)
        assert isinstance(failure.value.__cause__, ConfigError)

    def test_an_interrupt_as_the_provider_loads_is_an_interrupt(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A SIGTERM that lands in a dataclass field's `__set_name__` as the provider's module
        loads: Python 3.11 wraps it in a RuntimeError, which `check` and `event` reported as a
        provider that failed to load (exit 2), not as the interrupt it is (130)."""

        class Landing:
            def __set_name__(self, owner: type, name: str) -> None:
                raise KeyboardInterrupt

        def loading(name: str) -> Any:
            type("Loading", (), {"field": Landing()})

        monkeypatch.setattr(registry, "_factory", loading)

        with pytest.raises(KeyboardInterrupt):
            load_provider("openchoreo", make_config(tmp_path))


class TestNextToAnotherProvider:
    def test_full_cycle_runs_both_providers_each_with_its_own_state(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        write_csv(tmp_path / "services.csv", ROWS)
        config = replace(csv_config(tmp_path, pageSize=4), providers=("fake", "csv"))
        assert config.state_path is not None

        first = run_once(config, config.state_path, clock)
        second = run_once(config, config.state_path, clock, force=True)

        assert [(o.name, o.action, o.pages) for o in first.providers] == [
            ("fake", "burst", 2),
            ("csv", "burst", 2),
        ]
        assert all(o.cycle_completed for o in first.providers)
        report = status_report(config.state_path, config, clock.now())
        assert {s.record.name: s.active_entities for s in report.providers} == {"fake": 3, "csv": 6}
        assert {s.record.name: s.record.cycle_id for s in report.providers} == {"fake": 2, "csv": 2}
        assert all(o.entities_upserted == 0 for o in second.providers)  # nothing changed
        with Store.open(config.state_path, readonly=True) as store:
            assert store.counters("csv")["pages"] == 4
            assert store.counters("fake")["pages"] == 4
        refs = {
            f"{body['kind'].lower()}:{body['metadata']['namespace']}/{body['metadata']['name']}"
            for body in iter_export(config.state_path)
        }
        assert {"component:default/fake-a", "domain:default/payments"} <= refs

    def test_removing_a_row_removes_only_that_providers_entity(
        self, tmp_path: Path, clock: FakeClock, plugins: None
    ) -> None:
        path = write_csv(tmp_path / "services.csv", ROWS)
        config = replace(csv_config(tmp_path), providers=("fake", "csv"))
        assert config.state_path is not None
        run_once(config, config.state_path, clock)
        write_csv(path, ROWS[:-1])

        result = run_once(config, config.state_path, clock, force=True)

        assert {o.name: o.entities_removed for o in result.providers} == {"fake": 0, "csv": 1}
        report = status_report(config.state_path, config, clock.now())
        assert {s.record.name: s.active_entities for s in report.providers} == {"fake": 3, "csv": 5}


class TestCli:
    def write_config(self, tmp_path: Path, providers: str) -> Path:
        write_csv(tmp_path / "services.csv", ROWS)
        path = tmp_path / "choreo-ingest.yaml"
        path.write_text(f"state:\n  path: state.db\nproviders:\n{providers}", encoding="utf-8")
        return path

    def invoke(self, *args: str) -> Any:
        return CliRunner().invoke(app, list(args))

    def test_providers_json_lists_both_plugins_as_configured(
        self, tmp_path: Path, plugins: None
    ) -> None:
        config = self.write_config(tmp_path, "  - fake\n  - name: csv\n    path: services.csv\n")
        result = self.invoke("providers", "--json", "--config", str(config))
        assert result.exit_code == 0, result.output
        rows = {row["name"]: row for row in json.loads(result.stdout)["providers"]}
        assert rows["csv"] == {
            "name": "csv",
            "source": "choreo_ingest_csv_provider:create_provider",
            "configured": True,
        }
        assert rows["fake"]["configured"] is True
        assert rows["openchoreo"] == {
            "name": "openchoreo",
            "source": "built-in",
            "configured": False,
        }

    def test_run_then_status_json_show_both_providers(self, tmp_path: Path, plugins: None) -> None:
        config = self.write_config(tmp_path, "  - fake\n  - name: csv\n    path: services.csv\n")

        run = self.invoke("run", "--json", "--config", str(config))
        status = self.invoke("status", "--json", "--config", str(config))

        assert run.exit_code == 0, run.output
        assert [(p["name"], p["action"]) for p in json.loads(run.stdout)["providers"]] == [
            ("fake", "burst"),
            ("csv", "burst"),
        ]
        assert status.exit_code == 0, status.output
        providers = {p["name"]: p for p in json.loads(status.stdout)["providers"]}
        assert providers["fake"]["state"] == ProviderState.RESTING.value
        assert providers["csv"]["state"] == ProviderState.RESTING.value
        assert (providers["fake"]["activeEntities"], providers["csv"]["activeEntities"]) == (3, 6)

    @pytest.mark.parametrize("breakage", list(BROKEN_ENTRY_POINTS), ids=list(BROKEN_ENTRY_POINTS))
    def test_broken_provider_is_named_while_the_other_still_runs(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        csv_package: ModuleType,
        breakage: str,
    ) -> None:
        install_entry_points(monkeypatch, CSV_ENTRY_POINT, BROKEN_ENTRY_POINTS[breakage])
        config = self.write_config(tmp_path, "  - broken\n  - name: csv\n    path: services.csv\n")

        result = self.invoke("run", "--json", "--config", str(config))

        assert result.exit_code == 2, result.output  # a configuration to fix
        document = json.loads(result.stdout)
        assert (document["outcome"], document["exitCode"]) == ("failed", 2)
        outcomes = {p["name"]: p for p in document["providers"]}
        assert outcomes["broken"]["action"] == "failed"
        assert outcomes["broken"]["error"].startswith("provider 'broken': ")
        assert BROKEN_MESSAGES[breakage] in outcomes["broken"]["error"]
        assert (outcomes["csv"]["action"], outcomes["csv"]["cycleCompleted"]) == ("burst", True)
        assert outcomes["csv"]["entitiesUpserted"] == len(ROWS)

    def test_a_provider_that_fails_on_a_bug_makes_the_run_exit_1_while_the_other_still_runs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, csv_package: ModuleType
    ) -> None:
        """A bug is not upstream trouble (exit 3): its burst is recorded as failed and backs off
        like one, and the run says it with exit 1."""
        install_entry_points(monkeypatch, CSV_ENTRY_POINT, BUGGY_ENTRY_POINT)
        config = self.write_config(tmp_path, "  - buggy\n  - name: csv\n    path: services.csv\n")

        result = self.invoke("run", "--json", "--config", str(config))

        assert result.exit_code == 1, result.output
        document = json.loads(result.stdout)
        assert (document["outcome"], document["exitCode"]) == ("failed", 1)
        outcomes = {p["name"]: p for p in document["providers"]}
        assert (outcomes["buggy"]["action"], outcomes["buggy"]["state"]) == (
            "failed",
            "backing_off",
        )
        assert outcomes["buggy"]["error"] == (
            "internal error in provider 'buggy': KeyError: 'spec'"
        )
        assert (outcomes["csv"]["action"], outcomes["csv"]["cycleCompleted"]) == ("burst", True)


class TestInstalledPluginLogging:
    """A plugin that logs through structlog itself, in a `choreo-ingest` process of its own
    (in this test process structlog is loaded and configured already, which hides the case)."""

    def installed(self, tmp_path: Path) -> dict[str, str]:
        """The example on PYTHONPATH with an entry point listing it, as `pip install` leaves it."""
        dist_info = tmp_path / "site" / "choreo_ingest_csv_provider-0.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: choreo-ingest-csv-provider\nVersion: 0\n",
            encoding="utf-8",
        )
        (dist_info / "entry_points.txt").write_text(
            f"[{GROUP}]\ncsv = {CSV_ENTRY_POINT.value}\n", encoding="utf-8"
        )
        return {"PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(tmp_path / "site")])}

    def test_its_warning_is_a_json_line_on_stderr_and_stdout_stays_data_only(
        self, tmp_path: Path
    ) -> None:
        write_csv(tmp_path / "services.csv", [ROWS[2], "Gadget,,odd,,,,,,"])
        config = tmp_path / "choreo-ingest.yaml"
        config.write_text(
            "state:\n  path: state.db\nproviders:\n  - name: csv\n    path: services.csv\n",
            encoding="utf-8",
        )

        done = run_cli(
            "run", "--json", "--config", config, cwd=tmp_path, env=self.installed(tmp_path)
        )

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["providers"][0]["entitiesUpserted"] == 1
        lines = [json.loads(line) for line in done.stderr.splitlines()]
        assert [(line["event"], line["level"], line["row"]) for line in lines] == [
            ("csv_row_rejected", "warning", 2)
        ]

    def test_its_info_line_is_dropped_off_a_terminal(self, tmp_path: Path) -> None:
        csv_file = write_csv(tmp_path / "services.csv", ROWS[:4])
        config = tmp_path / "choreo-ingest.yaml"
        config.write_text(
            "state:\n  path: state.db\nproviders:\n  - name: csv\n    path: services.csv\n"
            "    pageSize: 1\nopenchoreo:\n  incremental:\n    burstLength: 0.001\n",
            encoding="utf-8",
        )
        env = self.installed(tmp_path)
        first = run_cli("run", "--json", "--config", config, cwd=tmp_path, env=env)
        write_csv(csv_file, ROWS[:5])  # the stored cursor's file version no longer matches

        second = run_cli("run", "--force", "--config", config, cwd=tmp_path, env=env)

        assert (first.returncode, first.stderr) == (0, "")
        assert json.loads(first.stdout)["providers"][0]["cycleCompleted"] is False
        assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
        status = run_cli("status", "--json", "--config", config, cwd=tmp_path, env=env)
        assert json.loads(status.stdout)["providers"][0]["cursorResets"] == 1
