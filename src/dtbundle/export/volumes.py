"""A bundle as a set of volumes (``--volume-size``): each one a complete, signed bundle.

Every volume carries the whole catalog (the same but for its ``volume`` number), its own
signature, the layout files, every manifest and every blob an attachment uses (the *shared*
files), then its share of the other blobs: a blob is never split across volumes, unless it
alone is larger than a volume's room; then it is carried as parts ``parts/<hex>.001``…, each
in one volume, each with its own SHA-256 in the catalog (import joins them). The
partition (:func:`partition`, pure) is made before the first blob is downloaded, from the
plan's sizes: each volume's compressed size is bounded by its tar size plus zstd's worst-case
growth, and :class:`VolumeWriter` checks the real size of each volume it finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dtbundle.bundle.format import CATALOG_NAME, SIGNATURE_NAME, Catalog, CatalogFile, CatalogSplit, CatalogVolume
from dtbundle.bundle.reader import open_bundle
from dtbundle.bundle.writer import BundleWriter, WrittenBundle
from dtbundle.errors import DtbundleError, LocalIOError, UsageError
from dtbundle.limits import VOLUME_MIN_ROOM
from dtbundle.progress import format_bytes

BLOCK = 512
RECORD = 10240  # the end of the archive is padded to a tar record


def tar_entry_bytes(size: int) -> int:
    """Bytes a file of ``size`` takes in the tar: header (and a pax header at 8 GiB or more), content, padding."""
    pax = 2 * BLOCK if size >= 8**11 - 1 else 0
    return pax + BLOCK + -(-size // BLOCK) * BLOCK


def compressed_bound(tar_bytes: int) -> int:
    """An upper bound of the zstd file holding ``tar_bytes``: incompressible data grows by less than
    1/128 (frame and block headers; stored frames by 3 bytes per 128 KiB), plus a fixed allowance."""
    return tar_bytes + tar_bytes // 128 + (64 << 10)


def _stem_suffix(name: str) -> tuple[str, str]:
    if name.endswith(".tar.zst"):
        return name[: -len(".tar.zst")], ".tar.zst"
    if "." in name.lstrip("."):
        stem, _, rest = name.rpartition(".")
        return stem, "." + rest
    return name, ""


def volume_paths(output: Path, count: int) -> list[Path]:
    """``dt.tar.zst`` -> ``dt.001.tar.zst``, ``dt.002.tar.zst``, … (other names: before the last suffix)."""
    width = max(3, len(str(count)))
    stem, suffix = _stem_suffix(output.name)
    return [output.with_name(f"{stem}.{n:0{width}d}{suffix}") for n in range(1, count + 1)]


def other_volumes(output: Path, keep: Sequence[Path]) -> list[Path]:
    """Volumes of an earlier set of the same name beside ``output``, other than ``keep`` (those of the new
    set): files named ``NAME.<number>.SUFFIX``, any width, whose catalog says they are that volume of a set
    (a ``dt.2025.tar.zst`` of another kind is not one)."""
    stem, suffix = _stem_suffix(output.name)
    pattern = re.compile(rf"{re.escape(stem)}\.(\d{{3,}}){re.escape(suffix)}")
    found = []
    for path in output.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path not in keep and path.is_file() and _volume_number(path) == int(match.group(1)):
            found.append(path)
    return sorted(found)


def _volume_number(path: Path) -> int | None:
    """The volume number a bundle file's catalog gives (not verified: it only decides what --force replaces)."""
    try:
        with open_bundle(path, None) as bundle:
            return bundle.catalog.volume.number if bundle.catalog.volume else None
    except (DtbundleError, OSError):
        return None


PART = 4 << 20  # parts of a split blob end on this boundary (but the last): whole blocks, round sizes


def part_path(digest: str, number: int) -> str:
    """The tar entry of part ``number`` (1-based) of a split blob."""
    return f"parts/{digest.split(':', 1)[1]}.{number:03d}"


@dataclass(frozen=True)
class VolumePlan:
    """Which volume each blob that is not shared goes into; how the blobs larger than a volume are split."""

    count: int
    volume_of: dict[str, int]  # whole blob digest -> volume number (1-based)
    shared: frozenset[str] = frozenset()  # blobs every volume carries (attachments)
    parts: dict[str, tuple[tuple[int, int], ...]] = dataclasses.field(default_factory=dict)  # digest -> (volume, size)

    def volume_of_entry(self, name: str) -> int:
        """The volume of a tar entry: a blob (``blobs/sha256/<hex>``) or a part (``parts/<hex>.<n>``)."""
        if name.startswith("parts/"):
            digest, number = "sha256:" + name[6:70], int(name[71:])
            return self.parts[digest][number - 1][0]
        return self.volume_of["sha256:" + name.rsplit("/", 1)[1]]


def room_of(head_tar: int, volume_size: int) -> int:
    """Tar bytes a volume has for its own blobs, besides ``head_tar``; UsageError when too few."""
    room = (volume_size - (64 << 10)) * 128 // 129 - head_tar
    if room < VOLUME_MIN_ROOM:
        least = compressed_bound(head_tar + VOLUME_MIN_ROOM)
        raise UsageError(
            f"--volume-size {format_bytes(volume_size)} leaves no room for blobs: every volume carries the catalog, "
            f"every manifest and the attachments ({format_bytes(head_tar)}); choose at least {format_bytes(least)}"
        )
    return room


