"""The typer application: global options, then one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from choreo_ingest import __version__
from choreo_ingest.cli import (
    demo_commands,
    event_commands,
    mirror_commands,
    run_commands,
    state_commands,
)
from choreo_ingest.cli.common import ConfigOption, DbOption, GlobalOptions
from choreo_ingest.logs import configure_logging

app = typer.Typer(
    name="choreo-ingest",
    help=(
        "Keep a Backstage catalog in step with OpenChoreo, one bounded burst per call.\n\n"
        "cron or a systemd timer calls `choreo-ingest run` every minute; all state lives in one "
        "SQLite file."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"choreo-ingest {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: ConfigOption = None,
    db: DbOption = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")
    ] = 0,
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-console", help="Log format (default: JSON off a TTY)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    configure_logging(verbosity=verbose, json=log_json)
    ctx.obj = GlobalOptions(config=config, db=db)


run_commands.register(app)
state_commands.register(app)
demo_commands.register(app)
event_commands.register(app)
mirror_commands.register(app)


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="choreo-ingest")
