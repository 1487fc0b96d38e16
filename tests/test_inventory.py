"""``dtbundle inventory`` against real registries: exactly the digests the repositories hold, the three
ways of choosing repositories (names relative to --registry, the catalog API below the prefix, a
bundle mapped as import maps it), signatures, atomic refusal of an existing output, skipped tags;
and the inventory parser against hostile files (one-line usage errors, exit 2)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle import oci
from dtbundle.bundle.key import generate_keys, load_public_key, verify_catalog
from dtbundle.bundle.reader import open_bundle
from dtbundle.errors import IntegrityError, UsageError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.run import ImportSettings, run_import
from dtbundle.inventory import (
    Inventory,
    load_inventory,
    parse_inventory,
    take_inventory,
)
from dtbundle.limits import MAX_INVENTORY_BLOB_BYTES
from dtbundle.oci import Platform, sha256_digest
from dtbundle.oci.reference import Reference
from dtbundle.registry import CredentialResolver, RegistryClient
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.faults import Fault, FaultProxy
from tests.support.registries import PASSWORD, USER, Exported, fast_config, make_client

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


@dataclass(frozen=True)
class Stocked:
    """Images pushed below a fresh prefix of the plain registry (and one beside it)."""

    registry: str
    prefix: str
    index: images.BuiltManifest  # <prefix>/app:1.0 and :latest, two platforms
    signature: images.BuiltManifest  # <prefix>/app:sha256-<index>.sig
    tool: images.BuiltManifest  # <prefix>/tools/tool:2, a single Docker manifest

    def blobs(self, *built: images.BuiltManifest) -> set[tuple[str, int]]:
        found: set[tuple[str, int]] = set()
        for manifest in built:
            for part in (manifest, *manifest.children):
                found |= {(b.descriptor.digest, b.descriptor.size) for b in part.blobs}
        return found


@pytest.fixture(scope="module")
def stocked(plain_registry: RegistryServer) -> Stocked:
    prefix = f"inv{uuid.uuid4().hex[:10]}"
    amd, arm = Platform("linux", "amd64"), Platform("linux", "arm64")
    base = images.make_layer(f"{prefix}-base", 4096)
    index = images.build_index(
        [images.build_image(p, [base, images.make_layer(f"{prefix}-{p}", 2048)], label=prefix) for p in (amd, arm)]
    )
    tool = images.build_image(amd, [images.make_layer(f"{prefix}-tool", 1024)], docker=True)
    beside = images.build_image(amd, [images.make_layer(f"{prefix}-beside", 512)])
    with make_client(plain_registry, user=None) as client:
        address = plain_registry.address
        images.push(client, Reference(address, f"{prefix}/app", "1.0"), index)
        images.push(client, Reference(address, f"{prefix}/app", "latest"), index)
        # Signed with any key: the inventory records digests, it does not verify signatures.
        signature = images.cosign_signature(
            f"{address}/{prefix}/app", index.digest, ec.generate_private_key(ec.SECP256R1())
        )
        images.push(client, Reference(address, f"{prefix}/app", oci.referrers_tag(index.digest) + ".sig"), signature)
        images.push(client, Reference(address, f"{prefix}/tools/tool", "2"), tool)
        # Shares the prefix's characters but not its path component: outside --registry <address>/<prefix>.
        images.push(client, Reference(address, f"{prefix}x/beside", "1"), beside)
    return Stocked(address, prefix, index, signature, tool)


def inventory(*args: str, env: dict[str, str] | None = None) -> Any:
    return run_in_process("inventory", *args, env=env)


def by_name(inv: Inventory) -> dict[str, Any]:
    return {r.name: r for r in inv.repositories}


# -- what the registry holds -------------------------------------------------------------------------


def test_inventory_lists_exactly_the_pushed_digests(stocked: Stocked, tmp_path: Path) -> None:
    out = tmp_path / "inv.json"
    where = f"{stocked.registry}/{stocked.prefix}"
    proc = inventory("--plain-http", "--registry", where, "--repository", "app", "--repository", "tools/tool")
    assert proc.returncode == 2 and "Missing option '--output'" in proc.stderr  # typer's own usage error
    proc = inventory(
        "--plain-http", "--registry", where, "--repository", "app", "--repository", "tools/tool/", "-o", str(out),
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    inv = load_inventory(out, None)
    assert inv.registry == stocked.registry
    repos = by_name(inv)
    app, tool = f"{stocked.prefix}/app", f"{stocked.prefix}/tools/tool"
    assert list(repos) == [app, tool]  # --repository is relative to the --registry prefix
    expected = {stocked.index.digest, *(c.digest for c in stocked.index.children), stocked.signature.digest}
    assert set(repos[app].manifests) == expected
    assert set(repos[app].blobs) == stocked.blobs(stocked.index, stocked.signature)
    assert repos[tool].manifests == (stocked.tool.digest,)
    assert set(repos[tool].blobs) == stocked.blobs(stocked.tool)
    # Cross-check one layer with the bytes pushed: its digest is the SHA-256 of those bytes.
    layer = stocked.index.children[0].blobs[-1]
    assert (sha256_digest(layer.data), len(layer.data)) in repos[app].blobs
    # The file is the canonical form: sorted, indent 1, byte for byte what to_bytes gives.
    data = out.read_bytes()
    assert data == inv.to_bytes() and data.startswith(b'{\n "formatVersion": 1,\n "kind": "dtbundle-inventory",')
    report = json.loads(proc.stdout)
    assert report["command"] == "inventory" and report["inventory"] == str(out)
    assert report["counts"] == {"repositories": 2, "manifests": len(expected) + 1, "blobs": len(inv.blob_locations())}
    assert report["blobBytes"] == sum(size for size, _ in inv.blob_locations().values())
    assert report["signature"] is None and report["bundleKey"] is None and report["warnings"] == []


def test_catalog_api_mode_keeps_only_repositories_below_the_prefix(stocked: Stocked, tmp_path: Path) -> None:
    out = tmp_path / "inv.json"
    proc = inventory("--plain-http", "--registry", f"{stocked.registry}/{stocked.prefix}", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [r.name for r in load_inventory(out, None).repositories] == [
        f"{stocked.prefix}/app",
        f"{stocked.prefix}/tools/tool",
    ]  # not <prefix>x/beside: whole path components
    assert "inventory of" in proc.stdout and f"wrote {out}, unsigned" in proc.stdout


def test_list_repositories_follows_pages(stocked: Stocked, plain_registry: RegistryServer) -> None:
    with make_client(plain_registry, user=None) as client:
        names = client.list_repositories(stocked.registry, page_size=2)
    mine = [n for n in names if n.startswith(stocked.prefix)]
    assert mine == [f"{stocked.prefix}/app", f"{stocked.prefix}/tools/tool", f"{stocked.prefix}x/beside"]


def test_list_repositories_drops_names_outside_the_grammar() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v2/_catalog"
        if request.url.params.get("last") is None:
            body = {"repositories": ["ok/one", "../escape", "Upper/case", 7, "a//b", "x?y"]}
            return httpx.Response(200, json=body, headers={"Link": '</v2/_catalog?last=x&n=6>; rel="next"'})
        return httpx.Response(200, json={"repositories": ["ok/two", "/root"]})

    config = fast_config()
    with RegistryClient(config, CredentialResolver(use_config_files=False), transport=httpx.MockTransport(answer)) as c:
        assert c.list_repositories("registry.example.com", page_size=6) == ["ok/one", "ok/two"]


def test_a_missing_repository_is_empty(stocked: Stocked, tmp_path: Path) -> None:
    out = tmp_path / "inv.json"
    where = f"{stocked.registry}/{stocked.prefix}"
    proc = inventory("--plain-http", "--registry", where, "--repository", "nothing/here", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    [repo] = load_inventory(out, None).repositories
    assert (repo.name, repo.manifests, repo.blobs) == (f"{stocked.prefix}/nothing/here", (), ())
    assert "does not exist; recorded as empty" in json.loads(proc.stdout)["warnings"][0]


def test_each_manifest_is_fetched_once_per_repository(
    stocked: Stocked, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    proxy = FaultProxy(plain_registry.address)
    try:
        out = tmp_path / "inv.json"
        proc = inventory("--plain-http", "--registry", f"{proxy.address}/{stocked.prefix}", "--repository", "app",
                         "-o", str(out), "--concurrency", "4")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        gets = [path for method, path in proxy.requests if method == "GET" and "/manifests/" in path]
    finally:
        proxy.stop()
    child = stocked.index.children[0].digest
    assert sum(path.endswith(child) for path in gets) == 1  # two tags name the index; its children go once
    assert len(gets) == 3 + len(stocked.index.children)  # tags 1.0, latest, the .sig; then each child


def test_a_tag_gone_since_it_was_listed_is_skipped_with_a_warning(
    stocked: Stocked, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    proxy = FaultProxy(plain_registry.address)
    proxy.inject(Fault("status", "GET", path=r"/manifests/latest$", status=404, times=None))
    try:
        out = tmp_path / "inv.json"
        proc = inventory("--plain-http", "--registry", f"{proxy.address}/{stocked.prefix}", "--repository", "app",
                         "-o", str(out), "--json")  # fmt: skip
    finally:
        proxy.stop()
    assert proc.returncode == 0, proc.stderr
    [warning] = json.loads(proc.stdout)["warnings"]
    assert ":latest: not found" in warning and "skipped" in warning
    [repo] = load_inventory(out, None).repositories
    assert stocked.index.digest in repo.manifests  # through the tag 1.0


def test_a_manifest_type_the_client_refuses_is_skipped_with_a_warning() -> None:
    image = images.build_image(Platform("linux", "amd64"), [images.make_layer("refused", 64)])
    schema1 = json.dumps({"schemaVersion": 1, "name": "r", "tag": "old", "fsLayers": []}).encode()

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/r/tags/list":
            return httpx.Response(200, json={"name": "r", "tags": ["old", "new"]})
        if path == "/v2/r/manifests/old":
            return httpx.Response(200, content=schema1, headers={"Content-Type": oci.DOCKER_SCHEMA1_SIGNED})
        if path == "/v2/r/manifests/new":
            return httpx.Response(200, content=image.data, headers={"Content-Type": image.media_type})
        return httpx.Response(404)

    resolver = CredentialResolver(use_config_files=False)
    with RegistryClient(fast_config(), resolver, transport=httpx.MockTransport(answer)) as client:
        taken = take_inventory(client, "registry.example.com", ["r"], concurrency=2, created="2025-01-01T00:00:00Z")
    [warning] = taken.warnings
    assert "registry.example.com/r:old" in warning and "schema1" in warning
    [repo] = taken.inventory.repositories
    assert repo.manifests == (image.digest,)
    assert set(repo.blobs) == {(b.descriptor.digest, b.descriptor.size) for b in image.blobs}


# -- a bundle's targets ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported(exported: Exported, plain_registry: RegistryServer) -> tuple[str, str]:
    """The session bundle imported below a fresh prefix with a --map rule: (--registry, --map)."""
    where = f"{plain_registry.address}/inv{uuid.uuid4().hex[:10]}"
    rule = f"{plain_registry.address}/samples=flat"
    settings = ImportSettings(
        exported.path, [load_public_key(exported.pub)], RepositoryMapper(where, [rule]), state_file=None
    )
    with make_client(plain_registry, user=None) as client:
        run_import(client, settings)
    return where, rule


def test_bundle_mode_maps_like_import(exported: Exported, imported: tuple[str, str], tmp_path: Path) -> None:
    where, rule = imported
    out = tmp_path / "inv.json"
    proc = inventory("--plain-http", "--registry", where, "--map", rule, "--bundle", str(exported.path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    inv = load_inventory(out, None)
    prefix = where.partition("/")[2]
    repos = by_name(inv)
    with open_bundle(exported.path, None) as reader:
        catalog = reader.catalog
    assert set(repos) == {f"{prefix}/flat/{i.repository.rsplit('/', 1)[-1]}" for i in catalog.images}
    for image in catalog.images:
        held = repos[f"{prefix}/flat/{image.repository.rsplit('/', 1)[-1]}"]
        assert {image.digest, *(p.digest for p in image.platforms)} <= set(held.manifests)
    for artifact in catalog.artifacts:
        assert artifact.digest in repos[f"{prefix}/flat/{artifact.repository.rsplit('/', 1)[-1]}"].manifests
    # The base layer every sample image shares: one size, every repository holding it.
    base = images.make_layer("base-os", 96 * 1024)
    size, holders = inv.blob_locations()[sha256_digest(base)]
    assert size == len(base) and holders == tuple(sorted(repos))


def test_bundle_mode_refuses_what_import_refuses(exported: Exported, imported: tuple[str, str], tmp_path: Path) -> None:
    where, _ = imported
    out = str(tmp_path / "inv.json")
    common = ("--plain-http", "--registry", where, "--bundle", str(exported.path), "-o", out)
    line = assert_clean_error(inventory(*common, "--map", "nowhere.example.com/x=y"), 2)
    assert "matches no image" in line
    host = where.partition("/")[0]
    line = assert_clean_error(inventory(*common, "--map", f"{host}/samples=other.example.com/m"), 2)
    assert "another registry" in line
    assert not Path(out).exists()


# -- signatures and the output file -----------------------------------------------------------------------


def test_signed_inventory_verifies_and_another_key_fails(stocked: Stocked, keys_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "inv.json"
    where = f"{stocked.registry}/{stocked.prefix}"
    proc = inventory("--plain-http", "--registry", where, "--repository", "app", "-o", str(out),
                     "--signing-key", str(keys_dir / "dtbundle.key"), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sig = tmp_path / "inv.json.sig"
    pub = load_public_key(keys_dir / "dtbundle.pub")
    key_id = verify_catalog([pub], out.read_bytes(), sig.read_bytes())
    report = json.loads(proc.stdout)
    assert report["bundleKey"] == key_id and report["signature"] == str(sig)
    assert load_inventory(out, [pub]).repositories[0].name == f"{stocked.prefix}/app"

    generate_keys(tmp_path / "other")
    with pytest.raises(IntegrityError) as info:
        load_inventory(out, [load_public_key(tmp_path / "other" / "dtbundle.pub")])
    assert info.value.exit_code == 3 and "does not verify" in info.value.message
    out.write_bytes(out.read_bytes().replace(b'"formatVersion": 1', b'"formatVersion":  1'))
    with pytest.raises(IntegrityError, match="changed after signing"):
        load_inventory(out, [pub])
    sig.unlink()
    with pytest.raises(IntegrityError, match="has no signature"):
        load_inventory(out, [pub])


def test_existing_output_is_refused_without_force(stocked: Stocked, tmp_path: Path) -> None:
    out = tmp_path / "inv.json"
    out.write_text("keep me")
    (tmp_path / "inv.json.sig").write_text("a stale signature")
    args = ("--plain-http", "--registry", f"{stocked.registry}/{stocked.prefix}", "--repository", "app", "-o", str(out))
    line = assert_clean_error(inventory(*args), 2)
    assert "already exists; pass --force" in line and out.read_text() == "keep me"
    assert inventory(*args, "--force", env={"SOURCE_DATE_EPOCH": "0"}).returncode == 0
    first = out.read_bytes()
    assert not (tmp_path / "inv.json.sig").exists()  # it signed the file replaced
    assert load_inventory(out, None).created == "1970-01-01T00:00:00Z"
    assert inventory(*args, "--force", "-q", env={"SOURCE_DATE_EPOCH": "0"}).returncode == 0
    assert out.read_bytes() == first  # deterministic
    assert [p.name for p in tmp_path.iterdir()] == ["inv.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--repository", "a", "--bundle", "{bundle}"), "give one of them"),
        (("--map", "a=b"), "use it with --bundle"),
        (("--repository", "../escape"), "is not a repository path"),
        (("--repository", "Upper"), "is not a repository path"),
    ],
)
def test_usage_errors(
    args: tuple[str, ...], expected: str, stocked: Stocked, exported: Exported, tmp_path: Path
) -> None:
    given = [a.format(bundle=exported.path) for a in args]
    where = f"{stocked.registry}/{stocked.prefix}"
    line = assert_clean_error(inventory("--plain-http", "--registry", where, *given, "-o", str(tmp_path / "i")), 2)
    assert expected in line


def test_registry_without_scheme_and_json_error_document(tmp_path: Path) -> None:
    proc = inventory("--registry", "https://reg.example.com", "-o", str(tmp_path / "i"), "--json")
    assert "without a URL scheme" in assert_clean_error(proc, 2)
    assert json.loads(proc.stdout)["error"]["kind"] == "UsageError"


# -- authentication ---------------------------------------------------------------------------------------


def pushed_image(server: RegistryServer) -> tuple[str, images.BuiltManifest]:
    """A small image in a fresh repository of ``server`` (with the test user's credentials)."""
    repo = f"inv{uuid.uuid4().hex[:10]}/app"
    image = images.build_image(Platform("linux", "amd64"), [images.make_layer(repo, 256)])
    with make_client(server) as client:
        images.push(client, Reference(server.address, repo, "1"), image)
    return repo, image


def test_credentials_work_and_refusal_is_fatal(basic_registry: RegistryServer, tmp_path: Path) -> None:
    repo, image = pushed_image(basic_registry)
    out = tmp_path / "inv.json"
    args = ("--plain-http", "--registry", basic_registry.address, "--repository", repo, "-o", str(out))
    line = assert_clean_error(inventory(*args), 1)
    assert "requires a username and password" in line
    proc = inventory(*args, env={"DTBUNDLE_USERNAME": USER, "DTBUNDLE_PASSWORD": PASSWORD})
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr + out.read_text()
    assert load_inventory(out, None).repositories[0].manifests == (image.digest,)


def test_token_registry_repositories_and_catalog_refusal(token_registry: RegistryServer, tmp_path: Path) -> None:
    repo, image = pushed_image(token_registry)
    out = tmp_path / "inv.json"
    env = {"DTBUNDLE_USERNAME": USER, "DTBUNDLE_PASSWORD": PASSWORD}
    tls = ("--ca-cert", str(token_registry.ca_cert)) if token_registry.tls else ("--plain-http",)
    proc = inventory(*tls, "--registry", token_registry.address, "--repository", repo, "-o", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    assert load_inventory(out, None).repositories[0].manifests == (image.digest,)
    # The sandbox's token server grants no registry:catalog:* scope: the catalog is refused, clearly.
    proc = inventory(*tls, "--registry", token_registry.address, "-o", str(out), "--force", env=env)
    assert "--repository" in assert_clean_error(proc, 1)


# -- hostile inventory files -------------------------------------------------------------------------------


def document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "formatVersion": 1,
        "kind": "dtbundle-inventory",
        "created": "2025-01-01T00:00:00Z",
        "tool": {"name": "dtbundle", "version": "0.1.0"},
        "registry": "reg.example.com:5000",
        "repositories": [
            {"name": "mirror/app", "manifests": [DIGEST_A], "blobs": [{"digest": DIGEST_B, "size": 3}]},
            {"name": "mirror/other", "manifests": [], "blobs": [{"digest": DIGEST_B, "size": 3}]},
        ],
    }
    base.update(changes)
    return base


def repos(**changes: Any) -> list[dict[str, Any]]:
    return [{"name": "mirror/app", "manifests": [DIGEST_A], "blobs": [], **changes}]


def test_a_valid_inventory_parses() -> None:
    inv = parse_inventory(json.dumps(document()).encode())
    assert inv.blob_locations() == {DIGEST_B: (3, ("mirror/app", "mirror/other"))}
    assert parse_inventory(inv.to_bytes()) == inv


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json", "not a JSON inventory"),
        (b"[]", "not a JSON object"),
        (b"[" * 20 + b"]" * 20, "nested more than 8 levels"),
        (b'{"a": [' + b"0," * 200_000 + b"0]}", "elements"),
        (json.dumps(document(formatVersion=2)).encode(), "formatVersion 2"),
        (json.dumps(document(formatVersion="1")).encode(), "formatVersion '1'"),
        (json.dumps(document(formatVersion=True)).encode(), "formatVersion True"),
        (json.dumps(document(kind="dtbundle-catalog")).encode(), "not a dtbundle inventory"),
        (json.dumps(document(created="yesterday")).encode(), "'created'"),
        (json.dumps(document(registry="reg.example.com/path")).encode(), "'registry'"),
        (json.dumps(document(registry="http://reg")).encode(), "'registry'"),
        (json.dumps(document(repositories={})).encode(), "'repositories' is not a list"),
        (json.dumps(document(repositories=repos(name="../x"))).encode(), "'../x' is not a repository path"),
        (json.dumps(document(repositories=repos(name="a/../../x"))).encode(), "is not a repository path"),
        (json.dumps(document(repositories=repos(name="Mirror/App"))).encode(), "is not a repository path"),
        (json.dumps(document(repositories=repos(name="a" * 300))).encode(), "longer than"),
        (json.dumps(document(repositories=repos(manifests=["sha256:abc"]))).encode(), "is not a digest"),
        (json.dumps(document(repositories=repos(manifests=["sha512:" + "a" * 128]))).encode(), "is not a digest"),
        (json.dumps(document(repositories=repos(manifests=[DIGEST_A, DIGEST_A]))).encode(), "twice"),
        (json.dumps(document(repositories=repos(blobs=[{"digest": "../x", "size": 1}]))).encode(), "not a digest"),
        (json.dumps(document(repositories=repos(blobs=[{"digest": DIGEST_B, "size": -1}]))).encode(), "size -1"),
        (json.dumps(document(repositories=repos(blobs=[{"digest": DIGEST_B, "size": True}]))).encode(), "size True"),
        (json.dumps(document(repositories=repos(blobs=[{"digest": DIGEST_B, "size": 1.5}]))).encode(), "size 1.5"),
        (
            json.dumps(
                document(repositories=repos(blobs=[{"digest": DIGEST_B, "size": MAX_INVENTORY_BLOB_BYTES + 1}]))
            ).encode(),
            "within limits",
        ),
        (json.dumps(document(repositories=repos(blobs=[DIGEST_B]))).encode(), "not a digest"),
        (json.dumps(document(repositories=repos() + repos())).encode(), "listed twice"),
        (
            json.dumps(
                document(
                    repositories=[
                        {"name": "a", "manifests": [], "blobs": [{"digest": DIGEST_B, "size": 1}]},
                        {"name": "b", "manifests": [], "blobs": [{"digest": DIGEST_B, "size": 2}]},
                    ]
                )
            ).encode(),
            "two sizes",
        ),
    ],
)
def test_hostile_inventories_are_one_line_usage_errors(data: bytes, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_inventory(data)
    message = info.value.message
    assert info.value.exit_code == 2 and "\n" not in message and len(message) < 600
    assert expected in message, message
    assert "take a new one with 'dtbundle inventory'" in message


def test_an_oversized_inventory_is_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.dumps(document()).encode()
    with pytest.raises(UsageError, match="above the limit of 100"):
        parse_inventory(data, max_bytes=100)
    path = tmp_path / "inv.json"
    path.write_bytes(data)
    monkeypatch.setattr("dtbundle.inventory.files.MAX_INVENTORY_BYTES", 100)
    with pytest.raises(UsageError, match="larger than the limit of 100 bytes"):
        load_inventory(path, None)


def test_missing_or_odd_inventory_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_inventory(tmp_path / "absent.json", None)
    with pytest.raises(UsageError, match="is a directory"):
        load_inventory(tmp_path, None)
    hostile = tmp_path / "escape.json"
    hostile.write_bytes(json.dumps(document(repositories=repos(name="../../etc"))).encode())
    with pytest.raises(UsageError, match=re.escape(f"inventory {hostile}: ")):
        load_inventory(hostile, None)


def test_foreign_layers_and_lying_sizes_are_left_out() -> None:
    config, shared, foreign, other = (f"sha256:{c * 64}" for c in "cdef")

    def manifest(layers: list[dict[str, Any]]) -> bytes:
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": oci.OCI_MANIFEST,
                "config": {"mediaType": oci.OCI_CONFIG, "digest": config, "size": 10},
                "layers": [{"mediaType": oci.OCI_LAYER_GZIP, **layer} for layer in layers],
            }
        ).encode()

    first = manifest([{"digest": shared, "size": 5}, {"digest": foreign, "size": 7, "urls": ["https://example.com/l"]}])
    second = manifest([{"digest": shared, "size": 6}, {"digest": other, "size": 8}])

    def answer(request: httpx.Request) -> httpx.Response:
        bodies = {"/v2/r/manifests/a": first, "/v2/r/manifests/b": second}
        if request.url.path == "/v2/r/tags/list":
            return httpx.Response(200, json={"name": "r", "tags": ["a", "b"]})
        if request.url.path in bodies:
            return httpx.Response(200, content=bodies[request.url.path], headers={"Content-Type": oci.OCI_MANIFEST})
        return httpx.Response(404)

    resolver = CredentialResolver(use_config_files=False)
    with RegistryClient(fast_config(), resolver, transport=httpx.MockTransport(answer)) as client:
        taken = take_inventory(client, "registry.example.com", ["r"], created="2025-01-01T00:00:00Z")
    [repo] = taken.inventory.repositories
    assert repo.blobs == ((config, 10), (other, 8))  # the lied-about layer and the foreign one are out
    assert repo.manifests == tuple(sorted((sha256_digest(first), sha256_digest(second))))
    assert taken.warnings == (f"manifests give blob {shared} different sizes; left out of the inventory",)
    assert parse_inventory(taken.inventory.to_bytes()) == taken.inventory


def test_the_tool_field_is_checked() -> None:
    for tool in ([], {"name": 5}, {"version": "v" * 200}):
        with pytest.raises(UsageError, match="'tool'"):
            parse_inventory(json.dumps(document(tool=tool)).encode())
