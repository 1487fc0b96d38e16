"""``dtbundle inspect``: a bundle's content from its catalog alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dtbundle.cli import jsonout, render
from dtbundle.cli.options import KEYS, BundleKeys, uses


@uses(KEYS)
def inspect(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    keys: BundleKeys,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report instead of text.")] = False,
) -> None:
    """List images, platforms, signatures and sizes from the catalog alone (fast for any size)."""
    from dtbundle.bundle.reader import open_bundle

    with open_bundle(bundle, keys.load_optional()) as opened:
        catalog, key = opened.catalog, opened.key_id
    if as_json:
        typer.echo(jsonout.document("inspect", jsonout.inspect_fields(bundle, key, catalog)))
        return
    note = f"catalog signature verified (key {key})" if key else "signature NOT checked (run 'dtbundle verify')"
    typer.echo(render.catalog(catalog, signature_note=note))
