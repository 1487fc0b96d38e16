"""Publishing verified content: manifests, tags and referrers indexes, in safe order.

Called by the importer only after the whole bundle has been read and every
entry matched the signed catalog. Order: platform manifests, then indexes
(children before parents), then image tags, then signatures and referrers
(cosign tags, OCI 1.1 referrers by digest), then — where the target registry has
no referrers API — the referrers tag schema index, merged with what is there.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dtbundle.errors import TagConflictError
from dtbundle.oci import OCI_INDEX, Descriptor, compute_digest, parse_manifest, referrers_tag
from dtbundle.oci.reference import Reference
from dtbundle.registry import RegistryClient


@dataclass(frozen=True)
class TagWrite:
    target: Reference  # with tag
    digest: str
    media_type: str
    kind: str  # "image" or an artifact kind
    source: Reference


@dataclass
class Graph:
    """What the bundle holds, learned from the catalog and while streaming."""

    manifest_types: dict[str, str] = field(default_factory=dict)
    manifest_repos: dict[str, set[Reference]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    blob_repos: dict[str, set[Reference]] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)

    def add_manifest(self, digest: str, media_type: str, repos: Iterable[Reference]) -> None:
        self.manifest_types.setdefault(digest, media_type)
        self.manifest_repos.setdefault(digest, set()).update(repos)

    def order(self) -> list[str]:
        """Every manifest, children before parents (post-order), deterministic."""
        done: set[str] = set()
        result: list[str] = []

        def visit(digest: str, depth: int) -> None:
            if digest in done or depth > 16:
                return
            done.add(digest)
            for child in self.children.get(digest, []):
                visit(child, depth + 1)
            result.append(digest)

        for digest in self.manifest_types:
            visit(digest, 0)
        return result


@dataclass(frozen=True)
class Referrer:
    subject: str
    repo: Reference
    descriptor: Descriptor


def existing_tags(client: RegistryClient, writes: Iterable[TagWrite], overwrite: bool) -> dict[Reference, str]:
    """Digests the target tags have now; raise TagConflictError for a differing one unless ``overwrite``."""
    current: dict[Reference, str] = {}
    conflicts: list[str] = []
    for write in writes:
        if write.kind == "referrers-index":
            continue  # merged, never a conflict
        found = client.head_manifest(write.target)
        if found is None:
            continue
        current[write.target] = found.digest
        if found.digest != write.digest and not overwrite:
            conflicts.append(f"{write.target} is {found.digest}, the bundle has {write.digest}")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise TagConflictError(
            f"tag already exists with another digest: {conflicts[0]}{more}; tags are immutable by default, "
            "pass --overwrite to replace them or --map to import elsewhere"
        )
    return current


class Publisher:
    """Pushes manifests and tags of a verified bundle into registries."""

    def __init__(self, client: RegistryClient, graph: Graph, report: Counter[str]) -> None:
        self.client, self.graph, self.report = client, graph, report

    def manifests(self) -> None:
        for digest in self.graph.order():
            data, media_type = self.graph.data[digest], self.graph.manifest_types[digest]
            for repo in sorted(self.graph.manifest_repos.get(digest, ()), key=str):
                ref = Reference(repo.registry, repo.repository, None, digest)
                if self.client.head_manifest(ref) is not None:
                    self.report["manifests exist"] += 1
                    continue
                self.client.put_manifest(ref, data, media_type)
                self.report["manifests pushed"] += 1

    def tags(self, writes: Iterable[TagWrite], current: dict[Reference, str]) -> None:
        for write in writes:
            if write.kind == "referrers-index":
                continue
            before = current.get(write.target)
            if before == write.digest:
                self.report["tags unchanged"] += 1
                continue
            self.client.put_manifest(write.target, self.graph.data[write.digest], write.media_type)
            self.report["tags overwritten" if before else "tags pushed"] += 1

    def referrers_indexes(self, referrers: list[Referrer], bundle_indexes: dict[tuple[Reference, str], str]) -> None:
        """Write the referrers tag schema index where the target has no referrers API."""
        by_key: dict[tuple[Reference, str], list[Descriptor]] = {}
        for referrer in referrers:
            by_key.setdefault((referrer.repo, referrer.subject), []).append(referrer.descriptor)
        for (repo, subject), ours in sorted(by_key.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            now = self.client.list_referrers(repo, subject)
            if now.source == "api":
                self.report["referrers via API"] += len(ours)
                continue
            tag = Reference(repo.registry, repo.repository, referrers_tag(subject))
            have = {d.digest for d in now.descriptors}
            if {d.digest for d in ours} <= have:
                self.report["referrers indexes unchanged"] += 1
                continue
            carried = bundle_indexes.get((repo, subject))
            if now.index is None and carried is not None and self._lists_all(carried, ours):
                data = self.graph.data[carried]  # the source's own index, byte for byte
            else:
                data = merged_index(now.index.data if now.index else None, ours)
            self.client.put_manifest(tag, data, OCI_INDEX)
            self.report["referrers indexes written"] += 1

    def _lists_all(self, index_digest: str, ours: list[Descriptor]) -> bool:
        listed = {d.digest for d in parse_manifest(self.graph.data[index_digest], OCI_INDEX).manifests}
        return {d.digest for d in ours} <= listed


def merged_index(existing: bytes | None, additions: list[Descriptor]) -> bytes:
    """A referrers tag schema index: the existing one's entries plus ``additions``."""
    document: dict[str, Any] = (
        json.loads(existing) if existing else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    )
    present = {m.get("digest") for m in document.get("manifests", [])}
    for desc in additions:
        if desc.digest not in present:
            document["manifests"].append(desc.to_json())
            present.add(desc.digest)
    return json.dumps(document, separators=(",", ":")).encode()


def referrer_descriptor(data: bytes, media_type: str, artifact_type: str | None) -> Descriptor:
    """The descriptor a referrers index lists for a referrer: with artifactType and annotations."""
    parsed = parse_manifest(data, media_type)
    return Descriptor(
        media_type,
        compute_digest(data),
        len(data),
        artifact_type=artifact_type or parsed.artifact_type or (parsed.config.media_type if parsed.config else None),
        annotations=dict(parsed.annotations),
    )
