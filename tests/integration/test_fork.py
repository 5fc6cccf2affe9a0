"""Forks through the API: a fork shows its source's path to the message it was forked at, by
reference, and from there on the fork and the source grow apart."""

import hashlib
import uuid

import asyncpg
import msgspec
import pytest

from service.domain import events as ev
from service.domain.tree import Scope
from service.store.queries import Q
from tests.helpers import create, problem, say
from tests.postgres import fetch, run
from tests.servers import Server



def fork(api, cid, mid, status=201, headers=None, **body):
    r = api.post(f"/v1/conversations/{cid}/messages/{mid}/fork", json=body, headers=headers or {})
    assert r.status_code == status, r.text
    return r.json()


def ids(messages):
    return [m["id"] for m in messages]


def context(api, cid, mid=None):
    path = f"/v1/conversations/{cid}/context" if mid is None else f"/v1/conversations/{cid}/messages/{mid}/context"
    r = api.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def get(api, path):
    r = api.get(path)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def source(api):
    """sys → a → b → c, in one conversation."""
    conv = create(api, system="be brief", title="source")
    cid = conv["id"]
    a = say(api, cid, "a")
    b = say(api, cid, "b", role="assistant")
    c = say(api, cid, "c")
    return {"id": cid, "sys": conv["head_id"], "a": a["id"], "b": b["id"], "c": c["id"]}


def test_a_fork_is_the_source_path_to_the_message_with_the_message_as_head(api, server, source):
    r = api.post(
        f"/v1/conversations/{source['id']}/messages/{source['b']}/fork",
        json={"title": "what if", "metadata": {"k": [1, 2]}},
    )
    assert r.status_code == 201, r.text
    f = r.json()
    assert r.headers["location"] == f"/v1/conversations/{f['id']}"
    assert f["head_id"] == source["b"]
    assert (f["message_count"], f["leaf_count"]) == (3, 1)
    assert f["forked_from"] == {"conversation_id": source["id"], "message_id": source["b"]}
    assert (f["title"], f["metadata"]) == ("what if", {"k": [1, 2]})
    assert get(api, f"/v1/conversations/{f['id']}") == f

    ctx = context(api, f["id"])
    assert ids(ctx["messages"]) == [source["sys"], source["a"], source["b"]]
    # Inherited messages keep their ids and say which conversation they live in.
    assert {m["conversation_id"] for m in ctx["messages"]} == {source["id"]}
    assert [m["content"] for m in ctx["messages"]] == ["be brief", "a", "b"]
    assert ids(get(api, f"/v1/conversations/{f['id']}/tree")["messages"]) == ids(ctx["messages"])
    leaves = get(api, f"/v1/conversations/{f['id']}/leaves")
    assert [leaf["message_id"] for leaf in leaves["leaves"]] == [source["b"]]
    assert get(api, f"/v1/conversations/{f['id']}/messages/{source['a']}")["conversation_id"] == source["id"]

    # The provenance is an event: the fork's first, chained from the genesis hash.
    [row] = fetch(
        server.database_url,
        "SELECT seq, tenant, family_id, type, payload::text AS payload, actor, request_id, created_at, hash"
        " FROM events WHERE conversation_id = $1",
        uuid.UUID(f["id"]),
    )
    assert row["type"] == "conversation_forked"
    event = msgspec.json.decode(row["payload"], type=ev.ConversationForked)
    assert event == ev.ConversationForked(
        source_conversation_id=uuid.UUID(source["id"]),
        source_message_id=uuid.UUID(source["b"]),
        title="what if",
        metadata={"k": [1, 2]},
    )
    envelope = ev.Envelope(
        seq=row["seq"],
        tenant=row["tenant"],
        conversation_id=uuid.UUID(f["id"]),
        family_id=row["family_id"],
        actor=row["actor"],
        request_id=row["request_id"],
        created_at=row["created_at"],
    )
    assert row["hash"] == ev.chain_hash(ev.GENESIS_HASH, envelope, ev.to_columns(event))
    # Constant cost: nothing of the path was copied.
    [source_family] = fetch(
        server.database_url, "SELECT family_id FROM conversations WHERE conversation_id = $1", uuid.UUID(source["id"])
    )
    assert source_family["family_id"] == row["family_id"]


