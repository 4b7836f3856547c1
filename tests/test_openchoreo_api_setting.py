"""`openchoreo.api` naming a generation the server does not serve: a setting to mend (exit 2,
one line naming the key and the generation the server speaks), not upstream trouble (exit 3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from choreo_ingest.simulator import SimulatorApi, World

from sim_support import one_error_line, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def url_of(serve: Callable[..., SimulatorApi]) -> Callable[[str], str]:
    """`url_of(api) -> base URL` of a simulator of that generation on a loopback port."""

    def start(api: str) -> str:
        url: str = serve(World.generate(2, 2, 3, seed=5), api=api).url  # type: ignore[attr-defined]
        return url

    return start


def configure(tmp_path: Path, base_url: str, api: str) -> Path:
    document = {
        "openchoreo": {"baseUrl": base_url, "api": api},
        "state": {"path": str(tmp_path / "state.db")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(("served", "configured"), [("v1", "orgs"), ("orgs", "v1")])
def test_a_generation_the_server_does_not_serve_is_a_setting_to_mend(
    tmp_path: Path, url_of: Callable[[str], str], served: str, configured: str
) -> None:
    config = configure(tmp_path, url_of(served), configured)

    done = run_cli("run", "--config", config, cwd=tmp_path)
    status = run_cli("status", "--json", "--config", config, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    listing = "namespaces" if configured == "v1" else "orgs"
    said = f"openchoreo.api: GET /{listing}: HTTP 404"
    assert said in line
    assert line.endswith(f"the server speaks the {served} API: set it to {served} or auto")
    [provider] = json.loads(status.stdout)["providers"]
    assert provider["lastError"] == line.removeprefix("choreo-ingest: error: openchoreo: ")


@pytest.mark.parametrize(("served", "configured"), [("v1", "orgs"), ("orgs", "v1")])
def test_check_gives_the_same_advice_as_run(
    tmp_path: Path, url_of: Callable[[str], str], served: str, configured: str
) -> None:
    config = configure(tmp_path, url_of(served), configured)

    checked = run_cli("check", "--json", "--config", config, cwd=tmp_path)

    assert checked.returncode == 2, checked.stderr
    failed = {row["name"]: row["detail"] for row in json.loads(checked.stdout)["checks"]}
    listing = "namespaces" if configured == "v1" else "orgs"
    assert failed["openchoreo.api"].startswith(f"GET /{listing}: HTTP 404")
    assert failed["openchoreo.api"].endswith(
        f"; the server speaks the {served} API: set it to {served} or auto"
    )


def test_a_server_that_speaks_neither_names_the_base_url_to_mend(
    tmp_path: Path, url_of: Callable[[str], str]
) -> None:
    """A 404 for both generations says nothing of which to set, but that no cycle found the API
    at that address (a wrong path in baseUrl): exit 2, as under `auto`."""
    base_url = url_of("v1") + "/not-the-api"
    config = configure(tmp_path, base_url, "v1")

    done = run_cli("run", "--config", config, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "openchoreo.api:" not in done.stderr
    assert f"no OpenChoreo API at openchoreo.baseUrl {base_url} (GET " in done.stderr
    assert "/not-the-api/api/v1/namespaces found nothing): set it to" in done.stderr
