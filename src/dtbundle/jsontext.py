"""The one way dtbundle parses JSON it did not write (bundles, registries, signatures, services).

Python's parser builds whatever the text describes: twenty million ``{}`` in a 60 MB catalog
are 1.5 GB of dicts, and ``[[[[…]]]]`` is a RecursionError (not a ValueError, so it would
escape every "this is not valid JSON" handler as an internal error). :func:`loads` measures
the text first, at C speed and without building anything, against a :class:`JsonLimits`:

- size: at most ``max_bytes``;
- nesting: at most ``max_depth`` levels of arrays and objects;
- elements: the ``{``, ``[`` and ``,`` outside strings (an upper bound of the values and
  members the parser creates) number at most ``max_elements``, and at most
  ``max_elements_per_kib`` per started KiB of text. An element costs the parser 60 to ~170
  bytes (an object member with a new key), so a parse takes a small multiple of the text's size.

Anything beyond a bound, like anything malformed, is a ValueError whose message says which
bound; callers turn it into their own error class.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from dtbundle.limits import JSON_DEFAULT, JsonLimits

_CHUNK = 1 << 18  # measured in pieces of this size: little memory beyond the text (a copy if it has escapes)
# A string (after escaped backslashes and quotes are gone), or the start of one that goes on in the
# next piece: every match attempt succeeds, so stripping strings is one linear pass.
_STRING = re.compile(rb'"[^"]*(?:"|\Z)')
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1, +1, -1, -1 as signed bytes


def check(data: bytes, limits: JsonLimits) -> None:
    """Raise ValueError if UTF-8 JSON text ``data`` exceeds ``limits`` (it may still be malformed)."""
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        raise ValueError(f"JSON text is {len(data)} bytes, above the limit of {limits.max_bytes}")
    allowed = min(limits.max_elements, limits.max_elements_per_kib * (len(data) // 1024 + 1))
    if b"\\" in data:  # escapes pair up from the left: drop escaped backslashes, then escaped quotes
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    elements = depth = 0
    inside = False  # whether the piece starts inside a string
    for start in range(0, len(data), _CHUNK):
        piece = data[start : start + _CHUNK]
        if inside:
            piece = b'"' + piece
        inside = piece.count(b'"') % 2 == 1
        structure = _STRING.sub(b"", piece) if b'"' in piece else piece
        opening = structure.count(b"{") + structure.count(b"[")
        elements += opening + structure.count(b",")
        if elements > allowed:
            raise ValueError(
                f"JSON text has more than {allowed} elements, the limit for its size "
                f"(at most {limits.max_elements_per_kib} per KiB and {limits.max_elements} in all)"
            )
        brackets = structure.translate(None, _NOT_BRACKETS)
        if brackets:
            steps = memoryview(brackets.translate(_DEPTH_STEPS)).cast("b")
            if max(accumulate(steps, initial=depth)) > limits.max_depth:
                raise ValueError(f"JSON nested more than {limits.max_depth} levels deep")
            depth += 2 * opening - len(brackets)


def loads(data: str | bytes | bytearray, limits: JsonLimits = JSON_DEFAULT) -> Any:
    """``json.loads`` of text within ``limits``, checked before anything is built; ValueError otherwise."""
    if isinstance(data, str):
        check(data.encode("utf-8", "surrogatepass"), limits)
        text = data
    else:  # decoded as json.loads decodes bytes; measured as UTF-8, where a quote or bracket byte is
        raw = bytes(data)  # always that character and never part of another
        encoding = json.detect_encoding(raw)
        if not encoding.startswith("utf-8"):
            raw = raw.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
        check(raw, limits)
        text = raw.decode("utf-8-sig" if encoding == "utf-8-sig" else "utf-8", "surrogatepass")
        del raw
    try:
        return json.loads(text)
    except RecursionError:  # only with a max_depth above what the interpreter's stack allows
        raise ValueError("JSON nested too deeply") from None
