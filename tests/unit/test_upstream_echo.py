"""The offline `echo` provider: deterministic, streamed, no network."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from service.upstream import ChatMessage, ChatParams, ChatRequest, EchoProvider, Finished, TextDelta

REQUEST = ChatRequest(
    model="echo",
    messages=[
        ChatMessage("system", "ignored here"),
        ChatMessage("user", "hello there world"),
        ChatMessage("assistant", "x"),
    ],
)


async def collect(provider: EchoProvider, request: ChatRequest = REQUEST) -> list[object]:
    return [item async for item in provider.stream(request)]


def test_echoes_the_last_user_message_word_by_word_with_usage() -> None:
    assert asyncio.run(collect(EchoProvider())) == [
        TextDelta("echo:"),
        TextDelta(" hello"),
        TextDelta(" there"),
        TextDelta(" world"),
        Finished(finish_reason="stop", model="echo", response_id=None, prompt_tokens=6, completion_tokens=4),
    ]


def test_is_deterministic_and_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("echo tried to open a socket")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    first = asyncio.run(collect(EchoProvider()))
    second = asyncio.run(collect(EchoProvider()))
    assert first == second
    assert asyncio.run(EchoProvider().list_models()) == ["echo"]


def test_max_tokens_cuts_the_reply_with_length() -> None:
    request = ChatRequest("echo", REQUEST.messages, ChatParams(max_tokens=2))
    items = asyncio.run(collect(EchoProvider(), request))
    assert items[:-1] == [TextDelta("echo:"), TextDelta(" hello")]
    assert items[-1] == Finished(finish_reason="length", model="echo", prompt_tokens=6, completion_tokens=2)


def test_no_user_message_still_finishes() -> None:
    request = ChatRequest("echo", [ChatMessage("system", "s")])
    assert asyncio.run(collect(EchoProvider(), request))[0] == TextDelta("echo:")


def test_cancelling_stops_the_stream() -> None:
    async def go() -> list[object]:
        seen: list[object] = []

        async def consume() -> None:
            async for item in EchoProvider(delay=0.05).stream(REQUEST):
                seen.append(item)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.07)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return seen

    seen = asyncio.run(go())
    assert 1 <= len(seen) < 5 and not any(isinstance(i, Finished) for i in seen)
