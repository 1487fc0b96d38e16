"""Options and helpers shared by the CLI's commands: registry access, progress, keys,
image-signature policy, Dynatrace selection and secrets. Turning options into settings
objects happens here; the commands in :mod:`dtbundle.cli` call the library with them."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from dtbundle import dynatrace
from dtbundle.errors import UsageError
from dtbundle.registry import CredentialResolver, Credentials, RegistryClient, RegistryConfig
from dtbundle.trust import cosign

# -- registry options ------------------------------------------------------------
PlainHttp = Annotated[bool, typer.Option("--plain-http", help="Talk plain HTTP to the registries of this command.")]
CaCert = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert",
        exists=True,
        dir_okay=False,
        help="PEM file of CA certificates to trust for registry TLS.",
    ),
]
SkipTls = Annotated[
    bool,
    typer.Option("--insecure-skip-tls-verify", help="Do not verify registry TLS certificates (unsafe)."),
]
Username = Annotated[
    str | None,
    typer.Option("--username", envvar="DTBUNDLE_USERNAME", help="Registry user (env DTBUNDLE_USERNAME)."),
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the registry password from standard input.")
]
AuthRegistry = Annotated[
    str | None,
    typer.Option(
        "--auth-registry",
        help="Registry host the explicit credentials are for "
        "(default: the registry of the references, when there is one).",
    ),
]


def explicit_credentials(
    username: str | None, password_stdin: bool, registries: set[str], auth_registry: str | None
) -> dict[str, Credentials]:
    """Bind --username/--password-stdin (or DTBUNDLE_PASSWORD) to exactly one registry."""
    password = os.environ.get("DTBUNDLE_PASSWORD")
    if password_stdin:
        if sys.stdin.isatty():
            raise UsageError("--password-stdin given, but standard input is a terminal; pipe the password in")
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if password_stdin:
            raise UsageError("--password-stdin needs --username (or DTBUNDLE_USERNAME)")
        return {}
    if not password:
        raise UsageError("--username needs a password: use --password-stdin or set DTBUNDLE_PASSWORD")
    host = auth_registry or (next(iter(registries)) if len(registries) == 1 else None)
    if host is None:
        raise UsageError(
            "explicit credentials apply to one registry, and these references name several; "
            "add --auth-registry HOST, or log in with 'docker login' / 'skopeo login'"
        )
    source = "--username/--password-stdin" if password_stdin else "--username/DTBUNDLE_PASSWORD"
    return {host: Credentials(source=source, username=username, password=password)}


def registry_client(
    plain_http: bool, ca_cert: Path | None, skip_tls: bool, explicit: dict[str, Credentials]
) -> RegistryClient:
    config = RegistryConfig(plain_http=plain_http, ca_cert=ca_cert, insecure_skip_tls_verify=skip_tls)
    return RegistryClient(config, CredentialResolver(explicit))


# -- verbs ------------------------------------------------------------------------------------
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print a JSON report instead of text.")]
PublicKeys = Annotated[
    list[Path] | None,
    typer.Option("--public-key", exists=True, dir_okay=False, help="Trusted bundle public key (repeatable)."),
]


CosignKeys = Annotated[
    list[Path] | None,
    typer.Option(
        "--cosign-key",
        exists=True,
        dir_okay=False,
        help="Public key that image signatures must verify with (repeatable), e.g. Dynatrace's cosign.pub.",
    ),
]
TrustedRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--trusted-root",
        exists=True,
        dir_okay=False,
        help="Sigstore trusted_root.json for keyless signatures (Fulcio CAs, Rekor keys); used offline.",
    ),
]
CertIdentity = Annotated[str | None, typer.Option("--certificate-identity", help="Keyless: exact signer identity.")]
CertIdentityRe = Annotated[
    str | None, typer.Option("--certificate-identity-regexp", help="Keyless: signer identity regular expression.")
]
CertIssuer = Annotated[str | None, typer.Option("--certificate-oidc-issuer", help="Keyless: exact OIDC issuer.")]
CertIssuerRe = Annotated[
    str | None, typer.Option("--certificate-oidc-issuer-regexp", help="Keyless: OIDC issuer regular expression.")
]
RequireSignatures = Annotated[
    bool, typer.Option("--require-signatures", help="Fail (exit 3) when an image has no valid signature.")
]


def signature_policy_of(
    keys: list[Path] | None,
    trusted_root: Path | None,
    identity: str | None,
    identity_re: str | None,
    issuer: str | None,
    issuer_re: str | None,
    require: bool,
) -> cosign.Policy | None:
    """The image-signature policy of the options, or None when no signature check was asked for."""
    keyless = any(x is not None for x in (identity, identity_re, issuer, issuer_re))
    if keyless and trusted_root is None:
        raise UsageError("keyless verification (--certificate-identity…) needs --trusted-root FILE")
    if trusted_root is not None and not keyless and not keys:
        raise UsageError("--trusted-root needs --certificate-identity[-regexp] (who may sign), or --cosign-key")
    if not keys and not keyless:
        if require:
            raise UsageError("--require-signatures needs --cosign-key or keyless options to verify with")
        return None
    for pattern in (identity_re, issuer_re):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UsageError(f"invalid regular expression {pattern!r}: {exc}") from None
    loaded = tuple(cosign.load_verify_key(p.read_bytes(), str(p)) for p in keys or [])
    root = cosign.TrustedRoot.from_json(trusted_root.read_bytes(), str(trusted_root)) if trusted_root else None
    identities = (cosign.Identity(identity, identity_re, issuer, issuer_re),) if keyless else ()
    return cosign.Policy(loaded, root, identities)


def progress_bar(quiet: bool, description: str) -> Callable[[int], Callable[[int], None]] | None:
    """A tqdm byte counter on stderr, only on a terminal and without --quiet."""
    if quiet or not sys.stderr.isatty():
        return None

    def factory(total: int) -> Callable[[int], None]:
        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=description,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )
        open_bars.append(bar)
        return lambda n: bar.update(n) and None

    return factory


open_bars: list[tqdm] = []


def close_bars() -> None:
    while open_bars:
        open_bars.pop().close()


def dynatrace_selection(
    option: list[str] | None,
    version: list[str] | None,
    file: Path | None,
    registry: str | None,
    with_optional: bool,
    environment_url: str | None,
    environment_registry: str | None,
    environment_id: str | None,
) -> dynatrace.Selection:
    """Options, versions and environment from --dynatrace-file, overridden by the command line."""
    base, env = dynatrace.load_selection_file(file) if file else (dynatrace.Selection((), {}), {})
    options = tuple(dict.fromkeys([*base.options, *(option or [])]))
    versions = {**base.versions, **dynatrace.parse_versions(version or [])}
    url = environment_url or env.get("url")
    table = dynatrace.load_catalog()
    needs_environment = any(
        table.components[c].builtin for o in options if o in table.options for c in table.options[o].components
    )
    environment = None
    if needs_environment:
        if not url:
            raise UsageError(
                "Classic Full-Stack pulls OneAgent from the environment's built-in registry: "
                "add --environment-url https://<environment-id>.live.dynatrace.com"
            )
        environment = dynatrace.Environment.parse(
            str(url), environment_registry or env.get("registry"), environment_id or env.get("id")
        )
    return dynatrace.Selection(
        options, versions, registry or base.registry, with_optional or base.with_optional, environment
    )


def read_secret(path: Path | None, variable: str, what: str) -> str:
    """A token from a file or an environment variable; never from the command line."""
    if path is not None:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    else:
        value = os.environ.get(variable, "").strip()
    if not value:
        raise UsageError(f"{what}: set ${variable} or give a token file")
    return value
