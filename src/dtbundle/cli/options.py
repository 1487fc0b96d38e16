"""Option groups of the CLI: each group's options build one settings object.

A command declares ``@uses(REGISTRY, SIGNATURES, OUTPUT)``: the decorator adds the
groups' options to the command's signature (each in its own ``--help`` panel) and hands
the command one settings object per group (``registry: RegistryAccess`` and so on), so
no command declares or passes them one by one. Reading secrets (password on stdin,
token files) happens here too: it is input parsing, not library logic.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from dtbundle.cli.secrets import prompt_secret, read_file
from dtbundle.errors import UsageError
from dtbundle.limits import REGISTRY as LIMITS

if TYPE_CHECKING:  # the methods import what they build: `--help` loads no HTTP or crypto library
    from dtbundle.bundle.key import PublicKey
    from dtbundle.registry import Credentials, RegistryClient, RegistryConfig
    from dtbundle.trust.policy import Identity, Policy

REGISTRY_PANEL = "Registry access"
SIGNATURES_PANEL = "Image signatures"
OUTPUT_PANEL = "Output"
DYNATRACE_PANEL = "Dynatrace"


@dataclass(frozen=True)
class OptionGroup:
    """Options (as typer parameters) and the function that turns their values into settings."""

    name: str  # the keyword the command receives the settings object as
    options: dict[str, Any]  # parameter name -> Annotated[type, typer.Option(...)]
    build: Callable[..., Any]

    def default(self, name: str) -> Any:
        """Flags default to off, every other option to unset."""
        return False if typing.get_args(self.options[name])[0] is bool else None


F = TypeVar("F", bound=Callable[..., Any])


def uses(*groups: OptionGroup) -> Callable[[F], F]:
    """Add the groups' options to a command and pass it one settings object per group."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in {g.name for g in groups}]
        names = [p.name for p in own] + [name for g in groups for name in g.options]
        # A clash would silently hand one option's value to another: refuse it at import time.
        assert len(names) == len(set(names)), f"{command.__name__}: option names clash: {names}"
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=g.default(name))
            for g in groups
            for name, annotation in g.options.items()
        ]

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            for group in groups:
                values[group.name] = group.build(**{name: values.pop(name) for name in group.options})
            return command(**values)

        wrapper.__signature__ = signature.replace(parameters=own + extra)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def panel_option(kind: Any, *names: str, panel: str, **kwargs: Any) -> Any:
    return Annotated[kind, typer.Option(*names, rich_help_panel=panel, **kwargs)]


# -- registry access ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryAccess:
    """How to reach registries: TLS, and explicit credentials for one registry."""

    plain_http: bool = False
    ca_cert: Path | None = None
    insecure_skip_tls_verify: bool = False
    username: str | None = None
    password_stdin: bool = False
    auth_registry: str | None = None
    proxy: str | None = None
    stall_timeout: float | None = None  # RegistryLimits.stall_timeout
    transfer_deadline: float | None = None  # RegistryLimits.max_transfer_seconds
    # The password once obtained (stdin is read, the terminal asked, once per command, however
    # many clients the command builds): (password, where it came from).
    _secret: list[tuple[str | None, str]] = field(default_factory=list, compare=False, repr=False)

    def config(self) -> RegistryConfig:
        from dtbundle.registry import ProxySettings, RegistryConfig

        return RegistryConfig(
            plain_http=self.plain_http,
            ca_cert=self.ca_cert,
            insecure_skip_tls_verify=self.insecure_skip_tls_verify,
            limits=LIMITS.timed(self.stall_timeout, self.transfer_deadline),
            proxy=ProxySettings.from_environment(os.environ, self.proxy),
        )

    def client(self, registries: set[str], extra: dict[str, Credentials] | None = None) -> RegistryClient:
        """A client for a command that talks to ``registries``; --username binds to exactly one of them."""
        from dtbundle.registry import CredentialResolver, RegistryClient

        explicit = self.explicit_credentials(registries - set(extra or {}))
        explicit.update(extra or {})
        return RegistryClient(self.config(), CredentialResolver(explicit))

    def explicit_credentials(
        self, registries: set[str], prompt: Callable[[str], str | None] | None = None
    ) -> dict[str, Credentials]:
        """--username with its password: from stdin, $DTBUNDLE_PASSWORD, else typed at the terminal
        (``prompt``, default :func:`prompt_secret`: hidden, and only when stdin is a terminal)."""
        if self._secret:
            password, source = self._secret[0]
        else:
            password, source = os.environ.get("DTBUNDLE_PASSWORD"), "--username/DTBUNDLE_PASSWORD"
            if self.password_stdin:
                if sys.stdin.isatty():
                    raise UsageError("--password-stdin given, but standard input is a terminal; pipe the password in")
                password, source = sys.stdin.readline().rstrip("\r\n"), "--username/--password-stdin"
        if self.username is None:
            if self.password_stdin:
                raise UsageError("--password-stdin needs --username (or DTBUNDLE_USERNAME)")
            return {}
        host = self.auth_registry or (next(iter(registries)) if len(registries) == 1 else None)
        if host is None:
            raise UsageError(
                "explicit credentials apply to one registry, and these references name several; "
                "add --auth-registry HOST, or log in with 'docker login' / 'skopeo login'"
            )
        if not password and not self.password_stdin and not self._secret:
            source = "--username/typed password"
            password = (prompt or prompt_secret)(f"Password for {self.username} at {host}: ")
        if not self._secret:
            self._secret.append((password, source))
        if not password:
            if self.password_stdin:
                raise UsageError("--password-stdin read an empty password from standard input")
            raise UsageError(
                "--username needs a password: use --password-stdin or set DTBUNDLE_PASSWORD "
                "(or run at a terminal to type it)"
            )
        from dtbundle.registry import Credentials

        return {host: Credentials(source=source, username=self.username, password=password)}


