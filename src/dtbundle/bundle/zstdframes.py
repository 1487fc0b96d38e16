"""The frame structure of a zstd file, walked from its headers alone (RFC 8878, section 3.1).

A zstd stream reader ends quietly when its input stops inside a frame, so a bundle cut short by
a few bytes (its last checksum, say) would read as complete. :func:`check_frames` walks frame
and block headers, seeking over block contents, and refuses a file that is not exactly a
sequence of whole frames. It runs once the archive has been read to its end, with a bound on
the number of blocks that content can explain (a hostile file of empty blocks cannot make the
walk cost more than the decompression did); :func:`check_start` refuses a file that is not
zstd at all before anything is read. :class:`FrameWatch` does the same walk on a stream (a pipe), as
its bytes pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

from dtbundle.errors import IntegrityError

_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50
_BLOCK_SIZE = 128 * 1024  # RFC 8878 Block_Maximum_Size: a fact of the format, not a bound we choose
_RAW, _RLE, _COMPRESSED = 0, 1, 2
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)  # by Frame_Content_Size_flag (0 means 1 byte for a single segment)
_DICTIONARY_ID_BYTES = (0, 1, 2, 4)


def check_start(source: BinaryIO) -> None:
    """Refuse a file that does not start with a zstd frame (empty, a zip, a plain tar); rewinds."""
    source.seek(0)
    magic = int.from_bytes(source.read(4).ljust(4, b"\0"), "little")
    source.seek(0)
    if magic != _ZSTD_MAGIC and magic & _SKIPPABLE_MASK != _SKIPPABLE_MAGIC:
        raise IntegrityError("bundle is not a zstd-compressed bundle (no zstd frame at its start)")


def check_frames(source: BinaryIO, max_blocks: int) -> None:
    """Raise IntegrityError unless ``source`` (seekable) is whole zstd frames, in at most
    ``max_blocks`` blocks (frames count as blocks too).

    Decompression still checks each block's content and checksum; this only proves that no
    frame was cut short and nothing follows the last.
    """
    end = source.seek(0, os.SEEK_END)
    source.seek(0)
    position, budget = 0, [max_blocks]
    while position < end:
        _spend(budget)
        magic = int.from_bytes(_exactly(source, 4, "a frame"), "little")
        if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
            size = int.from_bytes(_exactly(source, 4, "a skippable frame"), "little")
            position = _skip(source, position + 8, size, end)
        elif magic == _ZSTD_MAGIC:
            position = _frame(source, position + 4, end, budget)
        else:
            raise IntegrityError(f"bundle has data after its last zstd frame (at byte {position})")


def _spend(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise IntegrityError("bundle's zstd data has far more frames and blocks than its content explains")


def _frame(source: BinaryIO, position: int, end: int, budget: list[int]) -> int:
    descriptor = _exactly(source, 1, "a frame header")[0]
    content_size_flag, single_segment = descriptor >> 6, bool(descriptor & 0x20)
    if descriptor & 0x08:
        raise IntegrityError("bundle is not valid zstd data: a frame header sets its reserved bit")
    header = (
        (0 if single_segment else 1)
        + _DICTIONARY_ID_BYTES[descriptor & 0x03]
        + (1 if single_segment and content_size_flag == 0 else _CONTENT_SIZE_BYTES[content_size_flag])
    )
    position = _skip(source, position + 1, header, end)
    while True:
        _spend(budget)
        block = int.from_bytes(_exactly(source, 3, "a block header"), "little")
        last, kind, size = block & 1, (block >> 1) & 3, block >> 3
        if kind not in (_RAW, _RLE, _COMPRESSED) or size > _BLOCK_SIZE:
            raise IntegrityError("bundle is not valid zstd data: a block header is invalid")
        position = _skip(source, position + 3, 1 if kind == _RLE else size, end)
        if last:
            break
    return _skip(source, position, 4 if descriptor & 0x04 else 0, end)  # the content checksum


def _skip(source: BinaryIO, position: int, size: int, end: int) -> int:
    if position + size > end:
        raise IntegrityError("bundle is truncated: its last zstd frame is incomplete")
    return source.seek(position + size)


def _exactly(source: BinaryIO, size: int, what: str) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise IntegrityError(f"bundle is truncated: it ends inside {what} of its zstd data")
    return data


class FrameWatch:
    """The frame walk of :func:`check_frames` for input that cannot be walked afterwards (a pipe).

    Wraps the raw source: every byte the decompressor reads passes through :meth:`read` and
    advances the walk (headers parsed, block contents counted over). :meth:`finish`, once the
    decompressor saw the end, refuses input that did not end after a whole frame. ``allowed``
    gives the number of blocks the input may have used so far: checked before each read of the
    source, when the decompressor has decoded what it read before (at most one read's worth of
    blocks is walked beyond the budget).
    """

    def __init__(self, source: BinaryIO, allowed: Callable[[int], int]) -> None:
        self._source, self._allowed = source, allowed
        self.position = 0  # raw bytes read
        self._blocks = 0
        self._state, self._need, self._head = "magic", 4, bytearray()
        self._skip, self._checksum = 0, 0
        self._frames = 0

    def read(self, size: int = -1) -> bytes:
        # The decompressor asks for more input once it decoded (and handed out) what it had: the
        # blocks walked so far are checked against the content they produced by now.
        self._check_budget()
        data = self._source.read(size)
        self._feed(memoryview(data))
        self.position += len(data)
        return data

    def finish(self) -> None:
        """Raise IntegrityError unless the input ended exactly after a whole frame (and is not empty)."""
        if self.read(1):
            raise IntegrityError("bundle has data after its last zstd frame")
        self._check_budget()
        if self._frames == 0:
            raise IntegrityError("bundle is empty: no zstd frame (was the export cut before it began?)")
        if self._state != "magic" or self._head or self._skip:
            raise IntegrityError("bundle is truncated: the stream ended inside a zstd frame")

    def _feed(self, data: memoryview) -> None:
        while data:
            if self._skip:
                step = min(self._skip, len(data))
                self._skip -= step
                data = data[step:]
                continue
            step = min(self._need - len(self._head), len(data))
            self._head += data[:step]
            data = data[step:]
            if len(self._head) == self._need:
                head, self._head = bytes(self._head), bytearray()
                self._header(head)

    def _header(self, head: bytes) -> None:
        value = int.from_bytes(head, "little")
        if self._state == "magic":
            if value & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self._state, self._need = "skippable", 4
            elif value == _ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
                self._frames += 1
            elif self._frames == 0:
                raise IntegrityError("bundle is not a zstd-compressed bundle (no zstd frame at its start)")
            else:
                raise IntegrityError("bundle has data after its last zstd frame")
        elif self._state == "skippable":
            self._spend()
            self._state, self._need, self._skip = "magic", 4, value
        elif self._state == "descriptor":
            if value & 0x08:
                raise IntegrityError("bundle is not valid zstd data: a frame header sets its reserved bit")
            flag, single = value >> 6, bool(value & 0x20)
            size = 1 if single and flag == 0 else _CONTENT_SIZE_BYTES[flag]
            self._skip = (0 if single else 1) + _DICTIONARY_ID_BYTES[value & 0x03] + size
            self._checksum = 4 if value & 0x04 else 0
            self._state, self._need = "block", 3
        else:  # a block header
            self._spend()
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind not in (_RAW, _RLE, _COMPRESSED) or size > _BLOCK_SIZE:
                raise IntegrityError("bundle is not valid zstd data: a block header is invalid")
            self._skip = 1 if kind == _RLE else size
            if last:
                self._skip += self._checksum
                self._state, self._need = "magic", 4

    def _spend(self) -> None:
        self._blocks += 1

    def _check_budget(self) -> None:
        if self._blocks > self._allowed(self.position):
            raise IntegrityError("bundle's zstd data has far more frames and blocks than its content explains")
