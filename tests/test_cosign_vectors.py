"""Signature verification against third-party test vectors (tests/vectors, vendored from
containers/image and sigstore-conformance), made by the real cosign and Sigstore tools, with
the outcomes their README states. sigstore-python (offline, its embedded public-good trusted
root) is a second opinion on the Sigstore bundles."""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dtbundle.errors import UsageError
from dtbundle.oci import sha256_digest
from dtbundle.trust.keys import VerifyKey, key_fingerprint, load_verify_key
from dtbundle.trust.policy import Identity, Policy, Verdict
from dtbundle.trust.root import TrustedRoot
from dtbundle.trust.sigstore_bundle import verify_sigstore_bundle
from dtbundle.trust.simple_signing import REKOR_BUNDLE_ANNOTATION, verify_simple_signing

VECTORS = Path(__file__).parent / "vectors"
LEGACY = VECTORS / "cosign-legacy"
BUNDLES = VECTORS / "sigstore-bundle"
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
    "extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ACTIONS = "https://token.actions.githubusercontent.com"


@pytest.fixture(scope="module", autouse=True)
def _vectors_present() -> None:
    if not LEGACY.is_dir() or not BUNDLES.is_dir():
        pytest.fail(f"test vectors missing at {VECTORS}: they are part of the repository")


def key(name: str, base: Path = LEGACY) -> VerifyKey:
    return load_verify_key((base / name).read_bytes(), name)


def layer(path: Path) -> tuple[bytes, dict[str, str], str]:
    """A signature-N file: b"\\x00sigstore-json\\n" + {mimeType, payload (base64), annotations}."""
    raw = path.read_bytes()
    assert raw.startswith(b"\x00sigstore-json\n")
    document = json.loads(raw[len(b"\x00sigstore-json\n") :])
    return base64.b64decode(document["payload"]), document["annotations"], document["mimeType"]


def verify_case(case: str, signature: str, policy: Policy) -> Verdict:
    manifest = LEGACY / case / "manifest.json"
    digest = sha256_digest(manifest.read_bytes()) if manifest.exists() else None
    payload, annotations, media_type = layer(LEGACY / case / signature)
    return verify_simple_signing(
        payload,
        annotations,
        media_type=media_type,
        layer_digest=sha256_digest(payload),
        image_digest=digest,
        policy=policy,
    )


def legacy_root(*, with_chain: bool = True, with_rekor: bool = True) -> TrustedRoot:
    """A trusted root made of the vector set's own Fulcio chain and Rekor key."""
    rekor = serialization.load_pem_public_key((LEGACY / "rekor.pub").read_bytes())
    der = rekor.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    chain = x509.load_pem_x509_certificates((LEGACY / "fulcio-chain").read_bytes()) if with_chain else []
    logs = {hashlib.sha256(der).hexdigest(): rekor} if with_rekor else {}
    return TrustedRoot(tuple(chain), logs)  # type: ignore[arg-type]


# The README's table: (case, signature, key, expected validity, expected reason fragment)
LEGACY_TABLE = [
    ("dir-img-cosign-valid", "signature-1", "cosign.pub", True, "verified"),
    ("dir-img-cosign-valid-2", "signature-1", "cosign.pub", True, "verified"),
    ("dir-img-cosign-valid-2", "signature-2", "cosign.pub", True, "verified"),
    ("dir-img-cosign-valid-with-tag", "signature-1", "cosign.pub", True, "verified"),
    ("dir-img-cosign-mixed", "signature-1", "cosign.pub", False, "does not verify"),
    ("dir-img-cosign-mixed", "signature-2", "cosign.pub", True, "verified"),
    ("dir-img-cosign-modified-manifest", "signature-1", "cosign.pub", False, "not for sha256:"),
    ("dir-img-cosign-manifest-digest-error", "signature-1", "cosign.pub", False, "not for sha256:"),
    ("dir-img-cosign-no-manifest", "signature-1", "cosign.pub", True, "verified"),
    ("dir-img-cosign-key-rekor-valid", "signature-1", "cosign2.pub", True, "verified"),
    ("dir-img-cosign-key-rekor-valid", "signature-1", "cosign.pub", False, "does not verify"),
    ("dir-img-cosign-other-attachment", "signature-1", "cosign.pub", False, "not a cosign signature"),
    ("dir-img-cosign-valid", "signature-1", "some-rsa-key.pub", False, "does not verify"),
    ("dir-img-cosign-fulcio-rekor-valid", "signature-1", "cosign.pub", False, "keyless"),
]


