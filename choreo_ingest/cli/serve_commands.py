"""`serve`: the long-running service (cycles, the event webhook, the management and feed API)."""

from __future__ import annotations

from typing import Annotated

import typer

from choreo_ingest.cli.common import ConfigOption, DbOption, open_session, reported_errors
from choreo_ingest.cli.run_flow import require_api_for
from choreo_ingest.config import parse_listen
from choreo_ingest.errors import ConfigError

SERVE_EXTRA = "pip install '.[serve]' in choreo-ingest's source tree"


def serve(
    ctx: typer.Context,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Address to listen on (default: serve.listen, else 127.0.0.1:8080).",
            show_default=False,
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Allow a non-loopback address without an API token (warned on every start).",
        ),
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Run cycles, take OpenChoreo's event webhooks and answer the HTTP API until SIGTERM.

    Exit codes:
    - 0 stopped by SIGTERM/SIGINT (after the page in flight)
    - 2 config error (a bad --listen, no token on a non-loopback address, the serve extra
      missing)
    - 4 the state store holds no state of ours (another program's file, a newer release's
      state); one that fails later, or cannot be reached yet, is tried again every tick
    - 75 the port is in use (another process holds it; worth trying again)
    """
    with reported_errors(False):
        address = None if listen is None else parse_listen(listen, option="--listen")
        session = open_session(ctx, config, db)
        require_api_for(session, None)
        try:
            from choreo_ingest.server.runner import serve as run_server
        except ImportError as error:
            raise ConfigError(
                f"serve needs its extra ({error.name} is missing): {SERVE_EXTRA}"
            ) from None
        run_server(
            session.config,
            session.state,
            session.clock,
            listen=address,
            insecure_no_auth=insecure_no_auth,
        )


def register(app: typer.Typer) -> None:
    app.command()(serve)
