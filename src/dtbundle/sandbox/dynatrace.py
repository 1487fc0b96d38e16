"""Dynatrace-like sample content: the public components (multi-arch; signed with the sandbox key
where the table says the vendor signs with a key), a Classic Full-Stack built-in registry image,
and a Deployment API stub, all on 127.0.0.1."""

from __future__ import annotations

import gzip
import io
import json
import secrets
import tarfile

from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle import oci
from dtbundle.dynatrace.helm import HELM_CHART, HELM_CONFIG, chart_version
from dtbundle.dynatrace.table import KEY_KINDS, load_table
from dtbundle.oci import Platform
from dtbundle.oci.reference import Reference
from dtbundle.registry import RegistryClient
from dtbundle.sandbox import images
from dtbundle.sandbox._http import JsonHandler, LocalServer

ENVIRONMENT_ID = "abc12345"
# The components of the demo's cloud-native-fullstack + kspm export (and oneagent-classic's version).
SAMPLE_VERSIONS = {
    "operator": "v1.4.0",
    "oneagent": "1.305.57.20250115-123456",
    "codemodules": "1.305.57.20250115-123456",
    "activegate": "1.305.57.20250115-123456",
    "k8s-node-config-collector": "1.3.0",
}
# The other public components, so that every option exports from the sample registry.
MORE_VERSIONS = {
    "logmodule": "1.309.59.20250319-140247",
    "otel-collector": "0.54.0",
    "eec": "1.327.30.20251107-111521",
    "database-datasource-executor": "1.327.41.20251114-153023",
    "edgeconnect": "1.724.3",
}
# The sample Operator index is also tagged with a release new enough for every option (database-extensions: 1.8+).
NEWER_OPERATOR = "v1.10.2"
ALL_VERSIONS = {**SAMPLE_VERSIONS, **MORE_VERSIONS, "operator": NEWER_OPERATOR}
# More tags, so that --latest and 'dynatrace versions' have something to choose from and to ignore:
# an older release of OneAgent/code modules/ActiveGate (the Deployment API's older version), a newer
# ActiveGate release no OneAgent matches yet, older Operators; and tags that are never versions.
OLDER_RELEASE = "1.303.62.20250101-090000"
NEWER_ACTIVEGATE = "1.307.10.20250301-101500"
OLDER_OPERATORS = ["v1.9.0", "v1.4.0-rc.1"]
EXTRA_TAGS = {
    "operator": [*OLDER_OPERATORS, f"{NEWER_OPERATOR}-fips", "latest"],
    "oneagent": [OLDER_RELEASE, "latest", f"{SAMPLE_VERSIONS['oneagent']}-amd64"],
    "codemodules": [OLDER_RELEASE, f"{SAMPLE_VERSIONS['codemodules']}-python"],
    "activegate": [OLDER_RELEASE, NEWER_ACTIVEGATE, "latest"],
    "otel-collector": ["latest", "0.54.0-amd64", "sha256-" + "0" * 64 + ".sig"],
}
AVAILABLE_ONEAGENT = ["1.303.62.20250101-090000", "1.305.57.20250115-123456"]
_PLATFORMS = [Platform("linux", "amd64"), Platform("linux", "arm64"), Platform("linux", "s390x")]


def seed_public(
    client: RegistryClient, registry: str, key: ec.EllipticCurvePrivateKey, prefix: str = "dynatrace"
) -> dict[str, Reference]:
    """Push every public component (3 platforms each) below ``prefix``, under the table's repository
    names. Index and platforms are signed with ``key`` where the table says Dynatrace signs with a key
    (vendor-key; the Operator's release key); keyless-only (otel-collector: no Fulcio here) and
    ``unconfirmed`` components stay unsigned."""
    table = load_table()
    base = images.make_layer("dt-base", 40 * 1024)
    pushed = {}
    for name, version in {**SAMPLE_VERSIONS, **MORE_VERSIONS}.items():
        component = table.components[name]
        index = images.build_index(
            [images.build_image(p, [base, images.make_layer(f"{name}-{p}", 24 * 1024)], label=name) for p in _PLATFORMS]
        )
        ref = Reference(registry, f"{prefix}/{component.repository}", version)
        images.push(client, ref, index)
        if name == "operator":
            images.push(client, ref.with_tag(NEWER_OPERATOR), index)
            for release in (version, NEWER_OPERATOR):  # the Helm chart beside the image, signed like it
                chart = build_chart(chart_version(release))
                images.push(client, ref.with_tag(chart_version(release)), chart)
                signature = images.cosign_signature(ref.name, chart.digest, key)
                images.push(client, ref.with_tag(oci.referrers_tag(chart.digest) + ".sig"), signature)
        for tag in EXTRA_TAGS.get(name, ()):
            images.push(client, ref.with_tag(tag), index.children[0] if tag.endswith("-amd64") else index)
        if component.signing in KEY_KINDS:
            for target in [index, *index.children]:
                signature = images.cosign_signature(ref.name, target.digest, key)
                images.push(client, ref.with_tag(oci.referrers_tag(target.digest) + ".sig"), signature)
        pushed[name] = ref
    return pushed


