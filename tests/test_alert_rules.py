"""The alerting rules shipped in examples/prometheus/: valid for Prometheus (`promtool check
rules`), firing on the series they are written for (`promtool test rules` on
tests/prometheus/alerts_test.yml), and naming only series choreo-ingest writes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from choreo_ingest.invocation import run_once
from choreo_ingest.metrics import render_state_readable
from choreo_ingest.store import state_location

from fakes import FakeClock, FakeProvider, make_config, make_entity
from os_tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "examples" / "prometheus" / "choreo-ingest-alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "prometheus")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def test_the_rules_are_valid_prometheus_rules() -> None:
    checked = promtool("check", "rules", str(RULES))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_each_alert_fires_on_its_series_and_not_before_its_time() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))

    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in rules}


def test_the_rules_name_only_series_choreo_ingest_writes(tmp_path: Path) -> None:
    clock = FakeClock()
    config = make_config(tmp_path)
    assert config.state_path is not None
    assert config.metrics_textfile is not None
    providers = {"fake": FakeProvider([make_entity("a")])}
    run_once(config, config.state_path, clock, providers=providers)
    with state_location(config.state_path).open() as store:  # one event waiting: its series
        store.add_events("fake", [{"kind": "Component", "namespace": "a", "name": "b"}], 1.0)
    run_once(config, config.state_path, clock, providers=providers)  # FakeProvider takes none
    written = config.metrics_textfile.read_text() + render_state_readable(True).decode()
    samples = {
        sample.name
        for family in text_string_to_metric_families(written)
        for sample in family.samples
    }

    used = set(re.findall(r"\bchoreo_ingest_[a-z_]+", RULES.read_text()))

    assert used
    assert used <= samples, f"not written: {sorted(used - samples)}"
