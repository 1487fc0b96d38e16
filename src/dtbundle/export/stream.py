"""Blobs into the bundle in catalog order: the blob whose turn it is streams from the network
straight into the bundle; only what arrives ahead of its turn is spooled.

Each download writes into a :class:`Channel`. Until the writer reaches that blob, the channel
appends to a spool file (beside the output, never fsynced: it lives for seconds and is removed).
When its turn comes, the writer copies what is spooled and, once it has caught up, the channel
hands every further piece straight to the bundle from the downloading thread: in-order bytes
never touch the disk twice. A download whose predecessor is already complete waits for its turn
before it starts, so a blob that is next never goes through the spool at all.

Correctness: bytes in the bundle cannot be taken back, and a blob is verified (size and digest)
only when its download returns. The tar entry is finished only after that; a digest mismatch, or
any other failure, aborts the whole export (the bundle is a temporary file, renamed only at
commit). A dropped connection is resumed with ``Range`` and appends. A server that ignores
``Range`` makes the download start over from byte 0 (the download rewinds its output): a rewind
behind what the bundle already holds is refused (a :class:`RegistryConnectionError`) and fails
the export, which can be run again. With ``--cache-dir`` the cache stays where blobs land and is read
back (:mod:`dtbundle.export.cache`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from dtbundle.errors import Interrupted, LocalIOError, RegistryConnectionError
from dtbundle.export.cache import BlobStore
from dtbundle.export.plan import StoredBlob
from dtbundle.oci import blob_path
from dtbundle.progress import Progress
from dtbundle.registry import RegistryClient

PIECE = 1 << 20  # spool and cache reads
_COMPRESSED_SUFFIXES = ("+gzip", "+zstd", ".gzip", ".zstd", "+gz")
Sink = Callable[[bytes], None]


class FileWriter(Protocol):
    """Where blobs go: a :class:`~dtbundle.bundle.writer.BundleWriter`, or a set of volumes."""

    def begin_file(self, name: str, size: int, *, stored: bool = False) -> None: ...
    def write_data(self, chunk: bytes) -> None: ...
    def end_file(self) -> None: ...


def already_compressed(media_type: str) -> bool:
    """A gzip or zstd layer (OCI, Docker, Helm, …): written as stored zstd frames."""
    return media_type.endswith(_COMPRESSED_SUFFIXES)


@dataclass
class StreamUse:
    """How the content blobs reached the bundle (bytes)."""

    streamed: int = 0  # straight from the network
    spooled: int = 0  # through a spool file: arrived ahead of their turn
    cached: int = 0  # read back from --cache-dir


class Channel:
    """The output a download writes into (``tell``/``write``/``seek``/``truncate``, as
    :func:`dtbundle.registry.download.download` uses it): a spool file until :meth:`attach`,
    then the bundle."""

    def __init__(self, spool: Path, what: str) -> None:
        self._spool, self._what = spool, what
        self._lock = threading.Lock()
        self._attached = threading.Event()
        self._fd: int | None = None
        self._path: Path | None = None
        self._written = 0  # the download's position
        self._taken = 0  # bytes the bundle holds (or is reading): no rewind behind this
        self._rewind = 0
        self._sink: Sink | None = None
        self.streamed = self.spooled = 0

    # -- the download's side ----------------------------------------------------------------
    def tell(self) -> int:
        return self._written

    def seek(self, position: int, whence: int = 0) -> int:
        self._rewind = position
        return position

    def truncate(self, size: int | None = None) -> int:
        with self._lock:
            position = self._rewind if size is None else size
            if position < self._taken:
                raise RegistryConnectionError(
                    f"{self._what}: the registry ignored Range after a dropped connection and sent the blob "
                    "from its start, but part of it is already in the bundle; run the same command again"
                )
            if self._fd is not None:
                os.ftruncate(self._fd, position)
            self._written = position
            return position

    def write(self, data: bytes) -> int:
        with self._lock:
            if self._sink is not None and self._taken == self._written:
                self._sink(data)
                self._taken += len(data)
                self.streamed += len(data)
            else:
                if self._fd is None:
                    fd, name = tempfile.mkstemp(prefix="blob-", dir=self._spool)
                    self._fd, self._path = fd, Path(name)
                view = memoryview(data)
                while view:
                    view = view[os.pwrite(self._fd, view, self._written + len(data) - len(view)) :]
                self.spooled += len(data)
            self._written += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing buffered."""

    def wait_for_turn(self, stop: threading.Event) -> None:
        """Block until the writer attaches (or the export stops)."""
        while not self._attached.wait(0.05):
            if stop.is_set():
                raise Interrupted("download stopped: the export ended")

    # -- the writer's side ---------------------------------------------------------------------
    def attach(self, sink: Sink) -> None:
        """Copy what is spooled into ``sink``, then have every further write go there directly."""
        position = 0
        while True:
            with self._lock:
                if position == self._written:
                    self._sink = sink
                    self._attached.set()
                    return
                size, fd = min(PIECE, self._written - position), self._fd
                self._taken = position + size
            assert fd is not None
            piece = os.pread(fd, size, position)
            if len(piece) != size:
                raise LocalIOError(f"cannot read back the spooled {self._what}")
            sink(piece)
            position += size

    def close(self) -> None:
        self._attached.set()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._path is not None:
                self._path.unlink(missing_ok=True)


