"""Every ``--json`` output against its contract, specs/json-output.md: the tables there are parsed,
each command runs for real (in process) against the sample registry and bundle, and its document
must have exactly the documented keys with the documented types; a failing run prints the error
document and only it; counters have every key, zero included. Also the text verdict lines of
``verify`` and ``import``: "OK" only when the image-signature policy passed."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle import errors
from dtbundle.bundle.key import generate_keys
from dtbundle.importer.report import Count
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from dtbundle.trust.outcome import ImageStatus
from tests.support.artifacts import write_pub
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.registries import Exported, make_client

SPEC = Path(__file__).resolve().parents[1] / "specs" / "json-output.md"
COMMANDS = ("resolve", "export", "verify", "inspect", "import", "inventory", "dynatrace versions")
ROW = re.compile(r"^\| `(?P<field>[^`]+)` \| `(?P<type>(?:[^`\\]|\\.)+)` \| (?P<meaning>.+) \|$")
SCALARS = {"string": str, "boolean": bool, "integer": int, "number": (int, float)}
API_TOKEN = "dt0c01.JSONCONTRACT.not-a-real-token"

Spec = dict[str, str]  # dotted path -> type


def parse_spec() -> dict[str, Spec]:
    """{section: {path: type}} for the command sections (`` ## `name` ``) and 'error' (## Error document)."""
    sections: dict[str, Spec] = {}
    current: str | None = None
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            current = title.strip("`") if title.startswith("`") else "error" if title == "Error document" else None
            if current is not None:
                sections[current] = {}
        elif current is not None and line.startswith("| `"):
            match = ROW.match(line)
            assert match, f"unparsable row in {SPEC.name}: {line}"
            assert match["field"] not in sections[current], f"{current}: {match['field']} listed twice"
            sections[current][match["field"]] = match["type"].replace("\\|", "|")
    return sections


SPECS = parse_spec()


def camel(name: str) -> str:
    first, *rest = name.lower().split("_")
    return first + "".join(word.title() for word in rest)


def _children(spec: Spec, path: str) -> set[str]:
    prefix = f"{path}." if path else ""
    return {f[len(prefix) :] for f in spec if f.startswith(prefix) and "." not in f[len(prefix) :]}


def _check(value: Any, path: str, declared: str, spec: Spec, seen: set[str]) -> None:
    seen.add(path)
    where = path or "the document"
    if value is None:
        assert declared.endswith("|null"), f"{where} is null, documented as {declared}"
        return
    kind = declared.removesuffix("|null")
    if kind in SCALARS:
        assert isinstance(value, SCALARS[kind]) and not (kind != "boolean" and isinstance(value, bool)), (
            f"{where} = {value!r} is not {kind}"
        )
    elif kind in ("array<string>", "array<string|null>"):
        assert isinstance(value, list), f"{where} is not an array"
        assert all(isinstance(v, str) or (v is None and kind.endswith("null>")) for v in value), f"{where}: {value}"
    elif kind == "array<integer>":
        assert isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value), where
    elif kind == "map<string>":
        assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values()), f"{where}: {value}"
    elif kind == "object":
        assert isinstance(value, dict), f"{where} is not an object"
        documented = _children(spec, path)
        assert set(value) == documented, (
            f"{where}: undocumented {sorted(set(value) - documented)}, missing {sorted(documented - set(value))}"
        )
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            _check(item, child, spec[child], spec, seen)
    elif kind == "array":
        assert isinstance(value, list), f"{where} is not an array"
        for item in value:
            _check(item, f"{path}[]", "object", spec, seen)
    else:
        raise AssertionError(f"{where}: unknown type {declared!r} in {SPEC.name}")


class Contract:
    """Checks documents of one section and remembers which documented paths real output reached."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.spec = SPECS[section]
        self.seen: set[str] = set()

    def check(self, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        document = json.loads(proc.stdout)  # one object, nothing else on stdout
        _check(document, "", "object", self.spec, self.seen)
        assert document["schemaVersion"] == 1
        return dict(document)

    def assert_covered(self) -> None:
        """Every documented path occurred in some real output (arrays were not all empty)."""
        missing = set(self.spec) - self.seen
        assert not missing, f"{self.section}: documented but never produced: {sorted(missing)}"


def succeed(contract: Contract, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = run_in_process(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    document = contract.check(proc)
    assert document["command"] == contract.section
    return document


def fail(command: str, code: int, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A failing ``--json`` run: the error document on stdout, the one-line error on stderr."""
    proc = run_in_process(*args, env=env)
    line = assert_clean_error(proc, code)
    document = Contract("error").check(proc)
    error = document["error"]
    assert document["command"] == command and error["exitCode"] == code
    assert line == f"dtbundle: error: {error['message']}" or line.startswith(f"dtbundle: error: {error['message']} (")
    assert getattr(errors, error["kind"]).exit_code == code, error  # a dtbundle error class, of that code
    return dict(error)


