"""An OpenAI Agents SDK session stored in convtree, through its native API (`pip install convtree[agents]`).

    from agents import Agent, Runner
    from convtree.agents import ConvtreeSession
    from convtree.client import AsyncClient

    async with AsyncClient("http://127.0.0.1:8000", key="ct_…") as ct:
        session = ConvtreeSession(client=ct)
        await Runner.run(agent, "Hello", session=session)
        other = await session.fork()          # a second session, sharing the history so far
        await Runner.run(agent, "Or rather…", session=other)

A session is a conversation (`session_id` is its id) seen by its head path. What the SDK calls:

- `get_items(limit)`: the items of the head's context, root first (the latest `limit` of them).
- `add_items(items)`: the items appended under the head as messages (one model step is one
  assistant message: `convtree.client.items`), the head moving to the last. Each call carries an
  Idempotency-Key (`idempotency_key=`, else a new one), so a call retried with its key, or a
  request retried after a lost answer, writes nothing twice. A call that fails midway moves the
  head back to where it was, so it is all or nothing as the head path shows it (but for the first
  items of a new conversation: a root cannot be taken back).
- `pop_item()`: the head moves to its parent; the old head stays in the tree as a branch. If the
  head message held other items (a step's reasoning, text and calls), the message without the
  popped item is appended beside it as the new head (unless what is left cannot stand alone, such
  as a lone reasoning item), as the Conversations API's item delete does.
- `clear_session()`: the session moves to a new, empty conversation (`session_id` changes, as
  the SDK's `OpenAIConversationsSession` does); the old one is kept, whole, in the log. Popping a
  conversation's only message does the same, since a conversation with messages always has a head.

A session id that names no conversation yet (a new session's, a cleared one's) is created on the
first `add_items`; reading it before gives no items.

Beyond the SDK's protocol: `fork(at_item)` (a new session whose history is the path to that
item's message), `branches()` (every branch tip) and `switch(to)` (move the head to a branch).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from convtree.client import AsyncClient, InvalidRequest, Message, NotFound
from convtree.client.items import items_to_messages, message_of_item, messages_to_items

if TYPE_CHECKING:
    from agents.items import TResponseInputItem
    from agents.memory.session_settings import SessionSettings

__all__ = ["Branch", "ConvtreeSession"]


@dataclass(frozen=True)
class Branch:
    """A branch of the session's conversation, named by its tip: `switch(branch.leaf_id)` continues it."""

    leaf_id: str
    depth: int
    created_at: datetime
    is_head: bool