def write_blobs(
    client: RegistryClient,
    store: BlobStore,
    writer: FileWriter,
    blobs: list[StoredBlob],
    concurrency: int,
    progress: Progress,
) -> StreamUse:
    """Download (``concurrency`` at once, ``2 * concurrency`` ahead of the writer at most) and append to
    the tar in order. When the writer stops (error, Ctrl-C), running downloads stop at their next piece."""
    stop, use = threading.Event(), StreamUse()
    window = max(1, 2 * concurrency)

    def arrived(n: int) -> None:
        if stop.is_set():
            raise Interrupted("download stopped: the export ended")
        progress.advance(n)

    def fetch(blob: StoredBlob, channel: Channel, before: Future[Path | None] | None) -> Path | None:
        if store.cached:
            return store.fetch(client, blob, arrived)
        if before is None or before.done():
            channel.wait_for_turn(stop)  # next in line: no spool
        client.download_blob(blob.source, blob.descriptor, cast(BinaryIO, channel), arrived)
        return None

    pending: deque[tuple[StoredBlob, Channel, Future[Path | None]]] = deque()
    channels: list[Channel] = []
    queue = iter(blobs)
    try:
        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="dtbundle-fetch") as pool:
            try:

                def top_up() -> None:
                    while len(pending) < window and (blob := next(queue, None)) is not None:
                        channel = Channel(store.directory, f"blob {blob.descriptor.digest} of {blob.source.name}")
                        channels.append(channel)
                        before = pending[-1][2] if pending else None
                        pending.append((blob, channel, pool.submit(fetch, blob, channel, before)))

                top_up()
                while pending:
                    blob, channel, future = pending.popleft()
                    desc = blob.descriptor
                    writer.begin_file(blob_path(desc.digest), desc.size, stored=already_compressed(desc.media_type))
                    if store.cached:
                        path = future.result()
                        assert path is not None
                        _copy_file(path, writer)
                        use.cached += desc.size
                    else:
                        channel.attach(writer.write_data)
                        future.result()  # verified: only now is the entry finished
                        use.streamed += channel.streamed
                        use.spooled += channel.spooled
                    writer.end_file()
                    channel.close()
                    top_up()
            except BaseException:
                stop.set()
                for _, _, future in pending:
                    future.cancel()
                raise
    finally:
        for channel in channels:
            channel.close()
    return use


def _copy_file(path: Path, writer: FileWriter) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(PIECE):
            writer.write_data(chunk)
