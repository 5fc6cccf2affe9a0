"""`echo`: a built-in offline provider for tests and demos; it is not a model.

It replies "echo: " followed by the last user message, streamed word by word, without any
network. Token counts are whitespace-separated words (not a real tokenizer), so they are
deterministic. `max_tokens` cuts the reply after that many words with finish_reason "length".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from service.domain.message import text_of
from service.upstream.base import ChatRequest, Finished, StreamItem, TextDelta

MODEL = "echo"


def reply_words(request: ChatRequest) -> list[str]:
    last_user = next((text_of(m) for m in reversed(request.messages) if m.role == "user"), "")
    return ["echo:", *last_user.split()]


class EchoProvider:
    """`delay` (seconds between words) lets demos and cancellation tests see a real stream."""

    def __init__(self, name: str = "echo", *, delay: float = 0.0) -> None:
        self.name = name
        self._delay = delay

    def __repr__(self) -> str:
        return f"EchoProvider(name={self.name!r})"

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamItem, None]:
        words = reply_words(request)
        limit = request.params.max_tokens
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
            prompt_tokens=sum(len(text_of(m).split()) for m in request.messages),
            completion_tokens=len(words),
        )

    async def list_models(self) -> list[str]:
        return [MODEL]

    async def aclose(self) -> None:
        return None
