"""HTTP routes for turns and regenerations: the model's reply as one JSON body, or as server-sent events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.types import Receive

from service.api import problems, schemas, sse
from service.api.deps import REPLAYED, json_response, keyed
from service.api.problems import responses
from service.app import turn as turns_app
from service.app import window as windows
from service.app.caller import Caller
from service.app.turn import CLIENT_LEFT, ReplyInFlight, Settled
from service.app.turn.follow import Ended, Located
from service.app.services import Turns
from service.domain import errors, views
from service.domain.events import Interruption
from service.domain.message import carried, text_of
from service.upstream import Said, TextDelta

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=schemas.NO_NUL)]
PARAMS_DOC = "Sampling parameters (temperature, max_tokens, top_p, stop, seed); unset ones are the provider's defaults."
WINDOW_DOC = (
    'Which messages the model sees: {"strategy": "full"} (default), {"strategy": "last", "messages": N} '
    '(the final N, and every system message), or {"strategy": "tokens", "max_tokens": T} (the newest '
    "that fit T prompt tokens of the model's vocabulary, and every system message)."
)

WindowField = Annotated[windows.Window, msgspec.Meta(description=WINDOW_DOC)]
ParamsField = Annotated[turns_app.Params, msgspec.Meta(description=PARAMS_DOC)]


# What becomes of the reply when its client leaves before it is complete: "stop" the model (the text
# so far is recorded, interrupted), or "continue" generating it to its end, recorded as if the
# client had stayed; the client (or any other) follows it with GET …/turns/{reply_id}/events.
OnDisconnect = Annotated[
    Literal["stop", "continue"],
    msgspec.Meta(
        description="When the client leaves before the reply is complete: `stop` the model (the text so far "
        "is recorded as an interrupted reply), or `continue` generating it to its end (resume it with "
        "GET …/turns/{reply_id}/events and Last-Event-ID)."
    ),
]


class TurnBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    content: schemas.Content
    id: uuid.UUID | None = None
    parent_message_id: uuid.UUID | None = None
    metadata: schemas.Metadata = {}
    provider: Name | None = None
    model: Name | None = None
    stream: bool = False
    window: WindowField = msgspec.field(default_factory=windows.FullWindow)
    params: ParamsField = msgspec.field(default_factory=turns_app.Params)
    on_disconnect: OnDisconnect = "stop"


class RegenerateBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    provider: Name | None = None
    model: Name | None = None
    stream: bool = False
    window: WindowField = msgspec.field(default_factory=windows.FullWindow)
    params: ParamsField = msgspec.field(default_factory=turns_app.Params)
    on_disconnect: OnDisconnect = "stop"


class TurnStarted(msgspec.Struct, kw_only=True):
    """The first event of a streamed turn: its ids, known before the model says anything."""

    conversation_id: uuid.UUID
    user_message_id: uuid.UUID
    assistant_message_id: uuid.UUID
    provider: str | None
    model: str | None


class TurnResult(TurnStarted, kw_only=True):
    user_message: views.Message
    assistant_message: views.Message


class Delta(msgspec.Struct):
    text: str


class StreamError(problems.Problem, kw_only=True):
    """The `error` event: a problem naming the provider and cause, and the reply as stored, if any."""

    message: views.Message | None = None


TURN_ERRORS = (
    errors.Unauthorized,
    422,
    400,
    errors.JsonTooDeep,
    errors.ConversationNotFound,
    errors.ParentNotFound,
    errors.MessageIdConflict,
    errors.ParentStillGenerating,
    errors.ReplyInProgress,
    errors.IdempotencyKeyReused,
    errors.UnknownProvider,
    errors.UpstreamError,
    errors.UpstreamRateLimited,
    errors.UpstreamTimeout,
    errors.ReplyInterrupted,
    errors.ServiceShuttingDown,
    errors.ReplyAbandoned,
    errors.ReplyNotRecorded,
)
STREAM_DOC = (
    " With `stream: true` the answer is `text/event-stream`: `turn` (the ids, before the first token), "
    "`delta` ({text}) for each piece, then `done` (the stored reply, with its `generation`) or `error` "
    "(a problem naming the provider and cause, with the reply as stored if any text had arrived). Each "
    "event's `id:` is its position: `turn` 0, a `delta` the number of the reply's characters (Unicode "
    "code points) sent once it is read, the last event one more than the whole text's. A client that "
    "lost the stream resumes it after a position, from any server process: GET "
    "`/v1/conversations/{conversation_id}/turns/{assistant_message_id}/events` with `Last-Event-ID`."
)


IDEMPOTENCY_KEY = HeaderParameter(
    name="Idempotency-Key",
    required=False,
    max_length=255,
    description="Makes a retry safe: a retry with the same key and request gets the turn's stored outcome "
    "(the reply as recorded, replayed with the original status, or as a stream of the stored reply when "
    "`stream` is set) without calling the model again; one arriving while the reply is being generated waits "
    "for it; after a failure it tries the reply again. The same key with another request is a 422 problem.",
)


LAST_EVENT_ID = HeaderParameter(
    name="Last-Event-ID",
    required=False,
    max_length=20,
    description="The `id:` of the last event the client read (what a browser's EventSource sends when it "
    "reconnects): the stream resumes after it. It wins over `after`.",
)


class TurnController(Controller):
    path = "/v1/conversations"
    tags = ["turns"]

    @post(
        "/{conversation_id:str}/turns",
        status_code=201,
        opt={"streams": True},
        summary="Take a turn: a user message and the model's reply",
        description="The user message is appended under `parent_message_id` (default: the head), its path "
        "is windowed and sent to the model, and the reply is appended under it; the head moves to the reply. "
        "To edit a user message, take a turn with `parent_message_id` set to that message's parent (a new "
        "branch). If the model fails before any text, the user message stays and a `turn_failed` event "
        "records why (502/504); if it fails or is cut short after some text, that text is stored as the "
        "reply with finish_reason `interrupted`. A client `id` or an Idempotency-Key makes a retry safe: "
        "it returns the turn's reply (200), or 409 while it is being generated, or after a failure tries "
        "again, never recording the message twice." + STREAM_DOC,
        responses={
            200: ResponseSpec(
                TurnResult,
                description="A retry: the turn this id already names. (With `stream: true` every answer "
                "that is not a problem is a 200 `text/event-stream`.)",
            ),
            **responses(*TURN_ERRORS),
        },
    )
    async def turn(
        self,
        request: Request[Any, Any, State],
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[TurnBody],
        caller: NamedDependency[Caller],
        turns_service: NamedDependency[Turns],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[TurnResult]:
        new = carried(turns_app.NewTurn, data, reply=carried(turns_app.ReplySpec, data))
        begun = await turns_service.turn(caller, conversation_id, new, keyed(request, data), relay=data.stream)
        if isinstance(begun, turns_app.Answered):
            return _answered(begun, stream=data.stream)
        return await _respond(
            request, begun, turns_service.keepalive, stream=data.stream, leave=_leaving(data.on_disconnect)
        )

    @get(
        "/{conversation_id:str}/turns/{reply_id:str}/events",
        opt={"streams": True},
        summary="Resume a streamed turn: its events after a position",
        description="The events of the turn whose reply is `reply_id` (the `assistant_message_id` of its "
        "`turn` event) after the position `Last-Event-ID` (or `after`) names, as its own stream sent or would "
        "have sent them, from any server process: no gap and no repeat. While the reply is being generated, "
        "its checkpointed text as it is written (the text its own stream was shown is always checkpointed "
        "first), however little it has said yet; then the rest of its text as recorded and the same last "
        "event: `done` (the stored reply) or `error` (the turn's problem as the log records it: interrupted, "
        "with the reply as stored, or failed). A reply recorded already is answered at once. No position: the "
        "whole stream, `turn` event first. Nothing after the position (the last event was read): 204. A "
        "follower never stops the model: the stream it follows is generated whatever becomes of it.",
        responses={
            200: ResponseSpec(
                str, media_type=sse.MEDIA_TYPE, description="The events after the position.", generate_examples=False
            ),
            204: ResponseSpec(None, description="Nothing lies after the position: the reply's last event was read."),
            **responses(errors.Unauthorized, 400, errors.InvalidRequest, errors.ConversationNotFound, errors.ReplyNotFound),
        },
    )
    async def events(
        self,
        request: Request[Any, Any, State],
        conversation_id: FromPath[uuid.UUID],
        reply_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        turns_service: NamedDependency[Turns],
        last_event_id: Annotated[str | None, LAST_EVENT_ID] = None,
        after: Annotated[
            int | None, QueryParameter(ge=0, description="The position after which the stream resumes.")
        ] = None,
    ) -> Response[Any]:
        position = _position(last_event_id, after)
        located = await turns_service.locate(caller, conversation_id, reply_id)
        numbered = Positions(position)
        if located.ended is not None and position is not None and position >= len(located.text) + 1:
            return Response(content=None, status_code=204)
        return sse.response(_resumed(request, turns_service, caller, located, numbered))

    @post(
        "/{conversation_id:str}/messages/{message_id:str}/regenerate",
        status_code=201,
        opt={"streams": True},
        summary="Regenerate a reply: a new sibling reply to the same message (a branch)",
        description="The message must be an assistant reply; the new reply answers the message it answered, "
        "with the same path as context (windowed), and the head moves to it. Failures as for a turn." + STREAM_DOC,
        responses={
            200: ResponseSpec(
                str, media_type=sse.MEDIA_TYPE, description="With `stream: true`: the events.", generate_examples=False
            ),
            **responses(*TURN_ERRORS, errors.MessageNotFound),
        },
    )
    async def regenerate(
        self,
        request: Request[Any, Any, State],
        conversation_id: FromPath[uuid.UUID],
        message_id: FromPath[uuid.UUID],
        data: JSONBody[RegenerateBody],
        caller: NamedDependency[Caller],
        turns_service: NamedDependency[Turns],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[TurnResult]:
        spec = carried(turns_app.ReplySpec, data)
        begun = await turns_service.regenerate(
            caller, conversation_id, message_id, spec, keyed(request, data), relay=data.stream
        )
        if isinstance(begun, turns_app.Answered):
            return _answered(begun, stream=data.stream)
        return await _respond(
            request, begun, turns_service.keepalive, stream=data.stream, leave=_leaving(data.on_disconnect)
        )


def _leaving(on_disconnect: str) -> Interruption | None:
    """What a client's leaving does to its reply: stop it (why, as recorded), or nothing."""
    return CLIENT_LEFT if on_disconnect == "stop" else None


