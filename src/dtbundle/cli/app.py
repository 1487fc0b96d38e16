"""The ``dtbundle`` command line: parse options into settings, call the library.

No logic lives here beyond turning options into settings objects and results
into text. Errors are caught once, in :func:`main`: a :class:`DtbundleError`
prints its one-line message and exits with its code (tracebacks only with
``--debug``); anything else is reported as an internal error.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from dtbundle import __version__, dynatrace
from dtbundle.bundle.key import (
    ALGORITHMS,
    PASSPHRASE_ENV,
    PublicKey,
    generate_keys,
    load_private_key,
    load_public_key,
)
from dtbundle.bundle.reader import open_bundle, verify_bundle
from dtbundle.cli import dynatrace as _cli_dynatrace
from dtbundle.cli import render
from dtbundle.cli.options import (
    AsJson,
    AuthRegistry,
    CaCert,
    CertIdentity,
    CertIdentityRe,
    CertIssuer,
    CertIssuerRe,
    CosignKeys,
    PasswordStdin,
    PlainHttp,
    PublicKeys,
    Quiet,
    RequireSignatures,
    SkipTls,
    TrustedRootOpt,
    Username,
    close_bars,
    dynatrace_selection,
    explicit_credentials,
    progress_bar,
    read_secret,
    registry_client,
    signature_policy_of,
)
from dtbundle.discovery import resolve_all
from dtbundle.errors import EXIT_OPERATIONAL, DtbundleError, IntegrityError, UsageError
from dtbundle.export.plan import load_images_file, requests_from
from dtbundle.export.run import ExportSettings, created_time, require_verified, run_export
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.run import ImportSettings, run_import
from dtbundle.oci.reference import parse_reference
from dtbundle.registry import Credentials

app = typer.Typer(
    name="dtbundle",
    help="Carry container images and their signatures into air-gapped registries, byte for byte.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": os.environ.get("DTBUNDLE_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dtbundle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """Exit codes: 0 success, 1 operational failure, 2 usage error, 3 verification failure."""
    if debug:
        _state["debug"] = True


@app.command()
def resolve(
    references: Annotated[
        list[str],
        typer.Argument(help="Image references, e.g. public.ecr.aws/dynatrace/dynatrace-operator:v1.4.0"),
    ],
    no_referrers: Annotated[
        bool, typer.Option("--no-referrers", help="Do not look for signatures and referrers.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    plain_http: PlainHttp = False,
    ca_cert: CaCert = None,
    insecure_skip_tls_verify: SkipTls = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    auth_registry: AuthRegistry = None,
) -> None:
    """Resolve references to digests; list platforms, cosign signatures and OCI referrers."""
    refs = [parse_reference(r) for r in references]
    explicit = explicit_credentials(username, password_stdin, {r.registry for r in refs}, auth_registry)
    with registry_client(plain_http, ca_cert, insecure_skip_tls_verify, explicit) as client:
        images = resolve_all(client, refs, attachments=not no_referrers)
    if as_json:
        typer.echo(json.dumps({"images": [i.to_json() for i in images]}, indent=2))
    else:
        for image in images:
            typer.echo(render.resolved(image))


@app.command()
def keygen(
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", file_okay=False, help="Where to write dtbundle.key and dtbundle.pub."),
    ],
    algorithm: Annotated[str, typer.Option("--algorithm", help="ed25519 (default) or ecdsa-p256.")] = "ed25519",
    force: Annotated[bool, typer.Option("--force", help="Replace existing key files.")] = False,
) -> None:
    """Create a bundle signing key pair (private key encrypted when DTBUNDLE_KEY_PASSPHRASE is set)."""
    if algorithm not in ALGORITHMS:
        raise UsageError(f"unknown --algorithm {algorithm!r}; choose ed25519 or ecdsa-p256")
    passphrase = os.environ.get(PASSPHRASE_ENV) or None
    keys = generate_keys(output_dir, algorithm, force=force, passphrase=passphrase)
    state = "encrypted with $" + PASSPHRASE_ENV if keys.encrypted else "unencrypted"
    typer.echo(f"private key: {keys.private_path} (mode 0600, {state})")
    typer.echo(f"public key:  {keys.public_path}")
    typer.echo(f"key id:      {keys.key_id} ({keys.algorithm})")


@app.command()
def export(
    references: Annotated[list[str] | None, typer.Argument(help="Image references to carry.")] = None,
    images_file: Annotated[
        Path | None,
        typer.Option(
            "--images-file",
            exists=True,
            dir_okay=False,
            help="TOML file listing images (see README).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Bundle file to write (default: bundle-<UTC time>.tar.zst)."),
    ] = None,
    signing_key: Annotated[
        Path,
        typer.Option("--signing-key", exists=True, dir_okay=False, help="Private key from 'dtbundle keygen'."),
    ] = Path("dtbundle.key"),
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            help="Carry only os/arch[/variant] (repeatable); trims indexes, changing their digest.",
        ),
    ] = None,
    no_referrers: Annotated[
        bool,
        typer.Option("--no-referrers", help="Leave out signatures, attestations, SBOMs and referrers."),
    ] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, help="Parallel downloads.")] = 8,
    compression_level: Annotated[int, typer.Option("--compression-level", min=1, max=19, help="zstd level.")] = 3,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    cosign_key: CosignKeys = None,
    trusted_root: TrustedRootOpt = None,
    certificate_identity: CertIdentity = None,
    certificate_identity_regexp: CertIdentityRe = None,
    certificate_oidc_issuer: CertIssuer = None,
    certificate_oidc_issuer_regexp: CertIssuerRe = None,
    require_signatures: RequireSignatures = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
    plain_http: PlainHttp = False,
    ca_cert: CaCert = None,
    insecure_skip_tls_verify: SkipTls = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    auth_registry: AuthRegistry = None,
    dynatrace_mode: Annotated[
        bool, typer.Option("--dynatrace", help="Dynatrace mode: images from --option and --version.")
    ] = False,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="Dynatrace observability option (repeatable); see 'dtbundle dynatrace options'."),
    ] = None,
    version: Annotated[
        list[str] | None,
        typer.Option("--version", help="Dynatrace COMPONENT=VERSION (repeatable); immutable version tags only."),
    ] = None,
    dynatrace_file: Annotated[
        Path | None,
        typer.Option(
            "--dynatrace-file",
            exists=True,
            dir_okay=False,
            help="Dynatrace selection as TOML (options, versions, registry, [environment]).",
        ),
    ] = None,
    dynatrace_registry: Annotated[
        str | None, typer.Option("--dynatrace-registry", help="ecr (default), dockerhub, or HOST/PATH of a mirror.")
    ] = None,
    with_optional: Annotated[
        bool, typer.Option("--with-optional", help="Dynatrace: add the options' optional components.")
    ] = False,
    environment_url: Annotated[
        str | None,
        typer.Option("--environment-url", help="Dynatrace environment (Classic Full-Stack's built-in registry)."),
    ] = None,
    environment_registry: Annotated[
        str | None,
        typer.Option(
            "--environment-registry", help="Built-in registry HOST[:PORT][/PATH] if not the environment's own."
        ),
    ] = None,
    environment_id: Annotated[
        str | None, typer.Option("--environment-id", help="Environment ID (the registry user), if not in the URL.")
    ] = None,
    paas_token_file: Annotated[
        Path | None,
        typer.Option(
            "--paas-token-file",
            exists=True,
            dir_okay=False,
            help="PaaS token for the built-in registry (default: $DT_PAAS_TOKEN).",
        ),
    ] = None,
) -> None:
    """Write every platform of the images, with everything that refers to them, into one signed bundle."""
    requests = requests_from(references or [], platform or [])
    if images_file:
        requests += load_images_file(images_file, platform or [])
    extensions: dict[str, object] = {}
    classic: dict[str, Credentials] = {}
    if dynatrace_mode or dynatrace_file:
        selection = dynatrace_selection(
            option,
            version,
            dynatrace_file,
            dynatrace_registry,
            with_optional,
            environment_url,
            environment_registry,
            environment_id,
        )
        requests += dynatrace.expand(selection)
        extensions["dynatrace"] = {"options": list(selection.options), "registry": selection.registry}
        if selection.environment is not None:
            token = read_secret(paas_token_file, "DT_PAAS_TOKEN", "Classic Full-Stack needs a PaaS token")
            host = parse_reference(selection.environment.registry + "/x").registry
            source = f"PaaS token ({paas_token_file or '$DT_PAAS_TOKEN'})"
            classic[host] = Credentials(source, selection.environment.environment_id, token)
        if trusted_root is not None and not any((certificate_identity, certificate_identity_regexp)):
            certificate_identity_regexp = dynatrace.OPERATOR_IDENTITY_REGEXP
            certificate_oidc_issuer = certificate_oidc_issuer or dynatrace.GITHUB_ISSUER
    elif option or version or environment_url or with_optional or dynatrace_registry:
        raise UsageError("--option, --version, --environment-url and --dynatrace-registry go with --dynatrace")
    if not requests:
        raise UsageError("no images to export: give references or --images-file")
    key = load_private_key(signing_key)
    path = output or Path(f"bundle-{created_time().strftime('%Y%m%d-%H%M%S')}.tar.zst")
    explicit = explicit_credentials(
        username, password_stdin, {r.ref.registry for r in requests} - set(classic), auth_registry
    )
    explicit.update(classic)
    settings = ExportSettings(
        tuple(requests),
        path,
        key,
        referrers=not no_referrers,
        concurrency=concurrency,
        compression_level=compression_level,
        force=force,
        signature_policy=signature_policy_of(
            cosign_key,
            trusted_root,
            certificate_identity,
            certificate_identity_regexp,
            certificate_oidc_issuer,
            certificate_oidc_issuer_regexp,
            require_signatures,
        ),
        require_signatures=require_signatures,
        extensions=extensions,
    )
    with registry_client(plain_http, ca_cert, insecure_skip_tls_verify, explicit) as client:
        try:
            summary = run_export(client, settings, progress_bar(quiet, "export"))
        finally:
            close_bars()
    typer.echo(json.dumps(summary.to_json(), indent=2) if as_json else render.export_summary(summary))


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    public_key: PublicKeys = None,
    cosign_key: CosignKeys = None,
    trusted_root: TrustedRootOpt = None,
    certificate_identity: CertIdentity = None,
    certificate_identity_regexp: CertIdentityRe = None,
    certificate_oidc_issuer: CertIssuer = None,
    certificate_oidc_issuer_regexp: CertIssuerRe = None,
    require_signatures: RequireSignatures = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Verify the bundle's signature, then every entry against the catalog (exit 3 on any problem);
    with --cosign-key or keyless options, the images' signatures too, offline."""
    if not public_key:
        raise UsageError("verify needs --public-key PUB (the dtbundle.pub of the exporting side)")
    keys = [load_public_key(p) for p in public_key]
    policy = signature_policy_of(
        cosign_key,
        trusted_root,
        certificate_identity,
        certificate_identity_regexp,
        certificate_oidc_issuer,
        certificate_oidc_issuer_regexp,
        require_signatures,
    )
    try:
        result = verify_bundle(bundle, keys, progress_factory=progress_bar(quiet, "verify"), signature_policy=policy)
    finally:
        close_bars()
    signatures = [i.to_json() for i in result.images or []]
    if not as_json:
        typer.echo(render.verify_result(str(bundle), result))
        for line in render.signature_lines(signatures):
            typer.echo(line)
    if require_signatures and result.images is not None:
        require_verified(result.images)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "bundle": str(bundle),
                    "ok": True,
                    "keyId": result.key_id,
                    "files": result.files,
                    "bytes": result.bytes,
                    "images": len(result.catalog.images),
                    "signatureVerification": signatures,
                },
                indent=2,
            )
        )


