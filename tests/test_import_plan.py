"""The import plan and its sinks: where everything lands, checked before a byte is pushed;
dry runs that write nothing; and the CLI contract around verification verdicts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.format import CATALOG_NAME, SIGNATURE_NAME, parse_catalog
from dtbundle.bundle.key import load_private_key, load_public_key, sign_catalog
from dtbundle.errors import IntegrityError, LocalIOError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.plan import build_plan, place
from dtbundle.importer.report import Count
from dtbundle.importer.run import ImportSettings, run_import
from dtbundle.limits import BundleLimits
from dtbundle.oci import Platform, Reference
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.artifacts import write_pub
from tests.support.bundles import read_entries, write_entries
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.registries import Exported, make_client


def _manifests(entries: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """The manifests among a bundle's blobs (what an importer reads before the first other blob)."""
    found = {}
    for name, data in entries:
        if not name.startswith("blobs/"):
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("schemaVersion") == 2 and ("manifests" in obj or "layers" in obj):
            found["sha256:" + name.rsplit("/", 1)[1]] = data
    return found


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def test_plan_places_every_blob_below_the_target_and_orders_children_first(exported: Exported) -> None:
    entries = read_entries(exported.path)
    catalog = parse_catalog(dict(entries)[CATALOG_NAME], BundleLimits())
    placement = place(catalog, RepositoryMapper("reg.example:5000/mirror"))
    blob_files = frozenset(f.digest for f in catalog.files if f.path.startswith("blobs/"))
    plan = build_plan(placement, _manifests(entries), blob_files)

    position = {digest: n for n, digest in enumerate(plan.order)}
    for digest, manifest in plan.manifests.items():
        assert all(position[child] < position[digest] for child in manifest.children)
        assert manifest.repos, f"manifest {digest} lands nowhere"
    assert set(plan.blobs) | set(plan.manifests) == blob_files
    repos = {r for rs in plan.blobs.values() for r in rs} | {r for m in plan.manifests.values() for r in m.repos}
    assert repos and all(r.registry == "reg.example:5000" and r.repository.startswith("mirror/") for r in repos)
    images = [w for w in placement.tags if w.kind == ArtifactKind.IMAGE]
    assert {w.digest for w in images} == {i.digest for i in catalog.images}


