"""``dtbundle import``: verify a bundle and publish it, byte for byte, in one streaming pass.

1. Open the bundle and verify the catalog signature (before anything else is read).
2. Place it (:func:`~dtbundle.importer.plan.place`): where everything lands
   (``--registry``/``--map``), colliding mappings refused, a bundle older than one already
   imported to any of its target tags refused (:mod:`dtbundle.importer.state`, unless
   ``--allow-downgrade``), target tags checked (an existing tag with another digest is
   refused unless ``--overwrite``) — all before a single byte is pushed.
3. Stream the bundle once. Manifests come first: they complete the plan
   (:func:`~dtbundle.importer.plan.build_plan`), which refuses a bundle whose manifests
   reference content it does not carry; the sink then asks the target, in one batch, what
   it holds already. Then each blob goes to the sink while its SHA-256 is checked (several
   blobs are uploaded at once; none is completed before the reader verified it).
4. Only when every entry matched the catalog and the archive ended cleanly (and the
   image-signature policy passed, and every upload ended): the sink commits — manifests, tags, signatures,
   referrers (:mod:`dtbundle.importer.publish`), or the layout's index — holding the
   state file's lock, after checking the rollback records again (another import may have
   finished meanwhile); then the bundle's creation time is recorded for its targets (only
   for a verified catalog, never in a dry run).

If anything fails before step 4 completes, no tag has moved: the registry may hold
unreferenced blobs, never a tag or manifest pointing at unverified content.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from dtbundle.bundle.format import Catalog
from dtbundle.bundle.key import PublicKey
from dtbundle.bundle.layout import catalog_index
from dtbundle.bundle.reader import bundle_name, open_bundle
from dtbundle.bundle.volumeset import VolumeCheck, missing_volumes
from dtbundle.errors import Interrupted, UsageError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.plan import Placement, place
from dtbundle.importer.report import ImportedImage, ImportReport, VolumeReport
from dtbundle.importer.sinks import DryRunSink, LayoutSink, RegistrySink, Sink
from dtbundle.importer.state import (
    RollbackGuard,
    Target,
    bundle_created,
    default_state_path,
    layout_targets,
    registry_targets,
)
from dtbundle.importer.stream import BundlePass
from dtbundle.limits import IMPORT_CONCURRENCY, BundleLimits
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.progress import NO_PROGRESS, Progress, plural
from dtbundle.registry import RegistryClient
from dtbundle.trust.evaluate import require_verified
from dtbundle.trust.policy import Policy
from dtbundle.verify import with_carried_root


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
    # Rollback protection (dtbundle.importer.state): the newest bundle time imported per target
    # tag; None switches it off (library callers that keep their own records).
    state_file: Path | None = field(default_factory=default_state_path)
    allow_downgrade: bool = False
    concurrency: int = IMPORT_CONCURRENCY  # blobs uploaded at once (twice as many small requests)
    volumes: tuple[Path, ...] = ()  # further volumes of ``bundle``'s set, read in this order
    parts_dir: Path | None = None  # parts of blobs larger than a volume, kept between runs (None: the default)

    @property
    def records_state(self) -> bool:
        """Whether a successful run records the bundle's time: a verified catalog, not a dry run."""
        return self.state_file is not None and self.keys is not None and not self.dry_run


def _rollback_guard(settings: ImportSettings, catalog: Catalog, placement: Placement) -> RollbackGuard | None:
    """The rollback check of this import (None when it has no state file)."""
    if settings.state_file is None:
        return None
    targets: frozenset[Target]
    if settings.to_oci is not None:
        targets = layout_targets(settings.to_oci, (i.ref_name for i in catalog.images if i.tag is not None))
    else:
        targets = registry_targets(w.target for w in placement.tags if w.kind == ArtifactKind.IMAGE)
    return RollbackGuard(
        settings.state_file,
        bundle_created(catalog.created),
        targets,
        allow_downgrade=settings.allow_downgrade,
        record=settings.records_state,
    )


