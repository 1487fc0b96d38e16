"""What to export in Dynatrace mode: a selection (options, versions, registry, environment) and
what it turns into for the exporter.

:func:`dynatrace_export` is the entry point: it merges a ``--dynatrace-file`` with the
command-line options, expands the options into image requests at immutable versions,
builds the credentials of the environment's built-in registry (Classic Full-Stack) from a
PaaS token it asks for only when the selection needs one, and names the signers that keyless
verification defaults to, taken from the component table. Nothing here logs or returns a
token except inside :class:`~dtbundle.registry.Credentials`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dtbundle.bundle.format import TARGET_REPOSITORY_ANNOTATION as REPOSITORY_ANNOTATION
from dtbundle.bundle.format import UNSIGNED_ANNOTATION
from dtbundle.dynatrace.helm import chart_request
from dtbundle.dynatrace.table import (
    COMPONENT_ANNOTATION,
    VERSION_ANNOTATION,
    Component,
    DynatraceTable,
    load_table,
    minor_version,
    patch_version,
)
from dtbundle.errors import UsageError
from dtbundle.export.plan import ImageRequest
from dtbundle.oci import Platform
from dtbundle.oci.reference import is_valid_tag, parse_reference
from dtbundle.registry import Credentials, RegistryClient
from dtbundle.trust.policy import Identity

MUTABLE_TAGS = frozenset({"latest", "stable", "edge", "nightly", "snapshot", "main", "master", "dev"})


def check_version(component: Component, version: str) -> str:
    """An immutable version tag, or a clear UsageError saying which tag to use."""
    text = version.strip()
    example = f"--version {component.name}={component.version_example}"
    if not text or text.lower() in MUTABLE_TAGS or not any(ch.isdigit() for ch in text):
        raise UsageError(
            f"{component.name}: {text or 'an empty version'!r} is a mutable tag; Dynatrace publishes immutable "
            f"version tags, give one such as {example}"
        )
    if not is_valid_tag(text):
        raise UsageError(f"{component.name}: {text!r} is not a valid image tag; e.g. {example}")
    return text


def classic_tag(version: str) -> str:
    """OneAgent version ``1.305.57.20250115-123456`` -> built-in registry tag ``1.305.57-raw``."""
    parts = version.strip().split(".")
    if len(parts) < 3 or not all(p.isdigit() for p in parts[:3]):
        raise UsageError(
            f"Classic Full-Stack needs a OneAgent version like 1.305.57.20250115-123456 (or 1.305.57), not {version!r}"
        )
    return f"{parts[0]}.{parts[1]}.{parts[2]}-raw"


@dataclass(frozen=True)
class Environment:
    """A Dynatrace environment: SaaS ``https://<id>.live.dynatrace.com`` or Managed
    ``https://<domain>/e/<id>``; its built-in registry is the same host and path."""

    url: str
    environment_id: str
    registry: str  # host[:port]/path prefix of the built-in registry

    @classmethod
    def parse(cls, url: str, registry_override: str | None = None, environment_id: str | None = None) -> Environment:
        parts = urlsplit(url.strip().rstrip("/"))
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise UsageError(
                f"--environment-url {url!r}: give the environment URL, e.g. https://abc12345.live.dynatrace.com"
            )
        path = parts.path.strip("/")
        managed = re.fullmatch(r"e/([\w-]+)", path)
        env_id = environment_id or (
            managed.group(1) if managed else parts.hostname.split(".")[0] if parts.hostname else ""
        )
        registry = registry_override or (f"{parts.netloc}/{path}" if path else parts.netloc)
        return cls(f"{parts.scheme}://{parts.netloc}" + (f"/{path}" if path else ""), env_id, registry.rstrip("/"))

    @property
    def registry_host(self) -> str:
        """The built-in registry's host[:port] as image references name it (credentials are per host)."""
        return parse_reference(f"{self.registry}/x").registry


@dataclass(frozen=True)
class Selection:
    """Which options, at which component versions, from which public registry (and environment)."""

    options: tuple[str, ...]
    versions: Mapping[str, str]
    registry: str = "ecr"  # a key of [registries] or HOST[/PATH]
    with_optional: bool = False
    environment: Environment | None = None
    platforms: tuple[Platform, ...] = ()  # --platform: carry only these (empty: every platform)
    helm_chart: bool = False  # carry the Operator's Helm chart beside its image (the CLI: unless --no-helm-chart)

    @property
    def needs_paas_token(self) -> bool:
        """Whether an image comes from the environment's built-in registry (user = environment ID,
        password = a PaaS token)."""
        return self.environment is not None


