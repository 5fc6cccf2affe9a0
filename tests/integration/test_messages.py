"""Appending, branching, the head, and reading the tree back over HTTP."""

import uuid

from tests.helpers import create, problem, say


def test_context_is_the_root_first_path_to_the_head(api):
    conv = create(api, title="chat", system="You are terse.")
    cid = conv["id"]
    u1 = say(api, cid, "hi")
    a1 = say(api, cid, "hello", role="assistant")
    u2 = say(api, cid, "how are you?")
    ctx = api.get(f"/v1/conversations/{cid}/context").json()
    assert [m["content"] for m in ctx["messages"]] == ["You are terse.", "hi", "hello", "how are you?"]
    assert [m["depth"] for m in ctx["messages"]] == [0, 1, 2, 3]
    assert ctx["leaf_id"] == u2["id"] and ctx["depth"] == 4
    assert [m["parent_message_id"] for m in ctx["messages"][1:]] == [conv["head_id"], u1["id"], a1["id"]]
    seqs = [m["seq"] for m in ctx["messages"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


def test_append_returns_the_stored_message(api):
    cid = create(api)["id"]
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "hi", "metadata": {"k": [1]}})
    assert r.status_code == 201
    m = r.json()
    assert r.headers["location"] == f"/v1/conversations/{cid}/messages/{m['id']}"
    assert api.get(r.headers["location"]).json() == m
    assert m["metadata"] == {"k": [1]} and m["parent_message_id"] is None and m["depth"] == 0


def test_branching_under_an_earlier_message_moves_the_head_to_the_branch(api):
    cid = create(api)["id"]
    u1 = say(api, cid, "question")
    a1 = say(api, cid, "answer one", role="assistant")
    a2 = say(api, cid, "answer two", role="assistant", parent_message_id=u1["id"])
    assert a2["parent_message_id"] == u1["id"] and a2["depth"] == a1["depth"]
    conv = api.get(f"/v1/conversations/{cid}").json()
    assert conv["head_id"] == a2["id"]
    assert (conv["message_count"], conv["leaf_count"]) == (3, 2)
    children = api.get(f"/v1/conversations/{cid}/messages/{u1['id']}/children").json()["children"]
    assert [c["id"] for c in children] == [a1["id"], a2["id"]]
    # Appending with no parent continues the branch the head is on.
    u2 = say(api, cid, "follow-up")
    assert u2["parent_message_id"] == a2["id"]


def test_context_says_where_each_message_stands_among_its_siblings(api):
    cid = create(api)["id"]
    u1 = say(api, cid, "q")
    say(api, cid, "a1", role="assistant")
    a2 = say(api, cid, "a2", role="assistant", parent_message_id=u1["id"])
    say(api, cid, "a3", role="assistant", parent_message_id=u1["id"])
    ctx = api.get(f"/v1/conversations/{cid}/messages/{a2['id']}/context").json()
    assert [(m["sibling_position"], m["sibling_count"]) for m in ctx["messages"]] == [(1, 1), (2, 3)]


def test_moving_the_head_switches_branch_and_is_an_event(api):
    cid = create(api)["id"]
    u1 = say(api, cid, "q")
    a1 = say(api, cid, "a1", role="assistant")
    say(api, cid, "a2", role="assistant", parent_message_id=u1["id"])
    before = api.get(f"/v1/conversations/{cid}").json()
    r = api.put(f"/v1/conversations/{cid}/head", json={"message_id": a1["id"]})
    assert r.status_code == 200 and r.json()["head_id"] == a1["id"]
    assert r.headers["etag"] == f'"{a1["id"]}"'
    after = api.get(f"/v1/conversations/{cid}").json()
    assert after["last_seq"] > before["last_seq"]  # recorded in the log
    assert [m["content"] for m in api.get(f"/v1/conversations/{cid}/context").json()["messages"]] == ["q", "a1"]
    # Moving it where it already is records nothing.
    assert api.put(f"/v1/conversations/{cid}/head", json={"message_id": a1["id"]}).status_code == 200
    assert api.get(f"/v1/conversations/{cid}").json()["last_seq"] == after["last_seq"]


def test_head_cannot_move_to_an_unknown_message(api):
    cid = create(api)["id"]
    say(api, cid, "q")
    problem(api.put(f"/v1/conversations/{cid}/head", json={"message_id": str(uuid.uuid4())}), 404, "message-not-found")


