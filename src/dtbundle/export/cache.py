"""Where export keeps downloaded blobs: a throw-away spool, or a content-addressed cache (``--cache-dir``).

Without a cache, the spool directory beside the output holds what arrives ahead of its turn
(:mod:`dtbundle.export.stream`), each file deleted once it is in the bundle. With ``--cache-dir DIR``, blobs live in
``DIR/blobs/sha256/<hex>``: each arrives in ``.<hex>.partial``, is verified (size and digest)
and only then renamed into place, so the cache never holds an unverified name. An export
that was killed (even with SIGKILL) and is run again downloads only what the cache lacks:
whole blobs, and the rest of a partial one (hashed again, continued with ``Range``). A
cached file is hashed again before use, and one that no longer matches its name is removed
and downloaded anew. Several exports may share a cache: every write is a rename, and a
partial file is locked by the process writing it.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dtbundle.bundle.writer import locked_temp, remove_dead_leftovers
from dtbundle.errors import LocalIOError
from dtbundle.export.plan import StoredBlob
from dtbundle.oci import new_hasher
from dtbundle.oci.digest import hexdigest_of
from dtbundle.registry import RegistryClient

# A download's temporary file (RegistryClient.fetch_blob: ".dl-*") untouched this long was left
# by a process that died; younger ones may belong to an export running beside this one.
STALE_SECONDS = 24 * 3600
_READ_CHUNK = 1 << 20


@dataclass
class CacheUse:
    """What the cache saved: blobs (and their bytes) taken from it instead of the registry."""

    hits: int = 0
    hit_bytes: int = 0
    refetched: int = 0  # cached files that no longer matched their digest


class BlobStore:
    """Gives :func:`dtbundle.export.run.run_export` a verified local file for each blob."""

    def __init__(self, directory: Path, cached: bool, lock: int | None = None) -> None:
        self.directory, self.cached, self._lock = directory, cached, lock
        self.use = CacheUse()

    @classmethod
    def spool_beside(cls, output: Path) -> BlobStore:
        """A temporary spool next to the output, removed by :meth:`close`; locked while in use."""
        try:
            lock, name = locked_temp(output.parent, f".{output.name}.", ".spool", is_dir=True)
        except OSError as exc:
            reason = exc.strerror or exc
            raise LocalIOError(f"cannot write in {output.parent}: {reason}; choose another --output") from None
        return cls(Path(name), cached=False, lock=lock)

    @classmethod
    def cache_at(cls, directory: Path) -> BlobStore:
        """The content-addressed cache in ``directory`` (nothing is created before :meth:`open`)."""
        return cls(directory / "blobs" / "sha256", cached=True)

    def open(self) -> BlobStore:
        """Create the cache's directories and remove downloads that died long ago."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            now = time.time()
            for stale in self.directory.glob(".dl-*"):
                with contextlib.suppress(OSError):
                    if now - stale.stat().st_mtime > STALE_SECONDS:
                        stale.unlink()
        except OSError as exc:
            raise LocalIOError(f"cannot use --cache-dir {self.directory}: {exc.strerror or exc}") from None
        check_writable(self.directory, "choose another --cache-dir")  # it exists: is it read-only?
        return self

    def path(self, blob: StoredBlob) -> Path:
        digest = blob.descriptor.digest
        return self.directory / (digest.split(":", 1)[1] if self.cached else digest.replace(":", "-"))

    def missing_bytes(self, blobs: list[StoredBlob]) -> int:
        """Bytes still to download (by size: a file of the right size is taken as a likely hit)."""
        return sum(b.descriptor.size for b in blobs if not self._sized(b))

    def fetch(self, client: RegistryClient, blob: StoredBlob, arrived: Callable[[int], None]) -> Path:
        """A verified file holding ``blob`` (from the cache, or downloaded into place)."""
        dest = self.path(blob)
        if self.cached and self._sized(blob):
            if self._matches(dest, blob, arrived):
                self.use.hits += 1
                self.use.hit_bytes += blob.descriptor.size
                return dest
            self.use.refetched += 1
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
        client.fetch_blob(blob.source, blob.descriptor, dest, arrived, resumable=self.cached)
        return dest

    def close(self) -> None:
        if not self.cached:
            shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _sized(self, blob: StoredBlob) -> bool:
        try:
            return self.path(blob).stat().st_size == blob.descriptor.size
        except OSError:
            return False

    @staticmethod
    def _matches(path: Path, blob: StoredBlob, arrived: Callable[[int], None]) -> bool:
        hasher, read = new_hasher(blob.descriptor.digest), 0
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(_READ_CHUNK):
                    hasher.update(chunk)
                    read += len(chunk)
                    arrived(len(chunk))
        except OSError:
            pass
        if read == blob.descriptor.size and hmac.compare_digest(
            hexdigest_of(hasher, blob.descriptor.digest), blob.descriptor.digest
        ):
            return True
        arrived(-read)  # counted as it was read: take it back, the download counts it again
        return False


def check_writable(directory: Path, hint: str) -> None:
    """Fail early, with the reason, when nothing can be created in ``directory`` (read-only, no rights)."""
    try:
        with tempfile.TemporaryFile(prefix=".dtbundle-probe-", dir=directory):
            pass
    except OSError as exc:
        raise LocalIOError(f"cannot write in {directory}: {exc.strerror or exc}; {hint}") from None


__all__ = ["BlobStore", "CacheUse", "check_writable", "remove_dead_leftovers"]
