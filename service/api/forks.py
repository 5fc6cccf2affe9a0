"""HTTP route for forking a conversation at any message."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from service.api import schemas
from service.api.conversations import IDEMPOTENCY_KEY, WRITE
from service.api.deps import keyed, written
from service.api.problems import responses
from service.app import forks as forks_app
from service.app.caller import Caller
from service.app.conversations import Created
from service.app.services import Conversations, answered
from service.domain import errors, views


class ForkController(Controller):
    path = "/v1/conversations"
    tags = ["conversations"]

    @post(
        "/{conversation_id:str}/messages/{message_id:str}/fork",
        status_code=201,
        summary="Fork a conversation at any message",
        description="Creates a conversation whose history is the path from the root to this message, with the "
        "message as its head; its summary records `forked_from`. The path is shared, not copied, so a fork costs "
        "the same at any depth; what is appended to the fork or to the source afterwards stays apart. With a "
        "client `id`, a retry of the same request returns the fork with 200; the same id used for anything else "
        "is a 409 problem.",
        responses={
            200: ResponseSpec(views.Conversation, description="A retry: the fork this id already names."),
            **responses(
                *WRITE,
                errors.ConversationNotFound,
                errors.MessageNotFound,
                errors.ConversationIdConflict,
                errors.IdempotencyKeyReused,
            ),
        },
    )
    async def fork(
        self,
        request: Request[Any, Any, State],
        conversation_id: FromPath[uuid.UUID],
        message_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.ForkConversation],
        caller: NamedDependency[Caller],
        conversations_service: NamedDependency[Conversations],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[views.Conversation]:
        new = forks_app.NewFork(id=data.id, title=data.title, metadata=data.metadata)

        def respond(result: Created) -> tuple[int, Any, dict[str, str]]:
            location = {"Location": f"/v1/conversations/{result.conversation.id}"}
            return answered(result.created), result.conversation, location

        forked = await conversations_service.fork(caller, conversation_id, message_id, new, keyed(request, data))
        return written(forked, respond)
