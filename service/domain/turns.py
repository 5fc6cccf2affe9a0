"""Turn rules: a chain of messages under a parent, the reply under its user message, a failed turn."""

from __future__ import annotations

import uuid

import msgspec

from service.domain import calls
from service.domain.errors import ParentStillGenerating
from service.domain.events import Event, Generation, MessageAppended, TurnFailed
from service.domain.message import Utterance, said
from service.domain.tree import Append, ConversationState, Node, appended_node, decide_append, evolve


def check_parent_settled(
    parent_ref: uuid.UUID | None, explicit: bool, pending: list[tuple[uuid.UUID, uuid.UUID]]
) -> None:
    """Refuse a turn under a reply that is still being generated.

    `pending` lists (reply id, user message id) of the replies in flight around `parent_ref`. A
    turn naming a pending reply as its parent would hang under a message that may never exist. A
    turn under the head, while the head awaits its reply, would land beside that reply rather than
    after it, which is not what "continue the conversation" means; naming the user message as the
    parent explicitly is still allowed (that is a deliberate branch).
    """
    for reply_id, user_message_id in pending:
        if reply_id == parent_ref:
            raise ParentStillGenerating(parent_message_id=str(parent_ref))
        if not explicit and user_message_id == parent_ref:
            raise ParentStillGenerating(
                "The head is a message whose reply is still being generated.",
                parent_message_id=str(parent_ref),
                reply_id=str(reply_id),
            )


def decide_chain(
    state: ConversationState, parent: Node | None, messages: list[Append], group: calls.Open = None
) -> list[MessageAppended]:
    """Append `messages` one under the other, the first under `parent` (the message the first one's
    `parent_id` names, None if that is not visible or the conversation is empty), at which `group`
    is open (calls.ended_by: needed only when the chain starts with tool messages). Tool messages
    later in the chain answer the calls of an assistant message before them in it."""
    appended: list[MessageAppended] = []
    for cmd in messages:
        decided = decide_append(state, cmd, parent, None, group)
        group = calls.after(group, cmd)
        assert isinstance(decided, list)  # no `existing`: never a retry
        [event] = decided
        assert isinstance(event, MessageAppended)
        appended.append(event)
        state = evolve(state, event)
        parent = appended_node(event, state.conversation_id)
    return appended


def decide_reply(
    state: ConversationState,
    user_message: Node | None,
    user_message_id: uuid.UUID,
    reply_id: uuid.UUID,
    reply: Utterance,
    generation: Generation,
    digest_key: bytes | None,
) -> list[Event]:
    """The assistant's reply (what the model said: text, tool calls, reasoning, refusal, each as it
    gave them), as a child of the message it answers; the head moves to it."""
    cmd = Append(**said(reply), message_id=reply_id, parent_id=user_message_id, digest_key=digest_key)
    decided = decide_append(state, cmd, user_message, None)
    assert isinstance(decided, list)
    [event] = decided
    assert isinstance(event, MessageAppended)
    return [msgspec.structs.replace(event, generation=generation)]


def decide_generated_chain(
    state: ConversationState, parent: Node | None, messages: list[tuple[Append, Generation | None]]
) -> list[MessageAppended]:
    """`decide_chain`, each message a model generated carrying its generation: a replayed turn
    (its user message, the model's steps, the tool results reused, its reply)."""
    events = decide_chain(state, parent, [cmd for cmd, _ in messages])
    return [
        event if generation is None else msgspec.structs.replace(event, generation=generation)
        for event, (_, generation) in zip(events, messages, strict=True)
    ]


def decide_failure(state: ConversationState, failure: TurnFailed) -> list[Event]:
    """A turn without a reply: recorded, and nothing else about the conversation changes."""
    return [failure]
