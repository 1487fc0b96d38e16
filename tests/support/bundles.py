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
