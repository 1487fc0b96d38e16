"""The Dynatrace Operator's Helm chart crosses the gap beside the Operator image, and the files
emitted after import (DynaKube, Helm values, install commands) name only the private registry."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.reader import open_bundle
from dtbundle.dynatrace.dynakube import Dynakube, PinnedImages
from dtbundle.dynatrace.helm import HELM_CHART, HELM_CONFIG, chart_version, commands_text, values_text
from dtbundle.dynatrace.table import COMPONENT_ANNOTATION, VERSION_ANNOTATION
from dtbundle.errors import IntegrityError
from dtbundle.oci.reference import Reference
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.artifacts import write_pub
from tests.support.cli import run
from tests.support.crds import documents, validate
from tests.support.registries import Exported, make_client

OPERATOR = dtsandbox.NEWER_OPERATOR  # v1.10.2
CHART = "1.10.2"
ACTIVEGATE = dtsandbox.SAMPLE_VERSIONS["activegate"]


def _export(
    public: str, exported: Exported, cosign_pub: Path, bundle: Path, *extra: str, operator: str = OPERATOR
) -> None:
    proc = run(
        "export",
        "--plain-http",
        "--dynatrace",
        "--option",
        "kubernetes-platform-monitoring",
        "--version",
        f"operator={operator}",
        "--version",
        f"activegate={ACTIVEGATE}",
        "--dynatrace-registry",
        public,
        "--platform",
        "linux/amd64",  # the chart has no platform: the filter must leave it alone
        "--cosign-key",
        str(cosign_pub),
        "--require-signatures",
        "--signing-key",
        str(exported.key),
        "-o",
        str(bundle),
        *extra,
    )
    assert proc.returncode == 0, proc.stderr


def _chart_images(bundle: Path) -> list[tuple[str, str, str]]:
    with open_bundle(bundle, None) as reader:
        return [
            (i.source, i.digest, i.annotations[VERSION_ANNOTATION])
            for i in reader.catalog.images
            if i.annotations.get(COMPONENT_ANNOTATION) == "operator-chart"
        ]


def test_chart_version_drops_the_v_and_suffixes() -> None:
    assert chart_version("v1.10.2") == "1.10.2" and chart_version("v1.6.3-fips") == "1.6.3"


def test_the_chart_round_trips_and_the_emitted_files_name_only_the_private_registry(
    public: str,
    exported: Exported,
    signing_key: ec.EllipticCurvePrivateKey,
    plain_registry: RegistryServer,
    tls_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    cosign_pub = write_pub(signing_key, tmp_path / "cosign.pub")
    bundle = tmp_path / "dt.tar.zst"
    _export(public, exported, cosign_pub, bundle)
    ((source, digest, version),) = _chart_images(bundle)
    assert source == f"{public}/dynatrace-operator:{CHART}" and version == CHART
    target = f"{tls_registry.address}/{uuid.uuid4().hex[:8]}"
    dynakube = tmp_path / "out" / "dk.yaml"
    dynakube.parent.mkdir()
    assert tls_registry.ca_cert
    proc = run(
        "import",
        "--ca-cert",
        str(tls_registry.ca_cert),
        "--public-key",
        str(exported.pub),
        "--cosign-key",
        str(cosign_pub),
        "--require-signatures",
        "--registry",
        target,
        "--map",
        f"{public}={target}",
        "--emit-dynakube",
        str(dynakube),
        "--environment-url",
        "https://abc12345.live.dynatrace.com",
        str(bundle),
    )
    assert proc.returncode == 0, proc.stderr
    chart_ref = Reference(tls_registry.address, f"{target.split('/', 1)[1]}/dynatrace-operator", CHART)
    with make_client(tls_registry, user=None) as client:
        manifest = client.get_manifest(chart_ref)
        assert manifest.digest == digest  # byte for byte
        document = json.loads(manifest.data)
        assert document["config"]["mediaType"] == HELM_CONFIG
        assert [layer["mediaType"] for layer in document["layers"]] == [HELM_CHART]
        operator = client.get_manifest(chart_ref.with_tag(OPERATOR))
    values_file, commands_file = tmp_path / "out" / "dk-helm-values.yaml", tmp_path / "out" / "dk-commands.sh"
    assert sorted(p.name for p in dynakube.parent.iterdir()) == ["dk-commands.sh", "dk-helm-values.yaml", "dk.yaml"]
    text, values, commands = dynakube.read_text(), values_file.read_text(), commands_file.read_text()
    for emitted in (text, values, commands):
        for public_name in ("public.ecr.aws", "docker.io", plain_registry.address, "oci://public"):
            assert public_name not in emitted
    # Helm values: the Operator image pinned by digest in the private registry, current keys only.
    parsed = yaml.safe_load(values)
    assert parsed == {
        "imageRef": {"repository": chart_ref.name, "tag": OPERATOR, "digest": operator.digest},
        "customPullSecret": "dynatrace-pull-secret",
    }
    # Commands: namespace, secrets from the environment, the CA ConfigMap, helm from the private registry.
    assert commands.startswith("#!/bin/sh\n") and commands_file.stat().st_mode & 0o111
    assert "kubectl create namespace dynatrace" in commands
    assert "name: dynatrace-pull-secret\ntype: kubernetes.io/dockerconfigjson" in commands
    assert 'apiToken: "$DT_API_TOKEN"' in commands and 'dataIngestToken: "$DT_DATA_INGEST_TOKEN"' in commands
    _run_with_fake_tools(commands_file, tmp_path)
    assert f"create configmap dynatrace-registry-ca --from-file=certs={tls_registry.ca_cert.resolve()}" in commands
    assert re.search(
        rf"helm install dynatrace-operator oci://{re.escape(chart_ref.name)} --version {CHART} -n dynatrace"
        rf" --ca-file \S+ \\\n  -f \"\$here\"/dk-helm-values.yaml",
        commands,
    )
    assert 'kubectl apply -f "$here"/dk.yaml' in commands
    assert not re.search(r"(password|token)=[^\"$]", commands, re.IGNORECASE)  # no literal secret
    # The DynaKube trusts the CA and still validates against the Operator's CRD.
    (document_,) = documents(text)
    assert document_["spec"]["trustedCAs"] == "dynatrace-registry-ca"
    validate(document_, "dynakube-crd-v1.10.2.yaml")
    # dtbundle dynakube -o writes the same three files from the bundle alone.
    again = tmp_path / "again" / "dk.yaml"
    again.parent.mkdir()
    proc = run(
        "dynakube",
        "--registry",
        target,
        "--map",
        f"{public}={target}",
        "--environment-url",
        "https://abc12345.live.dynatrace.com",
        "--ca-cert",
        str(tls_registry.ca_cert),
        "-o",
        str(again),
        str(bundle),
    )
    assert proc.returncode == 0, proc.stderr
    assert again.read_text() == text
    assert (again.parent / "dk-helm-values.yaml").read_text() == values
    assert "--plain-http" not in commands
    assert (again.parent / "dk-commands.sh").read_text() == commands


def test_no_helm_chart_leaves_it_out_and_without_ca_no_trusted_cas(
    public: str,
    exported: Exported,
    signing_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
) -> None:
    cosign_pub = write_pub(signing_key, tmp_path / "cosign.pub")
    bundle = tmp_path / "dt.tar.zst"
    _export(public, exported, cosign_pub, bundle, "--no-helm-chart")
    assert _chart_images(bundle) == []
    out = tmp_path / "dynakube.yaml"
    proc = run("dynakube", "--registry", "registry.example.com/dt", "-o", str(out), str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert "trustedCAs" not in out.read_text()
    commands = (tmp_path / "dynakube-commands.sh").read_text()
    assert "configmap" not in commands and "--ca-file" not in commands
    assert "exported with --no-helm-chart" in commands
    assert re.search(r"oci://registry\.example\.com/dt/\S+/dynatrace-operator --version 1\.10\.2 ", commands)


def test_operator_1_4_values_pin_the_digest_in_the_tag(
    public: str, exported: Exported, signing_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    cosign_pub = write_pub(signing_key, tmp_path / "cosign.pub")
    bundle = tmp_path / "old.tar.zst"
    _export(public, exported, cosign_pub, bundle, operator="v1.4.0")
    ((_, _, version),) = _chart_images(bundle)
    assert version == "1.4.0"
    out = tmp_path / "dynakube.yaml"
    assert run("dynakube", "--registry", "registry.example.com/dt", "-o", str(out), str(bundle)).returncode == 0
    values = yaml.safe_load((tmp_path / "dynakube-helm-values.yaml").read_text())
    ref = values["imageRef"]
    assert set(ref) == {"repository", "tag"} and re.fullmatch(r"v1\.4\.0@sha256:[0-9a-f]{64}", ref["tag"])
    assert "--version 1.4.0" in (tmp_path / "dynakube-commands.sh").read_text()


def _run_with_fake_tools(script: Path, tmp_path: Path) -> None:
    """Run the commands file with recording kubectl/helm: every secret reaches them on stdin, none as an
    argument (another user of the machine can read /proc/*/cmdline)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("kubectl", "helm"):
        (fake / tool).write_text('#!/bin/sh\necho "$0 $*" >> "$LOG.argv"\ncat >> "$LOG.stdin"\n')
        (fake / tool).chmod(0o755)
    secrets = {"REGISTRY_USER": "alice", "REGISTRY_PASSWORD": "pa$$ word'\"", "DT_API_TOKEN": "dt0c01.API",
               "DT_DATA_INGEST_TOKEN": "dt0c01.INGEST"}  # fmt: skip
    log = tmp_path / "calls"
    env = {**os.environ, **secrets, "PATH": f"{fake}:{os.environ['PATH']}", "LOG": str(log)}
    subprocess.run(["sh", str(script)], env=env, check=True, timeout=30, capture_output=True, stdin=subprocess.DEVNULL)
    argv, stdin = Path(f"{log}.argv").read_text(), Path(f"{log}.stdin").read_text()
    for name in ("REGISTRY_PASSWORD", "DT_API_TOKEN", "DT_DATA_INGEST_TOKEN"):
        assert secrets[name] not in argv, name
    assert 'apiToken: "dt0c01.API"' in stdin and 'dataIngestToken: "dt0c01.INGEST"' in stdin
    auth = re.search(r'"auth":"([^"]+)"', stdin)
    assert auth and base64.b64decode(auth.group(1)).decode() == "alice:" + secrets["REGISTRY_PASSWORD"]
    assert "helm install dynatrace-operator oci://" in argv


@pytest.mark.parametrize(
    ("component", "hostile"),
    [("operator-chart", "1.10.2; touch /tmp/pwned"), ("operator-chart", "1.10.2\nid #"), ("operator-chart", "$(id)")],
)
def test_a_hostile_version_in_the_catalog_never_reaches_the_script(component: str, hostile: str) -> None:
    """The chart version comes from the catalog (unverified without --public-key): refused, not written."""
    chart = Reference("reg.example.com", "m/dynatrace-operator", None, "sha256:" + "a" * 64)  # no tag
    dynakube = Dynakube("", pinned=PinnedImages(by_component={component: chart}, versions={component: hostile}))
    with pytest.raises(IntegrityError, match="unusable chart version"):
        commands_text(dynakube, dynakube_file="dk.yaml", values_file="v.yaml")
    with pytest.raises(IntegrityError, match="unusable chart version"):
        values_text(dynakube)
