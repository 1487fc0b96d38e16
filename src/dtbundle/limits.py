"""Every bound dtbundle enforces, in one place (like python-tuf's ``UpdaterConfig``).

A hostile or broken registry, bundle or signature can only make dtbundle read, wait or
retry as much as these numbers allow. ``specs/`` quote them; ``tests/test_limits.py``
checks that the specs and this module agree.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

# containerd and distribution refuse larger manifests too; the one definition of this bound.
MANIFEST_MAX_BYTES = 4 * MiB
# distribution's reference grammar: registry/repository is at most this long.
REFERENCE_NAME_MAX_LENGTH = 255


@dataclass(frozen=True)
class RegistryLimits:
    """What a registry (or the Deployment API) can make a client read, wait for and retry."""

    max_manifest_bytes: int = MANIFEST_MAX_BYTES
    max_json_bytes: int = 4 * MiB  # tag lists, referrers, token and Deployment API responses
    max_small_blob_bytes: int = 64 * MiB  # blobs read into memory (configs, signature payloads)
    max_error_body_bytes: int = 64 * KiB  # an error response is read this far for its message
    max_redirects: int = 5
    max_pages: int = 10_000  # Link-paginated tag and referrer lists
    # Timeouts (seconds) on every request.
    connect_timeout: float = 15.0
    read_timeout: float = 120.0
    # Retries: bounded exponential backoff with full jitter.
    max_attempts: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    retry_after_max: float = 120.0
    max_resumes: int = 10  # Range resumes of one blob download, in total
    max_chunk_failures: int = 5  # failed PATCHes of one upload chunk before giving up
    max_connections: int = 32  # open connections of one client, over all registries
    credential_helper_timeout: float = 30.0  # a docker-credential-* helper must answer within this


@dataclass(frozen=True)
class BundleLimits:
    """Bounds a reader enforces on a bundle, whatever its signature says."""

    max_catalog_bytes: int = 64 * MiB
    max_signature_file_bytes: int = 64 * KiB
    max_files: int = 1_000_000
    max_images: int = 100_000
    max_total_bytes: int = 4 * TiB  # uncompressed content
    max_manifest_bytes: int = MANIFEST_MAX_BYTES
    max_zstd_window_bytes: int = 1 << 27  # 128 MiB: the zstd long-distance-matching maximum
    max_pax_header_bytes: int = 64 * KiB


@dataclass(frozen=True)
class TrustLimits:
    """Bounds of image-signature discovery and verification."""

    max_signature_layer_bytes: int = 1 * MiB  # a cosign payload or Sigstore bundle read into memory
    max_referrer_depth: int = 4  # signature of an SBOM of an image: depth 2
    max_certificate_chain: int = 8


REGISTRY = RegistryLimits()
BUNDLE = BundleLimits()
TRUST = TrustLimits()
