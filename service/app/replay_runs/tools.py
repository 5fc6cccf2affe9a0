"""The tool rule of replay runs: a recorded tool result is reused, a tool is never run.

A turn of the source path is its user message and the model steps under it: each assistant
message, with the tool messages that answer its calls on the path (`turn_steps`). The run asks
the new model step by step, and each answer is resolved against the original step at the same
place (step k of the new turn against step k of the original one), by `resolve`:

- `Replied`: the answer calls no tool, and neither did the original step: it is the turn's reply.
- `Diverged`: the answer calls no tool, where the original step called tools: it is the turn's
  reply all the same, and the run goes on with the next user turn; the diff says the step diverged.
- `Reused`: every call of the answer is the same as a call the original step recorded a result
  for; each gets a copy of that result (the tool message as recorded, answering the NEW call's id),
  and the run asks the model again, its context now holding the calls and their results.
- `Unrecorded`: a call of the answer is the same as no recorded call of the original step (or the
  original turn has no step k, or step k called no tool): the path stops there, status `stopped`,
  error `unrecorded_tool_call`, and the detail names the tool and its arguments. convtree does not
  execute tools, so it cannot know what that call would have returned.

"The same call" (`same`): the same kind of call (function or custom), the same tool name, and
arguments equal as JSON values when both are JSON (whatever their spacing or key order; numbers
as written, so 1 and 1.0 differ), else equal as text, character for character. Each recorded result
answers one call at most, the first unused recorded call that is the same, in the order recorded.
A recorded call without a result on the path, or whose result was redacted, recorded nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from service.app.turn import Params
from service.domain import views
from service.domain.message import UNSET, FunctionToolCall, ToolCall, Utterance, said

# The most characters of a call's arguments a stopped run's detail quotes.
MAX_QUOTED = 200


class Call(msgspec.Struct, frozen=True):
    """A tool call as the rule compares it: its kind, its tool's name, and its arguments as the
    model wrote them (a function's `arguments`, a custom tool's `input`)."""

    kind: Literal["function", "custom"]
    name: str
    arguments: str


def call_of(call: ToolCall) -> Call:
    if isinstance(call, FunctionToolCall):
        return Call("function", call.function.name, call.function.arguments)
    return Call("custom", call.custom.name, call.custom.input)


def calls_of(message: Utterance) -> list[tuple[str, Call]]:
    """The calls an assistant message asks for, (id, call) in order; none for any other message."""
    if message.role != "assistant" or message.tool_calls is UNSET:
        return []
    return [(c.id, call_of(c)) for c in message.tool_calls]


_json = msgspec.json.Decoder()


def same_arguments(a: str, b: str) -> bool:
    """Equal as JSON values when both are JSON, else equal as text."""
    try:
        values = _json.decode(a), _json.decode(b)
    except msgspec.DecodeError:
        return a == b
    return msgspec.json.encode(values[0], order="sorted") == msgspec.json.encode(values[1], order="sorted")


def same(a: Call, b: Call) -> bool:
    return a.kind == b.kind and a.name == b.name and same_arguments(a.arguments, b.arguments)


class Step(msgspec.Struct, frozen=True):
    """A model step of a recorded turn: an assistant message, and the tool messages right after it
    on the path (the results of its calls, in the order they were written)."""

    message: views.PathMessage
    results: list[views.PathMessage]

    @property
    def calls(self) -> list[tuple[str, Call]]:
        return calls_of(self.message)


def turn_steps(path: Sequence[views.PathMessage], user_index: int) -> list[Step]:
    """The steps of the turn whose user message is `path[user_index]` (root first): the assistant
    and tool messages right under it, up to the next message of any other role."""
    steps: list[Step] = []
    for message in path[user_index + 1 :]:
        if message.role == "assistant":
            steps.append(Step(message, []))
        elif message.role == "tool" and steps:
            steps[-1].results.append(message)
        else:
            break
    return steps


class Recorded(msgspec.Struct, frozen=True):
    """A call the source path recorded, and the tool message that answered it."""

    call: Call
    result: Utterance


def recorded(step: Step | None) -> list[Recorded]:
    """The calls of `step` that have a readable result on the path, in the order asked for."""
    if step is None:
        return []
    results = {r.tool_call_id: r for r in step.results if r.redacted is None}
    return [Recorded(call, results[call_id]) for call_id, call in step.calls if call_id in results]


class Replied(msgspec.Struct, frozen=True):
    """The answer calls no tool, nor did the original step: the turn's reply."""


class Diverged(msgspec.Struct, frozen=True):
    """The answer calls no tool where the original step did: the turn's reply, and a divergence."""


class Reused(msgspec.Struct, frozen=True):
    """Every call answered from the path: the tool messages to append, in the order of the calls,
    each the recorded result answering the new call's id."""

    results: list[Utterance]


class Unrecorded(msgspec.Struct, frozen=True):
    """Calls the original step never recorded (those of the answer that no recorded call matches):
    the path stops here."""

    calls: list[Call]

    @property
    def detail(self) -> str:
        named = "; ".join(f"{c.name!r} with arguments {_quoted(c.arguments)}" for c in self.calls)
        return f"The model called {named}, which this step of the replayed path never recorded; convtree does not run tools."


def _quoted(text: str) -> str:
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "…"


Resolution = Replied | Diverged | Reused | Unrecorded


def answer(calls: Sequence[tuple[str, Call]], available: Sequence[Recorded]) -> Reused | Unrecorded:
    """Answer each (new id, call) from `available`: the first unused recorded call that is the same."""
    left = list(available)
    results: list[Utterance] = []
    missing: list[Call] = []
    for call_id, call in calls:
        found = next((r for r in left if same(r.call, call)), None)
        if found is None:
            missing.append(call)
            continue
        left.remove(found)
        results.append(msgspec.structs.replace(Utterance(**said(found.result)), tool_call_id=call_id))
    return Unrecorded(missing) if missing else Reused(results)


def resolve(original: Step | None, reply: Utterance) -> Resolution:
    """How the new model's answer `reply` at a step is taken, `original` being the recorded turn's
    step at the same place (None: the recorded turn had no such step)."""
    calls = calls_of(reply)
    if not calls:
        return Diverged() if original is not None and original.calls else Replied()
    return answer(calls, recorded(original))


TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls")


def offered(params: Params, steps: Sequence[Step]) -> Params:
    """The parameters a turn's steps are asked with: the target's; when they offer no tools, with
    the tools (and `tool_choice`, `parallel_tool_calls`) the original turn's first step that was
    offered any was given, as its generation recorded them."""
    if params.tools is not None:
        return params
    for step in steps:
        given = {} if step.message.generation is None else step.message.generation.params
        if given.get("tools"):
            taken = {name: given[name] for name in TOOL_PARAMS if name in given}
            try:
                return msgspec.convert({**msgspec.to_builtins(params), **taken}, Params)
            except msgspec.ValidationError:
                return params  # recorded by an older convtree under other rules: offer none
    return params
