"""Where each source repository lands in the private registry (pure).

Default: the source registry host is replaced by ``--registry HOST[:PORT][/PREFIX]``
and the repository path is kept::

    public.ecr.aws/dynatrace/operator  --registry reg.corp         -> reg.corp/dynatrace/operator
    public.ecr.aws/dynatrace/operator  --registry reg.corp/mirror  -> reg.corp/mirror/dynatrace/operator

``--map SRC_PREFIX=DST_PREFIX`` rewrites a source prefix (``registry/path``, whole
path components) to a destination prefix; the longest matching SRC_PREFIX wins.
A DST_PREFIX whose first component is not a host is relative to ``--registry``::

    --map public.ecr.aws/dynatrace=reg.corp  -> reg.corp/dynatrace-operator

A rule that matches no image of the bundle is refused (:meth:`RepositoryMapper.check_rules_match`):
it is a typo, and ignoring it would push the images somewhere the user did not mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dtbundle.errors import InvalidReferenceError, UsageError
from dtbundle.oci.reference import (
    Reference,
    is_valid_host,
    is_valid_path,
    looks_like_host,
    normalize_registry,
    parse_reference,
    split_registry,
)


@dataclass(frozen=True)
class Prefix:
    registry: str
    path: str  # may be empty

    def join(self, rest: str) -> tuple[str, str]:
        path = "/".join(p for p in (self.path, rest) if p)
        return self.registry, path

    def contains(self, registry: str, repository: str) -> bool:
        """Whether ``registry/repository`` lies at or below this prefix (whole path components)."""
        if registry != self.registry:
            return False
        return not self.path or repository == self.path or repository.startswith(self.path + "/")

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}" if self.path else self.registry


def parse_target(text: str, what: str = "--registry") -> Prefix:
    """``HOST[:PORT][/PREFIX]``: the first component is always the host."""
    text = text.strip().rstrip("/")
    if "://" in text:
        raise UsageError(f"{what} {text!r}: give HOST[:PORT][/PREFIX] without a URL scheme")
    host, _, path = text.partition("/")
    if not is_valid_host(host) or (path and not is_valid_path(path)):
        raise UsageError(f"{what} {text!r} is not a valid HOST[:PORT][/PREFIX] (paths are lower case)")
    return Prefix(normalize_registry(host), path)


@dataclass(frozen=True)
class Rule:
    source: str  # registry/path prefix, normalised
    target: Prefix
    text: str = ""  # SRC_PREFIX=DST_PREFIX as the user wrote it

    def matches(self, name: str) -> bool:
        """Whether ``registry/repository`` lies at or below this rule's source prefix."""
        return name == self.source or name.startswith(self.source + "/")


