"""Image signatures end to end against the real registry: verified at export, again offline at
verify and import time; wrong keys and swapped indexes rejected with --require-signatures,
leaving nothing tagged."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle import oci
from dtbundle.bundle.reader import open_bundle
from dtbundle.oci import Platform
from dtbundle.oci.reference import Reference
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from dtbundle.trust.keys import key_fingerprint, load_verify_key
from tests.support.artifacts import write_pub
from tests.support.cli import assert_clean_error, run, run_in_process
from tests.support.registries import Exported, make_client


@pytest.fixture
def cosign_pub(signing_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> Path:
    return write_pub(signing_key, tmp_path / "cosign.pub")


def test_export_verifies_and_records_signatures(
    seeded: list[images.SampleImage], exported: Exported, cosign_pub: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.tar.zst"
    proc = run(
        "export",
        "--plain-http",
        "--json",
        "--signing-key",
        str(exported.key),
        "-o",
        str(out),
        "--cosign-key",
        str(cosign_pub),
        *(str(i.ref) for i in seeded),
    )
    assert proc.returncode == 0, proc.stderr
    report = {v["image"]: v for v in json.loads(proc.stdout)["imageSignatures"]["images"]}
    fingerprint = "key " + key_fingerprint(load_verify_key(cosign_pub.read_bytes(), "cosign.pub"))
    with open_bundle(out, None) as reader:
        recorded = {i.source: i.verification for i in reader.catalog.images}
    for image in seeded:
        assert report[str(image.ref)]["verified"] is image.signed
        assert recorded[str(image.ref)] is not None
        assert recorded[str(image.ref)]["verified"] is image.signed
        if image.signed:
            assert recorded[str(image.ref)]["signers"] == [fingerprint]
            # The seed signs the index and each platform: both cover every platform.
            assert set(report[str(image.ref)]["platforms"].values()) <= {"index+own"} or not image.manifest.children
    # Unsigned images are reported, not rejected, without --require-signatures.
    assert (
        "NOT VERIFIED"
        in run("verify", "--public-key", str(exported.pub), "--cosign-key", str(cosign_pub), str(out)).stdout
    )


def test_require_signatures_refuses_unsigned_at_export(
    seeded: list[images.SampleImage], exported: Exported, cosign_pub: Path, tmp_path: Path
) -> None:
    unsigned = next(i for i in seeded if not i.signed)
    line = assert_clean_error(
        run(
            "export",
            "--plain-http",
            "--signing-key",
            str(exported.key),
            "-o",
            str(tmp_path / "b.tar.zst"),
            "--cosign-key",
            str(cosign_pub),
            "--require-signatures",
            str(unsigned.ref),
        ),
        3,
    )
    assert str(unsigned.ref) in line and "no valid signature" in line
    assert list(tmp_path.iterdir()) == [cosign_pub]


def test_verify_and_import_check_signatures_offline(
    exported: Exported, cosign_pub: Path, plain_registry: RegistryServer
) -> None:
    signed = [str(i.ref) for i in exported.images if i.signed]
    proc = run(
        "verify", "--json", "--public-key", str(exported.pub), "--cosign-key", str(cosign_pub), str(exported.path)
    )
    assert proc.returncode == 0
    verdicts = {v["image"]: v["verified"] for v in json.loads(proc.stdout)["imageSignatures"]["images"]}
    assert {name for name, ok in verdicts.items() if ok} == set(signed)
    where = f"{plain_registry.address}/{uuid.uuid4().hex[:8]}"
    proc = run(
        "import",
        "--plain-http",
        "--json",
        "--public-key",
        str(exported.pub),
        "--cosign-key",
        str(cosign_pub),
        "--registry",
        where,
        str(exported.path),
    )
    assert proc.returncode == 0, proc.stderr
    assert {v["image"] for v in json.loads(proc.stdout)["imageSignatures"]["images"] if v["verified"]} == set(signed)


def _tagged_nothing(server: RegistryServer, where: str, repository: str) -> bool:
    host, _, prefix = where.partition("/")
    with make_client(server, user=None) as client:
        return client.head_manifest(Reference(host, f"{prefix}/{repository}", "1.0")) is None


@pytest.mark.parametrize("attack", ["other-key", "index-swapped"])
def test_rejected_signatures_leave_nothing_tagged(
    plain_registry: RegistryServer,
    exported: Exported,
    cosign_pub: Path,
    signing_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
    attack: str,
) -> None:
    repo = f"attack/{uuid.uuid4().hex[:8]}"
    ref = Reference(plain_registry.address, repo, "1.0")
    genuine = images.build_index(
        [images.build_image(Platform("linux", a), [images.make_layer(a + repo, 900)]) for a in ("amd64", "arm64")]
    )
    with make_client(plain_registry, user=None) as client:
        if attack == "other-key":
            images.push(client, ref, genuine)
            forged = images.cosign_signature(ref.name, genuine.digest, ec.generate_private_key(ec.SECP256R1()))
            images.push(client, ref.with_tag(oci.referrers_tag(genuine.digest) + ".sig"), forged)
        else:
            # Signed genuinely, then the index replaced and the old signature copied to the new digest.
            images.push(client, ref.with_tag(None), genuine)
            sig = images.cosign_signature(ref.name, genuine.digest, signing_key)
            evil = images.build_index(
                [
                    *genuine.children,
                    images.build_image(Platform("linux", "s390x"), [images.make_layer("implant" + repo, 900)]),
                ]
            )
            images.push(client, ref, evil)
            images.push(client, ref.with_tag(oci.referrers_tag(evil.digest) + ".sig"), sig)
    args = ["--cosign-key", str(cosign_pub), "--require-signatures"]
    line = assert_clean_error(
        run(
            "export",
            "--plain-http",
            "--signing-key",
            str(exported.key),
            "-o",
            str(tmp_path / "x.tar.zst"),
            *args,
            str(ref),
        ),
        3,
    )
    assert ("does not verify" if attack == "other-key" else "signature is for") in line
    # Exported without checking, the same content is stopped again on the air-gapped side.
    bundle = tmp_path / "unchecked.tar.zst"
    assert (
        run("export", "-q", "--plain-http", "--signing-key", str(exported.key), "-o", str(bundle), str(ref)).returncode
        == 0
    )
    assert_clean_error(run("verify", "--public-key", str(exported.pub), *args, str(bundle)), 3)
    where = f"{plain_registry.address}/{uuid.uuid4().hex[:8]}"
    assert_clean_error(
        run("import", "--plain-http", "--public-key", str(exported.pub), *args, "--registry", where, str(bundle)), 3
    )
    assert _tagged_nothing(plain_registry, where, repo)


def test_policy_option_errors(exported: Exported, tmp_path: Path) -> None:
    assert "--cosign-key" in assert_clean_error(
        run_in_process("verify", "--public-key", str(exported.pub), "--require-signatures", str(exported.path)), 2
    )
    assert "--trusted-root" in assert_clean_error(
        run_in_process("verify", "--public-key", str(exported.pub), "--certificate-identity", "x", str(exported.path)),
        2,
    )
    bad = tmp_path / "root.json"
    bad.write_text("{}")
    assert "--certificate-identity" in assert_clean_error(
        run_in_process("verify", "--public-key", str(exported.pub), "--trusted-root", str(bad), str(exported.path)), 2
    )
    assert "regular expression" in assert_clean_error(
        run_in_process(
            "verify",
            "--public-key",
            str(exported.pub),
            "--trusted-root",
            str(bad),
            "--certificate-identity-regexp",
            "([",
            str(exported.path),
        ),
        2,
    )


def test_signatures_still_verify_at_the_private_registry(
    exported: Exported, cosign_pub: Path, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    # Byte for byte means the cosign signatures verify against the private registry too: export
    # (which verifies from a registry) run against the imported copies finds them all valid.
    where = f"{plain_registry.address}/{uuid.uuid4().hex[:8]}"
    assert (
        run(
            "import", "--plain-http", "--public-key", str(exported.pub), "--registry", where, str(exported.path)
        ).returncode
        == 0
    )
    signed = [i for i in exported.images if i.signed]
    mirrored = [f"{where}/{i.ref.repository}:{i.ref.tag}" for i in signed]
    proc = run(
        "export",
        "--plain-http",
        "--json",
        "--signing-key",
        str(exported.key),
        "-o",
        str(tmp_path / "again.tar.zst"),
        "--cosign-key",
        str(cosign_pub),
        "--require-signatures",
        *mirrored,
    )
    assert proc.returncode == 0, proc.stderr
    verdicts = json.loads(proc.stdout)["imageSignatures"]["images"]
    assert [v["digest"] for v in verdicts] == [i.digest for i in signed]
    assert all(v["verified"] for v in verdicts)
