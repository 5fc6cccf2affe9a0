"""The Responses API (OpenAI's, under `/openai/v1/responses`): a response is a turn of a convtree
conversation, so `previous_response_id` names a node of the tree: its context is the path from the
root to it, and two responses to the same predecessor are sibling branches, each with its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from service.api import schemas, sse
from service.api.deps import REPLAYED, json_response, keyed
from service.api.openai_compat import CONVERSATION_ID_HEADER, MESSAGE_ID_HEADER
from service.api.problems import openai_error, responses
from service.api.response_objects import (
    DeletedResponse,
    Echo,
    Events,
    ItemList,
    ResponseError,
    ResponseObject,
    echo_of,
    in_progress,
    parse_response_id,
    started_response,
    stored_response,
)
from service.api.response_objects import response_id as response_id_of
from service.api.turns import stream_error, wait_settled
from service.app import responses as responses_app
from service.app import turn as turns_app
from service.app import window as windows
from service.app.caller import Caller
from service.app.services import Responses
from service.app.turn import CLIENT_LEFT, ReplyInFlight, Settled, progress
from service.app.turn.plan import CompletionMetadata, ReasoningEffort, ToolChoice, Tools, TopLogprobs
from service.domain import errors, items
from service.domain.message import Utterance


class Reasoning(msgspec.Struct, kw_only=True):
    effort: ReasoningEffort | None = None
    summary: str | None = None
    generate_summary: str | None = None


class CreateResponse(msgspec.Struct, kw_only=True):
    """OpenAI's request to create a response. Unknown fields are ignored; fields convtree cannot
    honour are refused by name (tool types other than `function`). `item_reference` items name
    stored items by id (see _referenced). `window` is convtree's (as on the chat door): with
    `truncation: "auto"`, the window the context is cut to (a `tokens` window drops the oldest items first, never splitting a tool call
    from its results); with truncation disabled, a `tokens` window's budget is a limit a context
    must fit (400 `context_length_exceeded` otherwise)."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=schemas.NO_NUL)]
    input: str | Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=10_000)]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    store: bool | None = None
    stream: bool | None = None
    background: bool | None = None
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    max_tool_calls: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    metadata: CompletionMetadata | None = None
    text: dict[str, Any] | None = None
    reasoning: Reasoning | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    top_logprobs: TopLogprobs | None = None
    include: list[str] | None = None
    window: windows.Window | None = None


IDEMPOTENCY_KEY = HeaderParameter(
    name="Idempotency-Key",
    required=False,
    max_length=255,
    description="Makes a retry safe (OpenAI's clients retry by default; pass the key in `extra_headers` and "
    "they send it with each retry): a retry with the same key and request gets the response the key created, "
    "same id, as it is now (as JSON, or as a stream of it when `stream` is set), without calling the model "
    "again; one arriving while its reply is being generated waits for it, except for a background response, "
    "answered at once. A response that failed is answered as it stands (`failed`), not tried again. The same "
    "key with another request is a 400 (this door's status for a refusal) with code `idempotency-key-reused`. "
    "Keys are per tenant.",
)


