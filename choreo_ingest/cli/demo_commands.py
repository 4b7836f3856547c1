"""`demo`, `simulate serve` and `check`: the built-in simulator and the preflight check.

The simulator, the demo driver and the checks are imported by their commands only, not when the
application is built: every `choreo-ingest run` from cron would pay for them otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import typer

from choreo_ingest.cli import render
from choreo_ingest.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    open_session,
    reported_errors,
)
from choreo_ingest.cli.exit_codes import ExitCode, check_exit_code
from choreo_ingest.cli.failures import ERROR_FIELDS
from choreo_ingest.cli.state_commands import show_status
from choreo_ingest.clock import SystemClock
from choreo_ingest.config import Address, Config
from choreo_ingest.errors import ConfigError
from choreo_ingest.reporting import status_report

simulate_app = typer.Typer(help="The built-in OpenChoreo simulator.", no_args_is_help=True)


def demo(
    orgs: Annotated[
        int, typer.Option("--orgs", min=1, help="Namespaces (v1) or organizations (orgs).")
    ] = 3,
    projects: Annotated[
        int, typer.Option("--projects", min=0, help="Projects in each of them.")
    ] = 4,
    components: Annotated[
        int, typer.Option("--components", min=0, help="Components per project.")
    ] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated world.")] = 0,
    api: Annotated[
        str,
        typer.Option(
            "--api",
            help="The API the simulator speaks: v1 (every OpenChoreo release) or orgs.",
        ),
    ] = "v1",
    burst_length: Annotated[
        float, typer.Option("--burst-length", min=0.1, help="Seconds per burst.")
    ] = 2.0,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Directory for the demo's state (made if missing; default: a new temporary one).",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="State file (instead of --dir).", show_default=False),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Mirror a simulated OpenChoreo platform: start the simulator, run until a cycle completes."""
    from choreo_ingest.demo import DemoProgress, WorldSize, demo_place, run_demo

    with reported_errors(json_output):
        if api not in ("v1", "orgs"):
            raise ConfigError(f"expected v1 or orgs, got {api!r}", path="--api")
        place = demo_place(directory, db)
        with render.live_status(render.stderr_is_tty() and not json_output) as line:

            def show(progress: DemoProgress) -> None:
                counts = ", ".join(f"{n} {kind}" for kind, n in sorted(progress.entities.items()))
                line.update(
                    f"run {progress.runs}: phase {progress.phase}, {counts or 'no entities yet'}, "
                    f"{progress.requests} requests"
                )

            try:
                result = run_demo(
                    WorldSize(orgs, projects, components, seed, api),
                    place,
                    SystemClock(),
                    burst_length=burst_length,
                    on_progress=show,
                )
            except BaseException:
                if place.temporary:
                    render.note_line(f"the demo's files stay in {place.directory}")
                raise
        if json_output:
            render.print_json(result.document())
        else:
            show_status(status_report(place.state_path, Config(), SystemClock().now()))
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(result.entities.items()))
            done = "completed" if result.cycle_completed else "NOT completed"
            stays = (
                f"the demo's files stay in {place.directory} (rm -r {place.directory} when done)\n"
                if place.temporary
                else ""
            )
            render.print_text(
                f"cycle {done} in {result.runs} run(s), {result.requests} requests: {counts}\n"
                f"state file: {place.state_path}\n"
                f"{stays}"
                f"try: choreo-ingest status --db {place.state_path}\n"
                f"     choreo-ingest export --db {place.state_path} --format yaml"
            )
    if not result.cycle_completed:
        raise typer.Exit(int(ExitCode.BURST_FAILED))


