"""Keys and tenants: every request needs a key, and no tenant can see another's data."""

import uuid

from tests.helpers import create, problem, say


def test_requests_without_a_valid_key_are_401(server):
    with server.client() as anonymous:
        r = anonymous.get("/v1/conversations")
        problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    with server.client("ct_not-a-real-key") as wrong:
        problem(wrong.post("/v1/conversations", json={}), 401, "unauthorized")
    with server.client() as basic:
        problem(basic.get("/v1/conversations", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "unauthorized")


def test_another_tenant_gets_404_on_everything(server, api):
    conv = create(api, system="secret rules")
    cid = conv["id"]
    m = say(api, cid, "secret")
    _, key = server.new_key()
    with server.client(key) as other:
        paths = [
            f"/v1/conversations/{cid}", f"/v1/conversations/{cid}/context", f"/v1/conversations/{cid}/tree",
            f"/v1/conversations/{cid}/leaves", f"/v1/conversations/{cid}/messages/{m['id']}",
            f"/v1/conversations/{cid}/messages/{m['id']}/children",
            f"/v1/conversations/{cid}/messages/{m['id']}/context",
        ]
        for path in paths:
            problem(other.get(path), 404, "conversation-not-found")
        problem(other.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "x"}),
                404, "conversation-not-found")
        problem(other.put(f"/v1/conversations/{cid}/head", json={"message_id": m["id"]}), 404, "conversation-not-found")
        assert other.get("/v1/conversations").json()["items"] == []
        # Reusing the other tenant's conversation id creates an unrelated conversation of its own.
        mine = other.post("/v1/conversations", json={"id": cid, "title": "mine"})
        assert mine.status_code == 201 and mine.json()["message_count"] == 0
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 2


def test_a_key_of_the_same_tenant_sees_the_same_data_and_is_recorded_as_actor(server, api):
    tenant, _ = server.new_key()
    _, key_a = server.new_key(tenant, name="svc-a")
    _, key_b = server.new_key(tenant, name="svc-b")
    with server.client(key_a) as a, server.client(key_b) as b:
        cid = create(a)["id"]
        say(b, cid, "from b")
        assert b.get(f"/v1/conversations/{cid}").json()["message_count"] == 1
    from tests.postgres import fetch

    actors = fetch(server.database_url, "SELECT actor FROM events WHERE conversation_id = $1 ORDER BY seq", uuid.UUID(cid))
    assert [r["actor"] for r in actors] == ["svc-a", "svc-b"]