def test_appends_to_the_fork_and_to_the_source_stay_apart(api, source):
    f = fork(api, source["id"], source["b"])
    x = say(api, f["id"], "x in the fork")
    y = say(api, source["id"], "y in the source")
    assert x["parent_message_id"] == source["b"] and x["conversation_id"] == f["id"] and x["depth"] == 3

    assert ids(context(api, f["id"])["messages"]) == [source["sys"], source["a"], source["b"], x["id"]]
    assert ids(context(api, source["id"])["messages"]) == [
        source["sys"],
        source["a"],
        source["b"],
        source["c"],
        y["id"],
    ]
    assert x["id"] not in ids(get(api, f"/v1/conversations/{source['id']}/tree")["messages"])
    fork_tree = ids(get(api, f"/v1/conversations/{f['id']}/tree")["messages"])
    assert fork_tree == [source["sys"], source["a"], source["b"], x["id"]]
    # The source's messages after the fork point are not the fork's, and the fork's are not the source's.
    for mid in (source["c"], y["id"]):
        problem(api.get(f"/v1/conversations/{f['id']}/messages/{mid}"), 404, "message-not-found")
        problem(api.get(f"/v1/conversations/{f['id']}/messages/{mid}/context"), 404, "message-not-found")
        problem(api.put(f"/v1/conversations/{f['id']}/head", json={"message_id": mid}), 404, "message-not-found")
        body = {"role": "user", "content": "no", "parent_message_id": mid}
        problem(api.post(f"/v1/conversations/{f['id']}/messages", json=body), 404, "parent-not-found")
    problem(api.get(f"/v1/conversations/{source['id']}/messages/{x['id']}"), 404, "message-not-found")
    kids = get(api, f"/v1/conversations/{f['id']}/messages/{source['b']}/children")["children"]
    assert ids(kids) == [x["id"]]
    assert ids(get(api, f"/v1/conversations/{source['id']}/messages/{source['b']}/children")["children"]) == [
        source["c"]
    ]
    src = get(api, f"/v1/conversations/{source['id']}")
    assert (src["message_count"], src["leaf_count"], src["head_id"], src["forked_from"]) == (5, 1, y["id"], None)


def test_a_fork_branches_under_an_inherited_message(api, source):
    f = fork(api, source["id"], source["c"])
    z = say(api, f["id"], "z", parent_message_id=source["a"])
    assert (z["parent_message_id"], z["depth"], z["conversation_id"]) == (source["a"], 2, f["id"])

    summary = get(api, f"/v1/conversations/{f['id']}")
    assert (summary["head_id"], summary["message_count"], summary["leaf_count"]) == (z["id"], 5, 2)
    leaves = get(api, f"/v1/conversations/{f['id']}/leaves")["leaves"]
    assert [leaf["message_id"] for leaf in leaves] == [source["c"], z["id"]]
    # a's children in the fork: the inherited one first (it is older), then the fork's own.
    kids = get(api, f"/v1/conversations/{f['id']}/messages/{source['a']}/children")["children"]
    assert ids(kids) == [source["b"], z["id"]]
    # The source does not see the fork's branch.
    assert ids(get(api, f"/v1/conversations/{source['id']}/messages/{source['a']}/children")["children"]) == [
        source["b"]
    ]
    assert get(api, f"/v1/conversations/{source['id']}")["leaf_count"] == 1

    # The head can move back to an inherited message, and an append then continues from it.
    r = api.put(f"/v1/conversations/{f['id']}/head", json={"message_id": source["b"]})
    assert r.status_code == 200 and r.json()["head_id"] == source["b"]
    w = say(api, f["id"], "w")
    assert (w["parent_message_id"], w["depth"]) == (source["b"], 3)
    assert get(api, f"/v1/conversations/{f['id']}")["leaf_count"] == 3  # c, z and w


