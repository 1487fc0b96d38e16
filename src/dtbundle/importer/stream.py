"""The streaming pass of an import over one bundle file (or each volume of a set, in turn).

Manifests come first: they complete the plan (:func:`~dtbundle.importer.plan.build_plan`), which
refuses a bundle whose manifests reference content it does not carry (nor requires at the
target); the sink then asks the target, in one batch, what it holds, and makes sure it holds
what a delta bundle left out. Then each blob goes to the sink while its SHA-256 is checked.
Later volumes of a set carry the same manifests: they are verified again, not planned again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from dtbundle.bundle.format import INDEX_NAME, LAYOUT_NAME, Catalog, CatalogSplit
from dtbundle.bundle.layout import catalog_index, check_bundle_index
from dtbundle.bundle.reader import Bundle
from dtbundle.errors import IntegrityError, MissingBlobsError
from dtbundle.importer.parts import PartStore
from dtbundle.importer.plan import ImportPlan, Placement, Repos, build_plan, parse_bundle_manifest
from dtbundle.importer.sinks import Sink
from dtbundle.oci import ParsedManifest
from dtbundle.progress import Progress, plural
from dtbundle.trust.evaluate import SignatureCollector
from dtbundle.verify import carried_root, collect_signatures, expect_carried_root

if TYPE_CHECKING:
    from dtbundle.importer.run import ImportSettings

MISSING_SHOWN = 10  # missing blobs named in the error, the rest counted


class BundlePass:
    """What the passes over one import's bundle (or volumes) learn: the manifests, then the plan."""

    def __init__(
        self, catalog: Catalog, placement: Placement, sink: Sink, settings: ImportSettings, progress: Progress
    ) -> None:
        self.catalog, self.placement, self.sink, self.progress = catalog, placement, sink, progress
        self.limits = settings.limits
        self.collector = SignatureCollector(catalog) if settings.signature_policy is not None else None
        policy = settings.signature_policy
        self.root = expect_carried_root(catalog, policy, self.collector) if policy and self.collector else None
        self.trust_file = carried_root(catalog)  # verified like any entry, then left out of the target
        self.required = {r.digest: (r.size, r.repositories) for r in catalog.required}
        self.blob_files = catalog.blob_digests() | frozenset(self.required)
        self.manifest_types = {d: t for d, (t, _) in placement.roots.items()}
        self.manifests: dict[str, bytes] = {}
        self.streamed: dict[str, ParsedManifest] = {}  # parsed once while streaming, reused by the plan
        self.plan: ImportPlan | None = None
        self.layout_index = catalog_index(catalog.images, catalog.artifacts)  # what the bundle's index must be
        self.dry_run = settings.dry_run
        self.to_oci = settings.to_oci is not None
        self.parts = PartStore(catalog, settings.parts_dir, keep=not settings.dry_run)
        self.joined: list[CatalogSplit] = []

    @property
    def plan_blobs(self) -> Mapping[str, Repos]:
        return self.plan.blobs if self.plan is not None else {}

    def read(self, bundle: Bundle) -> None:
        """Stream ``bundle`` (verified entry by entry) into the sink."""
        own = bundle.catalog.own_files
        doing = "verifying" if self.dry_run else "verifying and writing" if self.to_oci else "verifying and pushing"
        volume = f" of volume {bundle.catalog.volume.number}" if bundle.catalog.volume else ""
        self.progress.phase(f"{doing} {plural(len(own), 'file')}{volume}")
        self.progress.start(sum(f.size for f in own))
        collector = self.collector
        for entry, data in bundle.files():
            data = _counted(data, self.progress.advance)
            if collector is not None:
                data = collect_signatures(collector, entry, data)
            if entry.part_of is not None:  # a part of a blob larger than a volume: kept until it is whole
                self.parts.take(entry, data)
            elif entry.path in (LAYOUT_NAME, INDEX_NAME):
                content = b"".join(data)
                if entry.path == INDEX_NAME:  # the second entry: checked before any blob is written
                    check_bundle_index(content, self.layout_index)
            elif entry.digest in self.manifest_types and (self.plan is None or entry.digest in self.plan.manifests):
                if self.plan is None:
                    self._manifest(entry.digest, entry.size, b"".join(data))
                for _ in data:  # a later volume's copy: verified by the reader, already planned
                    pass
            else:
                plan = self._planned()
                repos = plan.blobs.get(entry.digest)
                if repos is None and self.trust_file is not None and entry.digest == self.trust_file.digest:
                    for _ in data:  # the carried trusted root: checked (and kept for the policy), not pushed
                        pass
                    continue
                if repos is None:
                    raise IntegrityError(
                        f"bundle entry {entry.path} is referenced by no manifest before it "
                        "(manifests must precede the blobs they use)"
                    )
                self.sink.blob(entry, data, repos)
                for _ in data:  # what the sink did not need to read is still checked
                    pass

    def finish(self) -> ImportPlan:
        """Every bundle given verified: the plan (made now if no blob came after the manifests); each
        blob whose parts are all here now (from this run or earlier ones) goes to the sink."""
        plan = self._planned()
        for split in self.parts.complete():
            repos = plan.blobs.get(split.digest)
            if repos is None:
                raise IntegrityError(f"bundle carries parts of {split.digest}, which no manifest references")
            self.sink.joined(split, repos, self.parts)
            self.joined.append(split)
        return plan

    def done(self) -> None:
        """The joined blobs are at the target, and so may be others: their parts can go."""
        blobs = self.plan_blobs
        for split in self.catalog.split:
            if split in self.joined or (split.digest in blobs and self.sink.holds(split.digest, blobs[split.digest])):
                self.parts.remove(split)

    def _manifest(self, digest: str, size: int, raw: bytes) -> None:
        if size > self.limits.max_manifest_bytes:
            raise IntegrityError(f"manifest {digest} is larger than the manifest limit")
        self.manifests[digest] = raw
        self.streamed[digest] = parse_bundle_manifest(digest, raw, self.manifest_types[digest])
        for child in self.streamed[digest].manifests:
            self.manifest_types.setdefault(child.digest, child.media_type)

    def _planned(self) -> ImportPlan:
        """The plan, made (and the target asked) the first time: manifests come first."""
        if self.plan is None:
            self.plan = build_plan(self.placement, self.manifests, self.blob_files, self.streamed)
            self.sink.planned(self.plan)
            if self.required:
                self._check_required(self.plan)
        return self.plan

    def _check_required(self, plan: ImportPlan) -> None:
        missing = self.sink.require(plan, self.required)
        if missing:
            shown = "; ".join(missing[:MISSING_SHOWN])
            more = f" (and {len(missing) - MISSING_SHOWN} more)" if len(missing) > MISSING_SHOWN else ""
            raise MissingBlobsError(
                f"the target lacks {plural(len(missing), 'blob')} this delta bundle left out: {shown}{more}; "
                "no tag was changed: import the bundles the inventory was taken after, or export a full bundle "
                "(without --inventory)"
            )


def _counted(data: Iterator[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in data:
        advance(len(chunk))
        yield chunk
