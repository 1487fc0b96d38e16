"""DynaKube output: the images of a Dynatrace-mode bundle, pinned by digest at their place in the
private registry, as the DynaKube (and EdgeConnect) the bundle's Operator version accepts (the
Helm values and install commands beside it are :mod:`dtbundle.dynatrace.helm`'s).

The Operator version comes from the catalog (the ``operator`` image's version annotation); what
that version accepts is in :mod:`dtbundle.dynatrace.operator_api`. Options decide which features
are switched on; the images in the bundle fill the image fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtbundle import __version__
from dtbundle.bundle.format import Catalog
from dtbundle.bundle.key import PublicKey
from dtbundle.bundle.reader import open_bundle
from dtbundle.dynatrace.operator_api import (
    EDGECONNECT_API_VERSION,
    NEWEST_API,
    SUPPORTED,
    OperatorApi,
    api_url,
    check_options,
    operator_api,
)
from dtbundle.dynatrace.table import COMPONENT_ANNOTATION, VERSION_ANNOTATION
from dtbundle.dynatrace.yamltext import Note, lines
from dtbundle.errors import UsageError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.plan import place
from dtbundle.oci.reference import Reference

PLACEHOLDER_API_URL = "https://ENVIRONMENTID.live.dynatrace.com/api"  # the webhook refuses it: must be edited
ONEAGENT_MODES = (  # option -> spec.oneAgent mode, image component, code modules; first present wins
    ("classic-fullstack", "classicFullStack", "oneagent-classic", False),
    ("cloud-native-fullstack", "cloudNativeFullStack", "oneagent", True),
    ("host-monitoring", "hostMonitoring", "oneagent", False),
    ("application-observability", "applicationMonitoring", None, True),
)
KSPM_HOST_PATHS = [
    "/boot",
    "/etc",
    "/proc/sys/kernel",
    "/sys/fs",
    "/sys/kernel/security/apparmor",
    "/usr/lib/systemd/system",
    "/var/lib",
]


@dataclass
class PinnedImages:
    """Target references, pinned by digest, per Dynatrace component; the catalog's options,
    component versions and environment URL."""

    by_component: dict[str, Reference] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    environment_url: str | None = None


@dataclass(frozen=True)
class DynakubeWarning:
    line: int  # 1-based line of the output to edit
    message: str


@dataclass(frozen=True)
class Dynakube:
    """The YAML text, and what the user must still edit in it (printed by the CLI); what it was
    rendered from (for the Helm values and install commands)."""

    text: str
    warnings: tuple[DynakubeWarning, ...] = ()
    operator: OperatorApi = NEWEST_API
    pinned: PinnedImages = field(default_factory=PinnedImages)
    pull_secret: str = "dynatrace-pull-secret"  # noqa: S105 - a Secret object's name
    trusted_cas: str | None = None  # spec.trustedCAs: the ConfigMap of the private registry's CA
    name: str = "dynakube"  # the DynaKube's name, also its tokens Secret's
    has_dynakube: bool = True
    has_edgeconnect: bool = False


def pinned_images(catalog: Catalog, targets: Mapping[str, Reference]) -> PinnedImages:
    """``targets``: catalog image digest -> target reference (with tag)."""
    extension = catalog.extensions.get("dynatrace", {})
    result = PinnedImages(options=tuple(extension.get("options", ())), environment_url=_environment_url(extension))
    for image in catalog.images:
        component = image.annotations.get(COMPONENT_ANNOTATION)
        target = targets.get(image.digest)
        if component and target is not None:
            result.by_component[component] = target.with_digest(image.digest)
            result.versions[component] = image.annotations.get(VERSION_ANNOTATION) or image.tag or ""
    return result


def _environment_url(extension: Mapping[str, Any]) -> str | None:
    """The environment export recorded (``environment`` as a URL or ``{"url": …}``), if any."""
    env = extension.get("environment", extension.get("environmentUrl"))
    if isinstance(env, Mapping):
        env = env.get("url")
    return env if isinstance(env, str) and env else None


def render_dynakube(
    pinned: PinnedImages,
    *,
    environment_url: str | None = None,
    pull_secret: str = "dynatrace-pull-secret",  # noqa: S107 - a Secret object's name
    trusted_cas: str | None = None,
) -> Dynakube:
    """The DynaKube for the bundle's Operator version (and an EdgeConnect for the edgeconnect
    option), every image pinned by digest.

    ``environment_url`` (else the catalog's) gives ``apiUrl``; without either it is a placeholder
    and the result carries a warning naming its line. ``trusted_cas``: the ConfigMap (key ``certs``)
    of CA certificates the Operator's components trust, e.g. the private registry's CA."""
    c = pinned.by_component
    operator_version = pinned.versions.get("operator") or (c["operator"].tag if "operator" in c else None)
    api = operator_api(operator_version) if operator_version else NEWEST_API
    options = set(pinned.options)
    check_options(api, options)
    url = environment_url or pinned.environment_url
    out = [f"# Generated by dtbundle {__version__}: images pinned by digest in the private registry."]
    if operator_version:
        out.append(f"# For Dynatrace Operator {api.version} (from the bundle), which serves {api.api_version}.")
    else:
        out.append(
            f"# The bundle has no Dynatrace Operator image: written for the newest Operator dtbundle knows "
            f"({SUPPORTED}: {api.api_version}); check it against the Operator you run."
        )
    warnings: list[DynakubeWarning] = []
    if options - {"edgeconnect"}:
        spec = _spec(pinned, api, api_url(url, api) if url else PLACEHOLDER_API_URL, pull_secret)
        if trusted_cas:
            spec["trustedCAs"] = trusted_cas
        document = {
            "apiVersion": api.api_version,
            "kind": "DynaKube",
            "metadata": {"name": "dynakube", "namespace": "dynatrace"},
            "spec": spec,
        }
        out += lines(document)
        if not url:
            warnings.append(
                DynakubeWarning(
                    _line_of(out, "  apiUrl: "),
                    "apiUrl is a placeholder the Operator refuses: set it to https://<environment-id>.live.dynatrace.com/api"
                    " (Managed: https://<domain>/e/<environment-id>/api), or pass --environment-url",
                )
            )
    if "edgeconnect" in options:
        out += ["---", *lines(_edgeconnect(pinned, api, url, pull_secret))]
        if not _saas_id(url):
            warnings.append(
                DynakubeWarning(
                    _line_of(out, "  apiServer: "),
                    "EdgeConnect apiServer and oauth.resource are placeholders: set them for your environment "
                    "(<environment-id>.apps.dynatrace.com, urn:dtenvironment:<environment-id>)",
                )
            )
    return Dynakube(
        "\n".join(out) + "\n",
        tuple(warnings),
        api,
        pinned,
        pull_secret,
        trusted_cas,
        has_dynakube=bool(options - {"edgeconnect"}),
        has_edgeconnect="edgeconnect" in options,
    )


def _spec(pinned: PinnedImages, api: OperatorApi, url: str, pull_secret: str) -> dict[str, Any]:
    c, options = pinned.by_component, set(pinned.options)
    spec: dict[str, Any] = {"apiUrl": url, "customPullSecret": pull_secret}
    for option, mode, image, code_modules in ONEAGENT_MODES:
        if option in options:
            fields = {}
            if image and image in c:
                fields["image"] = str(c[image])
            if code_modules and "codemodules" in c:
                fields["codeModulesImage"] = str(c["codemodules"])
            spec["oneAgent"] = {mode: fields}
            break
    if "activegate" in c:
        platform = options - {"application-observability", "edgeconnect"}
        spec["activeGate"] = {
            "capabilities": ["routing", "kubernetes-monitoring"] if platform else ["routing"],
            "image": str(c["activegate"]),
        }
    if "kspm" in options:
        spec["kspm"] = {"mappedHostPaths": KSPM_HOST_PATHS} if api.kspm_host_paths else {}
    if "log-monitoring" in options:
        spec["logMonitoring"] = {}
    if "telemetry-ingest" in options:
        spec["telemetryIngest"] = {}
    extensions = _extensions(api, options)
    if extensions is not None:
        spec["extensions"] = extensions
    templates: dict[str, Any] = {}
    for component, template in (
        ("k8s-node-config-collector", "kspmNodeConfigurationCollector"),
        ("logmodule", "logMonitoring"),
        ("otel-collector", api.otel_template),
        ("eec", "extensionExecutionController"),
        ("database-datasource-executor", "sqlExtensionExecutor" if api.structured_extensions else ""),
    ):
        if component in c and template:
            templates[template] = {"imageRef": _image_ref(c[component], api, template, pinned.versions.get(component))}
    if api.structured_extensions and "extensions" in options and api.otel_template not in templates:
        templates[Note("extensions.prometheus needs templates.otelCollector.imageRef: export otel-collector")] = None
    if templates:
        spec["templates"] = templates
    return spec


def _extensions(api: OperatorApi, options: set[str]) -> dict[str, Any] | None:
    if not options & {"extensions", "database-extensions"}:
        return None
    if not api.structured_extensions:
        return {}  # v1beta3-v1beta5: an empty object switches the extension controller on
    extensions: dict[str, Any] = {}
    if "extensions" in options:
        extensions["prometheus"] = {}
    if "database-extensions" in options:
        extensions[Note("one entry per SQL extension executor; id: up to 8 of a-z, 0-9, -")] = None
        extensions["databases"] = [{"id": "sql"}]
    return extensions


def _image_ref(ref: Reference, api: OperatorApi, template: str, version: str | None) -> dict[str, Any]:
    """``imageRef`` pinned as this Operator allows: ``digest`` (1.10+), else ``tag@digest``, else
    (tag copied into a label) the plain tag and a comment naming the digest the bundle holds."""
    tag = ref.tag or version or "latest"
    if api.digest_field:
        return {"repository": ref.name, "tag": tag, "digest": ref.digest}
    if api.tag_in_label(template):
        return {
            Note(
                f"Operator {api.version} copies this tag into a Kubernetes label, so it cannot pin the digest: "
                f"the bundle holds {ref.digest} (Operator 1.10+ pins it with imageRef.digest)"
            ): None,
            "repository": ref.name,
            "tag": tag,
        }
    return {"repository": ref.name, "tag": f"{tag}@{ref.digest}"}


def _saas_id(url: str | None) -> str | None:
    host = (url or "").split("://", 1)[-1].split("/", 1)[0]
    for suffix in (".live.dynatrace.com", ".apps.dynatrace.com"):
        if host.endswith(suffix) and "/e/" not in (url or ""):
            return host.removesuffix(suffix)
    return None


def _edgeconnect(pinned: PinnedImages, api: OperatorApi, url: str | None, pull_secret: str) -> dict[str, Any]:
    env_id = _saas_id(url) or "ENVIRONMENTID"
    spec: dict[str, Any] = {
        "apiServer": f"{env_id}.apps.dynatrace.com",
        "oauth": {
            Note("a Secret with oauth-client-id and oauth-client-secret of the EdgeConnect's OAuth client"): None,
            "clientSecret": "edgeconnect-oauth",
            "endpoint": "https://sso.dynatrace.com/sso/oauth2/token",
            "resource": f"urn:dtenvironment:{env_id}",
        },
        "customPullSecret": pull_secret,
    }
    if "edgeconnect" in pinned.by_component:
        spec["imageRef"] = _image_ref(pinned.by_component["edgeconnect"], api, "edgeconnect", None)
    return {
        "apiVersion": EDGECONNECT_API_VERSION,
        "kind": "EdgeConnect",
        "metadata": {"name": "edgeconnect", "namespace": "dynatrace"},
        "spec": spec,
    }


def _line_of(out: list[str], prefix: str) -> int:
    return max(i for i, line in enumerate(out) if line.startswith(prefix)) + 1


def dynakube_for_bundle(
    bundle: Path,
    mapper: RepositoryMapper,
    keys: list[PublicKey] | None,
    *,
    environment_url: str | None = None,
    trusted_cas: str | None = None,
) -> Dynakube:
    """The DynaKube for a bundle's Dynatrace images, where ``mapper`` puts them."""
    with open_bundle(bundle, keys) as opened:
        catalog = opened.catalog
    if "dynatrace" not in catalog.extensions:
        raise UsageError(f"{bundle} was not exported in Dynatrace mode (export --dynatrace)")
    pinned = pinned_images(catalog, place(catalog, mapper).image_targets())
    return render_dynakube(pinned, environment_url=environment_url, trusted_cas=trusted_cas)
