"""The typer application: global options, then one module per command group."""

from __future__ import annotations

import inspect
import os
import re
import signal
import sys
from collections.abc import Sequence
from contextlib import nullcontext, redirect_stdout
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from choreo_ingest.cli import (
    demo_commands,
    event_commands,
    ignore_late_signals,
    mirror_commands,
    render,
    report_early_interrupt,
    run_commands,
    serve_commands,
    state_commands,
)
from choreo_ingest.cli.common import ConfigOption, DbOption, GlobalOptions
from choreo_ingest.cli.exit_codes import ExitCode
from choreo_ingest.cli.failures import (
    command_fields,
    error_fields,
    print_error_document,
    reported,
)
from choreo_ingest.errors import interrupted
from choreo_ingest.logs import configure_logging
from choreo_ingest.version import __version__

PROG_NAME = "choreo-ingest"
_COMPLETION_VARIABLE = f"_{PROG_NAME.replace('-', '_').upper()}_COMPLETE"
"""What the installed completion script sets (click's `_<PROG>_COMPLETE`)."""


def _flags_show_no_type() -> None:
    """typer 0.28+ prints a type beside every option in its rich help, flags and counts too
    (`--force <bool>`, `-v <int>`), as if they took a value; its plain help leaves them out, and
    so does the rich help here."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None:  # typer before 0.28, which shows no type beside a flag
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag or self.count else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()


class _Interrupted(BaseException):
    """A KeyboardInterrupt (SIGINT, SIGTERM) raised in typer's hands: as it reads the options,
    or outside a command's `reported_errors`. typer's `main` turns one into a silent exit 130
    (click's into its Abort); carried past it, it is reported as any interrupt is."""


class _Group(TyperGroup):
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as error:
            raise _Interrupted from error

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as error:
            raise _Interrupted from error


app = typer.Typer(
    name=PROG_NAME,
    help=(
        "Keep a Backstage catalog in step with OpenChoreo, one bounded burst per call.\n\n"
        "cron or a systemd timer calls `choreo-ingest run` every minute; all state lives in one "
        "state store: an SQLite file, or a PostgreSQL schema."
    ),
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        render.print_text(f"choreo-ingest {__version__}")
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
        bool, typer.Option("--log-json", help="Log JSON lines (the default off a TTY).")
    ] = False,
    log_console: Annotated[
        bool, typer.Option("--log-console", help="Log console lines (the default on a TTY).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    if log_json and log_console:  # the lean entry leaves such a line to this one
        raise _Conflict("--log-json and --log-console cannot be combined: give one")
    as_json = True if log_json else False if log_console else None
    render.stderr_lines_in_json(configure_logging(verbosity=verbose, json=as_json))
    ctx.obj = GlobalOptions(config=config, db=db)


class _Conflict(typer.BadParameter):
    """Options that do not go together: a usage error said as it is, without click's
    `Invalid value: ` before it."""

    def format_message(self) -> str:
        return self.message


run_commands.register(app)
state_commands.register(app)
demo_commands.register(app)
event_commands.register(app)
mirror_commands.register(app)
serve_commands.register(app)


_LIST_ITEM = re.compile(r"\s*[-*] ")


def flowed(text: str) -> str:
    """`text` (a docstring) with each paragraph on one line, for rich to wrap to the terminal;
    a line that starts a list item (`- `) stays a line of its own."""
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not _LIST_ITEM.match(line):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _flow_help(typer_app: typer.Typer) -> None:
    """typer joins the lines of a help's first paragraph only, and rich keeps every line break
    of the others: a paragraph wrapped at 100 columns in the source would break mid-sentence
    at 80 and stop short at 200. Every command's help is given flowed instead."""
    for command in typer_app.registered_commands:
        command.help = flowed(command.help or inspect.getdoc(command.callback) or "")
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _flow_help(group.typer_instance)


_flow_help(app)


def main(argv: list[str] | None = None) -> NoReturn:
    """The process: run one command, then exit with its ExitCode."""
    # SIGTERM means what SIGINT means, from the first moment: before `run` routes both to its
    # stop flag (and after it), the default action would kill the process with 143.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _invoke(args)
    except render.StdoutClosed:
        code = ExitCode.OK
    except render.StdoutFailed as failed:  # outside a command: the help, a usage error's JSON
        code = reported(failed, False, {})
    except (KeyboardInterrupt, RuntimeError) as error:  # before or after typer's own handling
        if not interrupted(error):  # (as it builds its commands)
            raise
        ignore_late_signals()  # the code is decided: a second signal must not cut its report
        report_early_interrupt(args)
        code = ExitCode.INTERRUPTED
    ignore_late_signals()  # the code is decided: a signal now must not end the process as killed
    try:
        render.flush_stdout()
    except render.StdoutClosed:  # the reader left before the last lines: the command's own
        pass  # code stands
    except render.StdoutFailed as failed:
        code = reported(failed, False, {})
    sys.exit(int(code))


def _invoke(args: list[str]) -> int:
    stdout = _file_of_stdout()
    try:
        # A command line that names no command is a usage error: its help goes to stderr,
        # where typer would print it to stdout (which carries data only).
        with redirect_stdout(sys.stderr) if _names_no_command(args) else nullcontext():
            result = app(args=args, prog_name=PROG_NAME, standalone_mode=False)
    except OSError as error:
        if error.filename is not None or "--install-completion" in args:
            raise
        # Every command reports its own errors (`reported_errors`): a write that failed out here
        # is typer's own, of the help or the completion script to stdout.
        render.stdout_failed(error)
    except SystemExit as exiting:
        # rich's answer to a reader gone while it wrote (`--help | head -1`): stdout pointed at
        # /dev/null, exit 1. Every command exits 0 there, and so does the help.
        if exiting.code == 1 and stdout != _file_of_stdout() == _devnull():
            render.stdout_closed()
        raise
    except typer.TyperException as error:  # a usage error: typer found it before any command ran
        return _usage_error(error, args)
    except _Interrupted:
        raise KeyboardInterrupt from None  # `main` reports it
    except typer.Abort:  # Ctrl-C (or an EOFError) in a command: click raises Abort for it
        render.error_line("aborted")
        return ExitCode.INTERRUPTED
    # Without standalone mode, typer returns the code of a typer.Exit, or the command's None.
    return result if isinstance(result, int) else ExitCode.OK


def _file_of_stdout() -> tuple[int, int] | None:
    """What descriptor 1 is open on (device, inode); None when it is closed."""
    try:
        found = os.fstat(1)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _devnull() -> tuple[int, int]:
    found = Path(os.devnull).stat()
    return found.st_dev, found.st_ino


def _names_no_command(args: Sequence[str]) -> bool:
    """Nothing at all, or a command group alone (`simulate`): typer answers with the help.
    Not a shell's completion request (no arguments either), whose answer goes to stdout."""
    if _COMPLETION_VARIABLE in os.environ:
        return False
    groups = {group.name for group in app.registered_groups}
    return not args or (len(args) == 1 and args[0] in groups)


def _options_of(context: typer.Context) -> set[str]:
    """The options of `context`'s command, each by every name it has."""
    return {name for param in context.command.params for name in param.opts}


def _takes_json(context: typer.Context | None, args: Sequence[str]) -> bool:
    """Whether the command `args` name takes `--json`: the one click refused an option of, or,
    refused before it (`--bogus export --json`), the first argument that names a command."""
    if context is None:
        return True
    if context.parent is not None:
        return "--json" in _options_of(context)
    commands = getattr(context.command, "commands", {})
    named = next((commands[arg] for arg in args if arg in commands), None)
    return named is None or any("--json" in param.opts for param in named.params)


def _usage_error(error: typer.TyperException, args: Sequence[str]) -> int:
    """One line on stderr (and, with --json, the one JSON document the caller waits for)."""
    code = int(getattr(error, "exit_code", ExitCode.USAGE))
    if type(error).__name__ == "NoArgsIsHelpError":  # typer printed the help already
        return code
    # typer reads a value through pydantic, whose refusal starts "Value error, ".
    message = error.format_message().replace(": Value error, ", ": ", 1)
    context = getattr(error, "ctx", None)
    command = context.command_path.removeprefix(PROG_NAME).strip() if context else ""
    help_hint = f" (see `{context.command_path} --help`)" if context else ""
    # Set where click refused an option of the command (not of choreo-ingest itself).
    in_command = context if context is not None and context.parent is not None else None
    option = getattr(error, "option_name", None)
    if in_command is not None and option in _options_of(in_command.find_root()):
        # `run -v`: the command's help does not list it, so say where it goes
        help_hint = f" ({option} is choreo-ingest's own option: give it before `{command}`)"
    render.error_line(f"{command}: {message}{help_hint}" if command else message + help_hint)
    as_json, fields = command_fields(list(args))
    if as_json and not _takes_json(in_command or context, args):  # `export > catalog.ndjson`
        as_json = False  # must not find an error document where its data goes
    if as_json:
        # click names the command when it refused one of its options, or a global option once
        # the command was known (`--log-json --log-console run`); else the arguments do.
        if in_command is not None:
            fields = error_fields(in_command.command.name or "", list(args))
        elif context is not None and context.invoked_subcommand:
            fields = error_fields(context.invoked_subcommand, list(args))
        print_error_document({**fields, "exitCode": code, "error": message})
    return code
