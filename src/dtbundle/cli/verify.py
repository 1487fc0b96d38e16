"""``dtbundle verify``: the bundle's signature and every entry, then the images' signatures, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtbundle.cli import jsonout, render
from dtbundle.cli.options import KEYS, OUTPUT, SIGNATURES, BundleKeys, OutputOptions, SignatureOptions, uses
from dtbundle.cli.progress import progress_display


@uses(KEYS, SIGNATURES, OUTPUT)
def verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    keys: BundleKeys,
    signatures: SignatureOptions,
    output: OutputOptions,
) -> None:
    """Verify the bundle's signature, then every entry against the catalog (exit 3 on any problem);
    with --cosign-key or keyless options, the images' signatures too, offline."""
    from dtbundle.verify import verify as verify_bundle

    trusted = keys.load("verify")
    policy = signatures.policy()
    with progress_display(output.quiet) as progress:
        outcome = verify_bundle(
            bundle, trusted, policy, require_signatures=signatures.require_signatures, progress=progress
        )
    if output.quiet and not output.as_json:
        typer.echo(render.verify_line(str(bundle), outcome.bundle, outcome.images))
        return
    if output.as_json:
        typer.echo(jsonout.document("verify", {"bundle": str(bundle), **outcome.to_json()}))
        return
    typer.echo(render.verify_result(str(bundle), outcome.bundle, outcome.images))
    for line in render.signature_lines(outcome.images or []):
        typer.echo(line)
