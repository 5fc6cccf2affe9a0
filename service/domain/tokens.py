"""Context windowing: which messages of a path fit a model's token budget. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

# OpenAI's chat format wraps each message in `<|start|>{role}<|message|>…<|end|>`: about
# 3 tokens beyond the content, and the reply is primed with 3 more
# (`<|start|>assistant<|message|>`). Other chat templates are within a few tokens of this, so
# the same constants serve as a safety margin for them.
MESSAGE_OVERHEAD = 3
REPLY_OVERHEAD = 3


class Message(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


M = TypeVar("M", bound=Message)


def message_tokens(message: Message, count: Callable[[str], int]) -> int:
    return count(message.content) + MESSAGE_OVERHEAD


def context_tokens(messages: Sequence[Message], count: Callable[[str], int]) -> int:
    """Tokens a request with `messages` costs before the reply, as `fit_window` reckons them."""
    return REPLY_OVERHEAD + sum(message_tokens(m, count) for m in messages)


def fit_window(messages: Sequence[M], budget: int, count: Callable[[str], int]) -> list[M]:
    """The messages to send, root first, costing at most `budget` tokens where possible.

    - Every `system` message is kept, in place, even if they alone exceed the budget: dropping
      instructions silently would change the model's behaviour, not just its memory.
    - Of the other messages, the longest run of the *latest* ones that fits is kept. The run
      is contiguous: once one message does not fit, no older one is taken, so the model never
      sees a conversation with a hole in it.
    - Messages are never cut. If the newest message does not fit, it is left out too; callers
      check `result[-1:] == messages[-1:]` when they need it (e.g. to refuse the turn).

    `budget` is what the prompt may cost: the model's context length minus the tokens
    reserved for the reply.
    """
    used = REPLY_OVERHEAD + sum(message_tokens(m, count) for m in messages if m.role == "system")
    keep = [False] * len(messages)
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "system":
            keep[i] = True
            continue
        cost = message_tokens(messages[i], count)
        if used + cost > budget:
            break
        used += cost
        keep[i] = True
    # The loop may stop before reaching older system messages; they are kept all the same.
    return [m for i, m in enumerate(messages) if keep[i] or m.role == "system"]