STALL = f"A transfer moving {LIMITS.max_stall_bytes // 1024} KiB or less in SECONDS stalls: retried, then exit 1"
DEADLINE = "Time limit of one blob or manifest transfer, with its retries and resumes"


def _seconds(name: str, help: str, default: float) -> Any:
    text = f"{help} (default: {default:g})."
    return panel_option(float | None, name, panel=REGISTRY_PANEL, metavar="SECONDS", min=0.001, help=text)


REGISTRY = OptionGroup(
    "registry",
    {
        "plain_http": panel_option(
            bool, "--plain-http", panel=REGISTRY_PANEL, help="Talk plain HTTP to the registries of this command."
        ),
        "ca_cert": panel_option(
            Path | None,
            "--ca-cert",
            panel=REGISTRY_PANEL,
            exists=True,
            dir_okay=False,
            help="PEM file of CA certificates to trust for registry TLS.",
        ),
        "insecure_skip_tls_verify": panel_option(
            bool,
            "--insecure-skip-tls-verify",
            panel=REGISTRY_PANEL,
            help="Do not verify registry TLS certificates (unsafe).",
        ),
        "username": panel_option(
            str | None,
            "--username",
            panel=REGISTRY_PANEL,
            envvar="DTBUNDLE_USERNAME",
            help="Registry user (env DTBUNDLE_USERNAME).",
        ),
        "password_stdin": panel_option(
            bool, "--password-stdin", panel=REGISTRY_PANEL, help="Read the registry password from standard input."
        ),
        "auth_registry": panel_option(
            str | None,
            "--auth-registry",
            panel=REGISTRY_PANEL,
            help="Registry host the explicit credentials are for "
            "(default: the registry of the references, when there is one).",
        ),
        "proxy": panel_option(
            str | None,
            "--proxy",
            panel=REGISTRY_PANEL,
            metavar="URL",
            help="HTTP(S) proxy URL, http://\\[USER:PASSWORD@]HOST:PORT, for every request; overrides "
            'HTTPS_PROXY/HTTP_PROXY/ALL_PROXY (NO_PROXY still applies; "" for none).',
        ),
        "stall_timeout": _seconds("--stall-timeout", STALL, LIMITS.stall_timeout),
        "transfer_deadline": _seconds("--transfer-deadline", DEADLINE, LIMITS.max_transfer_seconds),
    },
    RegistryAccess,
)


