"""Text convtree can keep: every string that comes in must survive PostgreSQL and UTF-8 unchanged.

PostgreSQL's `text` cannot hold U+0000, and UTF-8 cannot encode a lone surrogate (U+D800–U+DFFF
without its other half). JSON can spell both (`\\u0000`, `\\ud800`), so a request, or an export
line, carrying one is refused where it is read, naming the field, and nothing is written. Every
other character (controls, U+FFFF, characters beyond the BMP) is kept exactly as sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: str) -> bool:
    return _UNSTORABLE.search(value) is None


def why_unstorable(value: str) -> str:
    found = _UNSTORABLE.search(value)
    assert found is not None
    char = found.group()
    if char == "\x00":
        return "U+0000, which PostgreSQL text cannot hold"
    return f"a lone surrogate (U+{ord(char):04X}), which UTF-8 cannot encode"


def first_unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """The path (`metadata.a.b`, `messages[0].content`) of the first string in a decoded JSON value,
    object keys included, that cannot be kept, and the character at fault; None if every one can.
    A walk with a stack of its own, so that no depth of nesting can exhaust Python's."""
    pending: list[tuple[str, Any]] = [(path, value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, str):
            if not storable(item):
                return where or "$", why_unstorable(item)
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                name = _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)  # a path that can be sent
                inner = f"{where}.{name}" if where else name
                if not storable(key):
                    return inner, f"its key holds {why_unstorable(key)}"
                children.append((inner, child))
            pending.extend(reversed(children))  # depth first, in document order
        elif isinstance(item, list):
            pending.extend((f"{where}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None


def first_unstorable_in_json(raw: bytes | str) -> tuple[str, str] | None:
    """As `first_unstorable`, for a JSON document not yet decoded. JSON spells U+0000 and every
    surrogate only as a `\\u` escape (the raw characters are not valid JSON or not valid UTF-8), so a
    document without one is answered at once. A document that is not JSON is not looked into: its
    reader refuses it for that."""
    if (b"\\u" not in raw) if isinstance(raw, bytes) else ("\\u" not in raw):
        return None
    try:
        # The standard library's decoder, unlike msgspec's, reads lone surrogates into the string, so
        # the field at fault can be named.
        value = json.loads(raw)
    except ValueError:
        return None
    except RecursionError:
        return "$", "nesting too deep for its text to be checked"
    return first_unstorable(value)
