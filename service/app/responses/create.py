"""Creating a response (the Responses API): one turn, whose input messages are appended under the
last message of the response it continues (`previous_response_id`), under the head of a named
conversation, or as a new conversation; the reply is the response's output, and its id the
response's. The response's record (service/store/responses.py) is written by the statement that
writes the turn, and handed back with the reply launched (Begun), so that the response a create
answers is made from what the process holds, not read back (read.recorded).

With an Idempotency-Key, the key names the response it created (its reply, as a turn's key does:
service/app/idempotency.py): a retry is answered with that response (Retried), waiting first,
unless the response is a background one, while its reply is being generated; never a second
model call, never a second response, whatever that response came to.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic

import msgspec

from service.app import idempotency, writes
from service.app.caller import Caller
from service.app.ids import new_id
from service.app.turn.begin import append_user_turn
from service.app.turn.chat import chain_of, new_conversation
from service.app.turn.models import resolve_model
from service.app.turn.opening import Opening, opened
from service.app.turn.plan import InFlight, L, Lease, Plan, ReplySpec
from service.domain import tree
from service.domain.errors import (
    ContextTooLong,
    InvalidRequest,
    ParentStillGenerating,
    PreviousResponseNotFound,
    ResponseNotFound,
)
from service.domain.message import Utterance
from service.domain.window import context_tokens
from service.store import pending
from service.store import responses as stored
from service.store.events import Store
from service.upstream import Registry
from service.upstream.tokens import message_counter_for


class NewResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A response to create: its input (as messages, the last one the turn's), where it goes
    (`previous_response_id` or `conversation_id`, at most one; neither: a new conversation), how the
    model is asked (`spec`: params, window, instructions), whether it is kept (`store`), and the
    request's fields a Response echoes (`echo`: JSON the API room writes and reads, opaque here).

    `limit`: with truncation disabled, the most prompt tokens the context may take (the token
    window's budget, if one was given): a longer context is refused, not cut."""

    model: str
    input: list[Utterance]
    previous_response_id: uuid.UUID | None = None
    conversation_id: uuid.UUID | None = None
    store: bool = True
    spec: ReplySpec = msgspec.field(default_factory=ReplySpec)
    limit: int | None = None
    echo: bytes = b"{}"


@dataclass(frozen=True)
class Begun(Generic[L]):
    """A response's turn, taken: its reply, launched, and its record as written (`created_at` the
    turn's time, as the row's)."""

    reply: L
    record: stored.ResponseRow


@dataclass(frozen=True)
class Retried:
    """A retry, by Idempotency-Key, of a create that made a response: that response's id (its
    reply is recorded, or, for a background response, may still be being generated)."""

    response_id: uuid.UUID


async def begin_response(
    store: Store,
    registry: Registry,
    caller: Caller,
    lease: Lease,
    new: NewResponse,
    launch: Callable[[Plan], L],
    keyed: idempotency.Keyed | None = None,
    *,
    background: bool = False,
) -> Begun[L] | Retried:
    """Take the response's turn and launch its reply, or answer a retry of its key with the
    response it created (see the module's docstring)."""
    provider, model = resolve_model(registry, new.model)
    if not new.input or new.input[-1].role not in ("user", "tool"):
        raise InvalidRequest(
            "The last input item must be a user message or a function_call_output: it is the turn to answer.",
            parameter="input",
        )
    previous: stored.ResponseRow | None = None
    if new.previous_response_id is not None:
        async with store.reader() as tx:
            previous = await stored.get(tx, caller.tenant, new.previous_response_id)
        if previous is None or not previous.store or previous.deleted_at is not None:
            raise PreviousResponseNotFound(
                f"Previous response with id 'resp_{new.previous_response_id.hex}' not found.",
                parameter="previous_response_id",
            )
    conversation_id = previous.conversation_id if previous is not None else new.conversation_id
    checked = launch if new.limit is None else _limited(launch, new.limit)

    written: list[stored.ResponseRow] = []

    async def work(o: Opening[L]) -> None:
        if conversation_id is None:
            chain = chain_of(new.input, None)
            ids = new_id(), new_id()
            o.response = row = _record(new, o.reply_id, ids, None, chain)
            await new_conversation(o, chain, provider, model, new.spec, ids)
        else:
            given = [] if previous is None else [previous.response_id, previous.input_ids[-1]]
            w = await writes.lock(o.tx, o.caller, conversation_id, len(new.input), given, with_head=previous is None)
            if previous is None:
                parent_ref = w.state.head_id
            else:
                parent_ref = await _last_of(o, previous, w)
            parent = w.nodes.get(parent_ref) if parent_ref is not None else None
            chain = chain_of(new.input, parent_ref)
            explicit = previous is not None
            o.response = row = _record(new, o.reply_id, (w.state.conversation_id, w.state.family_id), parent_ref, chain)
            await append_user_turn(o, w, parent_ref, parent, explicit, chain, None, provider, model, new.spec)
        assert o.plan is not None, "a response's turn launches its reply"
        written.append(msgspec.structs.replace(row, created_at=o.plan.user_message.created_at))

    async def first(o: Opening[L]) -> Retried | None:
        if o.began is not None:
            return await _again(o, o.began, wait=not background)
        await work(o)
        return None

    begun = await opened(store, caller, lease, checked, first, keyed, conversation_id)
    if isinstance(begun, Retried):
        return begun
    return Begun(begun, written[-1])


