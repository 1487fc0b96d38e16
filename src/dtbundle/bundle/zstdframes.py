"""The frame structure of a zstd file, walked from its headers alone (RFC 8878, section 3.1).

A zstd stream reader ends quietly when its input stops inside a frame, so a bundle cut short by
a few bytes (its last checksum, say) would read as complete. :func:`check_frames` walks frame
and block headers, seeking over block contents, and refuses a file that is not exactly a
sequence of whole frames: it reads a few bytes per 128 KiB block, so it costs little even for
a large bundle, and it runs before anything is decompressed.
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


def check_frames(source: BinaryIO) -> None:
    """Raise IntegrityError unless ``source`` (seekable, read from its start) is whole zstd frames.

    Leaves the position at the start again. Decompression still checks each block's content
    and checksum; this only proves that no frame was cut short and nothing follows the last.
    """
    end = source.seek(0, os.SEEK_END)
    source.seek(0)
    position = 0
    if end == 0:
        raise IntegrityError("bundle is empty: not a zstd-compressed bundle")
    while position < end:
        magic = int.from_bytes(_exactly(source, 4, "a frame"), "little")
        if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
            size = int.from_bytes(_exactly(source, 4, "a skippable frame"), "little")
            position = _skip(source, position + 8, size, end)
        elif magic == _ZSTD_MAGIC:
            position = _frame(source, position + 4, end)
        elif position == 0:
            raise IntegrityError("bundle is not a zstd-compressed bundle (no zstd frame at its start)")
        else:
            raise IntegrityError(f"bundle has data after its last zstd frame (at byte {position})")
    source.seek(0)


def _frame(source: BinaryIO, position: int, end: int) -> int:
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
