"""Provider registry: built-ins plus the `choreo_ingest.providers` entry point group.

The plugins are real: a module and a `.dist-info` with entry_points.txt on sys.path, found by
importlib.metadata exactly as an installed package would be.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from choreo_ingest.config import Config
from choreo_ingest.invocation import run_once
from choreo_ingest.providers.registry import (
    ENTRY_POINT_GROUP,
    ProviderInfo,
    ProviderLoadError,
    available_providers,
    load_provider,
)

from fakes import FakeClock, FakeProvider, make_config, make_entity

PLUGIN_MODULE = "choreo_test_plugins"
PLUGIN_SOURCE = """
from contextlib import nullcontext

from choreo_ingest.models import EntityIteratorResult


class Provider:
    def __init__(self, name):
        self.name = name

    def around(self, burst):
        return nullcontext(burst)

    def next(self, context, cursor):
        return EntityIteratorResult(done=True)


class WithoutNext:
    name = "lacks-next"

    def around(self, burst):
        return nullcontext(burst)


def good(config):
    return Provider("good")


def exploding(config):
    raise RuntimeError("factory exploded")


def lacks_next(config):
    return WithoutNext()


def misnamed(config):
    return Provider("someone-else")
"""
ENTRY_POINTS = {
    "good": f"{PLUGIN_MODULE}:good",
    "exploding": f"{PLUGIN_MODULE}:exploding",
    "lacks-next": f"{PLUGIN_MODULE}:lacks_next",
    "misnamed": f"{PLUGIN_MODULE}:misnamed",
    "not-importable": "choreo_no_such_module:factory",
}


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install the plugin package on sys.path for this test only."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    dist_info = site / "choreo_test_plugins-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: choreo-test-plugins\nVersion: 0.1\n"
    )
    lines = [
        f"[{ENTRY_POINT_GROUP}]",
        *(f"{name} = {value}" for name, value in ENTRY_POINTS.items()),
    ]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop(PLUGIN_MODULE, None)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def test_unknown_provider_error_names_it_and_lists_the_known(config: Config) -> None:
    with pytest.raises(ProviderLoadError, match="'nope': not installed") as caught:
        load_provider("nope", config)
    assert caught.value.name == "nope"
    assert "openchoreo" in str(caught.value)


def test_a_misspelt_provider_gets_the_name_it_is_near(config: Config) -> None:
    with pytest.raises(ProviderLoadError) as caught:
        load_provider("openchoero", config)

    assert str(caught.value).startswith(
        "provider 'openchoero': not installed: did you mean openchoreo? (known providers: "
    )


@pytest.mark.usefixtures("plugins")
class TestEntryPoints:
    def test_plugin_is_listed_with_its_source(self) -> None:
        found = {info.name: info for info in available_providers()}
        assert found["good"] == ProviderInfo("good", f"{PLUGIN_MODULE}:good")
        assert found["openchoreo"].source == "built-in"
        names = [info.name for info in available_providers()]
        assert names == sorted(names)

    def test_plugin_loads(self, config: Config) -> None:
        provider = load_provider("good", config)
        assert provider.name == "good"

    def test_factory_that_raises_names_the_provider_and_the_error(self, config: Config) -> None:
        with pytest.raises(ProviderLoadError, match=r"'exploding'.*factory exploded") as caught:
            load_provider("exploding", config)
        assert caught.value.name == "exploding"
        assert isinstance(caught.value.__cause__, RuntimeError)

    def test_object_lacking_next_is_a_protocol_error(self, config: Config) -> None:
        with pytest.raises(
            ProviderLoadError, match=r"'lacks-next'.*IncrementalEntityProvider.*missing next"
        ):
            load_provider("lacks-next", config)

    def test_provider_calling_itself_another_name_is_refused(self, config: Config) -> None:
        with pytest.raises(ProviderLoadError, match=r"'misnamed'.*'someone-else'"):
            load_provider("misnamed", config)

    def test_entry_point_that_cannot_be_imported_names_the_provider(self, config: Config) -> None:
        with pytest.raises(ProviderLoadError, match=r"'not-importable'.*ModuleNotFoundError"):
            load_provider("not-importable", config)

    def test_run_once_with_broken_providers_still_runs_the_others(
        self, tmp_path: Path, config: Config, clock: FakeClock
    ) -> None:
        configured = replace(config, providers=("missing", "exploding", "fake", "good"))
        fake = FakeProvider([make_entity(f"e{i}") for i in range(4)])

        result = run_once(
            configured,
            tmp_path / "state.db",
            clock,
            providers={"fake": fake},
            rng=random.Random(0),
        )

        outcomes = {outcome.name: outcome for outcome in result.providers}
        assert list(outcomes) == ["missing", "exploding", "fake", "good"]
        assert outcomes["missing"].action == "failed"
        assert outcomes["missing"].error is not None
        assert "'missing'" in outcomes["missing"].error
        assert outcomes["exploding"].action == "failed"
        assert outcomes["exploding"].error is not None
        assert "factory exploded" in outcomes["exploding"].error
        assert outcomes["fake"].cycle_completed
        assert outcomes["good"].cycle_completed  # loaded from its entry point
        assert result.outcome == "failed"
