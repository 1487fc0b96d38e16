"""Writing a bundle file: tar + zstd, atomically, with its ``.sha256`` sidecar.

Writing goes to a temporary file beside the destination and is renamed into
place only when complete, then the sidecar is written; an interrupted export
leaves nothing that looks like a bundle. See ``specs/bundle-format.md``.

Content that is already compressed (gzip or zstd layers) is not compressed again: its tar
bytes go into *stored* zstd frames of raw blocks (RFC 8878 §3.1.1.2, Block_Type 0), so
the file stays one zstd stream (``zstd -d | tar -x`` reads it) and the tar content is the
same bytes either way; everything else (headers, manifests, configs) is compressed. The
file writes and the sidecar's SHA-256 run on a thread of their own, behind a bounded queue.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import os
import queue
import shutil
import stat
import tempfile
import threading
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
# A stored frame: magic, Frame_Header_Descriptor 0xC0 (an 8-byte Frame_Content_Size, no
# single segment, no checksum, no dictionary), Window_Descriptor 0x38 (2^17 = 128 KiB, the
# largest block: a decoder needs no bigger window), then raw blocks of at most 128 KiB.
ZSTD_MAGIC = 0xFD2FB528
STORED_BLOCK = 128 * 1024
_STORED_HEADER = ZSTD_MAGIC.to_bytes(4, "little") + bytes([0xC0, 0x38])
_QUEUED_WRITES = 64  # pieces of at most ~128 KiB (a block, or a zstd output buffer) between the threads


def locked_temp(directory: Path, prefix: str, suffix: str, *, is_dir: bool = False) -> tuple[int, str]:
    """A new temporary file (or directory) and a descriptor holding an flock on it.

    Locked while this process lives: a later export can tell the leftover of one that was killed
    (SIGKILL, power loss) from one being written (:func:`remove_dead_leftovers`). Such a
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


def remove_dead_leftovers(output: Path) -> int:
    """Remove what an export to ``output`` that was killed left beside it (its ``.partial`` bundle
    and ``.spool`` directory); return how many. A live export holds a lock on each, so only those
    whose process is gone are taken: exports to other names, and running ones, are left alone."""
    removed = 0
    for path in output.parent.glob(f".{glob.escape(output.name)}.*"):
        if not path.name.endswith((".partial", ".spool")):
            continue
        try:  # never blocks (a FIFO), never follows a link; only our own files and directories
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            continue
        info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)) or info.st_uid != os.geteuid():
            os.close(fd)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed += 1
        except OSError:
            continue  # held by a running export, or already gone
        finally:
            os.close(fd)
    return removed


def stored_frame_header(size: int) -> bytes:
    """The header of a stored frame holding ``size`` bytes (raw blocks follow)."""
    return _STORED_HEADER + size.to_bytes(8, "little")


def raw_block_header(size: int, last: bool) -> bytes:
    """A Raw_Block header: Last_Block bit, Block_Type 0, Block_Size."""
    return ((size << 3) | int(last)).to_bytes(3, "little")


