"""Publishing a verified bundle into registries: manifests, tags and referrers indexes, in safe order.

Called only after the whole bundle was read and every entry matched the signed
catalog. Order: every manifest children before parents, level by level
(:meth:`~dtbundle.importer.plan.ImportPlan.levels`: platform manifests and other leaves, then
the indexes of those, …; the manifests of one level are pushed side by side, and a level starts
only once every manifest of the one before exists), then image tags side by side, then
signature and referrer tags (cosign tags) side by side, then — where the target registry has
no referrers API — the referrers tag schema index, merged with what is there. A manifest the
target was found to hold (the import's existence checks, asked once up front) is not asked
for again. Target tags are checked (:func:`existing_tags`, side by side) before the bundle is
streamed at all.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from dtbundle import jsontext
from dtbundle.errors import TagConflictError
from dtbundle.importer.plan import ImportPlan, Referrer, TagWrite
from dtbundle.importer.report import Count
from dtbundle.importer.workers import run_all
from dtbundle.oci import OCI_INDEX, Descriptor, Reference, parse_manifest, referrers_tag
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.registry import RegistryClient


def existing_tags(
    client: RegistryClient, writes: Iterable[TagWrite], overwrite: bool, parallel: int = 1
) -> dict[Reference, str]:
    """Digests the target tags have now; raise TagConflictError for a differing one unless ``overwrite``."""
    asked = [w for w in writes if w.kind != ArtifactKind.REFERRERS_INDEX]  # merged, never a conflict
    found = run_all(lambda w: client.head_manifest(w.target), asked, parallel)
    current: dict[Reference, str] = {}
    conflicts: list[str] = []
    for write, there in zip(asked, found, strict=True):
        if there is None:
            continue
        current[write.target] = there.digest
        if there.digest != write.digest and not overwrite:
            conflicts.append(f"{write.target} is {there.digest}, the bundle has {write.digest}")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise TagConflictError(
            f"tag already exists with another digest: {conflicts[0]}{more}; tags are immutable by default, "
            "pass --overwrite to replace them or --map to import elsewhere"
        )
    return current


class Publisher:
    """Pushes the manifests and tags of a verified bundle, as its :class:`ImportPlan` says.

    ``known``: the (repository, digest) pairs of manifests the target holds (None: ask each);
    ``parallel``: requests at once.
    """

    def __init__(
        self,
        client: RegistryClient,
        plan: ImportPlan,
        counts: Counter[Count],
        known: set[tuple[Reference, str]] | None = None,
        parallel: int = 1,
    ) -> None:
        self.client, self.plan, self.counts = client, plan, counts
        self.known, self.parallel = known, parallel

    def publish(self, current: dict[Reference, str]) -> None:
        self.manifests()
        self.tags(current)
        self.referrers_indexes()

    def manifests(self) -> None:
        for level in self.plan.levels():  # every manifest of a level exists before the next starts
            writes = [(d, repo) for d in level for repo in sorted(self.plan.manifests[d].repos, key=str)]
            for outcome in run_all(self._manifest, writes, self.parallel):
                self.counts[outcome] += 1

    def _manifest(self, write: tuple[str, Reference]) -> Count:
        digest, repo = write
        manifest = self.plan.manifests[digest]
        ref = Reference(repo.registry, repo.repository, None, digest)
        there = (repo, digest) in self.known if self.known is not None else self.client.head_manifest(ref) is not None
        if there:
            return Count.MANIFESTS_EXIST
        self.client.put_manifest(ref, manifest.data, manifest.media_type)
        return Count.MANIFESTS_PUSHED

    def tags(self, current: dict[Reference, str]) -> None:
        writes = [w for w in self.plan.placement.tags if w.kind != ArtifactKind.REFERRERS_INDEX]
        images = [w for w in writes if w.kind == ArtifactKind.IMAGE]
        others = [w for w in writes if w.kind != ArtifactKind.IMAGE]
        for wave in (images, others):  # image tags first, then signature and referrer tags
            for outcome in run_all(lambda w: self._tag(w, current.get(w.target)), wave, self.parallel):
                self.counts[outcome] += 1

    def _tag(self, write: TagWrite, before: str | None) -> Count:
        if before == write.digest:
            return Count.TAGS_UNCHANGED
        self.client.put_manifest(write.target, self.plan.manifests[write.digest].data, write.media_type)
        return Count.TAGS_OVERWRITTEN if before else Count.TAGS_PUSHED

    def referrers_indexes(self) -> None:
        """Write the referrers tag schema index where the target has no referrers API."""
        by_key: dict[tuple[Reference, str], list[Descriptor]] = {}
        for referrer in self.plan.placement.referrers:
            by_key.setdefault((referrer.repo, referrer.subject), []).append(self._descriptor(referrer))
        for (repo, subject), ours in sorted(by_key.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            now = self.client.list_referrers(repo, subject)
            if now.source == "api":
                self.counts[Count.REFERRERS_VIA_API] += len(ours)
                continue
            tag = Reference(repo.registry, repo.repository, referrers_tag(subject))
            if {d.digest for d in ours} <= {d.digest for d in now.descriptors}:
                self.counts[Count.REFERRERS_INDEXES_UNCHANGED] += 1
                continue
            carried = self.plan.carried_indexes.get((repo, subject))
            if now.index is None and carried is not None and self._lists_all(carried, ours):
                data = self.plan.manifests[carried].data  # the source's own index, byte for byte
            else:
                data = merged_index(now.index.data if now.index else None, ours)
            self.client.put_manifest(tag, data, OCI_INDEX)
            self.counts[Count.REFERRERS_INDEXES_WRITTEN] += 1

    def _descriptor(self, referrer: Referrer) -> Descriptor:
        return self.plan.referrer_descriptor(referrer)

    def _lists_all(self, index_digest: str, ours: list[Descriptor]) -> bool:
        listed = {d.digest for d in parse_manifest(self.plan.manifests[index_digest].data, OCI_INDEX).manifests}
        return {d.digest for d in ours} <= listed


def merged_index(existing: bytes | None, additions: list[Descriptor]) -> bytes:
    """A referrers tag schema index: the existing one's entries plus ``additions``."""
    document: dict[str, Any] = (
        jsontext.loads(existing) if existing else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    )
    present = {m.get("digest") for m in document.get("manifests", [])}
    for desc in additions:
        if desc.digest not in present:
            document["manifests"].append(desc.to_json())
            present.add(desc.digest)
    return json.dumps(document, separators=(",", ":")).encode()
