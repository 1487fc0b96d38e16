"""Platforms (``os/arch[/variant]``): parsing, matching a filter, reading them from JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dtbundle.errors import UsageError


@dataclass(frozen=True)
class Platform:
    """A platform of an image, or a ``--platform`` filter (a filter without variant matches every variant)."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64`` or ``linux/arm/v7``, as given to ``--platform``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: use os/arch or os/arch/variant, e.g. linux/arm64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, obj: Any) -> Platform | None:
        if not isinstance(obj, dict) or "os" not in obj or "architecture" not in obj:
            return None
        variant = obj.get("variant")
        return cls(str(obj["os"]), str(obj["architecture"]), str(variant) if variant else None)

    def to_json(self) -> dict[str, str]:
        obj = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            obj["variant"] = self.variant
        return obj

    def matches(self, platform: Platform) -> bool:
        """Whether ``platform`` is one this filter selects."""
        return (
            platform.os == self.os
            and platform.architecture == self.architecture
            and (self.variant is None or platform.variant == self.variant)
        )

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text