class _FileSink:
    """Writes the compressed bundle bytes and hashes them (the sidecar) on a thread of its own.

    ``write`` queues (at most ``_QUEUED_WRITES`` pieces wait); a failure of the thread is
    raised by the next ``write`` or by ``finish``.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.size, self.hash = raw, 0, hashlib.sha256()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(_QUEUED_WRITES)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="dtbundle-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.raw.write(data)
                    self.hash.update(data)
                except OSError as exc:
                    self._error = exc

    def write(self, data: bytes | memoryview) -> int:
        if self._error is not None:
            raise self._error
        size = len(data)
        self._queue.put(data if isinstance(data, bytes | memoryview) else bytes(data))
        self.size += size
        return size

    def flush(self) -> None:
        """The compressor's flush: the file is flushed by :meth:`finish`."""

    def finish(self) -> None:
        """Wait for every queued write; raise the thread's failure."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


STDOUT = Path("-")  # the output name that means standard output


@dataclass(frozen=True)
class WrittenBundle:
    path: Path
    sidecar: Path | None  # None: written to standard output
    compressed_size: int
    sha256: str


class BundleWriter:
    """Writes ``path`` (a .tar.zst) atomically. Use as a context manager: an exception aborts.

    A file goes in whole (:meth:`add_bytes`, :meth:`add_stream`) or in three steps
    (:meth:`begin_file`, :meth:`write_data`, :meth:`end_file`), from one thread at a time.
    ``path`` :data:`STDOUT` writes to standard output: no temporary file, no sidecar; a reader
    of a stream cut short finds it truncated (bundle/reader.py).
    """

    def __init__(self, path: Path, *, mtime: int, level: int = 3, threads: int = -1) -> None:
        self.path = path
        self._mtime = mtime
        self._tmp: Path | None = None
        self._finished = False
        if path == STDOUT:
            fd = os.dup(1)
        else:
            try:
                fd, tmp = locked_temp(path.parent, f".{path.name}.", ".partial")
            except OSError as exc:
                raise LocalIOError(f"cannot create {path}: {exc.strerror or exc}") from None
            self._tmp = Path(tmp)
        self._raw = os.fdopen(fd, "wb")
        self._sink = _FileSink(self._raw)
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=threads, write_checksum=True, job_size=JOB_BYTES
        )
        self._zstd = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            self._sink,  # type: ignore[arg-type]
            closefd=False,
        )
        self._written = 0  # uncompressed tar bytes
        self._in_frame = False  # compressed bytes since the last frame end
        self._file: tuple[str, int, bool] | None = None  # name, size, stored: the file being added
        self._file_written = 0
        self._block: list[memoryview] = []  # a stored file's bytes not yet in a raw block
        self._block_bytes = 0

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
        self._in_frame = True

    def _emit_raw(self, data: bytes | memoryview) -> None:
        try:
            self._sink.write(data)
        except OSError as exc:
            raise LocalIOError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _end_frame(self) -> None:
        if self._in_frame:
            try:
                self._zstd.flush(zstandard.FLUSH_FRAME)
            except OSError as exc:
                raise LocalIOError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            self._in_frame = False

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
        *,
        stored: bool = False,
    ) -> None:
        """Add ``size`` bytes from ``chunks``; fewer or more is an error (the bundle is aborted).
        ``stored``: the content is already compressed, write it in stored frames."""
        self.begin_file(name, size, stored=stored)
        for chunk in chunks:
            self.write_data(chunk)
            if progress:
                progress(len(chunk))
        self.end_file()

    def begin_file(self, name: str, size: int, *, stored: bool = False) -> None:
        """Start a file of ``size`` bytes: its tar header; its content follows by :meth:`write_data`."""
        # A small file costs more frames and blocks than it saves compression: readers bound the
        # blocks a bundle may have by its content (bundle/zstdframes.py), so it is compressed.
        stored = stored and size >= STORED_BLOCK
        self._emit(_tar.header(name, size, self._mtime))
        self._file, self._file_written = (name, size, stored), 0
        if stored:
            self._end_frame()
            self._emit_raw(stored_frame_header(size))

    def write_data(self, chunk: bytes) -> None:
        """Content of the file begun by :meth:`begin_file`; more than its size is an error."""
        assert self._file is not None, "write_data outside a file"
        name, size, stored = self._file
        self._file_written += len(chunk)
        if self._file_written > size:
            raise IntegrityError(f"{name} is longer than its catalog size {size}")
        if not stored:
            self._emit(chunk)
            return
        view, self._written = memoryview(chunk), self._written + len(chunk)
        while view:
            piece = view[: STORED_BLOCK - self._block_bytes]
            self._block.append(piece)
            self._block_bytes += len(piece)
            view = view[len(piece) :]
            if self._block_bytes == STORED_BLOCK or (self._file_written == size and not view):
                self._emit_raw(raw_block_header(self._block_bytes, last=self._file_written == size and not view))
                for part in self._block:
                    self._emit_raw(part)
                self._block, self._block_bytes = [], 0

    def end_file(self) -> None:
        """Finish the file begun by :meth:`begin_file`: fewer bytes than its size is an error."""
        assert self._file is not None, "end_file outside a file"
        name, size, _ = self._file
        if self._file_written != size:
            raise IntegrityError(f"{name} is {self._file_written} bytes, its catalog size is {size}")
        self._file = None
        self._emit(_tar.padding(size))

    @property
    def compressed_size(self) -> int:
        """Bytes written so far (queued included)."""
        return self._sink.size

    def commit(self) -> WrittenBundle:
        """Finish the archive, fsync, rename into place, write the sidecar."""
        self.finish()
        return self.publish()

    def finish(self) -> None:
        """Finish the archive and fsync the temporary file; :meth:`publish` renames it into place."""
        self._emit(_tar.end_of_archive(self._written))
        try:
            self._zstd.close()  # type: ignore[no-untyped-call]  # ends the last frame
            self._sink.finish()
            self._raw.flush()
            if self._tmp is not None:
                os.fsync(self._raw.fileno())
            self._raw.close()
        except OSError as exc:
            self.abort()
            raise LocalIOError(f"cannot finish {self.path}: {exc.strerror or exc}") from None
        self._finished = True

    def publish(self) -> WrittenBundle:
        """Rename the finished file into place and write its sidecar."""
        assert self._finished, "publish before finish"
        digest = self._sink.hash.hexdigest()
        if self._tmp is None:
            return WrittenBundle(self.path, None, self._sink.size, digest)
        try:
            os.replace(self._tmp, self.path)
            self._tmp = None
            sidecar = self.path.with_name(self.path.name + ".sha256")
            tmp_sidecar = sidecar.with_name(f".{sidecar.name}.partial")
            tmp_sidecar.write_text(f"{digest}  {self.path.name}\n")
            os.replace(tmp_sidecar, sidecar)
        except OSError as exc:
            self.abort()
            raise LocalIOError(f"cannot finish {self.path}: {exc.strerror or exc}") from None
        return WrittenBundle(self.path, sidecar, self._sink.size, digest)

    def abort(self) -> None:
        """Remove the temporary file (a published bundle stays)."""
        with contextlib.suppress(Exception):
            self._zstd.close()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            self._sink.finish()
        with contextlib.suppress(Exception):
            self._raw.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
