"""The Dynatrace component table (``dynatrace.toml``): complete, sourced and consistent; what each
option expands to; registry names, Operator minimums, ``--platform`` and keyless defaults."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.format import UNSIGNED_ANNOTATION
from dtbundle.bundle.reader import open_bundle
from dtbundle.cli.options import SignatureOptions
from dtbundle.dynatrace.selection import Environment, Selection, dynatrace_export, expand, merge_selection
from dtbundle.dynatrace.table import (
    COMPONENT_ANNOTATION,
    KEY_KINDS,
    KEYLESS_KINDS,
    SIGNING_KINDS,
    SOURCE_GROUPS,
    component_lines,
    load_table,
    parse_table,
)
from dtbundle.errors import UsageError
from dtbundle.oci import Platform
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.trust.policy import Identity
from tests.support.artifacts import write_pub
from tests.support.cli import assert_clean_error, run
from tests.support.registries import Exported

V = dtsandbox.ALL_VERSIONS
ROOT = Path(__file__).parent / "vectors/sigstore-bundle/managed-key-and-trusted-root/trusted_root.json"
COMPONENTS = {
    "operator",
    "oneagent",
    "codemodules",
    "activegate",
    "k8s-node-config-collector",
    "logmodule",
    "otel-collector",
    "eec",
    "database-datasource-executor",
    "edgeconnect",
    "oneagent-classic",
}
OPTIONS = {
    "cloud-native-fullstack": ({"operator", "oneagent", "codemodules", "activegate"}, set()),
    "application-observability": ({"operator", "codemodules"}, {"activegate"}),
    "host-monitoring": ({"operator", "oneagent", "activegate"}, set()),
    "kubernetes-platform-monitoring": ({"operator", "activegate"}, set()),
    "classic-fullstack": ({"operator", "oneagent-classic", "activegate"}, set()),
    "kspm": ({"operator", "activegate", "k8s-node-config-collector"}, set()),
    "log-monitoring": ({"operator", "logmodule"}, set()),
    "telemetry-ingest": ({"operator", "otel-collector"}, {"activegate"}),
    "extensions": ({"operator", "activegate", "eec", "otel-collector"}, set()),
    "database-extensions": ({"operator", "activegate", "eec", "database-datasource-executor"}, set()),
    "edgeconnect": ({"operator", "edgeconnect"}, set()),
}


def _raw() -> dict[str, Any]:
    text = (importlib.resources.files("dtbundle.dynatrace") / "dynatrace.toml").read_text("utf-8")
    return tomllib.loads(text)


def _versions(names: set[str]) -> dict[str, str]:
    return {n: V.get(n, V["oneagent"]) for n in names}


def test_the_table_names_every_component_and_option() -> None:
    table = load_table()
    assert set(table.components) == COMPONENTS
    assert set(table.options) == set(OPTIONS)


@pytest.mark.parametrize(("option", "expected"), OPTIONS.items())
def test_every_option_expands_to_its_components(option: str, expected: tuple[set[str], set[str]]) -> None:
    required, optional = expected
    table = load_table()
    env = Environment.parse("https://abc12345.live.dynatrace.com")
    for with_optional, components in ((False, required), (True, required | optional)):
        requests = expand(Selection((option,), _versions(components), with_optional=with_optional, environment=env))
        got = {r.annotations[COMPONENT_ANNOTATION]: r for r in requests}
        assert set(got) == components
        for name, request in got.items():
            c = table.components[name]
            if not c.builtin:
                assert str(request.ref) == f"public.ecr.aws/dynatrace/{c.repository}:{V[name]}"
    assert table.options[option].source.strip()


def test_every_component_and_option_has_a_source() -> None:
    table = load_table()
    for c in table.components.values():
        assert c.sources is not None and set(c.sources) == set(SOURCE_GROUPS), c.name
        assert all(text.strip() for text in c.sources.values()), c.name
        assert c.tag_format and c.version_example and c.since_operator, c.name
    for o in table.options.values():
        assert o.source.strip() and o.since_operator, o.name
    text = "\n".join(component_lines())
    for o in table.options.values():
        assert o.name in text and o.source in text
    for c in table.components.values():
        assert all(source in text for source in (c.sources or {}).values())


def _edited(path: tuple[str, ...], value: Any = None, delete: bool = False) -> dict[str, Any]:
    raw = copy.deepcopy(_raw())
    node = raw
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_edited(("components", "eec", "source", "signing"), delete=True), "component eec: needs exactly source"),
        (_edited(("components", "logmodule", "source"), delete=True), "component logmodule lacks source"),
        (_edited(("options", "kspm", "source"), delete=True), "option kspm lacks source"),
        (_edited(("options", "kspm", "source"), "  "), "option kspm: source must be a non-empty str"),
        (_edited(("options", "edgeconnect", "components"), ["operator", "edge"]), "unknown component(s) edge"),
        (_edited(("options", "extensions", "optional"), ["nope"]), "unknown component(s) nope"),
        (_edited(("components", "eec", "signing"), "maybe"), "unknown signing 'maybe'"),
        (_edited(("components", "otel-collector", "issuer"), delete=True), "identity_regexp + issuer"),
        (_edited(("components", "oneagent", "signing_key_url"), delete=True), "signing_key_url"),
        (_edited(("components", "eec", "registries"), ["quay"]), "registries"),
        (_edited(("components", "eec", "colour"), "blue"), "unknown key(s) colour"),
    ],
)
def test_an_incomplete_table_is_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_table(raw)
    assert message in str(info.value)


def test_signing_kinds_are_valid_and_keyless_ones_name_their_signer() -> None:
    table = load_table()
    for c in table.components.values():
        assert c.signing in SIGNING_KINDS, c.name
        if c.signing in KEYLESS_KINDS:
            assert c.identity_regexp and c.issuer == "https://token.actions.githubusercontent.com", c.name
            re.compile(c.identity_regexp)
        else:
            assert c.identity_regexp is None and c.issuer is None, c.name
        assert (c.signing in KEY_KINDS) == (c.signing_key_url is not None), c.name
    kinds = {name: c.signing for name, c in table.components.items()}
    assert kinds["operator"] == "release-key+keyless" and kinds["otel-collector"] == "keyless"
    assert kinds["oneagent-classic"] == "none"
    assert {n for n, k in kinds.items() if k == "unconfirmed"} == {"logmodule", "eec", "database-datasource-executor"}
    operator = table.components["operator"].identity_regexp or ""
    tag = "refs/tags/v1.10.2"
    for workflow in ("release", "fips-release"):
        assert re.fullmatch(
            operator, f"https://github.com/Dynatrace/dynatrace-operator/.github/workflows/{workflow}.yaml@{tag}"
        )
    assert not re.fullmatch(
        operator, f"https://github.com/Dynatrace/dynatrace-operator/.github/workflows/e2e.yaml@{tag}"
    )
    otel = table.components["otel-collector"]
    assert re.fullmatch(
        otel.identity_regexp or "",
        "https://github.com/Dynatrace/dynatrace-otel-collector/.github/workflows/release.yaml@refs/tags/v0.54.0",
    )
    assert otel.signed_from_version == "0.49.0"


def test_docker_hub_is_refused_where_the_name_is_not_confirmed() -> None:
    versions = _versions(OPTIONS["database-extensions"][0]) | {"operator": "v1.8.1"}
    with pytest.raises(UsageError) as info:
        expand(Selection(("database-extensions",), versions, "dockerhub"))
    message = str(info.value)
    assert (
        "database-datasource-executor" in message
        and "not confirmed" in message
        and "--dynatrace-registry ecr" in message
    )
    refs = {str(r.ref) for r in expand(Selection(("database-extensions",), versions, "mirror.example/dt"))}
    assert f"mirror.example/dt/dynatrace-database-datasource-executor:{V['database-datasource-executor']}" in refs
    hub = {str(r.ref) for r in expand(Selection(("edgeconnect",), _versions({"operator", "edgeconnect"}), "dockerhub"))}
    assert hub == {
        f"docker.io/dynatrace/edgeconnect:{V['edgeconnect']}",
        f"docker.io/dynatrace/dynatrace-operator:{V['operator']}",
    }


def test_an_option_needing_a_newer_operator_is_a_usage_error(exported: Exported) -> None:
    versions = _versions(OPTIONS["database-extensions"][0]) | {"operator": "v1.7.3"}
    with pytest.raises(UsageError) as info:
        expand(Selection(("database-extensions",), versions))
    assert "database-extensions needs Dynatrace Operator 1.8 or newer" in str(info.value)
    assert expand(Selection(("database-extensions",), versions | {"operator": "v1.8.0"}))
    telemetry = _versions(OPTIONS["telemetry-ingest"][0]) | {"operator": "v1.4.2"}
    with pytest.raises(UsageError, match=r"Operator 1\.5 or newer"):
        expand(Selection(("telemetry-ingest",), telemetry))
    args = ["export", "--dynatrace", "--option", "database-extensions", "--signing-key", str(exported.key)]
    args += [f"--version={n}={v}" for n, v in versions.items()]
    message = assert_clean_error(run(*args), 2)
    assert "1.8" in message and "v1.7.3" in message


def test_a_platform_that_excludes_classic_fullstack_is_refused() -> None:
    versions = _versions(OPTIONS["classic-fullstack"][0])
    env = Environment.parse("https://abc12345.live.dynatrace.com")
    arm = (Platform.parse("linux/arm64"),)
    with pytest.raises(UsageError, match="only for linux/amd64"):
        expand(Selection(("classic-fullstack",), versions, environment=env, platforms=arm))
    both = (Platform.parse("linux/amd64"), Platform.parse("linux/arm64"))
    got = {
        r.annotations[COMPONENT_ANNOTATION]: r.platforms
        for r in expand(Selection(("classic-fullstack",), versions, environment=env, platforms=both))
    }
    assert got["oneagent-classic"] == (Platform.parse("linux/amd64"),) and got["activegate"] == both


def test_keyless_defaults_for_operator_and_otel_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    table = load_table()
    operator, otel = table.components["operator"], table.components["otel-collector"]
    expected = (
        Identity(subject_regexp=operator.identity_regexp, issuer=operator.issuer),
        Identity(subject_regexp=otel.identity_regexp, issuer=otel.issuer),
    )
    versions = [f"operator={V['operator']}", f"otel-collector={V['otel-collector']}"]
    chosen = dynatrace_export(merge_selection(["telemetry-ingest"], versions))
    assert chosen.keyless_identities == expected
    policy = SignatureOptions(trusted_root=ROOT).policy(chosen.keyless_identities)
    assert policy is not None and policy.identities == expected
    own = SignatureOptions(trusted_root=ROOT, certificate_identity="me@example.com").policy(expected)
    assert own is not None and [i.subject for i in own.identities] == ["me@example.com"]
    # Collector releases before 0.49.0 carry no signature: marked so, and not a keyless default.
    old = dynatrace_export(merge_selection(["telemetry-ingest"], [versions[0], "otel-collector=0.48.0"]))
    assert old.keyless_identities == expected[:1]
    unsigned = [r for r in old.requests if UNSIGNED_ANNOTATION in r.annotations]
    assert [r.annotations[COMPONENT_ANNOTATION] for r in unsigned] == ["otel-collector"]


def _export(public: str, exported: Exported, bundle: Path, *extra: str) -> dict[str, Any]:
    args = ["export", "--plain-http", "--json", "--dynatrace", "--dynatrace-registry", public]
    args += ["--no-helm-chart"]  # components only; the chart is tests/test_helm_chart.py's
    args += ["--signing-key", str(exported.key), "-o", str(bundle), *extra]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


def test_every_public_option_exports_from_the_sample_registry(
    public: str, exported: Exported, signing_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    table = load_table()
    options = [o for o in OPTIONS if o != "classic-fullstack"]
    versions = [f"--version={n}={v}" for n, v in V.items()]
    args = [a for o in options for a in ("--option", o)] + ["--with-optional", *versions]
    args += ["--cosign-key", str(write_pub(signing_key, tmp_path / "cosign.pub"))]
    document = _export(public, exported, tmp_path / "all.tar.zst", *args)
    with open_bundle(tmp_path / "all.tar.zst", None) as reader:
        catalog = reader.catalog
    assert {i.annotations[COMPONENT_ANNOTATION] for i in catalog.images} == COMPONENTS - {"oneagent-classic"}
    assert catalog.extensions["dynatrace"]["options"] == options
    verified = {
        i["image"].rsplit("/", 1)[1].split(":")[0]: i["verified"] for i in document["imageSignatures"]["images"]
    }
    for c in table.components.values():
        if not c.builtin:  # the sandbox signs what the vendor signs with a key
            assert verified[c.repository] == (c.signing in KEY_KINDS), c.name


def test_platform_narrows_a_dynatrace_export(public: str, exported: Exported, tmp_path: Path) -> None:
    bundle = tmp_path / "arm.tar.zst"
    versions = [f"--version={n}={V[n]}" for n in ("operator", "logmodule", "activegate", "k8s-node-config-collector")]
    _export(
        public,
        exported,
        bundle,
        "--option",
        "log-monitoring",
        "--option",
        "kspm",
        "--platform",
        "linux/arm64",
        *versions,
    )
    with open_bundle(bundle, None) as reader:
        catalog = reader.catalog
    assert len(catalog.images) == 4
    for image in catalog.images:
        assert [p.platform for p in image.platforms] == ["linux/arm64"], image.repository
        assert image.original_digest is not None  # the index was trimmed