class ResponsesController(Controller):
    path = "/openai/v1/responses"
    tags = ["openai-compatible"]

    @post(
        "/",
        status_code=200,
        opt={"streams": True},
        summary="Create a response (OpenAI Responses API), stored as a turn",
        description="`input` (a string, or items: messages, `function_call`, `function_call_output`, "
        "`reasoning`) is appended as messages, and the model's reply is the response's `output`. "
        "With `previous_response_id`, under the last message of that response (its output, or its last "
        "input if it has none): the model is shown the path from the root to there plus the input, so two "
        "responses to the same predecessor are sibling branches, each with its own context. With "
        "`conversation` (`conv_…` or `{id}`), under that conversation's head, which moves to the reply. "
        "Neither: a new conversation. `instructions` are sent before the context, kept with this response "
        "and not carried over. `store: false`: the turn is still written in the log, but the response can "
        "neither be retrieved nor continued. Streamed (`stream: true`), the events of OpenAI's sequence, "
        "each `event:` its type, numbered by `sequence_number`, ending with `data: [DONE]`. "
        "Also `next_response_ids`: the responses that continue this one. `background: true`: answered at "
        "once (`in_progress`); the reply is generated whatever the client does, checkpointed as it streams; "
        "poll it with GET, resume its stream with GET `?stream=true&starting_after=N`, stop it with POST "
        "`…/cancel`, from any server process. An `item_reference` item (`{type, id}`) is the item of that id "
        "(`msg_…`, `rs_…`, `fc_…`, `fco_…`) among the caller's stored messages, sent again as that item; an id "
        "the caller has not (or a deleted response's item) is a 400 naming it. An `Idempotency-Key` makes a "
        "retry safe: the same key and request get the response the key created (see the header).",
        responses=responses(errors.Unauthorized, 400, errors.ConversationNotFound, errors.ModelNotFound,
                            errors.ParentStillGenerating, errors.IncompleteToolCalls, errors.UpstreamError,
                            openai=True),
    )  # fmt: skip
    async def create(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[CreateResponse],
        caller: NamedDependency[Caller],
        responses_service: NamedDependency[Responses],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[ResponseObject]:
        new, echo = _new(data, await _referenced(data, caller, responses_service))
        background = bool(data.background)
        begun = await responses_service.create(
            caller, new, keyed(request, data), relay=bool(data.stream) and not background, keep=background
        )
        if isinstance(begun, responses_app.Retried):
            return await _retried(begun.response_id, bool(data.stream), background, caller, responses_service)
        generation = begun.reply
        plan = generation.plan
        headers = {CONVERSATION_ID_HEADER: str(plan.conversation_id), MESSAGE_ID_HEADER: str(plan.reply_id)}
        if background:
            # The reply runs on, whatever this request does; its client follows the checkpoints.
            if not await generation.committed():
                refused = (await generation.settled).error
                raise refused or errors.ReplyAbandoned()
            if data.stream:
                return sse.response(_followed(caller, responses_service, plan.reply_id, -1), headers)  # type: ignore[return-value]
            return json_response(stored_response(await responses_service.created(caller, plan.reply_id)), 200, headers)
        if data.stream:
            start = in_progress(
                plan.reply_id, echo, data.model, store=new.store, previous=new.previous_response_id,
                conversation_id=new.conversation_id, created_at=int(time.time()),
            )  # fmt: skip
            events = _events(request, begun, start, echo, caller, responses_service)
            return sse.response(events, headers)  # type: ignore[return-value]
        settled = await wait_settled(request.receive, generation)
        if settled.error is not None:
            raise settled.error
        found = await _ended(begun, settled, caller, responses_service)
        return json_response(stored_response(found, echo), 200, headers)

    @get(
        "/{response_id:str}",
        opt={"streams": True},
        summary="Retrieve a response",
        description="As created, its status and output as the log has them now, and `next_response_ids`. "
        "`stream=true` (a background response): its stream's events from the reply's checkpoints, from "
        "any server process, after `starting_after` (a `sequence_number`), live until it ends.",
        responses=responses(errors.Unauthorized, 400, errors.ResponseNotFound, openai=True),
    )
    async def retrieve(
        self,
        response_id: FromPath[str],
        caller: NamedDependency[Caller],
        responses_service: NamedDependency[Responses],
        stream: Annotated[bool, QueryParameter(description="Stream the response's events.")] = False,
        starting_after: Annotated[
            int, QueryParameter(ge=-1, description="The sequence_number after which the stream resumes.")
        ] = -1,
    ) -> Response[ResponseObject]:
        named = _named(response_id)
        found = await responses_service.get(caller, named)
        if not stream:
            return json_response(stored_response(found), 200)
        if not echo_of(found.record.request).background:
            raise errors.InvalidRequest(
                "stream: only a response created with background: true can be streamed again.", parameter="stream"
            )
        return sse.response(_followed(caller, responses_service, named, starting_after), {})  # type: ignore[return-value]

    @delete(
        "/{response_id:str}",
        status_code=200,
        summary="Delete a response",
        description="Its messages (input and output) are redacted in the log (their events stay, so every "
        "chain still verifies), and it can neither be retrieved nor continued (`previous_response_not_found`).",
        responses=responses(errors.Unauthorized, errors.ResponseNotFound, errors.ReplyInProgress, openai=True),
    )
    async def remove(
        self, response_id: FromPath[str], caller: NamedDependency[Caller], responses_service: NamedDependency[Responses]
    ) -> DeletedResponse:
        named = _named(response_id)
        await responses_service.delete(caller, named)
        return DeletedResponse(id=response_id_of(named))

    @get(
        "/{response_id:str}/input_items",
        summary="The items a response was given",
        description="The whole context: the path from the root to the response's last input item (the "
        "input and output of every response it continues), each item with its id; `order=asc` oldest first.",
        responses=responses(errors.Unauthorized, 400, errors.ResponseNotFound, openai=True),
    )
    async def input_items(
        self,
        response_id: FromPath[str],
        caller: NamedDependency[Caller],
        responses_service: NamedDependency[Responses],
        after: Annotated[str | None, QueryParameter(description="The id of the item to list after.")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="Page size.")] = 20,
        order: Annotated[Literal["asc", "desc"], QueryParameter(description="`asc`: oldest first.")] = "desc",
    ) -> ItemList:
        path = await responses_service.input_items(caller, _named(response_id))
        return page(items.messages_to_items(path), after, limit, order)

    @post(
        "/{response_id:str}/cancel",
        status_code=200,
        summary="Cancel a background response",
        description="Stops the model from whichever server process generates it, and answers once the "
        "reply is recorded (`cancelled`, with the output so far), or as it stands after 10 s. A response "
        "that has already ended is answered as it is. Only a response created with `background: true` "
        "can be cancelled: another is answered 400.",
        responses=responses(errors.Unauthorized, 400, errors.ResponseNotFound, openai=True),
    )
    async def cancel(
        self, response_id: FromPath[str], caller: NamedDependency[Caller], responses_service: NamedDependency[Responses]
    ) -> ResponseObject:
        named = _named(response_id)
        found = await responses_service.get(caller, named)  # 404 if there is none
        if not echo_of(found.record.request).background:
            raise errors.InvalidRequest(
                "Only a response created with background: true can be cancelled; this one was not.",
                parameter="response_id",
            )
        return stored_response(await responses_service.cancel(caller, named, responses_service.poll))