async def _respond(
    request: Request[Any, Any, State],
    generation: ReplyInFlight,
    quiet: float,
    *,
    stream: bool,
    leave: Interruption | None = CLIENT_LEFT,
) -> Response[Any]:
    plan = generation.plan
    started = TurnStarted(
        conversation_id=plan.conversation_id,
        user_message_id=plan.user_message.id,
        assistant_message_id=plan.reply_id,
        provider=plan.provider.name,
        model=plan.model,
    )
    if stream:
        return sse.response(_events(request, generation, started, quiet, leave))
    reply = await settled_reply(request.receive, generation, leave)
    result = TurnResult(**msgspec.structs.asdict(started), user_message=plan.user_message, assistant_message=reply)
    return json_response(result, 201, {"Location": _location(reply)})


def _answered(answered: turns_app.Answered, *, stream: bool) -> Response[Any]:
    reply = answered.reply
    generation = reply.generation
    started = TurnStarted(
        conversation_id=answered.conversation_id,
        user_message_id=answered.user_message.id,
        assistant_message_id=reply.id,
        provider=None if generation is None else generation.provider,
        model=None if generation is None else generation.requested_model,
    )
    if stream:
        # The stored outcome as a stream: the ids, the whole text in one delta, the stored reply.
        numbered = Positions()
        events = (numbered.turn(started), numbered.deltas([TextDelta(text_of(reply))]), numbered.end("done", reply))
        return sse.response(sse.replay(*events), REPLAYED)
    result = TurnResult(**msgspec.structs.asdict(started), user_message=answered.user_message, assistant_message=reply)
    # A retry by key replays the original status; a retry by client id finds the turn it names.
    status = 201 if answered.by_key else 200
    return json_response(result, status, {**REPLAYED, "Location": _location(reply)})


