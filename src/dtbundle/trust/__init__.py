"""Image-signature trust, offline: keys, trusted roots, policy, cosign and Sigstore formats, evaluation."""
