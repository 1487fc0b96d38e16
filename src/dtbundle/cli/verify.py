"""``dtbundle verify``: the bundle's signature and every entry, then the images' signatures, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dtbundle.cli import render
from dtbundle.cli.options import KEYS, OUTPUT, SIGNATURES, BundleKeys, OutputOptions, SignatureOptions, uses
from dtbundle.cli.progress import progress_display
from dtbundle.trust.evaluate import require_verified
from dtbundle.verify import verify as verify_bundle


@uses(KEYS, SIGNATURES, OUTPUT)
def verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    keys: BundleKeys,
    signatures: SignatureOptions,
    output: OutputOptions,
) -> None:
    """Verify the bundle's signature, then every entry against the catalog (exit 3 on any problem);
    with --cosign-key or keyless options, the images' signatures too, offline."""
    trusted = keys.load("verify")
    policy = signatures.policy()
    with progress_display(output.quiet, "verify") as progress:
        outcome = verify_bundle(bundle, trusted, policy, progress_factory=progress)
    if signatures.require_signatures and outcome.images is not None:
        require_verified(outcome.images)  # before any verdict is printed
    result = outcome.bundle
    if output.as_json:
        document = {
            "bundle": str(bundle),
            "ok": True,
            "keyId": result.key_id,
            "files": result.files,
            "bytes": result.bytes,
            "images": len(result.catalog.images),
            "signatureVerification": [i.to_json() for i in outcome.images or []],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    typer.echo(render.verify_result(str(bundle), result))
    for line in render.signature_lines(outcome.images or []):
        typer.echo(line)
