"""Import against real registries: byte-for-byte round trips (checked with skopeo), mapping,
idempotence, resumption after a kill, tamper resistance, tag immutability, dry run, OCI output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dtbundle import oci
from dtbundle.bundle.format import Catalog
from dtbundle.bundle.key import generate_keys, load_private_key, load_public_key
from dtbundle.errors import NotFoundError, UsageError
from dtbundle.export.requests import requests_from
from dtbundle.export.run import ExportSettings, run_export
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.run import ImportSettings, run_import
from dtbundle.oci import Platform
from dtbundle.oci.reference import Reference
from dtbundle.registry import RegistryClient
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.artifacts import referrer_artifact
from tests.support.bundles import flip_byte, read_entries, write_entries
from tests.support.cli import assert_clean_error, run, run_in_process
from tests.support.registries import PASSWORD, USER, Exported, make_client, sample


def catalog(exported: Exported) -> Catalog:
    from dtbundle.bundle.reader import open_bundle

    with open_bundle(exported.path, None) as reader:
        return reader.catalog


def prefix(server: RegistryServer) -> str:
    return f"{server.address}/{uuid.uuid4().hex[:10]}"


def mirrored(target_prefix: str, source: Reference) -> Reference:
    host, _, path = target_prefix.partition("/")
    return Reference(host, f"{path}/{source.repository}" if path else source.repository, source.tag, source.digest)


def assert_mirror(
    client: RegistryClient,
    target_prefix: str,
    cat: Catalog,
    skopeo: str | None = None,
    tls_args: tuple[str, ...] = ("--tls-verify=false",),
) -> None:
    """Every tag, index, platform manifest and signature/referrer digest equals the source."""
    for image in cat.images:
        target = mirrored(target_prefix, Reference(image.registry, image.repository, image.tag))
        assert client.get_manifest(target).digest == image.digest
        for platform in image.platforms:
            assert client.head_manifest(target.with_tag(None).with_digest(platform.digest)) is not None
        if skopeo:
            raw = subprocess.run(
                [skopeo, "inspect", "--raw", *tls_args, f"docker://{target}"],
                capture_output=True,
                timeout=60,
                check=True,
            ).stdout
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.digest
    for artifact in cat.artifacts:
        target = mirrored(target_prefix, Reference(artifact.registry, artifact.repository, artifact.tag))
        if artifact.tag:
            assert client.get_manifest(target).digest == artifact.digest
        else:
            assert client.get_manifest(target.with_digest(artifact.digest)).digest == artifact.digest


def assert_untouched(client: RegistryClient, target_prefix: str, cat: Catalog) -> None:
    """No tag and no manifest of the bundle exists at the target."""
    for image in cat.images:
        target = mirrored(target_prefix, Reference(image.registry, image.repository, image.tag))
        assert client.head_manifest(target) is None
        assert client.head_manifest(target.with_tag(None).with_digest(image.digest)) is None
        for platform in image.platforms:
            assert client.head_manifest(target.with_tag(None).with_digest(platform.digest)) is None
        with contextlib.suppress(NotFoundError):  # a repository that does not exist has no tags either
            assert client.list_tags(target) == []


@pytest.mark.parametrize("variant", ["plain_registry", "basic_registry", "token_registry", "tls_registry"])
def test_round_trip_is_byte_for_byte(
    exported: Exported, variant: str, request: pytest.FixtureRequest, skopeo: str, tmp_path: Path
) -> None:
    target: RegistryServer = request.getfixturevalue(variant)
    where = prefix(target)
    args = ["import", "--public-key", str(exported.pub), "--registry", where, "--json", str(exported.path)]
    args += ["--ca-cert", str(target.ca_cert)] if target.tls else ["--plain-http"]
    stdin = None
    if target.auth != "none":
        args += ["--username", USER, "--password-stdin"]
        stdin = PASSWORD + "\n"
    proc = run(*args, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    cat = catalog(exported)
    assert report["counts"]["tagsPushed"] == len(cat.images) + len(cat.artifacts)
    assert {i["target"] for i in report["images"]} == {
        f"{mirrored(where, Reference(i.registry, i.repository, i.tag))}@{i.digest}" for i in cat.images
    }
    tls_args: tuple[str, ...] = ("--tls-verify=false",)
    if target.tls:  # skopeo trusts the *.crt files of a directory
        assert target.ca_cert is not None
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "ca.crt").write_bytes(target.ca_cert.read_bytes())
        tls_args = ("--cert-dir", str(tmp_path / "certs"))
    with make_client(target) as client:
        assert_mirror(client, where, cat, skopeo if target.auth == "none" else None, tls_args)
    # Shared blobs: the base layer was uploaded once and mounted into the other repositories.
    assert report["counts"]["blobsUploaded"] == len([f for f in cat.files if f.path.startswith("blobs/")]) - len(
        {a.digest for a in cat.artifacts}
        | {i.digest for i in cat.images}
        | {p.digest for i in cat.images for p in i.platforms}
    )
    assert report["counts"]["blobsMounted"] >= 1


def test_second_run_pushes_nothing(exported: Exported, plain_registry: RegistryServer) -> None:
    where = prefix(plain_registry)
    args = [
        "import",
        "--plain-http",
        "--public-key",
        str(exported.pub),
        "--registry",
        where,
        "--json",
        str(exported.path),
    ]
    assert run(*args).returncode == 0
    again = json.loads(run(*args).stdout)
    counts = again["counts"]
    assert again["uploadedBytes"] == 0
    assert {k for k, n in counts.items() if n} == {"blobsExist", "manifestsExist", "tagsUnchanged"}, counts


@pytest.mark.parametrize(
    ("maps", "expected"),
    [
        ([], "{p}/samples/operator"),
        (["{src}/samples={p}"], "{p}/operator"),
        (["{src}/samples={p}", "{src}/samples/operator={p}/special"], "{p}/special"),
        (["{src}=flat"], "{p}/flat/samples/operator"),
    ],
)
def test_mapping_rules(exported: Exported, plain_registry: RegistryServer, maps: list[str], expected: str) -> None:
    where = prefix(plain_registry)
    operator = sample(exported.images, "operator")
    source = operator.ref
    rules = [m.format(src=source.registry, p=where) for m in maps]
    mapper = RepositoryMapper(where, rules)
    with make_client(plain_registry, user=None) as client:
        run_import(client, ImportSettings(exported.path, [load_public_key(exported.pub)], mapper))
        host, _, path = expected.format(p=where).partition("/")
        target = Reference(host, path, source.tag)
        assert client.get_manifest(target).digest == operator.digest
        sig = target.with_tag(oci.referrers_tag(operator.digest) + ".sig")
        assert client.head_manifest(sig) is not None  # signatures follow their image


def test_mapping_that_merges_two_sources_on_one_tag_is_refused(
    plain_registry: RegistryServer, tmp_path: Path, keys_dir: Path, repo: str
) -> None:
    with make_client(plain_registry, user=None) as client:
        for name, seed in (("a", "one"), ("b", "two")):
            built = images.build_image(Platform("linux", "amd64"), [images.make_layer(seed, 100)])
            images.push(client, Reference(plain_registry.address, f"{repo}/{name}", "1.0"), built)
        bundle = tmp_path / "b.tar.zst"
        run_export(
            client,
            ExportSettings(
                tuple(
                    requests_from([f"{plain_registry.address}/{repo}/a:1.0", f"{plain_registry.address}/{repo}/b:1.0"])
                ),
                bundle,
                load_private_key(keys_dir / "dtbundle.key"),
            ),
        )
        where = prefix(plain_registry)
        mapper = RepositoryMapper(
            where,
            [f"{plain_registry.address}/{repo}/a={where}/same", f"{plain_registry.address}/{repo}/b={where}/same"],
        )
        with pytest.raises(UsageError) as info:
            run_import(client, ImportSettings(bundle, [load_public_key(keys_dir / "dtbundle.pub")], mapper))
    assert "/same:1.0" in str(info.value)


def test_existing_tag_with_other_digest_is_refused_then_overwritten(
    exported: Exported, plain_registry: RegistryServer
) -> None:
    where = prefix(plain_registry)
    image = sample(exported.images, "operator")
    target = mirrored(where, image.ref)
    other = images.build_image(Platform("linux", "amd64"), [images.make_layer("squatter", 100)])
    with make_client(plain_registry, user=None) as client:
        images.push(client, target, other)
    args = ["import", "--plain-http", "--public-key", str(exported.pub), "--registry", where, str(exported.path)]
    line = assert_clean_error(run(*args), 2)
    assert str(target) in line and "--overwrite" in line
    with make_client(plain_registry, user=None) as client:
        assert client.get_manifest(target).digest == other.digest  # untouched
        agent = sample(exported.images, "agent")
        assert client.head_manifest(mirrored(where, agent.ref)) is None  # nothing else moved either
    proc = run(*args, "--overwrite", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"]["tagsOverwritten"] == 1
    with make_client(plain_registry, user=None) as client:
        assert client.get_manifest(target).digest == image.digest


def test_dry_run_pushes_nothing(exported: Exported, plain_registry: RegistryServer) -> None:
    where = prefix(plain_registry)
    proc = run(
        "import",
        "--dry-run",
        "--plain-http",
        "--public-key",
        str(exported.pub),
        "--registry",
        where,
        "--json",
        str(exported.path),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    cat = catalog(exported)
    assert report["dryRun"] and report["counts"]["tagsWouldPush"] == len(cat.images) + len(cat.artifacts)
    assert report["uploadedBytes"] > 0
    with make_client(plain_registry, user=None) as client:
        assert_untouched(client, where, cat)


TAMPERING = ["blob-byte", "catalog-byte", "signature-byte", "truncated", "entry-added", "entry-removed"]


@pytest.mark.parametrize("change", TAMPERING)
def test_tampered_bundle_exits_3_and_moves_no_tag(
    exported: Exported, plain_registry: RegistryServer, tmp_path: Path, change: str
) -> None:
    entries = read_entries(exported.path)
    bad = tmp_path / "bad.tar.zst"
    if change == "truncated":
        data = exported.path.read_bytes()
        bad.write_bytes(data[: len(data) * 9 // 10])
    else:
        if change == "blob-byte":
            i = max(range(len(entries)), key=lambda n: len(entries[n][1]))
            entries[i] = (entries[i][0], flip_byte(entries[i][1], 100))
        elif change == "catalog-byte":
            entries[0] = (entries[0][0], entries[0][1].replace(b'"created": "', b'"created":  "'))
        elif change == "signature-byte":
            doc = json.loads(entries[1][1])
            doc["signature"] = (
                doc["signature"][:10] + ("A" if doc["signature"][10] != "A" else "B") + doc["signature"][11:]
            )
            entries[1] = (entries[1][0], json.dumps(doc).encode())
        elif change == "entry-added":
            entries.append(("blobs/sha256/" + "1" * 64, b"surprise"))
        elif change == "entry-removed":
            del entries[-3]
        write_entries(bad, entries)
    where = prefix(plain_registry)
    assert_clean_error(
        run("import", "--plain-http", "--public-key", str(exported.pub), "--registry", where, str(bad)), 3
    )
    with make_client(plain_registry, user=None) as client:
        assert_untouched(client, where, catalog(exported))


def test_wrong_key_and_missing_key(exported: Exported, plain_registry: RegistryServer, tmp_path: Path) -> None:
    generate_keys(tmp_path)  # just another key pair: no process needed
    where = prefix(plain_registry)
    assert_clean_error(
        run(
            "import",
            "--plain-http",
            "--public-key",
            str(tmp_path / "dtbundle.pub"),
            "--registry",
            where,
            str(exported.path),
        ),
        3,
    )
    # No key at all is a usage error, as on verify.
    assert "--public-key" in assert_clean_error(
        run_in_process("import", "--plain-http", "--registry", where, str(exported.path)), 2
    )
    with make_client(plain_registry, user=None) as client:
        assert_untouched(client, where, catalog(exported))
    proc = run("import", "--plain-http", "--insecure-skip-verify", "--registry", where, str(exported.path))
    assert proc.returncode == 0 and "WARNING" in proc.stderr and "NOT verified" in proc.stdout


def test_to_oci_layout(exported: Exported, tmp_path: Path, skopeo: str) -> None:
    out = tmp_path / "layout"
    proc = run("import", "--public-key", str(exported.pub), "--to-oci", str(out), str(exported.path))
    assert proc.returncode == 0, proc.stderr
    for image in exported.images:
        if image.manifest.media_type in (oci.OCI_INDEX, oci.OCI_MANIFEST):
            raw = subprocess.run(
                [skopeo, "inspect", "--raw", f"oci:{out}:{image.ref}"], capture_output=True, timeout=60, check=True
            ).stdout
            assert raw == image.manifest.data
    assert not list(out.rglob("*.partial"))
    again = run("import", "--public-key", str(exported.pub), "--to-oci", str(out), "--json", str(exported.path))
    counts = json.loads(again.stdout)["counts"]
    assert {k for k, n in counts.items() if n} == {"blobsExist", "indexEntriesUnchanged"}


def _big_bundle(plain_registry: RegistryServer, tmp_path: Path, keys_dir: Path) -> tuple[Path, Reference, list[str]]:
    """A bundle of one 48 MiB two-platform image; also returns the digests of its blobs."""
    layers = [os.urandom(12 * 1024 * 1024) for _ in range(4)]
    children = []
    for n, arch in enumerate(("amd64", "arm64")):
        blobs = [images.Blob(oci.OCI_LAYER_GZIP, layers[n]), images.Blob(oci.OCI_LAYER_GZIP, layers[n + 2])]
        config = images.Blob(oci.OCI_CONFIG, json.dumps({"architecture": arch, "os": "linux"}).encode())
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": oci.OCI_MANIFEST,
                "config": config.descriptor.to_json(),
                "layers": [b.descriptor.to_json() for b in blobs],
            }
        ).encode()
        children.append(
            images.BuiltManifest(oci.OCI_MANIFEST, manifest, [config, *blobs], platform=Platform("linux", arch))
        )
    index = images.build_index(children)
    ref = Reference(plain_registry.address, f"big/{uuid.uuid4().hex[:8]}", "1.0")
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref, index)
        bundle = tmp_path / "big.tar.zst"
        run_export(
            client,
            ExportSettings(
                tuple(requests_from([str(ref)])),
                bundle,
                load_private_key(keys_dir / "dtbundle.key"),
                compression_level=1,
            ),
        )
    return bundle, ref, [b.descriptor.digest for child in children for b in child.blobs]


def test_import_killed_mid_stream_leaves_no_tag_and_resumes(
    plain_registry: RegistryServer, tmp_path: Path, keys_dir: Path
) -> None:
    bundle, ref, blobs = _big_bundle(plain_registry, tmp_path, keys_dir)
    where = prefix(plain_registry)
    target = mirrored(where, ref)
    args = [
        sys.executable,
        "-m",
        "dtbundle",
        "import",
        "--plain-http",
        "--public-key",
        str(keys_dir / "dtbundle.pub"),
        "--registry",
        where,
        str(bundle),
    ]
    with make_client(plain_registry, user=None) as client:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        # Kill it once the registry says the first blob has landed in the target repository, mid-stream.
        while time.monotonic() < deadline and proc.poll() is None:
            if any(client.blob_size(target, digest) is not None for digest in blobs):
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.005)  # a pause between looks that ends early if the import does
        assert proc.poll() is None, "import finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert client.head_manifest(target) is None
        with contextlib.suppress(NotFoundError):  # a repository without manifests may have no tag list at all
            assert client.list_tags(target) == []
    done = run(
        "import",
        "--plain-http",
        "--public-key",
        str(keys_dir / "dtbundle.pub"),
        "--registry",
        where,
        "--json",
        str(bundle),
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert counts["blobsExist"] >= 1 and counts["tagsPushed"] == 1
    with make_client(plain_registry, user=None) as client:
        assert client.get_manifest(target).digest == client.get_manifest(ref).digest


def test_referrers_tag_schema_index_is_reproduced_and_merged(
    plain_registry: RegistryServer, tmp_path: Path, keys_dir: Path, repo: str
) -> None:
    amd = images.build_image(Platform("linux", "amd64"), [images.make_layer("imp-ref", 700)])
    ref = Reference(plain_registry.address, repo, "3.0")
    sbom = referrer_artifact(amd, "application/spdx+json", b'{"spdxVersion":"SPDX-2.3"}')
    desc = oci.Descriptor(oci.OCI_MANIFEST, sbom.digest, len(sbom.data), artifact_type="application/spdx+json")
    fallback = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [desc.to_json()]}).encode()
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref, amd)
        images.push(client, ref.with_tag(None), sbom)
        client.put_manifest(ref.with_tag(oci.referrers_tag(amd.digest)), fallback, oci.OCI_INDEX)
        bundle = tmp_path / "r.tar.zst"
        run_export(
            client,
            ExportSettings(tuple(requests_from([str(ref)])), bundle, load_private_key(keys_dir / "dtbundle.key")),
        )
        keys = [load_public_key(keys_dir / "dtbundle.pub")]

        # A target without the referrers API gets the source's own fallback index, byte for byte.
        where = prefix(plain_registry)
        run_import(client, ImportSettings(bundle, keys, RepositoryMapper(where)))
        target = mirrored(where, ref)
        tag = target.with_tag(oci.referrers_tag(amd.digest))
        assert client.get_manifest(tag).data == fallback
        found = client.list_referrers(target, amd.digest)
        assert found.source == "tag-schema" and [d.digest for d in found.descriptors] == [sbom.digest]

        # A target whose fallback index already lists another referrer keeps it: the indexes merge.
        where2 = prefix(plain_registry)
        target2 = mirrored(where2, ref)
        images.push(client, target2.with_tag(None), amd)
        other = referrer_artifact(amd, "application/vnd.example.report", b"report")
        images.push(client, target2.with_tag(None), other)
        other_desc = oci.Descriptor(
            oci.OCI_MANIFEST, other.digest, len(other.data), artifact_type="application/vnd.example.report"
        )
        client.put_manifest(
            target2.with_tag(oci.referrers_tag(amd.digest)),
            json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [other_desc.to_json()]}).encode(),
            oci.OCI_INDEX,
        )
        run_import(client, ImportSettings(bundle, keys, RepositoryMapper(where2)))
        merged = client.list_referrers(target2, amd.digest)
        assert {d.digest for d in merged.descriptors} == {other.digest, sbom.digest}
