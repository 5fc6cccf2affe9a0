"""The Ollama-compatible API: `POST /api/chat` (NDJSON streamed by default, or one JSON answer),
`GET /api/tags`, `POST /api/show` and `GET /api/version`, so Ollama's clients work against convtree
with an `Authorization: Bearer <key>` header. A chat is a turn like any other (Turns.chat); the
messages convert as service/domain/ollama.py says."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream

import service
from service.api import schemas
from service.api.deps import REPLAYED, json_response, keyed
from service.api.problems import responses
from service.api.turns import IDEMPOTENCY_KEY, TURN_ERRORS, relayed, settled_reply, stream_error
from service.app import turn as turns_app
from service.app.caller import Caller
from service.app.services import Turns
from service.app.turn import ReplyInFlight, Settled
from service.app.turn.plan import Stop, Temperature, Tools, TopP
from service.domain import errors, views
from service.domain.ollama import OllamaMessage, done_reason, ollama_message, response_format, utterances
from service.upstream import ReasoningDelta, RefusalDelta, Said, TextDelta, ToolCallDelta

MEDIA_TYPE = "application/x-ndjson"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may buffer a stream
EPOCH = "1970-01-01T00:00:00Z"  # the `modified_at` of every model: convtree does not know when a provider's changed

class Options(msgspec.Struct, kw_only=True):
    """Ollama's `options`: those a turn's params have are honoured (`num_predict` is `max_tokens`;
    0 or less, Ollama's "no limit", is the provider's default); the others (`num_ctx`, `top_k`, …)
    are the model server's own and are ignored, as Ollama ignores options a model does not have."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: int | None = None
    num_predict: int | None = None
    stop: Stop | None = None


class ChatBody(msgspec.Struct, kw_only=True):
    """Ollama's chat request. `tools` (Ollama's are OpenAI's: `{"type": "function", "function":
    {"name", "description", "parameters"}}`) are the turn's, passed to the provider as given;
    `format` is the turn's `response_format` (service/domain/ollama.py `response_format`).
    `think` is the turn's `reasoning_effort` (true: "medium", the level a thinking model defaults
    to; "low", "medium", "high" as given; false or absent: not asked), and the reply's reasoning is
    answered as `thinking`. `keep_alive` is the model server's to act on and is ignored."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=schemas.NO_NUL)]
    messages: Annotated[list[OllamaMessage], msgspec.Meta(max_length=10_000)] = []
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    tools: Tools | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    keep_alive: float | str | None = None


class ChatAnswer(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of a streamed chat (or the whole answer): Ollama's fields, the durations in
    nanoseconds, plus where the reply is stored (`conversation_id`, `message_id`) and who gave it.

    The durations are the reply's as recorded: `total_duration` from the request to the provider
    until its last token, `prompt_eval_duration` until its first, `eval_duration` between them;
    `load_duration` is 0 (loading, if any, is inside the provider's first token). The counts are
    the provider's token counts."""

    model: str
    created_at: str
    message: OllamaMessage
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    conversation_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    provider: str | None = None


class ModelDetails(msgspec.Struct, kw_only=True):
    family: str  # the provider
    families: list[str]
    parent_model: str = ""
    format: str = ""
    parameter_size: str = ""
    quantization_level: str = ""


class TagModel(msgspec.Struct, kw_only=True):
    name: str  # "provider/model", as `model` accepts it
    model: str
    modified_at: str
    size: int  # 0: convtree holds no weights
    digest: str  # SHA-256 of the name: stable, not of any weights
    details: ModelDetails


class Tags(msgspec.Struct):
    models: list[TagModel]


class ShowBody(msgspec.Struct, kw_only=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=schemas.NO_NUL)]


class ShowAnswer(msgspec.Struct, kw_only=True):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class Version(msgspec.Struct):
    version: str  # convtree's