# -- image signatures ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignatureOptions:
    """What image signatures must verify with, and whether they are required."""

    cosign_key: tuple[Path, ...] = ()
    trusted_root: Path | None = None
    certificate_identity: str | None = None
    certificate_identity_regexp: str | None = None
    certificate_oidc_issuer: str | None = None
    certificate_oidc_issuer_regexp: str | None = None
    require_signatures: bool = False

    def policy(self, default_identities: tuple[Identity, ...] = (), *, keyless_defaults: bool = False) -> Policy | None:
        """The policy these options ask for, or None when no signature check was asked for.

        ``default_identities`` (Dynatrace mode's keyless signers; a signature verifies if one of
        them made it) apply when a trusted root is given (or ``keyless_defaults``: export's TUF
        options) without an identity of the user's own; ``--certificate-oidc-issuer[-regexp]``
        still overrides their issuer. Keyless without ``--trusted-root`` gives a policy whose
        root is pending (``root_pending``): export fetches it through TUF, verify and import
        take the one the bundle carries.
        """
        from dtbundle.trust.keys import load_verify_key
        from dtbundle.trust.policy import Identity, Policy
        from dtbundle.trust.root import TrustedRoot

        identity, identity_re = self.certificate_identity, self.certificate_identity_regexp
        issuer, issuer_re = self.certificate_oidc_issuer, self.certificate_oidc_issuer_regexp
        defaults: tuple[Identity, ...] = ()
        if (self.trusted_root is not None or keyless_defaults) and default_identities and not (identity or identity_re):
            defaults = tuple(
                Identity(d.subject, d.subject_regexp, issuer or d.issuer, issuer_re or d.issuer_regexp)
                for d in default_identities
            )
        keyless = bool(defaults) or any(x is not None for x in (identity, identity_re, issuer, issuer_re))
        if self.trusted_root is not None and not keyless and not self.cosign_key:
            raise UsageError("--trusted-root needs --certificate-identity[-regexp] (who may sign), or --cosign-key")
        if not self.cosign_key and not keyless:
            if self.require_signatures:
                raise UsageError("--require-signatures needs --cosign-key or keyless options to verify with")
            return None
        for pattern in (identity_re, issuer_re, *(p for d in defaults for p in (d.subject_regexp, d.issuer_regexp))):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise UsageError(f"invalid regular expression {pattern!r}: {exc}") from None
        keys = tuple(load_verify_key(read_file(p, "cosign key"), str(p)) for p in self.cosign_key)
        root = (
            TrustedRoot.from_json(read_file(self.trusted_root, "trusted root"), str(self.trusted_root))
            if (self.trusted_root)
            else None
        )
        identities = defaults or ((Identity(identity, identity_re, issuer, issuer_re),) if keyless else ())
        return Policy(keys, root, identities, root_pending=keyless and root is None)


def _signature_options(cosign_key: list[Path] | None, require_signatures: bool, **keyless: Any) -> SignatureOptions:
    return SignatureOptions(tuple(cosign_key or ()), require_signatures=require_signatures, **keyless)


SIGNATURES = OptionGroup(
    "signatures",
    {
        "cosign_key": panel_option(
            list[Path] | None,
            "--cosign-key",
            panel=SIGNATURES_PANEL,
            exists=True,
            dir_okay=False,
            help="Public key that image signatures must verify with (repeatable), e.g. Dynatrace's cosign.pub.",
        ),
        "trusted_root": panel_option(
            Path | None,
            "--trusted-root",
            panel=SIGNATURES_PANEL,
            exists=True,
            dir_okay=False,
            help="Sigstore trusted_root.json for keyless signatures (Fulcio CAs, Rekor keys); used offline.",
        ),
        "certificate_identity": panel_option(
            str | None, "--certificate-identity", panel=SIGNATURES_PANEL, help="Keyless: exact signer identity."
        ),
        "certificate_identity_regexp": panel_option(
            str | None,
            "--certificate-identity-regexp",
            panel=SIGNATURES_PANEL,
            help="Keyless: signer identity regular expression.",
        ),
        "certificate_oidc_issuer": panel_option(
            str | None, "--certificate-oidc-issuer", panel=SIGNATURES_PANEL, help="Keyless: exact OIDC issuer."
        ),
        "certificate_oidc_issuer_regexp": panel_option(
            str | None,
            "--certificate-oidc-issuer-regexp",
            panel=SIGNATURES_PANEL,
            help="Keyless: OIDC issuer regular expression.",
        ),
        "require_signatures": panel_option(
            bool,
            "--require-signatures",
            panel=SIGNATURES_PANEL,
            help="Fail (exit 3) when an image has no valid signature.",
        ),
    },
    _signature_options,
)


# -- output --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputOptions:
    quiet: bool = False
    as_json: bool = False


OUTPUT = OptionGroup(
    "output",
    {
        "quiet": panel_option(
            bool, "--quiet", "-q", panel=OUTPUT_PANEL, help="Print only errors and the one-line result; no progress."
        ),
        "as_json": panel_option(bool, "--json", panel=OUTPUT_PANEL, help="Print a JSON report instead of text."),
    },
    OutputOptions,
)


# -- bundle keys ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BundleKeys:
    """The trusted bundle public keys (``--public-key``)."""

    paths: tuple[Path, ...] = field(default=())

    def load(self, command: str, alternative: str = "") -> list[PublicKey]:
        """The keys; none given is a usage error (exit 2) naming the option (and ``alternative``)."""
        if not self.paths:
            raise UsageError(f"{command} needs --public-key PUB (the dtbundle.pub of the exporting side){alternative}")
        return self.load_optional() or []

    def load_optional(self) -> list[PublicKey] | None:
        from dtbundle.bundle.key import load_public_key

        return [load_public_key(p) for p in self.paths] if self.paths else None


KEYS = OptionGroup(
    "keys",
    {
        "public_key": Annotated[
            list[Path] | None,
            typer.Option("--public-key", exists=True, dir_okay=False, help="Trusted bundle public key (repeatable)."),
        ]
    },
    lambda public_key: BundleKeys(tuple(public_key or ())),
)
