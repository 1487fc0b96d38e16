"""Dynatrace mode against real registries: option expansion, versions, the Deployment API,
Classic Full-Stack from a basic-auth built-in registry, and DynaKube output that resolves."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.reader import open_bundle
from dtbundle.dynatrace.deployment_api import oneagent_versions
from dtbundle.dynatrace.operator_api import operator_api
from dtbundle.dynatrace.selection import (
    Environment,
    Selection,
    classic_tag,
    dynatrace_export,
    expand,
    load_selection_file,
    merge_selection,
)
from dtbundle.dynatrace.table import COMPONENT_ANNOTATION, VERSION_ANNOTATION, load_table
from dtbundle.errors import DynatraceApiError, DynatraceAuthError, LimitExceededError, UsageError
from dtbundle.limits import RegistryLimits
from dtbundle.oci.reference import Reference, parse_reference
from dtbundle.registry import RegistryConfig
from dtbundle.registry.service import ServiceSession
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.sandbox.registry_server import RegistryServer, start_registry
from dtbundle.trust.policy import Identity
from tests.support.artifacts import write_pub
from tests.support.cli import assert_clean_error, run
from tests.support.registries import Exported, make_client

PAAS_TOKEN = "dt0c01.PAASTOKEN.do-not-print-me"
API_TOKEN = "dt0c01.APITOKEN.do-not-print-me-either"
V = dtsandbox.SAMPLE_VERSIONS


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A built-in-like registry: basic auth, user = environment ID, password = PaaS token."""
    server = start_registry(
        tmp_path_factory.mktemp("builtin"), auth="basic", users={dtsandbox.ENVIRONMENT_ID: PAAS_TOKEN}
    )
    with make_client(server, user=dtsandbox.ENVIRONMENT_ID, password=PAAS_TOKEN) as client:
        dtsandbox.seed_builtin(client, server.address)
    yield server
    server.stop()


OPTIONS = {
    "cloud-native-fullstack": {"operator", "oneagent", "codemodules", "activegate"},
    "application-observability": {"operator", "codemodules"},
    "host-monitoring": {"operator", "oneagent", "activegate"},
    "kubernetes-platform-monitoring": {"operator", "activegate"},
    "classic-fullstack": {"operator", "oneagent-classic", "activegate"},
    "kspm": {"operator", "activegate", "k8s-node-config-collector"},
}


@pytest.mark.parametrize(("option", "components"), OPTIONS.items())
def test_every_option_expands_to_its_components(option: str, components: set[str]) -> None:
    versions = {c: V.get(c, V["oneagent"]) for c in components}
    env = Environment.parse("https://abc12345.live.dynatrace.com")
    requests = expand(Selection((option,), versions, environment=env))
    got = {r.annotations[COMPONENT_ANNOTATION]: r for r in requests}
    assert set(got) == components
    for name, request in got.items():
        if name == "oneagent-classic":
            assert str(request.ref) == "abc12345.live.dynatrace.com/linux/oneagent:1.305.57-raw"
            assert [str(p) for p in request.platforms] == ["linux/amd64"]
        else:
            assert str(request.ref) == f"public.ecr.aws/dynatrace/dynatrace-{name}:{versions[name]}"


def test_optional_components_and_docker_hub() -> None:
    selection = Selection(
        ("application-observability",),
        {"operator": "v1.4.0", "codemodules": "1.2.3", "activegate": "1.2.3"},
        "dockerhub",
        True,
    )
    refs = {str(r.ref) for r in expand(selection)}
    assert "docker.io/dynatrace/dynatrace-activegate:1.2.3" in refs


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("1.305.57.20250115-123456", "1.305.57-raw"),
        ("1.305.57", "1.305.57-raw"),
        ("1.99.123.20991231-235959", "1.99.123-raw"),
    ],
)
def test_classic_version_mapping(version: str, tag: str) -> None:
    assert classic_tag(version) == tag


