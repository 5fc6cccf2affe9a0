"""HTTP routes for replay runs: start one (or a batch), list a conversation's, follow one, cancel it, compare it with the original."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from service.api import schemas
from service.api.conversations import AUTH, IDEMPOTENCY_KEY, WRITE, Cursor, Limit
from service.api.deps import keyed, written
from service.api.problems import responses
from service.api.turns import Name, ParamsField, WindowField
from service.app import replay_runs as app
from service.app import window as windows
from service.app.caller import Caller
from service.app.services import Replays
from service.app.turn import Params
from service.domain import errors

MAX_BATCH_IDS = 10_000  # what a body may list at all; the configured bound (replay_batch_max) is checked after


class ReplayTarget(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    provider: Name | None = None
    model: Name | None = None
    params: ParamsField = msgspec.field(default_factory=Params)
    window: WindowField = msgspec.field(default_factory=windows.FullWindow)
    system: Annotated[
        schemas.Content | None, msgspec.Meta(description="Replaces the path's system message.")
    ] = None


Into = Annotated[
    Literal["fork", "branches"],
    msgspec.Meta(description="Where the new turns go: a fork of the source (default) or a branch of the source itself."),
]


class ReplayBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    leaf_message_id: Annotated[
        uuid.UUID | None, msgspec.Meta(description="The path to replay is root→this message (default: the head).")
    ] = None
    start_message_id: Annotated[
        uuid.UUID | None,
        msgspec.Meta(description="Replay the user turns at or below this message of the path (default: the root)."),
    ] = None
    target: ReplayTarget = msgspec.field(default_factory=ReplayTarget)
    into: Into = "fork"
    title: schemas.Title | None = None
    metadata: schemas.Metadata = {}


class ReplayBatchBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    conversation_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_BATCH_IDS)] | None = None
    metadata: Annotated[
        schemas.Metadata | None, msgspec.Meta(description="Replay every conversation whose metadata holds this object.")
    ] = None
    target: ReplayTarget = msgspec.field(default_factory=ReplayTarget)
    into: Into = "fork"


def _target(body: ReplayTarget) -> app.Target:
    return app.Target(
        provider=body.provider, model=body.model, params=body.params, window=body.window, system=body.system
    )


START_ERRORS = (
    *WRITE,
    errors.ConversationNotFound,
    errors.MessageNotFound,
    errors.UnknownProvider,
    errors.IdempotencyKeyReused,
)
RUN_ERRORS = (*AUTH, errors.ReplayRunNotFound)


class ReplayController(Controller):
    path = "/v1"
    tags = ["replays"]

    @post(
        "/conversations/{conversation_id:str}/replays",
        status_code=201,
        summary="Replay a recorded path against another model",
        description="Queues a run that sends each user message of the path root→`leaf_message_id` (default: the "
        "head), from `start_message_id` on (default: the root), to the `target` model in order, each with the new "
        "replies before it as context, and records every new reply with its generation and `replay_of`, the id of "
        "the reply it replaces. The turns go into a fork of the source (`into: fork`, the default; a new "
        "conversation when the first turn is the root or `target.system` replaces the system message) or a branch "
        "of the source (`into: branches`). A run survives restarts, and reports its progress here, on "
        "GET …/replays/{run_id} and in the event feed. At most the configured number of turns per run (422 beyond).",
        responses=responses(*START_ERRORS),
    )
    async def start(
        self,
        request: Request[Any, Any, State],
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[ReplayBody],
        caller: NamedDependency[Caller],
        replays_service: NamedDependency[Replays],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[app.ReplayRun]:
        new = app.NewReplay(
            leaf_id=data.leaf_message_id,
            start_message_id=data.start_message_id,
            target=_target(data.target),
            into=data.into,
            title=data.title,
            metadata=data.metadata,
        )
        started = await replays_service.start(caller, conversation_id, new, keyed(request, data))
        return written(started, lambda run: (201, run, None))

    @get(
        "/conversations/{conversation_id:str}/replays",
        summary="A conversation's replay runs, newest first",
        description="The runs that replay this conversation, and the run that wrote it (a fork or a new "
        "conversation, whose run's `conversation_id` is the source), each with its progress; a page at a time.",
        responses=responses(*AUTH, errors.ConversationNotFound, errors.InvalidRequest),
    )
    async def list_runs(
        self,
        conversation_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        replays_service: NamedDependency[Replays],
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> app.ReplayRunPage:
        return await replays_service.of_conversation(caller, conversation_id, limit, cursor)

    @get(
        "/conversations/{conversation_id:str}/replays/{run_id:str}",
        summary="A replay run's progress",
        description="Its status (queued, running, finished, failed, stopped, cancelled), turns done of the total, "
        "tokens used, and why it ended early.",
        responses=responses(*RUN_ERRORS),
    )
    async def get_run(
        self,
        conversation_id: FromPath[uuid.UUID],
        run_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        replays_service: NamedDependency[Replays],
    ) -> app.ReplayRun:
        return await replays_service.get(caller, conversation_id, run_id)

    @post(
        "/conversations/{conversation_id:str}/replays/{run_id:str}/cancel",
        status_code=200,
        summary="Cancel a replay run",
        description="The run stops at its next turn boundary: the turns written stay, the reply being generated is "
        "not written. A run that has already ended is a 409 problem.",
        responses=responses(*RUN_ERRORS, errors.ReplayRunFinished),
    )
    async def cancel(
        self,
        conversation_id: FromPath[uuid.UUID],
        run_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        replays_service: NamedDependency[Replays],
    ) -> app.ReplayRun:
        return await replays_service.cancel(caller, conversation_id, run_id)

    @get(
        "/conversations/{conversation_id:str}/replays/{run_id:str}/diff",
        summary="A replay run's turns beside the originals",
        description="Per turn: the user message, the original reply and the new one (each with its model, tokens, "
        "latency and finish reason; the new one null until written) and their text similarity (0 to 1, "
        "difflib's ratio on words).",
        responses=responses(*RUN_ERRORS),
    )
    async def diff(
        self,
        conversation_id: FromPath[uuid.UUID],
        run_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        replays_service: NamedDependency[Replays],
    ) -> app.ReplayDiff:
        return await replays_service.diff(caller, conversation_id, run_id)

    @post(
        "/replays",
        status_code=201,
        summary="Replay the heads of many conversations",
        description="One run per conversation (its head's path, from the root), listed by `conversation_ids` or "
        "chosen by a `metadata` filter; all are queued, or none: a conversation that cannot be replayed is a "
        "problem naming it. Follow the batch with GET /v1/replays/{batch_id}.",
        responses=responses(*START_ERRORS),
    )
    async def start_batch(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[ReplayBatchBody],
        caller: NamedDependency[Caller],
        replays_service: NamedDependency[Replays],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[app.ReplayBatch]:
        new = app.NewBatch(
            conversation_ids=data.conversation_ids, metadata=data.metadata, target=_target(data.target), into=data.into
        )
        started = await replays_service.start_batch(caller, new, keyed(request, data))
        return written(started, lambda batch: (201, batch, None))

    @get(
        "/replays/{batch_id:str}",
        summary="A batch of replay runs, summarised per conversation",
        responses=responses(*AUTH, errors.ReplayRunNotFound),
    )
    async def get_batch(
        self,
        batch_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        replays_service: NamedDependency[Replays],
    ) -> app.ReplayBatch:
        return await replays_service.batch(caller, batch_id)
