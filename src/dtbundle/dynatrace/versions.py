"""Which immutable versions of each Dynatrace component a registry holds, newest first, and the
newest *matching set*: the versions that go together.

Tags come from the registry's tag list (:meth:`RegistryClient.list_tags`, paginated). A tag is a
version when it is not a mutable name (:data:`~dtbundle.dynatrace.selection.MUTABLE_TAGS`), not
a cosign/referrers tag (``sha256-…``) and matches the component's version format exactly, so
architecture-suffixed (``-amd64``), FIPS (``-fips``), code-module technology (``-python``),
release-candidate (``-rc.1``) and built-in (``-raw``) tags are never versions. Ordering is
numeric per part: ``v1.10.2`` > ``v1.9.0``; ``1.305.57.20250115-123456`` by release, then build.

Matching set: OneAgent, code modules and ActiveGate are released together under one
``major.minor.patch`` (the *release*); their build stamps (``.YYYYMMDD-HHMMSS``) are per image
and may differ, so the release, not the whole string, is what must match. The set takes the
newest release that every needed one of them has (each at its newest build of that release),
and the newest version of every other component. A pinned version of one of the three fixes the
release of the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dtbundle.dynatrace.selection import MUTABLE_TAGS
from dtbundle.dynatrace.table import Component, DynatraceTable, load_table
from dtbundle.errors import NotFoundError, UsageError
from dtbundle.oci.kinds import is_attachment_tag
from dtbundle.oci.reference import parse_reference
from dtbundle.registry import RegistryClient

# Components released together: one major.minor.patch ("release") for all of them.
RELEASE_GROUP = ("oneagent", "codemodules", "activegate")
_ONEAGENT_STYLE = r"(\d+)\.(\d+)\.(\d+)\.(\d{8})-(\d{6})"
_SEMVER = r"(\d+)\.(\d+)\.(\d+)"
# Version format of each component's immutable tags (dynatrace.toml tag_format); others: _SEMVER.
FORMATS: Mapping[str, re.Pattern[str]] = {
    "operator": re.compile(r"v" + _SEMVER),
    "oneagent": re.compile(_ONEAGENT_STYLE),
    "oneagent-classic": re.compile(_ONEAGENT_STYLE),
    "codemodules": re.compile(_ONEAGENT_STYLE),
    "activegate": re.compile(_ONEAGENT_STYLE),
    "logmodule": re.compile(_ONEAGENT_STYLE),
    "eec": re.compile(_ONEAGENT_STYLE),
    "database-datasource-executor": re.compile(_ONEAGENT_STYLE),
    "k8s-node-config-collector": re.compile(_SEMVER),
    "otel-collector": re.compile(_SEMVER),
    "edgeconnect": re.compile(_SEMVER),
}


def version_key(component: str, tag: str) -> tuple[int, ...] | None:
    """The numeric sort key of ``tag`` as a version of ``component``, or None when it is not one."""
    if tag.lower() in MUTABLE_TAGS or is_attachment_tag(tag):
        return None
    found = FORMATS.get(component, FORMATS["k8s-node-config-collector"]).fullmatch(tag)
    return tuple(int(part) for part in found.groups()) if found else None


def release_of(version: str) -> str | None:
    """``1.305.57.20250115-123456`` (or ``1.305.57``) -> ``1.305.57``; None for other text."""
    found = re.match(r"(\d+\.\d+\.\d+)(?:\.|-|$)", version.strip())
    return found.group(1) if found else None


def immutable_versions(component: str, tags: Iterable[str]) -> list[str]:
    """The tags that are versions of ``component``, newest first (duplicates once)."""
    keyed = {tag: key for tag in set(tags) if (key := version_key(component, tag)) is not None}
    return sorted(keyed, key=lambda tag: keyed[tag], reverse=True)


@dataclass(frozen=True)
class ComponentVersions:
    """One component's versions in a registry."""

    name: str
    repository: str  # the repository listed, HOST/PATH
    versions: tuple[str, ...]  # newest first
    ignored: int  # tags that are not immutable versions (mutable, suffixed, signatures)
    note: str | None = None  # why nothing was listed (repository missing, name not confirmed there)


