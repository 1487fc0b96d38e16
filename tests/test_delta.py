"""Delta bundles (issue 14): an inventory of the target makes export leave out the blobs the target
holds; import checks they are there (mounting them from where the inventory saw them) before it
tags anything, and names each one it cannot find."""

from __future__ import annotations

import gzip
import json
import random
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.key import generate_keys, load_public_key
from dtbundle.bundle.reader import open_bundle
from dtbundle.oci import Platform, referrers_tag
from dtbundle.oci.reference import Reference
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.registries import make_client

LAYER = 300_000


def layer(seed: int) -> bytes:
    return gzip.compress(random.Random(seed).randbytes(LAYER), compresslevel=1, mtime=0)


class Update(NamedTuple):
    refs: dict[str, Reference]
    old: images.BuiltManifest
    new: images.BuiltManifest
    changed: dict[str, int]  # blobs of the new image the old one lacks: digest -> size


@pytest.fixture(scope="module")
def update(plain_registry: RegistryServer, signing_key: ec.EllipticCurvePrivateKey) -> Update:
    """app:1.0 with layers 1-4 and app:1.1 that changes only the top one (layers 1-3, 5), both signed."""
    repo = f"delta/{uuid.uuid4().hex[:8]}/app"
    old = images.build_image(Platform("linux", "amd64"), [layer(n) for n in (1, 2, 3, 4)], label="1.0")
    new = images.build_image(Platform("linux", "amd64"), [layer(n) for n in (1, 2, 3, 5)], label="1.1")
    refs: dict[str, Reference] = {}
    with make_client(plain_registry, user=None) as client:
        for tag, built in (("1.0", old), ("1.1", new)):
            ref = Reference(plain_registry.address, repo, tag)
            images.push(client, ref, built)
            sig = images.cosign_signature(f"{ref.registry}/{repo}", built.digest, signing_key)
            images.push(client, ref.with_tag(referrers_tag(built.digest) + ".sig"), sig)
            refs[tag] = ref
    changed = {b.descriptor.digest: len(b.data) for b in new.blobs}.items() - {
        b.descriptor.digest: len(b.data) for b in old.blobs
    }.items()
    return Update(refs, old, new, dict(changed))


def site_holding(
    registry: RegistryServer, name: str, ref: Reference, keys_dir: Path, tmp_path: Path
) -> tuple[str, Path]:
    """A fresh prefix of ``registry`` that holds ``ref``, imported from a full bundle (returned too)."""
    site = f"{registry.address}/{name}-{uuid.uuid4().hex[:8]}"
    full = tmp_path / "full.tar.zst"
    cli("export", "--plain-http", "--signing-key", str(keys_dir / "dtbundle.key"), "-o", str(full), str(ref))
    cli("import", "--plain-http", "--public-key", str(keys_dir / "dtbundle.pub"), "--registry", site, str(full))
    return site, full


def export_delta(key: str, out: Path, inventory: Path, ref: Reference, *more: str) -> dict[str, object]:
    return cli("export", "--plain-http", "--signing-key", key, "-o", str(out), "--inventory", str(inventory), *more,
               str(ref))  # fmt: skip


