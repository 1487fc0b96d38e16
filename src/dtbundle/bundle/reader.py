"""Reading a bundle file: one streaming, verified pass with bounded memory.

The catalog and its signature come first and are verified before anything else is
parsed; then every entry must be the next file the catalog lists (for a volume of a set:
the next file of that volume), with its size and sha256. A bundle is a regular file, or
standard input (``-``: a pipe, walked as it passes by a :class:`FrameWatch`). See
``specs/bundle-format.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, overload

import zstandard

from dtbundle.bundle import tar as _tar
from dtbundle.bundle.format import CATALOG_NAME, SIGNATURE_NAME, Catalog, CatalogFile, parse_catalog
from dtbundle.bundle.key import PublicKey, verify_catalog
from dtbundle.bundle.zstdframes import FrameWatch, check_frames, check_start
from dtbundle.errors import IntegrityError, LocalIOError, UsageError
from dtbundle.limits import MAX_TRAILING_ZEROS, BundleLimits


class _ExactReader:
    """``read(n)`` returning exactly n bytes (fewer only at the end) from a zstd stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.consumed = 0  # decompressed bytes handed out

    def read(self, n: int) -> bytes:
        if n <= 0:
            return b""
        parts, left = [], n
        while left:
            try:
                piece = self._stream.read(left)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"bundle is not valid zstd data ({exc}): corrupt or truncated") from None
            if not piece:
                break
            parts.append(piece)
            left -= len(piece)
        self.consumed += n - left
        return b"".join(parts)


STDIN = Path("-")  # the bundle name that means standard input


def bundle_name(path: Path) -> str:
    """How messages name a bundle."""
    return "standard input" if path == STDIN else str(path)


