"""Taking an inventory: every manifest and blob the tags of some repositories reach.

Per repository: its tags (a repository that does not exist counts as empty), each tag's
manifest, then, level by level, every child manifest of an index, fetched by digest once per
repository (the client verifies each against its digest). An image manifest's config and layers
are its blobs. Cosign ``.sig``/``.att``/``.sbom`` tags and referrers tag schema indexes are tags
like any other. Each level's requests go side by side, at most ``concurrency`` at once.

What an export could not carry anyway is skipped with a warning, never fatal: a tag gone since
its list was read (404), a manifest type dtbundle refuses (schema1, unknown types) or cannot
parse, one above the manifest size bound, a child an index names that the repository lacks.
Authentication, connection and integrity failures end the run. Skipping only ever leaves
something *out* of the inventory, so a delta export built on it carries more, never less.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from dtbundle.bundle.format import format_time
from dtbundle.errors import (
    LimitExceededError,
    NotFoundError,
    RegistryProtocolError,
    UnsupportedManifestError,
    UsageError,
)
from dtbundle.importer.workers import run_all
from dtbundle.inventory.model import Inventory, make_inventory
from dtbundle.limits import MAX_INDEX_DEPTH, MAX_INVENTORY_BLOB_BYTES, MAX_INVENTORY_ENTRIES, MAX_INVENTORY_WARNINGS
from dtbundle.oci import Reference
from dtbundle.oci.digest import SHA256_PATTERN
from dtbundle.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from dtbundle.registry import RegistryClient


class Taken(NamedTuple):
    """An inventory and what was skipped while taking it."""

    inventory: Inventory
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class _Read:
    """What one manifest holds: its digest, the children (of an index) and blobs (of an image)."""

    digest: str
    children: tuple[str, ...]
    blobs: tuple[tuple[str, int], ...]


class _Warnings:
    def __init__(self) -> None:
        self.kept: list[str] = []
        self.more = 0

    def add(self, text: str) -> None:
        if len(self.kept) < MAX_INVENTORY_WARNINGS:
            self.kept.append(text)
        else:
            self.more += 1

    def all(self) -> tuple[str, ...]:
        return (*self.kept, *((f"and {self.more} more warnings like these",) if self.more else ()))


def created_now() -> str:
    """Now, or ``$SOURCE_DATE_EPOCH`` (as export reads it), as YYYY-MM-DDTHH:MM:SSZ."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if epoch.isdigit():
        return format_time(datetime.datetime.fromtimestamp(int(epoch), datetime.UTC))
    return format_time(datetime.datetime.now(datetime.UTC))


def take_inventory(
    client: RegistryClient,
    registry: str,
    repositories: Sequence[str],
    *,
    concurrency: int = 8,
    progress: Progress = NO_PROGRESS,
    created: str | None = None,
) -> Taken:
    """The inventory of ``repositories`` (full paths) at ``registry``, with its warnings."""
    parallel = max(1, min(concurrency, client.config.limits.max_connections))
    warnings = _Warnings()
    held: dict[str, tuple[set[str], dict[str, int]]] = {name: (set(), {}) for name in repositories}
    names = sorted(held)
    progress.phase(f"listing the tags of {len(names)} {'repository' if len(names) == 1 else 'repositories'}")
    tag_lists = run_all(lambda name: _tags(client, Reference(registry, name)), names, parallel)
    level: list[tuple[str, Reference]] = []
    for name, tags in zip(names, tag_lists, strict=True):
        if tags is None:
            warnings.add(f"{registry}/{name} does not exist; recorded as empty")
        level.extend((name, Reference(registry, name, tag)) for tag in sorted(tags or ()))
    _check_entries(len(level))
    queued: dict[str, set[str]] = {name: set() for name in names}  # digests fetched, or to be, per repository
    sizes: dict[str, set[int]] = {}  # blob digest -> every size a manifest gives it
    progress.phase(f"reading the manifests of {len(level)} tags")
    for depth in range(MAX_INDEX_DEPTH + 1):
        if not level:
            break
        if depth:
            progress.phase(f"reading {len(level)} manifests their indexes name")
        results = run_all(lambda item: _read(client, item[1]), level, parallel)
        following: list[tuple[str, Reference]] = []
        for (name, _), (read, problem) in zip(level, results, strict=True):
            if read is None:
                warnings.add(problem)
                continue
            manifests, blobs = held[name]
            manifests.add(read.digest)
            for digest, size in read.blobs:
                blobs[digest] = size
                sizes.setdefault(digest, set()).add(size)
            queued[name].add(read.digest)
            for child in read.children:
                if child not in queued[name]:
                    queued[name].add(child)
                    following.append((name, Reference(registry, name, digest=child)))
        _check_entries(sum(len(m) + len(b) for m, b in held.values()) + len(following))
        level = following
    else:
        if level:
            warnings.add(f"indexes nested more than {MAX_INDEX_DEPTH} levels deep; {len(level)} manifests not recorded")
    for digest in sorted(d for d, found in sizes.items() if len(found) > 1):
        # A manifest lies about a size: leave the blob out everywhere, so a delta export carries it.
        warnings.add(f"manifests give blob {digest} different sizes; left out of the inventory")
        for _, blobs in held.values():
            blobs.pop(digest, None)
    return Taken(make_inventory(created or created_now(), registry, held), warnings.all())


def _tags(client: RegistryClient, ref: Reference) -> list[str] | None:
    """The repository's tags; None when it does not exist."""
    try:
        return client.list_tags(ref)
    except NotFoundError:
        return None


def _read(client: RegistryClient, ref: Reference) -> tuple[_Read | None, str]:
    """One manifest, or None and why it was skipped."""
    try:
        manifest = client.get_manifest(ref)
    except NotFoundError:
        gone = "the index naming it is incomplete" if ref.digest else "the tag was removed since its list was read"
        return None, f"{ref}: not found ({gone}); skipped"
    except (UnsupportedManifestError, LimitExceededError) as exc:
        return None, f"{ref}: {exc.message}; skipped"
    try:
        parsed = manifest.parsed
    except (UnsupportedManifestError, RegistryProtocolError) as exc:
        return None, f"{ref}: {exc.message}; skipped"
    children = tuple(d.digest for d in parsed.manifests if SHA256_PATTERN.fullmatch(d.digest))
    blobs = tuple(
        (d.digest, d.size)
        for d in parsed.blobs()
        # Only what the registry must hold: foreign layers (with urls) may live elsewhere, and a
        # bundle carries sha256 content only.
        if SHA256_PATTERN.fullmatch(d.digest) and not d.urls and d.size <= MAX_INVENTORY_BLOB_BYTES
    )
    return _Read(manifest.digest, children, blobs), ""


def _check_entries(count: int) -> None:
    if count > MAX_INVENTORY_ENTRIES:
        raise UsageError(
            f"the inventory would list more than {MAX_INVENTORY_ENTRIES} manifests and blobs; "
            "take several, each for fewer repositories (--repository, or a narrower --registry prefix)"
        )