def test_sibling_counts_in_a_fork_count_only_what_the_fork_sees(api, source):
    b2 = say(api, source["id"], "b2", role="assistant", parent_message_id=source["a"])
    # In the source, a has two children: b and b2.
    places = {
        m["id"]: (m["sibling_position"], m["sibling_count"])
        for m in context(api, source["id"], source["b"])["messages"]
    }
    assert places[source["b"]] == (1, 2)

    f = fork(api, source["id"], source["b"])
    # In the fork, b2 is not visible: b is a's only child.
    places = {m["id"]: (m["sibling_position"], m["sibling_count"]) for m in context(api, f["id"])["messages"]}
    assert places == {source["sys"]: (1, 1), source["a"]: (1, 1), source["b"]: (1, 1)}
    problem(api.get(f"/v1/conversations/{f['id']}/messages/{b2['id']}"), 404, "message-not-found")

    z = say(api, f["id"], "z", parent_message_id=source["a"])
    places = {m["id"]: (m["sibling_position"], m["sibling_count"]) for m in context(api, f["id"])["messages"]}
    assert places[z["id"]] == (2, 2)
    places = {
        m["id"]: (m["sibling_position"], m["sibling_count"]) for m in context(api, f["id"], source["b"])["messages"]
    }
    assert places[source["b"]] == (1, 2)
    # Two of the fork's own under the base: each counts the other, and no inherited child.
    x1 = say(api, f["id"], "x1", parent_message_id=source["b"])
    x2 = say(api, f["id"], "x2", parent_message_id=source["b"])
    assert [(m["sibling_position"], m["sibling_count"]) for m in context(api, f["id"], x1["id"])["messages"]][-1] == (
        1,
        2,
    )
    assert [(m["sibling_position"], m["sibling_count"]) for m in context(api, f["id"], x2["id"])["messages"]][-1] == (
        2,
        2,
    )


def test_leaves_of_a_fork(api, source):
    f = fork(api, source["id"], source["b"])

    def tips():
        body = get(api, f"/v1/conversations/{f['id']}/leaves")
        assert len(body["leaves"]) == get(api, f"/v1/conversations/{f['id']}")["leaf_count"]
        return [leaf["message_id"] for leaf in body["leaves"]]

    assert tips() == [source["b"]]  # the base is a leaf until the fork writes under it
    x = say(api, f["id"], "x")
    assert tips() == [x["id"]]
    y = say(api, f["id"], "y", parent_message_id=source["sys"])
    assert tips() == [x["id"], y["id"]]
    assert get(api, f"/v1/conversations/{f['id']}")["message_count"] == 5


def test_forks_of_forks_read_their_whole_path_in_one_round_trip(api, server):
    a = create(api, system="sys")
    a1 = say(api, a["id"], "a1")
    a2 = say(api, a["id"], "a2")
    b = fork(api, a["id"], a2["id"])
    b1 = say(api, b["id"], "b1")
    say(api, b["id"], "b2")
    c = fork(api, b["id"], b1["id"])
    c1 = say(api, c["id"], "c1")
    d = fork(api, c["id"], c1["id"])
    d1 = say(api, d["id"], "d1")

    expected = [a["head_id"], a1["id"], a2["id"], b1["id"], c1["id"], d1["id"]]
    ctx = context(api, d["id"])
    assert ids(ctx["messages"]) == expected
    assert [m["conversation_id"] for m in ctx["messages"]] == [a["id"]] * 3 + [b["id"], c["id"], d["id"]]
    assert d["forked_from"] == {"conversation_id": c["id"], "message_id": c1["id"]}
    assert get(api, f"/v1/conversations/{d['id']}")["message_count"] == 6

    # The whole path, through three forks, is one statement: one round trip to the database.
    [row] = fetch(
        server.database_url,
        "SELECT family_id, last_seq, forked_from_message_id, base_depth FROM conversations WHERE conversation_id = $1",
        uuid.UUID(d["id"]),
    )
    scope = Scope(
        family_id=row["family_id"],
        conversation_id=uuid.UUID(d["id"]),
        base_id=row["forked_from_message_id"],
        base_depth=row["base_depth"],
        upto=row["last_seq"],
    )
    path_query = Q["message_path"]
    rows = fetch(
        server.database_url,
        path_query.sql,
        *path_query.args(
            {
                "family_id": scope.family_id,
                "conversation_id": scope.conversation_id,
                "message_id": uuid.UUID(d1["id"]),
                "base_id": scope.base_id,
                "base_depth": scope.base_depth,
                "upto": scope.upto,
            }
        ),
    )
    path = sorted((r for r in rows if r["on_path"]), key=lambda r: r["depth"])
    assert [str(r["message_id"]) for r in path] == expected

    # Deep inherited messages are writable from the newest fork, and forkable again.
    e = say(api, d["id"], "under a1", parent_message_id=a1["id"])
    assert ids(context(api, d["id"])["messages"]) == [a["head_id"], a1["id"], e["id"]]
    assert [m["sibling_count"] for m in context(api, d["id"])["messages"]] == [1, 1, 2]
    g = fork(api, d["id"], a1["id"])
    assert ids(context(api, g["id"])["messages"]) == [a["head_id"], a1["id"]]
    assert e["id"] not in ids(get(api, f"/v1/conversations/{g['id']}/tree")["messages"])


