"""Reading conversations back: summaries, messages, children, leaves and the path to a message."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import TypeVar

from service.domain import views
from service.domain.stored import references, restore
from service.domain.tree import Scope, sibling_place
from service.store import rows as r
from service.store.session import Session


M = TypeVar("M", bound=views.Message)


class Reads(Session):
    async def find_thread(self, tenant: str, digests: list[bytes]) -> tuple[int, uuid.UUID, uuid.UUID] | None:
        """Of the path digests of a history's prefixes (shortest first), the longest the tenant has
        a path for: (how many messages it covers, the conversation that wrote its last message, that
        message); None: not even the first."""
        row = await self.row("find_thread", tenant=tenant, digests=digests)
        return None if row is None else (row["n"], row["conversation_id"], row["message_id"])

    async def get_conversation(
        self, tenant: str, conversation_id: uuid.UUID
    ) -> tuple[views.Conversation, uuid.UUID] | None:
        """The conversation's summary and its family id."""
        row = r.record(r.ConversationRow, await self.row("get_conversation", tenant=tenant, conversation_id=conversation_id))
        return None if row is None else (r.conversation(row), row.family_id)

    async def get_scoped(self, tenant: str, conversation_id: uuid.UUID) -> tuple[views.Conversation, Scope] | None:
        """The conversation's summary, and which messages it shows now (consistently with that summary)."""
        row = r.record(r.ConversationRow, await self.row("get_conversation", tenant=tenant, conversation_id=conversation_id))
        return None if row is None else (r.conversation(row), r.scope(row))

    async def conversation_as_of(
        self, tenant: str, conversation_id: uuid.UUID, as_of: int | datetime
    ) -> tuple[views.Conversation, Scope] | None:
        """The summary as it stood after event `as_of` (or its newest event stamped at or before that
        instant), folded from the log; None if the conversation did not exist then."""
        upto, at = (None, as_of) if isinstance(as_of, datetime) else (as_of, None)
        found = await self.row("conversation_as_of", tenant=tenant, conversation_id=conversation_id, upto=upto, at=at)
        row = r.record(r.SummaryRow, found)
        return None if row is None else (r.conversation(row), r.scope(row))

    async def list_conversations(
        self, tenant: str, before_seq: int | None, limit: int
    ) -> list[tuple[views.Conversation, int]]:
        """A page of the tenant's conversations, newest first, each with its creation's event number."""
        found = await self.rows("list_conversations", tenant=tenant, before_seq=before_seq, limit=limit)
        return [(r.conversation(row), row.created_seq) for row in r.records(r.ConversationRow, found)]

    async def get_message(self, scope: Scope, message_id: uuid.UUID) -> views.Message | None:
        """A message, if the scope's conversation sees it."""
        found = await self.row("get_message", **_seeing(scope, message_id))
        row = r.record(r.MessageRow, found)
        return None if row is None else (await self.restored(scope.family_id, [r.message(row)]))[0]

    async def call_group_tail(self, scope: Scope, message_id: uuid.UUID, limit: int) -> list[views.Message]:
        """The end of the path at a message the scope sees, root first: the message and, while the
        one read is a tool message, its parent, `limit` messages at most (calls.ended_by reads it)."""
        found = await self.rows("call_group_tail", family_id=scope.family_id, message_id=message_id, limit=limit)
        return [r.message(row) for row in r.records(r.MessageRow, found)]

    async def list_children(self, scope: Scope, parent: views.Message) -> list[views.Message]:
        """The children of a visible message that the scope's conversation sees, oldest first."""
        inherited = parent.conversation_id != scope.conversation_id
        found = await self.rows(
            "list_children",
            family_id=scope.family_id,
            parent_id=parent.id,
            conversation_id=scope.conversation_id,
            base_id=scope.base_id if inherited else None,
            depth=parent.depth,
            upto=scope.upto,
        )
        return await self.restored(scope.family_id, [r.message(row) for row in r.records(r.MessageRow, found)])

    async def list_messages(self, scope: Scope) -> list[views.Message]:
        """Every message the scope's conversation sees, in the order written."""
        found = await self.rows("list_messages", **_seen_by(scope))
        return await self.restored(scope.family_id, [r.message(row) for row in r.records(r.MessageRow, found)])

    async def list_leaves(self, scope: Scope) -> list[views.Leaf]:
        """The branch tips the scope's conversation sees, oldest first."""
        found = await self.rows("list_leaves", **_seen_by(scope))
        return [r.leaf(row) for row in r.records(r.LeafRow, found)]

    async def message_path(self, scope: Scope, message_id: uuid.UUID) -> list[views.PathMessage]:
        """The root-first path to a message, in one round trip; empty if the scope does not see it."""
        found = await self.rows("message_path", **_seeing(scope, message_id))
        rows = r.records(r.PathRow, found)
        path = [row for row in rows if row.on_path]
        path.sort(key=_depth)  # root first
        if len(path) == len(rows):  # no parent on the path has a child of the conversation's own off it
            built = [r.path_message(row, (row.sibling_count, row.sibling_position)) for row in path]  # type: ignore[arg-type]
            return await self.restored(scope.family_id, built)
        others: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
        for row in rows:
            if not row.on_path and row.parent_id is not None:  # off the path: a child of a path message
                others.setdefault(row.parent_id, {})[row.message_id] = row.seq
        own = scope.conversation_id
        placed = [
            r.path_message(
                row,
                (row.sibling_count, row.sibling_position)  # type: ignore[arg-type]
                if row.parent_id not in others
                else sibling_place(
                    (row.sibling_count, row.sibling_position),  # type: ignore[arg-type]
                    row.conversation_id == own,
                    row.message_id,
                    row.seq,
                    others[row.parent_id],
                ),
            )
            for row in path
        ]
        return await self.restored(scope.family_id, placed)

    async def served_path(self, scope: Scope, message_id: uuid.UUID) -> list[views.Served]:
        """message_path as a context read serves it: the same messages, each plain one written out as
        its JSON by the store (views.Written) rather than built as a view; empty if the scope does
        not see the message."""
        found = await self.rows("message_path_served", **_seeing(scope, message_id))
        r.check_served(found)
        path = [row for row in found if row[r.SERVED_ON_PATH]]
        path.sort(key=itemgetter(r.SERVED_DEPTH))  # root first
        if len(path) == len(found):  # no parent on the path has a child of the conversation's own off it
            messages = r.served_path(path)
        else:
            others: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
            for row in r.records(r.ServedRow, [row for row in found if not row[r.SERVED_ON_PATH]]):
                if row.parent_id is not None:  # off the path: a child of a path message
                    others.setdefault(row.parent_id, {})[row.message_id] = row.seq
            own = scope.conversation_id
            messages = []
            for found_row in path:
                if found_row[r.SERVED_PARENT] not in others:
                    messages.append(r.served(found_row))
                    continue
                row = r.ServedRow(*found_row)
                place = sibling_place(
                    (row.sibling_count, row.sibling_position),  # type: ignore[arg-type]
                    row.conversation_id == own,
                    row.message_id,
                    row.seq,
                    others[row.parent_id],  # type: ignore[index]
                )
                messages.append(r.served(found_row, place))
        await self.restored(scope.family_id, [m for m in messages if isinstance(m, views.PathMessage)])
        return messages

    async def restored(self, family_id: uuid.UUID, messages: list[M]) -> list[M]:
        """`messages` (just read, held by no one else) with the parts their bodies keep out of line
        put back (service/domain/stored.py): one more round trip, only when a body has any."""
        referring = [m.id for m in messages if references(m.content)]
        if referring:
            found = await self.rows("find_blobs", family_id=family_id, message_ids=referring)
            blobs = {row["sha256"]: row["data"] for row in found}
            for m in messages:
                restore(m.content, blobs)
        return messages


def _seen_by(scope: Scope) -> dict[str, object]:
    """The parameters of a query over all a conversation sees: its own messages, and a fork's base's up to the base."""
    return {
        "family_id": scope.family_id,
        "conversation_id": scope.conversation_id,
        "base_id": scope.base_id,
        "upto": scope.upto,
    }


def _seeing(scope: Scope, message_id: uuid.UUID) -> dict[str, object]:
    """The parameters of a query of message `message_id` as the scope's conversation sees it (or
    not): its own messages, and a fork's base path up to the base."""
    return {
        "family_id": scope.family_id,
        "conversation_id": scope.conversation_id,
        "message_id": message_id,
        "base_id": scope.base_id,
        "base_depth": scope.base_depth,
        "upto": scope.upto,
    }


def _depth(row: r.PathRow) -> int:
    return row.depth
