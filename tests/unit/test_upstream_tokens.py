"""Offline token counters: real OpenAI vocabularies, chosen per model, no network."""

from __future__ import annotations

import socket

import pytest

from service.upstream.tokens import counter_for, encoding_name_for, estimate_tokens

MIXED = "Привет, как дела? 你好世界"


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("openai/gpt-4.1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("llama3.2:latest", "o200k_base"),  # no offline llama vocabulary: the approximation
    ],
)
def test_encoding_is_chosen_by_model_family(model: str, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_counts_match_openais_tokenizers_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("token counting tried to open a socket")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    # Reference counts from OpenAI's tiktoken: "hello world" is [24912, 2375] in o200k_base
    # and [15339, 1917] in cl100k_base.
    assert counter_for("gpt-4o")("hello world") == 2
    assert counter_for("gpt-4")("hello world") == 2
    assert counter_for("gpt-4o")(MIXED) == 9
    assert counter_for("gpt-4")(MIXED) == 14


def test_special_token_text_is_counted_as_plain_text() -> None:
    # User text containing "<|endoftext|>" must be counted, not rejected or treated as one token.
    assert counter_for("gpt-4o")("<|endoftext|>") == 7


def test_estimate_is_a_quarter_of_utf8_bytes_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("é") == 1  # 2 bytes
