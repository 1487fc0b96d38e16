"""Every bound dtbundle enforces, in one place (like python-tuf's ``UpdaterConfig``).

A hostile or broken registry, bundle or signature can only make dtbundle read, wait or
retry as much as these numbers allow. ``specs/`` quote them; ``tests/test_limits.py``
checks that the specs and this module agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

# containerd and distribution refuse larger manifests too; the one definition of this bound.
MANIFEST_MAX_BYTES = 4 * MiB
# distribution's reference grammar: registry/repository is at most this long.
REFERENCE_NAME_MAX_LENGTH = 255
# import's rollback records (importer/state.py): about 100 000 records; anything larger is not ours.
STATE_FILE_MAX_BYTES = 16 * MiB
# import (importer/workers.py): blobs uploaded at once by default (--concurrency), and the temporary
# copies of blobs waiting for (or in) an upload: at most this many bytes, and files per upload slot,
# at once (more only for one blob larger than that, which is then the only one).
IMPORT_CONCURRENCY = 8
IMPORT_SPOOL_MAX_BYTES = 1 * GiB
IMPORT_SPOOL_MAX_FILES_PER_UPLOAD = 4


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
    # Time bounds of one transfer (a body read or sent: blob, manifest, list, upload chunk).
    # Stall rule: while a body moves, every window of stall_timeout seconds must move more than
    # max_stall_bytes bytes, and no single read or write may wait longer than stall_timeout for
    # a byte; otherwise the transfer is stalled, which is retried (or resumed) like a dropped
    # connection. A server trickling a byte a second is stalled after one window.
    stall_timeout: float = 60.0
    max_stall_bytes: int = 16 * KiB
    # Overall deadline of one transfer, including all its retries and resumes (a blob download,
    # a whole blob upload, a manifest read); never retried.
    max_transfer_seconds: float = 14_400.0
    # Manifests fetched by digest are immutable: a client keeps them (at most this many bytes)
    # and fetches each (registry, repository, digest) once per run.
    max_manifest_cache_bytes: int = 64 * MiB

    def timed(self, stall_timeout: float | None, max_transfer_seconds: float | None) -> RegistryLimits:
        """These limits with the time bounds that are given (the CLI's --stall-timeout, --transfer-deadline)."""
        given = {"stall_timeout": stall_timeout, "max_transfer_seconds": max_transfer_seconds}
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]

    max_chunk_failures: int = 5  # failed PATCHes of one upload chunk before giving up
    max_connections: int = 32  # open connections of one client, over all registries
    credential_helper_timeout: float = 30.0  # a docker-credential-* helper must answer within this


@dataclass(frozen=True)
class JsonLimits:
    """Bounds of one parse of JSON dtbundle did not write (``jsontext.loads``), checked before the
    parser builds anything. The defaults serve manifests, registry and Deployment API answers,
    layouts and Sigstore documents, whose size their reader bounds already."""

    max_depth: int = 64  # nesting of arrays and objects
    max_elements: int = 1_000_000  # `{`, `[` and `,` outside strings: an upper bound of the values built
    # per started KiB of text: memory stays a small multiple of the text's size (~100 bytes per element)
    max_elements_per_kib: int = 256
    max_bytes: int | None = None  # None: the caller bounded the size already


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
    # The catalog and signature file as JSON, measured before they are parsed (jsontext). A real
    # catalog has an element per ~40 bytes; at most one per 16 bytes and 2 million in all keep the
    # memory of a parse under ~10x the catalog's size and ~400 MB, whatever the catalog says.
    max_json_depth: int = 32
    max_catalog_elements: int = 2_000_000
    max_catalog_elements_per_kib: int = 64

    @property
    def catalog_json(self) -> JsonLimits:
        return JsonLimits(
            self.max_json_depth, self.max_catalog_elements, self.max_catalog_elements_per_kib, self.max_catalog_bytes
        )

    @property
    def signature_json(self) -> JsonLimits:
        return JsonLimits(
            self.max_json_depth,
            self.max_catalog_elements,
            self.max_catalog_elements_per_kib,
            self.max_signature_file_bytes,
        )


@dataclass(frozen=True)
class TrustLimits:
    """Bounds of image-signature discovery and verification."""

    max_signature_layer_bytes: int = 1 * MiB  # a cosign payload or Sigstore bundle read into memory
    max_referrer_depth: int = 4  # signature of an SBOM of an image: depth 2
    max_certificate_chain: int = 8


REGISTRY = RegistryLimits()
BUNDLE = BundleLimits()
JSON_DEFAULT = JsonLimits()
TRUST = TrustLimits()

# Inventories (dtbundle inventory, export --inventory; specs/inventory.md): read as hostile input.
MAX_INVENTORY_BYTES = 256 * MiB
MAX_INVENTORY_REPOSITORIES = 100_000
MAX_INVENTORY_ENTRIES = 2_000_000  # manifests and blobs, summed over the repositories
MAX_INVENTORY_BLOB_BYTES = BUNDLE.max_total_bytes  # a larger blob could never be in a bundle
MAX_INVENTORY_TOOL_TEXT = 128  # characters of the tool's name and version
INVENTORY_JSON = JsonLimits(max_depth=8, max_elements=8_000_000, max_elements_per_kib=64)
MAX_INDEX_DEPTH = 8  # indexes of indexes followed while taking one: real images nest two or three
MAX_INVENTORY_WARNINGS = 100  # kept one by one while taking one; the rest are counted

# Delta bundles and volumes (specs/bundle-format.md).
MAX_REQUIRED_HINTS = 16  # repositories a delta's catalog names per required blob (where import may mount it)
VOLUME_MIN_ROOM = 1 * MiB  # a volume must have room for at least this much content of its own
# Zero padding a reader accepts after a bundle's end-of-archive marker (tar records are 10 KiB).
MAX_TRAILING_ZEROS = 1 * MiB
