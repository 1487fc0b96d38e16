"""``dtbundle import``: verify a bundle and publish it, byte for byte, in one streaming pass.

1. Open the bundle and verify the catalog signature (before anything else is read).
2. Place it (:func:`~dtbundle.importer.plan.place`): where everything lands
   (``--registry``/``--map``), colliding mappings refused, target tags checked (an
   existing tag with another digest is refused unless ``--overwrite``) — all before a
   single byte is pushed.
3. Stream the bundle once. Manifests come first: they complete the plan
   (:func:`~dtbundle.importer.plan.build_plan`), which refuses a bundle whose manifests
   reference content it does not carry. Then each blob goes to the sink while its
   SHA-256 is checked.
4. Only when every entry matched the catalog and the archive ended cleanly (and the
   image-signature policy passed): the sink commits — manifests, tags, signatures,
   referrers (:mod:`dtbundle.importer.publish`), or the layout's index.

If anything fails before step 4 completes, no tag has moved: the registry may hold
unreferenced blobs, never a tag or manifest pointing at unverified content.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dtbundle.bundle.format import INDEX_NAME, LAYOUT_NAME, Catalog
from dtbundle.bundle.key import PublicKey
from dtbundle.bundle.reader import open_bundle
from dtbundle.errors import IntegrityError, Interrupted, UsageError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.plan import ImportPlan, build_plan, parse_bundle_manifest, place
from dtbundle.importer.report import ImportedImage, ImportReport
from dtbundle.importer.sinks import DryRunSink, LayoutSink, RegistrySink, Sink
from dtbundle.limits import BundleLimits
from dtbundle.oci import ParsedManifest
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.progress import NO_PROGRESS, Progress, plural
from dtbundle.registry import RegistryClient
from dtbundle.trust.evaluate import SignatureCollector, require_verified
from dtbundle.trust.policy import Policy
from dtbundle.verify import carried_root, collect_signatures, expect_carried_root, with_carried_root


@dataclass(frozen=True)
class ImportSettings:
    bundle: Path
    keys: list[PublicKey] | None  # None: --insecure-skip-verify
    mapper: RepositoryMapper | None = None  # registry target
    to_oci: Path | None = None  # OCI layout target
    overwrite: bool = False
    dry_run: bool = False
    limits: BundleLimits = field(default_factory=BundleLimits)
    signature_policy: Policy | None = None  # verify image signatures before publishing
    require_signatures: bool = False


def _sink(client: RegistryClient | None, settings: ImportSettings, report: ImportReport, catalog: Catalog) -> Sink:
    if settings.dry_run:
        registry = client if settings.to_oci is None else None
        return DryRunSink(report, settings.overwrite, registry, settings.to_oci, catalog.images)
    if settings.to_oci is not None:
        return LayoutSink(settings.to_oci, report, settings.overwrite)
    assert client is not None
    return RegistrySink(client, report, settings.overwrite)


def run_import(
    client: RegistryClient | None, settings: ImportSettings, progress: Progress = NO_PROGRESS
) -> ImportReport:
    """Import ``settings.bundle``; KeyboardInterrupt (Ctrl-C, SIGTERM) becomes :class:`Interrupted`,
    whose message says what state the target was left in."""
    publishing: list[bool] = []  # not empty once the sink commits (tags may move from then on)
    try:
        return _import(client, settings, progress, publishing)
    except KeyboardInterrupt:
        raise Interrupted(_interrupted(settings, bool(publishing))) from None


def _interrupted(settings: ImportSettings, publishing: bool) -> str:
    if settings.dry_run:
        return "interrupted: nothing was written (dry run)"
    if settings.to_oci is not None and not publishing:
        return f"interrupted: the index.json of {settings.to_oci} was not changed; run the same command again"
    if settings.to_oci is not None:
        return f"interrupted while writing {settings.to_oci}: run the same command again to finish it"
    if publishing:
        return (
            "interrupted while pushing manifests and tags: some tags may already point at the new (verified) "
            "images, others not yet; run the same command again to finish"
        )
    return "interrupted: no tag was changed; blobs already pushed are reused when you run the same command again"


def _import(
    client: RegistryClient | None, settings: ImportSettings, progress: Progress, publishing: list[bool]
) -> ImportReport:
    started = time.monotonic()
    if settings.to_oci is None and (settings.mapper is None or client is None):
        raise ValueError("a registry import needs a mapper and a client")
    with open_bundle(settings.bundle, settings.keys, settings.limits) as bundle:
        catalog = bundle.catalog
        if settings.to_oci is not None:
            target = str(settings.to_oci)
        else:
            assert settings.mapper is not None
            target = str(settings.mapper.default) if settings.mapper.default else "--map targets"
        report = ImportReport(
            str(settings.bundle), target, settings.dry_run, settings.to_oci is not None, bundle.key_id
        )
        placement = place(catalog, settings.mapper if settings.to_oci is None else None)
        sink = _sink(client, settings, report, catalog)
        if settings.to_oci is None:
            progress.phase(f"checking {plural(len(placement.tags), 'target tag')}")
        sink.prepare(placement)
        doing = (
            "verifying" if settings.dry_run else "verifying and writing" if settings.to_oci else "verifying and pushing"
        )
        progress.phase(f"{doing} {plural(len(catalog.files), 'file')}")
        progress.start(catalog.total_size)
        collector = SignatureCollector(catalog) if settings.signature_policy is not None else None
        policy = settings.signature_policy
        if policy is not None and policy.root_pending and settings.keys is None:
            # An unverified catalog would choose which keyless signers count as verified.
            raise UsageError(
                "--insecure-skip-verify does not check the bundle's signature, so the trusted root it carries is "
                "not trusted either: pass --trusted-root FILE for keyless verification"
            )
        root = expect_carried_root(catalog, policy, collector) if policy and collector else None
        trust_file = carried_root(catalog)  # verified like any entry, then left out of the target
        blob_files = frozenset(f.digest for f in catalog.files if f.path.startswith("blobs/"))
        manifest_types = {d: t for d, (t, _) in placement.roots.items()}
        manifests: dict[str, bytes] = {}
        streamed: dict[str, ParsedManifest] = {}  # parsed once while streaming, reused by the plan
        plan: ImportPlan | None = None
        index_bytes = b""
        try:
            for entry, data in bundle.files():
                data = _counted(data, progress.advance)
                if collector is not None:
                    data = collect_signatures(collector, entry, data)
                if entry.path in (LAYOUT_NAME, INDEX_NAME):
                    content = b"".join(data)
                    index_bytes = content if entry.path == INDEX_NAME else index_bytes
                elif plan is None and entry.digest in manifest_types:
                    if entry.size > settings.limits.max_manifest_bytes:
                        raise IntegrityError(f"manifest {entry.digest} is larger than the manifest limit")
                    manifests[entry.digest] = raw = b"".join(data)
                    streamed[entry.digest] = parse_bundle_manifest(entry.digest, raw, manifest_types[entry.digest])
                    for child in streamed[entry.digest].manifests:
                        manifest_types.setdefault(child.digest, child.media_type)
                else:
                    # Manifests come first: the first other blob completes (and checks) the plan.
                    plan = plan or build_plan(placement, manifests, blob_files, streamed)
                    repos = plan.blobs.get(entry.digest)
                    if repos is None and trust_file is not None and entry.digest == trust_file.digest:
                        for _ in data:  # the carried trusted root: checked (and kept for the policy), not pushed
                            pass
                        continue
                    if repos is None:
                        raise IntegrityError(
                            f"bundle entry {entry.path} is referenced by no manifest before it "
                            "(manifests must precede the blobs they use)"
                        )
                    sink.blob(entry, data, repos)
                    for _ in data:  # what the sink did not need to read is still checked
                        pass
            # Every entry matched the signed catalog and the archive ended cleanly.
            plan = plan or build_plan(placement, manifests, blob_files, streamed)
            if collector is not None and policy is not None:
                report.signatures = collector.evaluate(with_carried_root(policy, root, collector))
                if settings.require_signatures:
                    require_verified(report.signatures)
        except BaseException:
            sink.abort()
            raise
    if not settings.dry_run:
        progress.phase("writing manifests and index.json" if settings.to_oci else "pushing manifests and tags")
    publishing.append(True)
    sink.commit(plan, index_bytes)
    report.images = [
        ImportedImage(str(w.source), f"{w.target}@{w.digest}") for w in placement.tags if w.kind == ArtifactKind.IMAGE
    ]
    report.seconds = time.monotonic() - started
    return report


def _counted(data: Iterator[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in data:
        advance(len(chunk))
        yield chunk
