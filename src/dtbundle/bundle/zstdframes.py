"""The frame structure of a zstd file, walked from its headers alone (RFC 8878, section 3.1).

A zstd stream reader ends quietly when its input stops inside a frame, so a bundle cut short by
a few bytes (its last checksum, say) would read as complete. :func:`check_frames` walks frame
and block headers, seeking over block contents, and refuses a file that is not exactly a
sequence of whole frames. It runs once the archive has been read to its end, with a bound on
the number of blocks that content can explain (a hostile file of empty blocks cannot make the
walk cost more than the decompression did); :func:`check_start` refuses a file that is not
zstd at all before anything is read.
"""

from __future__ import annotations

import os
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