def list_versions(
    client: RegistryClient, registry: str, names: Sequence[str] | None = None, table: DynatraceTable | None = None
) -> dict[str, ComponentVersions]:
    """The versions of ``names`` (default: every public component) on ``registry`` (``ecr``,
    ``dockerhub`` or HOST/PATH of a mirror). A missing repository, or one whose name is not
    confirmed on that registry, gives no versions and a note instead of an error."""
    table = table or load_table()
    prefix = table.registries.get(registry, registry).rstrip("/")
    wanted = names if names is not None else [n for n, c in table.components.items() if not c.builtin]
    found: dict[str, ComponentVersions] = {}
    for name in wanted:
        component = table.components[name]
        repository = f"{prefix}/{component.repository}"
        if registry in table.registries and registry not in component.registries:
            note = f"its repository name on {prefix} is not confirmed; use {', '.join(component.registries)}"
            found[name] = ComponentVersions(name, repository, (), 0, note)
            continue
        try:
            tags = client.list_tags(parse_reference(repository))
        except NotFoundError:
            found[name] = ComponentVersions(name, repository, (), 0, "repository not found")
            continue
        versions = immutable_versions(name, tags)
        found[name] = ComponentVersions(name, repository, tuple(versions), len(set(tags)) - len(versions))
    return found


def matching_set(
    available: Mapping[str, Sequence[str]], pinned: Mapping[str, str] | None = None
) -> tuple[dict[str, str], str | None]:
    """The newest versions that go together, for the components in ``available`` (name -> versions,
    newest first), and the release the OneAgent/code modules/ActiveGate among them share (or None).

    ``pinned`` versions (``--version``) are kept as given; a pinned OneAgent, code modules,
    ActiveGate or Classic OneAgent fixes the release of the others. UsageError when no release is
    common to all of them, or a component has no version at all."""
    pinned = dict(pinned or {})
    chosen: dict[str, str] = {}
    group = [n for n in available if n in RELEASE_GROUP and n not in pinned]
    pinned_releases = {
        release_of(v): n for n, v in pinned.items() if n in (*RELEASE_GROUP, "oneagent-classic") and release_of(v)
    }
    if len(pinned_releases) > 1:  # they are released together: pins of two releases cannot both hold
        named = ", ".join(f"{n}={pinned[n]}" for n in pinned_releases.values())
        raise UsageError(f"--version {named}: OneAgent, code modules and ActiveGate come from one release; pin one")
    fixed = next(iter(pinned_releases), None)
    release = fixed
    if group:
        releases = [{release_of(v) for v in available[n]} for n in group]
        common = set.intersection(*releases) - {None}
        if fixed is not None and fixed not in common:
            lacking = [n for n, r in zip(group, releases, strict=True) if fixed not in r]
            raise UsageError(
                f"no version of release {fixed} (the release of the pinned version) for {', '.join(lacking)}; "
                f"pin {' '.join(f'--version {n}=…' for n in lacking)} as well"
            )
        if not common:
            raise UsageError(
                f"{', '.join(group)} have no release (major.minor.patch) in common; pin them with --version"
            )
        release = fixed or max(common, key=lambda r: tuple(int(p) for p in r.split(".")))  # type: ignore[union-attr]
        for name in group:
            chosen[name] = next(v for v in available[name] if release_of(v) == release)
    for name, versions in available.items():
        if name in pinned or name in chosen:
            continue
        if not versions:
            raise UsageError(f"{name}: the registry lists no immutable version; give --version {name}=…")
        chosen[name] = versions[0]
    return {n: chosen[n] for n in available if n in chosen}, release if group else None


def latest_versions(
    client: RegistryClient,
    registry: str,
    names: Sequence[str],
    pinned: Mapping[str, str] | None = None,
    table: DynatraceTable | None = None,
) -> dict[str, str]:
    """``--latest``: the newest matching set for ``names`` (the components an export needs, none
    pinned) from ``registry``'s tag lists; ``pinned`` are the ``--version`` ones, which win."""
    table = table or load_table()
    builtin = [n for n in names if table.components[n].builtin]
    if builtin:
        example = " ".join(f"--version {n}={table.components[n].version_example}" for n in builtin)
        raise UsageError(
            f"--latest cannot list the built-in registry: add {example} "
            "(see 'dtbundle dynatrace versions --environment-url URL')"
        )
    listed = list_versions(client, registry, names, table)
    for item in listed.values():
        if item.note is not None:
            raise UsageError(f"--latest: {_title(table.components[item.name])} on {item.repository}: {item.note}")
    chosen, _ = matching_set({n: listed[n].versions for n in names}, pinned)
    return chosen


def _title(component: Component) -> str:
    return f"{component.title} ({component.name})"


def registry_host(registry: str, table: DynatraceTable | None = None) -> str:
    """The host[:port] that ``registry`` (``ecr``, ``dockerhub`` or HOST/PATH) lists tags from."""
    table = table or load_table()
    return parse_reference(f"{table.registries.get(registry, registry).rstrip('/')}/x").registry