class OllamaController(Controller):
    path = "/api"
    tags = ["ollama-compatible"]

    @post(
        "/chat",
        status_code=200,
        opt={"streams": "ndjson"},
        summary="Chat (Ollama-compatible), stored as a turn",
        description="Ollama's request and answer. Streamed by default as `application/x-ndjson`, one JSON "
        "object a line (the text as it comes, then a last line with `done: true`, `done_reason`, the counts "
        "and durations in nanoseconds); with `stream: false` one JSON object. Every line and the answer "
        "also carry `conversation_id`, `message_id` (the stored reply) and `provider`. `messages` is the "
        "whole history, the last a user message or a tool's result; auto-threading is on: the stored "
        "conversation whose path it continues is continued (only the messages the path lacks are appended), "
        "or a new one is made (images are stored as `image_url` parts with a data: URL, `thinking` as "
        "`reasoning_content`, tool calls with derived ids, a tool message's `tool_name` as its `name` and "
        "the call it answers found by it: service/domain/ollama.py). `tools` are passed to the model; a reply "
        "that asks for them has `message.tool_calls` (`{id, function: {name, arguments: <object>}}`, whole, in "
        "a stream's last line) and `done_reason: \"stop\"`, as Ollama answers; it is stored as an Ollama "
        "client sends it back, so that the follow-up with the tool results (`role: \"tool\"`, `tool_name`) and "
        "the whole history continues the same path. `format` (\"json\" or a JSON schema) is the turn's "
        "`response_format`. `model` is resolved as on /v1/chat/completions. `options` "
        "temperature, top_p, seed, num_predict and stop are the turn's params, other options, `think` and "
        "`keep_alive` are ignored. Errors are Ollama's `{\"error\": "
        '"<message>"}` (beside the problem\'s fields); a stream that fails ends with such a line. Without '
        "`messages` the answer is Ollama's `done_reason: \"load\"` and nothing is stored.",
        responses=responses(*TURN_ERRORS),
    )
    async def chat(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[ChatBody],
        caller: NamedDependency[Caller],
        turns_service: NamedDependency[Turns],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[ChatAnswer]:
        if not data.messages:  # Ollama's way to load a model: there is nothing to load
            loaded = ChatAnswer(
                model=data.model, created_at=_now(), message=OllamaMessage(role="assistant", content=""),
                done=True, done_reason="load",
            )  # fmt: skip
            if data.stream:
                return _lines(_once(_encode(loaded)))  # type: ignore[return-value]
            return json_response(loaded, 200)
        begun = await turns_service.chat(caller, _chat(data), keyed(request, data), relay=data.stream)
        if isinstance(begun, turns_app.Answered):
            return _replayed(begun, stream=data.stream)
        if data.stream:
            # The return annotation is the JSON answer's OpenAPI schema; a stream is documented beside it.
            return _lines(_stream(request, begun, turns_service.keepalive))  # type: ignore[return-value]
        reply = await settled_reply(request.receive, begun)
        return json_response(_answer(begun.plan.conversation_id, reply), 200)

    @get(
        "/tags",
        summary="The configured providers' models (Ollama-compatible list)",
        description='Names are "provider/model", as `model` accepts them; size, digest and dates are '
        "placeholders (convtree holds no weights).",
        responses=responses(errors.Unauthorized, 422),
    )
    async def list_models(self, caller: NamedDependency[Caller], turns_service: NamedDependency[Turns]) -> Tags:
        listed = await turns_service.models()
        return Tags(models=[_tag(p, m) for p, m in listed])

    @post(
        "/show",
        status_code=200,
        summary="A model's details (Ollama-compatible)",
        description="For a model name as `model` accepts it, when its provider lists it; 404 otherwise.",
        responses=responses(
            errors.Unauthorized, 422, 400, errors.JsonTooDeep, errors.ModelNotFound, errors.UnknownProvider
        ),
    )
    async def show(
        self, data: JSONBody[ShowBody], caller: NamedDependency[Caller], turns_service: NamedDependency[Turns]
    ) -> ShowAnswer:
        provider, model = await turns_service.model(data.model)
        return ShowAnswer(
            modelfile="",
            parameters="",
            template="",
            details=_details(provider),
            model_info={"general.basename": model, "convtree.provider": provider},
            capabilities=["completion"],
            modified_at=EPOCH,
        )

    @get(
        "/version",
        summary="convtree's version (Ollama-compatible)",
        responses=responses(errors.Unauthorized, database=False),
    )
    async def version(self, caller: NamedDependency[Caller]) -> Version:
        return Version(service.__version__)


def _chat(data: ChatBody) -> turns_app.Chat:
    o = data.options or Options()
    params = turns_app.Params(
        temperature=o.temperature,
        top_p=o.top_p,
        seed=o.seed,
        max_tokens=o.num_predict if o.num_predict is not None and o.num_predict > 0 else None,
        stop=o.stop or None,
        tools=data.tools or None,
        response_format=response_format(data.format),
        reasoning_effort="medium" if data.think is True else data.think or None,
    )
    # The reply is stored in the form an Ollama client sends it back: service/domain/ollama.py.
    return turns_app.Chat(
        messages=utterances(data.messages), model=data.model, params=params, auto_thread=True, reply_form="ollama"
    )


def _answer(conversation_id: uuid.UUID, reply: views.Message) -> ChatAnswer:
    """The whole reply as Ollama answers a chat that is not streamed (and as a stream's last line,
    without the text already streamed)."""
    g = reply.generation
    if g is None:  # not a reply a model wrote: cannot be, a turn's reply always is one
        raise errors.ReplyAbandoned()
    first = g.first_token_ms if g.first_token_ms is not None else g.latency_ms
    return ChatAnswer(
        model=g.model,
        created_at=_time(reply.created_at),
        message=ollama_message(reply),
        done=True,
        done_reason=done_reason(g.finish_reason),
        total_duration=_ns(g.latency_ms),
        load_duration=0,
        prompt_eval_count=g.prompt_tokens,
        prompt_eval_duration=_ns(first),
        eval_count=g.completion_tokens,
        eval_duration=_ns(g.latency_ms - first),
        conversation_id=conversation_id,
        message_id=reply.id,
        provider=g.provider,
    )


def _last(conversation_id: uuid.UUID, reply: views.Message) -> ChatAnswer:
    """A stream's last line: the reply's other fields (tool calls), its text and thinking streamed already."""
    answer = _answer(conversation_id, reply)
    answer.message.content = ""
    answer.message.thinking = msgspec.UNSET
    answer.message.images = msgspec.UNSET
    return answer


def _replayed(answered: turns_app.Answered, *, stream: bool) -> Response[Any]:
    """A retry's answer: the stored reply, as JSON or as a stream of two lines (its text, then the
    last line), never a second call to the model."""
    reply = answered.reply
    whole = _answer(answered.conversation_id, reply)
    if not stream:
        return json_response(whole, 200, REPLAYED)
    text = ChatAnswer(
        model=whole.model,
        created_at=whole.created_at,
        message=OllamaMessage(role="assistant", content=whole.message.content, thinking=whole.message.thinking),
        done=False,
        conversation_id=whole.conversation_id,
        message_id=whole.message_id,
        provider=whole.provider,
    )
    return _lines(_once(_encode(text), _encode(_last(answered.conversation_id, reply))), REPLAYED)


def _stream(request: Request[Any, Any, State], generation: ReplyInFlight, quiet: float) -> AsyncIterator[bytes]:
    plan = generation.plan

    def line(piece: TextDelta | ReasoningDelta | RefusalDelta | str) -> bytes:
        # Text (and a refusal, which Ollama has no field for) as `content`, reasoning as `thinking`.
        if isinstance(piece, ReasoningDelta):
            message = OllamaMessage(role="assistant", content="", thinking=piece.text)
        else:
            message = OllamaMessage(role="assistant", content=piece if isinstance(piece, str) else piece.text)
        value = ChatAnswer(
            model=plan.model, created_at=_now(), message=message, done=False,
            conversation_id=plan.conversation_id, message_id=plan.reply_id, provider=plan.provider.name,
        )  # fmt: skip
        return _encode(value)

    def lines(pieces: list[Said]) -> bytes:
        return b"".join(line(piece) for piece in _said(pieces))

    def end(settled: Settled) -> Iterator[bytes]:
        if settled.error is not None or settled.reply is None or settled.reply.generation is None:
            problem = stream_error(request, settled.error or errors.ReplyAbandoned(), settled.reply)
            yield _encode({"error": problem.detail or problem.title, "problem": problem})
        else:
            yield _encode(_last(plan.conversation_id, settled.reply))

    # The text so far in the first write (see service.api.turns). While it is quiet, a line with no
    # text keeps the connection alive (NDJSON has no comments, and an Ollama client reads every line
    # as a JSON object). Tool calls come whole in the last line, as Ollama sends them: their
    # fragments make no line.
    return relayed(
        generation,
        quiet,
        first=lambda pieces: line("") + lines(pieces),
        more=lambda pieces: lines(pieces) if pieces else line(""),
        end=end,
    )


def _said(pieces: Iterable[Said]) -> list[TextDelta | ReasoningDelta | RefusalDelta]:
    """The pieces a stream's lines carry as they come: all but tool-call fragments."""
    return [piece for piece in pieces if not isinstance(piece, ToolCallDelta)]


def _tag(provider: str, model: str) -> TagModel:
    name = f"{provider}/{model}"
    return TagModel(
        name=name,
        model=name,
        modified_at=EPOCH,
        size=0,
        digest=hashlib.sha256(name.encode()).hexdigest(),
        details=_details(provider),
    )


def _details(provider: str) -> ModelDetails:
    return ModelDetails(family=provider, families=[provider])


def _lines(lines: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Stream:
    return Stream(lines, media_type=MEDIA_TYPE, status_code=200, headers={**HEADERS, **(headers or {})})


async def _once(*lines: bytes) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


def _ns(ms: float) -> int:
    return max(0, round(ms * 1_000_000))


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now() -> str:
    return _time(datetime.now(UTC))


_encoder = msgspec.json.Encoder()


def _encode(value: Any) -> bytes:
    """One NDJSON line (msgspec never writes a raw newline inside)."""
    return _encoder.encode(value) + b"\n"