async def _again(o: Opening[L], began: idempotency.Launched, *, wait: bool) -> Retried:
    """A retry of the key that created the response `began` names (its reply's id is the
    response's): while that reply is being generated, InFlight (opening.opened waits until it is
    recorded, then asks again), unless `wait` is off."""
    row = await stored.get(o.tx, o.caller.tenant, began.reply_id)
    assert row is not None, "a key that launched a response's reply names its response"
    if row.deleted_at is not None:
        response_id = f"resp_{row.response_id.hex}"
        raise ResponseNotFound(f"Response with id '{response_id}' not found.", response_id=response_id)
    if wait and await pending.is_pending(o.tx, row.family_id, row.response_id):
        raise InFlight(row.family_id, row.response_id)
    return Retried(row.response_id)


def _record(
    new: NewResponse,
    reply_id: uuid.UUID,
    ids: tuple[uuid.UUID, uuid.UUID],
    parent_ref: uuid.UUID | None,
    chain: list[tree.Append],
) -> stored.ResponseRow:
    """The response's record: its reply's id, where its input goes (`ids`: conversation, family;
    under `parent_ref`), and what its request asked."""
    return stored.ResponseRow(
        response_id=reply_id,
        family_id=ids[1],
        conversation_id=ids[0],
        parent_id=parent_ref,
        input_ids=[c.message_id for c in chain],
        previous_response_id=new.previous_response_id,
        in_conversation=new.conversation_id is not None,
        model=new.model,
        request=new.echo,
        store=new.store,
    )


async def _last_of(o: Opening[L], previous: stored.ResponseRow, w: writes.Locked) -> uuid.UUID:
    """The last message of `previous`: its reply, or, if the turn failed without one, its last input
    message (its context then continues without an output, as the response had none)."""
    reply = w.nodes.get(previous.response_id)
    if reply is not None and reply.visible:
        return previous.response_id
    if await pending.is_pending(o.tx, previous.family_id, previous.response_id):
        raise ParentStillGenerating(
            "The previous response is still being generated: continue it once it is completed.",
            parameter="previous_response_id",
        )
    return previous.input_ids[-1]


def _limited(launch: Callable[[Plan], L], limit: int) -> Callable[[Plan], L]:
    """`launch`, refusing first a context (instructions included) larger than `limit` tokens."""

    def checked(plan: Plan) -> L:
        messages = plan.request().messages
        tokens = context_tokens(messages, message_counter_for(plan.model))
        if tokens > limit:
            raise ContextTooLong(
                f"The input and the context it continues take {tokens} tokens, more than the {limit} the "
                "token window allows; set truncation to auto to drop the oldest items instead.",
                parameter="input",
                tokens=tokens,
                max_tokens=limit,
            )
        return launch(plan)

    return checked
