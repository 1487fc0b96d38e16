"""Every setting and limit of the registry client, in one frozen dataclass.

Like python-tuf's ``UpdaterConfig``: the numbers that bound what a hostile or
broken registry can make us do live here, not scattered through the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dtbundle import __version__

MiB = 1024 * 1024


@dataclass(frozen=True)
class RegistryConfig:
    """Network behaviour and limits of a :class:`~dtbundle.registry.RegistryClient`."""

    # Transport security. Plain HTTP is an explicit opt-out, like skopeo's --tls-verify=false.
    plain_http: bool = False
    ca_cert: Path | None = None
    insecure_skip_tls_verify: bool = False
    # Loopback registries may speak plain HTTP when HTTPS fails, as Docker allows for localhost.
    loopback_plain_http_fallback: bool = True

    # Timeouts (seconds) on every request.
    connect_timeout: float = 15.0
    read_timeout: float = 120.0

    # Retries: bounded exponential backoff with full jitter.
    max_attempts: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    retry_after_max: float = 120.0
    # A blob download may be resumed with Range this many times in total.
    max_resumes: int = 10

    # Bounds on what a registry can send us.
    max_manifest_bytes: int = 4 * MiB  # containerd's limit as well
    max_json_bytes: int = 4 * MiB  # tag lists, referrers, token responses
    max_small_blob_bytes: int = 64 * MiB  # blobs read into memory (configs, signature payloads)
    max_redirects: int = 5
    max_tag_pages: int = 10_000

    # Transfer sizes.
    # Blobs up to this size are uploaded in one PUT; larger ones in PATCH chunks.
    monolithic_upload_max: int = 64 * MiB
    upload_chunk_bytes: int = 32 * MiB
    # Uploads from a one-pass stream (import) hold one chunk in memory to retry it.
    stream_chunk_bytes: int = 8 * MiB

    max_connections: int = 32
    user_agent: str = f"dtbundle/{__version__}"