def test_a_fork_stays_inside_its_tenant(api, server, source):
    _, key = server.new_key()
    with server.client(key) as other:
        problem(
            other.post(f"/v1/conversations/{source['id']}/messages/{source['b']}/fork", json={}),
            404,
            "conversation-not-found",
        )
        mine = create(other)
        m = say(other, mine["id"], "mine")
        # Another tenant's message cannot be the fork point of one's own conversation either.
        problem(
            other.post(f"/v1/conversations/{mine['id']}/messages/{source['b']}/fork", json={}), 404, "message-not-found"
        )
    problem(api.post(f"/v1/conversations/{source['id']}/messages/{m['id']}/fork", json={}), 404, "message-not-found")
    problem(
        api.post(f"/v1/conversations/{source['id']}/messages/{uuid.uuid4()}/fork", json={}), 404, "message-not-found"
    )
    problem(
        api.post(f"/v1/conversations/{uuid.uuid4()}/messages/{source['b']}/fork", json={}),
        404,
        "conversation-not-found",
    )
    problem(api.post(f"/v1/conversations/{source['id']}/messages/not-a-uuid/fork", json={}), 422, "invalid-request")
    problem(
        api.post(f"/v1/conversations/{source['id']}/messages/{source['b']}/fork", json={"x": 1}), 422, "invalid-request"
    )


def test_a_fork_cannot_see_what_its_source_forked_off_elsewhere(api, source):
    """A message of a sibling fork (same family, another conversation) is not visible."""
    f1 = fork(api, source["id"], source["b"])
    f2 = fork(api, source["id"], source["b"])
    x = say(api, f1["id"], "x")
    problem(api.get(f"/v1/conversations/{f2['id']}/messages/{x['id']}"), 404, "message-not-found")
    problem(api.post(f"/v1/conversations/{f2['id']}/messages/{x['id']}/fork", json={}), 404, "message-not-found")
    body = {"role": "user", "content": "no", "parent_message_id": x["id"]}
    problem(api.post(f"/v1/conversations/{f2['id']}/messages", json=body), 404, "parent-not-found")
    # Message ids are unique per family: the sibling fork's id cannot be reused.
    body = {"id": x["id"], "role": "user", "content": "x"}
    problem(api.post(f"/v1/conversations/{f2['id']}/messages", json=body), 409, "message-id-conflict")


