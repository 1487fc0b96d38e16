"""Volumes of a set given to one command (pure): the same set, each volume once; what is still missing.

Every volume carries the same catalog but for its ``volume`` number, signed on its own; a
volume of another set, or one given twice, is refused before any of its blobs is read. After
the run, a volume is still missing when the target lacks a blob it carries: the target, not a
local record, says what arrived, so volumes can be imported days apart, from any machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, TypeVar

from dtbundle.bundle.format import Catalog, CatalogFile
from dtbundle.bundle.reader import bundle_name
from dtbundle.errors import VolumeSetError


class VolumeCheck:
    """Checks each catalog given to one import against the first."""

    def __init__(self, first: Catalog, path: Path) -> None:
        self.first, self.numbers = first, {self._number(first): path}

    @staticmethod
    def _number(catalog: Catalog) -> int:
        return catalog.volume.number if catalog.volume else 0

    def add(self, catalog: Catalog, path: Path) -> None:
        """Refuse a catalog that is not another volume of the first one's set."""
        first = self.first
        if first.volume is None or catalog.volume is None:
            single = bundle_name(path if catalog.volume is None else next(iter(self.numbers.values())))
            raise VolumeSetError(
                f"{single} is a bundle, not a volume of a set: import one bundle at a time "
                "(several files go together only as volumes of one --volume-size export)"
            )
        if catalog.volume.set != first.volume.set or _without_volume(catalog) != _without_volume(first):
            other = bundle_name(self.numbers[first.volume.number])
            raise VolumeSetError(
                f"{bundle_name(path)} is a volume of another set than {other}: "
                "import the volumes of one set together, or one at a time"
            )
        number = catalog.volume.number
        if number in self.numbers:
            raise VolumeSetError(
                f"{bundle_name(path)} and {bundle_name(self.numbers[number])} are both volume {number} of the set: "
                "give each volume once"
            )
        self.numbers[number] = path


def _without_volume(catalog: Catalog) -> Catalog:
    return dataclasses.replace(catalog, volume=None)


P = TypeVar("P", bound=AbstractSet[Any])  # where a blob must be (an import's target repositories)


def missing_volumes(
    catalog: Catalog,
    blobs: Mapping[str, P],
    holds: Callable[[str, P], bool],
    have_part: Callable[[CatalogFile], bool] = lambda part: False,
) -> list[int]:
    """The volumes of ``catalog``'s set that carry a blob the target still lacks (or a part of one
    that was not kept: ``have_part``)."""
    missing: set[int] = set()
    for f in catalog.files:
        if f.volume is None or f.volume in missing:
            continue
        digest = f.part_of or f.digest
        places = blobs.get(digest)
        if places is not None and not holds(digest, places) and not (f.part_of and have_part(f)):
            missing.add(f.volume)
    return sorted(missing)


def describe(numbers: Iterable[int]) -> str:
    """``2, 4 and 5``."""
    names = [str(n) for n in numbers]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
