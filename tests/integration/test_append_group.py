"""Appends to a head the server remembers, grouped into shared statements (service.app.messages.
AppendGroup): the same answers, the same chain and the same rules as a locked append, whatever
another writer did in between."""

import asyncio
import threading
import time
import uuid

import asyncpg
import httpx
import pytest

from service.app import messages as messages_app
from service.app.caller import Caller
from service.domain import tree
from service.domain.events import GENESIS_HASH
from service.store.events import Store
from tests.helpers import create, problem, say
from tests.postgres import fetch, run
from tests.servers import Server



def audit(api, cid):
    r = api.get(f"/v1/conversations/{cid}/audit")
    assert r.status_code == 200, r.text
    return r.json()


def chain(api, cid):
    """The conversation's messages in the order written, each with its parent."""
    return sorted(api.get(f"/v1/conversations/{cid}/tree").json()["messages"], key=lambda m: m["seq"])


@pytest.fixture
def other_server(server):
    """A second server process's worth of state (its own remembered heads) on the same database."""
    with Server(server.database_url) as srv:
        yield srv


def test_consecutive_appends_form_one_chain_whose_hashes_verify(api):
    cid = create(api, system="be brief")["id"]
    made = [say(api, cid, f"m{i}", role="user" if i % 2 else "assistant") for i in range(30)]
    messages = chain(api, cid)
    assert [m["id"] for m in messages[1:]] == [m["id"] for m in made]
    assert [m["parent_message_id"] for m in messages[1:]] == [m["id"] for m in messages[:-1]]
    assert [m["depth"] for m in made] == list(range(1, 31))
    seqs = [m["seq"] for m in made]
    assert seqs == sorted(seqs) and len(set(seqs)) == 30
    times = [m["created_at"] for m in messages]
    assert times == sorted(times)
    conv = api.get(f"/v1/conversations/{cid}").json()
    assert (conv["head_id"], conv["message_count"], conv["leaf_count"], conv["last_seq"]) == (
        made[-1]["id"], 31, 1, made[-1]["seq"],
    )
    report = audit(api, cid)
    assert report["valid"] and report["events_checked"] == 32 and report["bodies_checked"] == 31
    # Each answer is what a read returns afterwards.
    for m in made[-3:]:
        assert api.get(f"/v1/conversations/{cid}/messages/{m['id']}").json() == m


def test_an_append_after_another_server_wrote_goes_under_the_real_head(server, other_server, api):
    cid = create(api)["id"]
    first = say(api, cid, "one")
    second = say(api, cid, "two")  # this server now remembers the head: `second`
    tenant_key = api.headers["authorization"]
    with other_server.client() as other:
        other.headers["authorization"] = tenant_key
        third = say(other, cid, "three")
    fourth = say(api, cid, "four")
    assert (second["parent_message_id"], third["parent_message_id"], fourth["parent_message_id"]) == (
        first["id"], second["id"], third["id"],
    )
    assert fourth["depth"] == 3
    assert audit(api, cid)["valid"]
    conv = api.get(f"/v1/conversations/{cid}").json()
    assert (conv["head_id"], conv["message_count"]) == (fourth["id"], 4)


def test_if_match_is_checked_against_the_stored_head_not_the_remembered_one(server, other_server, api):
    cid = create(api)["id"]
    say(api, cid, "one")
    two = say(api, cid, "two")
    with other_server.client() as other:
        other.headers["authorization"] = api.headers["authorization"]
        three = say(other, cid, "three")
    stale = api.post(
        f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "x"}, headers={"If-Match": f'"{two["id"]}"'}
    )
    problem(stale, 412, "head-moved")
    fresh = api.post(
        f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "y"}, headers={"If-Match": f'"{three["id"]}"'}
    )
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["parent_message_id"] == three["id"]


def test_a_head_moved_back_takes_the_next_append(api):
    cid = create(api)["id"]
    one = say(api, cid, "one")
    say(api, cid, "two")
    assert api.put(f"/v1/conversations/{cid}/head", json={"message_id": one["id"]}).status_code == 200
    branch = say(api, cid, "two, again")
    assert branch["parent_message_id"] == one["id"]
    conv = api.get(f"/v1/conversations/{cid}").json()
    assert (conv["head_id"], conv["leaf_count"]) == (branch["id"], 2)
    assert audit(api, cid)["valid"]


