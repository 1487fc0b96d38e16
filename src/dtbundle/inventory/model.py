"""The inventory document (``specs/inventory.md``): what a target registry holds, per repository.

An inventory is written on the air-gapped side and read on the internet side, where it is
user input: :func:`parse_inventory` trusts nothing in it. The text is measured before it is
parsed (:mod:`dtbundle.jsontext`), then every field is checked: the format version and kind,
the time, the registry host, each repository path (the reference grammar, so no ``..``),
each digest (``sha256:<64 hex>``) and size. Anything else is a one-line :class:`UsageError`
(exit 2) naming the problem and saying to take the inventory again. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from dtbundle import __version__, jsontext
from dtbundle.bundle.format import parse_time
from dtbundle.errors import UsageError
from dtbundle.limits import (
    INVENTORY_JSON,
    MAX_INVENTORY_BLOB_BYTES,
    MAX_INVENTORY_BYTES,
    MAX_INVENTORY_ENTRIES,
    MAX_INVENTORY_REPOSITORIES,
    MAX_INVENTORY_TOOL_TEXT,
    REFERENCE_NAME_MAX_LENGTH,
)
from dtbundle.oci.digest import SHA256_PATTERN
from dtbundle.oci.reference import is_valid_host, is_valid_path

FORMAT_VERSION = 1
KIND = "dtbundle-inventory"
# Bounds of an inventory, whatever it says, and of taking one: to move into limits.py (one home
# for every bound). A blob entry is ~110 bytes and three JSON elements, a manifest digest ~80
# bytes and one: 256 MiB holds the 2 million entries allowed, and parsing them takes ~1 GB at most.
_AGAIN = "take a new one with 'dtbundle inventory' on the air-gapped side"

Blob = tuple[str, int]  # (digest, size)
Fail = Callable[[str], UsageError]


@dataclass(frozen=True)
class InventoryRepository:
    """One repository at the target: the manifests and blobs it holds (sorted, each once)."""

    name: str  # path at the registry, e.g. mirror/dynatrace/oneagent
    manifests: tuple[str, ...]
    blobs: tuple[Blob, ...]


@dataclass(frozen=True)
class Inventory:
    """What one registry held when the inventory was taken; repositories sorted by name."""

    created: str  # YYYY-MM-DDTHH:MM:SSZ
    registry: str  # host[:port]
    repositories: tuple[InventoryRepository, ...]

    def blob_locations(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        """Blob digest -> (size, the sorted names of the repositories holding it)."""
        found: dict[str, tuple[int, list[str]]] = {}
        for repo in self.repositories:
            for digest, size in repo.blobs:
                found.setdefault(digest, (size, []))[1].append(repo.name)
        return {digest: (size, tuple(sorted(names))) for digest, (size, names) in sorted(found.items())}

    def manifest_digests(self) -> frozenset[str]:
        """Every manifest digest held in some repository."""
        return frozenset(d for repo in self.repositories for d in repo.manifests)

    @property
    def blob_bytes(self) -> int:
        """Bytes of the distinct blobs (a blob in several repositories counts once)."""
        return sum(size for size, _ in self.blob_locations().values())

    def to_bytes(self) -> bytes:
        """The file's exact bytes: fixed key order, everything sorted, indent 1, one final newline."""
        document = {
            "formatVersion": FORMAT_VERSION,
            "kind": KIND,
            "created": self.created,
            "tool": {"name": "dtbundle", "version": __version__},
            "registry": self.registry,
            "repositories": [
                {
                    "name": repo.name,
                    "manifests": sorted(repo.manifests),
                    "blobs": [{"digest": d, "size": s} for d, s in sorted(repo.blobs)],
                }
                for repo in sorted(self.repositories, key=lambda r: r.name)
            ],
        }
        return (json.dumps(document, indent=1) + "\n").encode("ascii")


def make_inventory(created: str, registry: str, held: Mapping[str, tuple[set[str], dict[str, int]]]) -> Inventory:
    """An inventory in canonical order from repository name -> (manifest digests, blob digest -> size)."""
    return Inventory(
        created,
        registry,
        tuple(
            InventoryRepository(name, tuple(sorted(manifests)), tuple(sorted(blobs.items())))
            for name, (manifests, blobs) in sorted(held.items())
        ),
    )