@pytest.mark.parametrize(("case", "signature", "key_name", "valid", "reason"), LEGACY_TABLE)
def test_cosign_legacy_vectors(case: str, signature: str, key_name: str, valid: bool, reason: str) -> None:
    verdict = verify_case(case, signature, Policy(keys=(key(key_name),)))
    assert verdict.valid is valid, verdict.detail
    assert reason in verdict.detail
    if valid:
        assert verdict.signer == f"key {key_fingerprint(key(key_name))}"


def test_unknown_key_signature_is_invalid() -> None:
    payload, annotations, media_type = layer(LEGACY / "unknown-cosign-key.signature")
    verdict = verify_simple_signing(
        payload,
        annotations,
        media_type=media_type,
        layer_digest=None,
        image_digest=None,
        policy=Policy(keys=(key("cosign.pub"),)),
    )
    assert not verdict.valid and "does not verify" in verdict.detail


def test_key_signature_with_rekor_bundle_verifies_its_log_entry() -> None:
    policy = Policy(keys=(key("cosign2.pub"),), trusted_root=legacy_root())
    assert verify_case("dir-img-cosign-key-rekor-valid", "signature-1", policy).valid
    # With a trusted root that does not know this Rekor instance, the log entry cannot be trusted.
    stranger = Policy(keys=(key("cosign2.pub"),), trusted_root=legacy_root(with_rekor=False))
    verdict = verify_case("dir-img-cosign-key-rekor-valid", "signature-1", stranger)
    assert not verdict.valid and "not in the trusted root" in verdict.detail


def test_tampered_rekor_bundle_is_rejected() -> None:
    payload, annotations, media_type = layer(LEGACY / "dir-img-cosign-key-rekor-valid" / "signature-1")
    bundle = json.loads(annotations[REKOR_BUNDLE_ANNOTATION])
    bundle["Payload"]["integratedTime"] += 1
    annotations[REKOR_BUNDLE_ANNOTATION] = json.dumps(bundle)
    manifest = (LEGACY / "dir-img-cosign-key-rekor-valid" / "manifest.json").read_bytes()
    verdict = verify_simple_signing(
        payload,
        annotations,
        media_type=media_type,
        layer_digest=sha256_digest(payload),
        image_digest=sha256_digest(manifest),
        policy=Policy(keys=(key("cosign2.pub"),), trusted_root=legacy_root()),
    )
    assert not verdict.valid and "signed entry timestamp" in verdict.detail


KEYLESS_CASE = ("dir-img-cosign-fulcio-rekor-valid", "signature-1")


def test_keyless_legacy_signature_verifies_offline() -> None:
    identity = Identity(subject="mitr@redhat.com", issuer="https://github.com/login/oauth")
    verdict = verify_case(*KEYLESS_CASE, Policy(trusted_root=legacy_root(), identities=(identity,)))
    assert verdict.valid, verdict.detail
    assert verdict.signer == "mitr@redhat.com (issuer https://github.com/login/oauth)"
    regexp = Identity(subject_regexp=r".*@redhat\.com", issuer_regexp=r"https://github\.com/.*")
    assert verify_case(*KEYLESS_CASE, Policy(trusted_root=legacy_root(), identities=(regexp,))).valid


ANYONE = (Identity(subject_regexp=".*"),)
# Built inside the test (not at collection), so a missing vector directory fails the test clearly.
KEYLESS_REJECTIONS: dict[str, tuple[Callable[[], Policy], str]] = {
    "other identity": (
        lambda: Policy(trusted_root=legacy_root(), identities=(Identity(subject="x@example.com"),)),
        "does not match the policy",
    ),
    "other issuer": (
        lambda: Policy(
            trusted_root=legacy_root(),
            identities=(Identity(subject="mitr@redhat.com", issuer="https://accounts.google.com"),),
        ),
        "does not match",
    ),
    "unknown CA": (
        lambda: Policy(trusted_root=legacy_root(with_chain=False), identities=ANYONE),
        "does not chain",
    ),
    "unknown Rekor": (
        lambda: Policy(trusted_root=legacy_root(with_rekor=False), identities=ANYONE),
        "not in the trusted root",
    ),
    "key only": (lambda: Policy(keys=(key("cosign.pub"),)), "--trusted-root"),
}


