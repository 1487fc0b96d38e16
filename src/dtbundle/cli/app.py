"""The ``dtbundle`` application: its commands, and the one place errors become exit codes.

Commands live one per module (``cli/<command>.py``); they parse options into settings
objects (:mod:`dtbundle.cli.options`), call the library and render its typed result
(:mod:`dtbundle.cli.render`). :func:`main` catches once: a :class:`DtbundleError` prints
its one-line message and exits with its code (tracebacks only with ``--debug``);
anything else is reported as an internal error. With ``--json`` it also prints the error
document (:mod:`dtbundle.cli.jsonout`) on stdout, and typer runs outside standalone mode
so that the usage errors it finds come here too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Annotated

import typer

from dtbundle import __version__
from dtbundle.cli import dynatrace, export, import_, inspect, inventory, jsonout, keygen, resolve, verify
from dtbundle.cli.help import EPILOGS, Command, Group
from dtbundle.cli.render import shown
from dtbundle.errors import EXIT_INTERRUPTED, EXIT_OPERATIONAL, EXIT_USAGE, DtbundleError, Interrupted

app = typer.Typer(
    name="dtbundle",
    help="Carry container images and their signatures into air-gapped registries, byte for byte.",
    cls=Group,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dtbundle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (or DTBUNDLE_DEBUG=1).")] = False,
) -> None:
    """Exit codes: 0 success, 1 operational failure, 2 usage error, 3 verification failure."""
    # --debug is read by main() from the command line: errors are mapped outside the app.


for name, command in (
    ("resolve", resolve.resolve),
    ("keygen", keygen.keygen),
    ("export", export.export),
    ("verify", verify.verify),
    ("inspect", inspect.inspect),
    ("import", import_.import_),
    ("inventory", inventory.inventory),
    ("dynakube", dynatrace.dynakube),
):
    app.command(name, cls=Command, epilog=EPILOGS.get(name))(command)
app.add_typer(dynatrace.dynatrace_app, name="dynatrace", cls=Group)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, map errors to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("DTBUNDLE_DEBUG", "") not in ("", "0")
    signalled: list[int] = []
    jsonout.new_run()
    try:
        with _signals_interrupt(signalled):
            if jsonout.requested(args):  # usage errors come back as exceptions, for the error document
                status = app(args=args, prog_name="dtbundle", standalone_mode=False)
                if isinstance(status, int) and status:  # typer.Exit(code), or 130 after an interrupt
                    sys.exit(status)
            else:
                # Standalone mode: typer itself reports usage errors (exit 2) and --help.
                app(args=args, prog_name="dtbundle")
    except Interrupted as exc:  # raised where the state is known: the message says what it is
        typer.echo(f"dtbundle: {shown(exc.message)}", err=True)
        sys.exit(exc.exit_code)
    except SystemExit as exc:  # typer turns KeyboardInterrupt into a silent exit 130
        if signalled and exc.code == EXIT_INTERRUPTED:
            typer.echo("dtbundle: interrupted", err=True)
        raise
    except typer.TyperException as exc:  # only with --json: in standalone mode typer reports these itself
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        typer.echo(f"dtbundle: error: {exc.format_message()}{hint}", err=True)
        kind = "UsageError" if exc.exit_code == EXIT_USAGE else type(exc).__name__
        jsonout.report_error(args, exc.exit_code, kind, exc.format_message())
        sys.exit(exc.exit_code)
    except DtbundleError as exc:
        if debug:
            traceback.print_exc()
        message = shown(exc.message)  # it may quote a bundle or a server: never raw control characters
        typer.echo(f"dtbundle: error: {message}", err=True)
        jsonout.report_error(args, exc.exit_code, type(exc).__name__, message)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("dtbundle: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly, trace only on request
        if debug:
            traceback.print_exc()
        typer.echo(
            f"dtbundle: internal error: {type(exc).__name__}: {shown(exc)} (rerun with --debug and report it)",
            err=True,
        )
        jsonout.report_error(args, EXIT_OPERATIONAL, "InternalError", f"{type(exc).__name__}: {exc}")
        sys.exit(EXIT_OPERATIONAL)


@contextlib.contextmanager
def _signals_interrupt(signalled: list[int]) -> Iterator[None]:
    """While a command runs, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (and are
    recorded in ``signalled``): a terminated export cleans up exactly as an interrupted one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number: int, frame: FrameType | None) -> None:
        signalled.append(number)
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