def partition(
    blobs: Sequence[tuple[str, int]], head_tar: int, volume_size: int, shared: frozenset[str] = frozenset()
) -> VolumePlan:
    """Blobs (digest, size), in bundle order, into as few volumes as first fit in order allows; a blob
    larger than a volume's room is split, after every whole blob, into parts that fill the volumes in turn.

    ``head_tar``: the tar bytes every volume carries (catalog, signature, shared files, end of
    archive). Raises UsageError when the head leaves no room.
    """
    room = room_of(head_tar, volume_size)
    volume_of: dict[str, int] = {}
    number, used = 1, 0
    large = [(d, s) for d, s in blobs if tar_entry_bytes(s) > room]
    for digest, size in blobs:
        entry = tar_entry_bytes(size)
        if entry > room:
            continue
        if used + entry > room:
            number, used = number + 1, 0
        volume_of[digest] = number
        used += entry
    parts: dict[str, tuple[tuple[int, int], ...]] = {}
    grain = PART if room >= 2 * PART else BLOCK
    for digest, size in large:
        pieces: list[tuple[int, int]] = []
        left = size
        while left:
            free = (room - used - tar_entry_bytes(0)) // grain * grain
            if free < grain:  # not even one round part: the next volume
                number, used = number + 1, 0
                continue
            piece = min(left, free)
            pieces.append((number, piece))
            used += tar_entry_bytes(piece)
            left -= piece
        parts[digest] = tuple(pieces)
    return VolumePlan(number, volume_of, shared, parts)


def volume_catalogs(
    catalog: Catalog, plan: VolumePlan, manifests: frozenset[str], part_hashes: dict[str, list[str]]
) -> list[Catalog]:
    """The catalog of each volume: files in set order (layout, index, manifests, shared blobs, each
    volume's own blobs then its parts, the trusted root), each own blob and part with its volume
    number; ``part_hashes``: the SHA-256 (hex) of each part of each split blob."""
    head, shared, own, tail = [], [], [], []
    for f in catalog.files:
        if not f.is_blob or f.digest in manifests:
            head.append(f)
        elif f.digest in plan.volume_of:
            own.append(dataclasses.replace(f, volume=plan.volume_of[f.digest]))
        elif f.digest in plan.parts:
            for n, ((volume, size), sha256) in enumerate(zip(plan.parts[f.digest], part_hashes[f.digest], strict=True)):
                own.append(CatalogFile(part_path(f.digest, n + 1), size, sha256, volume))
        elif f is catalog.files[-1] and f.digest not in plan.shared:
            tail.append(f)  # the carried trusted root: last in every volume
        else:
            shared.append(f)
    own.sort(key=lambda f: (f.volume or 0, f.part_of is not None))  # stable: bundle order within each
    split = tuple(CatalogSplit(d, sum(size for _, size in p), len(p)) for d, p in plan.parts.items())
    base = dataclasses.replace(catalog, files=tuple(head + shared + own + tail), split=split)
    set_id = hashlib.sha256(dataclasses.replace(base, volume=CatalogVolume("0" * 64, 0, plan.count)).to_bytes())
    return [
        dataclasses.replace(base, volume=CatalogVolume(set_id.hexdigest(), n, plan.count))
        for n in range(1, plan.count + 1)
    ]


Head = Callable[[BundleWriter], None]


class VolumeWriter:
    """The writer :func:`dtbundle.export.stream.write_blobs` writes a volume set through.

    ``begin_file`` of a blob moves to the blob's volume: the volumes before it are finished
    (``tail``, then checked against ``volume_size``), the next ones opened with their catalog,
    signature and ``head`` (layout, manifests, shared blobs). Nothing is renamed into place
    before :meth:`publish`; :meth:`abort` removes every volume of the set.
    """

    def __init__(
        self,
        paths: list[Path],
        signed: list[tuple[bytes, bytes]],  # (catalog, signature) of each volume
        plan: VolumePlan,
        head: Head,
        tail: Head,
        volume_size: int,
        open_writer: Callable[[Path], BundleWriter],
    ) -> None:
        self.paths, self.signed, self.plan = paths, signed, plan
        self._head, self._tail, self._size, self._open = head, tail, volume_size, open_writer
        self._writers: list[BundleWriter] = []

    @property
    def _current(self) -> BundleWriter:
        return self._writers[-1]

    def _move_to(self, number: int) -> None:
        while len(self._writers) < number:
            if self._writers:
                self._close_current()
            writer = self._open(self.paths[len(self._writers)])
            self._writers.append(writer)
            catalog, signature = self.signed[len(self._writers) - 1]
            writer.add_bytes(CATALOG_NAME, catalog)
            writer.add_bytes(SIGNATURE_NAME, signature)
            self._head(writer)

    def _close_current(self) -> None:
        writer = self._current
        self._tail(writer)
        writer.finish()
        if writer.compressed_size > self._size:
            raise LocalIOError(
                f"volume {writer.path.name} came out at {format_bytes(writer.compressed_size)}, above --volume-size "
                f"{format_bytes(self._size)} (an estimate failed): choose a smaller --volume-size and report this"
            )

    def begin_file(self, name: str, size: int, *, stored: bool = False) -> None:
        self._move_to(self.plan.volume_of_entry(name))
        self._current.begin_file(name, size, stored=stored)

    def write_data(self, chunk: bytes) -> None:
        self._current.write_data(chunk)

    def end_file(self) -> None:
        self._current.end_file()

    def finish(self) -> None:
        """Finish the last volume (and any left without blobs of their own)."""
        self._move_to(self.plan.count)
        self._close_current()

    def publish(self) -> list[WrittenBundle]:
        return [writer.publish() for writer in self._writers]

    def abort(self) -> None:
        for writer in self._writers:
            writer.abort()