class ConvtreeSession:
    """An Agents SDK `Session` backed by a convtree conversation (see the module's docstring).
    `client` is the caller's and stays open; `session_id` is a conversation id (a UUID), or None
    for a new conversation."""

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str | uuid.UUID | None = None,
        *,
        client: AsyncClient,
        session_settings: SessionSettings | None = None,
    ) -> None:
        self.client = client
        self.session_settings = session_settings
        self._conversation = uuid.UUID(str(session_id)) if session_id is not None else uuid.uuid4()
        self._exists = False  # known to exist: no need to ask before writing
        self._lock = asyncio.Lock()  # one operation of this session at a time: each reads the head it moves

    @property
    def session_id(self) -> str:
        return str(self._conversation)

    @property
    def conversation_id(self) -> uuid.UUID:
        return self._conversation

    # --- the SDK's Session protocol ----------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The head path's items, root first; with `limit` (or `session_settings.limit`), its last ones."""
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        if limit is not None and limit <= 0:
            return []
        async with self._lock:
            path = await self._path(last=limit)
        items = messages_to_items(path)
        return (items[-limit:] if limit is not None else items)  # type: ignore[return-value]

    async def add_items(self, items: list[TResponseInputItem], *, idempotency_key: str | None = None) -> None:
        """Append `items` under the head (see the module's docstring)."""
        said = items_to_messages(list(items))  # refuses an unstorable item before anything is written
        if not said:
            return
        key = idempotency_key or str(uuid.uuid4())
        async with self._lock:
            await self._ensure()
            appended: list[Message] = []
            try:
                for i, message in enumerate(said):
                    parent = appended[-1].id if appended else None
                    appended.append(
                        await self.client.append_message(
                            self._conversation, message, parent_message_id=parent, idempotency_key=f"{key}/{i}"
                        )
                    )
            except BaseException:
                await self._roll_back(appended)
                raise
            if idempotency_key is not None:
                # A retried call is answered from its first outcome, which moves no head: put it
                # where the call leaves it (a move to where it already is records nothing).
                await self.client.move_head(self._conversation, appended[-1].id)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the latest item from the head path and return it (see the module's docstring)."""
        async with self._lock:
            path = await self._path(last=1)
            if not path:
                return None
            head = path[-1]
            items = messages_to_items(path)
            own = [item for item in items if message_of_item(item["id"]) == head.id]
            popped, rest = own[-1], own[:-1]
            if head.parent_message_id is None:
                self._restart()
                if rest:
                    await self._append_rest(rest, None)
                return popped  # type: ignore[return-value]
            if not (rest and await self._append_rest(rest, head.parent_message_id)):
                await self.client.move_head(self._conversation, head.parent_message_id)
            return popped  # type: ignore[return-value]

    async def clear_session(self) -> None:
        """Move the session to a new, empty conversation; the old one stays in the log."""
        async with self._lock:
            self._restart()

    # --- forks and branches ------------------------------------------------------------------

    async def fork(
        self, at_item: str | None = None, *, title: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ConvtreeSession:
        """A new session whose history is the head path up to the message holding `at_item` (an
        item id from `get_items`; default: the head), that message included whole (a model step's
        reasoning, text and calls are one message). The two continue apart: neither sees the
        other's later items."""
        if at_item is None:
            at = (await self.client.conversation(self._conversation)).head_id
            if at is None:
                raise ValueError("an empty session has nothing to fork")
        else:
            at = self._message_id(at_item)
        forked = await self.client.fork(self._conversation, at, title=title, metadata=metadata)
        session = ConvtreeSession(forked.id, client=self.client, session_settings=self.session_settings)
        session._exists = True
        return session

    async def branches(self) -> list[Branch]:
        """Every branch tip of the conversation (a popped item's message is one too), oldest first."""
        try:
            leaves = await self.client.leaves(self._conversation)
        except NotFound:
            return []
        return [
            Branch(str(leaf.message_id), leaf.depth, leaf.created_at, leaf.message_id == leaves.head_id)
            for leaf in leaves.leaves
        ]

    async def switch(self, to: str) -> None:
        """Move the head to `to` (a message id, such as a Branch's `leaf_id`, or an item id):
        get_items reads that branch from now on, and add_items continues it."""
        async with self._lock:
            await self.client.move_head(self._conversation, self._message_id(to))

    # --- inside ------------------------------------------------------------------------------

    async def _path(self, *, last: int | None) -> list[Message]:
        try:
            context = await self.client.context(self._conversation, last=last)
        except NotFound:
            return []  # not created yet
        self._exists = True
        return list(context.messages)

    async def _ensure(self) -> None:
        """Create the conversation this session names, the first time it is written to."""
        if self._exists:
            return
        try:
            await self.client.conversation(self._conversation)
        except NotFound:
            await self.client.create_conversation(id=self._conversation)
        self._exists = True

    def _restart(self) -> None:
        self._conversation = uuid.uuid4()
        self._exists = False

    async def _append_rest(self, rest: list[Any], parent: uuid.UUID | None) -> bool:
        """Append what is left of a popped step as one message under `parent`; False if it cannot stand alone."""
        said = items_to_messages(rest)
        if len(said) != 1:
            return False
        await self._ensure()
        try:
            await self.client.append_message(self._conversation, said[0], parent_message_id=parent)
        except InvalidRequest:
            return False
        return True

    async def _roll_back(self, appended: list[Message]) -> None:
        """After a failed add_items, put the head back where the call found it (what was appended
        stays in the tree, off the head path)."""
        if not appended or appended[0].parent_message_id is None:
            return  # nothing moved, or the conversation was empty: there is nowhere to go back to
        try:
            await self.client.move_head(self._conversation, appended[0].parent_message_id)
        except Exception:  # the call's own failure is the one to report
            pass

    def _message_id(self, reference: str) -> uuid.UUID:
        found = message_of_item(reference)
        if found is not None:
            return found
        try:
            return uuid.UUID(reference)
        except ValueError as exc:
            raise ValueError(f"{reference!r} is neither a message id nor an item id") from exc
