"""Every native endpoint, once: each method describes its call; the sync client runs it and returns
the answer, the async client returns an awaitable of it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from convtree.client import models
from convtree.client._core import Call, clean, path, writing

Id = uuid.UUID | str
AsOf = int | datetime | str | None


def as_of_param(as_of: AsOf) -> dict[str, Any]:
    if as_of is None:
        return {}
    return {"as_of": as_of.isoformat() if isinstance(as_of, datetime) else str(as_of)}


def turn_body(
    content: str | None,
    *,
    stream: bool,
    id: Id | None = None,
    parent_message_id: Id | None = None,
    metadata: dict[str, Any] | None = None,
    provider: str | None = None,
    model: str | None = None,
    window: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body = clean(
        {
            "content": content,
            "id": id,
            "parent_message_id": parent_message_id,
            "metadata": metadata,
            "provider": provider,
            "model": model,
            "window": window,
            "params": params,
        }
    )
    body["stream"] = stream
    return body


class Endpoints:
    """The calls of convtree's native API (/v1, besides the OpenAI-compatible door)."""

    def _run(self, call: Call) -> Any:
        raise NotImplementedError

    # --- health ------------------------------------------------------------------------------

    def health(self) -> Any:
        """-> Health"""
        return self._run(Call(method="GET", path="/readyz", decode=models.Health))

    # --- conversations -----------------------------------------------------------------------

    def create_conversation(
        self,
        *,
        title: str | None = None,
        system: str | None = None,
        metadata: dict[str, Any] | None = None,
        id: Id | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """-> Conversation (with `system`, its first message is that system prompt)."""
        body = clean({"title": title, "system": system, "metadata": metadata, "id": id})
        return self._run(writing("POST", path("conversations"), body, models.Conversation, idempotency_key))

    def list_conversations(self, *, limit: int | None = None, cursor: str | None = None) -> Any:
        """-> ConversationPage (newest first; pass `next_cursor` on for the next page)."""
        params = clean({"limit": limit, "cursor": cursor})
        return self._run(Call(method="GET", path=path("conversations"), params=params, decode=models.ConversationPage))

    def conversation(self, conversation_id: Id, *, as_of: AsOf = None) -> Any:
        """-> Conversation"""
        return self._run(
            Call(
                method="GET",
                path=path("conversations", conversation_id),
                params=as_of_param(as_of),
                decode=models.Conversation,
            )
        )

    def move_head(self, conversation_id: Id, message_id: Id) -> Any:
        """-> Conversation: switch branches (the head is where appends and turns go by default)."""
        return self._run(
            Call(
                method="PUT",
                path=path("conversations", conversation_id, "head"),
                body={"message_id": str(message_id)},
                decode=models.Conversation,
            )
        )

    # --- messages ----------------------------------------------------------------------------

    def append(
        self,
        conversation_id: Id,
        content: str | list[Any],
        *,
        role: models.Role = "user",
        parent_message_id: Id | None = None,
        metadata: dict[str, Any] | None = None,
        id: Id | None = None,
        expected_head: Id | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """-> Message, appended under `parent_message_id` (default: the head). With `expected_head`,
        only if the head is still that message (else PreconditionFailed)."""
        body = clean(
            {
                "role": role,
                "content": content,
                "parent_message_id": parent_message_id,
                "metadata": metadata,
                "id": id,
                "expected_head": expected_head,
            }
        )
        return self._run(
            writing("POST", path("conversations", conversation_id, "messages"), body, models.Message, idempotency_key)
        )

    def append_message(
        self,
        conversation_id: Id,
        message: dict[str, Any],
        *,
        parent_message_id: Id | None = None,
        id: Id | None = None,
        expected_head: Id | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """-> Message: `message` as a model API writes one ({role, content?, tool_calls?,
        tool_call_id?, name?, refusal?, reasoning_content?, reasoning?, metadata?}, each field sent
        as given: a null stays null), appended as `append` does."""
        placed = clean({"parent_message_id": parent_message_id, "id": id, "expected_head": expected_head})
        body = {**message, **placed}
        return self._run(
            writing("POST", path("conversations", conversation_id, "messages"), body, models.Message, idempotency_key)
        )

    def message(self, conversation_id: Id, message_id: Id) -> Any:
        """-> Message"""
        return self._run(
            Call(method="GET", path=path("conversations", conversation_id, "messages", message_id), decode=models.Message)
        )

    def children(self, conversation_id: Id, message_id: Id) -> Any:
        """-> Children: the replies and edits under a message."""
        return self._run(
            Call(
                method="GET",
                path=path("conversations", conversation_id, "messages", message_id, "children"),
                decode=models.Children,
            )
        )

    def tree(self, conversation_id: Id, *, as_of: AsOf = None) -> Any:
        """-> Tree: every message of the conversation."""
        return self._run(
            Call(
                method="GET",
                path=path("conversations", conversation_id, "tree"),
                params=as_of_param(as_of),
                decode=models.Tree,
            )
        )

    def leaves(self, conversation_id: Id, *, as_of: AsOf = None) -> Any:
        """-> Leaves: the ends of the branches."""
        return self._run(
            Call(
                method="GET",
                path=path("conversations", conversation_id, "leaves"),
                params=as_of_param(as_of),
                decode=models.Leaves,
            )
        )

    def context(
        self, conversation_id: Id, message_id: Id | None = None, *, last: int | None = None, as_of: AsOf = None
    ) -> Any:
        """-> Context: the path from the root to `message_id` (default: the head), or its `last` messages."""
        where = ("conversations", conversation_id) + (("messages", message_id) if message_id is not None else ())
        params = {**clean({"last": last}), **as_of_param(as_of)}
        return self._run(Call(method="GET", path=path(*where, "context"), params=params, decode=models.Context))

    # --- forks, history ----------------------------------------------------------------------

    def fork(
        self,
        conversation_id: Id,
        message_id: Id,
        *,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        id: Id | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """-> Conversation: a new conversation whose history is the path to `message_id`."""
        body = clean({"title": title, "metadata": metadata, "id": id})
        return self._run(
            writing(
                "POST",
                path("conversations", conversation_id, "messages", message_id, "fork"),
                body,
                models.Conversation,
                idempotency_key,
            )
        )

    def events(self, conversation_id: Id, *, after: int = 0, limit: int | None = None) -> Any:
        """-> EventPage: the conversation's events after `after` (a `seq`)."""
        params = clean({"after": after, "limit": limit})
        return self._run(
            Call(
                method="GET",
                path=path("conversations", conversation_id, "events"),
                params=params,
                decode=models.EventPage,
            )
        )

    def feed(self, *, after: int = 0, limit: int | None = None, wait: float | None = None) -> Any:
        """-> EventPage: the tenant's events after `after`; with `wait`, held until one arrives."""
        params = clean({"after": after, "limit": limit, "wait": wait})
        return self._run(Call(method="GET", path=path("events"), params=params, decode=models.EventPage))

    def audit(self, conversation_id: Id) -> Any:
        """-> AuditReport: the hash chain and every stored body checked."""
        return self._run(
            Call(method="GET", path=path("conversations", conversation_id, "audit"), decode=models.AuditReport)
        )

    def redact(
        self,
        conversation_id: Id,
        message_id: Id,
        *,
        reason: str,
        erase: bool = False,
        idempotency_key: str | None = None,
    ) -> Any:
        """-> Message: hidden from every read from now on; with `erase`, its body deleted."""
        return self._run(
            writing(
                "POST",
                path("conversations", conversation_id, "messages", message_id, "redact"),
                {"reason": reason, "erase": erase},
                models.Message,
                idempotency_key,
            )
        )

    def export(self, conversation_id: Id) -> Any:
        """-> bytes: the conversation's events, one JSON object per line (import_conversation takes it)."""
        return self._run(Call(method="GET", path=path("conversations", conversation_id, "export")))

    def import_conversation(self, export: bytes, *, idempotency_key: str | None = None) -> Any:
        """-> Conversation, re-created from an export (verified first)."""
        call = writing("POST", path("conversations", "import"), None, models.Conversation, idempotency_key)
        call.content = export
        call.headers["Content-Type"] = "application/x-ndjson"
        return self._run(call)

    # --- turns -------------------------------------------------------------------------------

    def turn(self, conversation_id: Id, content: str, *, idempotency_key: str | None = None, **options: Any) -> Any:
        """-> TurnResult: a user message and the model's reply. Options: id, parent_message_id,
        metadata, provider, model, window (models.last_window(…), …), params ({temperature, …})."""
        body = turn_body(content, stream=False, **options)
        call = writing("POST", path("conversations", conversation_id, "turns"), body, models.TurnResult, idempotency_key)
        call.slow = True
        return self._run(call)

    def regenerate(self, conversation_id: Id, message_id: Id, *, idempotency_key: str | None = None, **options: Any) -> Any:
        """-> TurnResult: another reply to the user message `message_id`, as a sibling of the others.
        Options: provider, model, window, params."""
        body = turn_body(None, stream=False, **options)
        where = path("conversations", conversation_id, "messages", message_id, "regenerate")
        call = writing("POST", where, body, models.TurnResult, idempotency_key)
        call.slow = True
        return self._run(call)

    def _turn_call(self, conversation_id: Id, content: str, idempotency_key: str | None, options: Any) -> Call:
        body = turn_body(content, stream=True, **options)
        call = writing("POST", path("conversations", conversation_id, "turns"), body, None, idempotency_key)
        call.headers["Accept"] = "text/event-stream"
        return call

    def _regenerate_call(self, conversation_id: Id, message_id: Id, idempotency_key: str | None, options: Any) -> Call:
        body = turn_body(None, stream=True, **options)
        where = path("conversations", conversation_id, "messages", message_id, "regenerate")
        call = writing("POST", where, body, None, idempotency_key)
        call.headers["Accept"] = "text/event-stream"
        return call
