"""``dtbundle keygen``: the bundle signing key pair."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dtbundle.errors import UsageError


def keygen(
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", file_okay=False, help="Where to write dtbundle.key and dtbundle.pub."),
    ],
    algorithm: Annotated[str, typer.Option("--algorithm", help="ed25519 (default) or ecdsa-p256.")] = "ed25519",
    force: Annotated[bool, typer.Option("--force", help="Replace existing key files.")] = False,
) -> None:
    """Create a bundle signing key pair (private key encrypted when DTBUNDLE_KEY_PASSPHRASE is set)."""
    from dtbundle.bundle.key import ALGORITHMS, PASSPHRASE_ENV, generate_keys

    if algorithm not in ALGORITHMS:
        raise UsageError(f"unknown --algorithm {algorithm!r}; choose ed25519 or ecdsa-p256")
    passphrase = os.environ.get(PASSPHRASE_ENV) or None
    keys = generate_keys(output_dir, algorithm, force=force, passphrase=passphrase)
    state = "encrypted with $" + PASSPHRASE_ENV if keys.encrypted else "unencrypted"
    typer.echo(f"private key: {keys.private_path} (mode 0600, {state})")
    typer.echo(f"public key:  {keys.public_path}")
    typer.echo(f"key id:      {keys.key_id} ({keys.algorithm})")
