"""Dynatrace mode: which images an observability option needs, at which immutable versions,
where they come from, and a DynaKube fragment pointing at the private registry.

The component/option table is data (``data/dynatrace.toml``). This module turns a
selection (options + versions) into image requests for the exporter, talks to the
Deployment API for OneAgent versions, and renders DynaKube YAML. Nothing here logs
or returns a token.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from dtbundle import __version__
from dtbundle.bundle.format import TARGET_REPOSITORY_ANNOTATION as REPOSITORY_ANNOTATION
from dtbundle.bundle.format import UNSIGNED_ANNOTATION, Catalog
from dtbundle.errors import AuthenticationError, OperationalError, RegistryConnectionError, UsageError
from dtbundle.export.plan import ImageRequest, PlatformFilter
from dtbundle.oci.reference import Reference, parse_reference

COMPONENT_ANNOTATION = "dev.dtbundle.dynatrace.component"
VERSION_ANNOTATION = "dev.dtbundle.dynatrace.version"
MUTABLE_TAGS = frozenset({"latest", "stable", "edge", "nightly", "snapshot", "main", "master", "dev"})
OPERATOR_IDENTITY_REGEXP = r"^https://github\.com/Dynatrace/dynatrace-operator/\.github/workflows/.+"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
_TIMEOUT = httpx.Timeout(30.0, connect=15.0)


@dataclass(frozen=True)
class Component:
    name: str
    repository: str
    title: str
    signing: str  # "vendor-key", "keyless" or "none"
    version_example: str
    builtin: bool = False
    target_repository: str | None = None
    platform: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None


@dataclass(frozen=True)
class Option:
    name: str
    title: str
    components: tuple[str, ...]
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class DynatraceCatalog:
    registries: Mapping[str, str]
    components: Mapping[str, Component]
    options: Mapping[str, Option]


@functools.cache  # a data file shipped with the package: parse it once per process
def load_catalog() -> DynatraceCatalog:
    data = tomllib.loads((importlib.resources.files("dtbundle.dynatrace") / "dynatrace.toml").read_text("utf-8"))
    components = {
        name: Component(
            name=name,
            repository=c["repository"],
            title=c["title"],
            signing=c["signing"],
            version_example=c["version_example"],
            builtin=c.get("builtin", False),
            target_repository=c.get("target_repository"),
            platform=c.get("platform"),
            identity_regexp=c.get("identity_regexp"),
            issuer=c.get("issuer"),
        )
        for name, c in data["components"].items()
    }
    options = {
        name: Option(name, o["title"], tuple(o["components"]), tuple(o.get("optional", ())))
        for name, o in data["options"].items()
    }
    return DynatraceCatalog(dict(data["registries"]), components, options)


def check_version(component: Component, version: str) -> str:
    """An immutable version tag, or a clear UsageError saying which tag to use."""
    text = version.strip()
    example = f"--version {component.name}={component.version_example}"
    if not text or text.lower() in MUTABLE_TAGS or not any(ch.isdigit() for ch in text):
        raise UsageError(
            f"{component.name}: {text or 'an empty version'!r} is a mutable tag; Dynatrace publishes immutable "
            f"version tags, give one such as {example}"
        )
    if not re.fullmatch(r"[\w][\w.-]{0,127}", text):
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


@dataclass(frozen=True)
class Selection:
    options: tuple[str, ...]
    versions: Mapping[str, str]
    registry: str = "ecr"  # a key of [registries] or HOST[/PATH]
    with_optional: bool = False
    environment: Environment | None = None


def expand(selection: Selection, catalog: DynatraceCatalog | None = None) -> list[ImageRequest]:
    """The image requests for the selected options (components in a stable order)."""
    catalog = catalog or load_catalog()
    if not selection.options:
        raise UsageError(f"give --option (one of: {', '.join(catalog.options)})")
    names: list[str] = []
    for option_name in selection.options:
        option = catalog.options.get(option_name)
        if option is None:
            raise UsageError(f"unknown --option {option_name!r}; choose from {', '.join(catalog.options)}")
        for name in option.components + (option.optional if selection.with_optional else ()):
            if name not in names:
                names.append(name)
    unused = sorted(set(selection.versions) - set(names))
    if unused:
        raise UsageError(f"--version given for {', '.join(unused)}, which the selected options do not use")
    missing = [n for n in names if n not in selection.versions]
    if missing:
        hints = " ".join(f"--version {n}={catalog.components[n].version_example}" for n in missing)
        raise UsageError(f"versions missing for {', '.join(missing)}: add {hints}")
    prefix = catalog.registries.get(selection.registry, selection.registry).rstrip("/")
    requests = []
    for name in names:
        component = catalog.components[name]
        version = check_version(component, selection.versions[name])
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
            text = f"{prefix}/{component.repository}:{version}"
        platforms = (PlatformFilter.parse(component.platform),) if component.platform else ()
        requests.append(ImageRequest(text, parse_reference(text), platforms, annotations))
    return requests


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


# -- the Deployment API -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentVersions:
    versions: tuple[str, ...]
    latest: str | None


def oneagent_versions(
    environment_url: str, api_token: str, *, transport: httpx.BaseTransport | None = None, verify: bool | str = True
) -> AgentVersions:
    """OneAgent versions (unix, default installer) and the latest, from the Deployment API."""
    base = environment_url.rstrip("/") + "/api/v1/deployment/installer/agent"
    headers = {
        "Authorization": f"Api-Token {api_token}",
        "Accept": "application/json",
        "User-Agent": f"dtbundle/{__version__}",
    }
    with httpx.Client(transport=transport, timeout=_TIMEOUT, verify=verify, trust_env=False) as client:
        listing = _api_get(client, f"{base}/versions/unix/default", headers, environment_url)
        latest = _api_get(client, f"{base}/unix/default/latest/metainfo", headers, environment_url)
    available = listing.get("availableVersions")
    if not isinstance(available, list) or not all(isinstance(v, str) for v in available):
        raise OperationalError(f"{environment_url} answered the versions request without 'availableVersions'")
    newest = latest.get("latestAgentVersion")
    return AgentVersions(tuple(available), newest if isinstance(newest, str) else None)


def _api_get(client: httpx.Client, url: str, headers: dict[str, str], environment_url: str) -> dict[str, Any]:
    try:
        response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise RegistryConnectionError(f"cannot reach {environment_url}: {type(exc).__name__}") from None
    if response.status_code in (401, 403):
        raise AuthenticationError(
            f"{environment_url} refused the API token (HTTP {response.status_code}); it needs the "
            "'PaaS integration - Installer download' (InstallerDownload) scope"
        )
    if response.status_code != 200:
        raise OperationalError(f"{environment_url} answered HTTP {response.status_code} for {urlsplit(url).path}")
    try:
        body = response.json()
    except ValueError:
        raise OperationalError(f"{environment_url} answered with something that is not JSON") from None
    if not isinstance(body, dict):
        raise OperationalError(f"{environment_url} answered with an unexpected JSON document")
    return body


# -- DynaKube -------------------------------------------------------------------------------------------
@dataclass
class PinnedImages:
    """Target references, pinned by digest, per Dynatrace component."""

    by_component: dict[str, Reference] = field(default_factory=dict)
    options: tuple[str, ...] = ()


def pinned_images(catalog: Catalog, targets: Mapping[str, Reference]) -> PinnedImages:
    """``targets``: catalog image digest -> target reference (with tag)."""
    result = PinnedImages(options=tuple(catalog.extensions.get("dynatrace", {}).get("options", ())))
    for image in catalog.images:
        component = image.annotations.get(COMPONENT_ANNOTATION)
        target = targets.get(image.digest)
        if component and target is not None:
            result.by_component[component] = target.with_digest(image.digest)
    return result


def dynakube_yaml(
    pinned: PinnedImages,
    *,
    pull_secret: str = "dynatrace-pull-secret",  # noqa: S107 - a Secret object's name
    api_url: str = "https://ENVIRONMENTID.live.dynatrace.com/api",
) -> str:
    """A DynaKube (v1beta5) fragment with every image pinned by digest, and how to create its
    pull secret and install the Operator from the private registry."""
    c = pinned.by_component
    lines = [
        f"# Generated by dtbundle {__version__}: images pinned by digest in the private registry.",
        "apiVersion: dynatrace.com/v1beta5",
        "kind: DynaKube",
        "metadata:",
        "  name: dynakube",
        "  namespace: dynatrace",
        "spec:",
        f"  apiUrl: {api_url}",
        f"  customPullSecret: {pull_secret}",
    ]
    options = set(pinned.options)
    mode = next(
        (
            m
            for o, m in (
                ("classic-fullstack", "classicFullStack"),
                ("cloud-native-fullstack", "cloudNativeFullStack"),
                ("host-monitoring", "hostMonitoring"),
                ("application-observability", "applicationMonitoring"),
            )
            if o in options
        ),
        None,
    )
    if mode:
        lines += ["  oneAgent:", f"    {mode}:"]
        oneagent = c.get("oneagent-classic") if mode == "classicFullStack" else c.get("oneagent")
        if oneagent is not None and mode != "applicationMonitoring":
            lines.append(f"      image: {oneagent}")
        if "codemodules" in c and mode in ("cloudNativeFullStack", "applicationMonitoring"):
            lines.append(f"      codeModulesImage: {c['codemodules']}")
    if "activegate" in c:
        capabilities = ["routing", "kubernetes-monitoring"] if options - {"application-observability"} else ["routing"]
        lines += [
            "  activeGate:",
            "    capabilities:",
            *(f"      - {cap}" for cap in capabilities),
            f"    image: {c['activegate']}",
        ]
    if "k8s-node-config-collector" in c:
        ref = c["k8s-node-config-collector"]
        lines += [
            "  kspm:",
            "    mappedHostPaths: [/boot, /etc, /proc/sys/kernel, /sys/fs, /sys/kernel/security/apparmor,"
            " /usr/lib/systemd/system, /var/lib]",
            "  templates:",
            "    kspmNodeConfigurationCollector:",
            "      imageRef:",
            f"        repository: {ref.name}",
            f"        tag: {ref.tag}@{ref.digest}",
        ]
    registry = next(iter(c.values())).registry if c else "registry.example.com"
    lines += [
        "---",
        "# Pull secret for the private registry (the password is read from $REGISTRY_PASSWORD, never typed here):",
        f"# kubectl -n dynatrace create secret docker-registry {pull_secret} --docker-server={registry} \\",
        '#   --docker-username="$REGISTRY_USER" --docker-password="$REGISTRY_PASSWORD"',
    ]
    if "operator" in c:
        operator = c["operator"]
        lines += [
            "# Dynatrace Operator from the private registry (Helm):",
            "# helm install dynatrace-operator oci://public.ecr.aws/dynatrace/dynatrace-operator -n dynatrace \\",
            f"#   --set image={operator} --set customPullSecret={pull_secret}",
        ]
    return "\n".join(lines) + "\n"


def component_lines(catalog: DynatraceCatalog | None = None) -> list[str]:
    catalog = catalog or load_catalog()
    lines = ["options:"]
    for option in catalog.options.values():
        extra = f" (optional: {', '.join(option.optional)})" if option.optional else ""
        lines.append(f"  {option.name:<32} {', '.join(option.components)}{extra}")
    lines.append("components:")
    for component in catalog.components.values():
        where = "built-in registry" if component.builtin else "public registries"
        lines.append(f"  {component.name:<26} {component.repository:<36} {component.signing:<10} {where}")
    return lines
