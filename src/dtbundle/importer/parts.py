"""Parts of a blob larger than a volume (``parts/<hex>.<n>``), kept until every part has arrived.

A part is verified like any entry (its own SHA-256 in the signed catalog) and kept on disk in
``--parts-dir`` (default ``$XDG_STATE_HOME/dtbundle/parts``), under the set's identifier, written
to a temporary name and renamed once verified: the volumes of a set can be imported days apart.
Once every part of a blob is there, the blob is read from the parts in order, its digest checked
as it goes, and given to the sink (uploaded, or written to a layout); then its parts are removed.
A part kept by an earlier run is hashed again before it counts (a damaged one is removed and its
volume reported missing); a part streamed in this run always replaces a kept one. A dry run keeps
nothing: it notes which parts it saw, and reads (never writes) what earlier runs kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Iterator
from pathlib import Path

from dtbundle.bundle.format import Catalog, CatalogFile, CatalogSplit
from dtbundle.bundle.writer import locked_temp, remove_dead_leftovers
from dtbundle.errors import IntegrityError, LocalIOError
from dtbundle.importer.state import default_state_path

PIECE = 1 << 20


def default_parts_dir() -> Path:
    """``$XDG_STATE_HOME/dtbundle/parts``, beside the rollback records."""
    return default_state_path().parent / "parts"


class PartStore:
    """The parts of one volume set's split blobs: taken while volumes stream, joined once complete."""

    def __init__(self, catalog: Catalog, directory: Path | None, keep: bool = True) -> None:
        self.catalog, self.keep = catalog, keep and bool(catalog.split)
        self.directory = (directory or default_parts_dir()) / (catalog.volume.set if catalog.volume else "none")
        self.seen: set[str] = set()  # part paths taken by this run
        self.checked: dict[str, bool] = {}  # part path -> a kept file matched its SHA-256
        self.parts = {s.digest: [f for f in catalog.files if f.part_of == s.digest] for s in catalog.split}

    def _path(self, part: CatalogFile) -> Path:
        return self.directory / part.path.rsplit("/", 1)[1]

    def take(self, part: CatalogFile, data: Iterator[bytes]) -> None:
        """Keep ``part`` (``data`` is verified by the reader as it ends), replacing a kept copy."""
        if not self.keep:
            for _ in data:
                pass
            self.seen.add(part.path)
            return
        tmp = ""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            remove_dead_leftovers(self.directory / "part")  # what a killed import was writing
            # A new name (O_EXCL: never a link), locked while this process writes it.
            fd, tmp = locked_temp(self.directory, ".part.", ".partial")
            with os.fdopen(fd, "wb") as handle:
                for chunk in data:  # the reader raises here when the part does not match its SHA-256
                    handle.write(chunk)
                handle.flush()
                os.replace(tmp, self._path(part))  # still locked: no sweeper takes it meanwhile
        except OSError as exc:
            raise LocalIOError(
                f"cannot keep a part in {self.directory}: {exc.strerror or exc}; see --parts-dir"
            ) from None
        finally:
            if tmp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        self.seen.add(part.path)

    def have(self, part: CatalogFile) -> bool:
        """This run saw the part, or an earlier one kept it and it still matches its SHA-256."""
        if part.path in self.seen:
            return True
        if part.path not in self.checked:
            self.checked[part.path] = self._kept_intact(part)
        return self.checked[part.path]

    def _kept_intact(self, part: CatalogFile) -> bool:
        path = self._path(part)
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size != part.size:
                return False
            hasher = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(PIECE):
                    hasher.update(chunk)
        except OSError:
            return False
        if hmac.compare_digest(hasher.hexdigest(), part.sha256):
            return True
        if self.keep:  # damaged: it no longer counts, and the volume that carries it is reported missing
            with contextlib.suppress(OSError):
                path.unlink()
        return False

    def complete(self) -> list[CatalogSplit]:
        """The split blobs whose every part is here."""
        return [s for s in self.catalog.split if all(self.have(p) for p in self.parts[s.digest])]

    def reader(self, split: CatalogSplit) -> Iterator[bytes]:
        """The blob, from its parts in order; its digest is checked before the last piece is handed out."""
        hasher, held = hashlib.sha256(), b""
        for part in self.parts[split.digest]:
            with self._path(part).open("rb") as handle:
                while chunk := handle.read(PIECE):
                    if held:
                        yield held
                    hasher.update(chunk)
                    held = chunk
        if not hmac.compare_digest("sha256:" + hasher.hexdigest(), split.digest):
            raise IntegrityError(f"the parts of {split.digest} do not join into it: remove {self.directory}")
        yield held

    def read_from(self, split: CatalogSplit, offset: int) -> Iterator[bytes]:
        """The blob from ``offset``: from 0, :meth:`reader` (digest checked); later (an upload resumed
        after a drop), the bytes as they are (the registry checks the digest)."""
        if offset == 0:
            yield from self.reader(split)
            return
        for part in self.parts[split.digest]:
            if offset >= part.size:
                offset -= part.size
                continue
            with self._path(part).open("rb") as handle:
                handle.seek(offset)
                offset = 0
                while chunk := handle.read(PIECE):
                    yield chunk

    def remove(self, split: CatalogSplit) -> None:
        """The blob is at the target: its parts are no longer needed."""
        if not self.keep:
            return
        for part in self.parts[split.digest]:
            with contextlib.suppress(OSError):  # a part left behind costs disk, never correctness
                self._path(part).unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()