class RepositoryMapper:
    """Maps ``(registry, repository)`` of the source to the target registry."""

    def __init__(self, registry: str | None, maps: Sequence[str] = ()) -> None:
        self.default = parse_target(registry) if registry else None
        self.rules: list[Rule] = []
        for item in maps:
            source, sep, target = item.partition("=")
            if not sep or not source.strip() or not target.strip():
                raise UsageError(f"--map {item!r}: use SRC_PREFIX=DST_PREFIX, e.g. public.ecr.aws/dynatrace=reg.corp")
            source = source.strip().rstrip("/")
            first = source.split("/", 1)[0]
            src_registry, src_path = (
                (first, source[len(first) + 1 :]) if looks_like_host(first) else split_registry(source)
            )
            src = "/".join(p for p in (normalize_registry(src_registry), src_path) if p)
            target = target.strip().rstrip("/")
            if looks_like_host(target.split("/", 1)[0]):
                dst = parse_target(target, "--map")
            else:
                if self.default is None:
                    raise UsageError(f"--map {item!r}: {target!r} has no registry host; add --registry HOST")
                dst = Prefix(self.default.registry, "/".join(p for p in (self.default.path, target) if p))
            self.rules.append(Rule(src, dst, item.strip()))
        if self.default is None and not self.rules:
            raise UsageError("give the target registry: --registry HOST[:PORT][/PREFIX] (or --to-oci DIR)")

    def confines(self, registry: str, repository: str) -> bool:
        """Whether ``registry/repository`` lies at or below a destination of this import (--registry, --map)."""
        destinations = [r.target for r in self.rules] + ([self.default] if self.default else [])
        return any(d.contains(registry, repository) for d in destinations)

    def target_registries(self) -> set[str]:
        """Every registry host an import with these rules can write to."""
        return {r.target.registry for r in self.rules} | ({self.default.registry} if self.default else set())

    def target(self, registry: str, repository: str) -> tuple[Prefix, tuple[str, str]]:
        """The destination prefix that applies, and the mapped ``(registry, repository)``."""
        name = f"{registry}/{repository}"
        best: Rule | None = None
        for rule in self.rules:
            if rule.matches(name) and (best is None or len(rule.source) > len(best.source)):
                best = rule
        if best is not None:
            return best.target, best.target.join(name[len(best.source) + 1 :] if name != best.source else "")
        if self.default is None:
            raise UsageError(f"no --map rule matches {name}, and no --registry was given for the rest")
        return self.default, self.default.join(repository)

    def check_rules_match(self, names: Iterable[str]) -> None:
        """Refuse a rule that matches none of ``names`` (every ``registry/repository`` of the bundle's images)."""
        names = set(names)
        for rule in self.rules:
            if not any(rule.matches(name) for name in names):
                origins = sorted({"/".join(name.split("/")[:2]) for name in names})
                hint = (
                    f"whose images come from {', '.join(origins)}; start SRC_PREFIX with one of these"
                    if origins
                    else "which holds no images"
                )
                raise UsageError(f"--map {rule.text}: matches no image in the bundle, {hint}")

    def map_private(self, repository: str) -> Reference:
        """A repository name chosen by the bundle (e.g. ``dynatrace-oneagent-classic``), below --registry."""
        assert self.default is not None
        if not is_valid_path(repository):
            raise UsageError(f"the bundle names an invalid target repository {repository[:80]!r}")
        return self._checked(Reference(*self.default.join(repository)), repository, self.default)

    def map_reference(self, ref: Reference) -> Reference:
        prefix, (registry, repository) = self.target(ref.registry, ref.repository)
        if not repository:
            raise UsageError(f"mapping {ref.name} leaves no repository path; map to a prefix with a path")
        return self._checked(Reference(registry, repository, ref.tag, ref.digest), ref.name, prefix)

    @staticmethod
    def _checked(mapped: Reference, source: str, prefix: Prefix) -> Reference:
        """Every target is a valid name at or below the destination the user chose: whatever a
        bundle says, an import with ``--registry host/tenant-a`` writes nowhere else."""
        try:
            parse_reference(mapped.name, default_tag=None)
        except InvalidReferenceError:
            raise UsageError(f"mapping {source} gives an invalid repository {mapped.name}") from None
        if not prefix.contains(mapped.registry, mapped.repository):
            raise UsageError(f"mapping {source} gives {mapped.name}, which is not below {prefix}; check --map")
        return mapped


def check_collisions(pairs: Iterable[tuple[Reference, Reference, str]]) -> None:
    """Refuse two different sources (or digests) landing on one target tag.

    ``pairs`` are (source, target, digest) for every tag the import would write.
    """
    seen: dict[tuple[str, str, str], tuple[Reference, str]] = {}
    for source, target, digest in pairs:
        if not target.tag:
            continue
        key = (target.registry, target.repository, target.tag)
        if key in seen:
            other, other_digest = seen[key]
            if (other.registry, other.repository) != (source.registry, source.repository) or other_digest != digest:
                raise UsageError(
                    f"the mapping puts both {other.name}:{other.tag} and {source.name}:{source.tag} on "
                    f"{target.registry}/{target.repository}:{target.tag}; change --map so they land apart"
                )
        seen[key] = (source, digest)
