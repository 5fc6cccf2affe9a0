"""Windowing: which messages of a root-first path go into a model's context."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class HasRole(Protocol):
    @property
    def role(self) -> str: ...


M = TypeVar("M", bound=HasRole)


def last_messages(path: Sequence[M], n: int | None) -> list[M]:
    """Keep the final `n` messages of the path, and every system message before them.

    System messages set the rules of the conversation, so dropping one would change what the model
    is told to be; they are kept wherever they stand. `n=None` keeps the whole path.
    """
    if n is None or n >= len(path):
        return list(path)
    cut = len(path) - n
    return [m for i, m in enumerate(path) if i >= cut or m.role == "system"]
