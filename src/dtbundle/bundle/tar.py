"""A strict, bounded POSIX (ustar/pax) tar reader, and header writing for the bundle.

Python's ``tarfile`` reads a pax header of any declared size into memory and
accepts links, devices and GNU extensions; a bundle needs none of that. This
reader accepts regular files and pax ``x`` headers of bounded size only, checks
every header checksum, and hands file data out as a stream. Anything else is
an :class:`~dtbundle.errors.IntegrityError`.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dtbundle.errors import IntegrityError

BLOCK = 512
RECORD = 20 * BLOCK
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\x00")
_IGNORED_PAX_KEYS = frozenset({"mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "comment"})

ReadFn = Callable[[int], bytes]


def header(name: str, size: int, mtime: int) -> bytes:
    """The header block(s) of a regular file: ustar, plus a pax header when needed
    (names over 100 characters, sizes of 8 GiB and more)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def end_of_archive(written: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record, as tar writes them."""
    tail = 2 * BLOCK
    return bytes(tail + (-(written + tail) % RECORD))


@dataclass(frozen=True)
class Member:
    name: str
    size: int


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU/star) for large numbers
        value = int.from_bytes(field[1:], "big") | ((field[0] & 0x7F) << (8 * (len(field) - 1)))
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if text.strip(b"01234567"):  # int() would take a sign, "0o", "_" and other digits too
        raise IntegrityError(f"bundle tar header has a malformed {what} field")
    return int(text, 8)


def _checksum_ok(block: bytes) -> bool:
    stored = _octal(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + b" " * 8 + block[156:])
    return stored in (unsigned, signed)


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise IntegrityError("bundle tar has a malformed pax header")
        digits = data[pos:space]
        length = int(digits) if digits.isdigit() else 0  # ASCII digits only, as tar writes them
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise IntegrityError("bundle tar has a malformed pax header")
        key, _, value = record[:-1].partition(b"=")
        try:
            records[key.decode("utf-8", "strict")] = value.decode("utf-8", "strict")
        except UnicodeDecodeError:
            raise IntegrityError("bundle tar has a pax header that is not UTF-8") from None
        pos += length
    return records


class TarReader:
    """Iterate the members of a tar stream given a ``read(n)`` that returns exactly n bytes
    (fewer only at the end of the stream)."""

    def __init__(self, read: ReadFn, max_pax_bytes: int) -> None:
        self._read = read
        self._max_pax = max_pax_bytes
        self._pending = 0  # bytes of the current member's data (and padding) not yet consumed

    def _block(self) -> bytes:
        block = self._read(BLOCK)
        if len(block) != BLOCK:
            raise IntegrityError("bundle is truncated: the tar stream ends inside a header")
        return block

    def skip_pending(self) -> None:
        while self._pending:
            chunk = self._read(min(self._pending, 1 << 20))
            if not chunk:
                raise IntegrityError("bundle is truncated: the tar stream ends inside a file")
            self._pending -= len(chunk)

    def next(self) -> Member | None:
        """The next member's header, or None at the end-of-archive marker."""
        self.skip_pending()
        pax: dict[str, str] = {}
        while True:
            block = self._block()
            if block == _ZERO_BLOCK:
                return None
            if not _checksum_ok(block):
                raise IntegrityError("bundle tar header checksum mismatch: the bundle is corrupt")
            if block[257:263] != b"ustar\x00":
                raise IntegrityError("bundle tar entry is not in POSIX ustar/pax format")
            typeflag = block[156:157]
            size = _octal(block[124:136], "size")
            if typeflag == b"x":
                if size > self._max_pax:
                    raise IntegrityError("bundle tar has an oversized pax header: the bundle is hostile or corrupt")
                data = self._read(size)
                if len(data) != size:
                    raise IntegrityError("bundle is truncated inside a pax header")
                self._read(-size % BLOCK)
                for key, value in _parse_pax(data).items():
                    if key in ("path", "size"):
                        pax[key] = value
                    elif key not in _IGNORED_PAX_KEYS:
                        raise IntegrityError(f"bundle tar uses an unsupported pax field {key[:40]!r}")
                continue
            if typeflag not in _REGULAR:
                raise IntegrityError(f"bundle tar holds an entry of type {typeflag!r}: only regular files are allowed")
            name = block[0:100].split(b"\x00", 1)[0]
            prefix = block[345:500].split(b"\x00", 1)[0]
            try:
                text = (prefix + b"/" + name if prefix else name).decode("utf-8", "strict")
            except UnicodeDecodeError:
                raise IntegrityError("bundle tar entry name is not UTF-8") from None
            text = pax.get("path", text)
            if "size" in pax:
                if not (pax["size"].isascii() and pax["size"].isdigit()):  # not other Unicode digits
                    raise IntegrityError("bundle tar has a malformed pax size")
                size = int(pax["size"])
            self._pending = size + (-size % BLOCK)
            return Member(text, size)

    def data(self, member: Member, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The member's data, in chunks; must be called right after :meth:`next`."""
        left = member.size
        while left:
            piece = self._read(min(chunk, left))
            if not piece:
                raise IntegrityError(f"bundle is truncated inside {member.name}")
            left -= len(piece)
            self._pending -= len(piece)
            yield piece
        pad = -member.size % BLOCK
        if pad:
            self._read(pad)
            self._pending -= pad
