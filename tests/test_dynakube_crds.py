"""DynaKube output against the Dynatrace Operator's own CRDs (vendored byte for byte in
tests/data/dynatrace-crds/, see PROVENANCE.md there): for every option and every Operator minor
1.4 … 1.10, the emitted documents validate against the openAPIV3Schema of the apiVersion they
name, that apiVersion is the newest the Operator serves, and every image is pinned by digest."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import jsonschema
import pytest
import yaml

from dtbundle.bundle.format import Catalog, CatalogImage
from dtbundle.dynatrace.dynakube import PLACEHOLDER_API_URL, PinnedImages, pinned_images, render_dynakube
from dtbundle.dynatrace.operator_api import operator_api
from dtbundle.dynatrace.table import COMPONENT_ANNOTATION, VERSION_ANNOTATION
from dtbundle.dynatrace.yamltext import scalar
from dtbundle.errors import UsageError
from dtbundle.oci.reference import Reference
from tests.support.crds import CRDS, crd, documents, served, validate

OPERATORS = ["v1.4.2", "v1.5.1", "v1.6.3", "v1.7.3", "v1.8.1", "v1.9.0", "v1.10.2"]
TARGET = "registry.example.com/mirror"
VERSIONS = {
    "operator": "",
    "oneagent": "1.305.57.20250115-123456",
    "codemodules": "1.305.57.20250115-123456",
    "activegate": "1.305.57.20250115-123456",
    "k8s-node-config-collector": "1.5.2",
    "logmodule": "1.309.59.20250319-140247",
    "otel-collector": "0.54.0",
    "eec": "1.327.30.20251107-111521",
    "database-datasource-executor": "1.327.41.20251114-153023",
    "edgeconnect": "1.0.0",
    "oneagent-classic": "1.305.57.20250115-123456",
}
OPTIONS = {
    "cloud-native-fullstack": ["operator", "oneagent", "codemodules", "activegate"],
    "application-observability": ["operator", "codemodules", "activegate"],
    "host-monitoring": ["operator", "oneagent", "activegate"],
    "kubernetes-platform-monitoring": ["operator", "activegate"],
    "classic-fullstack": ["operator", "oneagent-classic", "activegate"],
    "kspm": ["operator", "activegate", "k8s-node-config-collector"],
    "log-monitoring": ["operator", "logmodule"],
    "telemetry-ingest": ["operator", "otel-collector", "activegate"],
    "extensions": ["operator", "activegate", "eec", "otel-collector"],
    "database-extensions": ["operator", "activegate", "eec", "database-datasource-executor"],
    "edgeconnect": ["operator", "edgeconnect"],
}
SINCE = {"telemetry-ingest": 5, "database-extensions": 8}  # first Operator minor with the feature


def digest_of(component: str) -> str:
    return "sha256:" + hashlib.sha256(component.encode()).hexdigest()


def catalog_for(options: list[str], operator: str | None, extension: dict[str, Any] | None = None) -> Catalog:
    """A catalog as export writes it: one image per component with its component/version annotations."""
    components = dict.fromkeys(c for o in options for c in OPTIONS[o] if operator or c != "operator")
    images = []
    for name in components:
        version = operator if name == "operator" else VERSIONS[name]
        assert version
        tag = version.split(".20")[0] + "-raw" if name == "oneagent-classic" else version
        images.append(
            CatalogImage(
                source=f"public.ecr.aws/dynatrace/dynatrace-{name}:{tag}",
                registry="public.ecr.aws",
                repository=f"dynatrace/dynatrace-{name}",
                tag=tag,
                digest=digest_of(name),
                media_type="application/vnd.oci.image.index.v1+json",
                size=1234,
                ref_name=f"dynatrace-{name}:{tag}",
                annotations={COMPONENT_ANNOTATION: name, VERSION_ANNOTATION: version},
            )
        )
    return Catalog(
        "2026-01-01T00:00:00Z",
        "test",
        tuple(images),
        (),
        (),
        {"dynatrace": {"options": options, "registry": "ecr", **(extension or {})}},
    )


def pinned_for(catalog: Catalog) -> PinnedImages:
    targets = {i.digest: Reference("registry.example.com", f"mirror/{i.repository}", i.tag) for i in catalog.images}
    return pinned_images(catalog, targets)


# -- every option x every Operator minor -------------------------------------------------------------
@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_validates_against_the_operators_crd(option: str, operator: str) -> None:
    check_bundle([option], operator)


@pytest.mark.parametrize("operator", OPERATORS)
def test_all_options_together_validate(operator: str) -> None:
    minor = int(operator.split(".")[1])
    options = [o for o in OPTIONS if SINCE.get(o, 0) <= minor and o not in ("classic-fullstack", "host-monitoring")]
    check_bundle(options, operator)


def check_bundle(options: list[str], operator: str) -> None:
    minor = int(operator.split(".")[1])
    catalog = catalog_for(options, operator)
    too_new = [o for o in options if SINCE.get(o, 0) > minor]
    if too_new:
        with pytest.raises(UsageError, match=f"{too_new[0]} needs Dynatrace Operator 1.{SINCE[too_new[0]]} or newer"):
            render_dynakube(pinned_for(catalog), environment_url="https://abc12345.live.dynatrace.com")
        return
    result = render_dynakube(pinned_for(catalog), environment_url="https://abc12345.live.dynatrace.com")
    assert not result.warnings
    docs = documents(result.text)
    crd_name = f"dynakube-crd-{operator}.yaml"
    newest = f"dynatrace.com/{served(crd(crd_name))[-1]}"
    kinds = [d["kind"] for d in docs]
    assert kinds == (["DynaKube"] if options != ["edgeconnect"] else []) + (
        ["EdgeConnect"] if "edgeconnect" in options else []
    )
    for document in docs:
        if document["kind"] == "DynaKube":
            assert document["apiVersion"] == newest
            assert document["spec"]["apiUrl"] == "https://abc12345.live.dynatrace.com/api"
            validate(document, crd_name)
        else:
            assert document["apiVersion"] == "dynatrace.com/v1alpha2"
            validate(document, "edgeconnect-crd-v1.10.2.yaml")  # v1alpha2 has the same fields since 1.4, digest 1.10
            if minor < 10:
                assert "digest" not in document["spec"]["imageRef"]
    assert_pinned(catalog, result.text, docs, minor)


def assert_pinned(catalog: Catalog, text: str, docs: list[dict[str, Any]], minor: int) -> None:
    """Every image of the bundle is in the output at its target, pinned by digest: in a digest field,
    as ``…@sha256:…``, or (tag copied into a label by that Operator) named in a comment."""
    strings = list(_strings(docs))
    refs = [d for d in _mappings(docs) if "repository" in d]
    for image in catalog.images:
        name = image.annotations[COMPONENT_ANNOTATION]
        target = f"registry.example.com/mirror/{image.repository}"
        if name == "operator":  # not in the DynaKube: the Helm values pin it (tests/test_helm_chart.py)
            assert target not in text
            continue
        if any(s == f"{target}:{image.tag}@{image.digest}" for s in strings):
            continue
        (ref,) = [r for r in refs if r["repository"] == target]
        if minor >= 10:
            assert ref == {"repository": target, "tag": image.tag, "digest": image.digest}
        elif (name, minor) in {("database-datasource-executor", 8), ("database-datasource-executor", 9), ("eec", 9)}:
            assert ref == {"repository": target, "tag": image.tag}
            assert re.search(
                rf"# Operator v1\.{minor}\.\d+ copies this tag into a Kubernetes label.*{image.digest}", text
            )
        else:
            assert ref == {"repository": target, "tag": f"{image.tag}@{image.digest}"}


def _strings(node: Any) -> Any:
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _mappings(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _mappings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _mappings(v)


# -- versions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("operator", OPERATORS)
def test_api_version_is_the_newest_the_operator_serves(operator: str) -> None:
    newest = served(crd(f"dynakube-crd-{operator}.yaml"))[-1]
    assert operator_api(operator).api_version == f"dynatrace.com/{newest}"


def test_operator_1_4_gives_v1beta3_and_the_newest_gives_v1beta6() -> None:
    assert operator_api("v1.4.0").api_version == "dynatrace.com/v1beta3"
    assert operator_api("1.4.2").api_version == "dynatrace.com/v1beta3"
    assert operator_api("v1.10.2").api_version == "dynatrace.com/v1beta6"
    assert operator_api("v1.10.2-fips").api_version == "dynatrace.com/v1beta6"
    text = render_dynakube(pinned_for(catalog_for(["kspm"], "v1.4.0"))).text
    assert documents(text)[0]["apiVersion"] == "dynatrace.com/v1beta3"
    assert "# For Dynatrace Operator v1.4.0 (from the bundle), which serves dynatrace.com/v1beta3." in text


@pytest.mark.parametrize("version", ["v1.3.2", "v0.9.0", "v1.11.0", "v2.0.0", "latest", "main"])
def test_operator_outside_the_supported_range_is_a_usage_error(version: str) -> None:
    with pytest.raises(UsageError, match=r"supports Operator 1\.4 to 1\.10") as error:
        render_dynakube(pinned_for(catalog_for(["kspm"], version)))
    assert error.value.exit_code == 2


def test_without_operator_image_the_newest_layout_is_assumed_and_said() -> None:
    result = render_dynakube(pinned_for(catalog_for(["kspm"], None)), environment_url="https://abc.live.dynatrace.com")
    assert "# The bundle has no Dynatrace Operator image: written for the newest Operator" in result.text
    (document,) = documents(result.text)
    assert document["apiVersion"] == "dynatrace.com/v1beta6"
    validate(document, "dynakube-crd-v1.10.2.yaml")


# -- apiUrl ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://abc12345.live.dynatrace.com", "https://abc12345.live.dynatrace.com/api"),
        ("https://abc12345.live.dynatrace.com/", "https://abc12345.live.dynatrace.com/api"),
        ("https://abc12345.live.dynatrace.com/api", "https://abc12345.live.dynatrace.com/api"),
        ("https://dynatrace.example.com/e/1a2b3c4d-0000", "https://dynatrace.example.com/e/1a2b3c4d-0000/api"),
        ("https://activegate.internal:9999/e/abc/", "https://activegate.internal:9999/e/abc/api"),
    ],
)
def test_api_url_from_environment_url(url: str, expected: str) -> None:
    for operator in ("v1.4.2", "v1.10.2"):
        result = render_dynakube(pinned_for(catalog_for(["cloud-native-fullstack"], operator)), environment_url=url)
        assert documents(result.text)[0]["spec"]["apiUrl"] == expected and not result.warnings


def test_api_url_from_the_catalogs_environment_and_the_option_wins() -> None:
    for recorded in (
        {"environment": {"url": "https://abc12345.live.dynatrace.com"}},
        {"environment": "https://abc12345.live.dynatrace.com"},
    ):
        pinned = pinned_for(catalog_for(["classic-fullstack"], "v1.9.0", recorded))
        assert documents(render_dynakube(pinned).text)[0]["spec"]["apiUrl"] == "https://abc12345.live.dynatrace.com/api"
        given = render_dynakube(pinned, environment_url="https://xyz.live.dynatrace.com").text
        assert documents(given)[0]["spec"]["apiUrl"] == "https://xyz.live.dynatrace.com/api"


def test_without_environment_the_placeholder_stays_and_a_warning_names_its_line() -> None:
    result = render_dynakube(pinned_for(catalog_for(["cloud-native-fullstack"], "v1.10.2")))
    (warning,) = result.warnings
    assert result.text.splitlines()[warning.line - 1] == f"  apiUrl: {PLACEHOLDER_API_URL}"
    assert "--environment-url" in warning.message
    validate(documents(result.text)[0], "dynakube-crd-v1.10.2.yaml")  # still valid YAML for the CRD


@pytest.mark.parametrize(
    "url", ["abc12345.live.dynatrace.com", "ftp://x/e/y", "https://", "https://ENVIRONMENTID.live.dynatrace.com"]
)
def test_bad_environment_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="--environment-url"):
        render_dynakube(pinned_for(catalog_for(["kspm"], "v1.10.2")), environment_url=url)


def test_platform_url_only_from_operator_1_10() -> None:
    with pytest.raises(UsageError, match=r"v1\.9\.0 rejects platform \(\.apps\.\) URLs"):
        render_dynakube(pinned_for(catalog_for(["kspm"], "v1.9.0")), environment_url="https://abc.apps.dynatrace.com")
    text = render_dynakube(
        pinned_for(catalog_for(["kspm"], "v1.10.2")), environment_url="https://abc.apps.dynatrace.com"
    ).text
    assert documents(text)[0]["spec"]["apiUrl"] == "https://abc.apps.dynatrace.com/api"


def test_edgeconnect_takes_its_environment_from_the_saas_url() -> None:
    result = render_dynakube(
        pinned_for(catalog_for(["edgeconnect"], "v1.10.2")), environment_url="https://abc12345.live.dynatrace.com"
    )
    (edge,) = documents(result.text)
    assert edge["spec"]["apiServer"] == "abc12345.apps.dynatrace.com"
    assert edge["spec"]["oauth"]["resource"] == "urn:dtenvironment:abc12345"
    placeholder = render_dynakube(pinned_for(catalog_for(["edgeconnect"], "v1.10.2")))
    (warning,) = placeholder.warnings
    assert "apiServer" in placeholder.text.splitlines()[warning.line - 1]


def test_vendored_crds_are_the_files_provenance_names() -> None:
    provenance = (CRDS / "PROVENANCE.md").read_text("utf-8")
    assert "Apache-2.0" in provenance and (CRDS / "LICENSE").read_text("utf-8").startswith("\n")
    for path in sorted(CRDS.glob("*.yaml")):
        row = next(line for line in provenance.splitlines() if line.startswith(f"| `{path.name}`"))
        assert hashlib.sha256(path.read_bytes()).hexdigest() in row


@pytest.mark.parametrize(
    ("operator", "path", "value"),
    [
        ("v1.4.2", ("kspm", "mappedHostPaths"), ["/etc"]),  # v1beta5+
        ("v1.4.2", ("telemetryIngest",), {}),  # v1beta4+
        ("v1.9.0", ("templates", "kspmNodeConfigurationCollector", "imageRef", "digest"), "sha256:ab"),  # 1.10+
        ("v1.10.2", ("templates", "databaseExecutor"), {}),  # no such template
    ],
)
def test_the_check_has_teeth(operator: str, path: tuple[str, ...], value: Any) -> None:
    """A field the Operator version does not have fails validation (it would be pruned silently)."""
    text = render_dynakube(
        pinned_for(catalog_for(["kspm"], operator)), environment_url="https://a.live.dynatrace.com"
    ).text
    document = documents(text)[0]
    node = document["spec"]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        validate(document, f"dynakube-crd-{operator}.yaml")


@pytest.mark.parametrize(
    "value",
    [
        *("127.0.0.1:5000/a/b:1.0@sha256:ab", "1.5.2", "v1.4.0", "1.5.2@sha256:ab", "yes", "null", "1.3"),
        *("2024-01-01", "abc:", "sha256:abc", "/boot", "-x", "12:30", ".inf", "1e5", "0x1f", "", "a b", "a #b"),
    ],
)
def test_yaml_scalars_read_back_as_the_same_string(value: str) -> None:
    assert yaml.safe_load(f"k: {scalar(value)}") == {"k": value}
