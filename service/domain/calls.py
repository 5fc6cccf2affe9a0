"""Tool-call groups, as pure rules: an assistant message that asks for tools, and the tool messages
that answer its calls.

A group is an assistant message with `tool_calls` and the tool messages that follow it on a path,
one per call, in any order: the first result is a child of the assistant message, each next one a
child of the result before it. Every writer of a message asks `decide` (through tree.decide_append
or turns.decide_chain) with the group open at the new message's parent, which `ended_by` reads off
the tail of the path ending there: the nearest non-tool message and the tool messages after it.

A group is complete once every call has its result. Windows (window.py) keep a group whole, and a
model is never shown one that is not complete (`unanswered`).

When the calls of the assistant message cannot be read (its content was redacted or erased, or
the walk up a group's results stopped at MAX_RESULTS), the group is UNCHECKED: its results were
checked when they were written, and nothing is decided on what cannot be seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from service.domain.errors import DuplicateToolResult, ToolResultWithoutCall
from service.domain.message import UNSET, Utterance, tool_call_ids

# The most tool messages a walk up one group reads (the store's `call_group_tail` is bounded by it);
# a group with more results than this can be extended no further.
MAX_RESULTS = 1000


class CallGroup(msgspec.Struct, frozen=True):
    """The group open at a message: the ids of the calls its assistant message asks for, and those
    answered on the path from it to the message, in the order answered. `checked` false: UNCHECKED."""

    calls: tuple[str, ...]
    answered: tuple[str, ...] = ()
    checked: bool = True

    @property
    def pending(self) -> list[str]:
        """The calls still without a result, in the order asked for."""
        answered = set(self.answered)
        return [call for call in self.calls if call not in answered]


UNCHECKED = CallGroup((), checked=False)

# The group open at a message: a CallGroup, or None when the message ends none (it is not an
# assistant message with calls, nor a result of one).
Open = CallGroup | None


def opened(message: Utterance) -> Open:
    """The group `message` opens: its calls, if it is an assistant message with any."""
    ids = tool_call_ids(message) if message.role == "assistant" else []
    return CallGroup(tuple(ids)) if ids else None


def check(group: Open, message: Utterance) -> None:
    """Refuse a tool message that does not answer a call of `group` (the group open at its parent),
    or answers one already answered there. Any other message is not a result: nothing to check."""
    if message.role != "tool":
        return
    call_id = message.tool_call_id
    if call_id is UNSET:  # message.check refuses it first, where a message comes from a caller
        raise ToolResultWithoutCall("A tool message needs the `tool_call_id` of the call it answers.")
    if group is not None and not group.checked:
        return
    if group is None or call_id not in group.calls:
        raise ToolResultWithoutCall(
            f"Tool call id {call_id!r} answers no call of the assistant message this tool message follows.",
            tool_call_id=call_id,
        )
    if call_id in group.answered:
        raise DuplicateToolResult(f"Tool call id {call_id!r} already has its result here.", tool_call_id=call_id)


def after(group: Open, message: Utterance) -> Open:
    """The group open at `message`, a child of a message at which `group` is open (as `check`ed)."""
    if message.role != "tool":
        return opened(message)
    if group is None or not group.checked:
        return UNCHECKED
    return msgspec.structs.replace(group, answered=(*group.answered, message.tool_call_id))


def decide(group: Open, message: Utterance) -> Open:
    """`check` `message` under a parent at which `group` is open, and the group open at `message`."""
    check(group, message)
    return after(group, message)


def ended_by(tail: Sequence[Utterance]) -> Open:
    """The group open at the last message of `tail`: the root-first end of a path, from the nearest
    message above it that is not a tool message (the store's `call_group_tail`). A message whose
    content is withheld (`redacted`) opens an UNCHECKED group; so does a tail with no such message
    (a walk that stopped at MAX_RESULTS)."""
    if not tail:
        return None
    first = tail[0]
    if first.role == "tool":
        return UNCHECKED
    group = UNCHECKED if _withheld(first) and first.role == "assistant" else opened(first)
    for message in tail[1:]:
        group = after(group, message)
    return group


def _withheld(message: Utterance) -> bool:
    redacted: Any = getattr(message, "redacted", None)  # views.Message: a redaction withholds the calls
    return redacted is not None


# --- groups on a path -----------------------------------------------------------------------------


def units(path: Sequence[Any]) -> list[tuple[int, int]]:
    """The path (root first) cut into units, as (start, end) index ranges: each message that is not a
    tool message starts one, and the tool messages after it belong to it. An assistant message with
    calls and its results are one unit; every other message is a unit of its own (a tool message at
    the very start of a path, which the tree rule cannot make, too)."""
    cuts: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(path) + 1):
        if i == len(path) or path[i].role != "tool":
            cuts.append((start, i))
            start = i
    return cuts


def unanswered(path: Sequence[Utterance]) -> list[str]:
    """The ids of the calls on `path` (root first) that have no result on it, in path order: a model
    shown `path` would see a call without its result. A withheld (redacted) assistant message's
    calls cannot be seen, so are not counted.

    One pass that looks at nothing but a message's role until it meets an assistant message with
    calls: every context read asks this of its whole path, most of which has none."""
    missing: list[str] = []
    calls: list[str] = []  # the calls of the unit being read (its assistant message's)
    answered: set[Any] = set()
    for message in path:
        if message.role == "tool":
            answered.add(message.tool_call_id)
            continue
        if calls:
            missing.extend(call for call in calls if call not in answered)
            calls = []
        if message.role == "assistant" and message.tool_calls is not UNSET and not _withheld(message):
            calls = tool_call_ids(message)
            answered = set()
    if calls:
        missing.extend(call for call in calls if call not in answered)
    return missing
