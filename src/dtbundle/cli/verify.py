"""``dtbundle verify``: the bundle's signature and every entry, then the images' signatures, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtbundle.cli import jsonout, render
from dtbundle.cli.options import KEYS, OUTPUT, SIGNATURES, BundleKeys, OutputOptions, SignatureOptions, uses
from dtbundle.cli.progress import progress_display
from dtbundle.errors import UsageError


def check_inputs(bundles: list[Path]) -> None:
    """Standard input is one bundle: it cannot go with other files."""
    if Path("-") in bundles and len(bundles) > 1:
        raise UsageError("- (standard input) is one bundle: give it alone, or give volume files instead")


@uses(KEYS, SIGNATURES, OUTPUT)
def verify(
    bundles: Annotated[
        list[Path],
        typer.Argument(
            help="The bundle file (- reads standard input), or volumes of one set in any order.", show_default=False
        ),
    ],
    keys: BundleKeys,
    signatures: SignatureOptions,
    output: OutputOptions,
) -> None:
    """Verify the bundle's signature, then every entry against the catalog (exit 3 on any problem);
    with --cosign-key or keyless options, the images' signatures too, offline."""
    from dtbundle.verify import verify as verify_bundle

    trusted = keys.load("verify")
    policy = signatures.policy()
    check_inputs(bundles)
    bundle = bundles[0]
    with progress_display(output.quiet) as progress:
        outcome = verify_bundle(
            bundles, trusted, policy, require_signatures=signatures.require_signatures, progress=progress
        )
    if output.quiet and not output.as_json:
        typer.echo(render.verify_line(str(bundle), outcome.bundle, outcome.images))
        return
    if output.as_json:
        typer.echo(jsonout.document("verify", {"bundle": str(bundle), **outcome.to_json()}))
        return
    typer.echo(render.verify_result(str(bundle), outcome.bundle, outcome.images))
    if outcome.bundle.catalog.volume is not None:
        typer.echo(render.volume_line(outcome.bundle.catalog.volume.count, outcome.volumes, outcome.missing))
    for line in render.signature_lines(outcome.images or []):
        typer.echo(line)