def page(listed: list[dict[str, Any]], after: str | None, limit: int, order: str) -> ItemList:
    """A page of `listed` (root first) in `order`, after the item `after` names."""
    ordered = listed if order == "asc" else listed[::-1]
    start = 0
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise errors.InvalidRequest(f"after: no item {after!r} among this response's input items.", parameter="after")
        start = ids.index(after) + 1
    data = ordered[start : start + limit]
    return ItemList(
        data=data,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
        has_more=start + limit < len(ordered),
    )


def _named(value: str) -> uuid.UUID:
    named = parse_response_id(value)
    if named is None:
        raise errors.ResponseNotFound(f"Response with id {value!r} not found.", response_id=value)
    return named


async def _referenced(data: CreateResponse, caller: Caller, service: Responses) -> dict[str, items.Item]:
    """The items the input's `item_reference` items name, by id, that the caller's tenant has."""
    if isinstance(data.input, str):
        return {}
    ids: list[str] = []
    for index, item in enumerate(data.input):
        if item.get("type") == "item_reference":
            named = item.get("id")
            if not isinstance(named, str) or not named:
                raise errors.InvalidRequest(
                    f"input[{index}]: an item_reference needs the `id` of the item it names.",
                    parameter=f"input[{index}].id",
                )
            ids.append(named)
    if not ids:
        return {}
    previous = None if data.previous_response_id is None else parse_response_id(data.previous_response_id)
    conversation = data.conversation.get("id") if isinstance(data.conversation, dict) else data.conversation
    in_conversation = items.parse_conversation_id(conversation) if isinstance(conversation, str) else None
    return await service.referenced(caller, ids, previous, in_conversation)


def _new(data: CreateResponse, referenced: dict[str, items.Item]) -> tuple[responses_app.NewResponse, Echo]:
    """The response to create, and what it echoes of the request."""
    if data.background and data.store is False:
        raise errors.InvalidRequest(
            "background: a background response must be stored (it is polled and resumed): drop `store: false`.",
            parameter="background",
        )
    if data.previous_response_id is not None and data.conversation is not None:
        raise errors.InvalidRequest(
            "previous_response_id and conversation cannot be used together: a response continues one or the other.",
            parameter="previous_response_id",
        )
    previous = None
    if data.previous_response_id is not None:
        previous = parse_response_id(data.previous_response_id)
        if previous is None:
            raise errors.PreviousResponseNotFound(
                f"Previous response with id {data.previous_response_id!r} not found.", parameter="previous_response_id"
            )
    tools = None if data.tools is None else [_chat_tool(i, t) for i, t in enumerate(data.tools)]
    store = data.store is not False
    truncation = data.truncation or "disabled"
    window, limit = _window(data.window, truncation)
    params = turns_app.Params(
        temperature=data.temperature,
        top_p=data.top_p,
        max_completion_tokens=data.max_output_tokens,
        tools=tools,
        tool_choice=None if data.tool_choice is None else _chat_tool_choice(data.tool_choice),  # type: ignore[arg-type]
        parallel_tool_calls=data.parallel_tool_calls if tools else None,
        response_format=_response_format(data.text),
        reasoning_effort=None if data.reasoning is None else data.reasoning.effort,
    )
    echo = Echo(
        instructions=data.instructions,
        tools=data.tools or [],
        tool_choice=data.tool_choice or "auto",
        parallel_tool_calls=data.parallel_tool_calls is not False,
        temperature=data.temperature,
        top_p=data.top_p,
        truncation=truncation,
        text=data.text or {"format": {"type": "text"}},
        reasoning=None if data.reasoning is None else msgspec.to_builtins(data.reasoning),
        user=data.user,
        max_output_tokens=data.max_output_tokens,
        max_tool_calls=data.max_tool_calls,
        metadata=data.metadata or {},
        safety_identifier=data.safety_identifier,
        prompt_cache_key=data.prompt_cache_key,
        service_tier=data.service_tier or "default",
        top_logprobs=data.top_logprobs or 0,
        background=bool(data.background),
    )
    new = responses_app.NewResponse(
        model=data.model,
        input=_input(data.input, referenced),
        previous_response_id=previous,
        conversation_id=None if data.conversation is None else _conversation(data.conversation),
        store=store,
        spec=turns_app.ReplySpec(window=window, params=params, instructions=data.instructions),
        limit=limit,
        echo=msgspec.json.encode(echo),
    )
    return new, echo


