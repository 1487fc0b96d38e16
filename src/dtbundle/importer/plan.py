"""The import plan, pure: where every manifest, blob, tag and referrer of a bundle lands.

Built in two steps, both without IO:

1. :func:`place` reads the catalog alone: the target repository of each image and
   artifact (``--registry``/``--map``), the tags to write (collisions refused), and the
   referrers. Enough to check target tags before a byte is read.
2. :func:`build_plan` adds what the manifests say (they come first in a bundle): each
   child manifest and blob inherits the repositories of the manifests that use it, and
   every manifest and blob they reference must be in the bundle — so an incomplete
   bundle is refused before anything is pushed.

A ``mapper`` of None plans for an OCI layout directory: no repositories, no tags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dtbundle.bundle.format import TARGET_REPOSITORY_ANNOTATION, Catalog
from dtbundle.errors import DtbundleError, IntegrityError
from dtbundle.importer.mapping import RepositoryMapper, check_collisions
from dtbundle.oci import Descriptor, ParsedManifest, Reference, compute_digest, parse_manifest
from dtbundle.oci.kinds import ArtifactKind

Repos = frozenset[Reference]


@dataclass(frozen=True)
class TagWrite:
    target: Reference  # with tag
    digest: str
    media_type: str
    kind: ArtifactKind
    source: Reference


@dataclass(frozen=True)
class Referrer:
    """An OCI 1.1 referrer to list in a referrers tag schema index (where the target has no API)."""

    subject: str
    repo: Reference
    digest: str
    artifact_type: str | None


@dataclass(frozen=True)
class Placement:
    """What the catalog alone says: roots and their repositories, tags, referrers."""

    roots: Mapping[str, tuple[str, Repos]]  # manifest digest -> (media type, target repositories)
    tags: tuple[TagWrite, ...]
    referrers: tuple[Referrer, ...]
    subjects: Mapping[str, str]  # artifact digest -> subject digest

    def image_targets(self) -> dict[str, Reference]:
        """Image digest -> its target reference (with tag)."""
        return {w.digest: w.target for w in self.tags if w.kind == ArtifactKind.IMAGE}


@dataclass(frozen=True)
class PlannedManifest:
    digest: str
    media_type: str
    data: bytes
    repos: Repos
    children: tuple[str, ...]
    blobs: tuple[str, ...] = ()  # the digests of its config and layers


@dataclass(frozen=True)
class ImportPlan:
    placement: Placement
    manifests: Mapping[str, PlannedManifest]
    order: tuple[str, ...]  # every manifest, children before parents
    blobs: Mapping[str, Repos]  # blob digest -> target repositories
    # (repository, subject) -> the referrers tag schema index the bundle carries for it
    carried_indexes: Mapping[tuple[Reference, str], str] = field(default_factory=dict)

    def levels(self) -> tuple[tuple[str, ...], ...]:
        """Every manifest, grouped by height: those without child manifests first, then those whose
        children are all in earlier groups, and so on (each group in :attr:`order`)."""
        height: dict[str, int] = {}
        for digest in self.order:  # children before parents
            height[digest] = 1 + max((height[c] for c in self.manifests[digest].children), default=-1)
        groups: list[list[str]] = [[] for _ in range(max(height.values(), default=-1) + 1)]
        for digest in self.order:
            groups[height[digest]].append(digest)
        return tuple(tuple(group) for group in groups)

    def complete(self, holds: Callable[[str, Repos], bool]) -> frozenset[str]:
        """The manifests that can be published: the target holds their blobs in each of their
        repositories (``holds``), their child manifests are complete, and so is the subject of an
        artifact (a signature is published with its image, not before)."""
        held = {d for d, m in self.manifests.items() if all(holds(b, m.repos) for b in m.blobs)}
        subjects = self.placement.subjects
        tagged = {w.digest for w in self.placement.tags if w.kind == ArtifactKind.IMAGE}
        parents: dict[str, set[str]] = {}
        for digest, manifest in self.manifests.items():
            for child in manifest.children:
                parents.setdefault(child, set()).add(digest)
        done: set[str] = set()

        def published(subject: str) -> bool:
            """The subject and every index that lists it (a platform's signature waits for its image),
            up to a subject tagged as an image itself (its tag is written with its signature)."""
            stack, seen = [subject], set()
            while stack:  # iterative: a hostile nesting depth cannot exhaust the stack
                digest = stack.pop()
                if digest not in done:
                    return False
                if digest not in seen and digest not in tagged:
                    seen.add(digest)
                    stack.extend(parents.get(digest, ()))
            return True

        for _ in range(len(self.order) + 1):  # to a fixed point: subjects may come after their artifacts
            before = len(done)
            for digest in self.order:  # children before parents
                manifest = self.manifests[digest]
                subject = subjects.get(digest)
                if (
                    digest in held
                    and all(c in done for c in manifest.children)
                    and (subject is None or published(subject))
                ):
                    done.add(digest)
            if len(done) == before:
                break
        return frozenset(done)

    def restricted(self, complete: frozenset[str]) -> ImportPlan:
        """This plan with only the ``complete`` manifests, and the tags and referrers of those."""
        placement = self.placement
        return dataclasses.replace(
            self,
            placement=dataclasses.replace(
                placement,
                tags=tuple(w for w in placement.tags if w.digest in complete),
                referrers=tuple(r for r in placement.referrers if r.digest in complete),
            ),
            manifests={d: m for d, m in self.manifests.items() if d in complete},
            order=tuple(d for d in self.order if d in complete),
            carried_indexes={k: d for k, d in self.carried_indexes.items() if d in complete},
        )

    def referrer_descriptor(self, referrer: Referrer) -> Descriptor:
        """What a referrers index lists for a referrer: its descriptor with artifactType and annotations."""
        manifest = self.manifests[referrer.digest]
        parsed = parse_manifest(manifest.data, manifest.media_type)
        config_type = parsed.config.media_type if parsed.config else None
        return Descriptor(
            manifest.media_type,
            compute_digest(manifest.data),
            len(manifest.data),
            artifact_type=referrer.artifact_type or parsed.artifact_type or config_type,
            annotations=dict(parsed.annotations),
        )


def place(catalog: Catalog, mapper: RepositoryMapper | None) -> Placement:
    """Target repositories, tags and referrers from the catalog (``mapper`` None: an OCI layout)."""
    roots: dict[str, tuple[str, set[Reference]]] = {}
    tags: list[TagWrite] = []
    referrers: list[Referrer] = []

    def root(digest: str, media_type: str, repo: Reference | None) -> None:
        entry = roots.setdefault(digest, (media_type, set()))
        if repo is not None:
            entry[1].add(repo)

    def target(registry: str, repository: str, private: str | None = None) -> Reference | None:
        if mapper is None:
            return None
        if private and mapper.default is not None:
            # Carried under a private name (e.g. dynatrace-oneagent-classic), below --registry.
            return mapper.map_private(private)
        return mapper.map_reference(Reference(registry, repository))

    def tag(repo: Reference | None, digest: str, media_type: str, kind: ArtifactKind, source: Reference) -> None:
        if repo is not None and source.tag:
            tags.append(TagWrite(repo.with_tag(source.tag), digest, media_type, kind, source))

    if mapper is not None:  # a --map rule that matches nothing is a mistake: refuse it before any byte moves
        mapper.check_rules_match(f"{image.registry}/{image.repository}" for image in catalog.images)
    for image in catalog.images:
        repo = target(image.registry, image.repository, image.annotations.get(TARGET_REPOSITORY_ANNOTATION))
        root(image.digest, image.media_type, repo)
        for platform in image.platforms:
            root(platform.digest, platform.media_type, repo)
        source = Reference(image.registry, image.repository, image.tag)
        tag(repo, image.digest, image.media_type, ArtifactKind.IMAGE, source)
    for artifact in catalog.artifacts:
        repo = target(artifact.registry, artifact.repository)
        root(artifact.digest, artifact.media_type, repo)
        source = Reference(artifact.registry, artifact.repository, artifact.tag)
        tag(repo, artifact.digest, artifact.media_type, artifact.kind, source)
        if artifact.kind == ArtifactKind.REFERRER and repo is not None:
            referrers.append(Referrer(artifact.subject, repo, artifact.digest, artifact.artifact_type))
    check_collisions((w.source, w.target, w.digest) for w in tags)
    return Placement(
        roots={d: (t, frozenset(r)) for d, (t, r) in roots.items()},
        tags=tuple(tags),
        referrers=tuple(referrers),
        subjects={a.digest: a.subject for a in catalog.artifacts},
    )


def parse_bundle_manifest(digest: str, data: bytes, media_type: str) -> ParsedManifest:
    """A manifest from a bundle: anything unparsable is an integrity failure."""
    try:
        return parse_manifest(data, media_type)
    except DtbundleError as exc:
        raise IntegrityError(f"bundle manifest {digest} is invalid: {exc}") from None


def build_plan(
    placement: Placement,
    manifests: Mapping[str, bytes],
    bundle_files: frozenset[str],
    already_parsed: Mapping[str, ParsedManifest] | None = None,
) -> ImportPlan:
    """Complete the placement with what the manifests reference.

    ``manifests``: digest -> bytes of every manifest the bundle holds; ``bundle_files``:
    the digests of every blob file in the bundle; ``already_parsed``: manifests the caller
    parsed while streaming (reused when parsed as the media type the plan gives them).
    Raises IntegrityError when a manifest references a manifest or blob the bundle does
    not carry.
    """
    types: dict[str, str] = {d: t for d, (t, _) in placement.roots.items()}
    repos: dict[str, set[Reference]] = {d: set(r) for d, (_, r) in placement.roots.items()}
    children: dict[str, tuple[str, ...]] = {}
    blobs: dict[str, set[Reference]] = {}
    pending = list(placement.roots)
    parsed: dict[str, ParsedManifest] = {}
    while pending:  # breadth first: a child may be shared by several parents
        digest = pending.pop()
        if digest in parsed:
            continue
        data = manifests.get(digest)
        if data is None:
            raise IntegrityError(f"bundle lacks manifest {digest}, which its catalog or another manifest references")
        known = (already_parsed or {}).get(digest)
        if known is None or known.media_type != types[digest]:
            known = parse_bundle_manifest(digest, data, types[digest])
        parsed[digest] = manifest = known
        children[digest] = tuple(c.digest for c in manifest.manifests)
        for child in manifest.manifests:
            types.setdefault(child.digest, child.media_type)
            pending.append(child.digest)
    # Repositories flow from parents to children and blobs; parents first.
    order = _children_first(list(placement.roots), children)
    for digest in reversed(order):
        for child_digest in children[digest]:
            repos.setdefault(child_digest, set()).update(repos.get(digest, ()))
        for blob in parsed[digest].blobs():
            if blob.digest not in bundle_files:
                raise IntegrityError(
                    f"bundle manifest {digest} references blob {blob.digest}, which the bundle does not carry"
                )
            blobs.setdefault(blob.digest, set()).update(repos.get(digest, ()))
    carried = {
        (w.target.with_tag(None), placement.subjects[w.digest]): w.digest
        for w in placement.tags
        if w.kind == ArtifactKind.REFERRERS_INDEX
    }
    return ImportPlan(
        placement=placement,
        manifests={
            d: PlannedManifest(
                d,
                types[d],
                manifests[d],
                frozenset(repos.get(d, ())),
                children[d],
                tuple(b.digest for b in parsed[d].blobs()),
            )
            for d in order
        },
        order=tuple(order),
        blobs={d: frozenset(r) for d, r in blobs.items()},
        carried_indexes=carried,
    )


def _children_first(roots: list[str], children: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Every manifest reachable from ``roots``, children before parents, deterministic."""
    done: set[str] = set()
    result: list[str] = []
    for root in roots:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:  # iterative post-order: a hostile depth cannot exhaust the stack
            digest, expanded = stack.pop()
            if expanded:
                result.append(digest)
                continue
            if digest in done:
                continue
            done.add(digest)
            stack.append((digest, True))
            stack.extend((c, False) for c in reversed(children.get(digest, ())) if c not in done)
    return result
