"""``dtbundle inventory``: record what the target registry holds, for a delta export (``specs/inventory.md``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dtbundle.cli import jsonout
from dtbundle.cli.options import OUTPUT, REGISTRY, OutputOptions, RegistryAccess, uses
from dtbundle.cli.progress import progress_display
from dtbundle.cli.render import human_bytes, shown
from dtbundle.cli.secrets import prompt_secret
from dtbundle.errors import Interrupted, UsageError
from dtbundle.limits import IMPORT_CONCURRENCY
from dtbundle.progress import plural

if TYPE_CHECKING:
    from dtbundle.inventory import Inventory, Taken, WrittenInventory

SHOWN_REPOSITORIES = 50  # named one by one in the text report; --json and the file have them all


@uses(REGISTRY, OUTPUT)
def inventory(
    registry: RegistryAccess,
    output: OutputOptions,
    target: Annotated[
        str,
        typer.Option(
            "--registry",
            help="Target HOST\\[:PORT]\\[/PREFIX] to take stock of: the repositories at or below it.",
        ),
    ],
    path: Annotated[
        Path,
        typer.Option("--output", "-o", dir_okay=False, help="Inventory file to write (JSON; see specs/inventory.md)."),
    ],
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            exists=True,
            dir_okay=False,
            help="Take the repositories an import of this bundle writes to (its catalog's names only).",
        ),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="With --bundle: SRC_PREFIX=DST_PREFIX, as given to import (repeatable)."),
    ] = None,
    repository: Annotated[
        list[str] | None,
        typer.Option(
            "--repository",
            help="A repository path relative to --registry (repeatable); "
            "without it or --bundle: every repository the registry's catalog lists below --registry.",
        ),
    ] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            "--signing-key",
            exists=True,
            dir_okay=False,
            help="Private key from 'dtbundle keygen': also write the output's signature, <output>.sig.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Registry requests at once.")
    ] = IMPORT_CONCURRENCY,
) -> None:
    """Record the manifest and blob digests the target registry holds, for a delta export."""
    from dtbundle.bundle.key import load_private_key
    from dtbundle.importer.mapping import parse_target
    from dtbundle.inventory import check_output, repositories, take_inventory, write_inventory

    prefix = parse_target(target)
    if bundle is not None and repository:
        raise UsageError("--bundle and --repository both choose the repositories: give one of them")
    if map_ and bundle is None:
        raise UsageError("--map maps a bundle's images: use it with --bundle (--repository is relative to --registry)")
    check_output(path, force)  # before any registry is asked
    key = load_private_key(signing_key, prompt=prompt_secret) if signing_key is not None else None
    started = time.monotonic()
    names = (
        repositories.from_bundle(bundle, target, map_ or [])
        if bundle is not None
        else repositories.named(prefix, repository)
        if repository
        else None
    )
    try:
        with registry.client({prefix.registry}) as client, progress_display(output.quiet) as progress:
            if names is None:
                names = repositories.from_catalog(client, prefix, progress)
            taken = take_inventory(client, prefix.registry, names, concurrency=concurrency, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted("interrupted: no inventory was written; run the same command again") from None
    if not names and not output.quiet:
        typer.echo(f"dtbundle: warning: no repository at or below {prefix}; the inventory is empty", err=True)
    written = write_inventory(taken.inventory, path, force=force, signing_key=key)
    seconds = time.monotonic() - started
    if output.as_json:
        typer.echo(jsonout.document("inventory", _json(taken, written, seconds)))
    elif output.quiet:
        typer.echo(_line(taken.inventory, written))
    else:
        typer.echo(_report(taken, written))


def _counts(inv: Inventory) -> dict[str, int]:
    return {
        "repositories": len(inv.repositories),
        "manifests": len(inv.manifest_digests()),
        "blobs": len(inv.blob_locations()),
    }


def _summary(inv: Inventory) -> str:
    counts = _counts(inv)
    repositories = "1 repository" if counts["repositories"] == 1 else f"{counts['repositories']} repositories"
    return (
        f"{repositories}, {plural(counts['manifests'], 'manifest')}, "
        f"{plural(counts['blobs'], 'blob')} ({human_bytes(inv.blob_bytes)})"
    )


def _signed(written: WrittenInventory) -> str:
    if written.signature is None:
        return "unsigned"
    return f"signed with key {written.key_id} ({written.signature})"


def _line(inv: Inventory, written: WrittenInventory) -> str:
    return f"wrote {written.path}: {_summary(inv)}, {'signed' if written.signature else 'unsigned'}"


def _report(taken: Taken, written: WrittenInventory) -> str:
    inv = taken.inventory
    lines = [f"inventory of {inv.registry}: {_summary(inv)}"]
    width = max((len(r.name) for r in inv.repositories[:SHOWN_REPOSITORIES]), default=0)
    for repo in inv.repositories[:SHOWN_REPOSITORIES]:
        counts = f"{plural(len(repo.manifests), 'manifest')}, {plural(len(repo.blobs), 'blob')}"
        lines.append(f"  {shown(repo.name):<{width}}  {counts}")
    if len(inv.repositories) > SHOWN_REPOSITORIES:
        more = len(inv.repositories) - SHOWN_REPOSITORIES
        lines.append(f"  … and {more} more repositories (all of them in the file)")
    lines.append(f"wrote {written.path}, {_signed(written)}")
    lines += [f"  warning: {shown(w)}" for w in taken.warnings]
    return "\n".join(lines)


def _json(taken: Taken, written: WrittenInventory, seconds: float) -> dict[str, Any]:
    inv = taken.inventory
    return {
        "inventory": str(written.path),
        "signature": str(written.signature) if written.signature is not None else None,
        "bundleKey": written.key_id,
        "registry": inv.registry,
        "created": inv.created,
        "counts": _counts(inv),
        "blobBytes": inv.blob_bytes,
        "repositories": [
            {"name": r.name, "manifests": len(r.manifests), "blobs": len(r.blobs)} for r in inv.repositories
        ],
        "warnings": list(taken.warnings),
        "seconds": round(seconds, 3),
    }
