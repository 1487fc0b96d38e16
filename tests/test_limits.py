"""The bounds in src/dtbundle/limits.py are the ones the specs and the README quote."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from dtbundle import limits
from dtbundle.limits import BundleLimits, RegistryLimits, TrustLimits

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "specs" / "bundle-format.md", ROOT / "specs" / "registry-client.md", ROOT / "README.md"]
UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4, "s": 1}
QUOTE = re.compile(
    r"`(max_[a-z_]+|[a-z_]+_(?:timeout|initial|max)|[A-Z_]+_MAX_[A-Z_]+)` = ([0-9.]+)(?: (KiB|MiB|GiB|TiB|s)\b)?"
)


def quoted() -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for doc in DOCS:
        for name, number, unit in QUOTE.findall(doc.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(float(number) * UNITS.get(unit, 1))
    return found


@pytest.mark.parametrize("limits", [RegistryLimits(), BundleLimits(), TrustLimits()], ids=lambda x: type(x).__name__)
def test_every_bound_is_quoted_with_its_value(limits: object) -> None:
    docs = quoted()
    for f in dataclasses.fields(limits):  # type: ignore[arg-type]
        value = getattr(limits, f.name)
        assert f.name in docs, f"{type(limits).__name__}.{f.name} is quoted in no spec or README"
        assert all(v == value for v in docs[f.name]), f"{f.name}: docs say {docs[f.name]}, code has {value}"


def test_module_bounds_are_quoted_with_their_value() -> None:
    docs = quoted()
    assert docs.get("REFERENCE_NAME_MAX_LENGTH") == [limits.REFERENCE_NAME_MAX_LENGTH]
    assert RegistryLimits().max_manifest_bytes == BundleLimits().max_manifest_bytes == limits.MANIFEST_MAX_BYTES


def test_every_quoted_bound_exists() -> None:
    known = {f.name for cls in (RegistryLimits, BundleLimits, TrustLimits) for f in dataclasses.fields(cls)}
    assert set(quoted()) <= known | {"REFERENCE_NAME_MAX_LENGTH"}


def test_no_bound_lives_outside_limits_py() -> None:
    """Module constants named like bounds belong in limits.py (one home for every limit)."""
    pattern = re.compile(r"^\s*_?[A-Z_]*(MAX|MIN|LIMIT|TIMEOUT)[A-Z_]*\s*[:=]", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src" / "dtbundle").rglob("*.py")
        if path.name != "limits.py" and "sandbox" not in path.parts and pattern.search(path.read_text())
    ]
    assert offenders == []