def _input(value: str | list[dict[str, Any]], referenced: dict[str, items.Item]) -> list[Utterance]:
    """The input's messages, each `item_reference` read as the item it names (`referenced`)."""
    if isinstance(value, str):
        if not value:
            raise errors.InvalidRequest("input: an empty string says nothing.", parameter="input")
        return [Utterance(role="user", content=value)]
    given = list(value)
    for index, item in enumerate(value):
        if item.get("type") == "item_reference":
            found = referenced.get(item["id"])
            if found is None:
                raise errors.InvalidRequest(
                    f"input[{index}]: item_reference: no item with id {item['id']!r} is stored (an item id is "
                    "one convtree gave: msg_, rs_, fc_ or fco_ and its message's id; a deleted response's "
                    "items are gone).",
                    parameter=f"input[{index}].id",
                )
            given[index] = found
    try:
        return items.items_to_messages(given)
    except errors.InvalidMessage as exc:
        field = str(exc.context.get("field") or "input")
        raise errors.InvalidRequest(
            exc.detail.replace("items[", "input[", 1), parameter=field.replace("items[", "input[", 1)
        ) from exc


def _conversation(value: str | dict[str, Any]) -> uuid.UUID:
    named = value.get("id") if isinstance(value, dict) else value
    found = items.parse_conversation_id(named) if isinstance(named, str) else None
    if found is None:
        raise errors.ConversationNotFound(f"Conversation {named!r} not found.", parameter="conversation")
    return found


def _chat_tool(index: int, tool: dict[str, Any]) -> dict[str, Any]:
    """A Responses function tool in the Chat Completions form the upstream takes."""
    kind = tool.get("type")
    if kind != "function":
        raise errors.InvalidRequest(
            f"tools[{index}]: tools of type {kind!r} are not supported: only function tools.",
            parameter=f"tools[{index}].type",
        )
    if not isinstance(tool.get("name"), str):
        raise errors.InvalidRequest(f"tools[{index}]: a function tool needs a `name`.", parameter=f"tools[{index}].name")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise errors.InvalidRequest(
        f"tool_choice: {choice.get('type')!r} is not supported: use auto, none, required or a function.",
        parameter="tool_choice",
    )


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """`text.format` as Chat Completions' `response_format`."""
    given = None if text is None else text.get("format")
    if not isinstance(given, dict) or given.get("type") in (None, "text"):
        return None
    if given["type"] == "json_schema":
        schema = {k: given[k] for k in ("name", "schema", "description", "strict") if k in given}
        return {"type": "json_schema", "json_schema": schema}
    return dict(given)


def _window(window: windows.Window | None, truncation: str) -> tuple[windows.Window, int | None]:
    """The window the context is cut to, and the token limit it must fit uncut (see CreateResponse)."""
    if window is None:
        return windows.FullWindow(), None
    if truncation == "auto":
        return window, None
    if isinstance(window, windows.TokensWindow):
        return windows.FullWindow(), window.max_tokens
    if isinstance(window, windows.LastWindow):
        raise errors.InvalidRequest(
            "window: a `last` window cuts the context, which truncation disabled forbids: set truncation to auto.",
            parameter="window",
        )
    return window, None


async def _ended(begun: responses_app.Begun[ReplyInFlight], settled: Settled, caller: Caller, service: Responses) -> responses_app.Found:
    """The response a create answers once its reply has settled: made from its record and the reply
    as this process recorded them, without reading them back; read back when no reply was recorded
    (the turn failed, or its record is delayed: the log says how it ended)."""
    if settled.reply is not None:
        return responses_app.recorded(begun.record, settled.reply)
    return await service.created(caller, begun.record.response_id)


