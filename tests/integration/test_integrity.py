"""The database itself keeps the log append-only and the tree well-formed, whatever the client."""

import hashlib
import uuid

import asyncpg
import pytest

from tests.helpers import create, say
from tests.postgres import run



async def _execute(url, sql, *args):
    conn = await asyncpg.connect(url)
    try:
        return await conn.execute(sql, *args)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET actor = 'mallory' WHERE conversation_id = $1",
        "DELETE FROM events WHERE conversation_id = $1",
        "UPDATE bodies SET content = 'forged' WHERE family_id IN (SELECT family_id FROM events WHERE conversation_id = $1)",
        "DELETE FROM bodies WHERE family_id IN (SELECT family_id FROM events WHERE conversation_id = $1)",
    ],
)
def test_the_log_and_the_bodies_refuse_changes(server, api, statement):
    cid = create(api, system="s")["id"]
    say(api, cid, "hi")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        run(_execute(server.database_url, statement, uuid.UUID(cid)))
    assert [m["content"] for m in api.get(f"/v1/conversations/{cid}/context").json()["messages"]] == ["s", "hi"]


@pytest.mark.parametrize("table", ["events", "bodies"])
def test_truncate_is_refused(databases, table):
    url = databases.migrated()
    # CASCADE: past the foreign key of body_blobs (which alone refuses a plain TRUNCATE of bodies),
    # to the log's own guard.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        run(_execute(url, f"TRUNCATE {table} CASCADE"))


def _insert_message(url, family, conversation, message, parent, depth, seq=None):
    return _execute(
        url,
        "INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,"
        " body_sha256, payload, actor, created_at, hash)"
        " VALUES (coalesce($6, nextval('events_seq')), 't', $1, $2, 'message_appended', $3, $4, 'user', $5,"
        " $7, '{}', 'a', now(), $7)",
        conversation, family, message, parent, depth, seq, hashlib.sha256(b"x").digest(),
    )


def test_the_database_refuses_a_malformed_tree(databases):
    url = databases.migrated()
    family, conversation, root, child = (uuid.uuid4() for _ in range(4))
    run(_insert_message(url, family, conversation, root, None, 0))
    run(_insert_message(url, family, conversation, child, root, 1))
    # A parent that does not exist.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        run(_insert_message(url, family, conversation, uuid.uuid4(), uuid.uuid4(), 1))
    # A parent in another conversation.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        run(_insert_message(url, family, uuid.uuid4(), uuid.uuid4(), root, 1))
    # A depth that does not follow the parent's.
    with pytest.raises(asyncpg.CheckViolationError):
        run(_insert_message(url, family, conversation, uuid.uuid4(), child, 5))
    # A second root, and a message id used twice.
    with pytest.raises(asyncpg.UniqueViolationError):
        run(_insert_message(url, family, conversation, uuid.uuid4(), None, 0))
    with pytest.raises(asyncpg.UniqueViolationError):
        run(_insert_message(url, family, conversation, child, root, 1))
    # Its own parent (the only way left to make a cycle, since rows never change): it does not exist yet.
    with pytest.raises((asyncpg.ForeignKeyViolationError, asyncpg.CheckViolationError)):
        mid = uuid.uuid4()
        run(_insert_message(url, family, conversation, mid, mid, 1))
