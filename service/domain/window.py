"""Windowing: which messages of a root-first path go into a model's context, as pure rules.

The caller chooses a window (the whole path, the last N messages, or a token budget); the rules
here apply it. Counting tokens needs the model's vocabulary, which lives with the model clients
(service/upstream/tokens.py); the rules take the counting function as an argument, and
service/app/window.py joins the two off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Protocol, TypeVar

import msgspec

from service.domain.calls import unanswered, units
from service.domain.errors import IncompleteToolCalls, InvalidRequest
from service.domain.message import Utterance

M = TypeVar("M", bound=Utterance)


class Said(Protocol):
    """Whatever a path is cut by: who says each message."""

    @property
    def role(self) -> str: ...


S = TypeVar("S", bound=Said)

# A message's tokens, as one model's vocabulary counts them (its text, parts and tool calls:
# service/upstream/tokens.py, message_counter_for), before the overhead of its place in the chat.
Count = Callable[[Utterance], int]


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


def last_messages(path: Sequence[S], n: int | None) -> list[S]:
    """Keep the final `n` messages of the path, and every system message before them.

    System messages set the rules of the conversation, so dropping one would change what the model
    is told to be; they are kept wherever they stand. A tool-call group (an assistant message with
    calls and their results, calls.units) is kept whole: where the cut falls inside one, the window
    starts at its assistant message, so it may hold a few more than `n`, and never starts with a
    tool result. `n=None` keeps the whole path.
    """
    if n is None or n >= len(path):
        return list(path)
    cut = _unit_start(path, len(path) - n)
    return [m for i, m in enumerate(path) if i >= cut or m.role == "system"]


def _unit_start(path: Sequence[Said], i: int) -> int:
    """The start of the unit (calls.units) message `i` belongs to."""
    while i > 0 and path[i].role == "tool":
        i -= 1
    return i


# OpenAI's chat format wraps each message in `<|start|>{role}<|message|>…<|end|>`: about
# 3 tokens beyond the content, and the reply is primed with 3 more
# (`<|start|>assistant<|message|>`). Other chat templates are within a few tokens of this, so
# the same constants serve as a safety margin for them.
MESSAGE_OVERHEAD = 3
REPLY_OVERHEAD = 3


def message_tokens(message: Utterance, count: Count) -> int:
    return count(message) + MESSAGE_OVERHEAD


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
    - A tool-call group (an assistant message with calls and their results, calls.units) is kept
      or left out whole: a model is never shown a call without its result, nor a result without
      its call.
    - Messages are never cut. If the newest message does not fit, it is left out too; callers
      check `result[-1:] == messages[-1:]` when they need it (e.g. to refuse the turn).

    `budget` is what the prompt may cost: the model's context length minus the tokens
    reserved for the reply.
    """
    used = REPLY_OVERHEAD + sum(message_tokens(m, count) for m in messages if m.role == "system")
    keep = [False] * len(messages)
    for start, end in reversed(units(messages)):
        if messages[start].role == "system":
            continue  # counted above, and kept below
        cost = sum(message_tokens(m, count) for m in messages[start:end])
        if used + cost > budget:
            break
        used += cost
        keep[start:end] = [True] * (end - start)
    # The loop may stop before reaching older system messages; they are kept all the same.
    return [m for i, m in enumerate(messages) if keep[i] or m.role == "system"]


def fit_turn(path: Sequence[M], budget: int, count: Count) -> list[M]:
    """`fit_window` for a turn, whose own message is the path's last: refused if that does not fit
    (with the results before it of the calls it answers, if it is a tool message)."""
    kept = fit_window(path, budget, count)
    if path and (not kept or kept[-1] is not path[-1]):
        last = _unit_start(path, len(path) - 1)
        raise InvalidRequest(
            "The turn's message does not fit the token window.",
            max_tokens=budget,
            tokens=context_tokens([m for m in path[:last] if m.role == "system"] + list(path[last:]), count),
        )
    return kept


def complete(messages: Sequence[M]) -> Sequence[M]:
    """`messages`, as a model may be shown them: refused (IncompleteToolCalls, naming the calls) if
    they hold a tool call without its result."""
    missing = unanswered(messages)
    if missing:
        raise IncompleteToolCalls(
            f"The context holds tool calls without their results ({', '.join(repr(c) for c in missing)}): "
            "append their tool messages first, or send them as the turn's own messages.",
            tool_call_ids=missing,
        )
    return messages
