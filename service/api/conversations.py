"""HTTP routes for conversations and their messages, under /v1/conversations."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from service.api import schemas
from service.api.asof import AsOfParameter, parse_as_of
from service.api.deps import json_response, keyed, written
from service.api.hygiene import NOT_MODIFIED, cached, read_answer
from service.api.problems import responses
from service.app import context as context_app
from service.app import conversations as conversations_app
from service.app import messages as messages_app
from service.app.caller import Caller
from service.app.services import Conversations, Messages, answered
from service.domain import errors, views
from service.domain.message import carried, check

AUTH = (errors.Unauthorized, 422)
WRITE = (*AUTH, 400, errors.JsonTooDeep)  # 400: the body is not JSON, or nests too deep; 422: it is JSON but not a valid request
IDEMPOTENCY_KEY = HeaderParameter(
    name="Idempotency-Key",
    required=False,
    max_length=255,
    description="Makes the request safe to retry: a retry with the same key returns the original "
    "response and records nothing new; the same key with a different request is a 422 problem.",
)
CACHED = (
    "The answer has an `ETag` and `Cache-Control: private, no-cache`: send the tag back as `If-None-Match` to "
    "get a 304 without a body while the answer is the same (only a redaction changes it)."
)
CACHED_PAST = "With `as_of`, the past does not move: " + CACHED[0].lower() + CACHED[1:]
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="Page size.")]
Cursor = Annotated[str | None, QueryParameter(max_length=200, description="`next_cursor` of the previous page.")]
Last = Annotated[
    int | None,
    QueryParameter(
        ge=1, le=1_000_000, description="Keep the final N messages, and every system message before them."
    ),
]


class ConversationController(Controller):
    path = "/v1/conversations"
    tags = ["conversations"]

    @post(
        "/",
        status_code=201,
        summary="Create a conversation",
        description="With a client `id`, a retry of the same request returns the conversation with 200; "
        "the same id with other content is a 409 problem. A `system` prompt becomes the root message.",
        responses={
            200: ResponseSpec(views.Conversation, description="A retry: the conversation this id already names."),
            **responses(*WRITE, errors.ConversationIdConflict, errors.IdempotencyKeyReused),
        },
    )
    async def create(
        self,
        request: Request,  # type: ignore[type-arg]  # bare: see _Root.caller in service.api.app
        data: JSONBody[schemas.CreateConversation],
        caller: NamedDependency[Caller],
        conversations_service: NamedDependency[Conversations],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[views.Conversation]:
        new = conversations_app.NewConversation(
            id=data.id, title=data.title, metadata=data.metadata, system=data.system
        )

        def respond(result: conversations_app.Created) -> tuple[int, Any, dict[str, str]]:
            location = {"Location": f"/v1/conversations/{result.conversation.id}"}
            return answered(result.created), result.conversation, location

        return written(await conversations_service.create(caller, new, keyed(request, data)), respond)

    @get(
        "/",
        summary="List conversations, newest first",
        responses=responses(*AUTH),
    )
    async def list_conversations(
        self,
        caller: NamedDependency[Caller],
        conversations_service: NamedDependency[Conversations],
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> schemas.ConversationPage:
        page = await conversations_service.list_page(caller, limit, cursor)
        return schemas.ConversationPage(items=page.items, next_cursor=page.next_cursor)

    @get(
        "/{conversation_id:str}",
        summary="Get a conversation's summary",
        description="The `ETag` is the head's id: send it back as `If-Match` to append only if the head has not moved. "
        "With `as_of`, the summary as it stood after that event, folded from the log (and no `ETag`: a past head "
        "is no precondition for a write).",
        responses=responses(*AUTH, errors.ConversationNotFound),
    )
    async def get_conversation(
        self,
        conversation_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        conversations_service: NamedDependency[Conversations],
        as_of: AsOfParameter = None,
    ) -> Response[views.Conversation]:
        past = parse_as_of(as_of)
        conversation = await conversations_service.get(caller, conversation_id, past)
        headers = {"ETag": _etag(conversation.head_id)} if past is None else None
        return json_response(conversation, 200, headers)

    @post(
        "/{conversation_id:str}/messages",
        status_code=201,
        summary="Append a message",
        description="Without `parent_message_id` the message attaches to the head; with it, it becomes a new "
        "child of that message (a branch when it already has children). Either way the head moves to the new "
        "message. A client `id` makes a retry return the original message (200) with no new event. "
        '`If-Match: "<head id>"` or `expected_head` refuses the append with 412 if the head has moved.',
        responses={
            200: ResponseSpec(views.Message, description="A retry: the message this id already names."),
            **responses(
                *WRITE, errors.ConversationNotFound, errors.ParentNotFound, errors.MessageIdConflict,
                errors.ParentStillGenerating, errors.StaleHead, errors.IdempotencyKeyReused, errors.MessageTooLarge,
            ),
        },    )
    async def append(
        self,
        request: Request,  # type: ignore[type-arg]  # bare: see _Root.caller in service.api.app
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.AppendMessage],
        caller: NamedDependency[Caller],
        messages_service: NamedDependency[Messages],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
        if_match: Annotated[
            str | None,
            HeaderParameter(
                name="If-Match", required=False, max_length=100, description='`"<head message id>"`'
            ),
        ] = None,
    ) -> Response[views.Message]:
        expected = data.expected_head if data.expected_head is not None else _parse_if_match(if_match)
        new = carried(messages_app.NewMessage, data, expected_head=expected)
        check(new)  # 422 naming the field; its size limits (413) are the store's (domain/stored.py)

        def respond(result: messages_app.Appended) -> tuple[int, Any, dict[str, str]]:
            m = result.message
            location = {"Location": f"/v1/conversations/{conversation_id}/messages/{m.id}"}
            return answered(result.created), m, location

        appended = await messages_service.append(caller, conversation_id, new, keyed(request, data))
        return written(appended, respond)

    @get(
        "/{conversation_id:str}/messages/{message_id:str}",
        summary="Get a message",
        description=CACHED,
        responses={304: NOT_MODIFIED, **responses(*AUTH, errors.ConversationNotFound, errors.MessageNotFound)},
    )
    async def get_message(
        self,
        request: Request,  # type: ignore[type-arg]
        conversation_id: FromPath[uuid.UUID],
        message_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        messages_service: NamedDependency[Messages],
    ) -> Response[views.Message]:
        return cached(request, await messages_service.get(caller, conversation_id, message_id))

    @get(
        "/{conversation_id:str}/messages/{message_id:str}/children",
        summary="List a message's children (its branches), oldest first",
        responses=responses(*AUTH, errors.ConversationNotFound, errors.MessageNotFound),
    )
    async def children(
        self,
        conversation_id: FromPath[uuid.UUID],
        message_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        messages_service: NamedDependency[Messages],
    ) -> schemas.Children:
        kids = await messages_service.children(caller, conversation_id, message_id)
        return schemas.Children(message_id=message_id, children=kids)

    @get(
        "/{conversation_id:str}/messages/{message_id:str}/context",
        summary="The root-first path to a message",
        description="Each message says how many siblings it has and its position among them. " + CACHED_PAST,
        responses={304: NOT_MODIFIED, **responses(*AUTH, errors.ConversationNotFound, errors.MessageNotFound)},
    )
    async def message_context(
        self,
        request: Request,  # type: ignore[type-arg]
        conversation_id: FromPath[uuid.UUID],
        message_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        conversations_service: NamedDependency[Conversations],
        last: Last = None,
        as_of: AsOfParameter = None,
    ) -> Response[views.Context]:
        past = parse_as_of(as_of)
        context = await conversations_service.context(caller, conversation_id, message_id, last, past)
        return read_answer(request, context, past)

    @get(
        "/{conversation_id:str}/context",
        summary="The root-first path to the head",
        description=CACHED_PAST,
        responses={304: NOT_MODIFIED, **responses(*AUTH, errors.ConversationNotFound)},
    )
    async def head_context(
        self,
        request: Request,  # type: ignore[type-arg]
        conversation_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        conversations_service: NamedDependency[Conversations],
        last: Last = None,
        as_of: AsOfParameter = None,
    ) -> Response[views.Context]:
        past = parse_as_of(as_of)
        context = await conversations_service.context(caller, conversation_id, None, last, past)
        return read_answer(request, context, past)

    @get(
        "/{conversation_id:str}/tree",
        summary="Every message with its parent, in the order written, and the head",
        description=CACHED_PAST,
        responses={304: NOT_MODIFIED, **responses(*AUTH, errors.ConversationNotFound)},
    )
    async def tree(
        self,
        request: Request,  # type: ignore[type-arg]
        conversation_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        conversations_service: NamedDependency[Conversations],
        as_of: AsOfParameter = None,
    ) -> Response[context_app.Tree]:
        past = parse_as_of(as_of)
        tree = await conversations_service.tree(caller, conversation_id, past)
        return read_answer(request, tree, past)

    @get(
        "/{conversation_id:str}/leaves",
        summary="Every branch tip with its depth",
        responses=responses(*AUTH, errors.ConversationNotFound),
    )
    async def leaves(
        self,
        conversation_id: FromPath[uuid.UUID],
        caller: NamedDependency[Caller],
        conversations_service: NamedDependency[Conversations],
        as_of: AsOfParameter = None,
    ) -> schemas.Leaves:
        conversation, tips = await conversations_service.leaves(caller, conversation_id, parse_as_of(as_of))
        return schemas.Leaves(conversation_id=conversation_id, head_id=conversation.head_id, leaves=tips)

    @put(
        "/{conversation_id:str}/head",
        summary="Move the head to any message (switch branch)",
        description="Recorded as an event; moving it to where it already is records nothing.",
        responses=responses(*WRITE, errors.ConversationNotFound, errors.MessageNotFound),
    )
    async def move_head(
        self,
        conversation_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.MoveHead],
        caller: NamedDependency[Caller],
        messages_service: NamedDependency[Messages],
    ) -> Response[views.Conversation]:
        conversation = await messages_service.move_head(caller, conversation_id, data.message_id)
        return json_response(conversation, 200, {"ETag": _etag(conversation.head_id)})


def _etag(head_id: uuid.UUID | None) -> str:
    return f'"{head_id or ""}"'


def _parse_if_match(value: str | None) -> uuid.UUID | None:
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    try:
        return uuid.UUID(tag)
    except ValueError as exc:
        raise errors.InvalidRequest('If-Match must be "<head message id>".', header="If-Match") from exc
