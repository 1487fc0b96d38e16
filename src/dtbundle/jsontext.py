"""The one way dtbundle parses JSON it did not write (bundles, registries, signatures, services).

Python's parser raises RecursionError on deeply nested input (``[[[[…]]]]``), which is not a
ValueError and so escapes every "this is not valid JSON" handler as an internal error, before
a bundle's signature is even checked. Here it is a ValueError like any other malformed input.
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads``, with nesting too deep for the parser reported as a ValueError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
