"""The OpenAI-compatible API: `POST /openai/v1/chat/completions` (plain and streamed) and `GET /openai/v1/models`
(also at `/v1/chat/completions` and `/v1/models`),
with the web ChatGPT protocol's `conversation_id` / `parent_message_id` to keep the chat a tree."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody

from service.api import schemas, sse
from service.api.deps import REPLAYED, json_response, keyed
from service.api.problems import OPENAI_BASE, openai_error, responses
from service.api.turns import IDEMPOTENCY_KEY, TURN_ERRORS, relayed, settled_reply, stream_error
from service.app import turn as turns_app
from service.app import window as windows
from service.app.caller import Caller
from service.app.turn import ReplyInFlight, Settled, progress
from service.app.services import Turns
from service.domain import errors, views
from service.domain.message import UNSET, Content, Role, ToolCall, carried, check, text_of
from service.upstream import ReasoningDelta, RefusalDelta, Said, TextDelta, ToolCallDelta

AUTO_THREAD = HeaderParameter(
    name="Convtree-Auto-Thread",
    required=False,
    max_length=5,
    description="`on` or `off`: without `conversation_id`, continue the tenant's conversation whose stored "
    "path is the longest prefix of `messages` (matched exactly: role, content, tool calls, name, "
    "tool_call_id), appending only the rest; none: a new conversation. Default: the API key's setting "
    "(`convtree keys auto-thread`), off unless set.",
)

# Where the reply is stored, in headers as in the body's `conversation_id` and `message_id`: a
# client that cannot read extension fields can switch to explicit ids with them.
CONVERSATION_ID_HEADER = "Convtree-Conversation-Id"
MESSAGE_ID_HEADER = "Convtree-Message-Id"



class InputMessage(msgspec.Struct, kw_only=True):
    """A message as OpenAI's clients send it, every field kept: `content` a string, parts (`text`,
    `image_url`, `input_audio`, `file`, or any other type, kept as given) or null; an assistant's
    `tool_calls`, `refusal` and `reasoning_content`; a tool result's `tool_call_id`. A null `name`,
    `tool_calls` or `tool_call_id` is read as absent; `developer` is stored as `developer`."""

    role: Role
    content: Content | msgspec.UnsetType = msgspec.UNSET
    name: str | None | msgspec.UnsetType = msgspec.UNSET
    tool_calls: list[ToolCall] | None | msgspec.UnsetType = msgspec.UNSET
    tool_call_id: str | None | msgspec.UnsetType = msgspec.UNSET
    refusal: str | None | msgspec.UnsetType = msgspec.UNSET
    reasoning_content: str | None | msgspec.UnsetType = msgspec.UNSET


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatCompletionRequest(
    turns_app.Params, kw_only=True, frozen=True, omit_defaults=False, forbid_unknown_fields=False
):
    """OpenAI's request, plus `conversation_id` and `parent_message_id` as in the web ChatGPT
    protocol. What the model is asked besides the messages (sampling, `tools`, `tool_choice`,
    `parallel_tool_calls`, `response_format`, `logprobs`, `reasoning_effort`, `metadata`) is a
    turn's `Params`, under the same names and limits: passed to the provider as given and recorded
    in the reply's `generation.params`. Unknown fields are ignored; fields convtree cannot honour
    are refused, by name: `n` above 1 (one reply per turn), `functions` and `function_call` (use
    `tools`), `audio` and an audio `modalities`."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=schemas.NO_NUL)]
    messages: Annotated[list[InputMessage], msgspec.Meta(min_length=1, max_length=10_000)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Wider than Params.stop: a lone string too, as OpenAI's API takes it (_chat lists it).
    stop: str | Annotated[list[str], msgspec.Meta(max_length=4)] | None = None  # type: ignore[assignment]
    n: int | None = None
    user: str | None = None
    functions: Any = None  # refused: use tools
    function_call: Any = None  # refused: use tool_choice
    audio: Any = None  # refused: no audio output
    modalities: list[str] | None = None  # refused unless text only
    conversation_id: uuid.UUID | None = None
    parent_message_id: uuid.UUID | None = None
    window: windows.Window = msgspec.field(default_factory=windows.FullWindow)


class ReplyMessage(msgspec.Struct):
    """The assistant's message as OpenAI gives it: `content` null when tool calls carry it;
    `tool_calls` and `reasoning_content` only when the model gave them."""

    role: str
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | msgspec.UnsetType = msgspec.UNSET
    reasoning_content: str | None | msgspec.UnsetType = msgspec.UNSET


class Choice(msgspec.Struct):
    index: int
    message: ReplyMessage
    finish_reason: str
    logprobs: None = None


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(msgspec.Struct, kw_only=True):
    """OpenAI's `chat.completion`, plus where the reply is stored."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None
    system_fingerprint: None = None
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    provider: str


class ChunkFunction(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ChunkToolCall(msgspec.Struct, omit_defaults=True):
    """A fragment of a tool call, as OpenAI streams it: fragments of one `index` are one call."""

    index: int
    id: str | None = None
    type: str | None = None
    function: ChunkFunction | None = None


class ChunkDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: None = None
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    provider: str


class Model(msgspec.Struct):
    id: str  # "provider/model"
    owned_by: str  # the provider
    object: str = "model"
    created: int = 0


class ModelList(msgspec.Struct):
    data: list[Model]
    object: str = "list"


class OpenAICompatController(Controller):
    path = "/v1"
    tags = ["openai-compatible"]

    @post(
        "/chat/completions",
        status_code=200,
        opt={"streams": True},
        summary="Chat completion (OpenAI-compatible), stored as a turn",
        description="Standard request and response (and `chat.completion.chunk` events ending in "
        "`data: [DONE]` when streamed), plus `conversation_id`, `message_id` and `provider` in every "
        "response, and the same ids in the `Convtree-Conversation-Id` and `Convtree-Message-Id` headers. "
        "Without `conversation_id` a new conversation is made of `messages` (a chain; the last, a "
        "user message or a tool result, is the turn), or, with auto-threading (`Convtree-Auto-Thread: on`, or "
        "the key's default), the stored conversation they continue is continued. With `conversation_id`, the "
        "history is the path to the head or to `parent_message_id` (continue or branch from it): send only the "
        "new message(s), or the whole history again (it is read as one when its first message is the path's "
        "root, said exactly): only the messages that differ from the path are appended, a history that "
        "differs at message k is a branch from message k-1. After a reply that asks for tools, send the `tool` "
        "results (each with its `tool_call_id`) and the turn goes on. Messages are stored as sent (content "
        "parts, `tool_calls`, `tool_call_id`, `name`), the reply as the model gave it (`tool_calls`, `refusal`, "
        "`reasoning_content`); a streamed reply relays `delta.tool_calls` fragments as they come. `model` is "
        '"provider/model" or a model name any configured provider offers. A stream that fails sends '
        '`data: {"error": {...}}` instead of `[DONE]`. Errors are OpenAI\'s error object, '
        '`{"error": {"message", "type", "param", "code"}}` (`code`: the slug of the problem convtree would '
        "answer elsewhere; `context`: where the turn is stored, when it is); a rate limit is a 429 with a "
        "`Retry-After` header. An `Idempotency-Key` "
        "makes a retry (OpenAI's clients retry by default) safe: the same key and request get the stored "
        "completion (a stream of it when `stream` is set), without calling the model again.",
        responses=responses(*TURN_ERRORS, openai=True),
    )
    async def chat_completions(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[ChatCompletionRequest],
        caller: NamedDependency[Caller],
        turns_service: NamedDependency[Turns],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
        auto_thread: Annotated[str | None, AUTO_THREAD] = None,
    ) -> Response[ChatCompletion]:
        threaded = caller.auto_thread if auto_thread is None else _switch(auto_thread)
        begun = await turns_service.chat(caller, _chat(data, threaded), keyed(request, data), relay=data.stream)
        include_usage = data.stream_options is not None and data.stream_options.include_usage
        if isinstance(begun, turns_app.Answered):
            return _replayed(begun, stream=data.stream, include_usage=include_usage)
        generation = begun
        plan = generation.plan
        created = int(time.time())
        ids = _ids(plan.conversation_id, plan.reply_id)
        if data.stream:
            # The return annotation is the JSON answer's OpenAPI schema (litestar reads it); a streamed
            # request is answered with a Stream, documented by the route's `streams` option.
            stream = sse.response(_chunks(request, generation, created, include_usage, turns_service.keepalive), ids)
            return stream  # type: ignore[return-value]
        reply = await settled_reply(request.receive, generation)
        # Stamped with the reply's time, as a retry's replay is.
        completion = _completion(plan.conversation_id, reply, int(reply.created_at.timestamp()))
        return json_response(completion, 200, ids)

    @get(
        "/models",
        summary="The configured providers' models (OpenAI-compatible list)",
        description='Ids are "provider/model", as `model` accepts them.',
        responses=responses(errors.Unauthorized, 422, openai=True),
    )
    async def models(self, caller: NamedDependency[Caller], turns_service: NamedDependency[Turns]) -> ModelList:
        listed = await turns_service.models()
        return ModelList(data=[Model(id=f"{p}/{m}", owned_by=p) for p, m in listed])


def _switch(value: str) -> bool:
    setting = value.strip().lower()
    if setting not in ("on", "off"):
        raise errors.InvalidRequest("Convtree-Auto-Thread is `on` or `off`.", parameter="Convtree-Auto-Thread")
    return setting == "on"


def _ids(conversation_id: uuid.UUID, message_id: uuid.UUID) -> dict[str, str]:
    return {CONVERSATION_ID_HEADER: str(conversation_id), MESSAGE_ID_HEADER: str(message_id)}


def _chat(data: ChatCompletionRequest, auto_thread: bool = False) -> turns_app.Chat:
    _refuse_unhonoured(data)
    stop = [data.stop] if isinstance(data.stop, str) else data.stop
    return turns_app.Chat(
        messages=[_sent(i, m) for i, m in enumerate(data.messages)],
        model=data.model,
        conversation_id=data.conversation_id,
        parent_message_id=data.parent_message_id,
        window=data.window,
        params=carried(turns_app.Params, data, stop=stop or None),
        auto_thread=auto_thread,
    )


def _refuse_unhonoured(data: ChatCompletionRequest) -> None:
    """Refuse, by name, what OpenAI's API does and convtree cannot: silently doing less than asked
    would be worse than saying so."""
    if data.n is not None and data.n != 1:
        raise errors.InvalidRequest(
            "n: only one choice per completion is supported (a conversation stores one reply per turn; "
            "regenerate for another).",
            parameter="n",
        )
    for name, instead in (("functions", "tools"), ("function_call", "tool_choice")):
        if getattr(data, name) is not None:
            raise errors.InvalidRequest(f"{name} is not supported: use {instead}.", parameter=name)
    if data.audio is not None or (data.modalities is not None and set(data.modalities) - {"text"}):
        parameter = "audio" if data.audio is not None else "modalities"
        raise errors.InvalidRequest(f"{parameter}: only text output is supported.", parameter=parameter)


def _sent(index: int, message: InputMessage) -> turns_app.Sent:
    """The message as it is stored: every field as sent, a null name, tool_calls or tool_call_id
    as absent; refused, naming the field, if no model API would take it (message.check)."""
    absent = {
        name: UNSET
        for name in ("name", "tool_calls", "tool_call_id")
        if getattr(message, name) is None
    }
    sent = carried(turns_app.Sent, message, **absent)
    try:
        check(sent)
    except errors.InvalidMessage as exc:
        field = exc.context.get("field")
        raise errors.InvalidRequest(
            f"messages[{index}]: {exc.detail}",
            parameter=f"messages[{index}]" + ("" if field is None else f".{field}"),
        ) from exc
    return sent


def _reply_message(reply: views.Message) -> ReplyMessage:
    content = reply.content
    return ReplyMessage(
        role="assistant",
        content=text_of(reply) if isinstance(content, list) else (None if content is UNSET else content),
        refusal=None if reply.refusal is UNSET else reply.refusal,
        tool_calls=reply.tool_calls,
        reasoning_content=reply.reasoning_content,
    )


def _completion(conversation_id: uuid.UUID, reply: views.Message, created: int) -> ChatCompletion:
    generation = reply.generation
    assert generation is not None
    return ChatCompletion(
        id=f"chatcmpl-{reply.id.hex}",
        created=created,
        model=generation.model,
        choices=[Choice(0, _reply_message(reply), generation.finish_reason or "stop")],
        usage=_usage(reply),
        conversation_id=conversation_id,
        message_id=reply.id,
        provider=generation.provider,
    )


def _delta(piece: Said) -> ChunkDelta:
    """One piece of a reply, as the delta of a chunk."""
    if isinstance(piece, TextDelta):
        return ChunkDelta(content=piece.text)
    if isinstance(piece, ReasoningDelta):
        return ChunkDelta(reasoning_content=piece.text)
    if isinstance(piece, RefusalDelta):
        return ChunkDelta(refusal=piece.text)
    function = None if piece.name is None and piece.arguments is None else ChunkFunction(piece.name, piece.arguments)
    return ChunkDelta(tool_calls=[ChunkToolCall(piece.index, piece.id, piece.type, function)])


def _whole_deltas(reply: views.Message) -> list[ChunkDelta]:
    """A stored reply as the deltas of a stream of it: each field whole, in one delta (its tool
    calls together in the last)."""
    pieces = progress.whole(reply)
    deltas = [_delta(piece) for piece in pieces if not isinstance(piece, ToolCallDelta)]
    calls = [call for piece in pieces if isinstance(piece, ToolCallDelta) for call in _delta(piece).tool_calls or []]
    if calls:
        deltas.append(ChunkDelta(tool_calls=calls))
    return deltas


def _replayed(answered: turns_app.Answered, *, stream: bool, include_usage: bool) -> Response[Any]:
    """A retry's answer: the stored completion, as JSON or, for a streamed request, as a stream of
    its chunks (the whole text in one), never a second call to the model."""
    reply = answered.reply
    g = reply.generation
    if g is None:  # not a reply a model wrote: cannot be, a key's reply is always one
        raise errors.ReplyAbandoned()
    created = int(reply.created_at.timestamp())
    headers = {**REPLAYED, **_ids(answered.conversation_id, reply.id)}
    if not stream:
        return json_response(_completion(answered.conversation_id, reply, created), 200, headers)

    def chunk(delta: ChunkDelta, finish_reason: str | None = None, usage: Usage | None = None) -> bytes:
        value = ChatCompletionChunk(
            id=f"chatcmpl-{reply.id.hex}",
            created=created,
            model=g.model,
            choices=[] if usage is not None else [ChunkChoice(0, delta, finish_reason)],
            usage=usage,
            conversation_id=answered.conversation_id,
            message_id=reply.id,
            provider=g.provider,
        )
        return sse.event(None, _encode(value))

    chunks = [
        chunk(ChunkDelta(role="assistant", content="")),
        *(chunk(delta) for delta in _whole_deltas(reply)),
        chunk(ChunkDelta(), g.finish_reason or "stop"),
    ]
    usage = _usage(reply)
    if include_usage and usage is not None:
        chunks.append(chunk(ChunkDelta(), usage=usage))
    return sse.response(sse.replay(*chunks, sse.event(None, b"[DONE]")), headers)


def _chunks(
    request: Request[Any, Any, State], generation: ReplyInFlight, created: int, include_usage: bool, quiet: float
) -> AsyncIterator[bytes]:
    plan = generation.plan

    def chunk(
        delta: ChunkDelta | None, finish_reason: str | None = None, model: str | None = None, usage: Usage | None = None
    ) -> bytes:
        # No delta: the usage chunk, whose `choices` is empty.
        value = ChatCompletionChunk(
            id=_completion_id(plan),
            created=created,
            model=model or plan.model,
            choices=[] if delta is None else [ChunkChoice(0, delta, finish_reason)],
            usage=usage,
            conversation_id=plan.conversation_id,
            message_id=plan.reply_id,
            provider=plan.provider.name,
        )
        return sse.event(None, _encode(value))

    def deltas(pieces: list[Said]) -> bytes:
        return b"".join(chunk(_delta(piece)) for piece in pieces)

    def end(settled: Settled) -> Iterator[bytes]:
        if settled.error is not None or settled.reply is None or settled.reply.generation is None:
            problem = stream_error(request, settled.error or errors.ReplyAbandoned(), settled.reply)
            yield sse.event(None, _encode({"error": openai_error(problem), "problem": problem}))
            return
        g = settled.reply.generation
        yield chunk(ChunkDelta(), g.finish_reason or "stop", g.model)
        if include_usage:
            yield chunk(None, model=g.model, usage=_usage(settled.reply))
        yield sse.event(None, b"[DONE]")

    # The first chunk carries the ids, in one write with the text so far (see service.api.turns).
    return relayed(
        generation,
        quiet,
        first=lambda pieces: chunk(ChunkDelta(role="assistant", content="")) + deltas(pieces),
        more=lambda pieces: deltas(pieces) or sse.KEEPALIVE,
        end=end,
    )


def _usage(reply: views.Message) -> Usage | None:
    g = reply.generation
    if g is None or g.prompt_tokens is None or g.completion_tokens is None:
        return None
    return Usage(g.prompt_tokens, g.completion_tokens, g.prompt_tokens + g.completion_tokens)


def _completion_id(plan: turns_app.Plan) -> str:
    return f"chatcmpl-{plan.reply_id.hex}"


_encode = msgspec.json.Encoder().encode


class OpenAIController(OpenAICompatController):
    """The same routes under the OpenAI base path (`/openai/v1`), where a client's `base_url` points;
    `/v1/chat/completions` and `/v1/models` stay as their aliases."""

    path = OPENAI_BASE
    tags = ["openai"]