def build_chart(version: str, name: str = "dynatrace-operator") -> images.BuiltManifest:
    """A minimal valid Helm chart (Chart.yaml, values.yaml, templates/) as ``helm push`` stores it:
    an OCI manifest with the Helm config (Chart.yaml as JSON) and the chart .tgz as its one layer."""
    files = {
        "Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: {version}\n"
        "description: dtbundle sandbox stand-in for the Dynatrace Operator chart\ntype: application\n",
        "values.yaml": 'image: ""\nimageRef:\n  repository: ""\n  tag: ""\n  digest: ""\ncustomPullSecret: ""\n',
        "templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  image: {{ .Values.imageRef.repository | quote }}\n",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    layer = images.Blob(HELM_CHART, gzip.compress(raw.getvalue(), mtime=0))
    meta = {"apiVersion": "v2", "appVersion": version, "name": name, "type": "application", "version": version}
    config = images.Blob(HELM_CONFIG, json.dumps(meta, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": config.descriptor.to_json(),
        "layers": [layer.descriptor.to_json()],
        "annotations": {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version},
    }
    return images.BuiltManifest(oci.OCI_MANIFEST, json.dumps(manifest, indent=2).encode(), [config, layer])


def seed_builtin(client: RegistryClient, registry: str, version: str = SAMPLE_VERSIONS["oneagent"]) -> Reference:
    """The built-in registry's single-arch ``linux/oneagent:<major>.<minor>.<revision>-raw`` (Docker media types)."""
    major, minor, revision = version.split(".")[:3]
    ref = Reference(registry, "linux/oneagent", f"{major}.{minor}.{revision}-raw")
    built = images.build_image(
        Platform("linux", "amd64"),
        [images.make_layer("classic-oneagent", 48 * 1024)],
        docker=True,
        label="oneagent-classic",
    )
    images.push(client, ref, built)
    return ref


class DeploymentApi:
    """``/api/v1/deployment/installer/agent/...`` answering only to ``Api-Token <token>``.

    ``faults``: HTTP statuses to answer first, one request each (e.g. ``[503]``), for retry tests.
    """

    def __init__(self, token: str, versions: list[str] | None = None, faults: list[int] | None = None) -> None:
        self.token = token
        self.versions = list(versions or AVAILABLE_ONEAGENT)
        self.faults = list(faults or [])
        self.requests: list[str] = []
        api = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                api.requests.append(self.path)
                if api.faults:
                    status = api.faults.pop(0)
                    return self.reply(status, {"error": {"code": status, "message": "injected fault"}})
                expected = f"Api-Token {api.token}"
                if not secrets.compare_digest(self.headers.get("Authorization", ""), expected):
                    return self.reply(401, {"error": {"code": 401, "message": "Token Authentication failed"}})
                if self.path == "/api/v1/deployment/installer/agent/versions/unix/default":
                    return self.reply(200, {"availableVersions": api.versions})
                if self.path == "/api/v1/deployment/installer/agent/unix/default/latest/metainfo":
                    return self.reply(200, {"latestAgentVersion": api.versions[-1]})
                self.reply(404, {"error": {"code": 404, "message": "not found"}})

        self._server = LocalServer(Handler)
        self.url = self._server.url

    def stop(self) -> None:
        self._server.stop()
