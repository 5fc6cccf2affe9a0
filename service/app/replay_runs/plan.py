"""What a replay run replays: the turns of a recorded path, chosen and checked before anything is written.

A run re-sends each user message of the path at or below its start, in order, each with the new
turns before it as context (the conversation as it would have gone with the new target), and
writes each new reply linked to the reply it replaces (`Generation.replay_of`). A turn whose
original steps called tools is replayed step by step, its tool results reused (tools.py). What
else the path holds below the start (a second system message, an assistant message that answers no
user message) is not carried over: a replay re-asks the user's questions.

Where the new turns go:
- `fork` (the default): a fork of the source at the message above the first turn replayed, which
  shares the path above it by reference. When there is nothing above that turn (it is the root),
  or the target replaces the system message (a conversation has one root), the turns go into a
  new conversation instead, rooted at the replacement system message if there is one.
- `branches`: the source conversation itself, as a branch beside the first turn replayed (its
  head follows the new turns, as it follows a regenerated reply).
"""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

from service.app import window as windows
from service.app.replay_runs import tools
from service.app.turn import Params
from service.domain import views
from service.domain.errors import InvalidRequest

Into = Literal["fork", "branches"]


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Who answers in the replay: provider and model (defaults: the registry's), their parameters,
    the context window, and optionally a system message that replaces the path's."""

    provider: str | None = None
    model: str | None = None
    params: Params = msgspec.field(default_factory=Params)
    window: windows.Window = msgspec.field(default_factory=windows.FullWindow)
    system: str | None = None


class TurnRef(msgspec.Struct, frozen=True, array_like=True):
    """A turn of the source path: its user message and the reply right under it (None: none on the path)."""

    user_id: uuid.UUID
    reply_id: uuid.UUID | None


class RunPlan(msgspec.Struct, frozen=True, kw_only=True):
    """A run as it was decided when it was started (stored with it, read by whichever process runs
    it): the path's leaf, the target with its provider and model resolved, and the turns in order."""

    leaf_id: uuid.UUID
    provider: str
    model: str
    params: Params
    window: windows.Window
    system: str | None
    turns: list[TurnRef]


class Chosen(msgspec.Struct, frozen=True, kw_only=True):
    """The turns to replay, and the message above the first of them (None: it is the root)."""

    turns: list[TurnRef]
    base: views.PathMessage | None


def choose_turns(
    path: list[views.PathMessage], start_id: uuid.UUID | None, into: Into, system: str | None, max_turns: int
) -> Chosen:
    """The user turns of `path` (root first) at or below `start_id` (default: the root), checked
    against where they go and the bound on turns per run; every refusal is InvalidRequest."""
    start = 0
    if start_id is not None:
        found = [i for i, m in enumerate(path) if m.id == start_id]
        if not found:
            raise InvalidRequest("start_message_id is not a message on the path being replayed.",
                                 start_message_id=str(start_id))  # fmt: skip
        start = found[0]
    turns: list[TurnRef] = []
    first = None
    for i in range(start, len(path)):
        if path[i].role != "user":
            continue
        if first is None:
            first = i
        turns.append(TurnRef(path[i].id, turn_reply(path, i)))
    if first is None:
        raise InvalidRequest("There is no user message on the path at or below the start: nothing to replay.")
    if len(turns) > max_turns:
        raise InvalidRequest(
            f"A replay run replays at most {max_turns} turns; start it further down the path.",
            turns=len(turns),
            max_turns=max_turns,
        )
    base = path[first - 1] if first > 0 else None
    if system is not None:
        if into == "branches":
            raise InvalidRequest(
                "A replacement system message needs the results in a fork: a conversation has one root.",
                into=into,
            )
        if any(m.role != "system" for m in path[:first]):
            raise InvalidRequest(
                "A replacement system message replaces the root: start at the path's first user message.",
                start_message_id=str(path[first].id),
            )
    if into == "branches" and base is None:
        raise InvalidRequest(
            "The first turn replayed is the root: a branch needs a message to grow from; replay into a fork.",
            into=into,
        )
    return Chosen(turns=turns, base=base)


def turn_reply(path: list[views.PathMessage], user_index: int) -> uuid.UUID | None:
    """The reply that ends the turn of `path[user_index]`: its last step, when that calls no tool
    (None: the turn has no step, or ends asking for tools)."""
    steps = tools.turn_steps(path, user_index)
    return steps[-1].message.id if steps and not steps[-1].calls else None


def new_ids(run_id: uuid.UUID, index: int) -> tuple[uuid.UUID, uuid.UUID]:
    """The ids of turn `index`'s user message and reply (the message that ends it, calling no tool)
    in the run's results: the same in whichever process writes them, so that a turn can only ever
    be written once."""
    return uuid.uuid5(run_id, f"{index}/user"), uuid.uuid5(run_id, f"{index}/reply")


def step_id(run_id: uuid.UUID, index: int, step: int) -> uuid.UUID:
    """The id of step `step`'s assistant message in turn `index`, when it calls tools."""
    return uuid.uuid5(run_id, f"{index}/step/{step}")


def result_id(run_id: uuid.UUID, index: int, step: int, call: int) -> uuid.UUID:
    """The id of the tool message answering call `call` (0-based, in the order asked) of that step."""
    return uuid.uuid5(run_id, f"{index}/step/{step}/result/{call}")
