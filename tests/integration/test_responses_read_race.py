"""A response read while its reply is being recorded: each read of a reader is a statement of its
own, so the conversation's scope may be taken just before the reply's record commits and the
pending check just after. The reply must still be found, never reported failed (nor left out of a
deletion). The race is made certain here by reading with the scope as it stood before the reply."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import msgspec
import openai

from service.app.caller import Caller
from service.app.responses import read
from service.store import responses as stored
from service.store.events import Tx
from service.store.pool import Limits

MODEL = "fake/fake-large"


def test_a_response_read_with_a_scope_from_before_its_reply_was_recorded_still_finds_its_reply(model_server, upstream):
    tenant, key = model_server.new_key()
    with openai.OpenAI(base_url=model_server.base_url + "/openai/v1", api_key=key, max_retries=0) as client:
        response = client.responses.create(model=MODEL, input="hello there")
    assert response.status == "completed"
    response_id = uuid.UUID(response.id.removeprefix("resp_"))

    async def go() -> read.Found:
        limits = Limits()
        conn = await asyncpg.connect(model_server.database_url, server_settings=limits.session_settings())
        try:
            tx = Tx(conn)
            record = await stored.get(tx, tenant, response_id)
            assert record is not None
            found = await tx.get_scoped(tenant, record.conversation_id)
            assert found is not None
            reply = await tx.get_message(found[1], record.response_id)
            assert reply is not None
            before = msgspec.structs.replace(found[1], upto=reply.seq - 1)  # the reply not yet written
            assert await tx.get_message(before, record.response_id) is None
            return await read._read(tx, Caller(tenant=tenant, actor="test"), record, before)
        finally:
            await conn.close()

    found = asyncio.run(go())
    assert found.status == "completed" and found.reply is not None
    assert found.reply.content == "Hello from fake-large. You said: hello there"