@pytest.mark.parametrize("bad", ["latest", "LATEST", "stable", "", "edge"])
def test_mutable_tags_are_refused(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        expand(
            Selection(("kubernetes-platform-monitoring",), {"operator": bad, "activegate": "1.305.57.20250115-123456"})
        )
    assert "immutable" in str(info.value) and "--version operator=v1.4.0" in str(info.value)


def test_missing_and_unused_versions_are_named() -> None:
    with pytest.raises(UsageError) as info:
        expand(Selection(("host-monitoring",), {"operator": "v1.4.0"}))
    assert "--version oneagent=" in str(info.value) and "--version activegate=" in str(info.value)
    with pytest.raises(UsageError) as info:
        expand(
            Selection(
                ("kubernetes-platform-monitoring",), {"operator": "v1.4.0", "activegate": "1.2.3", "oneagent": "1.2.3"}
            )
        )
    assert "oneagent" in str(info.value)
    with pytest.raises(UsageError):
        classic_tag("1.305")


def test_environment_urls() -> None:
    saas = Environment.parse("https://abc12345.live.dynatrace.com/")
    assert (saas.environment_id, saas.registry) == ("abc12345", "abc12345.live.dynatrace.com")
    managed = Environment.parse("https://dt.corp.example/e/0e1f2a3b-aaaa")
    assert (managed.environment_id, managed.registry) == ("0e1f2a3b-aaaa", "dt.corp.example/e/0e1f2a3b-aaaa")


def test_selection_file(tmp_path: Path) -> None:
    spec = tmp_path / "dynatrace.toml"
    spec.write_text(
        'options = ["kspm"]\nregistry = "dockerhub"\n[versions]\noperator = "v1.4.0"\n'
        'activegate = "1.305.57.20250115-123456"\nk8s-node-config-collector = "1.3.0"\n'
    )
    selection, _ = load_selection_file(spec)
    refs = sorted(str(r.ref) for r in expand(selection))
    assert refs == [
        "docker.io/dynatrace/dynatrace-activegate:1.305.57.20250115-123456",
        "docker.io/dynatrace/dynatrace-k8s-node-config-collector:1.3.0",
        "docker.io/dynatrace/dynatrace-operator:v1.4.0",
    ]


def test_versions_from_the_deployment_api(public: str) -> None:
    api = dtsandbox.DeploymentApi(API_TOKEN)
    try:
        where = ("--plain-http", "--dynatrace-registry", public)
        proc = run("dynatrace", "versions", *where, "--environment-url", api.url, env={"DT_API_TOKEN": API_TOKEN})
        assert proc.returncode == 0, proc.stderr
        assert f"  oneagent={V['oneagent']}\n" in proc.stdout  # the registry's matching set comes first
        assert "1.305.57.20250115-123456  (latest)" in proc.stdout and "1.303.62.20250101-090000" in proc.stdout
        assert "--version oneagent=1.305.57.20250115-123456" in proc.stdout and "1.305.57-raw" in proc.stdout
        wrong = run("dynatrace", "versions", "--environment-url", api.url, env={"DT_API_TOKEN": "wrong-token-123"})
        assert "refused the API token" in assert_clean_error(wrong, 1)
        assert "wrong-token-123" not in wrong.stdout + wrong.stderr
        assert "DT_API_TOKEN" in assert_clean_error(run("dynatrace", "versions", "--environment-url", api.url), 2)
        assert API_TOKEN not in proc.stdout + proc.stderr
    finally:
        api.stop()


VERSIONS_PATH = "/api/v1/deployment/installer/agent/versions/unix/default"


def test_the_deployment_api_is_retried_after_a_503() -> None:
    api = dtsandbox.DeploymentApi(API_TOKEN, faults=[503])
    delays: list[float] = []
    try:
        with ServiceSession(RegistryConfig(), sleep=delays.append) as session:
            found = oneagent_versions(api.url, API_TOKEN, session)
    finally:
        api.stop()
    assert found.versions == tuple(dtsandbox.AVAILABLE_ONEAGENT) and found.latest == dtsandbox.AVAILABLE_ONEAGENT[-1]
    assert api.requests.count(VERSIONS_PATH) == 2 and len(delays) == 1  # one backoff, then the answer


def test_the_deployment_api_gives_up_after_the_bounded_attempts() -> None:
    api = dtsandbox.DeploymentApi(API_TOKEN, faults=[503] * 5)
    config = RegistryConfig(limits=RegistryLimits(max_attempts=3))
    try:
        with ServiceSession(config, sleep=lambda _: None) as session, pytest.raises(DynatraceApiError) as info:
            oneagent_versions(api.url, API_TOKEN, session)
    finally:
        api.stop()
    assert api.requests == [VERSIONS_PATH] * 3
    assert info.value.exit_code == 1 and "answered HTTP 503" in str(info.value)


def test_an_oversized_deployment_api_answer_is_refused() -> None:
    api = dtsandbox.DeploymentApi(API_TOKEN, versions=[f"1.{i}.0.20250101-000000" for i in range(200, 260)])
    config = RegistryConfig(limits=RegistryLimits(max_json_bytes=512))
    try:
        with ServiceSession(config) as session, pytest.raises(LimitExceededError) as info:
            oneagent_versions(api.url, API_TOKEN, session)
    finally:
        api.stop()
    message = str(info.value)
    assert info.value.exit_code == 3  # an IntegrityError: content larger than a configured bound
    assert "Deployment API answer" in message and "limit of 512" in message and API_TOKEN not in message


def _mock_session(handler: httpx.MockTransport) -> ServiceSession:
    return ServiceSession(
        RegistryConfig(limits=RegistryLimits(max_json_bytes=512)), transport=handler, sleep=lambda _: None
    )


def test_deployment_api_faults_from_an_injected_transport() -> None:
    seen: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path.endswith("/metainfo"):
            return httpx.Response(200, json={"latestAgentVersion": "1.2.3.20250101-000000"})
        return httpx.Response(200, json={"availableVersions": ["1.2.3.20250101-000000"]})

    with _mock_session(httpx.MockTransport(flaky)) as session:
        found = oneagent_versions("https://abc12345.live.dynatrace.com/", API_TOKEN, session)
    assert found.latest == "1.2.3.20250101-000000" and len(seen) == 3  # a connection error is retried
    assert {r.headers["Authorization"] for r in seen} == {f"Api-Token {API_TOKEN}"}  # never registry credentials
    assert str(seen[0].url) == "https://abc12345.live.dynatrace.com" + VERSIONS_PATH

    answers = {
        "forbidden": (httpx.Response(403, json={"error": {"code": 403}}), DynatraceAuthError, "InstallerDownload"),
        "not JSON": (httpx.Response(200, text="<html>login</html>"), DynatraceApiError, "not a JSON object"),
        "a list": (httpx.Response(200, json=["1.2.3"]), DynatraceApiError, "not a JSON object"),
        "wrong shape": (httpx.Response(200, json={"versions": []}), DynatraceApiError, "'availableVersions'"),
        "not found": (httpx.Response(404, json={}), DynatraceApiError, f"HTTP 404 for {VERSIONS_PATH}"),
    }
    for name, (response, error, text) in answers.items():
        with _mock_session(httpx.MockTransport(lambda _, r=response: r)) as session, pytest.raises(error) as info:
            oneagent_versions("https://abc12345.live.dynatrace.com", API_TOKEN, session)
        assert text in str(info.value) and info.value.exit_code == 1, name
        assert API_TOKEN not in str(info.value), name


def test_keyless_default_identity_comes_from_the_table() -> None:
    table = load_table()
    operator = table.components["operator"]
    versions = ["operator=v1.4.0", "activegate=1.2.3"]
    selection = merge_selection(["kubernetes-platform-monitoring"], versions)
    chosen = dynatrace_export(selection)
    assert operator.signing == "release-key+keyless" and operator.identity_regexp and operator.issuer
    assert chosen.keyless_identities == (Identity(subject_regexp=operator.identity_regexp, issuer=operator.issuer),)
    # The table is the only source: change it and the default follows.
    signer = replace(operator, identity_regexp=r"^https://example\.com/.+", issuer="https://issuer.example")
    other = replace(table, components={**table.components, "operator": signer})
    assert dynatrace_export(selection, table=other).keyless_identities == (
        Identity(subject_regexp=r"^https://example\.com/.+", issuer="https://issuer.example"),
    )
    unsigned = replace(operator, signing="vendor-key", identity_regexp=None, issuer=None)
    no_keyless = replace(table, components={**table.components, "operator": unsigned})
    assert dynatrace_export(selection, table=no_keyless).keyless_identities == ()


def test_dynatrace_export_asks_for_the_paas_token_only_when_needed() -> None:
    asked: list[bool] = []

    def token() -> str:
        asked.append(True)
        return PAAS_TOKEN

    public = dynatrace_export(
        merge_selection(["kubernetes-platform-monitoring"], ["operator=v1.4.0", "activegate=1.2.3"]), paas_token=token
    )
    assert not asked and not public.selection.needs_paas_token and public.credentials == {}
    assert public.extensions == {"options": ["kubernetes-platform-monitoring"], "registry": "ecr"}
    classic = dynatrace_export(
        merge_selection(
            ["classic-fullstack"],
            ["operator=v1.4.0", "activegate=1.2.3", "oneagent-classic=1.305.57.20250115-123456"],
            environment_url="https://dt.corp.example:8443/e/0e1f2a3b-aaaa",
        ),
        paas_token=token,
        credentials_source="PaaS token (test)",
    )
    assert asked == [True] and classic.selection.needs_paas_token
    login = classic.credentials["dt.corp.example:8443"]
    assert (login.source, login.username, login.password) == ("PaaS token (test)", "0e1f2a3b-aaaa", PAAS_TOKEN)
    assert PAAS_TOKEN not in repr(classic)
    # Selection errors come first: no token is asked for a selection that cannot work.
    with pytest.raises(UsageError, match="versions missing"):
        dynatrace_export(
            merge_selection(
                ["classic-fullstack"], ["operator=v1.4.0"], environment_url="https://abc12345.live.dynatrace.com"
            ),
            paas_token=token,
        )
    assert asked == [True]


def _image_refs(fragment: str) -> list[str]:
    found = re.findall(r"(?:image|codeModulesImage): (\S+)", fragment)
    # imageRef: tag@digest before Operator 1.10, a digest field from 1.10
    for repo, tag, digest in re.findall(r'repository: (\S+)\n\s+tag: "?([^"\s]+)"?(?:\n\s+digest: (\S+))?', fragment):
        found.append(f"{repo}:{tag}" + (f"@{digest}" if digest else ""))
    return found


def test_cloud_native_fullstack_export_import_and_dynakube(
    public: str,
    exported: Exported,
    signing_key: ec.EllipticCurvePrivateKey,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    cosign_pub = write_pub(signing_key, tmp_path / "cosign.pub")
    bundle = tmp_path / "dt.tar.zst"
    args = [
        "export",
        "--plain-http",
        "--json",
        "--dynatrace",
        "--option",
        "cloud-native-fullstack",
        "--option",
        "kspm",
        "--dynatrace-registry",
        public,
        "--signing-key",
        str(exported.key),
        "-o",
        str(bundle),
        "--cosign-key",
        str(cosign_pub),
        "--require-signatures",
    ]
    for name in ("operator", "oneagent", "codemodules", "activegate", "k8s-node-config-collector"):
        args += ["--version", f"{name}={V[name]}"]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert all(v["verified"] for v in json.loads(proc.stdout)["imageSignatures"]["images"])
    with open_bundle(bundle, None) as reader:
        catalog = reader.catalog
    assert catalog.extensions["dynatrace"]["options"] == ["cloud-native-fullstack", "kspm"]
    chart = {"operator-chart": V["operator"].removeprefix("v")}  # the Operator's Helm chart, beside its image
    assert {i.annotations[COMPONENT_ANNOTATION]: i.annotations[VERSION_ANNOTATION] for i in catalog.images} == {
        **V,
        **chart,
    }
    target = f"{plain_registry.address}/{uuid.uuid4().hex[:8]}"
    fragment_file = tmp_path / "dynakube.yaml"
    proc = run(
        "import",
        "--plain-http",
        "--public-key",
        str(exported.pub),
        "--registry",
        target,
        "--emit-dynakube",
        str(fragment_file),
        str(bundle),
    )
    assert proc.returncode == 0, proc.stderr
    fragment = fragment_file.read_text()
    assert "cloudNativeFullStack:" in fragment and "kspmNodeConfigurationCollector:" in fragment
    # The DynaKube follows the bundle's Operator; without --environment-url apiUrl is a placeholder, and said so.
    assert f"\napiVersion: {operator_api(V['operator']).api_version}\n" in fragment
    assert f"{fragment_file}, line " in proc.stderr and "apiUrl is a placeholder" in proc.stderr
    refs = _image_refs(fragment)
    assert len(refs) == 4  # oneagent, codemodules, activegate, node config collector
    with make_client(plain_registry, user=None) as client:
        for text in refs:
            ref = parse_reference(text)
            assert ref.registry == plain_registry.address and ref.digest
            assert client.get_manifest(ref).digest == ref.digest  # by digest, verified
            # and the tag itself points at the pinned digest
            assert client.get_manifest(Reference(ref.registry, ref.repository, ref.tag)).digest == ref.digest
    values = (tmp_path / "dynakube-helm-values.yaml").read_text()
    operator = re.search(r"repository: (\S+)\n\s+tag: (\S+)", values)
    assert operator and parse_reference(operator.group(1)).repository.endswith("dynatrace-operator")
    assert "public.ecr.aws" not in fragment + values
    # The standalone verb gives the same fragment from the bundle alone.
    assert run("dynakube", "--registry", target, str(bundle)).stdout == fragment
    given = run(
        "dynakube", "--registry", target, "--environment-url", "https://abc12345.live.dynatrace.com", str(bundle)
    )
    assert "  apiUrl: https://abc12345.live.dynatrace.com/api\n" in given.stdout and "WARNING" not in given.stderr


def test_classic_fullstack_from_the_builtin_registry(
    public: str,
    builtin: RegistryServer,
    exported: Exported,
    signing_key: ec.EllipticCurvePrivateKey,
    plain_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    cosign_pub = write_pub(signing_key, tmp_path / "cosign.pub")
    bundle = tmp_path / "classic.tar.zst"
    args = [
        "export",
        "--plain-http",
        "--json",
        "--dynatrace",
        "--option",
        "classic-fullstack",
        "--dynatrace-registry",
        public,
        "--environment-url",
        f"http://{builtin.address}",
        "--environment-id",
        dtsandbox.ENVIRONMENT_ID,
        "--version",
        f"operator={V['operator']}",
        "--version",
        f"oneagent-classic={V['oneagent']}",
        "--version",
        f"activegate={V['activegate']}",
        "--signing-key",
        str(exported.key),
        "-o",
        str(bundle),
        "--cosign-key",
        str(cosign_pub),
        "--require-signatures",
    ]
    wrong = run(*args, env={"DT_PAAS_TOKEN": "not-the-paas-token"})
    assert "refused" in assert_clean_error(wrong, 1) and "not-the-paas-token" not in wrong.stdout + wrong.stderr
    assert "DT_PAAS_TOKEN" in assert_clean_error(run(*args), 2)
    proc = run(*args, env={"DT_PAAS_TOKEN": PAAS_TOKEN})
    assert proc.returncode == 0, proc.stderr
    assert PAAS_TOKEN not in proc.stdout + proc.stderr and PAAS_TOKEN.encode() not in bundle.read_bytes()
    report = {v["image"]: v for v in json.loads(proc.stdout)["imageSignatures"]["images"]}
    classic = report[f"{builtin.address}/linux/oneagent:1.305.57-raw"]
    assert not classic["verified"] and "not signed" in classic["unsignedByDesign"]
    target = f"{plain_registry.address}/{uuid.uuid4().hex[:8]}"
    fragment_file = tmp_path / "dynakube.yaml"
    proc = run(
        "import",
        "--plain-http",
        "--public-key",
        str(exported.pub),
        "--registry",
        target,
        "--emit-dynakube",
        str(fragment_file),
        str(bundle),
    )
    assert proc.returncode == 0, proc.stderr
    with (
        make_client(plain_registry, user=None) as client,
        make_client(builtin, user=dtsandbox.ENVIRONMENT_ID, password=PAAS_TOKEN) as source,
    ):
        private = parse_reference(f"{target}/dynatrace-oneagent-classic:1.305.57-raw")
        original = source.get_manifest(parse_reference(f"{builtin.address}/linux/oneagent:1.305.57-raw"))
        assert client.get_manifest(private).digest == original.digest
    fragment = fragment_file.read_text()
    assert "classicFullStack:" in fragment
    assert f"image: {private}@{original.digest}" in fragment
