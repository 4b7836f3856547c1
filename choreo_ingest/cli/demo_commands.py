"""`demo`, `simulate serve` and `check`: the built-in simulator and the preflight check."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    del app
