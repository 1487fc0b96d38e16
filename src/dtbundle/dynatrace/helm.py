"""The Dynatrace Operator's Helm chart: carried beside the Operator image, and installed from the
private registry.

Dynatrace pushes the chart with ``helm push`` into the Operator image's own repository, tagged
with the chart version (the release tag without ``v``): ``public.ecr.aws/dynatrace/dynatrace-operator:1.10.2``
beside the image ``:v1.10.2`` (``hack/build/ci/push-helm-chart.sh``), and signs it with cosign like
the image (``.github/actions/upload-helm/action.yaml``: key and keyless, same workflow identity).
So export requests ``<operator repository>:<chart version>`` and import places it where the
Operator image goes.

After import, :func:`install_files` writes, beside the DynaKube, the Helm values (the Operator image
pinned by digest at its private place, ``customPullSecret``) and a shell script that creates the
namespace, the pull secret, the tokens secret (and the CA ConfigMap of ``trustedCAs``), installs the
chart from the private registry and applies the DynaKube. Secrets are read from environment
variables only; no file names a public registry.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from dtbundle import __version__
from dtbundle.dynatrace.dynakube import Dynakube
from dtbundle.dynatrace.table import COMPONENT_ANNOTATION, VERSION_ANNOTATION
from dtbundle.dynatrace.yamltext import Note, lines
from dtbundle.errors import IntegrityError
from dtbundle.export.plan import ImageRequest
from dtbundle.oci.reference import Reference

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_PROVENANCE = "application/vnd.cncf.helm.chart.provenance.v1.prov"
CHART_COMPONENT = "operator-chart"  # the catalog's component annotation of the chart
RELEASE = "dynatrace-operator"
NAMESPACE = "dynatrace"
CA_CONFIGMAP = "dynatrace-registry-ca"  # trustedCAs: a ConfigMap whose key "certs" holds PEM certificates


def chart_version(operator_version: str) -> str:
    """The chart version of an Operator release: ``v1.10.2`` (or ``v1.10.2-fips``) -> ``1.10.2``."""
    match = re.match(r"v?(\d+\.\d+\.\d+)", operator_version.strip())
    return match.group(1) if match else operator_version.strip().removeprefix("v")


def chart_request(operator: ImageRequest, operator_version: str) -> ImageRequest:
    """The chart beside the Operator image: same repository, the chart version as tag, every platform."""
    version = chart_version(operator_version)
    ref = operator.ref.with_tag(version)
    annotations = {k: v for k, v in operator.annotations.items() if k not in (COMPONENT_ANNOTATION, VERSION_ANNOTATION)}
    annotations.update({COMPONENT_ANNOTATION: CHART_COMPONENT, VERSION_ANNOTATION: version})
    return ImageRequest(str(ref), ref, (), annotations)


# Every value the emitted files interpolate: registry names, tags, digests, versions, Kubernetes
# names. They come from a bundle's catalog (possibly unverified: `dtbundle dynakube` without
# --public-key), so anything else — a space, a quote, a newline — is refused, never written.
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}")
_CHART_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?")


def _safe(value: str, what: str) -> str:
    if not _SAFE.fullmatch(value):
        raise IntegrityError(f"the bundle names an unusable {what} {value[:60]!r}: not written into an install script")
    return value


def _chart_location(dynakube: Dynakube) -> tuple[str, str, bool]:
    """``oci://`` URL of the chart's private repository, its version, and whether the bundle holds it."""
    pinned = dynakube.pinned
    chart = pinned.by_component.get(CHART_COMPONENT)
    operator = pinned.by_component.get("operator")
    if chart is not None:
        url, version, carried = f"oci://{chart.name}", chart.tag or pinned.versions.get(CHART_COMPONENT) or "", True
    else:
        version = chart_version(pinned.versions.get("operator") or (operator.tag if operator else "") or "")
        url, carried = f"oci://{operator.name if operator else 'REGISTRY/dynatrace-operator'}", False
    if not _CHART_VERSION.fullmatch(version):
        raise IntegrityError(f"the bundle names an unusable chart version {version[:60]!r} (expected X.Y.Z)")
    return _safe(url, "chart repository"), version, carried


def values_text(dynakube: Dynakube) -> str:
    """Helm values: the Operator image pinned by digest in the private registry, and the pull secret."""
    operator = dynakube.pinned.by_component.get("operator")
    _, version, _ = _chart_location(dynakube)
    document: dict[str, Any] = {}
    if operator is not None:
        document["imageRef"] = _image_ref(operator, dynakube.operator.digest_field)
    else:
        document[Note("the bundle has no Operator image: set imageRef.repository/tag to your copy")] = None
    document[Note("the Secret the Operator's pods (and, from 1.9, its components) pull with")] = None
    document["customPullSecret"] = dynakube.pull_secret
    head = [
        f"# Generated by dtbundle {__version__}: Helm values for the Dynatrace Operator chart {version},",
        "# images from the private registry, pinned by digest. Install with the commands file beside it.",
    ]
    return "\n".join(head + lines(document)) + "\n"


def _image_ref(operator: Reference, digest_field: bool) -> dict[str, Any]:
    tag = operator.tag or ""
    if digest_field:  # chart 1.10+: imageRef.digest; the obsolete "image" value is not used
        return {"repository": operator.name, "tag": tag, "digest": operator.digest}
    return {
        Note("chart before 1.10 has no imageRef.digest: the tag carries it (<repository>:<tag>@<digest>)"): None,
        "repository": operator.name,
        "tag": f"{tag}@{operator.digest}" if operator.digest else tag,
    }


