"""Dynatrace in the CLI: the option group of ``export --dynatrace``, ``dtbundle dynatrace …`` and
``dtbundle dynakube``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from dtbundle.cli import jsonout
from dtbundle.cli.help import EPILOGS, Command
from dtbundle.cli.options import DYNATRACE_PANEL, KEYS, BundleKeys, OptionGroup, panel_option, read_secret, uses
from dtbundle.dynatrace.deployment_api import oneagent_versions
from dtbundle.dynatrace.dynakube import Dynakube, dynakube_for_bundle
from dtbundle.dynatrace.selection import DynatraceExport, classic_tag, dynatrace_export, merge_selection
from dtbundle.dynatrace.table import component_lines
from dtbundle.errors import UsageError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.registry import ProxySettings, RegistryConfig
from dtbundle.registry.service import ServiceSession


@dataclass(frozen=True)
class DynatraceOptions:
    """``export --dynatrace`` and its selection options."""

    enabled: bool = False
    option: tuple[str, ...] = ()
    version: tuple[str, ...] = ()
    dynatrace_file: Path | None = None
    dynatrace_registry: str | None = None
    with_optional: bool = False
    environment_url: str | None = None
    environment_registry: str | None = None
    environment_id: str | None = None
    paas_token_file: Path | None = None

    def selection(self, platforms: Sequence[str] = ()) -> DynatraceExport | None:
        """The Dynatrace images of this export, or None without --dynatrace/--dynatrace-file.

        ``platforms`` are the export's ``--platform`` filters: they narrow Dynatrace images too."""
        if not (self.enabled or self.dynatrace_file):
            if self.option or self.version or self.environment_url or self.with_optional or self.dynatrace_registry:
                raise UsageError("--option, --version, --environment-url and --dynatrace-registry go with --dynatrace")
            return None
        selection = merge_selection(
            self.option,
            self.version,
            file=self.dynatrace_file,
            registry=self.dynatrace_registry,
            with_optional=self.with_optional,
            environment_url=self.environment_url,
            environment_registry=self.environment_registry,
            environment_id=self.environment_id,
            platforms=platforms,
        )
        return dynatrace_export(
            selection,
            paas_token=lambda: read_secret(
                self.paas_token_file, "DT_PAAS_TOKEN", "Classic Full-Stack needs a PaaS token"
            ),
            credentials_source=f"PaaS token ({self.paas_token_file or '$DT_PAAS_TOKEN'})",
        )


def _dynatrace_options(option: list[str] | None, version: list[str] | None, **rest: object) -> DynatraceOptions:
    return DynatraceOptions(option=tuple(option or ()), version=tuple(version or ()), **rest)  # type: ignore[arg-type]


DYNATRACE = OptionGroup(
    "dynatrace",
    {
        "enabled": panel_option(
            bool, "--dynatrace", panel=DYNATRACE_PANEL, help="Dynatrace mode: images from --option and --version."
        ),
        "option": panel_option(
            list[str] | None,
            "--option",
            panel=DYNATRACE_PANEL,
            help="Dynatrace observability option (repeatable); see 'dtbundle dynatrace options'.",
        ),
        "version": panel_option(
            list[str] | None,
            "--version",
            panel=DYNATRACE_PANEL,
            help="Dynatrace COMPONENT=VERSION (repeatable); immutable version tags only.",
        ),
        "dynatrace_file": panel_option(
            Path | None,
            "--dynatrace-file",
            panel=DYNATRACE_PANEL,
            exists=True,
            dir_okay=False,
            help="Dynatrace selection as TOML (options, versions, registry, \\[environment]).",
        ),
        "dynatrace_registry": panel_option(
            str | None,
            "--dynatrace-registry",
            panel=DYNATRACE_PANEL,
            help="ecr (default), dockerhub, or HOST/PATH of a mirror.",
        ),
        "with_optional": panel_option(
            bool, "--with-optional", panel=DYNATRACE_PANEL, help="Add the options' optional components."
        ),
        "environment_url": panel_option(
            str | None,
            "--environment-url",
            panel=DYNATRACE_PANEL,
            help="Dynatrace environment (Classic Full-Stack's built-in registry).",
        ),
        "environment_registry": panel_option(
            str | None,
            "--environment-registry",
            panel=DYNATRACE_PANEL,
            help="Built-in registry HOST\\[:PORT]\\[/PATH] if not the environment's own.",
        ),
        "environment_id": panel_option(
            str | None,
            "--environment-id",
            panel=DYNATRACE_PANEL,
            help="Environment ID (the registry user), if not in the URL.",
        ),
        "paas_token_file": panel_option(
            Path | None,
            "--paas-token-file",
            panel=DYNATRACE_PANEL,
            exists=True,
            dir_okay=False,
            help="PaaS token for the built-in registry (default: $DT_PAAS_TOKEN).",
        ),
    },
    _dynatrace_options,
)