@pytest.fixture
def cosign_pub(signing_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> Path:
    return write_pub(signing_key, tmp_path / "cosign.pub")


@pytest.fixture
def other_keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path / "other")
    return tmp_path / "other"


# -- the document itself ----------------------------------------------------------------------------------
def test_the_spec_documents_every_command_with_the_common_rules() -> None:
    assert set(SPECS) == {*COMMANDS, "error"}
    for section, spec in SPECS.items():
        assert spec["schemaVersion"] == "integer"
        assert spec["command"] == ("string|null" if section == "error" else "string")
        for path, declared in spec.items():
            key = path.rsplit(".", 1)[-1].removesuffix("[]")
            assert re.fullmatch(r"[a-z][a-zA-Z0-9]*", key), f"{section}: {path} is not camelCase"
            if re.search(r"size|bytes", key, re.IGNORECASE):
                assert key.endswith("Bytes") and declared == "integer", f"{section}: {path} is a size"
    for section in ("export", "verify", "inspect", "import"):
        assert "bundleKey" in SPECS[section], section
    # One path, one type, in every command that has it.
    types: dict[str, set[str]] = {}
    for section in COMMANDS:
        for path, declared in SPECS[section].items():
            types.setdefault(path, set()).add(declared)
    assert {p: t for p, t in types.items() if len(t) > 1 and p != "bundleKey"} == {}


def test_counter_keys_come_from_the_enums() -> None:
    assert _children(SPECS["import"], "counts") == {camel(c.name) for c in Count}
    kinds = {camel(k.name) for k in ArtifactKind if k != ArtifactKind.IMAGE}
    for section in ("export", "inspect"):
        for path in ("attachmentCounts", "images[].attachmentCounts"):
            assert _children(SPECS[section], path) == kinds, (section, path)
    for section in ("export", "verify", "import"):
        assert _children(SPECS[section], "imageSignatures.counts") == {str(s) for s in ImageStatus}


# -- each command against its section ---------------------------------------------------------------------
def test_resolve(seeded: list[images.SampleImage]) -> None:
    contract = Contract("resolve")
    document = succeed(contract, "resolve", "--plain-http", "--json", *(str(i.ref) for i in seeded))
    assert [i["digest"] for i in document["images"]] == [i.digest for i in seeded]
    contract.assert_covered()
    assert fail("resolve", 2, "resolve", "--json", "Bad//Ref")["kind"] == "InvalidReferenceError"