def component_names(selection: Selection, table: DynatraceTable | None = None) -> list[str]:
    """The components of the selected options, in a stable order, each with a version given."""
    table = table or load_table()
    if not selection.options:
        raise UsageError(f"give --option (one of: {', '.join(table.options)})")
    names: list[str] = []
    for option_name in selection.options:
        option = table.options.get(option_name)
        if option is None:
            raise UsageError(f"unknown --option {option_name!r}; choose from {', '.join(table.options)}")
        for name in option.components + (option.optional if selection.with_optional else ()):
            if name not in names:
                names.append(name)
    unused = sorted(set(selection.versions) - set(names))
    if unused:
        raise UsageError(f"--version given for {', '.join(unused)}, which the selected options do not use")
    missing = [n for n in names if n not in selection.versions]
    if missing:
        hints = " ".join(f"--version {n}={table.components[n].version_example}" for n in missing)
        raise UsageError(f"versions missing for {', '.join(missing)}: add {hints}")
    return names


def expand(selection: Selection, table: DynatraceTable | None = None) -> list[ImageRequest]:
    """The image requests for the selected options (components in a stable order)."""
    table = table or load_table()
    prefix = table.registries.get(selection.registry, selection.registry).rstrip("/")
    names = component_names(selection, table)
    versions = {name: check_version(table.components[name], selection.versions[name]) for name in names}
    _check_operator(selection, versions.get("operator"), table)
    requests = []
    for name in names:
        component, version = table.components[name], versions[name]
        annotations = {COMPONENT_ANNOTATION: name, VERSION_ANNOTATION: version}
        if component.builtin:
            if selection.environment is None:
                raise UsageError(
                    f"{component.title} comes from the environment's built-in registry: add --environment-url"
                )
            text = f"{selection.environment.registry}/{component.repository}:{classic_tag(version)}"
            if component.target_repository:
                annotations[REPOSITORY_ANNOTATION] = component.target_repository
            annotations[UNSIGNED_ANNOTATION] = "Classic Full-Stack images from the built-in registry are not signed"
        else:
            if selection.registry in table.registries and selection.registry not in component.registries:
                confirmed = ", ".join(component.registries)
                raise UsageError(
                    f"{component.title} ({name}): its repository name on {prefix} is not confirmed by any source; "
                    f"use --dynatrace-registry {confirmed} or HOST/PATH of a mirror that holds "
                    f"{component.repository}"
                )
            text = f"{prefix}/{component.repository}:{version}"
            unsigned = _unsigned_release(component, version)
            if unsigned:
                annotations[UNSIGNED_ANNOTATION] = unsigned
        requests.append(ImageRequest(text, parse_reference(text), _platforms(selection, component), annotations))
        if name == "operator" and selection.helm_chart:
            requests.append(chart_request(requests[-1], version))
    return requests


def _check_operator(selection: Selection, version: str | None, table: DynatraceTable) -> None:
    """An option that needs a newer Operator than ``--version operator=…`` is a usage error."""
    if version is None:
        return
    given = minor_version(version)
    if given is None:
        raise UsageError(f"operator: {version!r} is not an Operator release tag such as v1.10.2")
    for name in selection.options:
        minimum = table.operator_minimum(table.options[name], selection.with_optional)
        if given < (minor_version(minimum) or (0, 0)):
            raise UsageError(
                f"--option {name} needs Dynatrace Operator {minimum} or newer, not {version}: "
                f"give --version operator=v{minimum}.0 or later"
            )


def _platforms(selection: Selection, component: Component) -> tuple[Platform, ...]:
    """``--platform`` filters, combined with the one platform a component exists for."""
    if component.platform is None:
        return selection.platforms
    fixed = Platform.parse(component.platform)
    if selection.platforms and not any(f.matches(fixed) for f in selection.platforms):
        wanted = ", ".join(map(str, selection.platforms))
        raise UsageError(
            f"{component.title} exists only for {fixed}, which --platform {wanted} excludes: add --platform {fixed}"
        )
    return (fixed,)


def _unsigned_release(component: Component, version: str) -> str | None:
    """Why this release of a component carries no signature (released before its project signed), or None."""
    first, given = patch_version(component.signed_from_version or ""), patch_version(version)
    if first is None or given is None or given >= first:
        return None
    return f"{component.title} releases before {component.signed_from_version} are not signed"


def keyless_identities(names: Iterable[str], table: DynatraceTable | None = None) -> tuple[Identity, ...]:
    """Who signs the keylessly signed components among ``names`` (the table's ``identity_regexp``
    and ``issuer``), each distinct signer once, in table order: the defaults for keyless
    verification (a signature verifies if one of them made it). Empty when none is signed keylessly."""
    table = table or load_table()
    wanted = set(names)
    signers = dict.fromkeys(
        Identity(subject_regexp=c.identity_regexp, issuer=c.issuer)
        for c in table.components.values()
        if c.name in wanted and c.keyless
    )
    return tuple(signers)


