"""The CLI in process for tests: each test in its own directory, without the caller's config or
state file from the environment, and `invoke(...)` running the typer app there."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from choreo_ingest.cli.app import app

ENVIRONMENT = ("CHOREO_INGEST_CONFIG", "CHOREO_INGEST_DB", "OPENCHOREO_TOKEN")


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config or state file from the caller's environment or working directory."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])
