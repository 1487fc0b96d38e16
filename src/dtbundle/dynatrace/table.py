"""The Dynatrace component/option table: its data model, and loading ``dynatrace.toml`` (once per process).

The table is data, not code: which components exist, where each is published (and on which
public registries that name is confirmed), its tag format, the Operator versions that deploy
it, how it is signed (and, for keyless signatures, by whom), which components an
observability option needs, and where each of these facts comes from. Every field loaded
here is used: :mod:`dtbundle.dynatrace.selection` expands options into images (registries,
Operator minimums, fixed platforms, unsigned releases) and takes its keyless-verification
defaults from ``identity_regexp`` and ``issuer``; :func:`component_lines` lists the rest
(tag formats, keys, sources) for ``dtbundle dynatrace options``.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Catalog annotations that record which component (and version) an image is.
COMPONENT_ANNOTATION = "dev.dtbundle.dynatrace.component"
VERSION_ANNOTATION = "dev.dtbundle.dynatrace.version"
SIGNING_KINDS = {
    "vendor-key": "Dynatrace's cosign key (signing_key_url), not in the transparency log: --cosign-key",
    "release-key+keyless": "the key published with each release (--cosign-key), and keyless (--trusted-root)",
    "keyless": "keyless from the project's GitHub release workflow (--trusted-root)",
    "none": "not signed (the report says so; --require-signatures does not fail on it)",
    "unconfirmed": "no source says whether or how it is signed",
}
KEYLESS_KINDS = frozenset({"keyless", "release-key+keyless"})
KEY_KINDS = frozenset({"vendor-key", "release-key+keyless"})
SOURCE_GROUPS = ("repository", "tags", "since", "signing")


def minor_version(text: str) -> tuple[int, int] | None:
    """``1.8``, ``v1.8.1``, ``0.49.0`` or ``v1.8.0-rc.1`` -> (major, minor); None if it does not start so."""
    found = re.match(r"v?(\d+)\.(\d+)", text.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def patch_version(text: str) -> tuple[int, int, int] | None:
    """``0.49.0`` or ``v0.49.0`` -> (0, 49, 0); None if it does not start with MAJOR.MINOR.PATCH."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(found.group(1)), int(found.group(2)), int(found.group(3))) if found else None


@dataclass(frozen=True)
class Component:
    """One image Dynatrace publishes (``[components.<name>]``)."""

    name: str
    repository: str
    title: str
    signing: str  # a key of SIGNING_KINDS
    version_example: str
    registries: tuple[str, ...] = ("ecr", "dockerhub")  # [registries] keys where the repository name is confirmed
    tag_format: str = ""
    since_operator: str = "1.4"  # the first Operator minor that deploys it
    sources: Mapping[str, str] | None = None  # fact group (SOURCE_GROUPS) -> where the fact comes from
    builtin: bool = False  # served by the environment's built-in registry, not the public ones
    target_repository: str | None = None  # carried under this repository name instead
    platform: str | None = None  # the one platform it exists for, os/arch[/variant]
    signing_key_url: str | None = None  # vendor-key, release-key+keyless: the public key to verify with
    identity_regexp: str | None = None  # keyless: the signer's certificate identity
    issuer: str | None = None  # keyless: the signer's OIDC issuer
    signed_from_version: str | None = None  # releases before this one are not signed

    @property
    def keyless(self) -> bool:
        return self.signing in KEYLESS_KINDS


@dataclass(frozen=True)
class Option:
    """An observability option (``[options.<name>]``) and the components it needs."""

    name: str
    title: str
    components: tuple[str, ...]
    optional: tuple[str, ...] = ()
    since_operator: str = "1.4"
    source: str = ""


@dataclass(frozen=True)
class DynatraceTable:
    """The whole table: public registries by short name, components, options (in file order)."""

    registries: Mapping[str, str]
    components: Mapping[str, Component]
    options: Mapping[str, Option]

    def operator_minimum(self, option: Option, with_optional: bool = False) -> str:
        """The oldest Operator (MAJOR.MINOR) that has ``option`` and every component it brings."""
        names = option.components + (option.optional if with_optional else ())
        candidates = [option.since_operator, *(self.components[n].since_operator for n in names)]
        return max(candidates, key=lambda v: minor_version(v) or (0, 0))


@functools.cache  # a data file shipped with the package: parse it once per process
def load_table() -> DynatraceTable:
    """The table shipped with dtbundle (``dynatrace.toml`` next to this module)."""
    text = (importlib.resources.files("dtbundle.dynatrace") / "dynatrace.toml").read_text("utf-8")
    return parse_table(tomllib.loads(text))


_COMPONENT_KEYS = {
    "repository": str,
    "title": str,
    "signing": str,
    "version_example": str,
    "registries": list,
    "tag_format": str,
    "since_operator": str,
    "source": dict,
}
_COMPONENT_OPTIONAL = {
    "builtin": bool,
    "target_repository": str,
    "platform": str,
    "signing_key_url": str,
    "identity_regexp": str,
    "issuer": str,
    "signed_from_version": str,
}
_OPTION_KEYS = {"title": str, "components": list, "since_operator": str, "source": str}
_OPTION_OPTIONAL = {"optional": list}


