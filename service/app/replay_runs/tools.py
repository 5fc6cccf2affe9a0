"""The tool rule of replay runs: a recorded tool result is reused, a tool is never run again.

When a replayed model asks for tools, each call is answered from the source path: a call to the
same tool with the same arguments (compared as JSON values, whatever their spacing or key order)
as a call the path recorded gets that call's recorded result, each recorded result used at most
once and in the order recorded. A call the path never recorded stops the run's path there, with
status `stopped` and error `unrecorded_tool`, naming the tool: convtree does not execute tools,
so it cannot know what that call would have returned.

Messages are text only until tool calls and results become messages of their own: until then a
model's reply holds no calls (`answer` is given none, and the run goes on), and this rule is the
seam the run loop calls after every reply (runner.py).
"""

from __future__ import annotations

from typing import Any

import msgspec


class ToolCall(msgspec.Struct, frozen=True):
    """A tool the model asked for, with its arguments (a JSON value)."""

    name: str
    arguments: Any


class Recorded(msgspec.Struct, frozen=True):
    """A call the source path recorded, and the result it got."""

    call: ToolCall
    result: str


class Reused(msgspec.Struct, frozen=True):
    """Every call answered from the path: the results, in the order the calls were made."""

    results: list[str]


class Unrecorded(msgspec.Struct, frozen=True):
    """A call the path never recorded: the run's path stops here."""

    call: ToolCall

    @property
    def detail(self) -> str:
        return (
            f"The model called {self.call.name!r} with arguments the replayed path never recorded; "
            "tools are not run again."
        )


def _key(call: ToolCall) -> tuple[str, bytes]:
    # Arguments compared as values: the JSON encoding with keys sorted.
    return call.name, msgspec.json.encode(call.arguments, order="sorted")


def answer(calls: list[ToolCall], recorded: list[Recorded]) -> Reused | Unrecorded:
    """Answer `calls` from `recorded`, or name the first call that cannot be."""
    available: dict[tuple[str, bytes], list[str]] = {}
    for r in recorded:
        available.setdefault(_key(r.call), []).append(r.result)
    results = []
    for call in calls:
        left = available.get(_key(call))
        if not left:
            return Unrecorded(call)
        results.append(left.pop(0))
    return Reused(results)
