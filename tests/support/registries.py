"""Clients, references and credentials for the sandbox registries the fixtures start, the
session bundle's description, and the seeded sample images picked by name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from dtbundle.limits import RegistryLimits
from dtbundle.oci.reference import Reference
from dtbundle.registry import CredentialResolver, Credentials, RegistryClient, RegistryConfig
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer

USER, PASSWORD = "alice", "correct-horse-battery"
READER, READER_PASSWORD = "reader", "only-reads-here"
REFRESH_TOKEN = "refresh-token-for-alice"

# Retries in tests wait milliseconds, not the production schedule's seconds.
FAST_BACKOFF: dict[str, object] = {"backoff_initial": 0.01, "backoff_max": 0.05}


def registry_config(**settings: object) -> RegistryConfig:
    """A RegistryConfig from flat keyword arguments: bounds go to its RegistryLimits."""
    bounds = {f.name for f in fields(RegistryLimits)}
    limits = {k: settings.pop(k) for k in list(settings) if k in bounds}
    return RegistryConfig(limits=RegistryLimits(**limits), **settings)  # type: ignore[arg-type]


def fast_config(**settings: object) -> RegistryConfig:
    """``registry_config`` with the tiny test backoff unless ``settings`` say otherwise."""
    return registry_config(**{**FAST_BACKOFF, **settings})


def make_client(
    server: RegistryServer,
    *,
    user: str | None = USER,
    password: str | None = PASSWORD,
    **config: object,
) -> RegistryClient:
    """A client for ``server`` with explicit credentials (none for user=None) and tiny backoff."""
    explicit = {server.address: Credentials("test credentials", user, password)} if user else {}
    settings: dict[str, object] = {
        "plain_http": not server.tls,
        "ca_cert": server.ca_cert if server.tls else None,
    }
    settings.update(config)
    return RegistryClient(fast_config(**settings), CredentialResolver(explicit, use_config_files=False))


def ref_in(server: RegistryServer, repository: str, tag: str | None = None, digest: str | None = None) -> Reference:
    return Reference(server.address, repository, tag, digest)


def sample(seeded: Sequence[images.SampleImage], name: str) -> images.SampleImage:
    """The sample image whose repository ends in ``name`` (see ``dtbundle.sandbox.images``):

    operator (OCI index, 3 platforms), agent (Docker manifest list, 4 platforms), collector
    (OCI index, 2 platforms), tool (single OCI manifest, unsigned), legacy-tool (single
    Docker manifest).
    """
    found = [i for i in seeded if i.ref.repository.rsplit("/", 1)[-1] == name]
    if len(found) != 1:
        have = [i.ref.repository.rsplit("/", 1)[-1] for i in seeded]
        raise LookupError(f"no single sample image named {name!r} among {have}")
    return found[0]


@dataclass(frozen=True)
class Exported:
    """A bundle of all sample images, exported once per session (do not modify it)."""

    path: Path
    key: Path
    pub: Path
    images: list[images.SampleImage]
