"""Growing deep and wide conversations fast: the domain decides every append, the store writes them in batches.

Building 20,000 messages one HTTP request at a time would spend most of a run on setup, so the
builder runs convtree's own code minus the HTTP hop: `tree.decide_append` decides each message,
`seal` chains its hash, and `Tx.append_events` writes a batch of them (with their bodies, their
path digests and the conversation's summary) in one transaction, through the same triggers as any
append. The rows are the ones the API would have written, except that a batch shares one
`created_at`.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

import msgspec

from bench.harness import message_text
from service.app import conversations as conversations_app
from service.app import messages as messages_app
from service.app.caller import Caller
from service.domain import threads, tree
from service.domain.events import Envelope, Event, seal
from service.domain.stored import Stored, stored
from service.store.events import Store


@dataclass
class Built:
    """A conversation being built, with every message's place in it (what `decide_append` needs)."""

    conversation_id: uuid.UUID
    nodes: dict[uuid.UUID, tree.Node] = field(default_factory=dict)
    paths: dict[uuid.UUID, bytes] = field(default_factory=dict)  # each message's path digest (message_paths)


@dataclass
class Plan:
    """Grow a chain of `count` messages below `parent` (None: the root) in `conversation`."""

    conversation: Built
    parent: uuid.UUID | None
    count: int
    made: list[uuid.UUID] = field(default_factory=list)

    @property
    def tip(self) -> uuid.UUID | None:
        return self.made[-1] if self.made else self.parent


class Builder:
    def __init__(
        self, store: Store, tenant: str, rng: random.Random, chars: int = 400, batch: int = 25
    ) -> None:
        self.store = store
        self.caller = Caller(tenant=tenant, actor="bench-builder", request_id=None)
        self.rng = rng
        self.chars = chars
        self.batch = batch

    async def create(self, title: str) -> Built:
        async with self.store.transaction() as tx:
            created = await conversations_app.create(
                tx, self.caller, conversations_app.NewConversation(title=title)
            )
        return Built(created.conversation.id)

    async def grow(self, plans: list[Plan]) -> None:
        """Carry out the plans a batch at a time, round-robin, so that each conversation's rows end
        up spread over the table's pages as when many chats write at once, not packed together."""
        pending = [p for p in plans if p.count > 0]
        while pending:
            for plan in pending:
                await self._append_batch(plan, min(self.batch, plan.count - len(plan.made)))
            pending = [p for p in pending if len(p.made) < p.count]

    async def move_head(self, conversation: Built, message_id: uuid.UUID) -> None:
        await messages_app.move_head(self.store, self.caller, conversation.conversation_id, message_id)

    async def _append_batch(self, plan: Plan, n: int) -> None:
        conv = plan.conversation
        nodes = conv.nodes
        async with self.store.transaction() as tx:
            begun = await tx.begin_write(self.caller.tenant, conv.conversation_id, n)
            assert begun is not None, "the conversation was created by this builder"
            start, now, seqs = begun
            state = start
            events: list[Event] = []
            bodies: dict[uuid.UUID, Stored] = {}
            paths: dict[uuid.UUID, bytes] = {}
            made: list[tuple[uuid.UUID, tree.Node]] = []
            new_ids: list[uuid.UUID] = []
            parent = nodes[plan.tip] if plan.tip is not None else None
            for _ in range(n):
                depth = 0 if parent is None else parent.depth + 1
                cmd = tree.Append(
                    message_id=uuid.uuid4(),
                    parent_id=None if parent is None else parent.message_id,
                    role="user" if depth % 2 == 0 else "assistant",
                    content=message_text(self.rng, self.chars),
                    metadata={},
                )
                state = tree.seen(state, parent)
                decided = tree.decide_append(state, cmd, parent, None)
                assert isinstance(decided, list)
                event = decided[0]
                assert isinstance(event, tree.MessageAppended)
                events.append(event)
                bodies[cmd.message_id] = stored(cmd)
                paths.update(threads.path_digests([event], {**conv.paths, **paths}))
                state = tree.evolve(state, event)
                if parent is not None and not parent.has_children:
                    parent = msgspec.structs.replace(parent, has_children=True)
                    made.append((parent.message_id, parent))
                node = tree.appended_node(event, conv.conversation_id)
                made.append((node.message_id, node))
                new_ids.append(node.message_id)
                parent = node
            envelopes = [
                Envelope(
                    seq=seq,
                    tenant=self.caller.tenant,
                    conversation_id=conv.conversation_id,
                    family_id=start.family_id,
                    actor=self.caller.actor,
                    request_id=None,
                    created_at=now,
                )
                for seq in seqs
            ]
            sealed = seal(start.last_hash, envelopes, events)
            await tx.append_events(self.caller.tenant, tree.chained(state, sealed), sealed, bodies, paths)
        # Only once the batch is committed does it become the builder's truth.
        nodes.update(made)
        conv.paths.update(paths)
        plan.made.extend(new_ids)
