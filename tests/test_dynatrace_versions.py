"""Versions of every Dynatrace component from the registry's tags: filtering and ordering (pure), the
matching set, ``dtbundle dynatrace versions`` and ``export --dynatrace --latest`` against the sample registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.reader import open_bundle
from dtbundle.dynatrace.table import COMPONENT_ANNOTATION, VERSION_ANNOTATION
from dtbundle.dynatrace.versions import immutable_versions, matching_set, release_of, version_key
from dtbundle.errors import UsageError
from dtbundle.sandbox import dynatrace as dtsandbox
from tests.support.artifacts import write_pub
from tests.support.cli import assert_clean_error, run

V = dtsandbox.SAMPLE_VERSIONS
OLD, NEW_AG = dtsandbox.OLDER_RELEASE, dtsandbox.NEWER_ACTIVEGATE
NEVER = {
    "latest",
    "v1.10.2-fips",
    "v1.4.0-rc.1",
    f"{V['oneagent']}-amd64",
    f"{V['codemodules']}-python",
    "0.54.0-amd64",
}


def test_semantic_and_numeric_ordering() -> None:
    tags = ["v1.9.0", "v1.10.2", "v1.4.0", "v1.10.10", "v1.10.2-fips", "v1.11.0-rc.1", "latest", "sha256-ab.sig"]
    assert immutable_versions("operator", tags) == ["v1.10.10", "v1.10.2", "v1.9.0", "v1.4.0"]
    agents = [
        "1.305.57.20250115-123456",
        "1.99.0.20200101-000000",
        "1.305.57.20250116-000000",
        "1.310.2.20250301-000000",
        "1.310.2.20250301-000000-amd64",
        "1.305.57.20250115-123456-python",
        "1.305.57-raw",
        "stable",
    ]
    assert immutable_versions("codemodules", agents) == [
        "1.310.2.20250301-000000",
        "1.305.57.20250116-000000",
        "1.305.57.20250115-123456",
        "1.99.0.20200101-000000",
    ]
    assert immutable_versions("otel-collector", ["0.54.0", "0.9.1", "0.54.0-arm64", "latest", "v0.60.0"]) == [
        "0.54.0",
        "0.9.1",
    ]
    assert version_key("operator", "LATEST") is None and version_key("operator", "1.10.2") is None
    assert version_key("oneagent", "sha256-" + "a" * 64) is None
    assert release_of("1.305.57.20250115-123456") == "1.305.57" and release_of("1.305.57") == "1.305.57"


def test_matching_set_takes_the_newest_common_release() -> None:
    available = {
        "operator": ["v1.10.2", "v1.9.0"],
        "oneagent": ["1.305.57.20250115-123456", OLD],
        "codemodules": ["1.305.57.20250115-123456", OLD],
        "activegate": [NEW_AG, "1.305.57.20250116-000000", "1.305.57.20250115-123456", OLD],
        "otel-collector": ["0.54.0"],
    }
    chosen, release = matching_set(available)
    assert release == "1.305.57"
    assert chosen == {
        "oneagent": "1.305.57.20250115-123456",
        "codemodules": "1.305.57.20250115-123456",
        "activegate": "1.305.57.20250116-000000",  # newest build of the release, not the newer release
        "operator": "v1.10.2",
        "otel-collector": "0.54.0",
    }
    # ActiveGate alone: its newest release; a pinned OneAgent fixes the release of the others.
    assert matching_set({"activegate": available["activegate"]})[0] == {"activegate": NEW_AG}
    pinned, release = matching_set(available, {"oneagent": OLD})
    assert release == "1.303.62" and pinned["codemodules"] == OLD and pinned["activegate"] == OLD
    assert "oneagent" not in pinned
    with pytest.raises(UsageError, match=r"no version of release 1\.1\.1 .* for codemodules, activegate"):
        matching_set(available, {"oneagent": "1.1.1.20200101-000000"})
    with pytest.raises(UsageError, match="no release"):
        matching_set({"oneagent": [OLD], "activegate": [NEW_AG]})
    # Pins of two different releases cannot both hold: refused, never a mixed set.
    with pytest.raises(UsageError, match="come from one release; pin one"):
        matching_set(available, {"oneagent": OLD, "activegate": NEW_AG})


def test_dynatrace_versions_lists_newest_first_and_the_matching_set(public: str) -> None:
    proc = run("dynatrace", "versions", "--plain-http", "--dynatrace-registry", public)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line and not line.startswith(" ")}
    assert f"{dtsandbox.NEWER_OPERATOR}  v1.9.0  v1.4.0  (" in lines["operator"]
    assert f"{NEW_AG}  {V['activegate']}  {OLD}" in lines["activegate"]
    assert f"  activegate={V['activegate']}\n" in proc.stdout and f"  oneagent={V['oneagent']}\n" in proc.stdout
    assert "release 1.305.57" in proc.stdout and "export with: --latest" in proc.stdout
    assert not any(tag in proc.stdout.split() for tag in NEVER)
    document = json.loads(run("dynatrace", "versions", "--plain-http", "--json", "--dynatrace-registry", public).stdout)
    components = {c["component"]: c for c in document["components"]}
    assert components["operator"]["versions"] == [dtsandbox.NEWER_OPERATOR, "v1.9.0", "v1.4.0"]
    assert components["operator"]["ignoredTags"] >= 3  # -fips, -rc.1, latest, and its signatures
    assert components["oneagent"]["versions"] == [V["oneagent"], OLD]
    assert components["activegate"]["newest"] == NEW_AG
    assert {m["component"]: m["version"] for m in document["matchingSet"]} == {
        **{n: v for n, v in dtsandbox.ALL_VERSIONS.items() if n != "operator"},
        "operator": dtsandbox.NEWER_OPERATOR,
    }
    assert document["release"] == "1.305.57" and document["environmentUrl"] is None and document["versions"] == []
    # A mirror without some repositories says so per component, and still answers.
    partial = run("dynatrace", "versions", "--plain-http", "--dynatrace-registry", f"{public}-missing")
    assert partial.returncode == 0, partial.stderr
    assert "repository not found" in partial.stdout and "matching set" not in partial.stdout


def _export(public: str, keys_dir: Path, bundle: Path, cosign_pub: Path, *extra: str) -> dict[str, object]:
    proc = run(
        "export", "--plain-http", "--json", "--dynatrace", "--option", "cloud-native-fullstack", "--option", "kspm",
        "--dynatrace-registry", public, "--latest", "--signing-key", str(keys_dir / "dtbundle.key"), "-o", str(bundle),
        "--cosign-key", str(cosign_pub), "--require-signatures", *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--latest chose" in proc.stderr
    with open_bundle(bundle, None) as reader:
        catalog = reader.catalog
    chosen = {i.annotations[COMPONENT_ANNOTATION]: i.annotations[VERSION_ANNOTATION] for i in catalog.images}
    chosen.pop("operator-chart", None)  # the Operator's Helm chart follows the Operator version
    return {"chosen": chosen, "extension": catalog.extensions["dynatrace"], "stderr": proc.stderr}


def test_export_latest_picks_the_newest_matching_set(
    public: str, keys_dir: Path, signing_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    cosign_pub = write_pub(signing_key, tmp_path / "cosign.pub")
    result = _export(public, keys_dir, tmp_path / "latest.tar.zst", cosign_pub)
    expected = {**V, "operator": dtsandbox.NEWER_OPERATOR}  # ActiveGate from OneAgent's release, not NEW_AG
    assert result["chosen"] == expected
    assert result["extension"]["latest"] == expected  # type: ignore[index]
    assert f"--version activegate={V['activegate']}" in str(result["stderr"])
    # --version pins one component and wins; a pinned OneAgent release carries code modules and ActiveGate.
    pinned = _export(public, keys_dir, tmp_path / "pinned.tar.zst", cosign_pub, "--version", "operator=v1.4.0")
    assert pinned["chosen"] == {**expected, "operator": "v1.4.0"}
    assert "operator" not in pinned["extension"]["latest"]  # type: ignore[index]
    older = _export(public, keys_dir, tmp_path / "older.tar.zst", cosign_pub, "--version", f"oneagent={OLD}")
    assert older["chosen"] == {**expected, "oneagent": OLD, "codemodules": OLD, "activegate": OLD}
    assert not set(older["chosen"].values()) & NEVER  # type: ignore[attr-defined]


def test_latest_refusals(public: str, keys_dir: Path, tmp_path: Path) -> None:
    key = str(keys_dir / "dtbundle.key")
    alone = run("export", "--latest", "--signing-key", key, "-o", str(tmp_path / "x.tar.zst"), "docker.io/x/y:1")
    assert "--latest goes with --dynatrace" in assert_clean_error(alone, 2)
    classic = run(
        "export", "--plain-http", "--dynatrace", "--option", "classic-fullstack", "--latest", "--dynatrace-registry",
        public, "--environment-url", "https://abc12345.live.dynatrace.com", "--signing-key", key,
        "-o", str(tmp_path / "c.tar.zst"),
    )  # fmt: skip
    assert "--version oneagent-classic=" in assert_clean_error(classic, 2)
