"""HTTP routes for the log itself: event feeds (paged, long-polled, SSE), audit, redaction, export, import."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter, RawBody
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream

from service.api import schemas
from service.api.conversations import AUTH, IDEMPOTENCY_KEY
from service.api.deps import json_response, keyed, written
from service.api.problems import responses
from service.app import feed as feed_app
from service.app import redact as redact_app
from service.app.caller import Caller
from service.app.services import Audit, Events, Messages, Transfer, answered
from service.domain import errors, views
from service.domain.audit import AuditReport
from service.domain.events import MAX_SEQ
from service.domain.redaction import RedactMessage

NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
SSE_RETRY_MS = 2000

After = Annotated[
    int,
    QueryParameter(
        ge=0, le=MAX_SEQ, description="Events after this `seq` (`next_after` of the previous page)."
    ),
]
Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="Page size.")]


class Redact(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=schemas.NO_NUL)]
    erase: bool = False


class Import(msgspec.Struct, frozen=True):
    """The raw export, as the Idempotency-Key fingerprint sees it."""

    ndjson: bytes


@dataclass
class _ImportOperation(Operation):
    """The import reads its body raw (it is not JSON), so its request body is documented here."""

    def __post_init__(self) -> None:
        schema = Schema(type=OpenAPIType.STRING, description="An export: one JSON event per line.")
        self.request_body = RequestBody(
            content={NDJSON: OpenAPIMediaType(schema=schema)},
            required=True,
            description="The body of `GET /v1/conversations/{id}/export`, as it was served.",
        )


class HistoryController(Controller):
    path = "/v1"
    tags = ["history"]

    @get(
        "/conversations/{conversation_id:str}/events",
        summary="A conversation's events, in order",
        description="Each event with its hash and a typed view of what it says (a message's place and "
        "digest, never its content). Page on with `after` = `next_after`.",
        responses=responses(*AUTH, errors.ConversationNotFound),
    )
    async def conversation_events(
        self,
        conversation_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        events_service: NamedDependency[Events],
        after: After = 0,
        limit: Limit = 100,
    ) -> feed_app.Page:
        return await events_service.conversation_page(caller, conversation_id, after, limit)

    @get(
        "/events",
        summary="The tenant's whole feed, in order: paged, long-polled, or streamed (SSE)",
        description="Every event of every conversation of the tenant, each exactly once and in `seq` order: "
        "an event is handed out only once no event before it can still appear. With `wait`, the call holds "
        "until there is at least one event or `wait` seconds passed. With `Accept: text/event-stream` the "
        "events stream as server-sent events (`id:` is the `seq`, `data:` the event as JSON); a reconnecting "
        "client resumes after its `Last-Event-ID`. When the service shuts down, a long-poll answers at once with "
        "the events it has (maybe none), and a stream ends with a `shutdown` event whose data is "
        '`{"next_after": <seq>}`: reconnect (after the `retry:` delay) to resume. While the database is away, '
        "a new request gets a 503 problem with a Retry-After header; an open stream keeps sending keep-alive "
        "comments and resumes where it was once the database is back.",
        responses=responses(*AUTH),
    )
    async def tenant_events(
        self,
        request: Request[Any, Any, State],
        caller: NamedDependency[Caller],
        events_service: NamedDependency[Events],
        after: After = 0,
        limit: Limit = 100,
        wait: Annotated[
            float,
            QueryParameter(
                ge=0, le=feed_app.MAX_WAIT_SECONDS, description="Seconds to hold for a new event."
            ),
        ] = 0,
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID", required=False, max_length=20, description="Resume after this `seq`."
            ),
        ] = None,
    ) -> Response[feed_app.Page]:
        if last_event_id is not None:
            after = _parse_last_event_id(last_event_id)
        if (
            request.accept.best_match(["application/json", EVENT_STREAM], default="application/json")
            == EVENT_STREAM
        ):
            # A database that is away refuses the stream now (a 503), not after its headers are sent.
            await events_service.check(caller)
            return ServerSentEvent(_server_sent(events_service, caller, after), retry_duration=SSE_RETRY_MS)  # type: ignore[return-value]
        return json_response(await events_service.page(caller, after, limit, wait), 200)

    @get(
        "/conversations/{conversation_id:str}/audit",
        summary="Prove a conversation's log unaltered",
        description="Recomputes the hash chain event by event, checks each message's body against its digest "
        "(an erased body counts as erased, not as tampering) and the summary's head against the chain. "
        "`first_invalid_seq` and `reason` name the first event that does not verify.",
        responses=responses(*AUTH, errors.ConversationNotFound),
    )
    async def audit(
        self,
        conversation_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        audit_service: NamedDependency[Audit],
    ) -> AuditReport:
        return await audit_service.audit(caller, conversation_id)

    @post(
        "/conversations/{conversation_id:str}/messages/{message_id:str}/redact",
        status_code=201,
        summary="Redact a message (and, with `erase`, delete its content for good)",
        description="Records a `message_redacted` event (who, when, why). From then on every read serves the "
        "message with a placeholder content and `redacted`. With `erase: true` the body itself is deleted; the "
        "event and its digest stay, so the conversation still verifies. Idempotent: redacting a redacted "
        "message records nothing and answers 200, unless it erases a body that was only hidden so far. A message "
        "a fork inherited is redacted through the conversation that wrote it (409 `message-inherited` through "
        "the fork); the redaction shows in every conversation that shows the message.",
        responses={
            200: ResponseSpec(
                views.Message, description="Already redacted (and erased, if asked): nothing recorded."
            ),
            **responses(
                *AUTH, 400, errors.JsonTooDeep, errors.ConversationNotFound, errors.MessageNotFound,
                errors.InheritedMessage,
                errors.IdempotencyKeyReused,
            ),
        },
    )
    async def redact(
        self,
        request: Request[Any, Any, State],
        conversation_id: FromPath[uuid.UUID],
        message_id: FromPath[uuid.UUID],
        data: JSONBody[Redact],
        caller: NamedDependency[Caller],
        messages_service: NamedDependency[Messages],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[views.Message]:
        cmd = RedactMessage(message_id=message_id, reason=data.reason, erase=data.erase)

        def respond(result: redact_app.Redacted) -> tuple[int, Any, dict[str, str] | None]:
            return answered(result.created), result.message, None

        redacted = await messages_service.redact(caller, conversation_id, cmd, keyed(request, data))
        return written(redacted, respond)

    @get(
        "/conversations/{conversation_id:str}/export",
        media_type=NDJSON,
        summary="Export a conversation's log as JSON Lines",
        description="One event per line, in order, with every column its hash covers, the hash, and the "
        "message's content where it may be served (not for redacted messages). `POST /v1/conversations/import` "
        "re-creates the conversation from it. A fork's export holds its own events only.",
        responses=responses(*AUTH, errors.ConversationNotFound),
    )
    async def export(
        self,
        conversation_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        transfer_service: NamedDependency[Transfer],
    ) -> Stream:
        lines = await transfer_service.export(caller, conversation_id)
        disposition = f'attachment; filename="conversation-{conversation_id}.ndjson"'
        return Stream(lines, media_type=NDJSON, headers={"Content-Disposition": disposition})

    @post(
        "/conversations/import",
        status_code=201,
        summary="Import an exported conversation",
        description="Verifies the whole chain first: a file that does not verify is refused with a 422 problem "
        "naming the first bad line (`context.line`, `context.seq`, `context.reason`), and nothing is written. "
        "Then creates the conversation under the caller's tenant with the same conversation and message ids; "
        "its events keep their hashes. An id already used by the tenant is a 409. A fork imports only once its "
        "source is here (else a `fork-source-missing` problem).",
        operation_class=_ImportOperation,
        responses=responses(
            *AUTH,
            errors.JsonTooDeep,
            errors.InvalidExport,
            errors.ForkSourceMissing,
            errors.ConversationIdConflict,
            errors.MessageIdConflict,
            errors.IdempotencyKeyReused,
        ),
    )
    async def import_conversation(
        self,
        request: Request[Any, Any, State],
        body: RawBody,
        caller: NamedDependency[Caller],
        transfer_service: NamedDependency[Transfer],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[views.Conversation]:
        def respond(conversation: views.Conversation) -> tuple[int, Any, dict[str, str] | None]:
            return answered(True), conversation, {"Location": f"/v1/conversations/{conversation.id}"}

        imported = await transfer_service.import_conversation(caller, body, keyed(request, Import(body)))
        return written(imported, respond)


async def _server_sent(events: Events, caller: Caller, after: int) -> AsyncIterator[ServerSentEventMessage]:
    async for batch in events.follow(caller, after):
        if not batch:
            # A comment: keeps proxies from closing an idle stream, and finds clients that left.
            yield ServerSentEventMessage(comment="keep-alive", data=None)
        for event in batch:
            yield ServerSentEventMessage(id=event.seq, data=msgspec.json.encode(event).decode())
            after = event.seq
    # The follow ends only when the service shuts down: say so, and where to resume.
    yield ServerSentEventMessage(event="shutdown", data=msgspec.json.encode({"next_after": after}).decode())


def _parse_last_event_id(value: str) -> int:
    try:
        seq = int(value)
    except ValueError:
        seq = -1
    if not 0 <= seq <= MAX_SEQ:
        raise errors.InvalidRequest("Last-Event-ID must be the `seq` of an event.", header="Last-Event-ID")
    return seq
