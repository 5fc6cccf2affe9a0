"""Context windows for a turn: the domain's rules (service/domain/window.py), counted with the model's
vocabulary (service/upstream/tokens.py), off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

from service.domain.message import Utterance
from service.domain.window import FullWindow, LastWindow, TokensWindow, Window, complete, fit_turn, last_messages
from service.upstream.tokens import message_counter_for

__all__ = ["FullWindow", "LastWindow", "TokensWindow", "Window", "apply"]

M = TypeVar("M", bound=Utterance)


async def apply(window: Window, path: Sequence[M], model: str) -> list[M]:
    """The messages of `path` (root first, the turn's own message last) that go to the model; a
    window holding a tool call without its result is refused (IncompleteToolCalls)."""
    return list(complete(await _windowed(window, path, model)))


async def _windowed(window: Window, path: Sequence[M], model: str) -> list[M]:
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
    return fit_turn(path, budget, message_counter_for(model))
