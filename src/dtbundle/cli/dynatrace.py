"""Dynatrace in the CLI: the option group of ``export --dynatrace``, ``dtbundle dynatrace …`` and
``dtbundle dynakube``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dtbundle.cli import jsonout
from dtbundle.cli.help import EPILOGS, Command
from dtbundle.cli.options import (
    DYNATRACE_PANEL,
    KEYS,
    REGISTRY,
    BundleKeys,
    OptionGroup,
    RegistryAccess,
    panel_option,
    uses,
)
from dtbundle.cli.secrets import read_secret
from dtbundle.errors import UsageError

if TYPE_CHECKING:  # each command imports the Dynatrace library it uses: `--help` and other commands do not
    from dtbundle.dynatrace.dynakube import Dynakube
    from dtbundle.dynatrace.selection import DynatraceExport
    from dtbundle.dynatrace.versions import ComponentVersions
    from dtbundle.registry import RegistryClient


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
    no_helm_chart: bool = False
    latest: bool = False

    def selection(
        self, platforms: Sequence[str] = (), client_for: Callable[[set[str]], RegistryClient] | None = None
    ) -> DynatraceExport | None:
        """The Dynatrace images of this export, or None without --dynatrace/--dynatrace-file.

        ``platforms`` are the export's ``--platform`` filters: they narrow Dynatrace images too;
        ``client_for`` (registry hosts -> client) lists tags for ``--latest``."""
        if not (self.enabled or self.dynatrace_file):
            if self.latest:
                raise UsageError("--latest goes with --dynatrace")
            if self.option or self.version or self.environment_url or self.with_optional or self.dynatrace_registry:
                raise UsageError("--option, --version, --environment-url and --dynatrace-registry go with --dynatrace")
            return None
        from dtbundle.dynatrace.selection import dynatrace_export, latest_selection, merge_selection
        from dtbundle.dynatrace.versions import registry_host

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
        chosen: dict[str, str] = {}
        if self.latest:
            if client_for is None:
                raise UsageError("--latest needs registry access to list tags")
            with client_for({registry_host(selection.registry)}) as client:
                selection, chosen = latest_selection(selection, client)
            if chosen:
                picked = " ".join(f"--version {name}={version}" for name, version in chosen.items())
                typer.echo(f"dtbundle: --latest chose {picked}", err=True)
        export = dynatrace_export(
            replace(selection, helm_chart=not self.no_helm_chart),
            paas_token=lambda: read_secret(
                self.paas_token_file, "DT_PAAS_TOKEN", "Classic Full-Stack needs a PaaS token"
            ),
            credentials_source=f"PaaS token ({self.paas_token_file or '$DT_PAAS_TOKEN'})",
        )
        if self.latest:  # the catalog records what --latest chose
            export = replace(export, extensions={**export.extensions, "latest": chosen})
        return export


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
        "no_helm_chart": panel_option(
            bool,
            "--no-helm-chart",
            panel=DYNATRACE_PANEL,
            help="Leave out the Operator's Helm chart (carried by default, beside the Operator image).",
        ),
        "latest": panel_option(
            bool,
            "--latest",
            panel=DYNATRACE_PANEL,
            help="Newest immutable versions from the registry's tags (a matching set); --version still pins.",
        ),
    },
    _dynatrace_options,
)

dynatrace_app = typer.Typer(help="Dynatrace helpers: options and components, OneAgent versions.", no_args_is_help=True)


@dynatrace_app.command("options", cls=Command)
def dynatrace_options() -> None:
    """The observability options, the components each needs, and how each is signed."""
    from dtbundle.dynatrace.table import component_lines

    for line in component_lines():
        typer.echo(line)


@dynatrace_app.command("versions", cls=Command, epilog=EPILOGS["dynatrace versions"])
@uses(REGISTRY)
def dynatrace_versions(
    registry: RegistryAccess,
    dynatrace_registry: Annotated[
        str, typer.Option("--dynatrace-registry", help="ecr (default), dockerhub, or HOST/PATH of a mirror.")
    ] = "ecr",
    environment_url: Annotated[
        str | None,
        typer.Option(
            "--environment-url",
            help="Also list the Classic Full-Stack OneAgent versions of this environment (Deployment API).",
        ),
    ] = None,
    api_token_file: Annotated[
        Path | None,
        typer.Option(
            "--api-token-file", exists=True, dir_okay=False, help="File holding the API token (default: $DT_API_TOKEN)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report instead of text.")] = False,
) -> None:
    """Immutable versions of every public component (newest first) and the newest matching set;
    with --environment-url also the OneAgent versions the environment offers (Deployment API)."""
    from dtbundle.dynatrace.deployment_api import oneagent_versions
    from dtbundle.dynatrace.selection import classic_tag
    from dtbundle.dynatrace.versions import list_versions, matching_set, registry_host
    from dtbundle.registry.service import ServiceSession

    found = None
    if environment_url is not None:
        token = read_secret(
            api_token_file, "DT_API_TOKEN", "the Deployment API needs an API token (InstallerDownload scope)"
        )
        with ServiceSession(registry.config()) as session:
            found = oneagent_versions(environment_url, token, session)
    with registry.client({registry_host(dynatrace_registry)}) as client:
        listed = list_versions(client, dynatrace_registry)
    usable = {name: item.versions for name, item in listed.items() if item.versions}
    chosen, release = matching_set(usable) if usable else ({}, None)
    if as_json:
        fields = {
            "registry": dynatrace_registry,
            "components": [
                {
                    "component": item.name,
                    "repository": item.repository,
                    "versions": list(item.versions),
                    "newest": item.versions[0] if item.versions else None,
                    "ignoredTags": item.ignored,
                    "note": item.note,
                }
                for item in listed.values()
            ],
            "matchingSet": [{"component": name, "version": version} for name, version in chosen.items()],
            "release": release,
            "environmentUrl": environment_url,
            "versions": list(found.versions) if found else [],
            "latest": found.latest if found else None,
        }
        typer.echo(jsonout.document("dynatrace versions", fields))
        return
    for line in version_lines(listed, chosen, release):
        typer.echo(line)
    if found is not None:
        typer.echo(f"Classic Full-Stack OneAgent versions of {environment_url} (Deployment API):")
        for item in found.versions:
            typer.echo(f"  {item}{'  (latest)' if item == found.latest else ''}")
        if found.latest:
            typer.echo(
                f"export with: --version oneagent={found.latest} (Classic Full-Stack tag {classic_tag(found.latest)})"
            )


def version_lines(
    listed: Mapping[str, ComponentVersions], chosen: Mapping[str, str], release: str | None, shown: int = 6
) -> list[str]:
    """The text of ``dynatrace versions``: each component's newest versions, then the matching set."""
    lines = []
    for item in listed.values():
        versions = item.versions[:shown]
        more = len(item.versions) - len(versions)
        detail = item.note or ("  ".join(versions) if versions else "no immutable version")
        extras = [f"+{more} older (--json lists all)"] if more else []
        extras += [f"{item.ignored} other tags ignored"] if item.ignored else []
        lines.append(f"{item.name:<30} {detail}{'  (' + '; '.join(extras) + ')' if extras else ''}")
    if chosen:
        together = f"; OneAgent, code modules and ActiveGate of release {release}" if release else ""
        lines.append(f"Newest matching set{together}:")
        lines += [f"  {name}={version}" for name, version in chosen.items()]
        lines.append("export with: --latest, or " + " ".join(f"--version {n}={v}" for n, v in chosen.items()))
    return lines


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
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            "--ca-cert",
            exists=True,
            dir_okay=False,
            help="PEM CA of the private registry: trustedCAs in the DynaKube, a ConfigMap and helm --ca-file.",
        ),
    ] = None,
) -> None:
    """A DynaKube for the bundle's Operator version, images pinned by digest; with -o FILE also the
    Helm values and the install commands beside it (FILE's stem + -helm-values.yaml, -commands.sh)."""
    from dtbundle.dynatrace.dynakube import dynakube_for_bundle
    from dtbundle.dynatrace.helm import CA_CONFIGMAP
    from dtbundle.importer.mapping import RepositoryMapper

    mapper = RepositoryMapper(registry, map_ or [])
    trusted_cas = CA_CONFIGMAP if ca_cert is not None else None
    found = dynakube_for_bundle(
        bundle, mapper, keys.load_optional(), environment_url=environment_url, trusted_cas=trusted_cas
    )
    emit_dynakube(found, output, ca_cert=ca_cert)


def emit_dynakube(
    dynakube: Dynakube, output: Path | None, *, ca_cert: Path | None = None, plain_http: bool = False
) -> list[Path]:
    """Write the DynaKube (stdout without ``output``), then its warnings on stderr, each naming its line;
    with ``output``, the Helm values and install commands beside it. Returns the files written."""
    from dtbundle.dynatrace.helm import install_files

    emit(dynakube.text, output)
    where = str(output) if output is not None else "DynaKube on stdout"
    for warning in dynakube.warnings:
        typer.echo(f"dtbundle: WARNING: {where}, line {warning.line}: {warning.message}", err=True)
    if output is None:
        return []
    written = [output]
    for path, text in install_files(dynakube, output, ca_cert=ca_cert, plain_http=plain_http).items():
        emit(text, path)
        written.append(path)
    written[-1].chmod(0o755)  # the commands file
    return written


def emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
