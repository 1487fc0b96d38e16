"""``dtbundle import``: verify a bundle, then push it byte for byte into a registry (or an OCI layout)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dtbundle.cli import jsonout, render
from dtbundle.cli.dynatrace import emit_dynakube as emit_dynakube_file
from dtbundle.cli.options import (
    KEYS,
    OUTPUT,
    REGISTRY,
    SIGNATURES,
    BundleKeys,
    OutputOptions,
    RegistryAccess,
    SignatureOptions,
    uses,
)
from dtbundle.cli.progress import progress_display
from dtbundle.cli.verify import check_inputs
from dtbundle.errors import UsageError
from dtbundle.limits import IMPORT_CONCURRENCY

if TYPE_CHECKING:
    from dtbundle.bundle.key import PublicKey


@uses(KEYS, REGISTRY, SIGNATURES, OUTPUT)
def import_(
    bundles: Annotated[
        list[Path],
        typer.Argument(
            help="The bundle file (- reads standard input), or volumes of one set in any order.", show_default=False
        ),
    ],
    keys: BundleKeys,
    registry: RegistryAccess,
    signatures: SignatureOptions,
    output: OutputOptions,
    target: Annotated[
        str | None,
        typer.Option("--registry", help="Target HOST\\[:PORT]\\[/PREFIX]; source paths are kept below it."),
    ] = None,
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="SRC_PREFIX=DST_PREFIX (repeatable, longest prefix wins).")
    ] = None,
    to_oci: Annotated[
        Path | None, typer.Option("--to-oci", file_okay=False, help="Write an OCI layout directory instead of pushing.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace target tags that point at another digest.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Verify and show what would be pushed where; write nothing.")
    ] = False,
    insecure_skip_verify: Annotated[
        bool, typer.Option("--insecure-skip-verify", help="Import without checking the bundle signature (unsafe).")
    ] = False,
    state_file: Annotated[
        Path | None,
        typer.Option(
            "--state-file",
            dir_okay=False,
            help="Rollback records: the newest bundle time imported per target tag "
            "(default: $XDG_STATE_HOME/dtbundle/imports.json, or ~/.local/state/dtbundle/imports.json).",
        ),
    ] = None,
    allow_downgrade: Annotated[
        bool,
        typer.Option(
            "--allow-downgrade",
            help="Import a bundle older than one already imported to the same target tags (rolls them back).",
        ),
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            min=1,
            max=64,
            help="Blobs uploaded at once (each from a temporary copy in $TMPDIR); "
            "existence checks, manifests and tags go twice as many at once.",
        ),
    ] = IMPORT_CONCURRENCY,
    parts_dir: Annotated[
        Path | None,
        typer.Option(
            "--parts-dir",
            file_okay=False,
            help="Volume sets: where parts of a blob larger than a volume wait for the rest, between runs "
            "(default: $XDG_STATE_HOME/dtbundle/parts).",
        ),
    ] = None,
    emit_dynakube: Annotated[
        Path | None,
        typer.Option(
            "--emit-dynakube",
            help="After import, write a DynaKube here (Dynatrace mode); Helm values and install commands beside it.",
        ),
    ] = None,
    environment_url: Annotated[
        str | None,
        typer.Option(
            "--environment-url",
            help="With --emit-dynakube: Dynatrace environment for apiUrl, https://<id>.live.dynatrace.com "
            "or https://<domain>/e/<id>.",
        ),
    ] = None,
) -> None:
    """Verify a bundle, then push it byte for byte into a registry (or an OCI layout)."""
    from dtbundle.dynatrace.dynakube import dynakube_for_bundle
    from dtbundle.dynatrace.helm import CA_CONFIGMAP
    from dtbundle.importer.mapping import RepositoryMapper
    from dtbundle.importer.run import ImportSettings, run_import
    from dtbundle.importer.state import default_state_path

    check_inputs(bundles)
    bundle = bundles[0]
    if bundle == Path("-") and registry.password_stdin:
        raise UsageError(
            "import - reads the bundle from standard input: give the password another way than --password-stdin"
        )
    if emit_dynakube is not None and bundle == Path("-"):
        raise UsageError("--emit-dynakube reads the bundle twice: save it to a file instead of reading -")

    trusted: list[PublicKey] | None
    if insecure_skip_verify and not keys.paths:
        trusted = None
        typer.echo(
            "dtbundle: WARNING: --insecure-skip-verify: the bundle's signature is NOT checked; "
            "its content is trusted blindly",
            err=True,
        )
    else:
        trusted = keys.load("import", ", or --insecure-skip-verify to import unverified content (unsafe)")
    if to_oci is not None and (target or map_):
        raise UsageError("--to-oci writes a directory: do not combine it with --registry or --map")
    if emit_dynakube is not None and to_oci is not None:
        raise UsageError("--emit-dynakube needs a registry target (--registry/--map), not --to-oci")
    if environment_url is not None and emit_dynakube is None:
        raise UsageError("--environment-url goes with --emit-dynakube (it sets the DynaKube's apiUrl)")
    mapper = None if to_oci is not None else RepositoryMapper(target, map_ or [])
    # Before anything is pushed: a bundle the DynaKube cannot be written for fails here, not after the import.
    dynakube = (
        dynakube_for_bundle(
            bundle,
            mapper,
            trusted,
            environment_url=environment_url,
            trusted_cas=CA_CONFIGMAP if registry.ca_cert is not None else None,
        )
        if emit_dynakube is not None and mapper is not None
        else None
    )
    settings = ImportSettings(
        bundle,
        trusted,
        mapper,
        to_oci,
        overwrite=overwrite,
        dry_run=dry_run,
        signature_policy=signatures.policy(),
        require_signatures=signatures.require_signatures,
        state_file=state_file if state_file is not None else default_state_path(),
        allow_downgrade=allow_downgrade,
        concurrency=concurrency,
        volumes=tuple(bundles[1:]),
        parts_dir=parts_dir,
    )
    if trusted is None and not dry_run:
        typer.echo(
            "dtbundle: WARNING: --insecure-skip-verify: the bundle's creation time is not authenticated, so "
            "it is checked against the rollback records but not recorded",
            err=True,
        )
    with progress_display(output.quiet) as progress:
        if mapper is None:
            report = run_import(None, settings, progress)
        else:
            with registry.client(mapper.target_registries()) as client:
                report = run_import(client, settings, progress)
    if output.quiet and not output.as_json:
        typer.echo(render.import_line(report))
    elif not output.as_json:
        typer.echo(render.import_report(report))
    if dry_run and not (output.as_json or output.quiet):
        typer.echo(render.dry_run_plan(report))
    dynakube_written = False
    if emit_dynakube is not None and dynakube is not None and report.waiting:
        typer.echo(
            f"dtbundle: warning: no DynaKube written: {len(report.waiting)} image(s) wait for volumes still missing; "
            "import them, then run this command again",
            err=True,
        )
    elif emit_dynakube is not None and dynakube is not None:
        written = emit_dynakube_file(dynakube, emit_dynakube, ca_cert=registry.ca_cert, plain_http=registry.plain_http)
        dynakube_written = True
        if not (output.as_json or output.quiet):
            typer.echo(
                f"DynaKube written to {emit_dynakube}; Helm values and install commands: "
                + ", ".join(str(path) for path in written[1:])
            )
    if output.as_json:  # last: a run that fails above prints the error document instead (specs/json-output.md)
        rollback = {"stateFile": str(settings.state_file), "stateRecorded": settings.records_state}
        typer.echo(jsonout.document("import", {**report.to_json(), **rollback, "dynakubeWritten": dynakube_written}))