def cli(*args: str) -> dict[str, object]:
    proc = run_in_process(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_delta_round_trip_carries_only_what_changed(
    plain_registry: RegistryServer, update: Update, keys_dir: Path, tmp_path: Path
) -> None:
    refs = update.refs
    new = update.new
    key, pub = str(keys_dir / "dtbundle.key"), str(keys_dir / "dtbundle.pub")
    site, full = site_holding(plain_registry, "site", refs["1.0"], keys_dir, tmp_path)
    # The air-gapped side takes stock (signed), the internet side exports the update against it.
    inventory = tmp_path / "inv.json"
    cli(
        "inventory",
        "--plain-http",
        "--registry",
        site,
        "--bundle",
        str(full),
        "-o",
        str(inventory),
        "--signing-key",
        key,
    )
    delta, whole = tmp_path / "delta.tar.zst", tmp_path / "whole.tar.zst"
    made = export_delta(key, delta, inventory, refs["1.1"], "--inventory-key", pub)
    cli("export", "--plain-http", "--signing-key", key, "-o", str(whole), str(refs["1.1"]))
    unchanged = {b.descriptor.digest for b in new.blobs} - set(update.changed)
    with open_bundle(delta, [load_public_key(keys_dir / "dtbundle.pub")]) as bundle:
        required = {r.digest for r in bundle.catalog.required}
        carried = {f.digest for f in bundle.catalog.files}
    assert required == unchanged and not required & carried
    assert made["delta"] == {
        "requiredBlobs": 3,
        "requiredBytes": sum(b.descriptor.size for b in new.blobs if b.descriptor.digest in unchanged),
    }  # type: ignore[comparison-overlap]
    assert delta.stat().st_size < whole.stat().st_size - 3 * LAYER  # the unchanged layers stayed home
    # Import into the same site: every digest of 1.1 there, its signature too.
    done = cli("import", "--plain-http", "--public-key", pub, "--registry", site, str(delta))
    assert done["waiting"] == [] and done["counts"]["blobsRequiredPresent"] == 3  # type: ignore[index]
    target = Reference(plain_registry.address, f"{site.split('/', 1)[1]}/{refs['1.1'].repository}", "1.1")
    with make_client(plain_registry, user=None) as client:
        there = client.head_manifest(target)
        assert there is not None and there.digest == new.digest
        assert all(client.blob_size(target, b.descriptor.digest) == b.descriptor.size for b in new.blobs)
        assert client.head_manifest(target.with_tag(referrers_tag(new.digest) + ".sig")) is not None
    # Into another prefix: the left-out blobs are mounted from where the inventory saw them, but only
    # from repositories within this import's destinations (an inventory must not choose what the
    # importer's credentials read).
    other = f"other-{uuid.uuid4().hex[:8]}"
    confined = run_in_process("import", "--plain-http", "--public-key", pub, "--registry",
                              f"{plain_registry.address}/{other}", str(delta))  # fmt: skip
    assert "left out" in assert_clean_error(confined, 2)
    source = f"{refs['1.1'].registry}/{refs['1.1'].repository.rsplit('/', 1)[0]}"
    mounted = cli("import", "--plain-http", "--public-key", pub, "--registry", plain_registry.address,
                  "--map", f"{source}={plain_registry.address}/{other}", str(delta))  # fmt: skip
    assert mounted["counts"]["blobsMounted"] >= 3  # type: ignore[index]


def test_a_delta_import_into_a_target_missing_a_blob_fails_and_tags_nothing(
    plain_registry: RegistryServer, update: Update, keys_dir: Path, tmp_path: Path
) -> None:
    refs = update.refs
    key, pub = str(keys_dir / "dtbundle.key"), str(keys_dir / "dtbundle.pub")
    site, full = site_holding(plain_registry, "gone", refs["1.0"], keys_dir, tmp_path)
    inventory = tmp_path / "inv.json"
    cli("inventory", "--plain-http", "--registry", site, "--bundle", str(full), "-o", str(inventory))
    # The inventory promises the blobs of 1.0 in repositories that this target does not have.
    document = json.loads(inventory.read_text())
    for repository in document["repositories"]:
        repository["name"] = repository["name"].replace("gone-", "elsewhere-")
    inventory.write_text(json.dumps(document))
    delta = tmp_path / "delta.tar.zst"
    export_delta(key, delta, inventory, refs["1.1"])
    fresh = f"{plain_registry.address}/fresh-{uuid.uuid4().hex[:8]}"
    proc = run_in_process("import", "--plain-http", "--public-key", pub, "--registry", fresh, str(delta))
    error = assert_clean_error(proc, 2)
    with open_bundle(delta, [load_public_key(keys_dir / "dtbundle.pub")]) as bundle:
        for required in bundle.catalog.required:
            assert required.digest in error  # each missing digest, and where it was expected
    assert f"in {fresh.split('/', 1)[0]}/{fresh.split('/', 1)[1]}/{refs['1.1'].repository}" in error
    target = Reference(plain_registry.address, f"{fresh.split('/', 1)[1]}/{refs['1.1'].repository}", "1.1")
    with make_client(plain_registry, user=None) as client:
        assert client.head_manifest(target) is None
        new = update.new
        assert all(client.blob_size(target, b.descriptor.digest) is None for b in new.blobs)  # nothing pushed either


def test_an_inventory_signed_by_another_key_is_refused(
    plain_registry: RegistryServer, update: Update, keys_dir: Path, tmp_path: Path
) -> None:
    refs = update.refs
    inventory = tmp_path / "inv.json"
    cli("inventory", "--plain-http", "--registry", f"{plain_registry.address}/none", "--repository", "x",
        "-o", str(inventory), "--signing-key", str(keys_dir / "dtbundle.key"))  # fmt: skip
    other = tmp_path / "other"
    generate_keys(other)
    proc = run_in_process("export", "--plain-http", "--signing-key", str(keys_dir / "dtbundle.key"), "-o",
                          str(tmp_path / "d.tar.zst"), "--inventory", str(inventory), "--inventory-key",
                          str(other / "dtbundle.pub"), str(refs["1.1"]))  # fmt: skip
    assert_clean_error(proc, 3)


def test_attachments_are_never_left_out(
    plain_registry: RegistryServer, update: Update, keys_dir: Path, tmp_path: Path
) -> None:
    """An inventory of the source itself holds everything: only the configs and layers are left out;
    the cosign signature's layer stays in the bundle, where import and verify read it."""
    refs = update.refs
    key, pub = str(keys_dir / "dtbundle.key"), str(keys_dir / "dtbundle.pub")
    inventory = tmp_path / "inv.json"
    source = refs["1.1"].repository.rsplit("/", 1)[0]
    cli("inventory", "--plain-http", "--registry", f"{plain_registry.address}/{source}", "-o", str(inventory))
    delta = tmp_path / "delta.tar.zst"
    export_delta(key, delta, inventory, refs["1.1"])
    with open_bundle(delta, [load_public_key(keys_dir / "dtbundle.pub")]) as bundle:
        catalog = bundle.catalog
    assert {r.digest for r in catalog.required} == {b.descriptor.digest for b in update.new.blobs}
    signature = next(a for a in catalog.artifacts if a.kind == "cosign.sig")
    carried = {f.digest for f in catalog.files}
    assert signature.digest in carried
    assert len([f for f in catalog.files if f.is_blob]) > len({signature.digest, catalog.images[0].digest})
    verified = run_in_process("verify", "--public-key", pub, str(delta))
    assert verified.returncode == 0, verified.stderr