def commands_text(
    dynakube: Dynakube,
    *,
    dynakube_file: str,
    values_file: str,
    ca_cert: Path | None = None,
    plain_http: bool = False,
) -> str:
    """A POSIX shell script: namespace, pull secret, tokens secret, CA ConfigMap, Helm install, DynaKube.

    ``dynakube_file`` and ``values_file`` are names in the script's own directory."""
    pinned = dynakube.pinned
    url, version, carried = _chart_location(dynakube)
    first = pinned.by_component.get("operator") or next(iter(pinned.by_component.values()), None)
    registry = _safe(first.registry if first else "REGISTRY", "registry")
    pull_secret, name = _safe(dynakube.pull_secret, "pull secret name"), _safe(dynakube.name, "DynaKube name")
    quoted = shlex.quote
    ns = f"-n {NAMESPACE}"
    env = ["REGISTRY_USER", "REGISTRY_PASSWORD"]
    if dynakube.has_dynakube:
        env += ["DT_API_TOKEN", "DT_DATA_INGEST_TOKEN"]
    if dynakube.has_edgeconnect:
        env += ["EDGECONNECT_OAUTH_CLIENT_ID", "EDGECONNECT_OAUTH_CLIENT_SECRET"]
    out = [
        "#!/bin/sh",
        f"# Generated by dtbundle {__version__}: install the Dynatrace Operator {version} and the DynaKube",
        f"# from the private registry {registry}. Every secret is read from the environment:",
        f"#   {' '.join(env)}",
        "set -eu",
        *(f': "${{{name}:?set {name}}}"' for name in env),
        'here=$(cd "$(dirname "$0")" && pwd)',
        "",
        f"kubectl create namespace {NAMESPACE} --dry-run=client -o yaml | kubectl apply -f -",
        # Secrets go through here-documents (printf is a shell builtin, base64 reads a pipe):
        # never on a command line, where other users of the machine could read them.
        f"kubectl {ns} apply -f - <<EOF  # the registry pull secret",
        *_secret_manifest(
            pull_secret,
            "kubernetes.io/dockerconfigjson",
            {
                ".dockerconfigjson": f'\'{{"auths":{{"{registry}":{{"auth":"'
                "$(printf '%s:%s' \"$REGISTRY_USER\" \"$REGISTRY_PASSWORD\" | base64 | tr -d '\\n')"
                "\"}}}'"
            },
        ),
    ]
    if dynakube.has_dynakube:
        out += [
            f"kubectl {ns} apply -f - <<EOF  # the DynaKube's tokens",
            *_secret_manifest(
                name, "Opaque", {"apiToken": '"$DT_API_TOKEN"', "dataIngestToken": '"$DT_DATA_INGEST_TOKEN"'}
            ),
        ]
    if dynakube.has_edgeconnect:
        out += [
            f"kubectl {ns} apply -f - <<EOF  # EdgeConnect's OAuth client",
            *_secret_manifest(
                "edgeconnect-oauth",
                "Opaque",
                {
                    "oauth-client-id": '"$EDGECONNECT_OAUTH_CLIENT_ID"',
                    "oauth-client-secret": '"$EDGECONNECT_OAUTH_CLIENT_SECRET"',
                },
            ),
        ]
    helm_tls = ""
    if ca_cert is not None:
        ca = shlex.quote(str(ca_cert.resolve()))
        helm_tls = f" --ca-file {ca}"
        if dynakube.trusted_cas:
            out.append(
                f"kubectl {ns} create configmap {quoted(_safe(dynakube.trusted_cas, 'ConfigMap name'))} "
                f"--from-file=certs={ca}"
                "  # the DynaKube's trustedCAs"
            )
    if plain_http:
        helm_tls += " --plain-http"
    if not carried:
        out.append(f"# The bundle holds no chart (exported with --no-helm-chart): push chart {version} to {url} first.")
    out += [
        f'printf "%s" "$REGISTRY_PASSWORD" | helm registry login {quoted(registry)}{helm_tls} \\',
        '  --username "$REGISTRY_USER" --password-stdin',
        f"helm install {RELEASE} {quoted(url)} --version {quoted(version)} {ns}{helm_tls} \\",
        f'  -f "$here"/{shlex.quote(values_file)} --atomic',
        f"kubectl {ns} wait pod --for=condition=ready --timeout=300s \\",
        "  -l app.kubernetes.io/name=dynatrace-operator,app.kubernetes.io/component=webhook",
        f'kubectl apply -f "$here"/{shlex.quote(dynakube_file)}',
    ]
    return "\n".join(out) + "\n"


def _secret_manifest(name: str, kind: str, string_data: dict[str, str]) -> list[str]:
    """A Secret for ``kubectl apply -f -``, ended by the ``EOF`` of its here-document."""
    return [
        "apiVersion: v1",
        "kind: Secret",
        "metadata:",
        f"  name: {name}",
        f"type: {kind}",
        "stringData:",
        *(f"  {key}: {value}" for key, value in string_data.items()),
        "EOF",
    ]


def install_files(
    dynakube: Dynakube, output: Path, *, ca_cert: Path | None = None, plain_http: bool = False
) -> dict[Path, str]:
    """The files written beside the DynaKube ``output``: ``<stem>-helm-values.yaml``, ``<stem>-commands.sh``."""
    values = output.with_name(f"{output.stem}-helm-values.yaml")
    commands = output.with_name(f"{output.stem}-commands.sh")
    script = commands_text(
        dynakube, dynakube_file=output.name, values_file=values.name, ca_cert=ca_cert, plain_http=plain_http
    )
    return {values: values_text(dynakube), commands: script}
