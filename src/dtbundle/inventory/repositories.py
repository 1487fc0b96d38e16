"""Which repositories an inventory covers, all of them at or below ``--registry HOST[:PORT][/PREFIX]``.

Three sources, one of them per inventory:

* a bundle's catalog (``--bundle``): every image and artifact mapped exactly as ``import`` maps
  it (``--registry``, ``--map``; :func:`dtbundle.importer.plan.place`), so the inventory covers
  the repositories that import would write to. Only names are read: the catalog parser
  validates every one, and the mapper confines each target below its destination;
* names relative to the prefix (``--repository dynatrace/oneagent`` below ``reg/mirror`` is
  ``mirror/dynatrace/oneagent``);
* the registry's catalog API, keeping what lies at or below the prefix (whole path components).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dtbundle.errors import AuthenticationError, InvalidReferenceError, NotFoundError, UsageError
from dtbundle.importer.mapping import Prefix, RepositoryMapper
from dtbundle.limits import MAX_INVENTORY_REPOSITORIES
from dtbundle.oci.reference import is_valid_path, parse_reference
from dtbundle.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from dtbundle.registry import RegistryClient


def from_bundle(bundle: Path, registry: str, maps: Sequence[str]) -> list[str]:
    """The target repositories an import of ``bundle`` with ``--registry registry --map maps`` writes to."""
    from dtbundle.bundle.reader import open_bundle
    from dtbundle.importer.plan import place

    mapper = RepositoryMapper(registry, maps)
    assert mapper.default is not None  # registry is given
    with open_bundle(bundle, None) as reader:  # names only: no trust decision is made on them
        placement = place(reader.catalog, mapper)
    names: set[str] = set()
    for _, repos in placement.roots.values():
        for repo in repos:
            if repo.registry != mapper.default.registry:
                raise UsageError(
                    f"--map puts {repo.name} on another registry than --registry {mapper.default.registry}; "
                    "an inventory covers one registry: take one per registry, each with its own --map rules"
                )
            names.add(repo.repository)
    return _bounded(sorted(names))


def named(prefix: Prefix, repositories: Sequence[str]) -> list[str]:
    """``--repository`` paths, relative to the prefix, as full paths at the registry."""
    names: set[str] = set()
    for given in repositories:
        relative = given.strip().strip("/")
        if not is_valid_path(relative):
            raise UsageError(
                f"--repository {given[:80]!r} is not a repository path: give lower-case components "
                f"like dynatrace/oneagent, relative to --registry {prefix}"
            )
        registry, path = prefix.join(relative)
        try:
            parse_reference(f"{registry}/{path}", default_tag=None)  # the whole name's length
        except InvalidReferenceError as exc:
            raise UsageError(f"--repository {given[:80]!r}: {exc.message}") from None
        if not prefix.contains(registry, path):  # cannot happen for a valid path; the guarantee is here
            raise UsageError(f"--repository {given[:80]!r} is not below --registry {prefix}")
        names.add(path)
    return _bounded(sorted(names))


def from_catalog(client: RegistryClient, prefix: Prefix, progress: Progress = NO_PROGRESS) -> list[str]:
    """Every repository the registry's catalog API lists at or below the prefix."""
    progress.phase(f"listing the repositories of {prefix.registry}")
    alternative = "name the repositories with --repository, or take them from a bundle with --bundle"
    try:
        listed = client.list_repositories(prefix.registry)
    except NotFoundError:
        raise UsageError(f"registry {prefix.registry} has no catalog API (/v2/_catalog); {alternative}") from None
    except AuthenticationError as exc:
        raise AuthenticationError(
            f"{exc.message}; listing every repository needs catalog access (registry:catalog:*): "
            f"without it, {alternative}"
        ) from None
    return _bounded(sorted({name for name in listed if prefix.contains(prefix.registry, name)}))


def _bounded(names: list[str]) -> list[str]:
    if len(names) > MAX_INVENTORY_REPOSITORIES:
        raise UsageError(
            f"{len(names)} repositories, more than the {MAX_INVENTORY_REPOSITORIES} one inventory may list; "
            "take several with narrower --registry prefixes"
        )
    return names