async def _events(
    request: Request[Any, Any, State],
    begun: responses_app.Begun[ReplyInFlight],
    start: ResponseObject,
    echo: Echo,
    caller: Caller,
    service: Responses,
) -> AsyncIterator[bytes]:
    generation = begun.reply
    plan = generation.plan
    events = Events(plan.reply_id)
    settled: Settled | None = None
    quiet = service.keepalive
    closing = b""  # the output items' done events, sent with the response's last event
    try:
        if await generation.committed():
            yield events.response("response.created", start) + events.response("response.in_progress", start) + (
                events.pieces(generation.arrived())
            )
            async for pieces in generation.deltas(quiet):
                yield events.pieces(pieces) or sse.KEEPALIVE
            closing = events.close()  # the relay ends once the reply is recorded: the outcome is there
        async for settled in generation.outcome(quiet):
            if settled is None:
                yield closing + sse.KEEPALIVE
                closing = b""
    finally:
        if settled is None:  # the client left: stop the model now (see service.api.turns)
            generation.interrupt(CLIENT_LEFT)
    assert settled is not None
    if events.sequence == 0:  # the turn was never committed: no response exists
        problem = stream_error(request, settled.error or errors.ReplyAbandoned(), None)
        error = openai_error(problem)
        # OpenAI's error event is flat; Open Responses' has the same in an `error` object: both.
        said = {"code": error.code, "message": error.message, "param": error.param}
        yield events.event("error", **said, error={"type": error.type, **said}) + sse.event(None, b"[DONE]")
        return
    final = stored_response(await _ended(begun, settled, caller, service), echo)
    if final.status == "completed":
        last = events.response("response.completed", final)
    elif final.status == "incomplete":
        last = events.response("response.incomplete", final)
    else:
        if final.error is None and settled.error is not None:
            detail = getattr(settled.error, "detail", None) or str(settled.error)
            final.error = ResponseError("server_error", detail)
        final.status = "failed"
        last = events.response("response.failed", final)
    yield closing + last + sse.event(None, b"[DONE]")




async def _retried(
    response_id: uuid.UUID, stream: bool, background: bool, caller: Caller, service: Responses
) -> Response[Any]:
    """A retry's answer, by Idempotency-Key: the response the key created, as it is now; streamed,
    a background response's stream from its checkpoints (as a resumed one), another's as a stream
    of the stored response (its output whole), never a second call to the model."""
    found = await service.created(caller, response_id)
    record = found.record
    headers = {**REPLAYED, CONVERSATION_ID_HEADER: str(record.conversation_id), MESSAGE_ID_HEADER: str(response_id)}
    if not stream:
        return json_response(stored_response(found), 200, headers)
    if background:
        return sse.response(_followed(caller, service, response_id, -1), headers)
    events = Events(response_id)
    start = started_response(found)
    said = events.response("response.created", start) + events.response("response.in_progress", start)
    if found.reply is not None:
        said += events.pieces(progress.whole(found.reply)) + events.close()
    final = stored_response(found)
    said += events.response(_TERMINAL.get(final.status, "response.failed"), final) + sse.event(None, b"[DONE]")
    return sse.response(sse.replay(said), headers)


async def _followed(caller: Caller, service: Responses, response_id: uuid.UUID, starting_after: int) -> AsyncIterator[bytes]:
    """A background response's stream, from its checkpoints (any process's): the same events, with
    the same numbers, as its first stream had or will have, those up to `starting_after` left out."""
    events = Events(response_id, starting_after=starting_after)
    loop = asyncio.get_running_loop()
    last = loop.time()
    async for step in service.follow(caller, response_id, service.poll):
        if isinstance(step, list):
            out = events.pieces(step)
        elif events.sequence == 0:  # the response as it was when followed
            start = started_response(step)
            out = events.response("response.created", start) + events.response("response.in_progress", start)
        else:  # the response as it ended
            final = stored_response(step)
            yield events.close() + events.response(_TERMINAL.get(final.status, "response.failed"), final) + (
                sse.event(None, b"[DONE]")
            )
            return
        if out:
            last = loop.time()
            yield out
        elif loop.time() - last > service.keepalive:
            last = loop.time()
            yield sse.KEEPALIVE


# The event a stream ends with, by the response's status. OpenAI's events have none for a cancelled
# response: it ends as incomplete, its response's status saying `cancelled`.
_TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete", "cancelled": "response.incomplete"}