def parse_table(data: Mapping[str, Any]) -> DynatraceTable:
    """A table from the parsed TOML document; ValueError when the data is incomplete or contradicts itself."""
    components = {}
    for name, raw in _table(data, "components").items():
        c = _fields(f"component {name}", raw, _COMPONENT_KEYS, _COMPONENT_OPTIONAL)
        components[name] = Component(
            name=name,
            repository=c["repository"],
            title=c["title"],
            signing=c["signing"],
            version_example=c["version_example"],
            registries=tuple(map(str, c["registries"])),
            tag_format=c["tag_format"],
            since_operator=c["since_operator"],
            sources={str(k): str(v) for k, v in c["source"].items()},
            builtin=c.get("builtin", False),
            target_repository=c.get("target_repository"),
            platform=c.get("platform"),
            signing_key_url=c.get("signing_key_url"),
            identity_regexp=c.get("identity_regexp"),
            issuer=c.get("issuer"),
            signed_from_version=c.get("signed_from_version"),
        )
    options = {}
    for name, raw in _table(data, "options").items():
        o = _fields(f"option {name}", raw, _OPTION_KEYS, _OPTION_OPTIONAL)
        options[name] = Option(
            name,
            o["title"],
            tuple(map(str, o["components"])),
            tuple(map(str, o.get("optional", ()))),
            o["since_operator"],
            o["source"],
        )
    table = DynatraceTable({str(k): str(v) for k, v in _table(data, "registries").items()}, components, options)
    _check(table)
    return table


def component_lines(table: DynatraceTable | None = None) -> list[str]:
    """The table as text: options (components, Operator minimum, how they are signed), then components."""
    table = table or load_table()
    lines = ["options:"]
    for option in table.options.values():
        extra = f" (optional: {', '.join(option.optional)})" if option.optional else ""
        signing = sorted({table.components[n].signing for n in option.components + option.optional})
        lines.append(f"  {option.name:<32} {option.title}: {', '.join(option.components)}{extra}")
        lines.append(f"  {'':<32} Operator {table.operator_minimum(option)}+; signing: {', '.join(signing)}")
        lines.append(f"  {'':<32} source: {option.source}")
    lines.append("components:")
    for c in table.components.values():
        where = "built-in registry" if c.builtin else ", ".join(table.registries[r] for r in c.registries)
        lines.append(f"  {c.name:<28} {c.title}; Operator {c.since_operator}+")
        lines.append(f"    image:   {c.repository}:{c.version_example} on {where}; tags: {c.tag_format}")
        signer = c.signing_key_url or ""
        if c.keyless:
            signer = f"{signer} identity {c.identity_regexp} issuer {c.issuer}".strip()
        if c.signed_from_version:
            signer += f"; releases before {c.signed_from_version} are not signed"
        lines.append(f"    signing: {c.signing}{': ' + signer if signer else ''}")
        lines.extend(f"    source ({group}): {(c.sources or {})[group]}" for group in SOURCE_GROUPS)
    lines.append("signing kinds:")
    lines.extend(f"  {kind:<20} {text}" for kind, text in SIGNING_KINDS.items())
    return lines


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"dynatrace.toml: [{key}] is missing or not a table")
    return value


def _fields(where: str, raw: Any, required: Mapping[str, type], optional: Mapping[str, type]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"dynatrace.toml: {where} is not a table")
    missing = [k for k in required if k not in raw]
    unknown = sorted(set(raw) - set(required) - set(optional))
    if missing or unknown:
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown key(s) {', '.join(unknown)}"] if unknown else []
        )
        raise ValueError(f"dynatrace.toml: {where} {' and '.join(problems)}")
    for key, value in raw.items():
        kind = {**required, **optional}[key]
        if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"dynatrace.toml: {where}: {key} must be a non-empty {kind.__name__}")
    return dict(raw)


def _check(table: DynatraceTable) -> None:
    for c in table.components.values():
        where = f"dynatrace.toml: component {c.name}"
        if c.signing not in SIGNING_KINDS:
            raise ValueError(f"{where}: unknown signing {c.signing!r}; one of {', '.join(SIGNING_KINDS)}")
        if c.keyless != (c.identity_regexp is not None and c.issuer is not None):
            raise ValueError(f"{where}: keyless signing goes with identity_regexp + issuer (and only it)")
        if (c.signing in KEY_KINDS) != (c.signing_key_url is not None):
            raise ValueError(f"{where}: signing {c.signing} goes with signing_key_url (and only key signing does)")
        if c.identity_regexp is not None:
            try:
                re.compile(c.identity_regexp)
            except re.error as exc:
                raise ValueError(f"{where}: identity_regexp does not compile: {exc}") from None
        sources = c.sources or {}
        lacking = [g for g in SOURCE_GROUPS if not sources.get(g, "").strip()]
        if lacking or set(sources) - set(SOURCE_GROUPS):
            raise ValueError(f"{where}: needs exactly source.{', source.'.join(SOURCE_GROUPS)} (lacks {lacking})")
        unknown = [r for r in c.registries if r not in table.registries]
        if unknown or (not c.registries) != c.builtin:
            raise ValueError(f"{where}: registries must name [registries] entries (none only for builtin)")
        for field, text in (("since_operator", c.since_operator), ("signed_from_version", c.signed_from_version)):
            if text is not None and minor_version(text) is None:
                raise ValueError(f"{where}: {field} {text!r} is not MAJOR.MINOR")
    for o in table.options.values():
        unknown = [n for n in o.components + o.optional if n not in table.components]
        if unknown:
            raise ValueError(f"dynatrace.toml: option {o.name} names unknown component(s) {', '.join(unknown)}")
        if not o.source.strip() or minor_version(o.since_operator) is None:
            raise ValueError(f"dynatrace.toml: option {o.name} needs a source and since_operator = MAJOR.MINOR")
