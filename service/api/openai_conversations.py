"""OpenAI's Conversations API under /openai/v1/conversations: a conversation is a convtree
conversation's head path, its items the path's messages (service/domain/items.py), in OpenAI's
shapes, with OpenAI's error object."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from service.api.problems import OPENAI_BASE, responses
from service.app.caller import Caller
from service.app.services import Items
from service.domain import errors, views
from service.domain import items as mapping

MAX_ITEMS = 20
AUTH = (errors.Unauthorized, 422)
WRITE = (*AUTH, 400, errors.JsonTooDeep)

Metadata = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=64)], Annotated[str, msgspec.Meta(max_length=512)]],
    msgspec.Meta(
        max_length=16,
        description="Up to 16 pairs: keys of at most 64 characters, string values of at most 512.",
    ),
]
InputItems = Annotated[
    list[dict[str, Any]],
    msgspec.Meta(
        max_length=MAX_ITEMS,
        description="Up to 20 items (Responses input items: messages, `reasoning`, `function_call`, "
        "`function_call_output`, `custom_tool_call`, `custom_tool_call_output`).",
    ),
]


class CreateConversation(msgspec.Struct, kw_only=True):
    items: InputItems | None = None
    metadata: Metadata | None = None


class UpdateConversation(msgspec.Struct, kw_only=True):
    metadata: Metadata | None  # required; null clears it


class AddItems(msgspec.Struct, kw_only=True):
    items: InputItems


class Conversation(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, Any]


class ConversationDeleted(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


class ItemList(msgspec.Struct, kw_only=True):
    """A page of items: `first_id` and `last_id` are its first and last item's (null when it is
    empty), `has_more` whether items follow it; the next page is `after=last_id`."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


def _conversation(conversation: views.Conversation) -> Conversation:
    return Conversation(
        id=mapping.conversation_id(conversation.id),
        created_at=int(conversation.created_at.timestamp()),
        metadata=conversation.metadata,
    )


def _page(data: list[dict[str, Any]], has_more: bool) -> ItemList:
    return ItemList(
        data=data,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
        has_more=has_more,
    )


def _id(conversation_id: str) -> uuid.UUID:
    found = mapping.parse_conversation_id(conversation_id)
    if found is None:
        raise errors.ConversationNotFound(conversation_id=conversation_id)
    return found