def test_a_redaction_between_appends_is_kept(api):
    cid = create(api)["id"]
    one = say(api, cid, "secret")
    say(api, cid, "two")
    r = api.post(f"/v1/conversations/{cid}/messages/{one['id']}/redact", json={"reason": "pii"})
    assert r.status_code in (200, 201), r.text
    three = say(api, cid, "three")
    assert three["depth"] == 2
    context = api.get(f"/v1/conversations/{cid}/context").json()["messages"]
    assert [m["content"] for m in context] == ["[redacted]", "two", "three"]
    assert audit(api, cid)["valid"]


def test_a_client_id_retry_returns_the_original_and_a_reuse_is_a_conflict(api):
    cid = create(api)["id"]
    say(api, cid, "one")
    mid = str(uuid.uuid4())
    body = {"id": mid, "role": "user", "content": "two"}
    first = api.post(f"/v1/conversations/{cid}/messages", json=body)
    assert first.status_code == 201, first.text
    again = api.post(f"/v1/conversations/{cid}/messages", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    say(api, cid, "three")
    later = api.post(f"/v1/conversations/{cid}/messages", json=body)  # no longer the head
    assert later.status_code == 200 and later.json() == first.json()
    problem(api.post(f"/v1/conversations/{cid}/messages", json={**body, "content": "else"}), 409, "message-id-conflict")
    assert len(chain(api, cid)) == 3
    assert audit(api, cid)["valid"]


def test_tenants_with_the_same_conversation_id_stay_apart(server):
    cid = str(uuid.uuid4())
    _, key_a = server.new_key()
    _, key_b = server.new_key()
    with server.client(key_a) as a, server.client(key_b) as b:
        create(a, id=cid)
        create(b, id=cid)
        for i in range(4):
            say(a, cid, f"a{i}")
            say(b, cid, f"b{i}")
        assert [m["content"] for m in a.get(f"/v1/conversations/{cid}/context").json()["messages"]] == [
            "a0", "a1", "a2", "a3",
        ]
        assert [m["content"] for m in b.get(f"/v1/conversations/{cid}/context").json()["messages"]] == [
            "b0", "b1", "b2", "b3",
        ]
        assert audit(a, cid)["valid"] and audit(b, cid)["valid"]


@pytest.mark.slow
def test_concurrent_appends_to_many_conversations_lose_nothing(server, api):
    conversations = [create(api)["id"] for _ in range(12)]
    for cid in conversations:
        say(api, cid, "start")
    auth = api.headers["authorization"]

    async def client(c, cid):
        return [
            (await c.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": f"{cid} {i}"}))
            for i in range(8)
        ]

    async def go():
        limits = httpx.Limits(max_connections=12)
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": auth}, limits=limits) as c:
            return await asyncio.gather(*(client(c, cid) for cid in conversations))

    for cid, responses in zip(conversations, asyncio.run(go()), strict=True):
        assert [r.status_code for r in responses] == [201] * 8
        messages = chain(api, cid)
        assert [m["content"] for m in messages] == ["start"] + [f"{cid} {i}" for i in range(8)]
        assert [m["parent_message_id"] for m in messages[1:]] == [m["id"] for m in messages[:-1]]
        assert audit(api, cid)["valid"]
    rows = fetch(server.database_url, "SELECT seq FROM events WHERE conversation_id = ANY($1::uuid[])", conversations)
    assert len(rows) == len({r["seq"] for r in rows}) == 12 * 10


@pytest.mark.slow
def test_concurrent_appends_to_one_head_form_one_chain(server, api):
    cid = create(api)["id"]
    say(api, cid, "start")
    auth = api.headers["authorization"]

    async def go():
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": auth}) as c:
            return await asyncio.gather(*[
                c.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": f"m{i}"}) for i in range(20)
            ])

    assert [r.status_code for r in asyncio.run(go())] == [201] * 20
    messages = chain(api, cid)
    assert len(messages) == 21
    assert [m["parent_message_id"] for m in messages[1:]] == [m["id"] for m in messages[:-1]]
    assert audit(api, cid)["valid"]


def test_a_feed_follower_is_woken_by_a_grouped_append(api):
    cid = create(api)["id"]
    say(api, cid, "one")
    after = api.get("/v1/events", params={"after": 0, "limit": 200}).json()["next_after"]
    result = {}

    def poll():
        result.update(api.get("/v1/events", params={"after": after, "wait": 30}, timeout=40).json())

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)
    m = say(api, cid, "two")
    poller.join(timeout=15)
    assert not poller.is_alive(), "the long poll did not wake on the commit"
    assert [e["payload"]["message_id"] for e in result["items"]] == [m["id"]]


def test_a_remembered_state_that_never_committed_is_not_built_on(databases):
    """A state remembered from a transaction that rolled back matches no stored conversation: the
    append falls back to the lock and goes under the real head."""
    url = databases.migrated()

    async def go():
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        try:
            store = Store(pool)
            caller = Caller(tenant="t", actor="test")
            group = messages_app.AppendGroup(store)
            from service.app import conversations as conversations_app

            async with store.transaction() as tx:
                created = await conversations_app.create(tx, caller, conversations_app.NewConversation())
            cid = created.conversation.id
            one = (await group.append(caller, cid, messages_app.NewMessage(role="user", content="one"))).message
            known = group.heads.get("t", cid)
            assert known is not None and known.head.message_id == one.id
            ghost = tree.Node(
                message_id=uuid.uuid4(), conversation_id=cid, parent_id=one.id, role="user", depth=1,
                body_sha256=bytes(32), metadata={}, has_children=False,
            )  # fmt: skip
            bogus = tree.ConversationState(
                conversation_id=cid, family_id=known.state.family_id, head_id=ghost.message_id, message_count=2,
                leaf_count=1, last_seq=known.state.last_seq + 10**9, last_hash=GENESIS_HASH,
            )  # fmt: skip
            group.heads.forget("t", cid)
            group.heads.remember("t", messages_app.KnownHead(bogus, ghost, known.at))
            two = (await group.append(caller, cid, messages_app.NewMessage(role="user", content="two"))).message
            assert two.parent_message_id == one.id and two.depth == 1
            known = group.heads.get("t", cid)
            assert known is not None and known.head.message_id == two.id
            async with store.reader() as tx:
                found = await tx.get_conversation("t", cid)
            assert found is not None and found[0].head_id == two.id and found[0].message_count == 2
        finally:
            await pool.close()

    run(go())


def test_two_servers_appending_branches_and_keyed_messages_at_once_keep_one_valid_tree(server, other_server, api):
    """Appends neither process can decide on what it remembers (branches; the other process wrote
    last) read the conversation without a lock and race in grouped statements: each is written
    once, under the parent it names, and the summary counts what the tree holds."""
    cid = create(api)["id"]
    root = say(api, cid, "root")["id"]
    auth = api.headers["authorization"]
    keys = [str(uuid.uuid4()) for _ in range(12)]

    def body(i):
        return {"role": "user", "content": f"m{i}", **({"parent_message_id": root} if i % 3 == 0 else {})}

    async def go():
        async with (
            httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": auth}) as a,
            httpx.AsyncClient(base_url=other_server.base_url, headers={"Authorization": auth}) as b,
        ):
            def post(i):
                client = a if i % 2 else b
                headers = {"Idempotency-Key": keys[i // 2]} if i % 2 == 0 and i // 2 < len(keys) else {}
                return client.post(f"/v1/conversations/{cid}/messages", json=body(i), headers=headers)

            first = await asyncio.gather(*[post(i) for i in range(24)])
            again = await asyncio.gather(*[post(i) for i in range(0, 24, 2)])  # the keyed ones, retried
            return first, again

    first, again = asyncio.run(go())
    assert [r.status_code for r in first] == [201] * 24, [r.text for r in first if r.status_code != 201]
    assert [r.content for r in again] == [r.content for r in first[0:24:2]]
    messages = chain(api, cid)
    assert len(messages) == 25 and len({m["id"] for m in messages}) == 25
    by_id = {m["id"]: m for m in messages}
    for i, r in enumerate(first):
        m = r.json()
        assert by_id[m["id"]]["content"] == f"m{i}"
        if i % 3 == 0:
            assert m["parent_message_id"] == root
    parents = {m["parent_message_id"] for m in messages}
    conv = api.get(f"/v1/conversations/{cid}").json()
    assert conv["message_count"] == 25
    assert conv["leaf_count"] == sum(1 for m in messages if m["id"] not in parents)
    assert audit(api, cid)["valid"]
