"""Context windows: which messages of a turn's path are sent to the model, chosen by the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, TypeVar

import msgspec

from service.domain.errors import InvalidRequest
from service.domain.tokens import Message as Windowed
from service.domain.tokens import context_tokens, fit_window
from service.domain.window import last_messages
from service.upstream.tokens import counter_for

M = TypeVar("M", bound=Windowed)


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


async def apply(window: Window, path: Sequence[M], model: str) -> list[M]:
    """The messages of `path` (root first, the turn's own message last) that go to the model."""
    match window:
        case FullWindow():
            return list(path)
        case LastWindow(messages=n):
            return last_messages(path, n)
        case TokensWindow(max_tokens=budget):
            # Off the event loop: the first use of a vocabulary loads it (~0.2 s), and counting a
            # long context is pure-Python work.
            return await asyncio.to_thread(_fit, path, budget, model)
    raise AssertionError(f"unknown window {window!r}")


def _fit(path: Sequence[M], budget: int, model: str) -> list[M]:
    count = counter_for(model)
    kept = fit_window(path, budget, count)
    if path and (not kept or kept[-1] is not path[-1]):
        raise InvalidRequest(
            "The turn's message does not fit the token window.",
            max_tokens=budget,
            tokens=context_tokens([m for m in path if m.role == "system"] + [path[-1]], count),
        )
    return kept