class OpenAIConversationsController(Controller):
    path = OPENAI_BASE + "/conversations"
    tags = ["openai"]

    @post(
        "/",
        status_code=200,
        summary="Create a conversation (OpenAI Conversations)",
        description="A new convtree conversation (`conv_` and its id's 32 hex digits), with `items` appended "
        "as its path in order, in one transaction: the reasoning, assistant message and calls of one model "
        "step are one assistant message, each output a tool message. Items are stored so that every door "
        "reads them: the native API and Chat Completions see the messages, this API the items.",
        responses=responses(*WRITE, errors.ToolResultWithoutCall, openai=True),
    )
    async def create(
        self, data: JSONBody[CreateConversation], caller: NamedDependency[Caller], items_service: NamedDependency[Items]
    ) -> Conversation:
        created = await items_service.create(caller, data.items or [], dict(data.metadata or {}))
        return _conversation(created)

    @get(
        "/{conversation_id:str}",
        summary="Retrieve a conversation (OpenAI Conversations)",
        description="Any convtree conversation, by `conv_<hex>`; one deleted through this API is not found.",
        responses=responses(*AUTH, errors.ConversationNotFound, openai=True),
    )
    async def retrieve(
        self, conversation_id: FromPath[str], caller: NamedDependency[Caller], items_service: NamedDependency[Items]
    ) -> Conversation:
        return _conversation(await items_service.get(caller, _id(conversation_id)))

    @post(
        "/{conversation_id:str}",
        status_code=200,
        summary="Update a conversation's metadata (OpenAI Conversations)",
        description="Replaces the metadata (null: empty), recorded as a `conversation_updated` event.",
        responses=responses(*WRITE, errors.ConversationNotFound, openai=True),
    )
    async def update(
        self,
        conversation_id: FromPath[str],
        data: JSONBody[UpdateConversation],
        caller: NamedDependency[Caller],
        items_service: NamedDependency[Items],
    ) -> Conversation:
        return _conversation(await items_service.update(caller, _id(conversation_id), dict(data.metadata or {})))

    @delete(
        "/{conversation_id:str}",
        status_code=200,
        summary="Delete a conversation (OpenAI Conversations)",
        description="A tombstone (`conversation_deleted` event): this API no longer finds the conversation. "
        "The log keeps it and the native API still serves it; erase bodies with a native redaction "
        "(`erase: true`).",
        responses=responses(*AUTH, errors.ConversationNotFound, openai=True),
    )
    async def delete_conversation(
        self, conversation_id: FromPath[str], caller: NamedDependency[Caller], items_service: NamedDependency[Items]
    ) -> ConversationDeleted:
        await items_service.delete(caller, _id(conversation_id))
        return ConversationDeleted(id=conversation_id)

    @get(
        "/{conversation_id:str}/items",
        summary="List a conversation's items (OpenAI Conversations)",
        description="The items of the head path (newest first unless `order=asc`), without those deleted "
        "through this API. `include` is accepted and ignored: items are always whole.",
        responses=responses(*AUTH, errors.ConversationNotFound, errors.ItemNotFound, openai=True),
    )
    async def list_items(
        self,
        conversation_id: FromPath[str],
        caller: NamedDependency[Caller],
        items_service: NamedDependency[Items],
        after: Annotated[str | None, QueryParameter(max_length=200, description="An item id: the page starts after it.")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="Page size.")] = 20,
        order: Annotated[Literal["asc", "desc"], QueryParameter(description="By position on the path.")] = "desc",
    ) -> ItemList:
        page = await items_service.list_items(caller, _id(conversation_id), after, limit, order)
        return _page(page.items, page.has_more)

    @post(
        "/{conversation_id:str}/items",
        status_code=200,
        summary="Add items to a conversation (OpenAI Conversations)",
        description="Appended under the head, in order, in one transaction (as on creation); the answer "
        "lists the items they became, with their ids.",
        responses=responses(*WRITE, errors.ConversationNotFound, errors.ToolResultWithoutCall, openai=True),
    )
    async def add_items(
        self,
        conversation_id: FromPath[str],
        data: JSONBody[AddItems],
        caller: NamedDependency[Caller],
        items_service: NamedDependency[Items],
    ) -> ItemList:
        return _page(await items_service.add_items(caller, _id(conversation_id), data.items), False)

    @get(
        "/{conversation_id:str}/items/{item_id:str}",
        summary="Retrieve an item (OpenAI Conversations)",
        responses=responses(*AUTH, errors.ConversationNotFound, errors.ItemNotFound, openai=True),
    )
    async def retrieve_item(
        self, conversation_id: FromPath[str], item_id: FromPath[str], caller: NamedDependency[Caller], items_service: NamedDependency[Items]
    ) -> dict[str, Any]:
        return await items_service.get_item(caller, _id(conversation_id), item_id)

    @delete(
        "/{conversation_id:str}/items/{item_id:str}",
        status_code=200,
        summary="Delete an item (OpenAI Conversations)",
        description="An item of the head message: the head moves to its parent (the message stays in the "
        "tree, a branch), or, when the message has other items, the message without it is appended beside "
        "it as the new head. An item further up: its message is hidden from this list (`message_hidden`); "
        "the log, the tree and the native API keep it. Answers the conversation.",
        responses=responses(*AUTH, errors.ConversationNotFound, errors.ItemNotFound, openai=True),
    )
    async def delete_item(
        self, conversation_id: FromPath[str], item_id: FromPath[str], caller: NamedDependency[Caller], items_service: NamedDependency[Items]
    ) -> Conversation:
        return _conversation(await items_service.delete_item(caller, _id(conversation_id), item_id))
