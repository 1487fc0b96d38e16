"""Keyless trust across the gap (issue 11): export gets Sigstore's trusted root through TUF
(a TUF repository built here and served on 127.0.0.1), carries it in the bundle under the
catalog signature, and verify/import use the carried root when no --trusted-root is given.

Gap: the registry cannot hold the cosign-legacy keyless vector's image (its 2.5 MB layer is
not in the vector set), so end-to-end runs use key-signed sample images with keyless options
(the carried root is fetched, carried, resolved and used by the policy), and the keyless
signature itself is evaluated with the root read back out of the exported bundle.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from dtbundle.bundle.reader import open_bundle
from dtbundle.oci import sha256_digest
from dtbundle.sandbox import images
from dtbundle.trust.policy import Identity, Policy
from dtbundle.trust.simple_signing import verify_simple_signing
from dtbundle.trust.tuf import embedded_root
from tests.support.artifacts import write_pub
from tests.support.cli import assert_clean_error, run

LEGACY = Path(__file__).parent / "vectors" / "cosign-legacy"
KEYLESS = LEGACY / "dir-img-cosign-fulcio-rekor-valid"
IDENTITY = ("--certificate-identity-regexp", ".*")


def trusted_root_json(chain: list[x509.Certificate]) -> bytes:
    """A Sigstore trusted_root.json: ``chain`` as the Fulcio CA, the vector set's Rekor key."""
    rekor = serialization.load_pem_public_key((LEGACY / "rekor.pub").read_bytes())
    der = rekor.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b64 = base64.b64encode
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{"baseUrl": "https://rekor.example", "publicKey": {"rawBytes": b64(der).decode()}}],
            "certificateAuthorities": [
                {
                    "certChain": {
                        "certificates": [
                            {"rawBytes": b64(c.public_bytes(serialization.Encoding.DER)).decode()} for c in chain
                        ]
                    }
                }
            ],
        }
    ).encode()


def legacy_root_json() -> bytes:
    return trusted_root_json(x509.load_pem_x509_certificates((LEGACY / "fulcio-chain").read_bytes()))


def stranger_root_json() -> bytes:
    """The same Rekor key, but another Fulcio CA (self-signed here)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another fulcio")])
    now = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=36500))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return trusted_root_json([cert])


@dataclass
class TufRepo:
    url: str
    root: Path  # 1.root.json, to trust first
    directory: Path

    def tamper_target(self) -> None:
        for target in (self.directory / "targets").iterdir():
            target.write_bytes(target.read_bytes().replace(b"rekor.example", b"rekor.evil.xx"))


def build_repo(directory: Path, payload: bytes) -> Path:
    """A signed TUF repository (consistent snapshots) whose one target is trusted_root.json."""
    (directory / "targets").mkdir(parents=True)
    expires = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(days=7)
    signers = {r: CryptoSigner.generate_ecdsa() for r in ("root", "timestamp", "snapshot", "targets")}
    root = Metadata(Root(expires=expires))
    for role, signer in signers.items():
        root.signed.add_key(signer.public_key, role)
    target = TargetFile.from_data("trusted_root.json", payload, ["sha256"])
    targets = Metadata(Targets(expires=expires))
    targets.signed.targets["trusted_root.json"] = target
    snapshot = Metadata(Snapshot(expires=expires))
    snapshot.signed.meta["targets.json"] = MetaFile(version=1)
    timestamp = Metadata(Timestamp(expires=expires))
    timestamp.signed.snapshot_meta = MetaFile(version=1)
    serializer = JSONSerializer(compact=False)
    for metadata, name in (
        (root, "1.root"),
        (targets, "1.targets"),
        (snapshot, "1.snapshot"),
        (timestamp, "timestamp"),
    ):
        metadata.sign(signers[metadata.signed.type])
        metadata.to_file(str(directory / f"{name}.json"), serializer)
    (directory / "targets" / f"{target.hashes['sha256']}.trusted_root.json").write_bytes(payload)
    return directory / "1.root.json"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(payload: bytes, name: str = "repo") -> TufRepo:
        directory = tmp_path / name
        root = build_repo(directory, payload)
        handler = partial(QuietHandler, directory=str(directory))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return TufRepo(f"http://127.0.0.1:{server.server_address[1]}", root, directory)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cosign_pub(signing_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> Path:
    return write_pub(signing_key, tmp_path / "cosign.pub")


def export(repo: TufRepo, tmp_path: Path, keys_dir: Path, cosign_pub: Path, image: str, *extra: str) -> Any:
    out = tmp_path / "b.tar.zst"
    proc = run(
        "export", "--plain-http", "--force", "--signing-key", str(keys_dir / "dtbundle.key"), "-o", str(out),
        "--cosign-key", str(cosign_pub), *IDENTITY, "--tuf-url", repo.url, "--tuf-root", str(repo.root),
        *extra, image,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    return proc, out


def carried(path: Path) -> tuple[dict[str, Any], bytes]:
    """The bundle's trust extension and the blob it names."""
    with open_bundle(path, None) as reader:
        extension = reader.catalog.extensions["trust"]["trustedRoot"]
        files = {f.digest: f for f in reader.catalog.files}
        wanted = files[extension["digest"]]
        blob = b""
        for entry, data in reader.files():
            content = b"".join(data)
            if entry.digest == wanted.digest:
                blob = content
    return extension, blob


def signed_image(seeded: list[images.SampleImage]) -> str:
    return str(next(i for i in seeded if i.signed).ref)