@pytest.mark.parametrize("name", list(KEYLESS_REJECTIONS))
def test_keyless_legacy_signature_rejections(name: str) -> None:
    make_policy, reason = KEYLESS_REJECTIONS[name]
    verdict = verify_case(*KEYLESS_CASE, make_policy())
    assert not verdict.valid and reason in verdict.detail


# -- Sigstore bundles ----------------------------------------------------------------------------------
def public_good_root() -> bytes:
    """The Sigstore public-good trusted root, as shipped inside sigstore-python."""
    store = importlib.resources.files("sigstore") / "_store" / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    return (store / "trusted_root.json").read_bytes()


BUNDLE_TABLE = [  # (case, expected validity): a name ending in _fail must fail
    ("happy-path-v0.3", True),
    ("happy-path-intoto-in-dsse-v3", True),
    ("managed-key-happy-path", True),
    ("managed-key-and-trusted-root", True),
    ("dsse-invalid-sig_fail", False),
    ("dsse-mismatch-sig_fail", False),
    ("incorrect-public-key_fail", False),
    ("managed-key-no-key_fail", False),
    ("managed-key-wrong-key_fail", False),
]


def bundle_policy(case: Path) -> Policy:
    keys = (key("key.pub", case),) if (case / "key.pub").exists() else ()
    root: TrustedRoot | None
    if (case / "trusted_root.json").exists():
        root = TrustedRoot.from_json((case / "trusted_root.json").read_bytes())
    else:
        root = TrustedRoot.from_json(public_good_root()) if not keys else None
    return Policy(keys, root, (Identity(subject=BEACON, issuer=ACTIONS),))


@pytest.mark.parametrize(("case", "valid"), BUNDLE_TABLE)
def test_sigstore_bundle_vectors(case: str, valid: bool) -> None:
    assert case.endswith("_fail") is not valid
    folder = BUNDLES / case
    try:
        policy = bundle_policy(folder)
    except UsageError as exc:
        # managed-key-wrong-key_fail's key.pub is not a valid P-256 point: refusing the key
        # is how this case fails here.
        assert not valid and "not a PEM public key" in str(exc)
        return
    verdict = verify_sigstore_bundle(
        (folder / "bundle.sigstore.json").read_bytes(),
        image_digest=None,
        artifact=(BUNDLES / "a.txt").read_bytes(),
        policy=policy,
    )
    assert verdict.valid is valid, verdict.detail


def test_bundle_against_another_artifact_fails() -> None:
    folder = BUNDLES / "managed-key-happy-path"
    verdict = verify_sigstore_bundle(
        (folder / "bundle.sigstore.json").read_bytes(),
        image_digest=None,
        artifact=b"another artifact",
        policy=bundle_policy(folder),
    )
    assert not verdict.valid and "not sha256:" in verdict.detail


def test_keyless_bundle_needs_the_identity() -> None:
    folder = BUNDLES / "happy-path-v0.3"
    policy = Policy(
        (),
        TrustedRoot.from_json(public_good_root()),
        (Identity(subject_regexp=r"https://github\.com/dynatrace/.*", issuer=ACTIONS),),
    )
    verdict = verify_sigstore_bundle(
        (folder / "bundle.sigstore.json").read_bytes(),
        image_digest=None,
        artifact=(BUNDLES / "a.txt").read_bytes(),
        policy=policy,
    )
    assert not verdict.valid and "does not match the policy" in verdict.detail


@pytest.mark.parametrize(
    "case",
    [
        "happy-path-v0.3",
        "happy-path-intoto-in-dsse-v3",
        "dsse-invalid-sig_fail",
        "dsse-mismatch-sig_fail",
        "incorrect-public-key_fail",
    ],
)
def test_sigstore_python_agrees_on_keyless_bundles(case: str) -> None:
    from sigstore.models import Bundle
    from sigstore.verify import Verifier, policy

    bundle_bytes = (BUNDLES / case / "bundle.sigstore.json").read_bytes()
    artifact = (BUNDLES / "a.txt").read_bytes()
    theirs = True
    try:
        bundle = Bundle.from_json(bundle_bytes)
        verifier = Verifier.production(offline=True)
        identity = policy.Identity(identity=BEACON, issuer=ACTIONS)
        if "dsse" in case:
            verifier.verify_dsse(bundle, identity)
        else:
            verifier.verify_artifact(artifact, bundle, identity)
    except Exception:
        theirs = False
    ours = verify_sigstore_bundle(
        bundle_bytes, image_digest=None, artifact=artifact, policy=bundle_policy(BUNDLES / case)
    ).valid
    assert ours is theirs is (not case.endswith("_fail"))