@app.command()
def inspect(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    public_key: PublicKeys = None,
    as_json: AsJson = False,
) -> None:
    """List images, platforms, signatures and sizes from the catalog alone (fast for any size)."""
    keys = [load_public_key(p) for p in public_key] if public_key else None
    with open_bundle(bundle, keys) as reader:
        catalog = reader.catalog
        key = reader.key_id
    note = f"catalog signature verified (key {key})" if key else "signature NOT checked (run 'dtbundle verify')"
    if as_json:
        typer.echo(
            json.dumps(
                {"bundle": str(bundle), "signatureVerifiedBy": key, "catalog": catalog.to_json()},
                indent=2,
            )
        )
    else:
        typer.echo(render.catalog(catalog, signature_note=note))


@app.command("import")
def import_(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    public_key: PublicKeys = None,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Target HOST[:PORT][/PREFIX]; source paths are kept below it.")
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
        bool, typer.Option("--dry-run", help="Verify and show what would be pushed where; push nothing.")
    ] = False,
    insecure_skip_verify: Annotated[
        bool, typer.Option("--insecure-skip-verify", help="Import without checking the bundle signature (unsafe).")
    ] = False,
    cosign_key: CosignKeys = None,
    trusted_root: TrustedRootOpt = None,
    certificate_identity: CertIdentity = None,
    certificate_identity_regexp: CertIdentityRe = None,
    certificate_oidc_issuer: CertIssuer = None,
    certificate_oidc_issuer_regexp: CertIssuerRe = None,
    emit_dynakube: Annotated[
        Path | None,
        typer.Option("--emit-dynakube", help="After import, write a DynaKube fragment here (Dynatrace mode)."),
    ] = None,
    require_signatures: RequireSignatures = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
    plain_http: PlainHttp = False,
    ca_cert: CaCert = None,
    insecure_skip_tls_verify: SkipTls = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    auth_registry: AuthRegistry = None,
) -> None:
    """Verify a bundle, then push it byte for byte into a registry (or an OCI layout)."""
    if public_key:
        keys: list[PublicKey] | None = [load_public_key(p) for p in public_key]
    elif insecure_skip_verify:
        keys = None
        typer.echo(
            "dtbundle: WARNING: --insecure-skip-verify: the bundle's signature is NOT checked; "
            "its content is trusted blindly",
            err=True,
        )
    else:
        raise IntegrityError("import needs --public-key PUB to verify the bundle (or --insecure-skip-verify)")
    if to_oci is not None and (registry or map_):
        raise UsageError("--to-oci writes a directory: do not combine it with --registry or --map")
    mapper = None if to_oci is not None else RepositoryMapper(registry, map_ or [])
    policy = signature_policy_of(
        cosign_key,
        trusted_root,
        certificate_identity,
        certificate_identity_regexp,
        certificate_oidc_issuer,
        certificate_oidc_issuer_regexp,
        require_signatures,
    )
    settings = ImportSettings(
        bundle,
        keys,
        mapper,
        to_oci,
        overwrite=overwrite,
        dry_run=dry_run,
        signature_policy=policy,
        require_signatures=require_signatures,
    )
    factory = progress_bar(quiet, "import")
    try:
        if mapper is None:
            report = run_import(None, settings, factory)
        else:
            hosts = {r.target.registry for r in mapper.rules} | ({mapper.default.registry} if mapper.default else set())
            explicit = explicit_credentials(username, password_stdin, hosts, auth_registry)
            with registry_client(plain_http, ca_cert, insecure_skip_tls_verify, explicit) as client:
                report = run_import(client, settings, factory)
    finally:
        close_bars()
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else render.import_report(report))
    if emit_dynakube is not None:
        if mapper is None:
            raise UsageError("--emit-dynakube needs a registry target (--registry/--map), not --to-oci")
        _cli_dynatrace.emit(_cli_dynatrace.dynakube_text(bundle, mapper, public_key), emit_dynakube)
        if not as_json:
            typer.echo(f"DynaKube fragment written to {emit_dynakube}")


_cli_dynatrace.register(app)


def main() -> None:
    """Console entry point: run the app, map errors to exit codes."""
    debug = _state["debug"] or "--debug" in sys.argv[1:]
    try:
        # Standalone mode: typer itself reports usage errors (exit 2) and --help.
        app()
    except DtbundleError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"dtbundle: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("dtbundle: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly, trace only on request
        if debug:
            traceback.print_exc()
        typer.echo(
            f"dtbundle: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
            err=True,
        )
        sys.exit(EXIT_OPERATIONAL)