def test_export_fetches_the_root_through_tuf_and_carries_it(
    serve: Any, seeded: list[images.SampleImage], keys_dir: Path, cosign_pub: Path, tmp_path: Path
) -> None:
    repo = serve(legacy_root_json())
    proc, out = export(repo, tmp_path, keys_dir, cosign_pub, signed_image(seeded))
    assert proc.returncode == 0, proc.stderr
    extension, blob = carried(out)
    assert blob == legacy_root_json()
    assert extension == {"digest": sha256_digest(blob), "size": len(blob)}
    # The second run starts from the cached (verified) metadata.
    assert any((tmp_path / "cache" / "dtbundle" / "tuf").rglob("root.json"))
    pub = str(keys_dir / "dtbundle.pub")
    # Air-gapped side: keyless options, no --trusted-root: the carried root is used.
    ok = run(
        "verify", "--public-key", pub, "--cosign-key", str(cosign_pub), *IDENTITY, "--require-signatures", str(out)
    )
    assert ok.returncode == 0, ok.stderr
    # Import does not choke on the trust blob (it is checked, not pushed), with or without a policy.
    layout = tmp_path / "layout"
    imported = run(
        "import", "--public-key", pub, "--cosign-key", str(cosign_pub), *IDENTITY, "--require-signatures",
        "--to-oci", str(layout), str(out),
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert not (layout / "blobs" / "sha256" / extension["digest"].split(":")[1]).exists()
    plain = run("import", "--public-key", pub, "--to-oci", str(tmp_path / "layout2"), str(out))
    assert plain.returncode == 0, plain.stderr
    # An unverified bundle's carried root would choose which keyless signers count: refused.
    blind = run(
        "import", "--insecure-skip-verify", "--cosign-key", str(cosign_pub), *IDENTITY,
        "--to-oci", str(tmp_path / "layout3"), str(out),
    )  # fmt: skip
    assert blind.returncode == 2 and "Traceback" not in blind.stderr
    assert "the trusted root it carries is not trusted" in blind.stderr.splitlines()[-1]
    assert not (tmp_path / "layout3").exists()


def test_no_carried_root_is_a_usage_error(exported: Any) -> None:
    proc = run("verify", "--public-key", str(exported.pub), *IDENTITY, str(exported.path))
    assert "--trusted-root" in assert_clean_error(proc, 2)


def _keyless_verdict(root: bytes) -> Any:
    from dtbundle.trust.evaluate import SignatureCollector
    from dtbundle.verify import with_carried_root

    raw = (KEYLESS / "signature-1").read_bytes()
    document = json.loads(raw[len(b"\x00sigstore-json\n") :])
    payload = base64.b64decode(document["payload"])
    collector = SignatureCollector.__new__(SignatureCollector)
    collector.blobs = {sha256_digest(root): root}
    policy = with_carried_root(
        Policy(identities=(Identity(subject_regexp=".*"),), root_pending=True), sha256_digest(root), collector
    )
    return verify_simple_signing(
        payload,
        document["annotations"],
        media_type=document["mimeType"],
        layer_digest=sha256_digest(payload),
        image_digest=sha256_digest((KEYLESS / "manifest.json").read_bytes()),
        policy=policy,
    )


def test_the_carried_root_decides_keyless_signatures(
    serve: Any, seeded: list[images.SampleImage], keys_dir: Path, cosign_pub: Path, tmp_path: Path
) -> None:
    # The root that signed, carried through TUF and a bundle: the keyless vector verifies with it.
    proc, out = export(serve(legacy_root_json(), "good"), tmp_path, keys_dir, cosign_pub, signed_image(seeded))
    assert proc.returncode == 0, proc.stderr
    assert _keyless_verdict(carried(out)[1]).valid
    # A root with another Fulcio CA: the same signature fails.
    proc, out = export(serve(stranger_root_json(), "other"), tmp_path, keys_dir, cosign_pub, signed_image(seeded))
    assert proc.returncode == 0, proc.stderr
    verdict = _keyless_verdict(carried(out)[1])
    assert not verdict.valid and "trusted" in verdict.detail, verdict


def test_tampered_tuf_target_is_refused_at_export(
    serve: Any, seeded: list[images.SampleImage], keys_dir: Path, cosign_pub: Path, tmp_path: Path
) -> None:
    repo = serve(legacy_root_json())
    repo.tamper_target()
    proc, out = export(repo, tmp_path, keys_dir, cosign_pub, signed_image(seeded))
    message = assert_clean_error(proc, 3)
    assert "TUF verification" in message and "trusted_root.json" in message and not out.exists()


def test_tuf_root_of_another_repository_is_refused(
    serve: Any, seeded: list[images.SampleImage], keys_dir: Path, cosign_pub: Path, tmp_path: Path
) -> None:
    repo, other = serve(legacy_root_json(), "one"), serve(legacy_root_json(), "two")
    proc, _ = export(
        TufRepo(repo.url, other.root, repo.directory), tmp_path, keys_dir, cosign_pub, signed_image(seeded)
    )
    assert "TUF" in assert_clean_error(proc, 3)


def test_the_shipped_public_good_root_is_a_tuf_root() -> None:
    root = Metadata[Root].from_bytes(embedded_root())
    assert root.signed.type == "root" and root.signed.consistent_snapshot
    root.verify_delegate("root", root)  # self-signed by its threshold of root keys
