"""Helpers to take bundles apart and put (tampered) ones back together, with Python's own
tarfile and zstandard, i.e. independently of dtbundle's writer."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import zstandard


def read_entries(path: Path) -> list[tuple[str, bytes]]:
    raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def write_entries(path: Path, entries: list[tuple[str, bytes]]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))


def flip_byte(data: bytes, position: int = -1) -> bytes:
    index = position % len(data)
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def write_members(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes]], compressor: zstandard.ZstdCompressor | None = None
) -> None:
    """Like :func:`write_entries`, with whole tar headers (links, devices, pax headers) and a chosen compressor."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    # Streaming: the size is not known to the compressor, so a frame keeps the window it was given.
    stream = (compressor or zstandard.ZstdCompressor()).compressobj()
    path.write_bytes(stream.compress(buffer.getvalue()) + stream.flush())


def member(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: object
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data