def test_export_verify_inspect(
    plain_registry: RegistryServer, seeded: list[images.SampleImage], exported: Exported, cosign_pub: Path,
    other_keys: Path, tmp_path: Path,
) -> None:  # fmt: skip
    signed = [str(i.ref) for i in seeded if i.signed]
    out = tmp_path / "signed.tar.zst"
    export = Contract("export")
    common = ("--plain-http", "--json", "--signing-key", str(exported.key))
    cache = ("--cache-dir", str(tmp_path / "cache"))
    made = succeed(export, "export", *common, "-o", str(out), *cache, "--cosign-key", str(cosign_pub), *signed)
    assert made["cache"] == {"blobs": 0, "blobBytes": 0, "redownloaded": 0}  # a new cache: everything downloaded
    assert made["compressedBytes"] == out.stat().st_size and made["counts"]["images"] == len(signed)
    assert made["imageSignatures"]["result"] == "passed"
    assert made["attachmentCounts"]["cosignSig"] > 0 and made["attachmentCounts"]["referrer"] == 0  # zero kept
    export.assert_covered()
    assert "--force" in fail("export", 2, "export", *common, "-o", str(out), signed[0])["message"]
    assert fail("export", 2, "export", "--json", "--frob")["kind"] == "UsageError"  # the option parser's

    verify = Contract("verify")
    checked = succeed(verify, "verify", "--json", "--public-key", str(exported.pub), "--cosign-key",
                      str(cosign_pub), str(exported.path))  # fmt: skip
    unchecked = succeed(verify, "verify", "--json", "--public-key", str(exported.pub), str(exported.path))
    first = volume_set(exported, signed[:1], tmp_path)[0]
    one = succeed(verify, "verify", "--json", "--public-key", str(exported.pub), str(first))
    assert one["volumes"]["given"] == [1] and unchecked["volumes"] is None
    verify.assert_covered()
    assert checked["bundleKey"] == made["bundleKey"] == unchecked["bundleKey"]
    unsigned = sum(1 for i in seeded if not i.signed)
    assert checked["imageSignatures"]["counts"] == {
        "verified": len(signed), "unsignedByDesign": 0, "unsigned": unsigned, "rejected": 0
    }  # fmt: skip
    assert checked["imageSignatures"]["result"] == "failed"
    assert unchecked["imageSignatures"] == {
        "result": "notChecked", "counts": dict.fromkeys(["verified", "unsignedByDesign", "unsigned", "rejected"], 0),
        "images": [],
    }  # fmt: skip
    wrong_key = ("--json", "--public-key", str(other_keys / "dtbundle.pub"), str(exported.path))
    assert fail("verify", 3, "verify", *wrong_key)["kind"] in {c.__name__ for c in _integrity_errors()}
    refused = fail("verify", 3, "verify", "--json", "--public-key", str(exported.pub), "--cosign-key",
                   str(cosign_pub), "--require-signatures", str(exported.path))  # fmt: skip
    assert refused["kind"] == "PolicyError"

    inspect = Contract("inspect")
    seen = succeed(inspect, "inspect", "--json", "--public-key", str(exported.pub), str(exported.path))
    assert succeed(inspect, "inspect", "--json", str(out))["bundleKey"] is None
    inspect.assert_covered()
    assert seen["bundleKey"] == made["bundleKey"]
    assert [i["digest"] for i in seen["images"]] == [i.digest for i in seeded]
    assert fail("inspect", 3, "inspect", *wrong_key)["kind"] in {c.__name__ for c in _integrity_errors()}


def volume_set(exported: Exported, refs: list[str], tmp_path: Path) -> list[Path]:
    """The sample images (or ``refs``) as volumes of 2 MiB."""
    out = tmp_path / f"vol-{uuid.uuid4().hex[:6]}.tar.zst"
    refs = refs or [str(i.ref) for i in exported.images]
    proc = run_in_process("export", "--plain-http", "--signing-key", str(exported.key), "-o", str(out),
                          "--volume-size", "2MiB", "--json", *refs)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [Path(v["bundle"]) for v in json.loads(proc.stdout)["written"]]


def test_inventory(plain_registry: RegistryServer, exported: Exported, tmp_path: Path) -> None:
    contract = Contract("inventory")
    where = f"{plain_registry.address}/{exported.images[0].ref.repository.split('/')[0]}"
    made = succeed(contract, "inventory", "--plain-http", "--json", "--registry", where, "-o", str(tmp_path / "i.json"),
                   "--signing-key", str(exported.key))  # fmt: skip
    assert made["counts"]["blobs"] > 0 and made["signature"]
    gone = succeed(contract, "inventory", "--plain-http", "--json", "--registry", where, "--repository", "nothing/here",
                   "-o", str(tmp_path / "j.json"))  # fmt: skip
    assert gone["signature"] is None and gone["bundleKey"] is None
    contract.assert_covered()


def _integrity_errors() -> Iterator[type[errors.DtbundleError]]:
    stack: list[type[errors.DtbundleError]] = [errors.IntegrityError]
    while stack:
        cls = stack.pop()
        yield cls
        stack += cls.__subclasses__()


def test_import(plain_registry: RegistryServer, exported: Exported, cosign_pub: Path, tmp_path: Path) -> None:
    contract = Contract("import")
    where = f"{plain_registry.address}/json-{uuid.uuid4().hex[:8]}"
    base = ("import", "--plain-http", "--json", "--public-key", str(exported.pub))
    planned = succeed(contract, *base, "--registry", where, "--dry-run", str(exported.path))
    assert planned["dryRun"] and {p["state"] for p in planned["plan"]} == {"new"}
    assert planned["stateRecorded"] is False and not Path(planned["stateFile"]).exists()  # a dry run records nothing
    done = succeed(contract, *base, "--cosign-key", str(cosign_pub), "--registry", where, str(exported.path))
    volumes = succeed(contract, *base, "--registry", where + "-vol", *map(str, volume_set(exported, [], tmp_path)))
    assert volumes["volumes"]["missing"] == [] and volumes["waiting"] == [] and done["volumes"] is None
    contract.assert_covered()
    assert done["counts"]["tagsPushed"] > 0 and done["counts"]["tagsOverwritten"] == 0 and done["plan"] == []
    assert done["imageSignatures"]["result"] == "failed"  # the sample set has an unsigned image
    assert done["stateRecorded"] is True and Path(done["stateFile"]).is_file()
    # Every counter, zero included, also when nothing happens.
    layout = tmp_path / "layout"
    for _ in range(2):
        again = succeed(contract, *base, "--to-oci", str(layout), str(exported.path))
    assert set(again["counts"]) == {camel(c.name) for c in Count}
    assert again["counts"]["indexEntriesAdded"] == 0 and again["counts"]["indexEntriesUnchanged"] > 0
    assert again["toLayout"] and again["uploadedBytes"] == 0
    assert fail("import", 2, "import", "--json", "--registry", where, str(exported.path))["kind"] == "UsageError"
    refused = fail("import", 3, *base, "--cosign-key", str(cosign_pub), "--require-signatures", "--registry",
                   where, "--dry-run", str(exported.path))  # fmt: skip
    assert refused["kind"] == "PolicyError"


