"""A small YAML writer for the DynaKube output: nested mappings, lists and strings, with comment
lines (:class:`Note` keys) where a reader needs to be told something. No YAML library needed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_SAFE = re.compile(r"[\w/.][\w./@:+-]*")  # no indicator first, no space, no "#"
_RESERVED = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}


class Note(str):
    """A mapping key that is written as a ``# comment`` line at its place (its value is ignored)."""

    __slots__ = ()


def scalar(value: object) -> str:
    """A string, plain when YAML reads it back as the same string, else double-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    # A letter first, or a "/" or "@" inside, and YAML cannot read it as a number, date, bool or null.
    readable = (text[:1].isalpha() and text.lower() not in _RESERVED) or "/" in text or "@" in text
    if _SAFE.fullmatch(text) and readable and not text.endswith(":"):
        return text
    return json.dumps(text)


def lines(node: Mapping[str, Any], indent: int = 0) -> list[str]:
    """Block-style YAML lines for a mapping."""
    pad = " " * indent
    out: list[str] = []
    for key, value in node.items():
        if isinstance(key, Note):
            out.append(f"{pad}# {key}")
        elif isinstance(value, Mapping):
            if any(not isinstance(k, Note) for k in value):
                out += [f"{pad}{key}:", *lines(value, indent + 2)]
            else:
                out += [f"{pad}  # {k}" for k in value] + [f"{pad}{key}: {{}}"]
        elif isinstance(value, list | tuple):
            out.append(f"{pad}{key}:" if value else f"{pad}{key}: []")
            for item in value:
                if isinstance(item, Mapping):
                    sub = lines(item, indent + 4)
                    out.append(f"{pad}  - {sub[0].lstrip()}")
                    out += sub[1:]
                else:
                    out.append(f"{pad}  - {scalar(item)}")
        else:
            out.append(f"{pad}{key}: {scalar(value)}")
    return out