def _events(
    request: Request[Any, Any, State],
    generation: ReplyInFlight,
    started: TurnStarted,
    quiet: float,
    leave: Interruption | None,
) -> AsyncIterator[bytes]:
    numbered = Positions()

    def end(settled: Settled) -> Iterator[bytes]:
        if settled.error is None:
            yield numbered.end("done", settled.reply)
        else:
            yield numbered.end("error", stream_error(request, settled.error, settled.reply))

    return relayed(
        generation,
        quiet,
        first=lambda pieces: numbered.turn(started) + numbered.deltas(pieces),
        more=lambda pieces: numbered.deltas(pieces) or sse.KEEPALIVE,
        end=end,
        leave=leave,
    )


class Positions:
    """A streamed turn's events, each with its position as its `id:`: the number of the reply's
    text characters (code points) the stream has carried once it is read. `turn` is 0, each `delta`
    the count after its text, the last event (`done` or `error`) one past the whole text. Resumed
    `after` a position, only what lies beyond it is written (a delta across it from there on), so
    the text is the same wherever the pieces came from (the reply's own stream, its checkpoints,
    its record): no gap and no repeat."""

    def __init__(self, after: int | None = None) -> None:
        self.at = 0
        self._after = -1 if after is None else after

    def turn(self, started: TurnStarted) -> bytes:
        return _sse("turn", started, 0) if self._after < 0 else b""

    def deltas(self, pieces: list[Said]) -> bytes:
        """The `delta` events of the text among `pieces`: a turn's stream relays the reply's text;
        the rest the model said (tool calls, reasoning) is in the stored reply its last event carries."""
        out: list[bytes] = []
        for piece in pieces:
            if not isinstance(piece, TextDelta) or not piece.text:
                continue
            start = self.at
            self.at += len(piece.text)
            if self.at > self._after:
                out.append(sse.event("delta", _encode(Delta(piece.text[max(0, self._after - start) :])), self.at))
        return b"".join(out)

    def end(self, event: str, value: Any) -> bytes:
        """The last event, unless the stream resumes after it."""
        return _sse(event, value, self.after_end) if self.after_end > self._after else b""

    @property
    def after_end(self) -> int:
        return self.at + 1


