"""Export against real registries: the layout skopeo reads, platforms, signatures, referrers,
shared blobs, and what a failed export leaves behind."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from dtbundle import oci
from dtbundle.bundle.format import Catalog
from dtbundle.bundle.key import load_private_key, load_public_key
from dtbundle.bundle.reader import open_bundle, verify_bundle
from dtbundle.errors import OperationalError, UsageError
from dtbundle.export.requests import load_images_file, requests_from
from dtbundle.export.run import ExportSettings, run_export
from dtbundle.oci import Descriptor, Platform, blob_path, sha256_digest
from dtbundle.oci.reference import Reference
from dtbundle.registry import CredentialResolver, RegistryClient
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.artifacts import referrer_artifact
from tests.support.registries import Exported, fast_config, make_client, ref_in, sample


def extract(bundle: Path, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(f"zstd -dc '{bundle}' | tar -x -C '{dest}'", shell=True, check=True, timeout=120)  # noqa: S602
    return dest


def catalog_of(bundle: Path, pub: Path) -> Catalog:
    return verify_bundle(bundle, [load_public_key(pub)]).catalog


def export(
    client: RegistryClient, refs: list[str], out: Path, key: Path, platforms: list[str] | None = None, **kwargs: object
) -> Catalog:
    settings = ExportSettings(tuple(requests_from(refs, platforms or [])), out, load_private_key(key), **kwargs)  # type: ignore[arg-type]
    run_export(client, settings)
    with open_bundle(out, None) as reader:
        return reader.catalog


@pytest.fixture
def client(plain_registry: RegistryServer) -> RegistryClient:
    with make_client(plain_registry, user=None) as c:
        yield c  # type: ignore[misc]


def test_skopeo_reads_the_layout_and_gets_the_source_bytes(exported: Exported, tmp_path: Path, skopeo: str) -> None:
    layout = extract(exported.path, tmp_path / "x")
    index = json.loads((layout / "index.json").read_text())
    names = {
        m["annotations"].get(oci_ref): m
        for m in index["manifests"]
        for oci_ref in ["org.opencontainers.image.ref.name"]
    }
    for image in exported.images:
        entry = names[str(image.ref)]
        assert entry["digest"] == image.digest and entry["mediaType"] == image.manifest.media_type
        stored = (layout / blob_path(image.digest)).read_bytes()
        assert stored == image.manifest.data
        if image.manifest.media_type in (oci.OCI_INDEX, oci.OCI_MANIFEST):
            proc = subprocess.run(
                [skopeo, "inspect", "--raw", f"oci:{layout}:{image.ref}"], capture_output=True, timeout=60, check=False
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == image.manifest.data
            assert "sha256:" + hashlib.sha256(proc.stdout).hexdigest() == image.digest


def test_skopeo_copies_out_of_the_layout_with_the_same_digests(
    exported: Exported, tmp_path: Path, skopeo: str, plain_registry: RegistryServer, client: RegistryClient
) -> None:
    layout = extract(exported.path, tmp_path / "x")
    for image in exported.images:
        if image.manifest.media_type not in (oci.OCI_INDEX, oci.OCI_MANIFEST):
            continue  # skopeo 1.9 reads only OCI-typed layout entries
        target = ref_in(plain_registry, "copied/" + image.ref.repository.split("/")[-1], "1")
        proc = subprocess.run(
            [
                skopeo,
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                f"oci:{layout}:{image.ref}",
                f"docker://{target}",
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert client.get_manifest(target).digest == image.digest


def test_every_platform_and_signature_is_carried(exported: Exported, client: RegistryClient) -> None:
    catalog = catalog_of(exported.path, exported.pub)
    by_ref = {i.ref_name: i for i in catalog.images}
    signed_subjects = {a.subject for a in catalog.artifacts if a.kind == "cosign.sig"}
    for image in exported.images:
        entry = by_ref[str(image.ref)]
        assert entry.digest == image.digest and entry.original_digest is None
        assert [p.digest for p in entry.platforms] == [c.digest for c in image.manifest.children]
        subjects = {image.digest, *(c.digest for c in image.manifest.children)}
        assert (subjects <= signed_subjects) == image.signed
        assert image.signed or not (subjects & signed_subjects)
    for artifact in catalog.artifacts:
        source = client.get_manifest(Reference(artifact.registry, artifact.repository, artifact.tag))
        assert source.digest == artifact.digest


def test_shared_blobs_are_stored_once(exported: Exported) -> None:
    catalog = catalog_of(exported.path, exported.pub)
    paths = [f.path for f in catalog.files]
    assert len(paths) == len(set(paths))
    base = images.make_layer("base-os", 96 * 1024)  # shared by all 11 platform images
    assert paths.count(blob_path(sha256_digest(base))) == 1
    everything = set()
    for image in exported.images:
        for built in [image.manifest, *image.manifest.children]:
            everything |= {b.descriptor.digest for b in built.blobs} | {built.digest}
    assert everything <= {f.digest for f in catalog.files if f.path.startswith("blobs/")}


def test_platform_filter_trims_the_index_and_records_the_original(
    seeded: list[images.SampleImage], client: RegistryClient, tmp_path: Path, keys_dir: Path, skopeo: str
) -> None:
    operator = sample(seeded, "operator")
    catalog = export(
        client,
        [str(operator.ref)],
        tmp_path / "b.tar.zst",
        keys_dir / "dtbundle.key",
        platforms=["linux/arm64", "linux/arm"],
    )
    (image,) = catalog.images
    assert image.original_digest == operator.digest and image.digest != operator.digest
    assert [p.platform for p in image.platforms] == ["linux/arm64", "linux/arm/v7"]
    carried_sigs = {a.subject for a in catalog.artifacts if a.kind == "cosign.sig"}
    assert carried_sigs == {p.digest for p in image.platforms}  # the index signature cannot apply
    layout = extract(tmp_path / "b.tar.zst", tmp_path / "x")
    raw = subprocess.run(
        [skopeo, "inspect", "--raw", f"oci:{layout}:{operator.ref}"], capture_output=True, timeout=60, check=True
    ).stdout
    assert [m["platform"]["architecture"] for m in json.loads(raw)["manifests"]] == ["arm64", "arm"]


def test_platform_filter_errors(
    seeded: list[images.SampleImage], client: RegistryClient, tmp_path: Path, keys_dir: Path
) -> None:
    with pytest.raises(UsageError) as info:
        export(
            client,
            [str(sample(seeded, "operator").ref)],
            tmp_path / "a.tar.zst",
            keys_dir / "dtbundle.key",
            platforms=["windows/amd64"],
        )
    assert "linux/arm64" in str(info.value)  # lists what there is
    tool = sample(seeded, "tool")
    with pytest.raises(UsageError):
        export(client, [str(tool.ref)], tmp_path / "b.tar.zst", keys_dir / "dtbundle.key", platforms=["linux/arm64"])
    assert not list(tmp_path.iterdir())


def test_images_file(seeded: list[images.SampleImage], client: RegistryClient, tmp_path: Path, keys_dir: Path) -> None:
    collector, agent = sample(seeded, "collector"), sample(seeded, "agent")
    spec = tmp_path / "images.toml"
    spec.write_text(f'images = ["{collector.ref}"]\n\n[[image]]\nref = "{agent.ref}"\nplatforms = ["linux/s390x"]\n')
    requests = load_images_file(spec)
    settings = ExportSettings(tuple(requests), tmp_path / "b.tar.zst", load_private_key(keys_dir / "dtbundle.key"))
    run_export(client, settings)
    with open_bundle(tmp_path / "b.tar.zst", None) as reader:
        got = {i.ref_name: [p.platform for p in i.platforms] for i in reader.catalog.images}
    assert got == {str(collector.ref): ["linux/amd64", "linux/arm64"], str(agent.ref): ["linux/s390x"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("images = [", "not valid TOML"),
        ('[[image]]\nname = "x"\n', "needs ref"),
        ("imgs = []", "unknown key"),
        ('images = ["Bad//Ref"]', "invalid image reference"),
        ("", "names no images"),
        ('platforms = ["linux"]\nimages = ["a.io/b:1"]', "invalid platform"),
    ],
)
def test_images_file_errors(tmp_path: Path, content: str, message: str) -> None:
    spec = tmp_path / "images.toml"
    spec.write_text(content)
    with pytest.raises(UsageError) as info:
        load_images_file(spec)
    assert message in str(info.value)


def test_referrers_tag_schema_and_recursive_signatures_are_carried(
    plain_registry: RegistryServer,
    client: RegistryClient,
    tmp_path: Path,
    keys_dir: Path,
    repo: str,
    signing_key: object,
) -> None:
    amd = images.build_image(Platform("linux", "amd64"), [images.make_layer("ref-amd", 1000)])
    arm = images.build_image(Platform("linux", "arm64"), [images.make_layer("ref-arm", 1000)])
    index = images.build_index([amd, arm])
    ref = ref_in(plain_registry, repo, "2.0")
    images.push(client, ref, index)
    # An SBOM referrer of the amd64 manifest, with the fallback index cosign v3 / oras write,
    sbom = referrer_artifact(amd, "application/spdx+json", b'{"spdxVersion":"SPDX-2.3"}')
    images.push(client, ref.with_tag(None), sbom)
    fallback = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_INDEX,
            "manifests": [
                Descriptor(
                    oci.OCI_MANIFEST, sbom.digest, len(sbom.data), artifact_type="application/spdx+json"
                ).to_json()
            ],
        }
    ).encode()
    client.put_manifest(ref.with_tag(oci.referrers_tag(amd.digest)), fallback, oci.OCI_INDEX)
    # and a cosign signature of that SBOM (a signature of a referrer: depth 2).
    sig = images.cosign_signature(ref.name, sbom.digest, signing_key)  # type: ignore[arg-type]
    images.push(client, ref.with_tag(oci.referrers_tag(sbom.digest) + ".sig"), sig)

    catalog = export(client, [str(ref)], tmp_path / "b.tar.zst", keys_dir / "dtbundle.key")
    kinds = {(a.kind, a.subject, a.digest) for a in catalog.artifacts}
    assert ("referrer", amd.digest, sbom.digest) in kinds
    assert ("referrers-index", amd.digest, sha256_digest(fallback)) in kinds
    assert ("cosign.sig", sbom.digest, sig.digest) in kinds
    layout = extract(tmp_path / "b.tar.zst", tmp_path / "x")
    assert (layout / blob_path(sha256_digest(fallback))).read_bytes() == fallback
    assert (layout / blob_path(sbom.blobs[1].descriptor.digest)).read_bytes() == b'{"spdxVersion":"SPDX-2.3"}'

    plain = export(client, [str(ref)], tmp_path / "c.tar.zst", keys_dir / "dtbundle.key", referrers=False)
    assert plain.artifacts == ()


class FakeApiRegistry:
    """A registry with the OCI 1.1 referrers API (distribution 2.8 has none)."""

    def __init__(self) -> None:
        self.image = images.build_image(Platform("linux", "amd64"), [images.make_layer("api", 500)])
        self.bundle = referrer_artifact(self.image, oci.SIGSTORE_BUNDLE_V03, b'{"mediaType":"sigstore"}')
        self.content = {d.digest: d for d in [self.image, self.bundle]}
        self.blobs = {b.descriptor.digest: b.data for m in self.content.values() for b in m.blobs}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/referrers/" in path:
            found = (
                [
                    Descriptor(
                        oci.OCI_MANIFEST,
                        self.bundle.digest,
                        len(self.bundle.data),
                        artifact_type=oci.SIGSTORE_BUNDLE_V03,
                    ).to_json()
                ]
                if path.endswith(self.image.digest)
                else []
            )
            return httpx.Response(200, json={"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": found})
        last = path.rsplit("/", 1)[1]
        if "/manifests/" in path:
            built = self.image if last == "1.0" else self.content.get(last)
            if built is None:
                return httpx.Response(404)
            return httpx.Response(200, content=built.data, headers={"Content-Type": built.media_type})
        if "/blobs/" in path and last in self.blobs:
            return httpx.Response(200, content=self.blobs[last])
        return httpx.Response(404)


def test_referrers_api_is_used_when_the_registry_has_it(tmp_path: Path, keys_dir: Path) -> None:
    fake = FakeApiRegistry()
    with RegistryClient(
        fast_config(), CredentialResolver(use_config_files=False), transport=httpx.MockTransport(fake)
    ) as client:
        catalog = export(client, ["registry.test/app:1.0"], tmp_path / "b.tar.zst", keys_dir / "dtbundle.key")
    (artifact,) = catalog.artifacts
    assert (artifact.kind, artifact.subject, artifact.digest, artifact.artifact_type) == (
        "referrer",
        fake.image.digest,
        fake.bundle.digest,
        oci.SIGSTORE_BUNDLE_V03,
    )
    # oci-layout, index.json, 2 manifests, image config + layer, empty config + bundle layer
    assert verify_bundle(tmp_path / "b.tar.zst", [load_public_key(keys_dir / "dtbundle.pub")]).files == 8


def test_failed_export_leaves_no_bundle_or_temp_files(
    plain_registry: RegistryServer, client: RegistryClient, tmp_path: Path, keys_dir: Path, repo: str
) -> None:
    built = images.build_image(Platform("linux", "amd64"), [images.make_layer("doomed", 200_000)])
    ref = ref_in(plain_registry, repo, "1")
    images.push(client, ref, built)
    layer = built.blobs[1].descriptor.digest.split(":")[1]
    data = plain_registry.storage / "docker/registry/v2/blobs/sha256" / layer[:2] / layer / "data"
    data.write_bytes(b"corrupted on the registry's disk")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OperationalError):
        export(client, [str(ref)], out / "b.tar.zst", keys_dir / "dtbundle.key")
    assert list(out.iterdir()) == []


def test_existing_output_needs_force(
    seeded: list[images.SampleImage], client: RegistryClient, tmp_path: Path, keys_dir: Path
) -> None:
    tool = sample(seeded, "tool")
    out = tmp_path / "b.tar.zst"
    out.write_bytes(b"precious")
    with pytest.raises(UsageError):
        export(client, [str(tool.ref)], out, keys_dir / "dtbundle.key")
    assert out.read_bytes() == b"precious"
    export(client, [str(tool.ref)], out, keys_dir / "dtbundle.key", force=True)
    assert verify_bundle(out, [load_public_key(keys_dir / "dtbundle.pub")]).files > 0


def test_blob_bytes_are_the_registry_bytes(exported: Exported, tmp_path: Path, client: RegistryClient) -> None:
    layout = extract(exported.path, tmp_path / "x")
    agent = sample(exported.images, "agent")
    image = agent.manifest.children[0]  # a Docker schema2 platform manifest
    for blob in image.blobs:
        out = io.BytesIO()
        client.download_blob(agent.ref, blob.descriptor, out)
        assert (layout / blob_path(blob.descriptor.digest)).read_bytes() == out.getvalue() == blob.data
