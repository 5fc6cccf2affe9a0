"""`echo`: a built-in offline provider for tests and demos; it is not a model.

It replies "echo: " followed by the last user message, streamed word by word, without any
network. Token counts are whitespace-separated words (not a real tokenizer), so they are
deterministic. `max_tokens` (or `max_completion_tokens`) cuts the reply after that many words with
finish_reason "length".

With `tools` (and `tool_choice` not "none"), a request whose last message is the user's is answered
with calls instead, finish_reason "tool_calls": one call of each function tool (only the first
with `parallel_tool_calls: false`, only the named one when `tool_choice` names one), ids
`call_echo_0`, `call_echo_1`, … and arguments `{"text": <the user's text>}`. A request whose last
message is a tool result is answered "echo: " and that result, so a tool round trip can be shown
offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from service.domain.message import text_of
from service.upstream.base import ChatRequest, Finished, StreamItem, TextDelta, ToolCallDelta

MODEL = "echo"


def reply_words(request: ChatRequest) -> list[str]:
    last = request.messages[-1] if request.messages else None
    if last is not None and last.role == "tool":
        return ["echo:", *text_of(last).split()]
    last_user = next((text_of(m) for m in reversed(request.messages) if m.role == "user"), "")
    return ["echo:", *last_user.split()]


def tool_calls(request: ChatRequest) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of the calls echo answers `request` with; none when it answers in words."""
    p = request.params
    if not p.tools or p.tool_choice == "none" or not request.messages or request.messages[-1].role != "user":
        return []
    names = [
        str(t["function"]["name"])
        for t in p.tools
        if t.get("type") == "function" and isinstance(t.get("function"), dict) and "name" in t["function"]
    ]
    chosen = p.tool_choice.get("function") if isinstance(p.tool_choice, dict) else None
    if isinstance(chosen, dict):
        names = [n for n in names if n == chosen.get("name")]
    if p.parallel_tool_calls is False:
        names = names[:1]
    arguments = msgspec.json.encode({"text": text_of(request.messages[-1])}).decode()
    return [(f"call_echo_{i}", name, arguments) for i, name in enumerate(names)]


def _words(message: Any) -> int:
    return len(text_of(message).split())


class EchoProvider:
    """`delay` (seconds between words) lets demos and cancellation tests see a real stream."""

    def __init__(self, name: str = "echo", *, delay: float = 0.0) -> None:
        self.name = name
        self._delay = delay

    def __repr__(self) -> str:
        return f"EchoProvider(name={self.name!r})"

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamItem, None]:
        prompt_tokens = sum(_words(m) for m in request.messages)
        calls = tool_calls(request)
        if calls:
            for index, (id, name, arguments) in enumerate(calls):
                await asyncio.sleep(self._delay)
                yield ToolCallDelta(index, id, "function", name, arguments)
            yield Finished("tool_calls", request.model or MODEL, None, prompt_tokens, len(calls))
            return
        words = reply_words(request)
        limit = request.params.token_limit
        finish_reason = "stop"
        if limit is not None and len(words) > limit:
            words, finish_reason = words[:limit], "length"
        for i, word in enumerate(words):
            # Always yield control, so a cancelled task stops here even with delay=0.
            await asyncio.sleep(self._delay)
            yield TextDelta(word if i == 0 else " " + word)
        yield Finished(
            finish_reason=finish_reason,
            model=request.model or MODEL,
            response_id=None,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(words),
        )

    async def list_models(self) -> list[str]:
        return [MODEL]

    async def aclose(self) -> None:
        return None