def parse_inventory(data: bytes, *, source: str = "inventory", max_bytes: int = MAX_INVENTORY_BYTES) -> Inventory:
    """Parse and validate an inventory (hostile input); ``source`` names it in errors."""

    def fail(problem: str) -> UsageError:
        return UsageError(f"{source}: {problem}; {_AGAIN}")

    if len(data) > max_bytes:
        raise fail(f"it is {len(data)} bytes, above the limit of {max_bytes} for an inventory")
    try:
        document = jsontext.loads(data, INVENTORY_JSON)
    except ValueError as exc:  # malformed, not UTF-8, nested too deep, too many elements
        raise fail(f"not a JSON inventory ({str(exc)[:200]})") from None
    if not isinstance(document, dict):
        raise fail("not a JSON object")
    version = document.get("formatVersion")
    if document.get("kind") != KIND:
        raise fail(f"'kind' is {_shown(document.get('kind'))}, not {KIND!r}: not a dtbundle inventory")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise fail(f"formatVersion {_shown(version)} is not one this dtbundle reads ({FORMAT_VERSION})")
    created = document.get("created")
    try:
        if not isinstance(created, str):
            raise ValueError("not a string")
        parse_time(created)
    except ValueError:
        raise fail(f"'created' {_shown(created)} is not a time YYYY-MM-DDTHH:MM:SSZ") from None
    tool = document.get("tool", {})
    texts = [tool.get(k, "") for k in ("name", "version")] if isinstance(tool, dict) else [None]
    if not all(isinstance(t, str) and len(t) <= MAX_INVENTORY_TOOL_TEXT for t in texts):
        raise fail("'tool' is not an object with a short name and version")
    registry = document.get("registry")
    if not isinstance(registry, str) or not is_valid_host(registry):
        raise fail(f"'registry' {_shown(registry)} is not a registry HOST[:PORT]")
    repositories = document.get("repositories")
    if not isinstance(repositories, list):
        raise fail("'repositories' is not a list")
    if len(repositories) > MAX_INVENTORY_REPOSITORIES:
        raise fail(f"it lists more than {MAX_INVENTORY_REPOSITORIES} repositories")
    parsed = [_repository(entry, i, registry, fail) for i, entry in enumerate(repositories)]
    _check_consistent(parsed, fail)
    return Inventory(created, registry, tuple(sorted(parsed, key=lambda r: r.name)))


def _repository(entry: Any, index: int, registry: str, fail: Fail) -> InventoryRepository:
    where = f"repositories[{index}]"
    if not isinstance(entry, dict):
        raise fail(f"{where} is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not is_valid_path(name):
        raise fail(f"{where}.name {_shown(name)} is not a repository path (lower-case components like a/b-c)")
    if len(f"{registry}/{name}") > REFERENCE_NAME_MAX_LENGTH:
        raise fail(f"{where}.name is longer than a repository name may be")
    where = f"repository {name}"
    manifests, blobs = entry.get("manifests"), entry.get("blobs")
    if not isinstance(manifests, list) or not isinstance(blobs, list):
        raise fail(f"{where}: 'manifests' and 'blobs' must be lists")
    for digest in manifests:
        if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
            raise fail(f"{where}: manifest {_shown(digest)} is not a digest sha256:<64 hex>")
    if len(set(manifests)) != len(manifests):
        raise fail(f"{where} lists a manifest twice")
    pairs: dict[str, int] = {}
    for blob in blobs:
        digest = blob.get("digest") if isinstance(blob, dict) else None
        size = blob.get("size") if isinstance(blob, dict) else None
        if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
            raise fail(f"{where}: blob {_shown(digest)} is not a digest sha256:<64 hex>")
        if not _is_int(size) or not 0 <= size <= MAX_INVENTORY_BLOB_BYTES:
            raise fail(f"{where}: blob {digest} has size {_shown(size)}, not a whole number of bytes within limits")
        if digest in pairs:
            raise fail(f"{where} lists blob {digest} twice")
        pairs[digest] = size
    return InventoryRepository(name, tuple(sorted(manifests)), tuple(sorted(pairs.items())))


def _check_consistent(repositories: list[InventoryRepository], fail: Fail) -> None:
    """Each name once, the entries within bounds, and one size per blob digest."""
    names: set[str] = set()
    sizes: dict[str, int] = {}
    entries = 0
    for repo in repositories:
        if repo.name in names:
            raise fail(f"repository {repo.name} is listed twice")
        names.add(repo.name)
        entries += len(repo.manifests) + len(repo.blobs)
        if entries > MAX_INVENTORY_ENTRIES:
            raise fail(f"it lists more than {MAX_INVENTORY_ENTRIES} manifests and blobs")
        for digest, size in repo.blobs:
            if sizes.setdefault(digest, size) != size:
                raise fail(f"blob {digest} is listed with two sizes ({sizes[digest]} and {size})")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """A value from the file, short and printable in an error message."""
    return repr(value)[:80]
