"""Image-signature trust, offline and pure.

``keys`` (key types, fingerprints, the raw signature check), ``root`` (Sigstore trusted root),
``policy`` (identities, policy, verdicts), ``certificates`` (Fulcio certificates, chain to the
root), ``transparency`` (Rekor entries and signed entry timestamps), ``signer`` (the signer
check both formats share), ``simple_signing`` (cosign ``.sig`` layers), ``sigstore_bundle``
(Sigstore bundles), ``evaluate`` (per-image evaluation and ``--require-signatures``).
"""

# Sigstore's public-good TUF repository (trust/tuf.py): here, so that `export --help` can name it
# without loading the TUF client.
DEFAULT_TUF_URL = "https://tuf-repo-cdn.sigstore.dev"