def test_last_n_keeps_system_messages(api):
    cid = create(api, system="rules")["id"]
    for i in range(5):
        say(api, cid, f"m{i}", role="user" if i % 2 == 0 else "assistant")
    ctx = api.get(f"/v1/conversations/{cid}/context", params={"last": 2}).json()
    assert [m["content"] for m in ctx["messages"]] == ["rules", "m3", "m4"]
    assert ctx["depth"] == 6
    problem(api.get(f"/v1/conversations/{cid}/context", params={"last": 0}), 422, "invalid-request")
    problem(api.get(f"/v1/conversations/{cid}/context", params={"last": "x"}), 422, "invalid-request")


def test_tree_and_leaves_show_every_branch(api):
    conv = create(api, system="s")
    cid = conv["id"]
    u1 = say(api, cid, "q")
    a1 = say(api, cid, "a1", role="assistant")
    a2 = say(api, cid, "a2", role="assistant", parent_message_id=u1["id"])
    tree = api.get(f"/v1/conversations/{cid}/tree").json()
    assert tree["head_id"] == a2["id"]
    assert [(m["id"], m["parent_message_id"]) for m in tree["messages"]] == [
        (conv["head_id"], None), (u1["id"], conv["head_id"]), (a1["id"], u1["id"]), (a2["id"], u1["id"]),
    ]
    leaves = api.get(f"/v1/conversations/{cid}/leaves").json()
    assert leaves["head_id"] == a2["id"]
    assert [(leaf["message_id"], leaf["depth"]) for leaf in leaves["leaves"]] == [(a1["id"], 2), (a2["id"], 2)]


def test_empty_conversation_has_an_empty_context(api):
    cid = create(api)["id"]
    ctx = api.get(f"/v1/conversations/{cid}/context").json()
    assert ctx["messages"] == [] and ctx["leaf_id"] is None
    assert api.get(f"/v1/conversations/{cid}/leaves").json()["leaves"] == []


def test_if_match_refuses_an_append_when_the_head_moved(api):
    cid = create(api)["id"]
    first = say(api, cid, "one")
    etag = api.get(f"/v1/conversations/{cid}").headers["etag"]
    assert etag == f'"{first["id"]}"'
    ok = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "two"}, headers={"If-Match": etag})
    assert ok.status_code == 201
    stale = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "three"}, headers={"If-Match": etag})
    problem(stale, 412, "head-moved")
    body = {"role": "user", "content": "three", "expected_head": first["id"]}
    problem(api.post(f"/v1/conversations/{cid}/messages", json=body), 412, "head-moved")
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 2


def test_unknown_parent_and_unknown_message_are_404(api):
    cid = create(api)["id"]
    say(api, cid, "q")
    body = {"role": "user", "content": "x", "parent_message_id": str(uuid.uuid4())}
    problem(api.post(f"/v1/conversations/{cid}/messages", json=body), 404, "parent-not-found")
    problem(api.get(f"/v1/conversations/{cid}/messages/{uuid.uuid4()}"), 404, "message-not-found")
    problem(api.get(f"/v1/conversations/{cid}/messages/{uuid.uuid4()}/context"), 404, "message-not-found")
    problem(api.get(f"/v1/conversations/{cid}/messages/{uuid.uuid4()}/children"), 404, "message-not-found")
    problem(api.get(f"/v1/conversations/{uuid.uuid4()}/context"), 404, "conversation-not-found")


def test_a_parent_in_another_conversation_is_not_found(api):
    a = create(api)["id"]
    b = create(api)["id"]
    m = say(api, a, "in a")
    body = {"role": "user", "content": "x", "parent_message_id": m["id"]}
    problem(api.post(f"/v1/conversations/{b}/messages", json=body), 404, "parent-not-found")
    problem(api.get(f"/v1/conversations/{b}/messages/{m['id']}"), 404, "message-not-found")


def test_list_conversations_pages_newest_first(api):
    ids = [create(api, title=f"c{i}")["id"] for i in range(5)]
    seen = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/conversations", params=params).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    problem(api.get("/v1/conversations", params={"cursor": "garbage!"}), 422, "invalid-request")
    problem(api.get("/v1/conversations", params={"limit": 0}), 422, "invalid-request")


def test_conversation_summary(api):
    conv = create(api, title="t", metadata={"team": "x"}, system="s")
    say(api, conv["id"], "hi")
    got = api.get(f"/v1/conversations/{conv['id']}").json()
    assert got["title"] == "t" and got["metadata"] == {"team": "x"}
    assert (got["message_count"], got["leaf_count"]) == (2, 1)
    assert got["last_seq"] > conv["last_seq"] and got["updated_at"] >= got["created_at"]
