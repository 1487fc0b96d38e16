"""``dtbundle resolve``: references -> digests, platforms, signatures and referrers."""

from __future__ import annotations

from typing import Annotated

import typer

from dtbundle.cli import jsonout, render
from dtbundle.cli.options import REGISTRY, RegistryAccess, uses
from dtbundle.oci import parse_reference


@uses(REGISTRY)
def resolve(
    references: Annotated[
        list[str],
        typer.Argument(help="Image references, e.g. public.ecr.aws/dynatrace/dynatrace-operator:v1.4.0"),
    ],
    registry: RegistryAccess,
    no_referrers: Annotated[
        bool, typer.Option("--no-referrers", help="Do not look for signatures and referrers.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Resolve references to digests; list platforms, cosign signatures and OCI referrers."""
    from dtbundle.discovery import resolve_all

    refs = [parse_reference(r) for r in references]
    with registry.client({r.registry for r in refs}) as client:
        images = resolve_all(client, refs, attachments=not no_referrers)
    if as_json:
        typer.echo(jsonout.document("resolve", {"images": [i.to_json() for i in images]}))
    else:
        for image in images:
            typer.echo(render.resolved(image))