def _sink(client: RegistryClient | None, settings: ImportSettings, report: ImportReport, catalog: Catalog) -> Sink:
    mapper = settings.mapper
    confines = mapper.confines if mapper is not None else lambda registry, repository: False
    if settings.dry_run:
        registry = client if settings.to_oci is None else None
        return DryRunSink(
            report,
            settings.overwrite,
            registry,
            settings.to_oci,
            catalog.images,
            concurrency=settings.concurrency,
            confines=confines,
        )
    if settings.to_oci is not None:
        return LayoutSink(settings.to_oci, report, settings.overwrite)
    assert client is not None
    return RegistrySink(client, report, settings.overwrite, settings.concurrency, confines)


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
        volumes = VolumeCheck(catalog, settings.bundle)
        if settings.volumes and catalog.volume is None:
            volumes.add(catalog, settings.volumes[0])  # refused: several bundles that are not volumes
        if settings.to_oci is not None:
            target = str(settings.to_oci)
        else:
            assert settings.mapper is not None
            target = str(settings.mapper.default) if settings.mapper.default else "--map targets"
        report = ImportReport(
            bundle_name(settings.bundle), target, settings.dry_run, settings.to_oci is not None, bundle.key_id
        )
        placement = place(catalog, settings.mapper if settings.to_oci is None else None)
        guard = _rollback_guard(settings, catalog, placement)
        if guard is not None:
            guard.check()  # an older bundle is refused before the target is even read
        sink = _sink(client, settings, report, catalog)
        if settings.to_oci is None:
            progress.phase(f"checking {plural(len(placement.tags), 'target tag')}")
        sink.prepare(placement)
        policy = settings.signature_policy
        if policy is not None and policy.root_pending and settings.keys is None:
            # An unverified catalog would choose which keyless signers count as verified.
            raise UsageError(
                "--insecure-skip-verify does not check the bundle's signature, so the trusted root it carries is "
                "not trusted either: pass --trusted-root FILE for keyless verification"
            )
        passes = BundlePass(catalog, placement, sink, settings, progress)
        try:
            passes.read(bundle)
            for path in settings.volumes:  # further volumes of the set, each verified on its own
                with open_bundle(path, settings.keys, settings.limits) as more:
                    volumes.add(more.catalog, path)
                    passes.read(more)
            plan = passes.finish()
            if passes.collector is not None and policy is not None:
                report.signatures = passes.collector.evaluate(with_carried_root(policy, passes.root, passes.collector))
                if settings.require_signatures:
                    require_verified(report.signatures)
            sink.finish()  # every upload ended (the registry checked each blob's digest)
            if catalog.volume is not None or catalog.required:  # only what is complete at the target
                plan = plan.restricted(plan.complete(sink.holds))
            if catalog.volume is not None:
                report.volumes = VolumeReport(
                    catalog.volume.set,
                    catalog.volume.count,
                    tuple(sorted(volumes.numbers)),
                    tuple(missing_volumes(catalog, passes.plan_blobs, sink.holds, passes.parts.have)),
                )
        except BaseException:
            sink.abort()
            raise
    published = set(plan.manifests)
    layout_index = catalog_index(
        [i for i in catalog.images if i.digest in published], [a for a in catalog.artifacts if a.digest in published]
    )
    with ExitStack() as locked:
        if guard is not None:
            try:  # locked from here until recorded: re-checked, in case another import finished meanwhile
                locked.enter_context(guard.publishing(lambda: progress.phase(f"waiting for {guard.path}.lock")))
            except BaseException:
                sink.abort()
                raise
        if not settings.dry_run:
            progress.phase("writing manifests and index.json" if settings.to_oci else "pushing manifests and tags")
        publishing.append(True)
        sink.commit(plan, layout_index)
    passes.done()  # only now is a joined blob surely at the target (a layout's are renamed at commit)
    report.images = [
        ImportedImage(str(w.source), f"{w.target}@{w.digest}")
        for w in plan.placement.tags
        if w.kind == ArtifactKind.IMAGE
    ]
    report.waiting = [i.source for i in catalog.images if i.digest not in published]  # registry or layout
    report.seconds = time.monotonic() - started
    return report
