"""`mirror`: bring the YAML mirror (`catalog.directory`) up to date, or rebuild it."""

from __future__ import annotations

from typing import Annotated

import typer

from choreo_ingest.cli import render
from choreo_ingest.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    open_session,
    reported_errors,
)
from choreo_ingest.errors import ConfigError
from choreo_ingest.invocation import locked_store
from choreo_ingest.mirror import rebuild_mirror, sync_mirror


def mirror(
    ctx: typer.Context,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild", help="Rewrite every file and delete files of entities no longer there."
        ),
    ] = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Write the catalog's changes to catalog.directory (one YAML file per entity).

    `run` does this after every burst; use this after `reset --purge` or `removals approve`,
    or with --rebuild when the directory was edited by hand. Takes the run lock.
    """
    with reported_errors(json_output):
        session = open_session(ctx, config, db)
        directory = session.config.catalog_directory
        if directory is None:
            raise ConfigError("not set; the mirror needs a directory", path="catalog.directory")
        with locked_store(session.state) as store:
            stats = rebuild_mirror(store, directory) if rebuild else sync_mirror(store, directory)
        if json_output:
            render.print_json(
                {
                    "directory": str(directory),
                    "rebuilt": stats.rebuilt,
                    "written": stats.written,
                    "unchanged": stats.unchanged,
                    "deleted": stats.deleted,
                    "skipped": stats.skipped,
                    "position": stats.position,
                }
            )
        elif render.stdout_is_tty():
            render.print_text(
                f"{directory}: {'rebuilt, ' if stats.rebuilt else ''}{stats.written} written, "
                f"{stats.deleted} deleted, {stats.skipped} skipped; at change {stats.position}"
            )


def register(app: typer.Typer) -> None:
    app.command()(mirror)
