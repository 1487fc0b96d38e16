"""Writing a bundle file: tar + zstd, atomically, with its ``.sha256`` sidecar.

Writing goes to a temporary file beside the destination and is renamed into
place only when complete, then the sidecar is written; an interrupted export
leaves nothing that looks like a bundle. See ``specs/bundle-format.md``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import zstandard

from dtbundle.bundle import tar as _tar
from dtbundle.errors import IntegrityError, LocalIOError

# zstd multi-threaded job size: small jobs keep the compressor's buffers (and RSS) low.
JOB_BYTES = 4 << 20


def locked_temp(directory: Path, prefix: str, suffix: str, *, is_dir: bool = False) -> tuple[int, str]:
    """A new temporary file (or directory) and a descriptor holding an flock on it.

    Locked while this process lives: a later export can tell the leftover of one that was killed
    (SIGKILL, power loss) from one being written (export.cache.remove_dead_leftovers). Such a
    cleaner may take the new name in the moment before it is locked; then it is made again.
    """
    for _ in range(3):
        if is_dir:
            name = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return fd, name  # no locks on this filesystem: works, but a leftover stays for the user
        else:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(name).st_ino == os.fstat(fd).st_ino:
                    return fd, name
        os.close(fd)
    raise OSError(errno.EAGAIN, "temporary files are being removed as they are made")


class _HashingFile:
    """Counts and hashes what is written through it (the compressed bundle bytes)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.size, self.hash = raw, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


@dataclass(frozen=True)
class WrittenBundle:
    path: Path
    sidecar: Path
    compressed_size: int
    sha256: str


class BundleWriter:
    """Writes ``path`` (a .tar.zst) atomically. Use as a context manager: an exception aborts."""

    def __init__(self, path: Path, *, mtime: int, level: int = 3, threads: int = -1) -> None:
        self.path = path
        self._mtime = mtime
        try:
            fd, tmp = locked_temp(path.parent, f".{path.name}.", ".partial")
        except OSError as exc:
            raise LocalIOError(f"cannot create {path}: {exc.strerror or exc}") from None
        self._tmp = Path(tmp)
        self._raw = os.fdopen(fd, "wb")
        self._hashing = _HashingFile(self._raw)
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=threads, write_checksum=True, job_size=JOB_BYTES
        )
        self._zstd = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            self._hashing,  # type: ignore[arg-type]
            closefd=False,
        )
        self._written = 0  # uncompressed tar bytes

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self.abort()

    def _emit(self, data: bytes) -> None:
        try:
            self._zstd.write(data)
        except OSError as exc:
            raise LocalIOError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._written += len(data)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._emit(_tar.header(name, len(data), self._mtime))
        self._emit(data)
        self._emit(_tar.padding(len(data)))

    def add_stream(
        self,
        name: str,
        size: int,
        chunks: Iterator[bytes],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Add ``size`` bytes from ``chunks``; fewer or more is an error (the bundle is aborted)."""
        self._emit(_tar.header(name, size, self._mtime))
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                raise IntegrityError(f"{name} is longer than its catalog size {size}")
            self._emit(chunk)
            if progress:
                progress(len(chunk))
        if written != size:
            raise IntegrityError(f"{name} is {written} bytes, its catalog size is {size}")
        self._emit(_tar.padding(size))

    def commit(self) -> WrittenBundle:
        """Finish the archive, fsync, rename into place, write the sidecar."""
        self._emit(_tar.end_of_archive(self._written))
        try:
            self._zstd.flush(zstandard.FLUSH_FRAME)
            self._zstd.close()  # type: ignore[no-untyped-call]
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            os.replace(self._tmp, self.path)
            digest = self._hashing.hash.hexdigest()
            sidecar = self.path.with_name(self.path.name + ".sha256")
            tmp_sidecar = sidecar.with_name(f".{sidecar.name}.partial")
            tmp_sidecar.write_text(f"{digest}  {self.path.name}\n")
            os.replace(tmp_sidecar, sidecar)
        except OSError as exc:
            self.abort()
            raise LocalIOError(f"cannot finish {self.path}: {exc.strerror or exc}") from None
        return WrittenBundle(self.path, sidecar, self._hashing.size, digest)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._zstd.close()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            self._raw.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
