"""Windowing: which messages of a root-first path go into a model's context, as pure rules.

The caller chooses a window (the whole path, the last N messages, or a token budget); the rules
here apply it. Counting tokens needs the model's vocabulary, which lives with the model clients
(service/upstream/tokens.py); the rules take the counting function as an argument, and
service/app/window.py joins the two off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

import msgspec

from service.domain.errors import InvalidRequest
from service.domain.message import Utterance, text_of

M = TypeVar("M", bound=Utterance)

Count = Callable[[str], int]  # a text's tokens, as one model's vocabulary counts them


class FullWindow(msgspec.Struct, frozen=True, tag="full", tag_field="strategy", forbid_unknown_fields=True):
    """The whole path from the root."""


class LastWindow(msgspec.Struct, frozen=True, tag="last", tag_field="strategy", forbid_unknown_fields=True):
    """The final `messages` messages, and every system message before them."""

    messages: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class TokensWindow(msgspec.Struct, frozen=True, tag="tokens", tag_field="strategy", forbid_unknown_fields=True):
    """The newest messages that fit `max_tokens` prompt tokens (counted with the model's vocabulary),
    and every system message; the turn is refused if its own message does not fit."""

    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]


Window = FullWindow | LastWindow | TokensWindow


def last_messages(path: Sequence[M], n: int | None) -> list[M]:
    """Keep the final `n` messages of the path, and every system message before them.

    System messages set the rules of the conversation, so dropping one would change what the model
    is told to be; they are kept wherever they stand. `n=None` keeps the whole path.
    """
    if n is None or n >= len(path):
        return list(path)
    cut = len(path) - n
    return [m for i, m in enumerate(path) if i >= cut or m.role == "system"]


# OpenAI's chat format wraps each message in `<|start|>{role}<|message|>…<|end|>`: about
# 3 tokens beyond the content, and the reply is primed with 3 more
# (`<|start|>assistant<|message|>`). Other chat templates are within a few tokens of this, so
# the same constants serve as a safety margin for them.
MESSAGE_OVERHEAD = 3
REPLY_OVERHEAD = 3


def message_tokens(message: Utterance, count: Count) -> int:
    return count(text_of(message)) + MESSAGE_OVERHEAD


def context_tokens(messages: Sequence[Utterance], count: Count) -> int:
    """Tokens a request with `messages` costs before the reply, as `fit_window` reckons them."""
    return REPLY_OVERHEAD + sum(message_tokens(m, count) for m in messages)


def fit_window(messages: Sequence[M], budget: int, count: Count) -> list[M]:
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


def fit_turn(path: Sequence[M], budget: int, count: Count) -> list[M]:
    """`fit_window` for a turn, whose own message is the path's last: refused if that does not fit."""
    kept = fit_window(path, budget, count)
    if path and (not kept or kept[-1] is not path[-1]):
        raise InvalidRequest(
            "The turn's message does not fit the token window.",
            max_tokens=budget,
            tokens=context_tokens([m for m in path if m.role == "system"] + [path[-1]], count),
        )
    return kept
