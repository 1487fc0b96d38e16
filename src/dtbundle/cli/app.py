"""The ``dtbundle`` application: its commands, and the one place errors become exit codes.

Commands live one per module (``cli/<command>.py``); they parse options into settings
objects (:mod:`dtbundle.cli.options`), call the library and render its typed result
(:mod:`dtbundle.cli.render`). :func:`main` catches once: a :class:`DtbundleError` prints
its one-line message and exits with its code (tracebacks only with ``--debug``);
anything else is reported as an internal error.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from dtbundle import __version__
from dtbundle.cli import dynatrace, export, import_, inspect, keygen, resolve, verify
from dtbundle.errors import EXIT_OPERATIONAL, DtbundleError

EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="dtbundle",
    help="Carry container images and their signatures into air-gapped registries, byte for byte.",
    add_completion=False,
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


app.command()(resolve.resolve)
app.command()(keygen.keygen)
app.command()(export.export)
app.command()(verify.verify)
app.command()(inspect.inspect)
app.command("import")(import_.import_)
app.add_typer(dynatrace.dynatrace_app, name="dynatrace")
app.command()(dynatrace.dynakube)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, map errors to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("DTBUNDLE_DEBUG", "") not in ("", "0")
    try:
        # Standalone mode: typer itself reports usage errors (exit 2) and --help.
        app(args=args, prog_name="dtbundle")
    except DtbundleError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"dtbundle: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("dtbundle: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly, trace only on request
        if debug:
            traceback.print_exc()
        typer.echo(
            f"dtbundle: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
            err=True,
        )
        sys.exit(EXIT_OPERATIONAL)
