"""A context read writes most messages' JSON without building their views (the store's `tail` and
service/store/rows.py `served`): what it sends is, byte for byte, the typed views' encoding."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import asyncpg
import msgspec

from service.app import replay
from service.app.caller import Caller
from service.domain import calls, views
from service.domain.window import last_messages
from service.store.events import Store
from tests.helpers import create, say
from tests.postgres import fetch, run

# Strings JSON must escape, and some it must not.
HOSTILE = [
    'quotes " and \\ backslashes \\" and /slashes/',
    "controls \x01\x08\t\n\x0c\r\x1f and DEL \x7f",
    "unicode é 中文 \u2028\u2029 emoji 🦜 and </script>",
    " ",
]


def typed_context(database_url: str, tenant: str, cid: str, mid: str, last: int | None) -> bytes:
    """The context as it was built before the store wrote messages itself: every message a view."""

    async def build() -> bytes:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            async with Store(pool).reader() as tx:
                _, scope = await replay.summary(tx, Caller(tenant, "test"), uuid.UUID(cid), None)
                path = await tx.message_path(scope, uuid.UUID(mid))
        finally:
            await pool.close()
        messages = last_messages(path, last)
        context = views.Context(
            conversation_id=uuid.UUID(cid),
            leaf_id=uuid.UUID(mid),
            depth=len(path),
            messages=messages,
            pending_tool_calls=calls.unanswered(messages),
        )
        return msgspec.json.encode(context)

    out: list[bytes] = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(build())))
    thread.start()
    thread.join()
    return out[0]


def post(api: Any, cid: str, **body: Any) -> dict[str, Any]:
    r = api.post(f"/v1/conversations/{cid}/messages", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_every_context_is_the_typed_views_encoding_byte_for_byte(server, api):
    cid = create(api, system="Be terse. \"Really\".")["id"]
    tenant = fetch(server.database_url, "SELECT tenant FROM conversations WHERE conversation_id = $1", uuid.UUID(cid))[0]["tenant"]
    ids = [say(api, cid, text, role="user" if i % 2 == 0 else "assistant")["id"] for i, text in enumerate(HOSTILE)]
    ids.append(say(api, cid, "with metadata", metadata={"k": ["v", 1, None]})["id"])
    ids.append(say(api, cid, "named", name="alice")["id"])
    called = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    ids.append(post(api, cid, role="assistant", content=None, tool_calls=called)["id"])
    ids.append(post(api, cid, role="tool", content="result \"1\"", tool_call_id="c1")["id"])
    ids.append(say(api, cid, "asks again")["id"])
    ids.append(post(api, cid, role="assistant", content=None, tool_calls=[{**called[0], "id": "c2"}])["id"])
    secret = say(api, cid, "secret", parent_message_id=ids[2])["id"]  # a branch: siblings to count
    r = api.post(f"/v1/conversations/{cid}/messages/{ids[1]}/redact", json={"reason": "personal data"})
    assert r.status_code in (200, 201), r.text
    ids.append(say(api, cid, "under the head again", parent_message_id=ids[-1])["id"])
    r = api.post(f"/v1/conversations/{cid}/messages/{ids[4]}/fork", json={})
    assert r.status_code in (200, 201), r.text
    fork = r.json()
    fid = fork["id"]
    in_fork = say(api, fid, "in the fork")["id"]
    beside = say(api, fid, "beside the base", parent_message_id=ids[3])["id"]

    compared = 0
    for conversation, leaves in ((cid, [*ids, secret]), (fid, [in_fork, beside, ids[2], ids[4]])):
        for mid in leaves:
            for last in (None, 1, 3):
                params = {} if last is None else {"last": last}
                r = api.get(f"/v1/conversations/{conversation}/messages/{mid}/context", params=params)
                assert r.status_code == 200, r.text
                assert r.content == typed_context(server.database_url, tenant, conversation, mid, last), (conversation, mid, last)
                compared += 1
    head = api.get(f"/v1/conversations/{cid}/context")
    assert head.content == typed_context(server.database_url, tenant, cid, ids[-1], None)
    assert b'"pending_tool_calls":["c2"]' in head.content and b'"redacted"' in head.content
    assert compared == 3 * (len(ids) + 1 + 4)


def test_a_plain_message_whose_body_is_missing_is_served_as_its_view(server, api):
    """A plain message is written out by the store only with its body: one whose body is gone (here
    deleted behind convtree's back, its table's guards off) is built as its view, as the typed read
    builds it, and the context keeps every message of the path."""
    cid = create(api, system="Be terse.")["id"]
    tenant = fetch(server.database_url, "SELECT tenant FROM conversations WHERE conversation_id = $1", uuid.UUID(cid))[0]["tenant"]
    ids = [say(api, cid, f"message {i}", role="user" if i % 2 == 0 else "assistant")["id"] for i in range(5)]
    whole = api.get(f"/v1/conversations/{cid}/context").json()
    assert [m["content"] for m in whole["messages"]][1:] == [f"message {i}" for i in range(5)]
    run(_delete_body(server.database_url, uuid.UUID(ids[2])))

    r = api.get(f"/v1/conversations/{cid}/context")
    assert r.status_code == 200, r.text
    assert r.content == typed_context(server.database_url, tenant, cid, ids[-1], None)
    served = r.json()
    assert served["depth"] == 6 and len(served["messages"]) == 6
    assert [m["id"] for m in served["messages"]][1:] == ids


async def _delete_body(database_url: str, message_id: uuid.UUID) -> None:
    """Deletes a body as only tampering could: with its table's guards off, as its owner."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            assert await conn.execute("DELETE FROM bodies WHERE message_id = $1", message_id) == "DELETE 1"
    finally:
        await conn.close()
