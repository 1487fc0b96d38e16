"""Every name that becomes a registry path or a file path is validated where it is parsed, and
every import target lies below the destination the user chose: one test per source of names
(catalog image names, the private-repository annotation, ref names, the bundle's index.json,
a registry's tag list, ``--map``). The hostile bundles here are validly signed: a signature
says who made a bundle, not that its names are safe."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dtbundle.bundle.format import CATALOG_NAME, INDEX_NAME, SIGNATURE_NAME, TARGET_REPOSITORY_ANNOTATION
from dtbundle.bundle.key import load_private_key, sign_catalog
from dtbundle.errors import UsageError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.oci import Reference
from dtbundle.registry import CredentialResolver, RegistryClient
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.bundles import read_entries, write_entries
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.registries import Exported, registry_config

Edit = Callable[[dict[str, Any]], None]


def resigned(exported: Exported, out: Path, edit: Edit, index: bytes | None = None) -> Path:
    """The session bundle with its catalog edited (and index.json replaced), signed again with its key."""
    entries = read_entries(exported.path)
    catalog = json.loads(dict(entries)[CATALOG_NAME])
    if index is not None:
        record = next(f for f in catalog["files"] if f["path"] == INDEX_NAME)
        catalog["totalSize"] += len(index) - record["size"]
        record.update(size=len(index), sha256=hashlib.sha256(index).hexdigest())
    edit(catalog)
    data = json.dumps(catalog).encode()
    signature = sign_catalog(load_private_key(exported.key), data)
    replaced = {CATALOG_NAME: data, SIGNATURE_NAME: signature, **({INDEX_NAME: index} if index is not None else {})}
    write_entries(out, [(name, replaced.get(name, content)) for name, content in entries])
    return out


def repositories(server: RegistryServer) -> set[str]:
    """Every repository the registry stores (read from its storage directory: anything written shows)."""
    root = server.storage / "docker" / "registry" / "v2" / "repositories"
    return {str(p.parent.relative_to(root)) for p in root.rglob("_manifests")} if root.exists() else set()


def import_into(server: RegistryServer, exported: Exported, bundle: Path, tenant: str) -> str:
    proc = run_in_process(
        "import", str(bundle), "--registry", f"{server.address}/{tenant}", "--plain-http",
        "--public-key", str(exported.pub),
    )  # fmt: skip
    return assert_clean_error(proc, 3)


def first_image(change: Callable[[dict[str, Any]], None]) -> Edit:
    return lambda catalog: change(catalog["images"][0])


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (first_image(lambda i: i["annotations"].update({TARGET_REPOSITORY_ANNOTATION: "../escaped/victim"})),
         "invalid target repository"),
        (first_image(lambda i: i.update(repository=i["repository"] + "?n=1")), "invalid registry, repository or tag"),
        (first_image(lambda i: i.update(repository=i["repository"] + "#x")), "invalid registry, repository or tag"),
        (first_image(lambda i: i.update(tag="1.0/../../x")), "invalid registry, repository or tag"),
        (first_image(lambda i: i.update(refName="other.example/evil:1")), "refName is not a reference"),
        (lambda c: c["artifacts"][0].update(refName="../../x:1"), "refName is not a reference"),
    ],
    ids=["private-repository-traversal", "query-in-repository", "fragment-in-repository", "slash-in-tag",
         "foreign-ref-name", "artifact-ref-name"],
)  # fmt: skip
def test_a_signed_bundle_with_a_hostile_name_writes_nothing(
    plain_registry: RegistryServer, exported: Exported, tmp_path: Path, edit: Edit, names: str
) -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    before = repositories(plain_registry)
    message = import_into(plain_registry, exported, resigned(exported, tmp_path / "b.tar.zst", edit), tenant)
    assert names in message and "catalog is invalid" in message
    after = repositories(plain_registry)
    assert after == before, "the import wrote a repository"
    assert not any(name.startswith("escaped") or tenant in name for name in after)


def _index_with(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": entries}).encode()


@pytest.mark.parametrize(
    "index",
    [
        b"this is not JSON",
        b'{"manifests": "nope"}',
        _index_with([{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 2,
                      "digest": "sha256:../../../../marker",
                      "annotations": {"org.opencontainers.image.ref.name": "x"}}]),
    ],
    ids=["not-json", "not-a-list", "traversal-digest"],
)  # fmt: skip
def test_a_hostile_bundle_index_never_reaches_the_target_layout(
    exported: Exported, tmp_path: Path, index: bytes
) -> None:
    bundle = resigned(exported, tmp_path / "b.tar.zst", lambda _: None, index=index)
    target = tmp_path / "deep" / "a" / "b" / "layout"
    target.mkdir(parents=True)
    proc = run_in_process("import", str(bundle), "--to-oci", str(target), "--public-key", str(exported.pub))
    assert "index.json does not list the roots its catalog names" in assert_clean_error(proc, 3)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p != bundle] == [], "something was written"


def test_a_layout_import_lists_exactly_the_catalog_roots(exported: Exported, tmp_path: Path) -> None:
    """The target layout's entries are derived from the validated catalog, not copied from the bundle."""
    target = tmp_path / "layout"
    proc = run_in_process("import", str(exported.path), "--to-oci", str(target), "--public-key", str(exported.pub))
    assert proc.returncode == 0, proc.stderr
    bundle_index = json.loads(dict(read_entries(exported.path))[INDEX_NAME])
    assert json.loads((target / "index.json").read_bytes())["manifests"] == bundle_index["manifests"]
    for entry in bundle_index["manifests"]:
        assert (target / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")).is_file()


def test_a_tag_list_keeps_only_names_that_are_tags() -> None:
    listed = ["1.0", "../x", "a?b", "c#d", "\x1b[2Kforged", "1.0/../../y", 7, ".hidden", "v" * 129, "2.0-raw"]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": "team/app", "tags": listed})

    config = registry_config(backoff_initial=0.001, backoff_max=0.002)
    resolver = CredentialResolver({}, use_config_files=False)
    with RegistryClient(config, resolver, transport=httpx.MockTransport(handler), sleep=lambda _: None) as client:
        assert client.list_tags(Reference("registry.test", "team/app")) == ["1.0", "2.0-raw"]


@pytest.mark.parametrize(
    ("registry", "maps", "source"),
    [
        ("reg.corp/tenant-a", [], Reference("public.ecr.aws", "dynatrace/operator", "1.0")),
        ("reg.corp/tenant-a", ["public.ecr.aws/dynatrace=team"], Reference("public.ecr.aws", "dynatrace/x/y", "1")),
        (None, ["public.ecr.aws=other.corp/mirror"], Reference("public.ecr.aws", "dynatrace/operator", "1.0")),
    ],
)
def test_every_mapped_target_lies_below_its_destination(
    registry: str | None, maps: list[str], source: Reference
) -> None:
    mapper = RepositoryMapper(registry, maps)
    target = mapper.map_reference(source)
    destination = mapper.rules[0].target if mapper.rules else mapper.default
    assert destination is not None and destination.contains(target.registry, target.repository)
    assert target.tag == source.tag


def test_a_private_name_that_would_leave_the_prefix_is_refused() -> None:
    mapper = RepositoryMapper("reg.corp/tenant-a")
    assert mapper.map_private("dynatrace-oneagent-classic").name == "reg.corp/tenant-a/dynatrace-oneagent-classic"
    for hostile in ("../escaped/victim", "a/../../b", "/abs", "x?y", "x#y", "UPPER", ""):
        with pytest.raises(UsageError, match="invalid target repository"):
            mapper.map_private(hostile)


def test_prefix_containment_is_by_whole_path_components() -> None:
    mapper = RepositoryMapper("reg.corp/tenant-a")
    assert mapper.default is not None
    assert mapper.default.contains("reg.corp", "tenant-a/x")
    assert not mapper.default.contains("reg.corp", "tenant-ab/x")
    assert not mapper.default.contains("other.corp", "tenant-a/x")
