"""The reply a turn launches before its transaction commits: counted only if the turn is recorded.

Over HTTP a turn's transaction fails after the launch only in races (a concurrent writer taking the
same message id), so this drives the use case directly, against a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from service.app import conversations as conversations_app
from service.app import turns
from service.app.caller import Caller
from service.app.generation import Generations
from service.store.events import Store
from service.upstream import EchoProvider
from tests.conftest import run


class Refused(Exception):
    """The turn's transaction failed after its reply was launched."""


def test_a_reply_launched_by_a_turn_that_does_not_commit_is_stopped_and_never_recorded(databases):
    url = databases.migrated()

    async def go() -> None:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        assert pool is not None
        store = Store(pool)
        generations = Generations(store)
        caller = Caller(tenant="t", actor="test")
        try:
            async with store.transaction() as tx:
                created = await conversations_app.create(tx, caller, conversations_app.NewConversation(system="rules"))
            cid = created.conversation.id
            launched = []

            async def work(o: turns.Opening) -> None:
                conversation, scope = await o.tx.get_scoped(caller.tenant, cid)
                root = await o.tx.get_message(scope, conversation.head_id)
                items = [turns.ContextItem(root.id, root.role, root.content)]
                provider = EchoProvider(delay=0.2)  # slow enough to be still talking when the transaction fails
                await o.register(scope.family_id, cid, root.id, provider, "echo", None)
                await o.reply(scope.family_id, root, items, provider, "echo", turns.ReplySpec())
                raise Refused()

            def launch(plan: turns.Plan):
                launched.append(generations.start(caller, plan, relay=True))
                return launched[-1]

            with pytest.raises(Refused):
                await turns.opened(store, caller, generations.owner, launch, work)
            [generation] = launched
            settled = await generation.settled
            assert settled.reply is None and isinstance(settled.error, Refused)
            assert [piece async for batch in generation.deltas() for piece in batch] == []  # relay ended
            async with store.reader() as tx:
                assert await tx.conn.fetch("SELECT 1 FROM pending_replies") == []
                types = await tx.conn.fetch(
                    "SELECT type, role FROM events WHERE conversation_id = $1 ORDER BY seq", cid
                )
            # Only the conversation and its system prompt: no reply, and no failure either (no turn was recorded).
            assert [(t["type"], t["role"]) for t in types] == [
                ("conversation_created", None),
                ("message_appended", "system"),
            ]
        finally:
            await generations.close()
            await pool.close()

    run(go())
