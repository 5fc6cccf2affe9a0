"""The nesting limit, read on raw JSON bytes: arrays and objects count, brackets in strings do not."""

import pytest

from service.domain.errors import JsonTooDeep
from service.domain.nesting import MAX_JSON_DEPTH, check_json_depth


def deep(levels: int, inner: bytes = b"") -> bytes:
    return b"[" * levels + inner + b"]" * levels


@pytest.mark.parametrize(
    "raw",
    [
        deep(MAX_JSON_DEPTH),
        b'{"a": ' * (MAX_JSON_DEPTH - 1) + b"[]" + b"}" * (MAX_JSON_DEPTH - 1),
        b"[" + b"[1, {}], " * 1000 + b"[]]",  # many brackets, shallow
        b'["' + b"[" * 1000 + b'"]',  # brackets inside a string
        b'["\\"' + b"[" * 1000 + b'"]',  # after an escaped quote, still inside the string
        b'["' + b"{" * 1000,  # a string that never closes: text to the end
        b"]" * 1000,  # unbalanced: malformed, which the decoder says, not too deep
    ],
)
def test_json_within_the_limit_passes(raw):
    check_json_depth(raw)


@pytest.mark.parametrize(
    "raw",
    [
        deep(MAX_JSON_DEPTH + 1),
        b'{"k": ' + deep(MAX_JSON_DEPTH) + b"}",
        b'["\\\\"' + b"[" * 1000,  # an escaped backslash ends the string before the brackets
        b'[{"a": "}}}}"}, ' + deep(MAX_JSON_DEPTH) + b"]",
        b"[" * 10_000_000,
    ],
)
def test_json_deeper_than_the_limit_is_refused(raw):
    with pytest.raises(JsonTooDeep) as refused:
        check_json_depth(raw, line=3)
    assert refused.value.context == {"limit": MAX_JSON_DEPTH, "line": 3}
