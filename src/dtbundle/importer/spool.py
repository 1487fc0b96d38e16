"""One blob's temporary copy on disk, written by the bundle reader while an upload reads it.

The bundle is one sequential zstd stream, so blobs can only be uploaded several at a time if
what the reader decompresses is kept until an upload takes it: on disk, not in memory. The
reader (the main thread) writes each blob that must be uploaded into a :class:`Spool` as it
streams; an upload thread sends it from there at the same time (:meth:`Spool.read_from` follows
the writer) or later, when all upload slots were busy, and can resume from any offset after a
failure (the copy is complete on disk, nothing is replayed from memory).

**Nothing unverified is committed.** :meth:`Spool.read_from` never hands out a blob's last byte
before the reader has read the whole entry and its SHA-256 matched the signed catalog (the
bundle reader raises at the end of an entry otherwise, and the spool then fails every reader):
an upload's body cannot be complete, so the registry cannot store the blob, until it is
verified. The registry checks the digest again at the final ``PUT``; a blob is never stored
under a digest its bytes do not have.

The file is anonymous (``tempfile.TemporaryFile``): a killed import leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator

from dtbundle.errors import IntegrityError, LocalIOError

READ_BYTES = 1024 * 1024  # one read of an upload from the copy


class Spool:
    """A blob's copy: one writer (:meth:`fill`), uploads reading it (:meth:`read_from`), thread-safe."""

    def __init__(self, digest: str, size: int, on_close: Callable[[Spool], None] = lambda _: None) -> None:
        self.digest, self.size = digest, size
        self._on_close = on_close
        try:
            self._file = tempfile.TemporaryFile(prefix="dtbundle-upload-")  # noqa: SIM115 (closed by done())
        except OSError as exc:
            raise LocalIOError(_disk_error("create", exc)) from None
        self._fd = self._file.fileno()
        self._cond = threading.Condition()
        self._written = 0
        self._verified = False
        self._failed = False
        self._wanted = True
        self._users = 2  # the writer and the upload: the file is closed once both are done

    # -- the reader's side ------------------------------------------------------------------
    def fill(self, data: Iterator[bytes]) -> None:
        """Write ``data`` (the bundle entry, checked by the reader when it ends); then mark it verified.

        Reads ``data`` to its end even when the upload no longer wants it (:meth:`abandon`), so
        that the reader checks the entry. Any failure fails the uploads reading this copy.
        """
        try:
            for chunk in data:
                if self._wanted:
                    self._write(chunk)
        except BaseException:
            self.fail()
            self.done()
            raise
        with self._cond:
            self._verified = True
            self._cond.notify_all()
        self.done()

    def _write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            while view:
                written = os.pwrite(self._fd, view, self._written)
                view = view[written:]
                with self._cond:
                    self._written += written
                    self._cond.notify_all()
        except OSError as exc:
            raise LocalIOError(_disk_error("write", exc)) from None

    # -- the upload's side ------------------------------------------------------------------
    def read_from(self, offset: int) -> Iterator[bytes]:
        """The content from ``offset`` to the end, as the reader writes it; the last byte (and the
        end of an empty blob) only once the reader verified the whole entry."""
        position = offset
        while True:
            with self._cond:
                while True:
                    if self._failed:
                        raise IntegrityError(f"blob {self.digest} was not verified; its upload was abandoned")
                    end = self._written if self._verified else min(self._written, self.size - 1)
                    if position < end or (self._verified and position >= self.size):
                        break
                    self._cond.wait(1.0)
            if position >= self.size:
                return
            try:
                data = os.pread(self._fd, min(READ_BYTES, end - position), position)
            except OSError as exc:
                raise LocalIOError(_disk_error("read", exc)) from None
            if not data:
                raise LocalIOError(f"the temporary copy of blob {self.digest} ended early")
            position += len(data)
            yield data

    def abandon(self) -> None:
        """The upload needs no content (the blob was mounted): the reader stops writing it."""
        self._wanted = False

    # -- both --------------------------------------------------------------------------------
    def fail(self) -> None:
        """The content will never be verified (or the import stops): uploads reading it raise."""
        with self._cond:
            self._failed = True
            self._cond.notify_all()

    def done(self) -> None:
        """One side (writer or upload) is done with the copy; the second closes it."""
        with self._cond:
            self._users -= 1
            last = self._users == 0
        if last:
            self._file.close()
            self._on_close(self)


def _disk_error(verb: str, exc: OSError) -> str:
    where = tempfile.gettempdir()
    return (
        f"cannot {verb} a temporary copy of a blob to upload in {where}: {exc.strerror or exc}; "
        "set TMPDIR to a directory with more space"
    )