def test_fork_is_idempotent(api, server, source):
    fid = str(uuid.uuid4())
    first = fork(api, source["id"], source["b"], id=fid, title="t")
    assert first["id"] == fid
    again = fork(api, source["id"], source["b"], status=200, id=fid, title="t")
    assert again == first
    problem(
        api.post(f"/v1/conversations/{source['id']}/messages/{source['b']}/fork", json={"id": fid, "title": "other"}),
        409,
        "conversation-id-conflict",
    )
    problem(
        api.post(f"/v1/conversations/{source['id']}/messages/{source['a']}/fork", json={"id": fid, "title": "t"}),
        409,
        "conversation-id-conflict",
    )
    # The source's own id is not a fork of it.
    problem(
        api.post(f"/v1/conversations/{source['id']}/messages/{source['a']}/fork", json={"id": source["id"]}),
        409,
        "conversation-id-conflict",
    )

    headers = {"Idempotency-Key": "fork-once"}
    r1 = api.post(f"/v1/conversations/{source['id']}/messages/{source['a']}/fork", json={}, headers=headers)
    r2 = api.post(f"/v1/conversations/{source['id']}/messages/{source['a']}/fork", json={}, headers=headers)
    assert r1.status_code == r2.status_code == 201
    assert r2.headers.get("idempotent-replayed") == "true" and r2.json() == r1.json()
    count = fetch(
        server.database_url,
        "SELECT count(*) AS n FROM events WHERE type = 'conversation_forked' AND payload->>'source_conversation_id' = $1",
        source["id"],
    )[0]["n"]
    assert count == 2  # `fid` and the Idempotency-Key one, each recorded once


def test_listing_shows_forks_with_their_provenance(api, source):
    f = fork(api, source["id"], source["a"])
    items = get(api, "/v1/conversations")["items"]
    assert [(i["id"], i["forked_from"]) for i in items] == [
        (f["id"], {"conversation_id": source["id"], "message_id": source["a"]}),
        (source["id"], None),
    ]


async def _insert_child(url, conversation, family, parent, depth):
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,"
            " body_sha256, payload, actor, created_at, hash)"
            " VALUES (nextval('events_seq'), 't', $1, $2, 'message_appended', $3, $4, 'user', $5, $6, '{}', 'a',"
            " now(), $6)",
            conversation,
            family,
            uuid.uuid4(),
            parent,
            depth,
            hashlib.sha256(b"x").digest(),
        )
    finally:
        await conn.close()


def test_the_database_lets_a_fork_write_only_under_its_inherited_path(api, server, source):
    f = fork(api, source["id"], source["b"])
    [row] = fetch(
        server.database_url, "SELECT family_id FROM conversations WHERE conversation_id = $1", uuid.UUID(f["id"])
    )
    family, conversation = row["family_id"], uuid.UUID(f["id"])
    # Under the base and above it: allowed.
    run(_insert_child(server.database_url, conversation, family, uuid.UUID(source["b"]), 3))
    run(_insert_child(server.database_url, conversation, family, uuid.UUID(source["a"]), 2))
    # Under the source's message after the base: refused, whoever writes.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        run(_insert_child(server.database_url, conversation, family, uuid.UUID(source["c"]), 4))
    # A conversation that is not a fork may not write under another's messages at all.
    x = say(api, f["id"], "x")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        run(_insert_child(server.database_url, uuid.UUID(source["id"]), family, uuid.UUID(x["id"]), 4))


def _folded(url, cid):
    """The fork's summary as stored, and as a fold of its log makes it (fold_conversations)."""
    columns = "head_id, message_count, leaf_count, last_seq, last_hash"
    [stored] = fetch(url, f"SELECT {columns} FROM conversations WHERE conversation_id = $1", uuid.UUID(cid))
    [folded] = fetch(url, f"SELECT {columns} FROM fold_conversations($1::uuid[], 9223372036854775807)", [uuid.UUID(cid)])
    return dict(stored), dict(folded)


def test_a_forks_first_appends_continue_from_its_base_as_its_only_leaf(api, server, source):
    # b has a child (c) in the source; in the fork, b is the only leaf, which an append continues.
    f = fork(api, source["id"], source["b"])
    x = say(api, f["id"], "x")
    y = say(api, f["id"], "y", role="assistant")
    assert (x["parent_message_id"], x["depth"], x["conversation_id"]) == (source["b"], 3, f["id"])
    assert (y["parent_message_id"], y["depth"], y["conversation_id"]) == (x["id"], 4, f["id"])
    summary = get(api, f"/v1/conversations/{f['id']}")
    assert (summary["head_id"], summary["message_count"], summary["leaf_count"], summary["last_seq"]) == (
        y["id"], 5, 1, y["seq"],
    )  # fmt: skip
    stored, folded = _folded(server.database_url, f["id"])
    assert stored == folded
    assert ids(context(api, f["id"])["messages"]) == [source["sys"], source["a"], source["b"], x["id"], y["id"]]
    assert get(api, f"/v1/conversations/{f['id']}/audit")["valid"]
    # The source is as it was.
    src = get(api, f"/v1/conversations/{source['id']}")
    assert (src["head_id"], src["message_count"], src["leaf_count"]) == (source["c"], 4, 1)


