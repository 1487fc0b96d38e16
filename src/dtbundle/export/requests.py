"""Image requests from the command line and from an images file (TOML); see the README for its format."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

from dtbundle.errors import UsageError
from dtbundle.export.plan import ImageRequest
from dtbundle.oci import Platform, parse_reference


def requests_from(references: Iterable[str], platforms: Sequence[str] = ()) -> list[ImageRequest]:
    filters = tuple(Platform.parse(p) for p in platforms)
    return [ImageRequest(text, parse_reference(text), filters) for text in references]


def load_images_file(path: Path, default_platforms: Sequence[str] = ()) -> list[ImageRequest]:
    """Read an images file (TOML); see the README for its format."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"images file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read images file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"images file {path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"images", "image", "platforms"}
    if unknown:
        raise UsageError(f"images file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    top_platforms = document.get("platforms", list(default_platforms))
    if not isinstance(top_platforms, list) or not all(isinstance(p, str) for p in top_platforms):
        raise UsageError(f"images file {path}: 'platforms' must be a list of strings like \"linux/amd64\"")
    requests: list[ImageRequest] = []
    short = document.get("images", [])
    if not isinstance(short, list) or not all(isinstance(r, str) for r in short):
        raise UsageError(f"images file {path}: 'images' must be a list of image references")
    requests.extend(requests_from(short, top_platforms))
    tables = document.get("image", [])
    if not isinstance(tables, list):
        raise UsageError(f"images file {path}: use [[image]] tables")
    for n, table in enumerate(tables, 1):
        if not isinstance(table, dict) or not isinstance(table.get("ref"), str):
            raise UsageError(f'images file {path}: [[image]] number {n} needs ref = "registry/repository:tag"')
        extra = set(table) - {"ref", "platforms"}
        if extra:
            raise UsageError(f"images file {path}: [[image]] number {n} has unknown key(s) {', '.join(sorted(extra))}")
        platforms = table.get("platforms", top_platforms)
        if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
            raise UsageError(f"images file {path}: [[image]] number {n}: platforms must be a list of strings")
        requests.extend(requests_from([table["ref"]], platforms))
    if not requests:
        raise UsageError(f"images file {path} names no images")
    return requests