dynatrace_app = typer.Typer(help="Dynatrace helpers: options and components, OneAgent versions.", no_args_is_help=True)


@dynatrace_app.command("options", cls=Command)
def dynatrace_options() -> None:
    """The observability options, the components each needs, and how each is signed."""
    for line in component_lines():
        typer.echo(line)


@dynatrace_app.command("versions", cls=Command, epilog=EPILOGS["dynatrace versions"])
def dynatrace_versions(
    environment_url: Annotated[str, typer.Option("--environment-url", help="e.g. https://abc12345.live.dynatrace.com")],
    api_token_file: Annotated[
        Path | None,
        typer.Option(
            "--api-token-file", exists=True, dir_okay=False, help="File holding the API token (default: $DT_API_TOKEN)."
        ),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option("--ca-cert", exists=True, dir_okay=False, help="PEM file of CA certificates to trust for TLS."),
    ] = None,
    proxy: Annotated[
        str | None,
        typer.Option(
            "--proxy",
            metavar="URL",
            help="HTTP(S) proxy URL, http://\\[USER:PASSWORD@]HOST:PORT; overrides HTTPS_PROXY/ALL_PROXY "
            '(NO_PROXY still applies; "" for none).',
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report instead of text.")] = False,
) -> None:
    """OneAgent versions the environment offers (Deployment API), newest marked."""
    token = read_secret(
        api_token_file, "DT_API_TOKEN", "the Deployment API needs an API token (InstallerDownload scope)"
    )
    config = RegistryConfig(ca_cert=ca_cert, proxy=ProxySettings.from_environment(os.environ, proxy))
    with ServiceSession(config) as session:
        found = oneagent_versions(environment_url, token, session)
    if as_json:
        fields = {"environmentUrl": environment_url, "versions": list(found.versions), "latest": found.latest}
        typer.echo(jsonout.document("dynatrace versions", fields))
        return
    for item in found.versions:
        typer.echo(f"{item}{'  (latest)' if item == found.latest else ''}")
    if found.latest:
        typer.echo(
            f"export with: --version oneagent={found.latest} (Classic Full-Stack tag {classic_tag(found.latest)})"
        )


@uses(KEYS)
def dynakube(
    bundle: Annotated[Path, typer.Argument(help="The bundle file (only its catalog is read).")],
    keys: BundleKeys,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Target HOST\\[:PORT]\\[/PREFIX], as for import.")
    ] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="SRC_PREFIX=DST_PREFIX, as for import.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the fragment here instead of stdout.")
    ] = None,
    environment_url: Annotated[
        str | None,
        typer.Option(
            "--environment-url",
            help="Dynatrace environment for apiUrl: https://<id>.live.dynatrace.com or https://<domain>/e/<id>.",
        ),
    ] = None,
) -> None:
    """A DynaKube for the bundle's Operator version (and pull-secret command), images pinned by digest."""
    mapper = RepositoryMapper(registry, map_ or [])
    emit_dynakube(dynakube_for_bundle(bundle, mapper, keys.load_optional(), environment_url=environment_url), output)


def emit_dynakube(dynakube: Dynakube, output: Path | None) -> None:
    """Write the DynaKube (stdout without ``output``), then its warnings on stderr, each naming its line."""
    emit(dynakube.text, output)
    where = str(output) if output is not None else "DynaKube on stdout"
    for warning in dynakube.warnings:
        typer.echo(f"dtbundle: WARNING: {where}, line {warning.line}: {warning.message}", err=True)


def emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