def test_a_fork_made_on_one_server_and_appended_to_on_another_keeps_one_chain(api, server, source):
    f = fork(api, source["id"], source["b"])  # this server remembers the fork at its base
    with Server(server.database_url) as other_server, other_server.client() as other:
        other.headers["authorization"] = api.headers["authorization"]
        x = say(other, f["id"], "x")
    y = say(api, f["id"], "y")  # not under the base: under the message the other server wrote
    assert (x["parent_message_id"], y["parent_message_id"], y["depth"]) == (source["b"], x["id"], 4)
    stored, folded = _folded(server.database_url, f["id"])
    assert stored == folded and stored["message_count"] == 5 and stored["leaf_count"] == 1
    assert get(api, f"/v1/conversations/{f['id']}/audit")["valid"]


def test_a_tool_result_first_in_a_fork_answers_a_call_of_its_base(api):
    cid = create(api)["id"]
    say(api, cid, "weather in Paris and Rome?")
    calls = [{"id": i, "type": "function", "function": {"name": "lookup", "arguments": "{}"}} for i in ("c1", "c2")]
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": "assistant", "content": None, "tool_calls": calls})
    assert r.status_code == 201, r.text
    asked = r.json()
    say(api, cid, "result of c1", role="tool", tool_call_id="c1")  # in the source, not the fork's
    f = fork(api, cid, asked["id"])

    def answer(call_id):
        body = {"role": "tool", "content": f"result of {call_id}", "tool_call_id": call_id}
        return api.post(f"/v1/conversations/{f['id']}/messages", json=body)

    problem(answer("c9"), 422, "tool-result-without-call")
    first = answer("c1")
    assert first.status_code == 201, first.text
    assert first.json()["parent_message_id"] == asked["id"]
    problem(answer("c1"), 422, "duplicate-tool-result")
    second = answer("c2")
    assert second.status_code == 201, second.text
    assert second.json()["parent_message_id"] == first.json()["id"]
    assert get(api, f"/v1/conversations/{f['id']}")["message_count"] == 4  # the question, the calls, 2 results


def _indexed(url, *message_ids):
    """Which of the messages have a path digest (message_paths): what auto-threading can match."""
    rows = fetch(url, "SELECT e.message_id FROM message_paths p JOIN events e ON e.seq = p.seq"
                      " WHERE e.message_id = ANY($1::uuid[])", [uuid.UUID(m) for m in message_ids])  # fmt: skip
    return {str(r["message_id"]) for r in rows}


def test_an_erasure_in_the_source_leaves_no_path_digest_under_it_in_a_fork(api, server, source):
    # The fork remembers its base (and later its own head) with the path digest it had; an erasure
    # above it, made through the source, removes the digests of every message under the erased one.
    f = fork(api, source["id"], source["b"])
    g = fork(api, source["id"], source["b"])
    y = say(api, g["id"], "y")
    assert _indexed(server.database_url, source["b"], y["id"]) == {source["b"], y["id"]}
    r = api.post(f"/v1/conversations/{source['id']}/messages/{source['a']}/redact", json={"reason": "r", "erase": True})
    assert r.status_code == 201, r.text
    assert _indexed(server.database_url, source["a"], source["b"], y["id"]) == set()
    x = say(api, f["id"], "x")  # the fork's first append, on its remembered base
    z = say(api, g["id"], "z")  # on the fork's remembered head, y
    assert (x["parent_message_id"], z["parent_message_id"]) == (source["b"], y["id"])
    # A digest made from one the erasure removed would confirm a guess of the erased text.
    assert _indexed(server.database_url, x["id"], z["id"]) == set()
    assert get(api, f"/v1/conversations/{f['id']}/audit")["valid"]
