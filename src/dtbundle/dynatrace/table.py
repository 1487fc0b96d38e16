"""The Dynatrace component/option table: its data model, and loading ``dynatrace.toml`` (once per process).

The table is data, not code: which components exist, where each is published, how each
is signed (and, for keyless signatures, by whom), and which components an observability
option needs. Every field loaded here is used: :mod:`dtbundle.dynatrace.selection` expands
options into images and takes its keyless-verification default from ``identity_regexp`` and
``issuer``; :func:`component_lines` lists the table for ``dtbundle dynatrace options``.
"""

from __future__ import annotations

import functools
import importlib.resources
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Catalog annotations that record which component (and version) an image is.
COMPONENT_ANNOTATION = "dev.dtbundle.dynatrace.component"
VERSION_ANNOTATION = "dev.dtbundle.dynatrace.version"
SIGNING_KINDS = frozenset({"vendor-key", "keyless", "none"})


@dataclass(frozen=True)
class Component:
    """One image Dynatrace publishes (``[components.<name>]``)."""

    name: str
    repository: str
    title: str
    signing: str  # "vendor-key", "keyless" or "none"
    version_example: str
    builtin: bool = False  # served by the environment's built-in registry, not the public ones
    target_repository: str | None = None  # carried under this repository name instead
    platform: str | None = None  # the one platform it exists for, os/arch[/variant]
    identity_regexp: str | None = None  # keyless: the signer's certificate identity
    issuer: str | None = None  # keyless: the signer's OIDC issuer


@dataclass(frozen=True)
class Option:
    """An observability option (``[options.<name>]``) and the components it needs."""

    name: str
    title: str
    components: tuple[str, ...]
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class DynatraceTable:
    """The whole table: public registries by short name, components, options (in file order)."""

    registries: Mapping[str, str]
    components: Mapping[str, Component]
    options: Mapping[str, Option]


@functools.cache  # a data file shipped with the package: parse it once per process
def load_table() -> DynatraceTable:
    """The table shipped with dtbundle (``dynatrace.toml`` next to this module)."""
    text = (importlib.resources.files("dtbundle.dynatrace") / "dynatrace.toml").read_text("utf-8")
    return parse_table(tomllib.loads(text))


def parse_table(data: Mapping[str, Any]) -> DynatraceTable:
    """A table from the parsed TOML document; ValueError when the data contradicts itself."""
    raw_components = _table(data, "components")
    raw_options = _table(data, "options")
    components = {
        name: Component(
            name=name,
            repository=c["repository"],
            title=c["title"],
            signing=c["signing"],
            version_example=c["version_example"],
            builtin=c.get("builtin", False),
            target_repository=c.get("target_repository"),
            platform=c.get("platform"),
            identity_regexp=c.get("identity_regexp"),
            issuer=c.get("issuer"),
        )
        for name, c in raw_components.items()
    }
    options = {
        name: Option(name, o["title"], tuple(o["components"]), tuple(o.get("optional", ())))
        for name, o in raw_options.items()
    }
    table = DynatraceTable({str(k): str(v) for k, v in _table(data, "registries").items()}, components, options)
    _check(table)
    return table


def component_lines(table: DynatraceTable | None = None) -> list[str]:
    """The table as text: each option with its title and components, then each component."""
    table = table or load_table()
    lines = ["options:"]
    for option in table.options.values():
        extra = f" (optional: {', '.join(option.optional)})" if option.optional else ""
        lines.append(f"  {option.name:<32} {option.title}: {', '.join(option.components)}{extra}")
    lines.append("components:")
    for component in table.components.values():
        where = "built-in registry" if component.builtin else "public registries"
        lines.append(f"  {component.name:<26} {component.repository:<36} {component.signing:<10} {where}")
    return lines


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"dynatrace.toml: [{key}] is missing or not a table")
    return value


def _check(table: DynatraceTable) -> None:
    for c in table.components.values():
        if c.signing not in SIGNING_KINDS:
            raise ValueError(f"dynatrace.toml: component {c.name}: unknown signing {c.signing!r}")
        if (c.signing == "keyless") != (c.identity_regexp is not None and c.issuer is not None):
            raise ValueError(f"dynatrace.toml: component {c.name}: keyless signing goes with identity_regexp + issuer")
    for o in table.options.values():
        unknown = [n for n in o.components + o.optional if n not in table.components]
        if unknown:
            raise ValueError(f"dynatrace.toml: option {o.name} names unknown component(s) {', '.join(unknown)}")
