"""The ``dtbundle`` command line: parse options into settings, call the library.

No logic lives here beyond turning options into settings objects and results
into text. Errors are caught once, in :func:`main`: a :class:`DtbundleError`
prints its one-line message and exits with its code (tracebacks only with
``--debug``); anything else is reported as an internal error.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from dtbundle import __version__
from dtbundle.errors import EXIT_OPERATIONAL, DtbundleError, UsageError
from dtbundle.reference import parse_reference
from dtbundle.registry import CredentialResolver, Credentials, RegistryClient, RegistryConfig
from dtbundle.resolve import ResolvedImage, resolve_all

app = typer.Typer(
    name="dtbundle",
    help="Carry container images and their signatures into air-gapped registries, byte for byte.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": os.environ.get("DTBUNDLE_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dtbundle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """Exit codes: 0 success, 1 operational failure, 2 usage error, 3 verification failure."""
    if debug:
        _state["debug"] = True


# -- shared registry options ------------------------------------------------------------
PlainHttp = Annotated[
    bool, typer.Option("--plain-http", help="Talk plain HTTP to the registries of this command.")
]
CaCert = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert",
        exists=True,
        dir_okay=False,
        help="PEM file of CA certificates to trust for registry TLS.",
    ),
]
SkipTls = Annotated[
    bool,
    typer.Option(
        "--insecure-skip-tls-verify", help="Do not verify registry TLS certificates (unsafe)."
    ),
]
Username = Annotated[
    str | None,
    typer.Option(
        "--username", envvar="DTBUNDLE_USERNAME", help="Registry user (env DTBUNDLE_USERNAME)."
    ),
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the registry password from standard input.")
]
AuthRegistry = Annotated[
    str | None,
    typer.Option(
        "--auth-registry",
        help="Registry host the explicit credentials are for "
        "(default: the registry of the references, when there is one).",
    ),
]


def _explicit_credentials(
    username: str | None, password_stdin: bool, registries: set[str], auth_registry: str | None
) -> dict[str, Credentials]:
    """Bind --username/--password-stdin (or DTBUNDLE_PASSWORD) to exactly one registry."""
    password = os.environ.get("DTBUNDLE_PASSWORD")
    if password_stdin:
        if sys.stdin.isatty():
            raise UsageError(
                "--password-stdin given, but standard input is a terminal; pipe the password in"
            )
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if password_stdin:
            raise UsageError("--password-stdin needs --username (or DTBUNDLE_USERNAME)")
        return {}
    if not password:
        raise UsageError(
            "--username needs a password: use --password-stdin or set DTBUNDLE_PASSWORD"
        )
    host = auth_registry or (next(iter(registries)) if len(registries) == 1 else None)
    if host is None:
        raise UsageError(
            "explicit credentials apply to one registry, and these references name several; "
            "add --auth-registry HOST, or log in with 'docker login' / 'skopeo login'"
        )
    source = "--username/--password-stdin" if password_stdin else "--username/DTBUNDLE_PASSWORD"
    return {host: Credentials(source=source, username=username, password=password)}


def _client(
    plain_http: bool, ca_cert: Path | None, skip_tls: bool, explicit: dict[str, Credentials]
) -> RegistryClient:
    config = RegistryConfig(
        plain_http=plain_http, ca_cert=ca_cert, insecure_skip_tls_verify=skip_tls
    )
    return RegistryClient(config, CredentialResolver(explicit))


# -- verbs ------------------------------------------------------------------------------------
@app.command()
def resolve(
    references: Annotated[
        list[str],
        typer.Argument(
            help="Image references, e.g. public.ecr.aws/dynatrace/dynatrace-operator:v1.4.0"
        ),
    ],
    no_referrers: Annotated[
        bool, typer.Option("--no-referrers", help="Do not look for signatures and referrers.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    plain_http: PlainHttp = False,
    ca_cert: CaCert = None,
    insecure_skip_tls_verify: SkipTls = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    auth_registry: AuthRegistry = None,
) -> None:
    """Resolve references to digests; list platforms, cosign signatures and OCI referrers."""
    refs = [parse_reference(r) for r in references]
    explicit = _explicit_credentials(
        username, password_stdin, {r.registry for r in refs}, auth_registry
    )
    with _client(plain_http, ca_cert, insecure_skip_tls_verify, explicit) as client:
        images = resolve_all(client, refs, attachments=not no_referrers)
    if as_json:
        typer.echo(json.dumps({"images": [i.to_json() for i in images]}, indent=2))
    else:
        for image in images:
            typer.echo(_describe(image))


def _describe(image: ResolvedImage) -> str:
    lines = [f"{image.pinned}", f"  {image.media_type} ({image.size} bytes)"]
    for p in image.platforms:
        lines.append(f"  {p.platform or 'unknown'!s:<16} {p.digest}")
    for a in image.attachments:
        kind = (
            a.kind
            if a.kind != "referrer"
            else f"referrer {a.descriptor.artifact_type or a.descriptor.media_type}"
        )
        lines.append(f"  {kind:<16} {a.descriptor.digest} -> {a.subject[:19]}… (via {a.found_via})")
    if not image.attachments:
        lines.append("  no signatures or referrers found")
    return "\n".join(lines)


def main() -> None:
    """Console entry point: run the app, map errors to exit codes."""
    debug = _state["debug"] or "--debug" in sys.argv[1:]
    try:
        # Standalone mode: typer itself reports usage errors (exit 2) and --help.
        app()
    except DtbundleError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"dtbundle: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("dtbundle: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly, trace only on request
        if debug:
            traceback.print_exc()
        typer.echo(
            f"dtbundle: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
            "and report it)",
            err=True,
        )
        sys.exit(EXIT_OPERATIONAL)