class Bundle:
    """A bundle file being streamed; see :func:`open_bundle`. Its catalog is not trusted unless
    it is a :class:`VerifiedBundle`."""

    def __init__(self, path: Path, limits: BundleLimits) -> None:
        self.path = path
        self.limits = limits
        self._watch: FrameWatch | None = None
        self._files: int | None = None
        self._file: BinaryIO
        if path == STDIN:  # a pipe: walked as it passes, never seeked
            self._file = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
            self._watch = FrameWatch(self._file, self._allowed_blocks)
            source: BinaryIO = self._watch  # type: ignore[assignment]
        else:
            self._file = _open_file(path)
            source = self._file
        decompressor = zstandard.ZstdDecompressor(max_window_size=limits.max_zstd_window_bytes)
        self._zstd = decompressor.stream_reader(source, read_across_frames=True, closefd=False)
        self._exact = _ExactReader(self._zstd)
        self._read = self._exact.read
        self._tar = _tar.TarReader(self._read, limits.max_pax_header_bytes)
        self.catalog_bytes = b""
        self.signature_bytes = b""
        self.key_id: str | None = None
        self._catalog: Catalog | None = None

    def _allowed_blocks(self, raw_bytes: int) -> int:
        """Blocks the input may use: about one per KiB of content, four per file, 1024 more (_finish)."""
        if self._catalog is not None and self._files is None:
            self._files = len(self._catalog.own_files)  # counted once: this runs before every read
        return (self._exact.consumed + raw_bytes) // 1024 + 4 * (self._files or 0) + 1024

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._zstd.close()  # type: ignore[no-untyped-call]
        self._file.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _small_entry(self, expected: str, limit: int) -> bytes:
        member = self._tar.next()
        if member is None or member.name != expected:
            found = "the end of the archive" if member is None else repr(member.name[:80])
            raise IntegrityError(f"bundle must start with {expected}, found {found}: not a dtbundle bundle or corrupt")
        if member.size > limit:
            raise IntegrityError(f"{expected} is {member.size} bytes, above the limit of {limit}")
        return b"".join(self._tar.data(member))

    def read_head(self) -> None:
        """Read the catalog and its signature (the first two entries); verify nothing yet."""
        self.catalog_bytes = self._small_entry(CATALOG_NAME, self.limits.max_catalog_bytes)
        self.signature_bytes = self._small_entry(SIGNATURE_NAME, self.limits.max_signature_file_bytes)

    def verify_signature(self, keys: list[PublicKey]) -> str:
        limit = self.limits.max_signature_file_bytes
        self.key_id = verify_catalog(keys, self.catalog_bytes, self.signature_bytes, limit)
        return self.key_id

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = parse_catalog(self.catalog_bytes, self.limits)
        return self._catalog

    def files(self) -> Iterator[tuple[CatalogFile, Iterator[bytes]]]:
        """Yield each file with its data stream, in catalog order.

        A file's sha256 is checked when its data stream ends (before the consumer
        sees the end), or when the next file is requested if the consumer stopped
        reading; after the last file the archive must end: no missing, extra or
        reordered entries. Data handed out before those checks is unverified:
        consumers must not make it reachable until the iteration is complete.
        """
        for expected in self.catalog.own_files:
            member = self._tar.next()
            if member is None:
                raise IntegrityError(f"bundle is missing {expected.path}, which its catalog lists")
            if member.name != expected.path:
                raise IntegrityError(
                    f"bundle holds {member.name[:80]!r} where its catalog lists {expected.path}: "
                    "an entry was added, removed or reordered"
                )
            if member.size != expected.size:
                raise IntegrityError(f"{expected.path} is {member.size} bytes, its catalog says {expected.size}")
            hasher = hashlib.sha256()

            def stream(
                m: _tar.Member = member, h: hashlib._Hash = hasher, f: CatalogFile = expected
            ) -> Iterator[bytes]:
                for chunk in self._tar.data(m):
                    h.update(chunk)
                    yield chunk
                # Checked before the consumer sees the end of the data: an uploader that
                # commits on exhaustion never commits content that failed.
                _check_sha256(h, f)

            data = stream()
            yield expected, data
            for _ in data:  # drain (and so check) whatever the consumer left unread
                pass
        self._finish()

    def _finish(self) -> None:
        extra = self._tar.next()
        if extra is not None:
            raise IntegrityError(f"bundle holds {extra.name[:80]!r}, which its catalog does not list")
        padding = 0
        while True:  # after the end-of-archive marker only zero padding may follow
            rest = self._read(1 << 16)
            if not rest:
                break
            padding += len(rest)
            if rest.count(0) != len(rest) or padding > MAX_TRAILING_ZEROS:
                raise IntegrityError("bundle has data after the end of its archive")
        # The decompressor ends quietly where its input ends, even inside a frame: walk the frames.
        # A real encoder's block holds far more than 1 KiB of content, on average, and a writer may
        # end a frame at each file (a stored layer: bundle/writer.py).
        try:
            if self._watch is not None:
                self._watch.finish()
                return
            files = len(self._catalog.own_files) if self._catalog is not None else 0
            check_frames(self._file, max_blocks=self._exact.consumed // 1024 + 4 * files + 1024)
        except OSError as exc:
            raise LocalIOError(f"cannot read bundle {bundle_name(self.path)}: {exc.strerror or exc}") from None


def _open_file(path: Path) -> BinaryIO:
    """A bundle file, opened: a regular file that starts with a zstd frame."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"bundle {path} does not exist") from None
    except OSError as exc:
        raise LocalIOError(f"cannot read bundle {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"bundle {path} is not a regular file (a pipe or a device?): read it from - (stdin)")
    os.set_blocking(fd, True)
    file = os.fdopen(fd, "rb")
    try:
        check_start(file)
    except BaseException:
        file.close()
        raise
    return file


def _check_sha256(hasher: Any, entry: CatalogFile) -> None:
    if not hmac.compare_digest(hasher.hexdigest(), entry.sha256):
        raise IntegrityError(f"{entry.path} does not match its catalog sha256: the bundle was modified or is corrupt")


Observer = Callable[[CatalogFile, Iterator[bytes]], Iterator[bytes]]


@dataclass(frozen=True)
class VerifyResult:
    catalog: Catalog
    key_id: str
    files: int
    bytes: int


class VerifiedBundle(Bundle):
    """A bundle whose catalog signature verified with a trusted key (``key_id``)."""

    key_id: str

    def __enter__(self) -> VerifiedBundle:
        return self

    def verify_entries(
        self, progress_factory: Callable[[int], Callable[[int], None]] | None = None, observe: Observer | None = None
    ) -> VerifyResult:
        """Read every entry against the catalog; raise IntegrityError at the first problem.

        ``observe`` sees every entry's data as it streams (e.g. to collect image signatures).
        """
        progress = progress_factory(sum(f.size for f in self.catalog.own_files)) if progress_factory else None
        count = total = 0
        for entry, data in self.files():
            for chunk in observe(entry, data) if observe is not None else data:
                total += len(chunk)
                if progress:
                    progress(len(chunk))
            count += 1
        return VerifyResult(self.catalog, self.key_id, count, total)


@overload
def open_bundle(path: Path, keys: list[PublicKey], limits: BundleLimits | None = None) -> VerifiedBundle: ...
@overload
def open_bundle(path: Path, keys: None, limits: BundleLimits | None = None) -> Bundle: ...
def open_bundle(path: Path, keys: list[PublicKey] | None, limits: BundleLimits | None = None) -> Bundle:
    """Open ``path``, read its head and verify the catalog signature with ``keys``.

    With keys, the result is a :class:`VerifiedBundle`. ``keys=None`` skips the signature
    check (only for ``--insecure-skip-verify`` and ``inspect``). The catalog is parsed
    (and validated) only after that.
    """
    bundle = (VerifiedBundle if keys is not None else Bundle)(path, limits or BundleLimits())
    try:
        bundle.read_head()
        if keys is not None:
            bundle.verify_signature(keys)
        _ = bundle.catalog
    except BaseException:
        bundle.close()
        raise
    return bundle


def verify_bundle(
    path: Path,
    keys: list[PublicKey],
    limits: BundleLimits | None = None,
    progress_factory: Callable[[int], Callable[[int], None]] | None = None,
) -> VerifyResult:
    """Verify the signature, then every entry; raise IntegrityError at the first problem."""
    with open_bundle(path, keys, limits) as bundle:
        return bundle.verify_entries(progress_factory)
