"""How deep client JSON may nest, checked on the raw bytes before any decoder recurses into them."""

from __future__ import annotations

import itertools
import re
from array import array

from service.domain.errors import JsonTooDeep

# Deeper than any request convtree defines needs (a message's metadata sits two levels down), far
# below the ~1,000 levels at which a recursive decoder or encoder runs out of stack.
MAX_JSON_DEPTH = 64

# Escapes first (an escaped backslash, then an escaped quote), so that a string is then plain text
# between two quotes, closed or running to the end: its brackets are text, not nesting.
_STRING = re.compile(rb'"[^"]*"?')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", bytes([1, 1, 255, 255]))  # +1 / -1 as signed bytes
_CHUNK = 1 << 16


def check_json_depth(raw: bytes, **context: object) -> None:
    """Refuse a JSON text nesting deeper than MAX_JSON_DEPTH, before anything decodes it."""
    if _deeper_than_limit(raw):
        raise JsonTooDeep(
            f"The JSON nests deeper than {MAX_JSON_DEPTH} levels of arrays and objects.",
            limit=MAX_JSON_DEPTH,
            **context,
        )


def _deeper_than_limit(raw: bytes) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False  # the common case: too few brackets to nest too deep, wherever they stand
    if b'"' in raw:
        raw = _STRING.sub(b"", raw.replace(b"\\\\", b"").replace(b'\\"', b""))
    brackets = raw.translate(_STEPS, _NOT_BRACKETS)
    if brackets.count(1) <= MAX_JSON_DEPTH:
        return False
    # The running depth, chunk by chunk (each summed in C), stopping at the first level too deep.
    level = 0
    steps = array("b", brackets)
    for start in range(0, len(steps), _CHUNK):
        levels = list(itertools.accumulate(steps[start : start + _CHUNK], initial=level))
        if max(levels) > MAX_JSON_DEPTH:
            return True
        level = levels[-1]
    return False
