"""Manifests, blobs, tags and referrers against a real distribution registry, with skopeo
as a second opinion."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from dtbundle import oci
from dtbundle.errors import DigestMismatchError, NotFoundError, RegistryError
from dtbundle.oci import Descriptor, Platform, sha256_digest
from dtbundle.registry import RegistryClient
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.registries import make_client, ref_in, sample


@pytest.fixture
def client(plain_registry: RegistryServer) -> RegistryClient:
    with make_client(plain_registry, user=None) as c:
        yield c  # type: ignore[misc]


def _skopeo_raw(skopeo: str, ref: str) -> bytes:
    proc = subprocess.run(
        [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_manifest_by_tag_matches_skopeo_digest_and_bytes(
    client: RegistryClient, seeded: list[images.SampleImage], skopeo: str
) -> None:
    for image in seeded:
        manifest = client.get_manifest(image.ref)
        raw = _skopeo_raw(skopeo, str(image.ref))
        assert manifest.data == raw
        assert manifest.digest == "sha256:" + hashlib.sha256(raw).hexdigest() == image.digest
        assert manifest.media_type == image.manifest.media_type


def test_media_types_cover_oci_and_docker_indexes_and_images(
    client: RegistryClient, seeded: list[images.SampleImage]
) -> None:
    kinds = {client.get_manifest(i.ref).media_type for i in seeded}
    assert kinds == {oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST}
    agent = sample(seeded, "agent")
    platforms = [str(d.platform) for d in client.get_manifest(agent.ref).parsed.manifests]
    assert platforms == ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"]


def test_manifest_by_digest_is_verified_and_platform_children_resolve(
    client: RegistryClient, seeded: list[images.SampleImage]
) -> None:
    index = sample(seeded, "operator")
    for child in client.get_manifest(index.ref).parsed.manifests:
        manifest = client.get_manifest(index.ref.with_tag(None).with_digest(child.digest))
        assert manifest.digest == child.digest and manifest.size == child.size
        assert manifest.parsed.config is not None


def test_head_manifest_reports_descriptor_or_none(client: RegistryClient, seeded: list[images.SampleImage]) -> None:
    image = sample(seeded, "agent")
    desc = client.head_manifest(image.ref)
    assert desc is not None
    assert (desc.digest, desc.size, desc.media_type) == (
        image.digest,
        len(image.manifest.data),
        image.manifest.media_type,
    )
    assert client.head_manifest(image.ref.with_tag("no-such-tag")) is None


def test_missing_manifest_error_names_the_reference(
    client: RegistryClient, plain_registry: RegistryServer, repo: str
) -> None:
    ref = ref_in(plain_registry, repo, "1.0")
    with pytest.raises(NotFoundError) as info:
        client.get_manifest(ref)
    assert str(ref) in str(info.value) and info.value.exit_code == 1


def test_put_manifest_keeps_bytes_and_content_type(
    client: RegistryClient, plain_registry: RegistryServer, repo: str, skopeo: str
) -> None:
    built = images.build_image(Platform("linux", "amd64"), [images.make_layer("put", 2048)], docker=True)
    # Unusual but valid formatting: the registry must store exactly these bytes.
    data = json.dumps(json.loads(built.data), indent=7, sort_keys=True).encode() + b"\n"
    ref = ref_in(plain_registry, repo, "odd-format")
    for blob in built.blobs:
        assert client.upload_blob(ref, blob.descriptor, lambda b=blob: io.BytesIO(b.data)) == "uploaded"
    result = client.put_manifest(ref, data, oci.DOCKER_MANIFEST)
    assert result.digest == sha256_digest(data)
    fetched = client.get_manifest(ref)
    assert fetched.data == data and fetched.media_type == oci.DOCKER_MANIFEST
    assert _skopeo_raw(skopeo, str(ref)) == data


def test_blob_download_streams_and_verifies(
    client: RegistryClient, seeded: list[images.SampleImage], tmp_path: Path
) -> None:
    operator = sample(seeded, "operator")
    image, ref = operator.manifest.children[0], operator.ref
    for blob in image.blobs:
        dest = tmp_path / blob.descriptor.digest.replace(":", "-")
        seen: list[int] = []
        client.fetch_blob(ref, blob.descriptor, dest, progress=seen.append)
        assert dest.read_bytes() == blob.data and sum(seen) == len(blob.data)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dl-")] == []


def test_blob_with_wrong_digest_is_rejected_and_leaves_no_file(
    client: RegistryClient, seeded: list[images.SampleImage], tmp_path: Path
) -> None:
    operator = sample(seeded, "operator")
    blob = operator.manifest.children[0].blobs[1]
    other = operator.manifest.children[1].blobs[2]
    # Ask for blob A's bytes while claiming blob B's digest: same size is not enough.
    liar = Descriptor(blob.media_type, blob.descriptor.digest, other.descriptor.size)
    dest = tmp_path / "out"
    with pytest.raises(DigestMismatchError):
        client.fetch_blob(operator.ref, liar, dest)
    assert list(tmp_path.iterdir()) == []


def test_blob_exists_check(
    client: RegistryClient,
    seeded: list[images.SampleImage],
    plain_registry: RegistryServer,
    repo: str,
) -> None:
    operator = sample(seeded, "operator")
    blob = operator.manifest.children[0].blobs[0]
    assert client.blob_size(operator.ref, blob.descriptor.digest) == blob.descriptor.size
    assert client.blob_size(ref_in(plain_registry, repo), blob.descriptor.digest) is None


def test_upload_skips_existing_and_mounts_across_repositories(
    client: RegistryClient, plain_registry: RegistryServer, repo: str
) -> None:
    data = os.urandom(5000)
    desc = Descriptor("application/octet-stream", sha256_digest(data), len(data))
    src, dst = ref_in(plain_registry, repo + "/src"), ref_in(plain_registry, repo + "/dst")
    assert client.upload_blob(src, desc, lambda: io.BytesIO(data)) == "uploaded"
    assert client.upload_blob(src, desc, lambda: io.BytesIO(data)) == "exists"
    assert client.upload_blob(dst, desc, lambda: io.BytesIO(data), mount_from=src.repository) == "mounted"
    assert client.get_blob_bytes(dst, desc) == data


def test_mount_from_repository_without_blob_falls_back_to_upload(
    client: RegistryClient, plain_registry: RegistryServer, repo: str
) -> None:
    data = os.urandom(3000)
    desc = Descriptor("application/octet-stream", sha256_digest(data), len(data))
    dst = ref_in(plain_registry, repo + "/dst")
    outcome = client.upload_blob(dst, desc, lambda: io.BytesIO(data), mount_from=repo + "/empty")
    assert outcome == "uploaded" and client.get_blob_bytes(dst, desc) == data


def test_chunked_upload_of_large_blob(plain_registry: RegistryServer, repo: str, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "big"
    path.write_bytes(data)
    desc = Descriptor("application/octet-stream", sha256_digest(data), len(data))
    ref = ref_in(plain_registry, repo)
    progress: list[int] = []
    with make_client(
        plain_registry, user=None, monolithic_upload_max=1024 * 1024, upload_chunk_bytes=1024 * 1024
    ) as client:
        assert client.upload_blob(ref, desc, lambda: path.open("rb"), progress=progress.append) == "uploaded"
        assert sum(progress) == len(data) and len(progress) == 4
        out = io.BytesIO()
        client.download_blob(ref, desc, out)
    assert out.getvalue() == data


def test_upload_of_content_not_matching_digest_is_refused(
    client: RegistryClient, plain_registry: RegistryServer, repo: str
) -> None:
    data = os.urandom(100)
    desc = Descriptor("application/octet-stream", sha256_digest(b"something else" + data[14:]), len(data))
    with pytest.raises(RegistryError) as info:
        client.upload_blob(ref_in(plain_registry, repo), desc, lambda: io.BytesIO(data))
    assert "DIGEST_INVALID" in str(info.value)
    assert client.blob_size(ref_in(plain_registry, repo), desc.digest) is None


def test_tags_list_follows_link_pagination(client: RegistryClient, plain_registry: RegistryServer, repo: str) -> None:
    built = images.build_image(Platform("linux", "amd64"), [images.make_layer("tags", 512)])
    names = [f"v{i:02d}" for i in range(7)]
    for name in names:
        images.push(client, ref_in(plain_registry, repo, name), built)
    assert sorted(client.list_tags(ref_in(plain_registry, repo), page_size=2)) == names


def test_cosign_signature_tags_are_found(client: RegistryClient, seeded: list[images.SampleImage]) -> None:
    image = sample(seeded, "operator")
    tags = client.list_tags(image.ref)
    for digest in [image.digest, *(c.digest for c in image.manifest.children)]:
        assert oci.referrers_tag(digest) + ".sig" in tags


def test_referrers_fall_back_to_tag_schema_on_a_registry_without_the_api(
    client: RegistryClient, plain_registry: RegistryServer, repo: str
) -> None:
    subject = images.build_image(Platform("linux", "amd64"), [images.make_layer("subj", 256)])
    ref = ref_in(plain_registry, repo, "1")
    images.push(client, ref, subject)
    assert client.list_referrers(ref, subject.digest).source == "none"
    # An OCI 1.1 artifact with a subject, and the fallback index cosign v3 writes.
    empty = images.Blob(oci.OCI_EMPTY, b"{}")
    bundle = images.Blob(oci.SIGSTORE_BUNDLE_V03, b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}')
    artifact = images.BuiltManifest(
        oci.OCI_MANIFEST,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": oci.OCI_MANIFEST,
                "artifactType": oci.SIGSTORE_BUNDLE_V03,
                "config": empty.descriptor.to_json(),
                "layers": [bundle.descriptor.to_json()],
                "subject": subject.descriptor().to_json(),
            }
        ).encode(),
        [empty, bundle],
    )
    images.push(client, ref.with_tag(None), artifact)
    art_desc = Descriptor(oci.OCI_MANIFEST, artifact.digest, len(artifact.data), artifact_type=oci.SIGSTORE_BUNDLE_V03)
    fallback = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [art_desc.to_json()]}).encode()
    client.put_manifest(ref.with_tag(oci.referrers_tag(subject.digest)), fallback, oci.OCI_INDEX)
    found = client.list_referrers(ref, subject.digest)
    assert found.source == "tag-schema" and found.descriptors == (art_desc,)
    assert client.list_referrers(ref, subject.digest, artifact_type="application/x-other").descriptors == ()


def test_content_type_decides_when_the_body_has_no_media_type(
    client: RegistryClient, plain_registry: RegistryServer, repo: str
) -> None:
    # OCI allows manifests without a mediaType field: the PUT's Content-Type is what the
    # registry stores and serves back, and what we report.
    child = images.build_image(Platform("linux", "amd64"), [images.make_layer("ct", 128)])
    ref = ref_in(plain_registry, repo, "bare")
    images.push(client, ref.with_tag(None), child)
    bare = json.dumps({"schemaVersion": 2, "manifests": [child.descriptor().to_json()]}).encode()
    client.put_manifest(ref, bare, oci.OCI_INDEX)
    fetched = client.get_manifest(ref)
    assert fetched.media_type == oci.OCI_INDEX and fetched.data == bare
    assert client.head_manifest(ref).media_type == oci.OCI_INDEX  # type: ignore[union-attr]