def test_a_bundle_that_lacks_a_referenced_blob_pushes_nothing(
    exported: Exported, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    """Validly signed, but a layer is missing: refused before the first blob or manifest is pushed."""
    entries = read_entries(exported.path)
    catalog = json.loads(dict(entries)[CATALOG_NAME])
    platform = catalog["images"][0]["platforms"][0]["digest"]
    manifest = json.loads(dict(entries)["blobs/sha256/" + platform.split(":")[1]])
    missing = manifest["layers"][0]["digest"]
    path = "blobs/sha256/" + missing.split(":")[1]
    catalog["files"] = [f for f in catalog["files"] if f["path"] != path]
    catalog["totalSize"] = sum(f["size"] for f in catalog["files"])
    catalog_bytes = json.dumps(catalog).encode()
    signature = sign_catalog(load_private_key(exported.key), catalog_bytes)
    kept = [
        (n, catalog_bytes if n == CATALOG_NAME else signature if n == SIGNATURE_NAME else d)
        for n, d in entries
        if n != path
    ]
    hostile = tmp_path / "incomplete.tar.zst"
    write_entries(hostile, kept)

    target = f"{plain_registry.address}/incomplete"
    settings = ImportSettings(hostile, [load_public_key(exported.pub)], RepositoryMapper(target))
    with make_client(plain_registry, user=None) as client:
        with pytest.raises(IntegrityError, match=f"references blob {missing}, which the bundle does not carry"):
            run_import(client, settings)
        for image in exported.images:
            repo = Reference(plain_registry.address, f"incomplete/{image.ref.repository}")
            assert client.head_manifest(repo.with_digest(image.digest)) is None
            assert client.head_manifest(repo.with_tag(image.ref.tag)) is None
        layer = next(d for d in manifest["layers"] if d["digest"] != missing)
        first = Reference(plain_registry.address, f"incomplete/{exported.images[0].ref.repository}")
        assert client.blob_size(first, layer["digest"]) is None


def test_dry_run_into_an_oci_layout_writes_nothing(exported: Exported, tmp_path: Path) -> None:
    keys = [load_public_key(exported.pub)]
    layout = tmp_path / "layout"
    dry = run_import(None, ImportSettings(exported.path, keys, to_oci=layout, dry_run=True))
    assert not layout.exists()

    real = run_import(None, ImportSettings(exported.path, keys, to_oci=layout))
    # The dry run announced exactly what the real run then did.
    assert dry.counts[Count.BLOBS_WOULD_WRITE] == real.counts[Count.BLOBS_WRITTEN] > 0
    assert dry.counts[Count.INDEX_ENTRIES_WOULD_ADD] == real.counts[Count.INDEX_ENTRIES_ADDED] > 0
    assert len(list((layout / "blobs" / "sha256").iterdir())) == real.counts[Count.BLOBS_WRITTEN]

    before = _snapshot(layout)
    again = run_import(None, ImportSettings(exported.path, keys, to_oci=layout, dry_run=True))
    assert _snapshot(layout) == before
    assert Count.BLOBS_WOULD_WRITE not in again.counts and Count.INDEX_ENTRIES_WOULD_ADD not in again.counts
    assert again.counts[Count.INDEX_ENTRIES_UNCHANGED] > 0


def test_cli_dry_run_to_oci_writes_nothing(exported: Exported, tmp_path: Path) -> None:
    layout = tmp_path / "out"
    proc = run_in_process("import", "--public-key", str(exported.pub), "--dry-run", "--to-oci", str(layout),
                          str(exported.path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout and not layout.exists()


@pytest.mark.parametrize("command", ["verify", "import"])
def test_a_missing_public_key_is_a_usage_error(exported: Exported, command: str) -> None:
    extra = ["--registry", "127.0.0.1:1"] if command == "import" else []
    line = assert_clean_error(run_in_process(command, *extra, str(exported.path)), 2)
    assert "--public-key" in line


def test_verify_prints_no_verdict_when_the_policy_fails(
    exported: Exported, signing_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    """The sample set has an unsigned image: under --require-signatures, no 'OK' may be printed."""
    cosign_pub = write_pub(signing_key, tmp_path / "cosign.pub")
    args = ("verify", "--public-key", str(exported.pub), "--cosign-key", str(cosign_pub), str(exported.path))
    reported = run_in_process(*args)
    assert reported.returncode == 0 and "OK" in reported.stdout and "NOT VERIFIED" in reported.stdout
    refused = run_in_process(*args, "--require-signatures")
    assert_clean_error(refused, 3)
    assert "OK" not in refused.stdout


def test_a_failed_layout_commit_leaves_no_partial_files(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dtbundle.bundle.layout.os.replace", refuse)
    layout = tmp_path / "layout"
    with pytest.raises(LocalIOError, match="No space left"):
        run_import(None, ImportSettings(exported.path, [load_public_key(exported.pub)], to_oci=layout))
    assert [p.name for p in layout.rglob("*.partial")] == []


def test_dry_run_plan_shows_where_each_image_lands_and_the_conflict(
    exported: Exported, plain_registry: RegistryServer
) -> None:
    where = f"{plain_registry.address}/plan-{uuid.uuid4().hex[:8]}"
    args = ("import", "--plain-http", "--public-key", str(exported.pub), "--registry", where, str(exported.path))
    assert run_in_process(*args).returncode == 0
    # Someone else's image now holds the first image's tag.
    first = exported.images[0]
    taken = Reference(plain_registry.address, f"{where.split('/', 1)[1]}/{first.ref.repository}", first.ref.tag)
    with make_client(plain_registry, user=None) as client:
        other = images.push(
            client, taken, images.build_image(Platform("linux", "amd64"), [images.make_layer("someone else", 64)])
        )

    proc = run_in_process(*args, "--dry-run")
    assert proc.returncode == 0, proc.stderr  # a dry run reports; the real import would exit 2
    assert "tags in conflict: 1" in proc.stdout and "would be overwritten" not in proc.stdout
    refusal = next(line for line in proc.stdout.splitlines() if "would be refused" in line)
    assert str(taken) in refusal and "--overwrite" in refusal
    plan = proc.stdout[proc.stdout.index("plan (nothing was written):") :].splitlines()[1:]
    states = {row.split()[1]: row.split()[0] for row in plan if "->" in row}
    assert states[str(first.ref)] == "conflict" and f"the tag is {other} now" in "\n".join(plan)
    assert all(state == "present" for source, state in states.items() if source != str(first.ref))
    assert len(states) == len(exported.images)
    with make_client(plain_registry, user=None) as client:
        assert client.head_manifest(taken).digest == other  # type: ignore[union-attr]  # untouched

    as_json = json.loads(run_in_process(*args, "--dry-run", "--json").stdout)
    assert {p["source"]: p["state"] for p in as_json["plan"]} == states
    assert assert_clean_error(run_in_process(*args), 2)  # the real import is refused, before any byte
    overwrite = run_in_process(*args, "--dry-run", "--overwrite")
    assert overwrite.returncode == 0, overwrite.stderr
    assert f"overwrite {first.ref}" in overwrite.stdout.replace("  ", " ")
