"""Settings of the registry client, in one frozen dataclass; its bounds are :class:`RegistryLimits`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dtbundle import __version__
from dtbundle.limits import MiB, RegistryLimits
from dtbundle.registry.proxy import ProxySettings


@dataclass(frozen=True)
class RegistryConfig:
    """Network behaviour of a :class:`~dtbundle.registry.RegistryClient`."""

    # Transport security. Plain HTTP is an explicit opt-out, like skopeo's --tls-verify=false.
    plain_http: bool = False
    ca_cert: Path | None = None
    insecure_skip_tls_verify: bool = False
    # Loopback registries may speak plain HTTP when HTTPS fails, as Docker allows for localhost.
    loopback_plain_http_fallback: bool = True
    limits: RegistryLimits = field(default_factory=RegistryLimits)
    # Proxies for registries, token services and the Deployment API (none: direct), from
    # ProxySettings.from_environment(os.environ, --proxy); see specs/registry-client.md.
    proxy: ProxySettings = field(default_factory=ProxySettings)

    # Transfer sizes (tuning, not bounds).
    # Blobs up to this size are uploaded in one PUT; larger ones in PATCH chunks.
    monolithic_upload_max: int = 64 * MiB
    upload_chunk_bytes: int = 32 * MiB
    # Uploads from a one-pass stream (import) hold one chunk in memory to retry it.
    stream_chunk_bytes: int = 8 * MiB

    user_agent: str = f"dtbundle/{__version__}"
