"""Imports point down only: cli -> engine -> store / providers -> config, models, errors, clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "choreo_ingest"

# Higher number = higher layer; a module may import only from layers at or below its own.
APP, ENTRY = 5, 6
LAYERS = {
    # the front door, and what runs it
    "__main__": ENTRY,
    "cli": APP,
    "server": APP,
    # whole invocations and their front-door helpers
    "invocation": 4,
    "service": 4,
    "demo": 4,
    "preflight": 4,
    "testing": 4,
    "idle": 4,
    # the engine: one burst, the inbox, the mirror, and what they report
    "engine": 3,
    "cycle_source": 3,
    "page_writer": 3,
    "events": 3,
    "event_intake": 3,
    "event_backlog": 3,
    "event_retries": 3,
    "event_input": 3,
    "mirror": 3,
    "mirror_marker": 3,
    "reporting": 3,
    "change_listing": 3,
    "provider_scope": 3,
    "feed": 3,
    "retention": 3,
    "metrics": 3,
    "idle_answer": 3,  # the kept answer of an idle run: reads the state's write mark
    "withheld": 3,  # what reporting and serve withhold from a caller without the token
    # the store, the providers and the simulator (siblings), and pure scheduling
    "store": 2,
    "providers": 2,
    "simulator": 2,
    "schedule": 2,
    # leaves
    "config": 1,
    "config_model": 1,
    "config_values": 1,
    "config_database_url": 1,
    "config_document": 1,
    "config_hints": 1,
    "config_file": 1,
    "config_yaml": 1,
    "config_secrets": 1,
    "disk_space": 1,  # the room on a file system, as `check` and the store read it
    "models": 1,
    "errors": 1,
    "clock": 1,
    "version": 1,
    "files": 1,
    "atomic_file": 1,  # one file replaced, split off files (no pathlib: see idle_answer)
    "cache_files": 1,  # where the parsed config and the idle answer are kept
    "heap": 1,
    "logs": 1,  # every layer logs; structlog itself is loaded by log_setup, for a line to write
    "log_setup": 1,
    "light_imports": 1,
    "lazy_exports": 1,  # the package's and the store's names, loaded when asked for
    "api_address": 1,
    "__init__": 1,
}
SIBLINGS_THAT_MUST_NOT_MEET = {("store", "providers"), ("providers", "store")}
SIMULATOR_MAY_USE = {"clock"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[str]:
    """Every module of the package `path` imports; `from choreo_ingest import x` counts as the
    package root (`choreo_ingest`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name == "choreo_ingest" or name.startswith("choreo_ingest.")]


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_module_imports_point_down(path: Path) -> None:
    here = layer_of("choreo_ingest." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    for imported in imports_of(path):
        there = layer_of(imported)
        if there == here:
            continue
        if here == "simulator":
            assert there in SIMULATOR_MAY_USE, f"the simulator imports {imported}"
            continue
        if here == "__init__" and there in {"providers"}:
            continue  # the package root re-exports the provider protocol for provider authors
        assert (here, there) not in SIBLINGS_THAT_MUST_NOT_MEET, f"{here} imports {imported}"
        assert LAYERS[there] <= LAYERS[here], f"{path.name} ({here}) imports {imported} ({there})"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_no_module_imports_the_package_root(path: Path) -> None:
    """The root re-exports the provider protocol for provider authors; inside the package it
    would pull every layer it re-exports into whatever imports it."""
    assert "choreo_ingest" not in imports_of(path), f"{path.name} imports the package root"


def test_scheduling_is_pure() -> None:
    """`schedule` decides from state, settings and `now` alone: no store, no clock, no I/O."""
    allowed = {"choreo_ingest.config", "choreo_ingest.models", "choreo_ingest.errors"}
    assert set(imports_of(PACKAGE / "schedule.py")) <= allowed


def test_a_provider_package_is_reached_only_through_the_registry() -> None:
    """The engine, the CLI and the core know providers only by the protocol: a provider's own
    package is imported by itself alone (the registry names it by a string)."""
    for path in MODULES:
        relative = path.relative_to(PACKAGE).parts
        if relative[:2] == ("providers", "openchoreo"):
            continue
        for imported in imports_of(path):
            assert not imported.startswith("choreo_ingest.providers.openchoreo"), (
                f"{path.relative_to(PACKAGE)} imports {imported}"
            )


def test_only_the_store_opens_and_locks_the_state() -> None:
    """Opening and locking belong to the store's location (SQLite's file today, PostgreSQL
    next): nothing above it opens a Store by path or takes the run lock itself."""
    for path in MODULES:
        if path.relative_to(PACKAGE).parts[0] == "store":
            continue
        text = path.read_text(encoding="utf-8")
        assert "Store.open(" not in text, f"{path.relative_to(PACKAGE)} opens a Store by path"
        assert "RunLock" not in text, f"{path.relative_to(PACKAGE)} takes the run lock itself"
