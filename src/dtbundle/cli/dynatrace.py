"""``dtbundle dynatrace …`` and ``dtbundle dynakube``: Dynatrace helpers of the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dtbundle import dynatrace
from dtbundle.bundle.key import load_public_key
from dtbundle.bundle.reader import open_bundle
from dtbundle.cli.options import AsJson, CaCert, PublicKeys, read_secret
from dtbundle.errors import UsageError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.run import placement


def register(app: typer.Typer) -> None:
    """Add the Dynatrace commands to ``app``."""
    app.add_typer(dynatrace_app, name="dynatrace")
    app.command()(dynakube)


dynatrace_app = typer.Typer(help="Dynatrace helpers: options and components, OneAgent versions.", no_args_is_help=True)


@dynatrace_app.command("options")
def dynatrace_options() -> None:
    """The observability options, the components each needs, and how each is signed."""
    for line in dynatrace.component_lines():
        typer.echo(line)


@dynatrace_app.command("versions")
def dynatrace_versions(
    environment_url: Annotated[str, typer.Option("--environment-url", help="e.g. https://abc12345.live.dynatrace.com")],
    api_token_file: Annotated[
        Path | None,
        typer.Option(
            "--api-token-file", exists=True, dir_okay=False, help="File holding the API token (default: $DT_API_TOKEN)."
        ),
    ] = None,
    ca_cert: CaCert = None,
    as_json: AsJson = False,
) -> None:
    """OneAgent versions the environment offers (Deployment API), newest marked."""
    token = read_secret(
        api_token_file, "DT_API_TOKEN", "the Deployment API needs an API token (InstallerDownload scope)"
    )
    found = dynatrace.oneagent_versions(environment_url, token, verify=str(ca_cert) if ca_cert else True)
    if as_json:
        typer.echo(json.dumps({"versions": list(found.versions), "latest": found.latest}, indent=2))
        return
    for item in found.versions:
        typer.echo(f"{item}{'  (latest)' if item == found.latest else ''}")
    if found.latest:
        typer.echo(
            f"export with: --version oneagent={found.latest} (Classic Full-Stack tag "
            f"{dynatrace.classic_tag(found.latest)})"
        )


def dynakube(
    bundle: Annotated[Path, typer.Argument(help="The bundle file (only its catalog is read).")],
    registry: Annotated[
        str | None, typer.Option("--registry", help="Target HOST[:PORT][/PREFIX], as for import.")
    ] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="SRC_PREFIX=DST_PREFIX, as for import.")] = None,
    public_key: PublicKeys = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the fragment here instead of stdout.")
    ] = None,
) -> None:
    """A DynaKube fragment (and pull-secret command) pointing at the imported images, pinned by digest."""
    text = dynakube_text(bundle, RepositoryMapper(registry, map_ or []), public_key)
    emit(text, output)


def dynakube_text(bundle: Path, mapper: RepositoryMapper, public_keys: list[Path] | None) -> str:
    keys = [load_public_key(p) for p in public_keys] if public_keys else None
    with open_bundle(bundle, keys) as reader:
        catalog = reader.catalog
    if "dynatrace" not in catalog.extensions:
        raise UsageError(f"{bundle} was not exported in Dynatrace mode (export --dynatrace)")
    _, writes, _ = placement(catalog, mapper)
    targets = {w.digest: w.target for w in writes if w.kind == "image"}
    return dynatrace.dynakube_yaml(dynatrace.pinned_images(catalog, targets))


def emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