@simulate_app.command("serve")
def simulate_serve(
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, help="Port to listen on (0: a free one, printed)."
        ),
    ] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback).")] = "127.0.0.1",
    orgs: Annotated[
        int, typer.Option(min=0, help="Namespaces (v1) or organizations (orgs) in the world.")
    ] = 3,
    projects: Annotated[int, typer.Option(min=0, help="Projects in each of them.")] = 4,
    components: Annotated[int, typer.Option(min=0, help="Components in each project.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the world and of injected faults.")] = 0,
    endpoints_max: Annotated[
        int, typer.Option(min=0, help="Most endpoints of a component's workload.")
    ] = 3,
    hidden_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Items filtered out after paging.")
    ] = 0.05,
    error_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of 5xx.")] = 0.0,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests per second before 429s.")
    ] = None,
    cursor_ttl: Annotated[
        float,
        typer.Option(help="Seconds a cursor lives (then v1 answers 500, the org era 410)."),
    ] = 300.0,
    latency: Annotated[float, typer.Option(min=0.0, help="Seconds added per request.")] = 0.0,
    token: Annotated[
        str | None, typer.Option(envvar="SIMULATOR_TOKEN", help="Require this bearer token.")
    ] = None,
    no_cursor_support: Annotated[
        bool,
        typer.Option(
            "--no-cursor-support",
            help="Behave like an org-era server without cursor pagination.",
        ),
    ] = False,
    control: Annotated[
        bool,
        typer.Option(
            "--control", help="Serve the /_control/ debug routes (stats, world, mutations)."
        ),
    ] = False,
    api: Annotated[
        Literal["v1", "orgs"],
        typer.Option(help="API generation: v1 (every release) or orgs (organization era)."),
    ] = "v1",
    oauth_client_id: Annotated[
        str | None,
        typer.Option(help="Serve POST /oauth2/token for this client and require its tokens."),
    ] = None,
    oauth_client_secret: Annotated[
        str | None,
        typer.Option(envvar="SIMULATOR_OAUTH_CLIENT_SECRET", help="The OAuth client's secret."),
    ] = None,
    oauth_client_auth: Annotated[
        Literal["client_secret_post", "client_secret_basic"] | None,
        typer.Option(
            help="Take the client's secret only this way (an identity provider holds a client "
            "to the method it was registered with); by default either.",
            show_default=False,
        ),
    ] = None,
    token_lifetime: Annotated[
        int, typer.Option(min=1, help="Seconds an issued access token stays valid.")
    ] = 3600,
    webhook: Annotated[
        list[str] | None,
        typer.Option(
            "--webhook",
            metavar="URL",
            help="POST OpenChoreo's event-forwarder events ({kind, name, namespace, action}) "
            "to URL for every change made through the --control routes; repeatable.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a simulated OpenChoreo API until interrupted (prints its URL on stderr)."""
    from choreo_ingest.simulator import serve_forever

    webhooks = tuple(webhook or ())

    if not Address(host, port).is_loopback:
        secured = token is not None or oauth_client_id is not None
        render.warning_line(
            f"--host {host} serves the simulator beyond this machine"
            + ("" if secured else ", with no authentication (set --token or --oauth-client-id)")
            + (": its --control routes can change the simulated world" if control else "")
        )
    with reported_errors(False):
        if webhooks and not control:
            raise ConfigError(
                "the simulator posts events only for changes made through its control routes: "
                "add --control",
                path="--webhook",
            )
        try:
            serve_forever(
                host=host,
                port=port,
                orgs=orgs,
                projects=projects,
                components=components,
                seed=seed,
                endpoints_max=endpoints_max,
                hidden_fraction=hidden_fraction,
                error_rate=error_rate,
                rate_limit=rate_limit,
                cursor_ttl=cursor_ttl,
                latency=latency,
                token=token,
                no_cursor_support=no_cursor_support,
                control=control,
                api=api,
                oauth_client_id=oauth_client_id,
                oauth_client_secret=oauth_client_secret,
                oauth_client_auth=oauth_client_auth,
                token_lifetime=token_lifetime,
                webhooks=webhooks,
            )
        except ValueError as error:  # options that do not fit together (e.g. an id, no secret)
            raise ConfigError(_as_flags(str(error))) from error
        except OSError as error:  # binding the port: in use, or not ours to take
            raise ConfigError(
                f"cannot listen on {host}:{port}: {error.strerror or error}", path="--port"
            ) from error


def check(
    ctx: typer.Context,
    json_output: JsonOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Check the config, the API, auth, cursor support and output paths before the first run.

    Also that a page fits in a burst at the API's latency; ok lines only on a terminal.

    Exit codes:
    - 0 every check passed (warnings too)
    - 2 a check failed: the config, the API, an output path
    - 4 the state store's check failed (whatever else failed)
    """
    from choreo_ingest.preflight import run_checks

    with reported_errors(json_output, **ERROR_FIELDS["check"]):
        # Its warnings, and an unreadable state.passwordFile, are checks here.
        session = open_session(ctx, config, db, log_warnings=False, checking=True)
        checks = run_checks(
            session.config, session.state, session.clock, state_key=session.state_origin
        )
        code = check_exit_code(checks)
        if json_output:
            render.print_json(
                {
                    "ok": code == ExitCode.OK,
                    "exitCode": int(code),
                    "checks": [
                        {
                            "name": item.name,
                            "ok": item.ok,
                            "warning": item.warning,
                            "detail": item.detail,
                        }
                        for item in checks
                    ],
                }
            )
        else:
            for item in checks:
                if not item.ok:
                    render.error_line(f"{item.name}: {item.detail}")
                elif item.warning:
                    render.warning_line(f"{item.name}: {item.detail}")
                elif render.stdout_is_tty():
                    render.print_text(f"ok  {item.name}: {item.detail}")
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


def register(app: typer.Typer) -> None:
    app.command()(demo)
    app.command()(check)
    app.add_typer(simulate_app, name="simulate")


_FLAGS = {
    "api": "--api",
    "error_rate": "--error-rate",
    "latency": "--latency",
    "rate_limit_rps": "--rate-limit",
    "cursor_ttl": "--cursor-ttl",
    "oauth_client_id": "--oauth-client-id",
    "oauth_client_secret": "--oauth-client-secret",
    "oauth_client_auth": "--oauth-client-auth",
    "token_lifetime": "--token-lifetime",
}
"""`SimulatorOptions` fields and the `simulate serve` options that set them."""


def _as_flags(said: str) -> str:
    """A `SimulatorOptions` message (`<field> must ...`) with its fields as the options."""
    names = "|".join(sorted(_FLAGS, key=len, reverse=True))
    head, _, rest = said.partition(" must ")
    head = re.sub(rf"\b({names})\b", lambda name: _FLAGS[name[0]], head)
    return f"{head} must {rest}" if rest else said