def test_dynatrace_versions(plain_registry: RegistryServer, signing_key: ec.EllipticCurvePrivateKey) -> None:
    contract = Contract("dynatrace versions")
    prefix = f"dtv{uuid.uuid4().hex[:6]}"
    with make_client(plain_registry, user=None) as client:
        dtsandbox.seed_public(client, plain_registry.address, signing_key, prefix)
    where = ("--plain-http", "--dynatrace-registry", f"{plain_registry.address}/{prefix}")
    api = dtsandbox.DeploymentApi(API_TOKEN)
    try:
        args = ("dynatrace", "versions", "--json", *where, "--environment-url", api.url)
        document = succeed(contract, *args, env={"DT_API_TOKEN": API_TOKEN})
        assert document["versions"] == dtsandbox.AVAILABLE_ONEAGENT
        assert document["latest"] == dtsandbox.AVAILABLE_ONEAGENT[-1]
        assert document["components"][0]["newest"] == dtsandbox.NEWER_OPERATOR and document["release"] == "1.305.57"
        assert "DT_API_TOKEN" in fail("dynatrace versions", 2, *args)["message"]
    finally:
        api.stop()
    registry_only = succeed(contract, "dynatrace", "versions", "--json", *where)
    assert registry_only["environmentUrl"] is None and registry_only["versions"] == []
    assert {m["component"] for m in registry_only["matchingSet"]} == set(dtsandbox.ALL_VERSIONS)
    contract.assert_covered()
    assert fail("dynatrace versions", 2, "dynatrace", "versions", "--json", "--environment-url")["kind"] == "UsageError"


def test_a_command_line_naming_no_command_still_gets_a_document() -> None:
    assert fail("keygen", 2, "keygen", "--json")["kind"] == "UsageError"  # keygen has no --json
    proc = run_in_process("--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["command"] is None


# -- text verdicts ----------------------------------------------------------------------------------------
def test_verify_says_ok_only_when_the_signature_policy_passed(
    exported: Exported, cosign_pub: Path, signing_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    args = ("verify", "--public-key", str(exported.pub), str(exported.path))
    signed = sum(1 for i in exported.images if i.signed)
    total = len(exported.images)

    failed = run_in_process(*args, "--cosign-key", str(cosign_pub))
    assert failed.returncode == 0, failed.stderr
    head, verdict = failed.stdout.splitlines()[:2]
    assert "OK" not in head and "FAILED" in head
    assert verdict.strip() == (
        f"image signatures: {signed} of {total} verified, 0 unsigned by design, {total - signed} unsigned, "
        "0 rejected: the policy FAILED (--require-signatures refuses this)"
    )

    stranger = write_pub(ec.generate_private_key(ec.SECP256R1()), tmp_path / "stranger.pub")
    rejected = run_in_process(*args, "--cosign-key", str(stranger))
    head, verdict = rejected.stdout.splitlines()[:2]
    assert "OK" not in head and f"0 of {total} verified" in verdict and f"{signed} rejected" in verdict

    unchecked = run_in_process(*args)
    assert unchecked.stdout.startswith(f"{exported.path}: OK") and "not checked" in unchecked.stdout


def test_import_reports_the_signature_policy(exported: Exported, cosign_pub: Path, tmp_path: Path) -> None:
    proc = run_in_process("import", "--public-key", str(exported.pub), "--cosign-key", str(cosign_pub),
                          "--to-oci", str(tmp_path / "layout"), "--dry-run", str(exported.path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "image signatures FAILED the policy" in proc.stdout.splitlines()[0]
    assert any(line.strip().startswith("image signatures: ") for line in proc.stdout.splitlines())