def _position(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is None:
        return after
    if not last_event_id.isascii() or not last_event_id.isdigit():
        raise errors.InvalidRequest(
            f"Last-Event-ID: {last_event_id!r} is not a position (the `id:` of an event of the stream).",
            parameter="Last-Event-ID",
        )
    return int(last_event_id)


async def _resumed(
    request: Request[Any, Any, State], service: Turns, caller: Caller, located: Located, numbered: Positions
) -> AsyncIterator[bytes]:
    """A turn's stream from its reply's checkpoints and record (turns_app.follow), numbered as its
    own stream was, only what lies after the position written; a keep-alive every `keepalive`
    seconds without anything to write."""
    started = TurnStarted(
        conversation_id=located.conversation_id,
        user_message_id=located.user_message_id,
        assistant_message_id=located.reply_id,
        provider=located.provider,
        model=located.model,
    )
    loop = asyncio.get_running_loop()
    last = loop.time()
    if written := numbered.turn(started):
        yield written
    async for step in service.follow(caller, located):
        if isinstance(step, Ended):
            if step.error is None:
                written = numbered.end("done", step.reply)
            else:
                written = numbered.end("error", stream_error(request, step.error, step.reply))
            if written:
                yield written
            return
        if written := numbered.deltas(step):
            last = loop.time()
            yield written
        elif loop.time() - last >= service.keepalive:
            last = loop.time()
            yield sse.KEEPALIVE


async def relayed(
    generation: ReplyInFlight,
    quiet: float,
    *,
    first: Callable[[list[Said]], bytes],
    more: Callable[[list[Said]], bytes],
    end: Callable[[Settled], Iterable[bytes]],
    leave: Interruption | None = CLIENT_LEFT,
) -> AsyncIterator[bytes]:
    """A reply in flight as the writes of a streamed answer, on every door: nothing before the turn
    is committed; then `first` of what arrived so far, in one write with the turn's ids; `more` of
    each later batch (an empty write is skipped), and of an empty batch, the door's keep-alive,
    every `quiet` seconds without a piece (the model slow to start, the record waiting for the
    database); then `end` of the outcome, in one write.
    A client that leaves (litestar cancels the stream as soon as it sees the disconnect) stops the
    model at once, `leave` saying why (the text so far is recorded); with no `leave`, the reply goes
    on to its end and is recorded whole."""
    settled: Settled | None = None
    try:
        if await generation.committed():
            yield first(generation.arrived())
            async for pieces in generation.deltas(quiet):
                if written := more(pieces):
                    yield written
        async for settled in generation.outcome(quiet):
            if settled is None:
                yield more([])
    finally:
        # Reached without an outcome only when the client left: stop the model now (if asked).
        if settled is None and leave is not None:
            generation.interrupt(leave)
    assert settled is not None
    yield b"".join(end(settled))


async def settled_reply(
    receive: Receive, generation: ReplyInFlight, leave: Interruption | None = CLIENT_LEFT
) -> views.Message:
    """The recorded reply of an answer that is not streamed (the turn's error raised, to be
    answered as a problem), interrupting the model (`leave` saying why) if the client disconnects
    while it waits; with no `leave`, the reply goes on to its end."""
    settled = await wait_settled(receive, generation, leave)
    if settled.error is not None:
        raise settled.error
    assert settled.reply is not None
    return settled.reply


async def wait_settled(
    receive: Receive, generation: ReplyInFlight, leave: Interruption | None = CLIENT_LEFT
) -> Settled:
    """The generation's outcome, interrupting it (`leave` saying why, if given) if the client
    disconnects while it waits."""
    disconnected = asyncio.ensure_future(_disconnect(receive))
    try:
        watched: set[asyncio.Future[Settled] | asyncio.Task[None]] = {generation.settled, disconnected}
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not generation.settled.done() and leave is not None:
            generation.interrupt(leave)
        return await asyncio.shield(generation.settled)
    finally:
        disconnected.cancel()


async def _disconnect(receive: Receive) -> None:
    # The body has been read, so the next message the server has for us is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


def stream_error(request: Request[Any, Any, State], error: BaseException, reply: views.Message | None) -> StreamError:
    if isinstance(error, errors.ConvtreeError):
        status, slug, title = problems.classify(error)
        detail = error.detail
        context = {k: v for k, v in error.context.items() if v is not None} or None
    else:  # logged where it happened (service.app.generation)
        status, slug, title = 500, "internal-error", "Internal server error"
        detail, context = "The reply could not be recorded; it has been logged under this request id.", None
    return StreamError(
        type=problems.problem_type(slug),
        title=title,
        status=status,
        detail=detail,
        context=context,
        instance=request.url.path,
        request_id=request.scope.get("state", {}).get("request_id"),
        message=reply,
    )


_encode = msgspec.json.Encoder().encode


def _sse(event: str, value: Any, position: int | None = None) -> bytes:
    return sse.event(event, _encode(value), position)


def _location(reply: views.Message) -> str:
    return f"/v1/conversations/{reply.conversation_id}/messages/{reply.id}"

