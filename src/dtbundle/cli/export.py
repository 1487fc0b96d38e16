"""``dtbundle export``: images, every platform and everything that refers to them -> one signed bundle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dtbundle.cli import jsonout, render
from dtbundle.cli.dynatrace import DYNATRACE, DynatraceOptions
from dtbundle.cli.options import (
    OUTPUT,
    REGISTRY,
    SIGNATURES,
    OutputOptions,
    RegistryAccess,
    SignatureOptions,
    uses,
)
from dtbundle.cli.progress import progress_display
from dtbundle.cli.secrets import prompt_secret
from dtbundle.errors import UsageError
from dtbundle.trust import DEFAULT_TUF_URL


@uses(REGISTRY, SIGNATURES, OUTPUT, DYNATRACE)
def export(
    registry: RegistryAccess,
    signatures: SignatureOptions,
    output: OutputOptions,
    dynatrace: DynatraceOptions,
    references: Annotated[list[str] | None, typer.Argument(help="Image references to carry.")] = None,
    images_file: Annotated[
        Path | None,
        typer.Option("--images-file", exists=True, dir_okay=False, help="TOML file listing images (see README)."),
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Bundle file to write (default: bundle-<UTC time>.tar.zst); - writes it to standard output.",
        ),
    ] = None,
    signing_key: Annotated[
        Path,
        typer.Option("--signing-key", exists=True, dir_okay=False, help="Private key from 'dtbundle keygen'."),
    ] = Path("dtbundle.key"),
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            help="Carry only os/arch\\[/variant] (repeatable); trims indexes, changing their digest.",
        ),
    ] = None,
    no_referrers: Annotated[
        bool,
        typer.Option("--no-referrers", help="Leave out signatures, attestations, SBOMs and referrers."),
    ] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, help="Parallel downloads.")] = 8,
    compression_level: Annotated[int, typer.Option("--compression-level", min=1, max=19, help="zstd level.")] = 3,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing output file; with --volume-size, the volumes of an earlier set of that name "
            "(and their .sha256 files).",
        ),
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            file_okay=False,
            envvar="DTBUNDLE_CACHE_DIR",
            help="Keep verified blobs here across runs; a killed export run again downloads only what is missing.",
        ),
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            exists=True,
            dir_okay=False,
            help="A delta bundle: leave out the blobs this inventory (from 'dtbundle inventory') says the target "
            "holds; the catalog lists them as required at the target.",
        ),
    ] = None,
    inventory_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--inventory-key",
            exists=True,
            dir_okay=False,
            help="Public key the inventory must be signed with (its .sig file); repeatable.",
        ),
    ] = None,
    volume_size: Annotated[
        str | None,
        typer.Option(
            "--volume-size",
            metavar="SIZE",
            help="Write volumes NAME.001.tar.zst, NAME.002.tar.zst, … of at most SIZE each (4GiB, 700MiB, 4.7GB), "
            "each a complete signed bundle; only a blob larger than a volume is split, into parts.",
        ),
    ] = None,
    tuf_url: Annotated[
        str | None,
        typer.Option(
            "--tuf-url",
            rich_help_panel="Image signatures",
            help="Keyless without --trusted-root: TUF repository to get trusted_root.json from "
            f"(default: {DEFAULT_TUF_URL}).",
        ),
    ] = None,
    tuf_root: Annotated[
        Path | None,
        typer.Option(
            "--tuf-root",
            exists=True,
            dir_okay=False,
            rich_help_panel="Image signatures",
            help="TUF root.json to trust first (default: Sigstore's public-good root shipped with dtbundle).",
        ),
    ] = None,
) -> None:
    """Write every platform of the images, with everything that refers to them, into one signed bundle."""
    from dtbundle.bundle.key import load_private_key, load_public_key
    from dtbundle.export.requests import load_images_file, requests_from
    from dtbundle.export.run import ExportSettings, created_time, run_export
    from dtbundle.inventory import load_inventory
    from dtbundle.trust.tuf import TufSource

    if bundle == Path("-"):
        jsonout.bundle_on_stdout()
    size = _volume_size(volume_size)
    if bundle == Path("-") and sys.stdout.isatty():
        raise UsageError("--output - writes the bundle to standard output, which is a terminal: pipe or redirect it")
    if inventory_key and inventory is None:
        raise UsageError("--inventory-key checks the signature of an --inventory: give the inventory too")
    held = None
    if inventory is not None:
        keys = [load_public_key(path) for path in inventory_key] if inventory_key else None
        held = load_inventory(inventory, keys).blob_locations()

    requests = requests_from(references or [], platform or [])
    if images_file:
        requests += load_images_file(images_file, platform or [])
    chosen = dynatrace.selection(platform or [], registry.client)
    if chosen is not None:
        requests += chosen.requests
    if not requests:
        raise UsageError("no images to export: give references or --images-file")
    settings = ExportSettings(
        tuple(requests),
        bundle or Path(f"bundle-{created_time().strftime('%Y%m%d-%H%M%S')}.tar.zst"),
        load_private_key(signing_key, prompt=prompt_secret),  # an encrypted key's passphrase, typed hidden
        referrers=not no_referrers,
        concurrency=concurrency,
        compression_level=compression_level,
        force=force,
        signature_policy=signatures.policy(
            chosen.keyless_identities if chosen else (), keyless_defaults=bool(tuf_url or tuf_root)
        ),
        require_signatures=signatures.require_signatures,
        tuf=TufSource(tuf_url or DEFAULT_TUF_URL, tuf_root),
        extensions={"dynatrace": dict(chosen.extensions)} if chosen else {},
        cache_dir=cache_dir,
        inventory=held,
        volume_size=size,
    )
    built_in = dict(chosen.credentials) if chosen else {}
    with (
        registry.client({r.ref.registry for r in requests}, built_in) as client,
        progress_display(output.quiet) as progress,
    ):
        summary = run_export(client, settings, progress)
    to_stderr = settings.output == Path("-")  # standard output carries the bundle: the report goes to stderr
    if output.quiet and not output.as_json:
        typer.echo(render.export_line(summary), err=to_stderr)
        return
    text = jsonout.document("export", summary.to_json()) if output.as_json else render.export_summary(summary)
    typer.echo(text, err=to_stderr)


def _volume_size(text: str | None) -> int | None:
    from dtbundle.progress import parse_size

    if text is None:
        return None
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise UsageError(f"--volume-size: {exc}") from None
    if size < 2 << 20:
        raise UsageError(f"--volume-size {text} is too small: a volume must hold at least 2 MiB")
    return size