def load_selection_file(path: Path) -> tuple[Selection, Mapping[str, Any]]:
    """A TOML file: options, versions, registry, with_optional, [environment]; see the README."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"Dynatrace file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"Dynatrace file {path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"options", "versions", "registry", "with_optional", "environment"}
    if unknown:
        raise UsageError(f"Dynatrace file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    options, versions = document.get("options", []), document.get("versions", {})
    if not isinstance(options, list) or not isinstance(versions, dict):
        raise UsageError(f"Dynatrace file {path}: 'options' is a list, [versions] a table")
    env = document.get("environment", {})
    if not isinstance(env, dict):
        raise UsageError(f"Dynatrace file {path}: [environment] must be a table")
    selection = Selection(
        tuple(map(str, options)),
        {str(k): str(v) for k, v in versions.items()},
        str(document.get("registry", "ecr")),
        bool(document.get("with_optional", False)),
    )
    return selection, env


def parse_versions(items: Iterable[str]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for item in items:
        name, sep, version = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--version {item!r}: use COMPONENT=VERSION, e.g. oneagent=1.305.57.20250115-123456")
        versions[name.strip()] = version.strip()
    return versions


def merge_selection(
    options: Sequence[str] = (),
    versions: Sequence[str] = (),
    *,
    file: Path | None = None,
    registry: str | None = None,
    with_optional: bool = False,
    environment_url: str | None = None,
    environment_registry: str | None = None,
    environment_id: str | None = None,
    platforms: Sequence[str] = (),
    table: DynatraceTable | None = None,
) -> Selection:
    """Options, versions (``COMPONENT=VERSION``) and environment from ``file`` (a ``--dynatrace-file``),
    overridden by the command line."""
    base, env = load_selection_file(file) if file else (Selection((), {}), {})
    merged_options = tuple(dict.fromkeys([*base.options, *options]))
    merged_versions = {**base.versions, **parse_versions(versions)}
    url = environment_url or env.get("url")
    table = table or load_table()
    needs_environment = any(
        table.components[c].builtin for o in merged_options if o in table.options for c in table.options[o].components
    )
    environment = None
    if needs_environment:
        if not url:
            raise UsageError(
                "Classic Full-Stack pulls OneAgent from the environment's built-in registry: "
                "add --environment-url https://<environment-id>.live.dynatrace.com"
            )
        environment = Environment.parse(
            str(url), environment_registry or env.get("registry"), environment_id or env.get("id")
        )
    return Selection(
        merged_options,
        merged_versions,
        registry or base.registry,
        with_optional or base.with_optional,
        environment,
        tuple(Platform.parse(p) for p in platforms),
    )


@dataclass(frozen=True)
class DynatraceExport:
    """What a Dynatrace selection adds to an export."""

    selection: Selection
    requests: tuple[ImageRequest, ...]
    credentials: Mapping[str, Credentials]  # host -> the built-in registry's PaaS-token login
    extensions: Mapping[str, Any]  # the catalog's "dynatrace" extension: {"options": [...], "registry": ...}
    keyless_identities: tuple[Identity, ...]  # default signers for keyless verification, from the table


def dynatrace_export(
    selection: Selection,
    *,
    paas_token: Callable[[], str] | None = None,
    credentials_source: str = "PaaS token",
    table: DynatraceTable | None = None,
) -> DynatraceExport:
    """The images, credentials, catalog extension and keyless default of a Dynatrace selection
    (see :func:`merge_selection`).

    ``paas_token`` is called once, after the selection has been checked, and only when it
    needs the built-in registry (:attr:`Selection.needs_paas_token`); ``credentials_source``
    says where the token came from in error messages (never the token itself).
    """
    table = table or load_table()
    requests = tuple(expand(selection, table))
    credentials: dict[str, Credentials] = {}
    if selection.environment is not None:
        if paas_token is None:
            raise UsageError("Classic Full-Stack needs a PaaS token for the environment's built-in registry")
        credentials[selection.environment.registry_host] = Credentials(
            credentials_source, selection.environment.environment_id, paas_token()
        )
    return DynatraceExport(
        selection,
        requests,
        credentials,
        {"options": list(selection.options), "registry": selection.registry},
        keyless_identities(
            (r.annotations[COMPONENT_ANNOTATION] for r in requests if UNSIGNED_ANNOTATION not in r.annotations), table
        ),
    )


def latest_selection(
    selection: Selection, client: RegistryClient, table: DynatraceTable | None = None
) -> tuple[Selection, dict[str, str]]:
    """``--latest``: ``selection`` completed with the newest matching versions (see
    :mod:`dtbundle.dynatrace.versions`) of every component it needs that ``--version`` does not
    pin, listed through ``client``; and those chosen versions (for the catalog and the user)."""
    from dtbundle.dynatrace.versions import latest_versions  # that module imports this one

    table = table or load_table()
    names: list[str] = []
    for option_name in selection.options:
        option = table.options.get(option_name)
        if option is None:
            raise UsageError(f"unknown --option {option_name!r}; choose from {', '.join(table.options)}")
        names += [n for n in option.components + (option.optional if selection.with_optional else ()) if n not in names]
    wanted = [n for n in names if n not in selection.versions]
    pinned = {n: v for n, v in selection.versions.items() if n in names}
    chosen = latest_versions(client, selection.registry, wanted, pinned, table) if wanted else {}
    return replace(selection, versions={**selection.versions, **chosen}), chosen
